#!/bin/sh
# Makes the keys every node of an Assist cluster shares, once, into DIR:
#   relay-ticket-key.pem  P-256 private key, PKCS#8 PEM: signs and verifies relay tickets
#   signal-code-key       32 random bytes: the HMAC key of the security codes' digests
#   dev-issuer-key.pem    P-256 private key, PKCS#8 PEM: the dev issuer's signing key
# the formats assistd itself writes into a data directory (docs/deploy.md, "The keys"). With a
# HOST it also makes a self-signed certificate for HOST and localhost (tls-cert.pem,
# tls-key.pem), one for every node, so a load balancer in TCP mode shows clients one
# certificate; for anything others reach, use a real one instead.
#
# A file that already exists is kept: running it again changes nothing (rotation is deleting the
# files, running it, and restarting every node at once: docs/deploy.md, "Cluster").
# Needs openssl, head and /dev/urandom (the assistd image has all three: ca-certificates pulls in
# openssl). With ASSIST_KEYS_OWNER=uid:gid (as root) the files are given to that owner.
#
#   sh deploy/compose/make-keys.sh ./assist-keys                  # for a Kubernetes Secret
#   sh deploy/compose/make-keys.sh /keys localhost                # compose's `keys` service
set -eu

[ $# -ge 1 ] && [ $# -le 2 ] || { echo "usage: $0 DIR [HOST]" >&2; exit 2; }
dir=$1
host=${2:-}
umask 077
mkdir -p "$dir"

made() { echo "make-keys: made $dir/$1"; }

# Each file is written under a temporary name and renamed, so an interrupted run leaves no
# half-written key that a later run would keep.
ec_key() {
  [ -s "$dir/$1" ] && return 0
  openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$dir/$1.tmp"
  mv "$dir/$1.tmp" "$dir/$1"
  made "$1"
}

ec_key relay-ticket-key.pem
if [ ! -s "$dir/signal-code-key" ]; then
  head -c 32 /dev/urandom >"$dir/signal-code-key.tmp"
  [ "$(wc -c <"$dir/signal-code-key.tmp")" -eq 32 ] || { echo "make-keys: short read" >&2; exit 1; }
  mv "$dir/signal-code-key.tmp" "$dir/signal-code-key"
  made signal-code-key
fi
ec_key dev-issuer-key.pem

if [ -n "$host" ] && [ ! -s "$dir/tls-cert.pem" ]; then
  case $host in
    *[!0-9.]*) san="DNS:$host" ;;
    *) san="IP:$host" ;;
  esac
  [ "$host" = localhost ] || san="$san,DNS:localhost"
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 825 \
    -subj "/CN=$host" -addext "subjectAltName=$san,IP:127.0.0.1" \
    -keyout "$dir/tls-key.pem.tmp" -out "$dir/tls-cert.pem.tmp" 2>/dev/null
  mv "$dir/tls-key.pem.tmp" "$dir/tls-key.pem"
  mv "$dir/tls-cert.pem.tmp" "$dir/tls-cert.pem"
  made "tls-cert.pem and tls-key.pem (self-signed for $san,IP:127.0.0.1)"
fi

if [ -n "${ASSIST_KEYS_OWNER:-}" ]; then
  chown "$ASSIST_KEYS_OWNER" "$dir" "$dir"/*
fi
chmod 0400 "$dir"/*
# The certificate is not secret; clients that should trust it get a copy.
[ ! -f "$dir/tls-cert.pem" ] || chmod 0444 "$dir/tls-cert.pem"
echo "make-keys: $dir holds the cluster's keys"
