#!/usr/bin/env bash
# End-to-end: the web dashboard in a real browser and `whisperctl top` in a real terminal.
# whisperd (the debug build, run as root on this host's cgroups) supervises three characters:
# elena (the built-in worker, on an LLM that echoes a marker of its system prompt), hog (a
# command that takes 160 MiB more memory at each SIGUSR1) and snoop (a command that tries to
# read the dashboard's token file). Then:
#   - scripts/e2e-dashboard/browser.py: Chromium + selenium (see its docstring);
#   - whisperctl top in tmux (send-keys, capture-pane): sorting, selection, restart, log view,
#     a narrow terminal, whisperd going away (says so, keeps retrying), q restores the terminal;
#   - snoop could not read the token.
# Prints PASS/FAIL lines. 25–80 s once built (the machine's load decides). UPDATE_SCREENSHOTS=1 copies the browser's
# screenshots to docs/screenshots/. Run as root.
set -euo pipefail
trap 'echo "e2e-dashboard: stopped at line $LINENO: $BASH_COMMAND" >&2' ERR
cd "$(dirname "$0")/.."
repo=$PWD
started_at=$SECONDS

scripts/install-deps.sh test >&2
swift build >&2
bin_dir=$(swift build --show-bin-path)
bin=$bin_dir/whisperd
ctl=$bin_dir/whisperctl

work=$(mktemp -d /tmp/dashboard-e2e-XXXXXX)
# Characters run as users of their own: they must be able to enter the tree and run the binary.
chmod 755 "$work"
cp "$bin" "$work/whisperd"
chmod 755 "$work/whisperd"
mkdir -p "$work/characters/elena" "$work/screenshots"
cp scripts/e2e-dashboard/hog.py "$work/hog.py"
chmod 755 "$work/hog.py"
printf 'You are Elena, a marine biologist. Marker: ORIGINAL-PERSONA\n' >"$work/characters/elena/character.md"
printf 'purpose: Teach the sea\ntimezone: UTC\n' >"$work/characters/elena/core.yaml"
# Not root's: the edit must keep this owner and mode.
chown -R nobody:nogroup "$work/characters/elena"
chmod 644 "$work/characters/elena/"*
free_port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
http_port=$(free_port)
elena_port=$(free_port)
tmux_session="dashboard-e2e-$$"
whisperd_pid=
llm_pid=
cleanup() {
  tmux kill-session -t "$tmux_session" 2>/dev/null || true
  if [ -n "$whisperd_pid" ] && kill -0 "$whisperd_pid" 2>/dev/null; then
    kill -TERM "$whisperd_pid"
    wait "$whisperd_pid" 2>/dev/null || true
  fi
  if [ -n "$llm_pid" ]; then kill "$llm_pid" 2>/dev/null || true; fi
  rm -rf "$work"
}
trap cleanup EXIT

coproc LLM { exec python3 scripts/e2e-dashboard/echo_llm.py; }
llm_pid=$LLM_PID
read -r llm_port <&"${LLM[0]}"

cat >"$work/roster.yaml" <<EOF
version: 1
characters_dir: characters
defaults:
  restart: always
  restart_delay: 100ms
characters:
  elena:
    port: $elena_port
    env: {LLM_BASE_URL: "http://127.0.0.1:$llm_port/v1", LLM_MODEL_NAME: echo, LLM_API_KEY: sk-e2e-dashboard-secret}
    limits: {memory: 256M}
  hog:
    command: [/usr/bin/python3, $work/hog.py]
    health: {ready: log, ready_log_line: "hog ready"}
    limits: {memory: 512M}
  snoop:
    command: [/bin/sh, -c, 'cat "\$TOKEN_FILE" >/dev/null 2>&1 && echo "snoop: READ the token" || echo "snoop: refused"; exec sleep 3600']
    env: {TOKEN_FILE: "$work/.whisperd/run/dashboard.token"}
    health: {ready: started}
EOF

failures=0
check() {
  local description=$1
  shift
  if "$@"; then echo "PASS $description"; else echo "FAIL $description"; failures=$((failures + 1)); fi
}
socket=$work/.whisperd/run/control.sock
export WHISPERD_LOG=$work/whisperd.log
"$work/whisperd" --roster "$work/roster.yaml" --http "127.0.0.1:$http_port" --cgroup "/dashboard-e2e-$$" 2>"$WHISPERD_LOG" &
whisperd_pid=$!
for _ in $(seq 600); do
  grep -q "startup complete" "$WHISPERD_LOG" && break
  kill -0 "$whisperd_pid" 2>/dev/null || break
  sleep 0.1
done
grep -q "startup complete" "$WHISPERD_LOG" || { tail -30 "$WHISPERD_LOG" >&2; exit 1; }
echo "up after $((SECONDS - started_at)) s"

token_file=$work/.whisperd/run/dashboard.token
check "the token file is 0640 root:whisperd" test "$(stat -c '%a %U %G' "$token_file")" = "640 root whisperd"
snoop_said() { for _ in $(seq 50); do "$ctl" --socket "$socket" logs snoop | grep -q "snoop: $1" && return 0; sleep 0.1; done; return 1; }
check "a character (own uid, Landlock) cannot read the token file" snoop_said refused

/var/cache/whisperd-test/selenium/bin/python scripts/e2e-dashboard/browser.py --port "$http_port" --elena-port "$elena_port" --ctl "$ctl" --socket "$socket" \
  --characters "$work/characters" --screenshots "$work/screenshots" || failures=$((failures + 1))
if [ "${UPDATE_SCREENSHOTS:-0}" = 1 ]; then cp "$work"/screenshots/*.png docs/screenshots/; fi

# ---- whisperctl top in tmux ---------------------------------------------------------------
pane() { tmux capture-pane -p -t "$tmux_session"; }
# pane_has TEXT [SECONDS]: the pane shows TEXT within SECONDS (default 10).
pane_has() {
  local deadline=$((SECONDS + ${2:-10}))
  while [ $SECONDS -le "$deadline" ]; do
    pane | grep -qF -- "$1" && return 0
    sleep 0.2
  done
  echo "--- the pane, without \"$1\":"
  pane
  return 1
}
# hog takes the most memory again (the browser test killed the run that held it).
hog_pid=$("$ctl" --socket "$socket" status --json hog | python3 -c 'import json,sys; print(json.load(sys.stdin)[0]["pid"])')
kill -USR1 "$hog_pid"
for _ in $(seq 50); do "$ctl" --socket "$socket" logs -n 1 hog | grep -q "hog holds 160 MiB" && break; sleep 0.1; done
tmux new-session -d -s "$tmux_session" -x 110 -y 20 "'$ctl' --socket '$socket' top --interval 0.5; echo top-exited-\$?; sleep 30"
check "top shows the fleet" pane_has "3 characters, 3 running"
check "top lists hog with its memory" pane_has "hog "
tmux send-keys -t "$tmux_session" n
check "n sorts by name" pane_has "sorted by name"
# first_row PATTERN: within 10 s, the table's first row matches PATTERN (grep -E).
first_row() {
  local deadline=$((SECONDS + 10))
  while [ $SECONDS -le "$deadline" ]; do
    pane | grep -E '^[> ] +[a-z]' | head -1 | grep -qE -- "$1" && return 0
    sleep 0.2
  done
  echo "--- the pane, whose first row is not /$1/:"
  pane
  return 1
}
check "sorted by name, elena comes first" first_row '^[> ] +elena '
tmux send-keys -t "$tmux_session" m
check "m sorts by memory" pane_has "sorted by memory"
# hog's 160 MiB may reach top a refresh later (whisperd reads cgroups at most once a second).
check "…hog (the most memory) first" first_row '^[> ] +hog '
# ↑ (and k) move the selection to the top row.
tmux send-keys -t "$tmux_session" Up Up k
check "…selected with ↑" first_row '^> +hog '
hog_pid=$("$ctl" --socket "$socket" status --json hog | python3 -c 'import json,sys; print(json.load(sys.stdin)[0]["pid"])')
tmux send-keys -t "$tmux_session" R
check "R restarts the selected character" pane_has "restarting hog"
check "…hog has a new pid" bash -c "for _ in \$(seq 50); do p=\$('$ctl' --socket '$socket' status --json hog | python3 -c 'import json,sys; print(json.load(sys.stdin)[0].get(\"pid\"))'); [ \"\$p\" != None ] && [ \"\$p\" != $hog_pid ] && exit 0; sleep 0.2; done; exit 1"
check "the restart from top is logged with its uid" grep -q "control.*uid=0.*restart hog" "$WHISPERD_LOG"
tmux send-keys -t "$tmux_session" l
check "l follows the selected character's log" pane_has "log of hog"
check "…showing its lines" pane_has "hog ready"
tmux send-keys -t "$tmux_session" Escape
check "Esc goes back to the table" pane_has "sorted by memory"
tmux resize-window -t "$tmux_session" -x 36 -y 12
check "on a 36-column terminal every line fits" bash -c "sleep 1.5; tmux capture-pane -p -t '$tmux_session' | awk 'length > 36 { bad = 1 } END { exit bad }'"
check "…and it still shows the names" pane_has "elena"
tmux resize-window -t "$tmux_session" -x 110 -y 20

kill -TERM "$whisperd_pid"
wait "$whisperd_pid" && code=0 || code=$?
whisperd_pid=
check "whisperd exits 0 on SIGTERM" test "$code" = 0
check "top says whisperd went away and keeps retrying" pane_has "not reachable — retrying"
tmux send-keys -t "$tmux_session" q
check "q quits top with exit 0" pane_has "top-exited-0"
check "…and gives the terminal back (no alternate screen left)" bash -c "[ \"\$(tmux display -p -t '$tmux_session' '#{alternate_on}')\" = 0 ]"

if [ "$failures" -gt 0 ]; then
  echo "e2e-dashboard: $failures check(s) FAILED"
  tail -40 "$WHISPERD_LOG"
  exit 1
fi
echo "e2e-dashboard: every check passed in $((SECONDS - started_at)) s"
