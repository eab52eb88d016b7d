#!/usr/bin/env bash
# The API contract against a live whisperd (the built debug binary): the OpenAPI documents it
# serves (GET /openapi.json on the loopback port and on the control socket) pass
# openapi-spec-validator, and schemathesis, generating requests from them, finds every
# documented status code and response shape held — on the read-only port (as anyone, then with
# a web dashboard session: its actions and file edits run for real), and on the control
# socket (through scripts/api/unix_forward.py) with a throwaway fleet of `sleep` characters
# and a scheduled job that it starts, stops, restarts, runs, scales and reloads, and a
# whisperd that it re-executes in place. ~20–40 s on 2 cores.
#
# Prints PASS/FAIL lines (scripts/test.sh counts them). Needs scripts/install-deps.sh test
# (the pinned tools in /var/cache/whisperd-test/api-contract). EXAMPLES (default 100) is schemathesis's
# --max-examples per operation; SEED (default 1) its seed.
set -uo pipefail
cd "$(dirname "$0")/.."
repo=$PWD
venv=/var/cache/whisperd-test/api-contract
examples=${EXAMPLES:-100}
started_at=$SECONDS
# shellcheck source=scripts/e2e-checks.sh
source scripts/e2e-checks.sh

[ -x "$venv/bin/schemathesis" ] || { echo "FAIL tools: $venv has no schemathesis (run scripts/install-deps.sh test)"; exit 1; }
bin=$(swift build --show-bin-path)/whisperd
[ -x "$bin" ] || { echo "FAIL build: no $bin (swift build first)"; exit 1; }

work=$(mktemp -d /tmp/e2e-api-XXXXXX)
chmod 755 "$work"  # characters run as their own users and start in it
cgroup=/$(basename "$work")
cleanup() {
  set +e
  for child in "${drift_pid:-}" "${forward_pid:-}" "${whisperd_pid:-}"; do
    [ -n "$child" ] && kill "$child" 2>/dev/null && wait "$child" 2>/dev/null
  done
  rm -rf "$work"
}
trap cleanup EXIT

# A free port below the ephemeral range (a client's own port can never take it).
port=$(python3 -c '
import random, socket
low = int(open("/proc/sys/net/ipv4/ip_local_port_range").read().split()[0])
for _ in range(200):
    port = random.randrange(20000, low)
    with socket.socket() as s:
        try: s.bind(("127.0.0.1", port)); print(port); break
        except OSError: pass
')
mkdir -p "$work/characters/elena" "$work/characters/sofia" "$work/characters/debug-bot"
echo "You are Elena." > "$work/characters/elena/character.md"
cat > "$work/roster.yaml" <<ROSTER
version: 1
defaults:
  restart_delay: 50ms
  restart_delay_max: 1s
  stop_grace: 2s
  health: {ready: started, ready_timeout: 5s, watchdog: off}
characters:
  elena:
    command: [sleep, '3600']
    limits: {memory: 64M, pids: 32}
    env: {API_TOKEN: not-a-real-secret, GREETING: hello}
  sofia: {command: [sh, -c, 'echo sofia up; exec sleep 3600']}
  debug-bot: {command: [sleep, '3600'], profiles: [debug]}
jobs:
  tidy: {command: [sleep, '0.2'], schedule: "0 4 * * *"}
ROSTER
"$bin" --roster "$work/roster.yaml" --http "127.0.0.1:$port" --state-dir "$work/state" --runtime-dir "$work/run" \
  --log-dir "$work/logs" --cgroup "$cgroup" 2> "$work/whisperd.log" &
whisperd_pid=$!
socket=$work/run/control.sock
up() { curl -sf -o /dev/null "http://127.0.0.1:$port/health" && [ -S "$socket" ]; }
check "whisperd is up with its characters" wait_for 10 up

# One crash, so `incidents` has something to say.
curl -s --unix-socket "$socket" -X POST "http://whisperd/v1/characters/sofia/restart" >/dev/null

curl -sf "http://127.0.0.1:$port/openapi.json" -o "$work/loopback.json"
curl -sf --unix-socket "$socket" "http://whisperd/openapi.json" -o "$work/control.json"
check "openapi-spec-validator: the loopback port's document" "$venv/bin/openapi-spec-validator" "$work/loopback.json"
check "openapi-spec-validator: the control socket's document" "$venv/bin/openapi-spec-validator" "$work/control.json"

python3 scripts/api/unix_forward.py "$socket" "$work/forward.port" &
forward_pid=$!
wait_for 5 test -s "$work/forward.port"
forward=$(cat "$work/forward.port" 2>/dev/null)

# schemathesis: every check; its default phases (examples, coverage, fuzzing, stateful).
schemathesis() { # label url…
  local label=$1
  shift
  # In the scratch dir: schemathesis leaves its cache (.schemathesis/) where it runs.
  (cd "$work" && "$venv/bin/schemathesis" --config-file "$repo/scripts/api/schemathesis.toml" run "$@" --checks all \
    --max-examples "$examples" --request-timeout 5 --no-color --seed "${SEED:-1}") > "$work/schemathesis-$label.log" 2>&1
  local status=$?
  # All of it when something failed (each failure with its curl line to reproduce), else the summary.
  if [ "$status" -eq 0 ]; then tail -25 "$work/schemathesis-$label.log"; else cat "$work/schemathesis-$label.log"; fi | sed "s/^/  [$label] /"
  return $status
}
# The loopback port twice: as anyone (every dashboard change refused: 401, 403, 405), then with
# a dashboard session (the login `whisperctl dashboard` prints), so its reads and changes run
# for real: start/stop/restart of the throwaway fleet, edits of elena's character files.
dashboard_session() {
  local url cookie csrf
  url=$("$(dirname "$bin")/whisperctl" --socket "$socket" dashboard 2>/dev/null) || return 1
  cookie=$(curl -s -D - -o /dev/null "$url" | sed -n 's/^Set-Cookie: \([^;]*\);.*/\1/p')
  csrf=$(curl -s -H "Cookie: $cookie" "http://127.0.0.1:$port/dashboard/api/session" | python3 -c 'import json, sys; print(json.load(sys.stdin)["csrf"])') || return 1
  session_headers=(-H "Cookie: $cookie" -H "X-CSRF-Token: $csrf" -H "Origin: http://127.0.0.1:$port")
}
loopback_runs() {
  schemathesis loopback "http://127.0.0.1:$port/openapi.json" || return 1
  dashboard_session || { echo "  no dashboard session"; return 1; }
  # Held back with a session: /logout would end the session the rest of the run uses, and the
  # live log tail streams until the client hangs up (DashboardTests covers both).
  schemathesis loopback-session "http://127.0.0.1:$port/openapi.json" "${session_headers[@]}" \
    --exclude-path /logout --exclude-path '/dashboard/api/characters/{name}/logs' || return 1
  # The session's changes ran for real (whisperd logs each with who made it).
  local actions saves
  actions=$(grep -cE 'dashboard.*session [0-9a-f]+: (start|stop|restart) ' "$work/whisperd.log")
  saves=$(grep -cE 'dashboard.*session [0-9a-f]+: saved ' "$work/whisperd.log")
  echo "  [loopback-session] whisperd logged $actions dashboard actions and $saves saved character files"
  [ "$actions" -gt 0 ] && [ "$saves" -gt 0 ]
}
check "schemathesis: the loopback port (read-only API; the dashboard without and with a session)" loopback_runs
check "schemathesis: the control socket (the whole API, on a throwaway fleet)" \
  schemathesis control "$work/control.json" --url "http://127.0.0.1:$forward"

check "whisperd survived it and still answers" curl -sf -o /dev/null "http://127.0.0.1:$port/v1/characters"
# The generated calls included a re-exec in place: the same pid answers, as a new process image.
reexecs=$(curl -s "http://127.0.0.1:$port/health" | python3 -c 'import json, sys; print(json.load(sys.stdin)["supervisor"]["reexecs"])')
check "schemathesis re-executed whisperd in place ($reexecs times) and it kept its pid" \
  test "${reexecs:-0}" -gt 0 -a "$(curl -s "http://127.0.0.1:$port/health" | python3 -c 'import json, sys; print(json.load(sys.stdin)["supervisor"]["pid"])')" = "$whisperd_pid"
# whisperctl against an answer of the wrong shape (a whisperd of another version, say): a
# clear error naming the field, exit 1 — not a table of `-`.
python3 - "$work/drift.sock" <<'SERVER' &
import json, socketserver, sys
from http.server import BaseHTTPRequestHandler
class Handler(BaseHTTPRequestHandler):
    def address_string(self): return "unix"
    def log_message(self, *args): pass
    def do_GET(self):
        character = {"name": "elena", "kind": "character", "desired": "up", "ready": True, "restarts": 0, "crash_loop": False}
        body = json.dumps({"characters": [character]}).encode()  # no "state"
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
socketserver.UnixStreamServer(sys.argv[1], Handler).serve_forever()
SERVER
drift_pid=$!
wait_for 5 test -S "$work/drift.sock"
"$(dirname "$bin")/whisperctl" --socket "$work/drift.sock" status > "$work/drift.out" 2>&1
drift_code=$?
sed 's/^/  [drift] /' "$work/drift.out"
check "whisperctl refuses an answer without a required field, naming it (exit $drift_code)" \
  grep -q 'field .characters\[0\].state is missing' "$work/drift.out"
[ "$drift_code" = 1 ] || fail "whisperctl's exit code for a malformed answer is $drift_code, not 1"
kill "$drift_pid" 2>/dev/null; wait "$drift_pid" 2>/dev/null

if [ "$failures" -gt 0 ]; then
  echo "--- the end of whisperd's log:"
  tail -30 "$work/whisperd.log"
fi
echo "$failures failed"
[ "$failures" -eq 0 ]
