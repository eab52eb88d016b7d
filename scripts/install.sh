#!/usr/bin/env bash
# Installs whisperd as a systemd service from this checkout. Idempotent; run as root.
#
#   scripts/install.sh [--no-build]
#
#   /usr/local/bin/whisperd, whisperctl        replaced (renamed into place: a running
#                                              whisperd keeps its binary until restarted)
#   /etc/systemd/system/whisperd.service       replaced (local changes go in a drop-in:
#                                              systemctl edit whisperd)
#   /etc/whisperd/roster.yaml, characters/     installed when missing; upgraded when unchanged
#                                              since the last install; an edited file is kept
#                                              and the new version put beside it as *.dist
#   /usr/local/share/doc/whisperd/             README.md, operations.md
#   group whisperd                             its members may use whisperctl
#
# --no-build installs the binaries already in .build-release/release (built by
# scripts/build-release.sh), e.g. into a machine without a Swift toolchain.
# Runs `systemctl daemon-reload` when systemd is PID 1; never starts or restarts whisperd.
set -euo pipefail
cd "$(dirname "$0")/.."
checkout=$PWD

build=1
for argument in "$@"; do
  case "$argument" in
    --no-build) build=0 ;;
    -h | --help) sed -n '2,19p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "install.sh: unknown argument $argument (see --help)" >&2; exit 2 ;;
  esac
done
[ "$(id -u)" = 0 ] || { echo "install.sh: run as root" >&2; exit 1; }

bin_dir=/usr/local/bin
unit=/etc/systemd/system/whisperd.service
config_dir=/etc/whisperd
doc_dir=/usr/local/share/doc/whisperd
# What install.sh last put into /etc/whisperd, to tell an operator's edit from our old version.
manifest=/usr/local/share/whisperd/installed-config.sha256

if [ "$build" = 1 ]; then
  scripts/install-deps.sh run
  scripts/build-release.sh >/dev/null
fi
built=$checkout/.build-release/release
for binary in whisperd whisperctl; do
  [ -x "$built/$binary" ] || { echo "install.sh: $built/$binary is missing (run scripts/build-release.sh, or drop --no-build)" >&2; exit 1; }
done

place() { # source destination mode: atomic replace, so a running binary is never written in place
  local temporary
  temporary="$(dirname "$2")/.$(basename "$2").new"
  install -D -m "$3" "$1" "$temporary"
  mv -f "$temporary" "$2"
}

checksum() { sha256sum "$1" | cut -d' ' -f1; }

recorded() { # the checksum install.sh last installed for a path, if any
  [ -f "$manifest" ] && awk -v path="$1" '$2 == path { sum = $1 } END { if (sum) print sum }' "$manifest" || true
}

record() {
  mkdir -p "$(dirname "$manifest")"
  touch "$manifest"
  awk -v path="$1" '$2 != path' "$manifest" >"$manifest.new"
  echo "$2 $1" >>"$manifest.new"
  mv -f "$manifest.new" "$manifest"
}

install_config() { # source destination mode
  local source=$1 destination=$2 mode=$3 new current
  new=$(checksum "$source")
  if [ ! -e "$destination" ]; then
    place "$source" "$destination" "$mode"
    echo "installed $destination"
  else
    current=$(checksum "$destination")
    if [ "$current" = "$new" ]; then
      :
    elif [ "$current" = "$(recorded "$destination")" ]; then
      place "$source" "$destination" "$mode"
      echo "upgraded $destination"
    else
      place "$source" "$destination.dist" "$mode"
      echo "kept $destination (edited); the new version is $destination.dist"
      return
    fi
  fi
  record "$destination" "$new"
}

for binary in whisperd whisperctl; do
  place "$built/$binary" "$bin_dir/$binary" 0755
done
echo "installed $bin_dir/whisperd, $bin_dir/whisperctl ($("$bin_dir/whisperd" --version))"

place systemd/whisperd.service "$unit" 0644
echo "installed $unit"

# The sample roster, with its characters next to it in /etc/whisperd.
staged=$(mktemp -d)
trap 'rm -rf "$staged"' EXIT
# The checkout's local model (scripts/local-llm.sh) is a development convenience: the
# installed roster leaves it out (its lines are marked local-model), and the characters use
# the LLM set in /etc/whisperd/.env.
sed -e 's|^characters_dir: .*|characters_dir: characters          # /etc/whisperd/characters|' \
  -e 's|after: \[migrate, local-llm\] *# local-model$|after: [migrate]|' -e '/# local-model$/d' \
  etc/roster.yaml >"$staged/roster.yaml"
install -d -m 0755 "$config_dir"
install_config "$staged/roster.yaml" "$config_dir/roster.yaml" 0644
while IFS= read -r -d '' file; do
  install_config "$file" "$config_dir/$file" 0644
done < <(find characters -type f -print0 | sort -z)

install -d -m 0755 "$doc_dir"
place README.md "$doc_dir/README.md" 0644
place docs/operations.md "$doc_dir/operations.md" 0644

if ! getent group whisperd >/dev/null; then
  groupadd --system whisperd
  echo "created group whisperd (add operators with: usermod -aG whisperd NAME)"
fi

# The character worker loads these when it starts (whisperd itself does not need them).
missing_libraries=()
for library in libcurl.so.4:libcurl4 libsqlite3.so.0:libsqlite3-0 libpq.so.5:libpq5; do
  ldconfig -p | grep -q "${library%%:*} " || missing_libraries+=("${library##*:}")
done
((${#missing_libraries[@]} == 0)) ||
  echo "warning: the character worker needs: apt-get install ${missing_libraries[*]}" >&2

if [ "$(cat /proc/1/comm 2>/dev/null)" = systemd ]; then
  systemctl daemon-reload
  if systemctl is-active --quiet whisperd; then
    echo "whisperd is running the previous binary: systemctl restart whisperd (characters restart too)"
  else
    echo "next: systemctl enable --now whisperd"
  fi
else
  echo "systemd is not PID 1 here: the unit is in place for when it is"
fi

# Last, so a broken (edited) roster is reported without leaving the install half done.
"$bin_dir/whisperd" --roster "$config_dir/roster.yaml" --check ||
  { echo "install.sh: $config_dir/roster.yaml has the problems above: whisperd will not start until they are fixed" >&2; exit 1; }
