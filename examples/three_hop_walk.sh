#!/usr/bin/env bash
# The quick-start walk: orchestrator -> planner -> booker -> airline API.
#
# Needs a broker running with the example policies (policies/), by default at
# http://127.0.0.1:8080 (set BROKER_URL to use another), plus curl and python3.
#
#   cargo run -- serve      # in another terminal
#   examples/three_hop_walk.sh
#
# The client secrets below are the published DEV ONLY secrets of the example
# agents in policies/agents.toml.
#
# Step 3 books: in the example policies a person must approve that. The
# broker answers `authorization_pending` with an approval id; the script
# prints it and polls, as a CIBA client does, until the booker's owner
# approves (or denies) it with
#   baton approvals approve <id> --as travel-team@example.com
# (the broker needs an admin token for that: see the README).
set -euo pipefail

URL=${BROKER_URL:-http://127.0.0.1:8080}
URL=${URL%/}

TOKEN_EXCHANGE=urn:ietf:params:oauth:grant-type:token-exchange
ACCESS_TOKEN=urn:ietf:params:oauth:token-type:access_token

# Prints a token response without its access_token.
show() {
    python3 -c '
import json, sys
body = json.load(sys.stdin)
body.pop("access_token", None)
print(json.dumps(body, indent=2))
'
}

# Prints the access_token of a token response, or nothing.
access_token() {
    python3 -c '
import json, sys
try:
    body = json.load(sys.stdin)
except ValueError:
    sys.exit(0)
token = body.get("access_token") if isinstance(body, dict) else None
if isinstance(token, str):
    print(token)
'
}

# Prints one string field of a JSON object, or nothing.
field() {
    python3 -c '
import json, sys
try:
    body = json.load(sys.stdin)
except ValueError:
    sys.exit(0)
value = body.get(sys.argv[1]) if isinstance(body, dict) else None
if isinstance(value, (str, int)):
    print(value)
' "$1"
}

post_token() {
    if ! curl -sS "$@" "$URL/token"; then
        echo "error: no answer from $URL/token: is the broker running (cargo run -- serve)?" >&2
        exit 1
    fi
}

# POSTs to /token with the given curl arguments; prints the response minus
# the token and leaves the token in $TOKEN. While a person's approval is
# pending, polls with the approval id. Stops with the broker's error JSON
# when no token comes back.
request_token() {
    local response id interval
    response=$(post_token "$@")
    if [ "$(printf '%s' "$response" | field error)" = authorization_pending ]; then
        id=$(printf '%s' "$response" | field approval_id)
        echo "waiting for a person to approve $id; as the booker's owner, run:"
        echo "  cargo run -- approvals approve $id --as travel-team@example.com"
        while [ "$(printf '%s' "$response" | field error)" = authorization_pending ]; do
            interval=$(printf '%s' "$response" | field interval)
            sleep "${interval:-5}"
            response=$(post_token "$@" -d approval_id="$id")
        done
        echo "approved"
    fi
    TOKEN=$(printf '%s' "$response" | access_token)
    if [ -z "$TOKEN" ]; then
        echo "error: the broker refused the request:" >&2
        printf '%s' "$response" | python3 -m json.tool >&2 2>/dev/null || printf '%s\n' "$response" >&2
        exit 1
    fi
    printf '%s' "$response" | show
}

echo "==> 1. orchestrator gets its own token, addressed to the planner (client_credentials)"
request_token -u orchestrator:dev-only-orchestrator-secret \
    -d grant_type=client_credentials \
    -d audience=planner
T0=$TOKEN

echo
echo "==> 2. planner exchanges it for a token addressed to the booker (token exchange)"
request_token -u planner:dev-only-planner-secret \
    -d grant_type="$TOKEN_EXCHANGE" \
    -d subject_token="$T0" \
    -d subject_token_type="$ACCESS_TOKEN" \
    -d audience=booker
T1=$TOKEN

echo
echo "==> 3. booker exchanges that for a token for the airline API, scope flights.book (token exchange)"
request_token -u booker:dev-only-booker-secret \
    -d grant_type="$TOKEN_EXCHANGE" \
    -d subject_token="$T1" \
    -d subject_token_type="$ACCESS_TOKEN" \
    -d resource=https://api.airline.example \
    -d scope=flights.book
T2=$TOKEN

echo
echo "==> The final token's claims (payload decoded, signature not checked)"
printf '%s' "$T2" | python3 -c '
import base64, json, sys
payload = sys.stdin.read().strip().split(".")[1]
payload += "=" * (-len(payload) % 4)
print(json.dumps(json.loads(base64.urlsafe_b64decode(payload)), indent=2))
'

echo
echo "==> To see the chain as a tree, run:"
echo "cargo run -- token decode $T2"
