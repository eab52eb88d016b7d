# Sourced (bash) by the end-to-end scripts: their step headers and PASS/FAIL lines, which
# scripts/test.sh counts. Set started_at=$SECONDS before sourcing; `failures` counts FAILs.
step() { printf '\n== %s (%ds)\n' "$*" $((SECONDS - started_at)); }
failures=0
pass() { echo "PASS $*"; }
fail() { echo "FAIL $*"; failures=$((failures + 1)); }
check() { # description command…: passes when the command succeeds
  local description=$1
  shift
  if "$@"; then pass "$description"; else fail "$description"; fi
}
wait_for() { # seconds command…: polls a condition seen from outside (no event to await from there)
  local deadline=$((SECONDS + $1))
  shift
  until "$@"; do
    [ $SECONDS -lt $deadline ] || return 1
    sleep 0.2
  done
}
