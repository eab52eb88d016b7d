# Sourced (bash) by scripts/build-image.sh and scripts/e2e-kubernetes.sh: a podman of their
# own. Everything podman keeps — configuration, image and container storage, its database,
# locks, events, networks and volumes — lives under one directory, so these scripts never read
# or change the machine's podman (/etc/containers, /var/lib/containers, /run/libpod) and never
# disturb another user of podman on the same machine.
#
#   podman_private_setup DIR   writes DIR/containers.conf, storage.conf and registries.conf
#                              and exports CONTAINERS_CONF, CONTAINERS_STORAGE_CONF and
#                              CONTAINERS_REGISTRIES_CONF pointing at them
#   podman_private_remove DIR  removes every pod, container, volume, image and network in it,
#                              unmounts what podman left mounted there, then deletes DIR
#
# Facts of this machine that the configuration answers (docs/kubernetes.md, "The image"):
# Debian's crun refuses hybrid cgroups (v1 controllers and a v2 tree), so runc with cgroupfs
# (PID 1 is not systemd); podman's default ulimits (nofile 1048576) exceed the sandbox's hard
# limits, so containers get nofile/nproc at or below them; no registry is reachable, so none
# is searched and nothing is pulled.

podman_private_setup() {
  local dir=$1 nofile nproc
  # podman refuses a --runroot longer than 50 characters, and conmon passes it to the
  # `podman container cleanup` that restarts a container by its policy: a longer one would
  # silently leave dead containers dead.
  if [ ${#dir} -gt 46 ]; then
    echo "podman-private: $dir is too long for podman's run root ($dir/run, at most 50 characters)" >&2
    return 1
  fi
  mkdir -p "$dir/run" "$dir/tmp" "$dir/storage" "$dir/networks"
  chmod 700 "$dir"
  # At or below this machine's hard limits, never above 1024/4096.
  nofile=$(ulimit -Hn) nproc=$(ulimit -Hu)
  [ "$nofile" = unlimited ] || [ "$nofile" -gt 1024 ] && nofile=1024
  [ "$nproc" = unlimited ] || [ "$nproc" -gt 4096 ] && nproc=4096
  cat >"$dir/containers.conf" <<EOF
# Written by scripts/podman-private.sh for this directory only.
[containers]
default_ulimits = ["nofile=$nofile:$nofile", "nproc=$nproc:$nproc"]

[engine]
runtime = "runc"
cgroup_manager = "cgroupfs"
events_logger = "file"
events_logfile_path = "$dir/tmp/events.log"
lock_type = "file"
tmp_dir = "$dir/tmp"
static_dir = "$dir/storage/libpod"
volume_path = "$dir/storage/volumes"

[network]
network_backend = "netavark"
network_config_dir = "$dir/networks"
EOF
  cat >"$dir/storage.conf" <<EOF
# Written by scripts/podman-private.sh for this directory only.
[storage]
driver = "overlay"
graphroot = "$dir/storage"
runroot = "$dir/run"
EOF
  cat >"$dir/registries.conf" <<EOF
# Written by scripts/podman-private.sh: offline, no registry is searched.
unqualified-search-registries = []
EOF
  export CONTAINERS_CONF=$dir/containers.conf
  export CONTAINERS_STORAGE_CONF=$dir/storage.conf
  export CONTAINERS_REGISTRIES_CONF=$dir/registries.conf
}

podman_private_remove() {
  local dir=$1 pods pod network hierarchy process mount
  # Every pod this storage ever had (one removed before now included), from its events.
  pods=$(grep -ho '"ID":"[0-9a-f]*","Name":"[^"]*","Status":"create","Time":"[^"]*","Type":"pod"' \
    "$dir/tmp/events.log" 2>/dev/null | cut -d'"' -f4 | sort -u || true)
  if [ -f "$dir/containers.conf" ]; then
    (
      export CONTAINERS_CONF=$dir/containers.conf CONTAINERS_STORAGE_CONF=$dir/storage.conf \
        CONTAINERS_REGISTRIES_CONF=$dir/registries.conf
      podman pod rm --all --force >/dev/null || true
      podman rm --all --force >/dev/null || true
      for network in $(podman network ls --format '{{.Name}}' 2>/dev/null); do
        [ "$network" = podman ] || podman network rm --force "$network" >/dev/null || true
      done
    )
  fi
  # Whatever podman could not stop (it failed above): the processes of this storage's pods and
  # its conmons, by pid.
  local leftovers=() arguments file
  for pod in $pods; do
    leftovers+=($(find /sys/fs/cgroup/memory/libpod_parent/"$pod" -name cgroup.procs -exec cat {} + 2>/dev/null || true))
  done
  for file in /proc/[0-9]*/cmdline; do
    mapfile -d "" arguments 2>/dev/null <"$file" || continue
    if [[ "${arguments[*]}" == *"$dir/"* ]]; then leftovers+=("$(basename "$(dirname "$file")")"); fi
  done
  for process in "${leftovers[@]}"; do
    echo "podman-private: process $process of $dir was left running; killing it" >&2
    kill -KILL "$process" 2>/dev/null || true
  done
  # Overlay and shm mounts podman may have left below DIR, deepest first.
  for mount in $(awk -v dir="$dir/" 'index($2, dir) == 1 { print $2 }' /proc/self/mounts | sort -r); do
    umount -l "$mount" 2>/dev/null || true
  done
  rm -rf "$dir" || echo "podman-private: $dir could not be removed" >&2
  # With cgroupfs on hybrid cgroups podman 4.3 leaves its pods' empty cgroups behind in the
  # named and unified hierarchies.
  for pod in $pods; do
    for hierarchy in /sys/fs/cgroup/*/libpod_parent/"$pod"; do
      if [ -d "$hierarchy" ]; then find "$hierarchy" -depth -type d -exec rmdir {} + 2>/dev/null || true; fi
    done
  done
}
