#!/usr/bin/env bash
# Supply-chain checks with cargo-deny (configuration: deny.toml): licenses,
# banned and duplicate crates, sources, and RustSec advisories. Installs
# cargo-deny from crates.io on first use. See `scripts/deny.sh --help`.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

readonly DENY_VERSION="0.20.2"
readonly ADVISORY_URL="https://github.com/rustsec/advisory-db"

usage() {
  cat <<'EOF'
Usage: scripts/deny.sh [--help]

Runs `cargo deny check` with deny.toml:
  licenses   every crate's license is on the reviewed allow-list
  bans       no banned crate (openssl, native-tls), no wildcard versions;
             duplicate versions are listed as warnings
  sources    crates.io only (no git dependencies, no other registry)
  advisories RustSec's database (vulnerabilities, unmaintained, yanked)

The advisory database is cloned from GitHub into $CARGO_HOME/advisory-dbs.
Where GitHub cannot be reached, a copy already there is used (its date is
printed); with none, the advisories check is reported as NOT CHECKED and the
other three still decide the exit status (docs/known-issues.md).

Exit status: non-zero when a check fails.
EOF
}

case "${1:-}" in
  -h | --help) usage; exit 0 ;;
  "") ;;
  *) printf 'deny.sh: unknown argument %q (see --help)\n' "$1" >&2; exit 2 ;;
esac

say() { printf 'deny: %s\n' "$*"; }

CARGO_BIN="${CARGO_HOME:-$HOME/.cargo}/bin"
export PATH="$PATH:$CARGO_BIN"

if ! cargo deny --version 2>/dev/null | grep -q "$DENY_VERSION"; then
  say "installing cargo-deny $DENY_VERSION from crates.io (a few minutes, once)"
  cargo install cargo-deny --version "$DENY_VERSION" --locked --quiet
fi
cargo deny --version

cargo deny check licenses bans sources

db_root="${CARGO_HOME:-$HOME/.cargo}/advisory-dbs"
if timeout 20 git ls-remote --exit-code "$ADVISORY_URL" HEAD >/dev/null 2>&1; then
  cargo deny check advisories
elif compgen -G "$db_root/advisory-db-*/crates" >/dev/null; then
  db="$(compgen -G "$db_root/advisory-db-*" | head -1)"
  say "$ADVISORY_URL cannot be reached; using the copy in $db ($(git -C "$db" log -1 --format=%cs 2>/dev/null || echo 'date unknown'))"
  cargo deny --offline check advisories
else
  say "advisories: NOT CHECKED: $ADVISORY_URL cannot be reached from this machine and no copy is in $db_root"
  say "(see docs/known-issues.md, 'Advisories not checked where GitHub is unreachable')"
fi
