#!/usr/bin/env python3
"""deploy/compose/make-keys.sh makes keys assistd accepts, once.

* Runs make-keys.sh into a temporary directory (with a host, so the self-signed certificate is
  made too): the five files, their modes, the code key's 32 bytes, PKCS#8 PEM for the EC keys;
  runs it again and checks that nothing changed (a second `docker compose up` must not rotate
  the cluster's keys).
* Starts target/debug/assistd on loopback with the three keys as its data directory's own files
  (the names and formats assistd itself reads and writes there) and the certificate as its TLS
  files: it must turn healthy, leave the key files as they were, and answer HTTPS with that
  certificate verified for `localhost`; `assistd token` must sign with the dev issuer key.
* Starts it again with the keys named by ASSIST_KEYS_* instead (the cluster's way) and an empty
  data directory: healthy, and no key of its own made there. A build that refuses [keys] files
  (before cluster mode, issue 13) is reported as a skip.

Usage: python3 tests/deploy/keys.py   (tests/deploy/run.sh runs it; needs target/debug/assistd,
openssl and sh)
"""

from __future__ import annotations

import hashlib
import os
import socket
import ssl
import stat
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from ports import free_port

REPO = Path(__file__).resolve().parents[2]
BIN = Path(os.environ.get("ASSIST_BIN_DIR", REPO / "target" / "debug"))
SCRIPT = REPO / "deploy" / "compose" / "make-keys.sh"
KEYS = ["relay-ticket-key.pem", "signal-code-key", "dev-issuer-key.pem"]
TLS = ["tls-cert.pem", "tls-key.pem"]
REFUSED = "not available in this build yet"

passed: list[str] = []
failed: list[str] = []


def check(name: str, ok: bool, why: str = "") -> bool:
    (passed if ok else failed).append(name)
    print(f"ok   {name}" if ok else f"FAIL {name}: {why}")
    return ok


def digests(d: Path, names: list[str]) -> dict[str, str]:
    return {n: hashlib.sha256((d / n).read_bytes()).hexdigest() for n in names
            if (d / n).exists()}


def serve(data: Path, env_extra: dict[str, str], log: Path) -> tuple[subprocess.Popen, int, int]:
    https, metrics = free_port(), free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("ASSIST_")}
    env.update({"ASSIST_LOG": "info", **env_extra})
    proc = subprocess.Popen(
        [str(BIN / "assistd"), "serve", "--data-dir", str(data),
         "--listen", f"127.0.0.1:{https}", "--quic-listen", f"127.0.0.1:{https}",
         "--metrics-listen", f"127.0.0.1:{metrics}"],
        env=env, stdout=log.open("w"), stderr=subprocess.STDOUT)
    return proc, https, metrics


def wait_healthy(proc: subprocess.Popen, metrics: int) -> bool:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{metrics}/healthz", timeout=2) as r:
                if r.status == 200:
                    return True
        except OSError:
            pass
        time.sleep(0.2)
    return False


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def main() -> int:
    if not (BIN / "assistd").is_file():
        print(f"FAIL keys: no {BIN / 'assistd'} (cargo build -p assistd)")
        return 1
    with tempfile.TemporaryDirectory(prefix="assist-keys-") as tmp:
        root = Path(tmp)
        keys = root / "keys"
        out = subprocess.run(["sh", str(SCRIPT), str(keys), "localhost"], capture_output=True,
                             text=True)
        if not check("make-keys.sh DIR localhost exits 0", out.returncode == 0,
                     out.stdout + out.stderr):
            return 1
        for name in KEYS + TLS:
            f = keys / name
            mode = stat.S_IMODE(f.stat().st_mode) if f.exists() else None
            want = 0o444 if name == "tls-cert.pem" else 0o400
            check(f"make-keys.sh made {name}, mode {want:o}", mode == want,
                  f"mode {mode and oct(mode)}")
        check("signal-code-key holds 32 bytes", (keys / "signal-code-key").stat().st_size == 32,
              str((keys / "signal-code-key").stat().st_size))
        for name in ("relay-ticket-key.pem", "dev-issuer-key.pem", "tls-key.pem"):
            text = (keys / name).read_text()
            check(f"{name} is a PKCS#8 PEM key", text.startswith("-----BEGIN PRIVATE KEY-----"),
                  text.splitlines()[0] if text else "empty")
        check("the two EC keys differ", (keys / KEYS[0]).read_bytes() != (keys / KEYS[2]).read_bytes())
        before = digests(keys, KEYS + TLS)
        again = subprocess.run(["sh", str(SCRIPT), str(keys), "localhost"], capture_output=True,
                               text=True)
        check("make-keys.sh run again exits 0 and changes nothing",
              again.returncode == 0 and digests(keys, KEYS + TLS) == before
              and "make-keys: made" not in again.stdout, again.stdout + again.stderr)

        # The keys as a data directory's own files, the certificate as the TLS files.
        data = root / "data"
        data.mkdir()
        for name in KEYS:
            (data / name).write_bytes((keys / name).read_bytes())
            (data / name).chmod(0o600)
        tls_env = {"ASSIST_TLS_CERT_FILE": str(keys / "tls-cert.pem"),
                   "ASSIST_TLS_KEY_FILE": str(keys / "tls-key.pem")}
        log = root / "serve.log"
        proc, https, metrics = serve(data, tls_env, log)
        try:
            healthy = check("assistd with these keys in its data directory turns healthy",
                            wait_healthy(proc, metrics), log.read_text()[-2000:])
            if healthy:
                ctx = ssl.create_default_context(cafile=str(keys / "tls-cert.pem"))
                try:
                    with socket.create_connection(("127.0.0.1", https), timeout=5) as s:
                        with ctx.wrap_socket(s, server_hostname="localhost") as tls:
                            ok, why = tls.version() is not None, ""
                except (OSError, ssl.SSLError) as e:
                    ok, why = False, str(e)
                check("its HTTPS certificate is tls-cert.pem, valid for localhost", ok, why)
            check("it kept the key files as they were",
                  digests(data, KEYS) == {n: before[n] for n in KEYS}, "")
        finally:
            stop(proc)
        tok = subprocess.run([str(BIN / "assistd"), "token", "--data-dir", str(data),
                              "--tenant", "t", "--user", "a@example.com"], capture_output=True,
                             text=True, env={k: v for k, v in os.environ.items()
                                             if not k.startswith("ASSIST_")})
        check("assistd token signs with dev-issuer-key.pem",
              tok.returncode == 0 and tok.stdout.count(".") == 2 and
              digests(data, KEYS) == {n: before[n] for n in KEYS}, tok.stderr)

        # The cluster's way: the keys named by ASSIST_KEYS_*, nothing in the data directory.
        data2 = root / "data2"
        log2 = root / "serve2.log"
        proc, https, metrics = serve(data2, {
            **tls_env,
            "ASSIST_KEYS_RELAY_TICKET_FILE": str(keys / "relay-ticket-key.pem"),
            "ASSIST_KEYS_SIGNAL_CODE_FILE": str(keys / "signal-code-key"),
            "ASSIST_KEYS_DEV_ISSUER_FILE": str(keys / "dev-issuer-key.pem")}, log2)
        try:
            healthy = wait_healthy(proc, metrics)
            if not healthy and proc.poll() is not None and REFUSED in log2.read_text():
                print("skip ASSIST_KEYS_* files: this assistd refuses [keys] files (before "
                      "cluster mode, issue 13)")
            else:
                check("assistd with ASSIST_KEYS_* naming these files turns healthy", healthy,
                      log2.read_text()[-2000:])
                made = [n for n in KEYS if (data2 / n).exists()]
                check("and makes no key of its own in its data directory", not made, str(made))
        finally:
            stop(proc)
    print(f"keys: {len(passed)} passed, {len(failed)} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
