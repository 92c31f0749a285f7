#!/usr/bin/env bash
# Checks a running Shoal state API against its own OpenAPI document with
# schemathesis (property-based API testing, from PyPI): every documented
# route is called with generated parameters, and every answer must match
# the document (status codes, JSON schemas, content types).
#
#   scripts/api-check.sh URL TOKEN [extra schemathesis options...]
#     URL    base URL of the API, e.g. http://127.0.0.1:8780
#     TOKEN  an admin token (read routes accept it too)
#
# schemathesis is installed on first use into a virtual environment
# (SHOAL_PY_VENV, default target/py-venv), pinned to SCHEMATHESIS_VERSION.
# /v1/stream (a WebSocket) is left out; the integration tests use a real
# WebSocket client for it.
set -euo pipefail

SCHEMATHESIS_VERSION="${SCHEMATHESIS_VERSION:-4.32.5}"

if [[ $# -lt 2 || $1 == -h || $1 == --help ]]; then
  sed -n '2,13p' "$0" | sed 's/^# \{0,1\}//'
  exit 2
fi
url="${1%/}"
token="$2"
shift 2

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="${SHOAL_PY_VENV:-$root/target/py-venv}"
st="$venv/bin/schemathesis"
if [[ ! -x $st ]] || [[ "$("$st" --version 2>/dev/null)" != *"$SCHEMATHESIS_VERSION"* ]]; then
  echo "api-check: installing schemathesis $SCHEMATHESIS_VERSION into $venv" >&2
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check "schemathesis==$SCHEMATHESIS_VERSION"
fi

# schemathesis keeps a cache (.schemathesis/) in its working directory.
mkdir -p "$root/target"
cd "$root/target"
# /v1/stream is a WebSocket: an HTTP tester can only see its refusals of
# plain GETs; the integration tests drive it with a WebSocket client.
exec "$st" run "$url/v1/openapi.json" \
  --url "$url" \
  --header "Authorization: Bearer $token" \
  --checks all \
  --max-examples "${API_CHECK_EXAMPLES:-25}" \
  --no-color \
  --exclude-path /v1/stream \
  "$@"
