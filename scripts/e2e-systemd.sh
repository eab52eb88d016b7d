#!/usr/bin/env bash
# End-to-end test on a real systemd. Boots a minimal Debian 12 (debootstrap, cached in
# $WHISPERD_E2E_CACHE, default /var/cache/whisperd-e2e) with `systemd-nspawn -b`, installs
# whisperd into it with scripts/install.sh, and checks what an operator relies on:
#
#   systemctl start whisperd     active (running) only after READY: every character ready
#   whisperctl status, curl -f   the sample characters ready; /health 200
#   systemctl reload whisperd    a roster edit applied as a diff; a broken roster refused
#                                by the reload, fleet untouched
#   watchdog                     a SIGSTOPped whisperd is restarted by systemd, and its old
#                                characters do not survive it
#   journalctl CHARACTER=elena   elena's own lines and whisperd's events about her
#   systemctl stop whisperd      no character process left
#
# Run as root; exits non-zero when a check fails. The container has its own network
# namespace (loopback only), so nothing here touches the host's ports; the machine's cgroups,
# the copy of the root and the container are removed at exit, pass or fail.
set -euo pipefail
trap 'echo "e2e-systemd: stopped at line $LINENO: $BASH_COMMAND" >&2' ERR
cd "$(dirname "$0")/.."
checkout=$PWD
[ "$(id -u)" = 0 ] || { echo "e2e-systemd: run as root" >&2; exit 1; }

cache=${WHISPERD_E2E_CACHE:-/var/cache/whisperd-e2e}
packages=systemd,systemd-sysv,dbus,libsystemd0,curl,procps,libcurl4,libsqlite3-0,libpq5
image=$cache/bookworm-$(printf %s "$packages" | sha256sum | cut -c1-12)
machine=whisperd-e2e-$$
started_at=$SECONDS

# shellcheck source=scripts/e2e-checks.sh
source scripts/e2e-checks.sh

# The Debian mirror this machine's apt uses (never written into the repo).
mirror() {
  local uri
  uri=$(awk '
    /^URIs:/ { uris = $2 }
    /^Suites:/ { for (i = 2; i <= NF; i++) if ($i == "bookworm") found = uris }
    /^$/ { uris = "" }
    END { print found }' /etc/apt/sources.list.d/*.sources 2>/dev/null || true)
  [ -n "$uri" ] || uri=$(awk '$1 == "deb" && $3 == "bookworm" { print $2; exit }' /etc/apt/sources.list 2>/dev/null || true)
  echo "${uri:-http://deb.debian.org/debian}"
}

step "dependencies and release build"
scripts/install-deps.sh test
scripts/build-release.sh >/dev/null

if [ ! -x "$image/usr/lib/systemd/systemd" ]; then
  step "debootstrap bookworm into $image (cached for later runs)"
  mkdir -p "$cache"
  rm -rf "$image.partial"
  debootstrap --variant=minbase --include="$packages" bookworm "$image.partial" "$(mirror)" >"$cache/debootstrap.log" 2>&1 ||
    { tail -20 "$cache/debootstrap.log" >&2; echo "e2e-systemd: debootstrap failed (log: $cache/debootstrap.log)" >&2; exit 1; }
  mv "$image.partial" "$image"
  # Images of an older package list are not used again.
  find "$cache" -mindepth 1 -maxdepth 1 -name 'bookworm-*' ! -path "$image" -exec rm -rf {} +
fi

work=$(mktemp -d /var/tmp/whisperd-e2e.XXXXXX)
cgroups=()
for hierarchy in /sys/fs/cgroup/unified /sys/fs/cgroup/systemd /sys/fs/cgroup; do
  if [ -e "$hierarchy/cgroup.procs" ] && mkdir "$hierarchy/$machine" 2>/dev/null; then cgroups+=("$hierarchy/$machine"); fi
done
nspawn_pid=
cleanup() {
  if [ -n "$nspawn_pid" ] && kill -0 "$nspawn_pid" 2>/dev/null; then
    kill -TERM "$nspawn_pid" # nspawn asks the container's systemd to power off
    for _ in $(seq 200); do kill -0 "$nspawn_pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$nspawn_pid" 2>/dev/null || true
    wait "$nspawn_pid" 2>/dev/null || true
  fi
  # --keep-unit leaves the container's (empty) cgroups under ours.
  for group in "${cgroups[@]}"; do find "$group" -depth -type d -exec rmdir {} + 2>/dev/null || true; done
  rm -rf "$work"
}
trap cleanup EXIT

step "boot the container"
cp -a "$image" "$work/root"
# The container lives in cgroups of its own (made above), which cleanup removes.
export ROOT="$work/root" MACHINE=$machine CHECKOUT=$checkout
sh -c 'for group in "$@"; do echo $$ >"$group/cgroup.procs"; done; exec systemd-nspawn --quiet -D "$ROOT" -M "$MACHINE" \
  --register=no --keep-unit --console=passive --private-network --bind-ro="$CHECKOUT:/src" -b' \
  boot "${cgroups[@]}" >"$work/console.log" 2>&1 &
nspawn_pid=$!
leader=
for _ in $(seq 100); do
  leader=$(ps -o pid= --ppid "$nspawn_pid" | tr -d " " | head -1 || true)
  [ -n "$leader" ] && break
  sleep 0.1
done
[ -n "$leader" ] || { cat "$work/console.log" >&2; echo "e2e-systemd: the container did not start" >&2; exit 1; }

inside() { nsenter -t "$leader" -a env -i PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin LANG=C.UTF-8 "$@"; }
export leader
export -f inside
# Until the container's PID 1 is systemd with its bus up, systemctl says nothing or "offline".
state=
for _ in $(seq 300); do
  state=$(inside timeout 60 systemctl is-system-running --wait 2>/dev/null || true)
  [ -n "$state" ] && [ "$state" != offline ] && break
  sleep 0.1
done
echo "container systemd: $state"
[ "$state" = running ] || [ "$state" = degraded ] || { cat "$work/console.log" >&2; exit 1; }

step "install with scripts/install.sh"
inside /src/scripts/install.sh --no-build
check "install.sh is idempotent (second run changes nothing in /etc/whisperd)" \
  bash -c "! inside /src/scripts/install.sh --no-build | grep -E '^(installed|upgraded|kept) /etc/whisperd'"
verify_errors=$(inside systemd-analyze verify /etc/systemd/system/whisperd.service 2>&1 >/dev/null || echo "exit $?")
check "systemd-analyze verify on the installed unit: clean (no stderr)" test -z "$verify_errors"
[ -z "$verify_errors" ] || echo "$verify_errors"
inside systemd-analyze security whisperd.service --no-pager | tail -1
# Fast watchdog for this test only; the shipped unit says 30 s.
inside mkdir -p /etc/systemd/system/whisperd.service.d
printf '[Service]\nWatchdogSec=4s\nTimeoutAbortSec=2s\n' | inside tee /etc/systemd/system/whisperd.service.d/e2e.conf >/dev/null
inside systemctl daemon-reload

show() { inside systemctl show -p "$1" --value whisperd; }
status() { inside whisperctl status; }
pid_of() { status | awk -v name="$1" '$1 == name { print $4 }'; }
gone() { ! inside kill -0 "$1" 2>/dev/null; }
all_ready() { status | head -1 | grep -qE " ([0-9]+)/\1 characters ready"; }

step "systemctl start whisperd"
# A character that takes 2 s to become ready: systemctl start must wait for it.
printf '  slow:\n    command: [sh, -c, "sleep 2 && whisperd notify READY=1 && exec sleep infinity"]\n' |
  inside tee -a /etc/whisperd/roster.yaml >/dev/null
start_ms=$(date +%s%N)
inside systemctl start whisperd
start_ms=$((($(date +%s%N) - start_ms) / 1000000))
echo "systemctl start returned after ${start_ms} ms"
check "active (running) once systemctl start returns" test "$(show ActiveState)/$(show SubState)" = active/running
status_after_start=$(status)
echo "$status_after_start"
check "systemctl start waited for the slow character (>= 2 s)" test "$start_ms" -ge 2000
check "READY came after every character was ready (4/4 at once)" grep -q " 4/4 characters ready" <<<"$status_after_start"
for name in elena aria ryan; do
  check "$name is running and ready" grep -qE "^$name +running +yes " <<<"$status_after_start"
done
check "curl -f /health" inside curl -fsS -o /dev/null http://127.0.0.1:9464/health
check "/metrics scrapes, gzip-encoded, inside the sandbox" \
  bash -c 'inside curl -fsS --compressed http://127.0.0.1:9464/metrics | grep -q "whisperd_character_ready{character=\"elena\"} 1"'
check "elena answers on her own port" inside curl -fsS -o /dev/null http://127.0.0.1:8000/health
check "elena's chat says which LLM variables to set (503: none configured here)" \
  bash -c 'inside curl -sS -o /dev/stderr -w "%{http_code}" -X POST -d "{\"user_id\":\"op\",\"message\":\"hi\"}" \
    http://127.0.0.1:8000/api/chat 2>&1 | grep -q "LLM_BASE_URL.*503"'
check "her conversation store is in her own state directory" inside test -f /var/lib/whisperd/elena/memory.sqlite3
# Each character is a tenant (docs/security.md): a dynamic uid of its own, owning only its dirs.
check "elena runs as a dynamic user of her own, not root" \
  bash -c 'pid=$(inside pgrep -of "whisperd worker elena"); uid=$(inside ps -o uid= -p "$pid" | tr -d " "); [ -n "$uid" ] && [ "$uid" -ge 61184 ] && [ "$uid" -le 65519 ]'
check "her state directory is hers alone (0700, her uid)" \
  bash -c '[ "$(inside stat -c %a /var/lib/whisperd/elena)" = 700 ] && [ "$(inside stat -c %u /var/lib/whisperd/elena)" -ge 61184 ]'
check "aria cannot read elena's store" \
  bash -c '! inside setpriv --reuid="$(inside stat -c %u /var/lib/whisperd/aria)" --regid="$(inside stat -c %g /var/lib/whisperd/aria)" --clear-groups cat /var/lib/whisperd/elena/memory.sqlite3 >/dev/null 2>&1'
check "systemctl status shows whisperd's STATUS= summary" bash -c 'inside systemctl show -p StatusText --value whisperd | grep -q "4/4 characters ready"'
inside useradd --no-create-home --user-group --groups whisperd e2e-operator
check "a member of group whisperd can use whisperctl" inside runuser -u e2e-operator -- whisperctl status
inside useradd --no-create-home --user-group e2e-outsider
check "a user outside the group cannot" bash -c '! inside runuser -u e2e-outsider -- whisperctl status >/dev/null 2>&1'
check "cgroup backend reported in status" grep -qE "cgroups (v2|hybrid)" <<<"$status_after_start"
control_group=$(show ControlGroup)
check "characters live in sibling cgroups of the delegated subtree" \
  inside test -d "/sys/fs/cgroup/unified$control_group/char-elena" -o -d "/sys/fs/cgroup$control_group/char-elena"

step "systemctl reload whisperd (diff-apply)"
before_elena=$(pid_of elena) before_aria=$(pid_of aria)
inside cp /etc/whisperd/roster.yaml /root/roster.good
printf '  echo:\n    command: [sleep, infinity]\n    health: {ready: started}\n' | inside tee -a /etc/whisperd/roster.yaml >/dev/null
check "systemctl reload succeeds with a valid edit" inside systemctl reload whisperd
check "the added character runs after reload" wait_for 10 bash -c 'inside whisperctl status | grep -qE "^echo +running +yes "'
check "unchanged characters kept their processes" test "$(pid_of elena)/$(pid_of aria)" = "$before_elena/$before_aria"
inside cp /etc/whisperd/roster.yaml /root/roster.with-echo
printf '  Bad Name:\n    command: [true]\n' | inside tee -a /etc/whisperd/roster.yaml >/dev/null
if inside systemctl reload whisperd 2>"$work/reload.err"; then
  fail "a broken roster makes systemctl reload fail"
else
  pass "a broken roster makes systemctl reload fail"
fi
check "the fleet is untouched by the broken roster" \
  test "$(pid_of elena)/$(pid_of aria)/$(status | grep -c '^echo ')" = "$before_elena/$before_aria/1"
check "the refused reload is in the journal with the problem" \
  bash -c 'inside journalctl -u whisperd --no-pager -o cat | grep -q "Bad Name"'
inside cp /root/roster.good /etc/whisperd/roster.yaml
check "systemctl reload succeeds with the original roster" inside systemctl reload whisperd
check "removing the character stops it" wait_for 10 bash -c '! inside whisperctl status | grep -q "^echo "'

step "watchdog: a frozen whisperd is restarted by systemd"
old_main=$(show MainPID) old_elena=$(pid_of elena)
inside kill -STOP "$old_main"
check "systemd restarted whisperd (new main pid, NRestarts=1)" \
  wait_for 30 bash -c '[ "$(inside systemctl show -p NRestarts --value whisperd)" = 1 ] &&
    [ "$(inside systemctl show -p ActiveState --value whisperd)" = active ] &&
    [ "$(inside systemctl show -p MainPID --value whisperd)" != '"$old_main"' ]'
check "the characters are back and ready" wait_for 20 all_ready
check "the old whisperd is gone" gone "$old_main"
check "the old whisperd's characters are gone" gone "$old_elena"
check "one elena, not two" test "$(inside pgrep -fc 'whisperd worker elena')" = 1
check "one slow, not two" test "$(inside pgrep -fc 'sleep infinity')" = 1
inside journalctl -u whisperd --no-pager -o cat | grep -iE "watchdog" | tail -2 || true

step "journald"
journal_elena=$(inside journalctl -u whisperd CHARACTER=elena --no-pager -o cat)
check "journalctl -u whisperd CHARACTER=elena shows elena's own output" grep -q "serving elena on http://127.0.0.1:8000" <<<"$journal_elena"
check "… and whisperd's events about elena" grep -q "elena: starting -> running" <<<"$journal_elena"
check "… and nothing about aria" bash -c "! grep -q 'serving aria' <<<\"\$0\"" "$journal_elena"
check "elena's lines carry SYSLOG_IDENTIFIER=elena and PRIORITY from the stream" \
  bash -c 'inside journalctl -u whisperd CHARACTER=elena SYSLOG_IDENTIFIER=elena -o verbose --no-pager | grep -q "PRIORITY=[36]"'
check "whisperd's own lines are not doubled (native entries replace stderr)" \
  test "$(inside journalctl -u whisperd --no-pager -o cat | grep -c 'startup complete')" = 2

step "whisperctl reexec: whisperd upgrades in place"
old_main=$(show MainPID) old_elena=$(pid_of elena)
check "whisperctl reexec succeeds" inside whisperctl reexec
check "same MainPID, still active" \
  bash -c '[ "$(inside systemctl show -p MainPID --value whisperd)" = '"$old_main"' ] &&
    [ "$(inside systemctl show -p ActiveState --value whisperd)" = active ]'
check "elena kept her pid" test "$(pid_of elena)" = "$old_elena"
check "no restart of whisperd counted (NRestarts still 1)" test "$(show NRestarts)" = 1
check "every character still ready" wait_for 10 all_ready
check "elena still answers on her port; /health through the handed-over listener" \
  bash -c 'inside curl -fsS -o /dev/null http://127.0.0.1:8000/health && inside curl -fsS http://127.0.0.1:9464/health | grep -q "\"reexecs\":1"'

step "systemctl stop whisperd"
inside systemctl stop whisperd
check "inactive after stop" test "$(show ActiveState)" = inactive
check "no character process left" bash -c "! inside pgrep -f 'whisperd worker|sleep infinity'"
check "whisperd stopped its characters itself (graceful, in the journal)" \
  bash -c 'inside journalctl -u whisperd --no-pager -o cat | grep -q "every service stopped"'

step "upgrade keeps an operator's edits"
printf '# edited by the operator\n' | inside tee -a /etc/whisperd/roster.yaml >/dev/null
edited=$(inside sha256sum /etc/whisperd/roster.yaml)
check "install.sh over an edited roster reports it kept" \
  bash -c 'inside /src/scripts/install.sh --no-build | grep -q "kept /etc/whisperd/roster.yaml (edited); the new version is /etc/whisperd/roster.yaml.dist"'
check "the edited roster is untouched, the new one beside it" \
  bash -c '[ "$(inside sha256sum /etc/whisperd/roster.yaml)" = "$0" ] && inside test -f /etc/whisperd/roster.yaml.dist' "$edited"

step "uninstall"
inside /src/scripts/uninstall.sh
check "uninstall removes the binaries and the unit" \
  bash -c '! inside test -e /usr/local/bin/whisperd && ! inside test -e /etc/systemd/system/whisperd.service'
check "uninstall keeps the state directory" inside test -d /var/lib/whisperd
check "uninstall keeps the edited roster, removes the untouched characters" \
  bash -c 'inside test -f /etc/whisperd/roster.yaml && ! inside test -e /etc/whisperd/characters/elena/character.md'
inside /src/scripts/install.sh --no-build >/dev/null
inside /src/scripts/uninstall.sh --purge >/dev/null
check "uninstall --purge removes configuration, state, logs and the group" \
  bash -c '! inside test -e /etc/whisperd && ! inside test -e /var/lib/whisperd && ! inside getent group whisperd >/dev/null'

step "done"
if [ "$failures" -gt 0 ]; then
  echo "e2e-systemd: $failures check(s) FAILED"
  inside journalctl -u whisperd --no-pager -n 60 || true
  exit 1
fi
echo "e2e-systemd: every check passed in $((SECONDS - started_at)) s"
