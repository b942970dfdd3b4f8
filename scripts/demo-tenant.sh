#!/usr/bin/env bash
# Sets up a demo tenant on a running `assistd serve` (embedded defaults): Remote Help enabled,
# unenrolled devices allowed, helper helen@contoso.com in a "Help desk" group assigned the
# built-in Help Desk Operator role over all users. Prints tokens for the helper and the sharer.
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
api -X PATCH "$server/beta/deviceManagement/remoteAssistanceSettings" \
  -d '{"remoteAssistanceState":"enabled","allowSessionsToUnenrolledDevices":true}' >/dev/null
api -X POST "$server/beta/domains" -d '{"id":"contoso.com"}' >/dev/null 2>&1 || true
helen=$(api -X POST "$server/beta/users" -d '{"userPrincipalName":"helen@contoso.com","displayName":"Helen Helper","jobTitle":"Service desk","companyName":"Contoso"}' | id_of)
api -X POST "$server/beta/users" -d '{"userPrincipalName":"sam@contoso.com","displayName":"Sam Sharer","companyName":"Contoso"}' >/dev/null
group=$(api -X POST "$server/beta/groups" -d '{"displayName":"Help desk"}' | id_of)
api -X POST "$server/beta/groups/$group/members/\$ref" -d "{\"@odata.id\":\"$helen\"}" >/dev/null
api -X POST "$server/beta/deviceManagement/roleAssignments" \
  -d "{\"displayName\":\"Help desk helps everyone\",\"members\":[\"$group\"],\"scopeType\":\"allLicensedUsers\",\"roleDefinition@odata.bind\":\"builtin-help-desk-operator\"}" >/dev/null
echo "HELPER_TOKEN=$($assistd token --data-dir "$data" --tenant contoso --user helen@contoso.com --ttl 8h)"
echo "SHARER_TOKEN=$($assistd token --data-dir "$data" --tenant contoso --user sam@contoso.com --ttl 8h)"
