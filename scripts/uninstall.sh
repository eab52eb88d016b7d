#!/usr/bin/env bash
# Removes what scripts/install.sh installed. Run as root.
#
#   scripts/uninstall.sh [--purge]
#
# Stops and disables whisperd (its characters stop with it), removes the binaries, the unit
# and the docs, and the files in /etc/whisperd that are still as installed. Keeps edited
# configuration, the state (/var/lib/whisperd: stop intents, job records, incidents, memory)
# and the logs (/var/log/whisperd) — unless --purge, which removes those too and the group.
set -euo pipefail

purge=0
for argument in "$@"; do
  case "$argument" in
    --purge) purge=1 ;;
    -h | --help) sed -n '2,9p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "uninstall.sh: unknown argument $argument (see --help)" >&2; exit 2 ;;
  esac
done
[ "$(id -u)" = 0 ] || { echo "uninstall.sh: run as root" >&2; exit 1; }

unit=/etc/systemd/system/whisperd.service
config_dir=/etc/whisperd
manifest=/usr/local/share/whisperd/installed-config.sha256

if [ "$(cat /proc/1/comm 2>/dev/null)" = systemd ] && [ -e "$unit" ]; then
  systemctl disable --now whisperd 2>/dev/null || true
fi

rm -f /usr/local/bin/whisperd /usr/local/bin/whisperctl "$unit"
rm -rf /usr/local/share/doc/whisperd

kept=()
if [ -f "$manifest" ]; then
  while read -r sum path; do
    [ -f "$path" ] || continue
    if [ "$purge" = 1 ] || [ "$(sha256sum "$path" | cut -d' ' -f1)" = "$sum" ]; then
      rm -f "$path"
    else
      kept+=("$path")
    fi
    rm -f "$path.dist"
  done <"$manifest"
  rm -f "$manifest"
  rmdir "$(dirname "$manifest")" 2>/dev/null || true
fi

if [ "$purge" = 1 ]; then
  rm -rf "$config_dir" /var/lib/whisperd /var/log/whisperd
  getent group whisperd >/dev/null && groupdel whisperd
  echo "whisperd removed with its configuration, state, logs and group"
else
  # Empty character folders go; anything an operator added stays.
  [ -d "$config_dir" ] && find "$config_dir" -mindepth 1 -depth -type d -empty -delete
  rmdir "$config_dir" 2>/dev/null || true
  echo "whisperd removed; kept: ${kept[*]:-no edited configuration}, /var/lib/whisperd, /var/log/whisperd, group whisperd (--purge removes them)"
fi
[ "$(cat /proc/1/comm 2>/dev/null)" = systemd ] && systemctl daemon-reload
exit 0
