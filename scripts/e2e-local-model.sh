#!/usr/bin/env bash
# End-to-end on a real model: the sample roster — with its local model entry
# (scripts/local-llm.sh, SmolLM2-135M) — comes up under whisperd; elena answers a chat
# through the model; a second turn carries the first in its prompt; whisperctl and /health
# show every entry ready; SIGTERM leaves nothing behind.
#
# Uses the sample's fixed ports (8000-8002, 8080) and fails at once if one is taken. The
# first run installs the model (scripts/local-llm.sh --install: minutes). Run as root.
set -euo pipefail
trap 'echo "e2e-local-model: stopped at line $LINENO: $BASH_COMMAND" >&2' ERR
cd "$(dirname "$0")/.."
repo=$PWD
started_at=$SECONDS

scripts/install-deps.sh run
scripts/local-llm.sh --install
bin=$(scripts/build-release.sh)
ctl=$(dirname "$bin")/whisperctl
for port in 8000 8001 8002 8080; do
  if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
    echo "e2e-local-model: port $port is in use (the sample roster needs 8000-8002 and 8080)" >&2
    exit 1
  fi
done

# The sample roster as it is, in a scratch tree (no operator .env from the checkout).
work=$(mktemp -d /tmp/whisperd-e2e-model-XXXXXX)
# Characters run as users of their own (docs/security.md): they must be able to enter the tree.
chmod 755 "$work"
mkdir "$work/etc"
cp etc/roster.yaml etc/local-llm.env "$work/etc/"
chmod 600 "$work/etc/local-llm.env"
ln -s "$repo/scripts" "$repo/characters" "$repo/.local-llm" "$work/"
http_port=$((20000 + RANDOM % 20000))
whisperd_pid=
cleanup() {
  if [ -n "$whisperd_pid" ] && kill -0 "$whisperd_pid" 2>/dev/null; then
    kill -TERM "$whisperd_pid"
    wait "$whisperd_pid" 2>/dev/null || true
  fi
  rm -rf "$work"
}
trap cleanup EXIT

failures=0
check() {
  local description=$1
  shift
  if "$@"; then echo "PASS $description"; else echo "FAIL $description"; failures=$((failures + 1)); fi
}
status() { "$ctl" --socket "$work/etc/.whisperd/run/control.sock" status; }

"$bin" --roster "$work/etc/roster.yaml" --http "127.0.0.1:$http_port" --cgroup "/whisperd-e2e-model-$$" 2>"$work/whisperd.log" &
whisperd_pid=$!
# whisperd logs this once every entry has settled (what it tells systemd as READY=1).
for _ in $(seq 1200); do
  grep -q "startup complete" "$work/whisperd.log" && break
  kill -0 "$whisperd_pid" 2>/dev/null || break
  sleep 0.1
done
grep "startup complete" "$work/whisperd.log" || { tail -30 "$work/whisperd.log" >&2; exit 1; }
echo "up after $((SECONDS - started_at)) s (install and build included)"
status
check "every entry ready (local-llm, elena, aria, ryan)" bash -c "'$ctl' --socket '$work/etc/.whisperd/run/control.sock' status | head -1 | grep -q ' 4/4 characters ready'"
check "curl -f /health" curl -fsS -o /dev/null "http://127.0.0.1:$http_port/health"

prompt_tokens() {
  curl -s http://127.0.0.1:8000/metrics | awk -F' ' '/^whisperd_worker_llm_tokens_total\{character="elena",kind="prompt"\}/ { print $2 }'
}
chat() {
  curl -sS -X POST http://127.0.0.1:8000/api/chat -H 'Content-Type: application/json' \
    -d "{\"user_id\":\"e2e-$$\",\"message\":\"$1\",\"context\":{\"user_name\":\"Sam\"}}"
}
first=$(chat "Hi Elena! What do you study?")
echo "elena: $first"
check "elena answers through the model (success, non-empty, model smollm2)" python3 -c '
import json, sys
reply = json.loads(sys.argv[1])
assert reply["success"] is True and reply["response"].strip() and reply["model_used"].startswith("smollm2"), reply
' "$first"
# In character: her persona is a marine biologist in Monterey; a reply about none of it is not hers.
check "the reply is in character (speaks of her name, the sea or her work)" python3 -c '
import json, sys
text = json.loads(sys.argv[1])["response"].lower()
assert any(word in text for word in ["elena", "ocean", "marine", "kelp", "sea", "otter", "tide", "dive", "monterey", "biolog", "reef", "fish"]), text
' "$first"
after_first=$(prompt_tokens)
second=$(chat "Thanks. Tell me one more thing about it.")
echo "elena: $second"
after_second=$(prompt_tokens)
second_prompt=$(python3 -c "print(round(float('$after_second') - float('$after_first')))")
echo "prompt tokens: first turn ${after_first%.*}, second turn $second_prompt"
check "the second turn's prompt carries the first exchange (more prompt tokens than the first turn)" \
  python3 -c "import sys; sys.exit(0 if $second_prompt > float('$after_first') + 5 else 1)"
check "the second turn succeeded" python3 -c 'import json, sys; assert json.loads(sys.argv[1])["success"] is True' "$second"

model_pid=$(status | awk '$1 == "local-llm" { print $4 }')
kill -TERM "$whisperd_pid"
wait "$whisperd_pid" && code=0 || code=$?
whisperd_pid=
check "whisperd exits 0 on SIGTERM" test "$code" = 0
check "the model server is gone with it" bash -c "! kill -0 $model_pid 2>/dev/null"

if [ "$failures" -gt 0 ]; then
  echo "e2e-local-model: $failures check(s) FAILED"
  tail -40 "$work/whisperd.log"
  exit 1
fi
echo "e2e-local-model: every check passed in $((SECONDS - started_at)) s"
