#!/usr/bin/env bash
# Installs what a fresh Debian machine lacks to build and test Shoal; shared
# by .ci/run, `make test`, `make demo` (scripts/demo.sh). See --help.
set -euo pipefail

# librdkafka is compiled from source by the rdkafka crate (cmake-build,
# ssl, gssapi/sasl, zstd via zlib, curl); these are what that build needs.
readonly BUILD_PACKAGES=(build-essential cmake pkg-config libssl-dev zlib1g-dev libsasl2-dev
  libcurl4-openssl-dev curl ca-certificates)
# Debian's current Rust toolchain (the -web packages; rustup itself would need
# a download from outside the package registries), used when there is no cargo.
readonly DEBIAN_RUST_PACKAGES=(cargo-web rustc-web rustfmt-web rust-web-clippy)
# With --browser: the real browser of the console's test
# (tests/integration/tests/console.rs), driven over WebDriver.
readonly BROWSER_PACKAGES=(chromium chromium-driver)

usage() {
  cat <<'EOF'
Usage: scripts/ensure-deps.sh [--browser] [-h|--help]

Makes sure this (Debian) machine can build and test Shoal, installing only
what is missing, and prints nothing when everything is already there:
  - Debian packages that the rdkafka crate needs to compile librdkafka:
      build-essential cmake pkg-config libssl-dev zlib1g-dev libsasl2-dev
      libcurl4-openssl-dev curl ca-certificates
  - cargo: on PATH, or in ${CARGO_HOME:-~/.cargo}/bin (rustup's place; this
    script cannot change its caller's PATH: the Makefile adds that dir, other
    callers must too), else Debian's cargo-web rustc-web rustfmt-web
    rust-web-clippy;
  - cargo fmt and cargo clippy: 'rustup component add rustfmt|clippy' when
    cargo comes from rustup, else Debian's rustfmt-web / rust-web-clippy.
  - with --browser (make test): Debian's chromium and chromium-driver, the
    headless browser and its WebDriver server that the console's test
    (tests/integration/tests/console.rs) drives.
Java 17+ and Maven, which the local Kafka broker needs, are not checked here:
scripts/kafka.sh installs them itself the first time 'up' needs them.

Packages are installed with apt-get when running as root. Otherwise the
script prints the apt-get command to run and exits 1.
Exit status: 0 when everything is present (or was installed), 1 otherwise.
EOF
}

say() { printf 'ensure-deps: %s\n' "$*"; }
err() { printf 'ensure-deps: error: %s\n' "$*" >&2; }

BROWSER=0
case "${1:-}" in
  -h | --help | help)
    usage
    exit 0
    ;;
  --browser) BROWSER=1 ;;
  "") ;;
  *)
    err "unknown argument '$1' (see --help)"
    exit 2
    ;;
esac

# Debian packages (from the list given) that are not installed: one
# dpkg-query call for all of them, so that the all-present case stays fast.
missing_debs() {
  local line pkg status
  declare -A installed=()
  while IFS=' ' read -r pkg status; do
    [[ $status == installed ]] && installed[$pkg]=1
  done < <(dpkg-query -W -f='${Package} ${db:Status-Status}\n' "$@" 2>/dev/null || true)
  for line in "$@"; do
    [[ -n ${installed[$line]:-} ]] || printf '%s\n' "$line"
  done
}

# cargo found the way the Makefile and .ci/run find it: PATH first, then
# rustup's usual place.
CARGO_BIN="${CARGO_HOME:-$HOME/.cargo}/bin"
if ! command -v cargo >/dev/null 2>&1 && [[ -x $CARGO_BIN/cargo ]]; then
  export PATH="$PATH:$CARGO_BIN"
fi

to_install=() # Debian packages
reasons=()    # why, one line per group
rustup_components=()

mapfile -t missing < <(missing_debs "${BUILD_PACKAGES[@]}")
if [[ ${#missing[@]} -gt 0 ]]; then
  to_install+=("${missing[@]}")
  reasons+=("${missing[*]}: needed to compile librdkafka (rdkafka crate)")
fi

if ((BROWSER)); then
  mapfile -t missing < <(missing_debs "${BROWSER_PACKAGES[@]}")
  if [[ ${#missing[@]} -gt 0 ]]; then
    to_install+=("${missing[@]}")
    reasons+=("${missing[*]}: a headless browser and its WebDriver server for the console test")
  fi
fi

# The API contract check (scripts/api-check.sh, run by make test) installs
# schemathesis from PyPI into a virtual environment.
if ! python3 -c 'import venv, ensurepip' >/dev/null 2>&1; then
  to_install+=(python3 python3-venv)
  reasons+=("python3 python3-venv: a Python virtual environment for the API contract check (schemathesis)")
fi

if ! command -v cargo >/dev/null 2>&1; then
  to_install+=("${DEBIAN_RUST_PACKAGES[@]}")
  reasons+=("${DEBIAN_RUST_PACKAGES[*]}: no cargo on PATH nor in $CARGO_BIN (Debian's Rust toolchain)")
else
  # cargo subcommand : rustup component : Debian package
  for entry in fmt:rustfmt:rustfmt-web clippy:clippy:rust-web-clippy; do
    IFS=: read -r sub comp deb <<<"$entry"
    cargo "$sub" --version >/dev/null 2>&1 && continue
    if [[ "$(dirname "$(command -v cargo)")" == "$(dirname "$(command -v rustup || echo /nonexistent/rustup)")" ]]; then
      rustup_components+=("$comp")
    else
      to_install+=("$deb")
      reasons+=("$deb: 'cargo $sub' is missing (used by make lint and CI)")
    fi
  done
fi

if [[ ${#to_install[@]} -gt 0 ]]; then
  apt_cmd=(apt-get install -y -qq --no-install-recommends "${to_install[@]}")
  if [[ $(id -u) -ne 0 ]]; then
    err "missing Debian packages:"
    printf '  %s\n' "${reasons[@]}" >&2
    err "not root, so not installing them; run:"
    printf '  sudo apt-get update && sudo apt-get install --no-install-recommends %s\n' "${to_install[*]}" >&2
    exit 1
  fi
  say "installing Debian packages:"
  printf '  %s\n' "${reasons[@]}"
  start=$SECONDS
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq </dev/null
  "${apt_cmd[@]}" </dev/null >/dev/null
  say "installed ${#to_install[@]} packages in $((SECONDS - start))s"
fi

if [[ ${#rustup_components[@]} -gt 0 ]]; then
  say "cargo ${rustup_components[*]/rustfmt/fmt} missing; running: rustup component add ${rustup_components[*]}"
  rustup component add "${rustup_components[@]}"
fi

# Whatever was installed, the toolchain must work now.
[[ ${#to_install[@]} -gt 0 || ${#rustup_components[@]} -gt 0 ]] || exit 0
for sub in "" fmt clippy; do
  # shellcheck disable=SC2086 # empty $sub means plain `cargo --version`
  if ! cargo $sub --version >/dev/null 2>&1; then
    err "'cargo${sub:+ $sub} --version' still fails after installing what was missing"
    exit 1
  fi
done
say "done"
