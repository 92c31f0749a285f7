#!/usr/bin/env bash
# Serves a tiny random-weight model over an OpenAI-compatible HTTP API
# (llama-cpp-python's server, from PyPI), for the LLM skill's real-server
# tests (docs/llm-skill.md).
#
#   scripts/llm-server.sh PORT      serve on 127.0.0.1:PORT until killed
#   scripts/llm-server.sh --install install only (CI warms it up once)
#
# llama-cpp-python (pinned to LLAMA_CPP_PYTHON_VERSION; it compiles
# llama.cpp, about 12 minutes on 2 cores, needing cmake and a C++ compiler)
# and gguf (GGUF_VERSION) are installed on first use into a virtual
# environment (SHOAL_LLM_VENV, default target/llm-venv). The model is made
# at first use by scripts/llm/tiny_model.py (random weights; nothing is
# downloaded) into target/llm/tiny.gguf. The server speaks chatml and
# honours response_format {"type": "json_object", "schema": ...} with a
# grammar, so the random model's output is always JSON of that schema.
set -euo pipefail

LLAMA_CPP_PYTHON_VERSION="${LLAMA_CPP_PYTHON_VERSION:-0.3.36}"
GGUF_VERSION="${GGUF_VERSION:-0.19.0}"

if [[ $# -ne 1 || $1 == -h || $1 == --help ]]; then
  sed -n '2,16p' "$0" | sed 's/^# \{0,1\}//'
  exit 2
fi

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="${SHOAL_LLM_VENV:-$root/target/llm-venv}"
py="$venv/bin/python"
installed() {
  [[ -x $py ]] && "$py" - "$LLAMA_CPP_PYTHON_VERSION" "$GGUF_VERSION" <<'PY' 2>/dev/null
import sys
from importlib.metadata import version
sys.exit(0 if version("llama_cpp_python") == sys.argv[1] and version("gguf") == sys.argv[2] else 1)
PY
}
if ! installed; then
  echo "llm-server: installing llama-cpp-python $LLAMA_CPP_PYTHON_VERSION and gguf $GGUF_VERSION into $venv (compiles llama.cpp)" >&2
  python3 -m venv "$venv"
  # A portable build (no -march=native): the wheel is cached and reused.
  CMAKE_BUILD_PARALLEL_LEVEL="${CMAKE_BUILD_PARALLEL_LEVEL:-$(nproc)}" \
    CMAKE_ARGS="-DGGML_NATIVE=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_TOOLS=OFF -DLLAMA_CURL=OFF" \
    "$venv/bin/pip" install --quiet --disable-pip-version-check \
    "llama-cpp-python[server]==$LLAMA_CPP_PYTHON_VERSION" "gguf==$GGUF_VERSION" >&2
fi
if [[ $1 == --install ]]; then
  exit 0
fi

model="$root/target/llm/tiny.gguf"
if [[ ! -s $model ]]; then
  mkdir -p "$(dirname "$model")"
  "$py" "$root/scripts/llm/tiny_model.py" "$model.tmp"
  mv "$model.tmp" "$model"
fi
exec "$py" -m llama_cpp.server --model "$model" --model_alias shoal-tiny --chat_format chatml \
  --n_ctx 8192 --n_threads 1 --host 127.0.0.1 --port "$1"
