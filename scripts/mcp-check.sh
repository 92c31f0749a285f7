#!/usr/bin/env bash
# Checks Shoal's MCP server with a client no one here wrote: the official
# MCP Python SDK (PyPI `mcp`, pinned to MCP_SDK_VERSION), over streamable
# HTTP or stdio. See scripts/mcp_check.py for what it checks.
#
#   scripts/mcp-check.sh http  URL_OF_/mcp   READ_TOKEN ADMIN_TOKEN
#   scripts/mcp-check.sh stdio SHOAL_MCP_BIN API_URL READ_TOKEN ADMIN_TOKEN
#
# The SDK is installed on first use into a virtual environment
# (SHOAL_PY_VENV, default target/py-venv).
set -euo pipefail

MCP_SDK_VERSION="${MCP_SDK_VERSION:-2.3.0}"

if [[ $# -lt 4 || $1 == -h || $1 == --help ]]; then
  sed -n '2,10p' "$0" | sed 's/^# \{0,1\}//'
  exit 2
fi

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="${SHOAL_PY_VENV:-$root/target/py-venv}"
py="$venv/bin/python"
installed="$("$py" -c 'import importlib.metadata as m; print(m.version("mcp"))' 2>/dev/null || true)"
if [[ $installed != "$MCP_SDK_VERSION" ]]; then
  echo "mcp-check: installing the MCP Python SDK $MCP_SDK_VERSION into $venv" >&2
  [[ -x $py ]] || python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check "mcp==$MCP_SDK_VERSION"
fi
exec "$py" "$root/scripts/mcp_check.py" "$@"
