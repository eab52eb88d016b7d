#!/usr/bin/env bash
# Release build as benchmarked: static Swift runtime (faster exec, no libswift*.so to load)
# and a non-PIE executable, which saves ~1.4 MiB of PSS per whisperd process because the
# runtime metadata needs no load-time relocation. The trade-off: the executable's own text is
# not address-randomised (libraries, heap and stacks still are). Prints the binary's path.
set -euo pipefail
cd "$(dirname "$0")/.."
swift build -c release --static-swift-stdlib --scratch-path .build-release \
  -Xswiftc -Xclang-linker -Xswiftc -no-pie >&2
echo "$PWD/.build-release/release/whisperd"
