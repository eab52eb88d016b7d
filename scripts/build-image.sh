#!/usr/bin/env bash
# Builds the OCI image of whisperd, offline, from this machine's Debian packages, and saves it
# as an OCI archive. Prints the archive's path on stdout; sizes and steps go to stderr.
#
#   scripts/build-image.sh [--with-whisperctl] [--tag NAME] [--output FILE]
#   scripts/build-image.sh --postgres [--tag NAME] [--output FILE]
#
# The whisperd image holds only what the release binary (scripts/build-release.sh, reused when
# built) runs on: whisperd (stripped), the shared libraries it and the worker's dlopen'ed
# libcurl, libsqlite3 and libpq need (their ldd closure, copied from the installed Debian
# packages), CA certificates, time zones (tzdata), /etc/passwd and /etc/group with the
# non-root user whisperd (uid/gid 10001), the sample characters and roster under
# /etc/whisperd, and whisperd's directories owned by that user. No shell, no package manager.
# USER 10001:10001, ENTRYPOINT ["/usr/bin/whisperd"]. Default tag localhost/whisperd:latest,
# archive .build/image/whisperd-oci.tar. --with-whisperctl adds /usr/bin/whisperctl (stripped,
# ~57 MiB more unpacked, ~22 MiB more compressed) for `kubectl exec … whisperctl`.
#
# --postgres builds the PostgreSQL the end-to-end test plays beside the fleet
# (scripts/e2e-kubernetes.sh), the same way from Debian's postgresql-15: postgres, initdb and
# pg_isready with their libraries, the server's modules and share files, dash (initdb runs the
# server through /bin/sh), user postgres (uid/gid 10002), and an entrypoint that initialises
# an empty data directory from POSTGRES_USER, POSTGRES_PASSWORD and POSTGRES_DB like the
# Docker Official Image. Default tag localhost/whisperd-test-postgres:15, archive
# .build/image/postgres-oci.tar.
#
# The root is tarred reproducibly (sorted, fixed owners and times) and `podman import`ed into
# a private podman (scripts/podman-private.sh) that is removed again: the archive is the
# product. Idempotent: when nothing that goes into the image changed (binaries, the libraries'
# files, characters, this script), the archive is kept as it is. Run as root.
set -euo pipefail
trap 'echo "build-image: stopped at line $LINENO: $BASH_COMMAND" >&2' ERR
cd "$(dirname "$0")/.."
checkout=$PWD
flavour=whisperd
with_whisperctl=0
tag= output=
while [ $# -gt 0 ]; do
  case "$1" in
    --postgres) flavour=postgres; shift ;;
    --with-whisperctl) with_whisperctl=1; shift ;;
    --tag) tag=${2:?--tag needs a name}; shift 2 ;;
    --output) output=$(realpath -m "${2:?--output needs a file}"); shift 2 ;;
    -h | --help) sed -n '2,29p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "build-image: unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
done
[ "$(id -u)" = 0 ] || { echo "build-image: run as root" >&2; exit 1; }
if [ "$flavour" = whisperd ]; then
  tag=${tag:-localhost/whisperd:latest} output=${output:-$checkout/.build/image/whisperd-oci.tar}
  user=whisperd uid=10001
else
  tag=${tag:-localhost/whisperd-test-postgres:15} output=${output:-$checkout/.build/image/postgres-oci.tar}
  user=postgres uid=10002
fi
multiarch=/usr/lib/x86_64-linux-gnu
pg=/usr/lib/postgresql/15

scripts/install-deps.sh "$([ "$flavour" = whisperd ] && echo image || echo test)" >&2
if [ "$flavour" = whisperd ]; then
  binary=$(scripts/build-release.sh)
  # The libraries the worker dlopens (Sources/CWorkerLibs/worker_libs.c), as the loader finds them.
  programs=("$binary")
  for soname in libcurl.so.4 libsqlite3.so.0 libpq.so.5; do
    [ -e "$multiarch/$soname" ] || { echo "build-image: $multiarch/$soname is not installed (scripts/install-deps.sh run)" >&2; exit 1; }
    programs+=("$multiarch/$soname")
  done
  contents=("$binary" etc/roster.yaml characters /usr/share/zoneinfo)
  whisperctl=$(dirname "$binary")/whisperctl
  if [ "$with_whisperctl" = 1 ]; then programs+=("$whisperctl") contents+=("$whisperctl"); fi
else
  # The server's own modules (plpgsql, text search, encodings), without the LLVM JIT (~100 MB).
  mapfile -t modules < <(find "$pg/lib" -maxdepth 1 -name '*.so' ! -name 'llvmjit*' | sort)
  programs=("$pg/bin/postgres" "$pg/bin/initdb" "$pg/bin/pg_isready" /usr/bin/dash "${modules[@]}")
  contents=("${programs[@]}" /usr/share/postgresql/15 /usr/share/zoneinfo/Etc/UTC)
fi

# The ldd closure of the programs (and the dlopen'ed libraries themselves): each library under
# the path the loader asks for.
mapfile -t libraries < <(
  for file in "${programs[@]}"; do
    case "$file" in "$multiarch"/*.so.*) echo "$file" ;; esac
    ldd "$file" | awk '$2 == "=>" && $3 ~ /^\// { print $3 } $1 ~ /^\// { print $1 }'
  done | sort -u
)

# What goes into the image, hashed: the archive is rebuilt only when it changes.
inputs=$(
  {
    sha256sum "$0" scripts/podman-private.sh /etc/ssl/certs/ca-certificates.crt
    find -L "${contents[@]}" "${libraries[@]}" -type f -print0 | sort -z | xargs -0 sha256sum
    echo "tag $tag user $user $uid whisperctl $with_whisperctl"
  } | sha256sum | cut -c1-64
)
if [ -f "$output" ] && [ "$(cat "$output.inputs" 2>/dev/null)" = "$inputs" ]; then
  echo "build-image: $output is up to date ($(($(stat -c %s "$output") / 1024)) KiB)" >&2
  echo "$output"
  exit 0
fi

work=$(mktemp -d /var/tmp/whisperd-build-image.XXXXXX)
# shellcheck source=scripts/podman-private.sh
source scripts/podman-private.sh
trap 'podman_private_remove "$work/podman"; rm -rf "$work"' EXIT
root=$work/root
echo "build-image: assembling the root of $tag in $root" >&2

# Debian's merged /usr: /lib, /lib64, /bin and /sbin are links into /usr.
mkdir -p "$root"/usr/{bin,sbin,lib64} "$root$multiarch" "$root"/etc/ssl/certs "$root"/{tmp,proc,sys,dev,run,var}
ln -s usr/lib "$root/lib"
ln -s usr/lib64 "$root/lib64"
ln -s usr/bin "$root/bin"
ln -s usr/sbin "$root/sbin"
ln -s ../run "$root/var/run"
# A file at the path it has on this machine, by content (not a link), /lib… mapped into /usr.
put() {
  local source=$1 target=$1
  case "$target" in /lib64/* | /lib/* | /bin/* | /sbin/*) target=/usr$target ;; esac
  mkdir -p "$root$(dirname "$target")"
  cp -L "$source" "$root$target"
}
for library in "${libraries[@]}"; do put "$library"; done
cp -L /etc/ssl/certs/ca-certificates.crt "$root/etc/ssl/certs/"
cat >"$root/etc/passwd" <<EOF
root:x:0:0:root:/root:/usr/sbin/nologin
$user:x:$uid:$uid:$user:/var/lib/$user:/usr/sbin/nologin
nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin
EOF
printf 'root:x:0:\n%s:x:%s:\nnogroup:x:65534:\n' "$user" "$uid" >"$root/etc/group"
printf 'passwd: files\ngroup: files\nshadow: files\nhosts: files dns\n' >"$root/etc/nsswitch.conf"
chmod 1777 "$root/tmp"

if [ "$flavour" = whisperd ]; then
  # Without its symbols and debug information the binary is about half its size.
  strip --strip-all -o "$root/usr/bin/whisperd" "$binary"
  [ "$with_whisperctl" = 0 ] || strip --strip-all -o "$root/usr/bin/whisperctl" "$whisperctl"
  # The sample characters with the sample roster minus its local model (as the README says to
  # do for an LLM of one's own), listening on every address of the container: `podman run` of
  # the image with an .env of LLM_* variables at /etc/whisperd/.env serves elena, aria, ryan.
  mkdir -p "$root/etc/whisperd"
  cp -r characters "$root/etc/whisperd/characters"
  grep -v 'local-model$' etc/roster.yaml |
    sed -e 's|^characters_dir: ../characters|characters_dir: characters|' \
      -e 's|^defaults:$|defaults:\n  env: {API_HOST: 0.0.0.0}           # in the image: reachable through published ports|' \
      >"$root/etc/whisperd/roster.yaml"
  grep -q '^  env: {API_HOST: 0.0.0.0}' "$root/etc/whisperd/roster.yaml" ||
    { echo "build-image: etc/roster.yaml has no defaults: section" >&2; exit 1; }
  chmod -R u=rwX,go=rX "$root/etc/whisperd"
  # The time zones a character's profile may name (elena's is America/Los_Angeles): Foundation
  # reads them from tzdata; without them her first chat traps. Not the duplicate right/ tree.
  mkdir -p "$root/usr/share"
  cp -a /usr/share/zoneinfo "$root/usr/share/zoneinfo"
  rm -rf "$root/usr/share/zoneinfo/right" "$root/usr/share/zoneinfo/posix"
  writable=("$root"/var/lib/whisperd "$root"/var/log/whisperd "$root"/run/whisperd)
  changes=(--change 'ENTRYPOINT=["/usr/bin/whisperd"]' --change 'WORKDIR=/var/lib/whisperd')
else
  for file in "${programs[@]}"; do put "$file"; done
  ln -s dash "$root/usr/bin/sh"
  mkdir -p "$root/usr/share"
  cp -r /usr/share/postgresql "$root/usr/share/postgresql"
  rm -rf "$root/usr/share/postgresql/15/man" "$root/usr/share/postgresql/15/contrib"
  put /usr/share/zoneinfo/Etc/UTC
  ln -s Etc/UTC "$root/usr/share/zoneinfo/UTC"
  ln -s Etc/UTC "$root/usr/share/zoneinfo/GMT"
  cat >"$root/usr/bin/postgres-entrypoint" <<'EOF'
#!/bin/sh
# An empty data directory is initialised first (the Docker Official Image's variables); then
# the server runs in the foreground as this process, listening on every address.
set -eu
export PATH=/usr/lib/postgresql/15/bin:/usr/bin PGDATA=${PGDATA:-/var/lib/postgresql/data}
if [ ! -s "$PGDATA/PG_VERSION" ]; then
  : "${POSTGRES_PASSWORD:?set POSTGRES_PASSWORD}"
  case $POSTGRES_PASSWORD in *"'"*) echo "postgres-entrypoint: POSTGRES_PASSWORD must not contain '" >&2; exit 1 ;; esac
  user=${POSTGRES_USER:-postgres} database=${POSTGRES_DB:-${POSTGRES_USER:-postgres}}
  initdb --username="$user" --encoding=UTF8 --locale=C --auth-local=trust --auth-host=scram-sha-256 \
    --no-instructions "$PGDATA" >/dev/null
  printf "listen_addresses = '*'\nunix_socket_directories = '/run/postgresql'\n" >>"$PGDATA/postgresql.conf"
  printf 'host all all 0.0.0.0/0 scram-sha-256\n' >>"$PGDATA/pg_hba.conf"
  # Through standard input, never a file or an argument (the password is not in ps or on disk).
  {
    printf "ALTER ROLE \"%s\" PASSWORD '%s';\n\n" "$user" "$POSTGRES_PASSWORD"
    [ "$database" = postgres ] || printf 'CREATE DATABASE "%s" OWNER "%s";\n\n' "$database" "$user"
  } | postgres --single -D "$PGDATA" -j postgres >/dev/null
fi
exec postgres -D "$PGDATA"
EOF
  chmod 755 "$root/usr/bin/postgres-entrypoint"
  writable=("$root"/var/lib/postgresql "$root"/run/postgresql)
  changes=(--change 'ENTRYPOINT=["/usr/bin/postgres-entrypoint"]' --change 'WORKDIR=/var/lib/postgresql'
    --change 'ENV=PGDATA=/var/lib/postgresql/data' --change 'ENV=TZ=UTC'
    # SIGTERM is PostgreSQL's smart shutdown, which waits for every client to leave.
    --change 'STOPSIGNAL=SIGINT')
fi
mkdir -p "${writable[@]}"
chown "$uid:$uid" "${writable[@]}"
chmod 750 "${writable[@]}"
# The loader's cache, so it need not probe directories.
ldconfig -r "$root"

# One layer, reproducible: sorted names, fixed times, numeric owners.
tar --create --file "$work/root.tar" --directory "$root" --sort=name --mtime=@0 --numeric-owner .
podman_private_setup "$work/podman"
podman import --quiet --change "USER=$uid:$uid" "${changes[@]}" --change 'ENV=PATH=/usr/bin' \
  --change "LABEL=org.opencontainers.image.title=$flavour" --message scripts/build-image.sh \
  "$work/root.tar" "$tag" >/dev/null
mkdir -p "$(dirname "$output")"
podman save --quiet --format oci-archive --output "$output.partial" "$tag"
mv -f "$output.partial" "$output"
echo "$inputs" >"$output.inputs"

# The archive's layer is gzip-compressed (what a registry stores and a node pulls); unpacked,
# the image takes the root's size.
echo "build-image: $tag saved as $output: $(($(stat -c %s "$output") / 1024)) KiB (compressed layer);" \
  "unpacked $(($(stat -c %s "$work/root.tar") / 1024)) KiB, of which ${#libraries[@]} shared libraries" \
  "$(($(cat "${libraries[@]}" | wc -c) / 1024)) KiB" >&2
echo "$output"
