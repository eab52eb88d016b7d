#!/usr/bin/env bash
# End-to-end on a real container engine: a sample fleet's roster — a migrate job and two
# characters on PostgreSQL, answering through a stand-in LLM — exported with
# `whisperd export kubernetes`, validated with kubernetes-validate --strict, and played with
# Debian's `podman kube play` from the image scripts/build-image.sh makes. It checks what an
# operator moving to Kubernetes relies on:
#
#   the image                      its whisperd is this build's; it has no shell
#   kubernetes-validate --strict   every exported manifest, for Kubernetes 1.31 (the validator
#                                  scripts/install-deps.sh test pins)
#   podman kube play               the pods run: PostgreSQL (scripts/build-image.sh --postgres,
#                                  hand-written manifest), then each exported character
#   readiness, chat                each character's run-one says ready on :9464/health (what
#                                  the kubelet probes) and it answers POST /api/chat on its
#                                  port at its pod's address
#   PostgreSQL                     their history is in the shared database (psql)
#   restart                        a character container whose main process is SIGKILLed is
#                                  restarted by the engine (new pid, restart count) and answers
#   limits, user                   its cgroup memory limit is the roster's; every process in it
#                                  runs as uid/gid 10001, not root
#   teardown                       podman kube down leaves no pod or container
#
# podman runs with a private configuration and storage (scripts/podman-private.sh) on a
# network of its own with DNS; the LLM stand-in (scripts/bench/fake_llm.py) listens on that
# network's gateway address only. What podman 4.3 cannot play (Service, Job, Secret documents)
# is emulated or skipped by scripts/podman-kube-play.py, which says so. Everything — pods,
# containers, images, volumes, secrets, the network — is removed at exit, pass or fail.
# Run as root; ~20 s with the images built, ~90 s when the binary changed.
set -euo pipefail
trap 'echo "e2e-kubernetes: stopped at line $LINENO: $BASH_COMMAND" >&2' ERR
cd "$(dirname "$0")/.."
[ "$(id -u)" = 0 ] || { echo "e2e-kubernetes: run as root" >&2; exit 1; }
started_at=$SECONDS
# kubernetes-validate and its Python (with PyYAML), installed by scripts/install-deps.sh test.
validator_home=/var/cache/whisperd-test/kubernetes-validate
kubernetes_version=1.31.0
image=localhost/whisperd:latest
postgres_image=localhost/whisperd-test-postgres:15
user_id=e2e-kube-$$

# shellcheck source=scripts/e2e-checks.sh
source scripts/e2e-checks.sh

step "dependencies, release build, images"
scripts/install-deps.sh test
bin=$(scripts/build-release.sh)
whisperd_archive=$(scripts/build-image.sh)
postgres_archive=$(scripts/build-image.sh --postgres)

work=$(mktemp -d /var/tmp/whisperd-e2e-kube.XXXXXX)
# shellcheck source=scripts/podman-private.sh
source scripts/podman-private.sh
llm_pid=
cleanup() {
  local file
  for file in "$work"/played/*.yaml; do
    [ -e "$file" ] && podman kube down "$file" >/dev/null 2>&1 || true
  done
  if [ -n "$llm_pid" ]; then kill "$llm_pid" 2>/dev/null || true; wait "$llm_pid" 2>/dev/null || true; fi
  podman_private_remove "$work/podman"
  rm -rf "$work"
}
trap cleanup EXIT
podman_private_setup "$work/podman"
mkdir -p "$work/played" "$work/fleet"

step "load the images into a private podman; a network of its own"
podman load --quiet --input "$whisperd_archive" >/dev/null
podman load --quiet --input "$postgres_archive" >/dev/null
check "the image's whisperd is this build's (--version $("$bin" --version))" \
  test "$(podman run --rm --network none "$image" --version)" = "$("$bin" --version)"
no_shell=$(podman run --rm --network none --entrypoint /bin/sh "$image" -c true 2>&1 || true)
check "the image has no shell to exec into (/bin/sh: no such file)" grep -qiE 'no such file|not found' <<<"$no_shell"
# A /24 no route of this machine uses, and a bridge name of this run's own.
network=whisperd-e2e-$$
for third in $(shuf -i 100-249); do
  ip -4 route | grep -q "^10\.89\.$third\." || break
done
podman network create --subnet "10.89.$third.0/24" "$network" >/dev/null
sed -i "s|\"network_interface\": \"[^\"]*\"|\"network_interface\": \"wde2e$$\"|" "$work/podman/networks/$network.json"
gateway=10.89.$third.1

# pod_ip POD: its address on the network (every container of a pod shares it).
pod_ip() { podman pod inspect "$1" --format '{{.InfraContainerID}}' | xargs podman inspect --format '{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}'; }
# main_container POD: its first container (podman-kube-play.py names it).
main_container() { awk -v pod="$1" '$2 == pod { print $3; exit }' "$work"/*.pods; }
played_pods() { "$validator_home/bin/python" scripts/podman-kube-play.py "$network" "$work/played" "$@"; }

step "PostgreSQL (image from Debian's postgresql-15; its manifest is written here, not exported)"
postgres_password=$(head -c 18 /dev/urandom | base64 | tr -dc 'A-Za-z0-9')
cat >"$work/postgres.yaml" <<EOF
apiVersion: v1
kind: Secret
metadata: {name: postgres-auth}
type: Opaque
stringData: {POSTGRES_PASSWORD: $postgres_password}
---
apiVersion: v1
kind: Service
metadata: {name: postgres}
spec:
  selector: {app: postgres}
  ports: [{name: postgres, port: 5432, targetPort: 5432}]
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: postgres}
spec:
  replicas: 1
  selector: {matchLabels: {app: postgres}}
  template:
    metadata: {labels: {app: postgres}}
    spec:
      securityContext: {runAsNonRoot: true, runAsUser: 10002, runAsGroup: 10002}
      containers:
      - name: postgres
        image: $postgres_image
        env:
        - {name: POSTGRES_USER, value: whisperd}
        - {name: POSTGRES_DB, value: whisperd}
        - name: POSTGRES_PASSWORD
          valueFrom: {secretKeyRef: {name: postgres-auth, key: POSTGRES_PASSWORD}}
        ports: [{containerPort: 5432}]
        readinessProbe:
          exec: {command: [/usr/lib/postgresql/15/bin/pg_isready, -h, 127.0.0.1, -U, whisperd]}
        resources:
          limits: {memory: 256Mi}
        securityContext: {allowPrivilegeEscalation: false, capabilities: {drop: [ALL]}}
EOF
played_pods "$work/postgres.yaml" >"$work/postgres.pods"
postgres_pod=$(awk 'NR == 1 { print $2 }' "$work/postgres.pods")
postgres_ip=$(pod_ip "$postgres_pod")
psql_fleet() { PGPASSWORD=$postgres_password psql -h "$postgres_ip" -U whisperd -d whisperd -Atqc "$1" 2>/dev/null; }
check "PostgreSQL is up in its pod ($postgres_ip) and accepts the fleet's role" wait_for 60 psql_fleet 'SELECT 1'

step "the LLM stand-in on the network's gateway"
python3 scripts/bench/fake_llm.py 0 "$gateway" >"$work/llm.port" &
llm_pid=$!
wait_for 10 test -s "$work/llm.port"
llm_port=$(cat "$work/llm.port")
echo "fake LLM on http://$gateway:$llm_port/v1"

step "the sample fleet's roster, exported"
cp -r characters/elena characters/aria "$work/fleet/"
mkdir "$work/fleet/characters"
mv "$work/fleet/elena" "$work/fleet/aria" "$work/fleet/characters/"
cat >"$work/fleet/roster.yaml" <<EOF
# The end-to-end fleet of scripts/e2e-kubernetes.sh: the store and the LLM key in .env (secret).
version: 1
defaults:
  restart: always
  limits: {memory: 256M, memory_high: 224M, cpus: 0.5}
  env_file: [.env]
  env: {LLM_BASE_URL: "http://$gateway:$llm_port/v1", LLM_MODEL_NAME: fake-model}
jobs:
  migrate:
    command: [whisperd, migrate]
characters:
  elena:
    port: 8000
    limits: {memory: 320M, memory_high: 288M}
    after: [migrate]
  aria:
    port: 8001
    after: [migrate]
EOF
printf 'DATABASE_URL=postgres://whisperd:%s@postgres:5432/whisperd\nLLM_API_KEY=e2e-not-a-key\n' "$postgres_password" >"$work/fleet/.env"
chmod 600 "$work/fleet/.env"
"$bin" --roster "$work/fleet/roster.yaml" --check >/dev/null
if "$bin" export kubernetes --roster "$work/fleet/roster.yaml" --image "$image" >"$work/fleet.yaml" 2>"$work/export-report.txt"; then
  pass "whisperd export kubernetes writes manifests ($(grep -c '^kind:' "$work/fleet.yaml") objects)"
else
  fail "whisperd export kubernetes writes manifests"
  cat "$work/export-report.txt"
  exit 1
fi
cat "$work/export-report.txt"
check "the report names every character and the job" \
  bash -c 'for name in elena aria migrate; do grep -q "$name" "$0" || exit 1; done' "$work/export-report.txt"
check "no secret value in the report" bash -c '! grep -qF -- "$1" "$0"' "$work/export-report.txt" "$postgres_password"
secret_only_in_secrets() { # the database password is in Secret objects and nowhere else in the manifests
  "$validator_home/bin/python" -c '
import sys, yaml
documents = [d for d in yaml.safe_load_all(open(sys.argv[1])) if d]
holding = {d["kind"] for d in documents if sys.argv[2] in yaml.safe_dump(d)}
sys.exit(0 if holding == {"Secret"} else f"the password is in: {sorted(holding)}")' "$work/fleet.yaml" "$postgres_password"
}
check "the database password is only in Secret objects" secret_only_in_secrets

step "kubernetes-validate --strict (Kubernetes $kubernetes_version)"
check "every exported manifest passes kubernetes-validate --strict" \
  "$validator_home/bin/kubernetes-validate" --strict --quiet -k "$kubernetes_version" "$work/fleet.yaml"
check "the PostgreSQL manifest too" \
  "$validator_home/bin/kubernetes-validate" --strict --quiet -k "$kubernetes_version" "$work/postgres.yaml"

step "podman kube play the fleet"
played_pods "$work/fleet.yaml" >"$work/fleet.pods"
cat "$work/fleet.pods"
pod_of() { awk -v name="$1" '$2 ~ "^" name "(-pod-[0-9]+)?$" { print $2; exit }' "$work/fleet.pods"; }
declare -A ports=([elena]=8000 [aria]=8001)
chat() { # NAME IP MESSAGE: the reply's JSON
  curl -sS --max-time 10 -X POST "http://$2:${ports[$1]}/api/chat" -H 'Content-Type: application/json' \
    -d "{\"user_id\":\"$user_id\",\"message\":\"$3\"}"
}
answered() { # REPLY: a successful chat answer carrying the stand-in LLM's words
  python3 -c 'import json, sys; reply = json.loads(sys.argv[1]); sys.exit(0 if reply.get("success") is True and reply.get("response") == "Noted." else 1)' "$1" 2>/dev/null
}
for name in elena aria; do
  pod=$(pod_of "$name")
  check "$name plays as a pod (${pod:-none})" test -n "$pod"
  [ -n "$pod" ] || continue
  ip=$(pod_ip "$pod")
  check "$name is ready: GET /health on her port through the pod's address ($ip)" \
    wait_for 90 curl -fs --max-time 2 -o /dev/null "http://$ip:${ports[$name]}/health"
  check "$name's whisperd run-one says ready where the kubelet probes (:9464/health)" \
    wait_for 30 curl -fs --max-time 2 -o /dev/null "http://$ip:9464/health"
  reply=$(chat "$name" "$ip" "Hello $name, this is the Kubernetes test." || true)
  echo "$name: $reply"
  check "$name answers a chat through the LLM" answered "$reply"
done
for name in elena aria; do
  check "$name's conversation is in PostgreSQL (messages, both turns)" \
    test "$(psql_fleet "SELECT count(*) FROM messages WHERE character = '$name' AND user_id = '$user_id'" || echo 0)" -ge 2
done

step "a killed character container is restarted by the engine"
inspect() { podman inspect "$container" --format "$1" 2>/dev/null || true; }
pod=$(pod_of elena)
container=$(main_container "$pod" || true)
ip=$(pod_ip "$pod" || true)
pid=$(inspect '{{.State.Pid}}')
restarts=$(inspect '{{.RestartCount}}')
echo "elena: container $container, main pid $pid, restarts $restarts"
check "elena's container runs (pid $pid)" test "${pid:-0}" -gt 0
[ "${pid:-0}" -gt 0 ] && kill -KILL "$pid"
restarted() { [ "$(inspect '{{.State.Running}} {{.RestartCount}}')" = "true $((restarts + 1))" ] && [ "$(inspect '{{.State.Pid}}')" != "$pid" ]; }
check "the engine restarted it (restart count $restarts -> $((restarts + 1)), a new pid)" wait_for 60 restarted
check "elena is ready again" wait_for 90 curl -fs --max-time 2 -o /dev/null "http://$ip:8000/health"
reply=$(chat elena "$ip" "Are you back?" || true)
check "elena answers again after the restart" answered "$reply"
check "and her history is still in PostgreSQL (4 messages)" \
  test "$(psql_fleet "SELECT count(*) FROM messages WHERE character = 'elena' AND user_id = '$user_id'" || echo 0)" -ge 4

step "limits and user"
pid=$(inspect '{{.State.Pid}}')
memory_cgroup=/sys/fs/cgroup/memory$(awk -F: '$2 == "memory" { print $3 }' "/proc/${pid:-0}/cgroup" 2>/dev/null || true)
echo "elena's container: HostConfig.Memory $(inspect '{{.HostConfig.Memory}}'), cgroup $memory_cgroup"
check "its cgroup memory limit is the roster's 320M (335544320 bytes)" \
  test "$(cat "$memory_cgroup/memory.limit_in_bytes" 2>/dev/null)" = 335544320
check "podman reports the same limit (HostConfig.Memory)" test "$(inspect '{{.HostConfig.Memory}}')" = 335544320
processes=$(cat "$memory_cgroup/cgroup.procs" 2>/dev/null || true)
non_root() { # every process of the container: real, effective, saved and fs uid and gid 10001
  local process
  [ -n "$processes" ] || return 1
  for process in $processes; do
    awk '/^(Uid|Gid):/ { for (i = 2; i <= 5; i++) if ($i != 10001) bad = 1 } END { exit bad }' "/proc/$process/status" || return 1
  done
}
check "every process in it runs as uid/gid 10001, not root ($(echo "$processes" | wc -w) processes)" non_root
check "the image's user is 10001:10001" test "$(podman image inspect "$image" --format '{{.Config.User}}')" = 10001:10001

if [ "$failures" -gt 0 ]; then
  for pod in $(awk '{ print $2 }' "$work"/*.pods 2>/dev/null); do
    for container in $(podman ps -a --filter "pod=$pod" --format '{{.Names}}' 2>/dev/null); do
      echo "--- the end of $container's log"
      podman logs --tail 30 "$container" 2>&1 || true
    done
  done
fi

step "teardown"
for file in "$work"/played/*.yaml; do podman kube down "$file" >/dev/null; done
check "podman kube down leaves no pod and no container" test -z "$(podman pod ls -q)$(podman ps -aq)"

step "done"
if [ "$failures" -gt 0 ]; then
  echo "e2e-kubernetes: $failures check(s) FAILED"
  exit 1
fi
echo "e2e-kubernetes: every check passed in $((SECONDS - started_at)) s"
