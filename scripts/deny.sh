#!/usr/bin/env bash
# Supply-chain checks with cargo-deny (configuration: deny.toml): licenses,
# banned and duplicate crates, sources, and RustSec advisories. Installs
# cargo-deny from crates.io on first use. See `scripts/deny.sh --help`.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

readonly DENY_VERSION="0.20.2"
readonly ADVISORY_URL="https://github.com/rustsec/advisory-db"
readonly SNAPSHOT_DIR="third_party/rustsec-advisory-db"
readonly FIXTURE="scripts/deny-fixture/Cargo.toml"
# The advisory the fixture's pinned dependency (smallvec 1.6.0) must raise.
readonly FIXTURE_ADVISORY="RUSTSEC-2021-0003"

usage() {
  cat <<'EOF'
Usage: scripts/deny.sh [--help | --refresh-snapshot [PATH]]

Runs `cargo deny check` with deny.toml:
  licenses   every crate's license is on the reviewed allow-list
  bans       no banned crate (openssl, native-tls), no wildcard versions;
             duplicate versions are listed as warnings
  sources    crates.io only (no git dependencies, no other registry)
  advisories RustSec's database (vulnerabilities, unmaintained, yanked)

The advisory database is cloned from GitHub into $CARGO_HOME/advisory-dbs.
Where GitHub cannot be reached, the snapshot committed in
third_party/rustsec-advisory-db is checked against instead (or a copy
already in $CARGO_HOME/advisory-dbs, whichever is newer); its date and age
are printed, as advisories published after that date are not seen.

Then the advisories check runs on scripts/deny-fixture, a crate pinned to a
version with a known advisory, and the script fails unless that advisory is
reported: a database that loads but finds nothing cannot pass.

--refresh-snapshot [PATH]
           replace the snapshot with the database's current state, copied
           from PATH (a clone of rustsec/advisory-db) or cloned from
           GitHub; then commit third_party/rustsec-advisory-db.

Exit status: non-zero when a check fails.
EOF
}

say() { printf 'deny: %s\n' "$*"; }
snapshot_field() { sed -n "s/^$1=//p" "$SNAPSHOT_DIR/SNAPSHOT"; }
commit_date() { git -C "$1" log -1 --format=%cs 2>/dev/null || echo 0000-00-00; }

refresh_snapshot() {
  local from="$1" tmp=""
  if [[ -z "$from" ]]; then
    tmp="$(mktemp -d)"
    git clone --quiet --depth 1 "$ADVISORY_URL" "$tmp/advisory-db"
    from="$tmp/advisory-db"
  fi
  if [[ ! -d "$from/crates" ]]; then
    say "$from has no crates/ directory: not a clone of $ADVISORY_URL" >&2
    exit 2
  fi
  rm -rf "${SNAPSHOT_DIR:?}/crates"
  cp -r "$from/crates" "$from/LICENSE.txt" "$SNAPSHOT_DIR/"
  sed -i -e "s/^commit=.*/commit=$(git -C "$from" rev-parse HEAD)/" \
    -e "s/^date=.*/date=$(commit_date "$from")/" "$SNAPSHOT_DIR/SNAPSHOT"
  [[ -z "$tmp" ]] || rm -rf "$tmp"
  say "snapshot of $(snapshot_field date): $(find "$SNAPSHOT_DIR/crates" -name '*.md' | wc -l) advisories; commit $SNAPSHOT_DIR"
}

case "${1:-}" in
  -h | --help) usage; exit 0 ;;
  --refresh-snapshot) refresh_snapshot "${2:-}"; exit 0 ;;
  "") ;;
  *) printf 'deny.sh: unknown argument %q (see --help)\n' "$1" >&2; exit 2 ;;
esac

CARGO_BIN="${CARGO_HOME:-$HOME/.cargo}/bin"
export PATH="$PATH:$CARGO_BIN"

if ! cargo deny --version 2>/dev/null | grep -q "$DENY_VERSION"; then
  say "installing cargo-deny $DENY_VERSION from crates.io (a few minutes, once)"
  cargo install cargo-deny --version "$DENY_VERSION" --locked --quiet
fi
cargo deny --version

cargo deny check licenses bans sources

# cargo-deny keeps the database for ADVISORY_URL in this directory (the
# URL's last segment and a hash of the URL).
db="${CARGO_HOME:-$HOME/.cargo}/advisory-dbs/advisory-db-3157b0e258782691"

# Puts the snapshot where cargo-deny reads the database, as a one-commit
# repository dated as the snapshot, unless a copy at least as new is there.
install_snapshot() {
  local date
  date="$(snapshot_field date)"
  if [[ -d "$db/.git" && ! "$(commit_date "$db")" < "$date" ]]; then
    return
  fi
  rm -rf "$db"
  mkdir -p "$db"
  cp -r "$SNAPSHOT_DIR/crates" "$SNAPSHOT_DIR/LICENSE.txt" "$db/"
  git -C "$db" init --quiet
  git -C "$db" add --all
  GIT_AUTHOR_DATE="${date}T00:00:00Z" GIT_COMMITTER_DATE="${date}T00:00:00Z" \
    git -C "$db" -c user.name=shoal -c user.email=shoal@localhost \
    commit --quiet -m "RustSec advisory-db snapshot $(snapshot_field commit)"
}

offline=()
if timeout 20 git ls-remote --exit-code "$ADVISORY_URL" HEAD >/dev/null 2>&1; then
  cargo deny check advisories
else
  install_snapshot
  used="$(commit_date "$db")"
  age=$((($(date +%s) - $(date -d "$used" +%s)) / 86400))
  say "$ADVISORY_URL cannot be reached: checking against the copy of $used ($age days old) in $db"
  say "advisories published after $used are not seen (docs/known-issues.md)"
  offline=(--offline)
  cargo deny --offline check advisories
fi

# The check must be able to fail: the fixture's known advisory is reported.
cargo fetch --quiet --locked --manifest-path "$FIXTURE"
if out="$(cargo deny "${offline[@]}" --manifest-path "$FIXTURE" --config deny.toml check advisories 2>&1)"; then
  say "advisories: $FIXTURE passed, without $FIXTURE_ADVISORY: the advisories check is not working"
  exit 1
elif ! grep -q "$FIXTURE_ADVISORY" <<<"$out"; then
  printf '%s\n' "$out"
  say "advisories: $FIXTURE failed, but not with $FIXTURE_ADVISORY: the advisories check is not working"
  exit 1
fi
say "advisories: $FIXTURE reports $FIXTURE_ADVISORY, as it must"
