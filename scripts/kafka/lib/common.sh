# shellcheck shell=bash
# Sourced by scripts/kafka.sh: messages, option values, processes and ports,
# and the prerequisites (Java, Maven) installed with apt-get when missing.

log() { printf 'kafka.sh: %s\n' "$*"; }
err() { printf 'kafka.sh: error: %s\n' "$*" >&2; }
die() {
  err "$*"
  exit 1
}

# port_setting NAME DEFAULT HIGHEST: the port number in the environment
# variable NAME (DEFAULT when unset); exits 2 unless it is 1024..HIGHEST.
port_setting() {
  local name="$1" port="${!1:-$2}" highest="$3"
  if [[ ! $port =~ ^[0-9]+$ ]] || ((port < 1024 || port > highest)); then
    echo "kafka.sh: $name must be a port number from 1024 to $highest, got '$port'" >&2
    exit 2
  fi
  printf '%s\n' "$port"
}

# number_arg MESSAGE OPTION [VALUE...]: prints VALUE, the word after an
# option, if it is a whole number; else dies with MESSAGE.
number_arg() {
  local message="$1"
  shift
  [[ $# -ge 2 && $2 =~ ^[0-9]+$ ]] || die "$message"
  printf '%s\n' "$2"
}

port_open() { (exec 3<>"/dev/tcp/$HOST/$1") 2>/dev/null; }

# Succeeds while the pid is a live process (a zombie, killed but not yet
# reaped by its parent, counts as gone).
pid_alive() {
  local stat
  kill -0 "$1" 2>/dev/null || return 1
  stat="$(cat "/proc/$1/stat" 2>/dev/null)" || return 1
  stat="${stat##*) }"
  [[ ${stat%% *} != Z ]]
}

# ---------------------------------------------------------------------------
# Prerequisites: apt-get, Java, Maven
# ---------------------------------------------------------------------------

APT_UPDATED=0

# Succeeds if apt-get can be run as root: directly, or through
# password-less sudo.
can_apt() {
  command -v apt-get >/dev/null 2>&1 || return 1
  [[ $(id -u) -eq 0 ]] && return 0
  command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null
}

apt_get() {
  local as_root=()
  [[ $(id -u) -eq 0 ]] || as_root=(sudo -n)
  "${as_root[@]}" env DEBIAN_FRONTEND=noninteractive apt-get "$@" </dev/null
}

apt_install() {
  can_apt || return 1
  if [[ $APT_UPDATED -eq 0 ]]; then
    log "running apt-get update"
    apt_get update -qq >/dev/null || return 1
    APT_UPDATED=1
  fi
  log "installing with apt-get: $*"
  apt_get install -y -qq --no-install-recommends "$@" >/dev/null || return 1
}

# Major version of the given java binary ("1.8.0_x" -> 8, "17.0.1" -> 17),
# or nothing if it does not run.
java_major() {
  local line version
  line="$("$1" -version 2>&1 | grep -m1 -E 'version "' || true)"
  version="${line#*version \"}"
  version="${version%%\"*}"
  [[ -n $line && -n $version ]] || return 0
  if [[ $version == 1.* ]]; then
    version="${version#1.}"
  fi
  printf '%s\n' "${version%%[.+-]*}"
}

# A Java >= MIN_JAVA: JAVA_HOME, then PATH, then the JVMs Debian installs in
# /usr/lib/jvm (an update-alternatives default may still point elsewhere).
find_java() {
  local candidate major
  for candidate in ${JAVA_HOME:+"$JAVA_HOME/bin/java"} "$(command -v java || true)" \
    /usr/lib/jvm/*/bin/java; do
    [[ -n $candidate && -x $candidate ]] || continue
    major="$(java_major "$candidate")"
    if [[ -n $major && $major -ge $MIN_JAVA ]]; then
      printf '%s\n' "$candidate"
      return 0
    fi
  done
  return 1
}

# Sets JAVA to a Java >= MIN_JAVA, installing one if needed.
JAVA=""
ensure_java() {
  [[ -z $JAVA ]] || return 0
  if JAVA="$(find_java)"; then
    if [[ -z ${JAVA_HOME:-} && $JAVA != "$(command -v java || true)" ]]; then
      log "java on PATH is missing or older than $MIN_JAVA; using $JAVA"
    fi
    return 0
  fi
  local current
  if command -v java >/dev/null 2>&1; then
    current="$(java_major "$(command -v java)")"
    log "java on PATH is version ${current:-unknown}; Kafka needs Java $MIN_JAVA+"
  else
    log "java not found; Kafka needs Java $MIN_JAVA+"
  fi
  if can_apt && apt_install openjdk-17-jre-headless && JAVA="$(find_java)"; then
    log "using $JAVA"
    return 0
  fi
  die "no Java $MIN_JAVA+ and could not install one (needs apt-get and root).
  Install it, e.g. 'sudo apt-get install openjdk-17-jre-headless',
  or point JAVA_HOME at a Java $MIN_JAVA+ installation, then run this again."
}

ensure_maven() {
  command -v mvn >/dev/null 2>&1 && return 0
  log "mvn not found; it is needed once to fetch the Kafka jars from Maven Central"
  if can_apt && apt_install maven && command -v mvn >/dev/null 2>&1; then
    return 0
  fi
  die "mvn is missing and could not be installed (needs apt-get and root).
  Install Maven 3.6+, e.g. 'sudo apt-get install maven', then run this again."
}
