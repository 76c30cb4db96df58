#!/usr/bin/env bash
# Property-based test of the HTTP API against node/openapi.json: starts a
# real `basic up` on loopback with a temporary data directory, gets an app
# token through the access-request flow, and runs schemathesis (pinned) with
# the owner token, with an app token, with a web app's token from its page
# and with no token. Fails on any 5xx,
# any status code the document does not list, any response that does not
# match its schema, and the other checks named in schemathesis.toml.
#
#   bash node/tests/schemathesis/run.sh [BASIC_BINARY]
#
# Without BASIC_BINARY it builds and uses target/debug/basic (under
# CARGO_TARGET_DIR when set). The venv with schemathesis lives in
# target/schemathesis-venv. EXAMPLES (default 25)
# bounds the generated cases per operation and phase.
set -euo pipefail
cd "$(dirname "$0")/../../.."
root=$PWD
here=node/tests/schemathesis
version=4.32.5
target=${CARGO_TARGET_DIR:-target}
basic=${1:-$target/debug/basic}
examples=${EXAMPLES:-25}

if [ $# -eq 0 ]; then
  cargo build --locked -q -p basic --bin basic
fi
venv=$(realpath -m "$target/schemathesis-venv")
if [ "$("$venv/bin/st" --version 2>/dev/null)" != "st, version $version" ]; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q "schemathesis==$version"
fi

data=$(mktemp -d)
# schemathesis and hypothesis keep state in the working directory: a
# temporary one, so that each run starts from nothing.
work=$(mktemp -d)
node_pid=
cleanup() {
  if [ -n "$node_pid" ]; then kill "$node_pid" 2>/dev/null || true; wait "$node_pid" 2>/dev/null || true; fi
  rm -rf "$data" "$work"
}
trap cleanup EXIT

"$basic" --data "$data" init >/dev/null
"$basic" --data "$data" schema apply examples/todo.toml >/dev/null
"$basic" --data "$data" up --api 127.0.0.1:0 --listen /ip4/127.0.0.1/tcp/0 --no-mdns 2>"$data.log" &
node_pid=$!
address=
for _ in $(seq 1 300); do
  address=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["address"])' "$data/api.json" 2>/dev/null || true)
  [ -n "$address" ] && break
  kill -0 "$node_pid" 2>/dev/null || { cat "$data.log"; echo "basic up exited"; exit 1; }
  sleep 0.1
done
[ -n "$address" ] || { echo "basic up wrote no api.json"; exit 1; }
url="http://$address"
owner=$(tr -d '\n' < "$data/owner-token")

# An app token with read-write on todo, through the access-request flow,
# for an app outside a browser (no ORIGIN) or a web app at ORIGIN.
app_token() {
  ORIGIN=${1:-} python3 - "$url" "$basic" "$data" <<'PY'
import json, os, subprocess, sys, urllib.request
url, basic, data = sys.argv[1:]
headers = {"Content-Type": "application/json"}
if os.environ["ORIGIN"]:
    headers["Origin"] = os.environ["ORIGIN"]
def call(method, path, body=None):
    req = urllib.request.Request(url + path, method=method, headers=headers,
        data=None if body is None else json.dumps(body).encode())
    with urllib.request.urlopen(req) as r:
        return json.load(r)
made = call("POST", "/v0/apps/requests", {"name": "schemathesis", "scopes": {"todo": "read_write"}})
subprocess.run([basic, "--data", data, "app", "approve", made["id"]], check=True, capture_output=True)
print(call("GET", f"/v0/apps/requests/{made['id']}?secret={made['secret']}")["token"])
PY
}
app=$(app_token)
page=http://todo.localhost:8080
web=$(app_token "$page")

run() {
  local who=$1; shift
  echo "--- schemathesis as $who"
  (cd "$work" && PYTHONPATH="$root/$here" "$venv/bin/st" \
    --config-file "$root/$here/schemathesis.toml" run "$url/v0/openapi.json" \
    --max-examples "$examples" --seed 1 --no-color "$@")
}
status=0
run owner -H "Authorization: Bearer $owner" || status=1
run app -H "Authorization: Bearer $app" || status=1
run "web app at $page" -H "Authorization: Bearer $web" -H "Origin: $page" || status=1
run "no token" || status=1
if [ "$status" -ne 0 ]; then
  echo "--- node log"; tail -50 "$data.log"
fi
rm -f "$data.log"
exit "$status"
