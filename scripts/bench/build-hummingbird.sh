#!/usr/bin/env bash
# Builds the bench-only Hummingbird 2 server (scripts/bench/hummingbird-worker: the worker's chat path
# behind Hummingbird instead of the worker's own HTTP server) like scripts/build-release.sh
# builds whisperd, in its own scratch dir (.build-hummingbird). Prints the binary's path. The
# first build takes ~15-20 min on 2 shared cores (Hummingbird, NIO and the worker's targets
# again); later ones only what changed.
set -euo pipefail
cd "$(dirname "$0")/../.."
swift build -c release --static-swift-stdlib --package-path scripts/bench/hummingbird-worker --scratch-path .build-hummingbird \
  -Xswiftc -Xclang-linker -Xswiftc -no-pie >&2
echo "$PWD/.build-hummingbird/release/whisperd-hummingbird"
