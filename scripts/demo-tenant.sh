#!/usr/bin/env bash
# Sets up a demo tenant on a running `assistd serve` (embedded defaults): Remote Help enabled,
# unenrolled devices allowed, helper helen@contoso.com in a "Help desk" group assigned the
# built-in Help Desk Operator role over all users. Prints tokens for the helper and the sharer.
# Running it again on the same server changes nothing (what exists is found, not made twice).
# Usage: scripts/demo-tenant.sh [DATA_DIR] [SERVER]   (defaults: ./assist-data https://localhost:8443)
set -euo pipefail
data="${1:-./assist-data}"
server="${2:-https://localhost:8443}"
assistd="${ASSISTD:-cargo run -q -p assistd --}"
ca="$data/tls/cert.pem"
[ -f "$ca" ] || { echo "no $ca: start the server first (cargo run -p assistd -- serve)" >&2; exit 1; }
admin=$($assistd token --data-dir "$data" --tenant contoso --user admin@contoso.com \
  --roles DeviceManagementServiceConfig.ReadWrite.All,User.ReadWrite.All,Group.ReadWrite.All,DeviceManagementRBAC.ReadWrite.All,Domain.ReadWrite.All)
api() { curl -sS --fail-with-body --cacert "$ca" -H "Authorization: Bearer $admin" -H 'Content-Type: application/json' "$@"; }
id_of() { python3 -c 'import json,sys; print(json.load(sys.stdin)["id"])'; }
# find_or_create COLLECTION FILTER BODY: the id of the first object FILTER finds, else of a new one.
find_or_create() {
  local id
  id=$(api --get --data-urlencode "\$filter=$2" "$server/beta/$1" |
    python3 -c 'import json,sys; v=json.load(sys.stdin)["value"]; print(v[0]["id"] if v else "")')
  [ -n "$id" ] || id=$(api -X POST "$server/beta/$1" -d "$3" | id_of)
  echo "$id"
}
api -X PATCH "$server/beta/deviceManagement/remoteAssistanceSettings" \
  -d '{"remoteAssistanceState":"enabled","allowSessionsToUnenrolledDevices":true}' >/dev/null
api -X POST "$server/beta/domains" -d '{"id":"contoso.com"}' >/dev/null 2>&1 || true
helen=$(find_or_create users "userPrincipalName eq 'helen@contoso.com'" \
  '{"userPrincipalName":"helen@contoso.com","displayName":"Helen Helper","jobTitle":"Service desk","companyName":"Contoso"}')
find_or_create users "userPrincipalName eq 'sam@contoso.com'" \
  '{"userPrincipalName":"sam@contoso.com","displayName":"Sam Sharer","companyName":"Contoso"}' >/dev/null
group=$(find_or_create groups "displayName eq 'Help desk'" '{"displayName":"Help desk"}')
members=$(api "$server/beta/groups/$group/members")
case "$members" in
  *"$helen"*) ;;
  *) api -X POST "$server/beta/groups/$group/members/\$ref" -d "{\"@odata.id\":\"$helen\"}" >/dev/null ;;
esac
find_or_create deviceManagement/roleAssignments "displayName eq 'Help desk helps everyone'" \
  "{\"displayName\":\"Help desk helps everyone\",\"members\":[\"$group\"],\"scopeType\":\"allLicensedUsers\",\"roleDefinition@odata.bind\":\"builtin-help-desk-operator\"}" >/dev/null
echo "HELPER_TOKEN=$($assistd token --data-dir "$data" --tenant contoso --user helen@contoso.com --ttl 8h)"
echo "SHARER_TOKEN=$($assistd token --data-dir "$data" --tenant contoso --user sam@contoso.com --ttl 8h)"
