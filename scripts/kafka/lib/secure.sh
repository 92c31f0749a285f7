# shellcheck shell=bash
# Sourced by scripts/kafka.sh: the secured broker's own files (--secure),
# made on first use under SECURE_DIR and kept across 'down', 'up' and
# 'up --fresh' (only 'down --purge' deletes them):
#   tls/ca.key, ca.pem        a local CA (openssl); ca.pem for the clients
#   tls/broker-keystore.pem   the brokers' key and certificate (CN=localhost,
#                             SAN DNS:localhost, IP:127.0.0.1) signed by it
#   credentials.env           random passwords, mode 0600:
#                             SHOAL_SCRAM_<USER>=... per SCRAM user and
#                             SHOAL_KAFKA_CONTROLLER_PASSWORD=...
#   clients/<user>.properties       librdkafka client config per user
#   clients/<user>.java.properties  Java client config per user
# The SCRAM users reach the brokers through the bootstrap metadata written by
# StorageTool format (--add-scram); node.sh's format_node adds them.

# The SCRAM-SHA-512 users: the super-user admin and one per Shoal role.
readonly SECURE_USERS=(admin ingest decisions state results worker api redrive)
readonly SECURE_TLS_DIR="$SECURE_DIR/tls"
readonly SECURE_CA="$SECURE_DIR/ca.pem"
readonly SECURE_CA_KEY="$SECURE_TLS_DIR/ca.key"
readonly SECURE_KEYSTORE="$SECURE_TLS_DIR/broker-keystore.pem"
readonly SECURE_CREDENTIALS="$SECURE_DIR/credentials.env"
readonly SECURE_CLIENTS_DIR="$SECURE_DIR/clients"
readonly SECURE_ADMIN_CONFIG="$SECURE_CLIENTS_DIR/admin.java.properties"
# What the single node's and the cluster's nodes share in SECURE_DIR.
# shellcheck disable=SC2034 # used by lifecycle.sh
readonly SECURE_SHARED_FILES=(tls ca.pem credentials.env clients)
readonly CONTROLLER_PASSWORD_VAR=SHOAL_KAFKA_CONTROLLER_PASSWORD

# Succeeds if a secure node (single or cluster) is running.
secure_running() (
  set_secure 1
  for size in 1 "$CLUSTER_SIZE"; do
    set_brokers "$size"
    for n in $(node_ids); do
      if node_pid "$n" >/dev/null; then exit 0; fi
    done
  done
  exit 1
)

ensure_openssl() {
  command -v openssl >/dev/null 2>&1 && return 0
  log "openssl not found; it is needed once to make the secure broker's CA and certificate"
  if can_apt && apt_install openssl && command -v openssl >/dev/null 2>&1; then
    return 0
  fi
  die "openssl is missing and could not be installed (needs apt-get and root).
  Install it, e.g. 'sudo apt-get install openssl', then run this again."
}

# openssl, its output shown only when it fails.
run_openssl() {
  local out
  if ! out="$(openssl "$@" </dev/null 2>&1)"; then
    err "openssl $1 failed:"
    printf '%s\n' "$out" | sed 's/^/  | /' >&2
    exit 1
  fi
}

# The CA (10 years) and the brokers' certificate (2 years, renewed when it
# expires within a day or no longer matches the CA).
ensure_tls() {
  mkdir -p "$SECURE_TLS_DIR"
  if [[ ! -s $SECURE_CA_KEY || ! -s $SECURE_CA ]]; then
    log "secure: making a local CA in $SECURE_TLS_DIR (ca.pem in $SECURE_DIR)"
    rm -f "$SECURE_KEYSTORE"
    run_openssl req -x509 -new -newkey rsa:2048 -nodes -sha256 -days 3650 \
      -subj "/CN=Shoal local Kafka CA" \
      -addext "basicConstraints=critical,CA:TRUE" \
      -addext "keyUsage=critical,keyCertSign,cRLSign" \
      -keyout "$SECURE_CA_KEY.tmp" -out "$SECURE_CA.tmp"
    mv "$SECURE_CA_KEY.tmp" "$SECURE_CA_KEY"
    mv "$SECURE_CA.tmp" "$SECURE_CA"
  fi
  if [[ -s $SECURE_KEYSTORE ]] &&
    openssl x509 -in "$SECURE_KEYSTORE" -noout -checkend 86400 >/dev/null 2>&1 &&
    openssl verify -CAfile "$SECURE_CA" "$SECURE_KEYSTORE" >/dev/null 2>&1; then
    return 0
  fi
  log "secure: making the broker certificate for localhost / $HOST"
  local tmp="$SECURE_TLS_DIR/broker.tmp"
  rm -rf "$tmp"
  mkdir -p "$tmp"
  printf '%s\n' "subjectAltName=DNS:localhost,IP:$HOST" \
    "basicConstraints=CA:FALSE" \
    "keyUsage=critical,digitalSignature,keyEncipherment" \
    "extendedKeyUsage=serverAuth,clientAuth" >"$tmp/ext.cnf"
  # -nodes: an unencrypted PKCS#8 key, which Kafka's PEM keystore reads
  # without ssl.key.password.
  run_openssl req -new -newkey rsa:2048 -nodes -sha256 -subj "/CN=localhost" \
    -keyout "$tmp/broker.key" -out "$tmp/broker.csr"
  run_openssl x509 -req -sha256 -days 730 -in "$tmp/broker.csr" \
    -CA "$SECURE_CA" -CAkey "$SECURE_CA_KEY" -set_serial "0x$(openssl rand -hex 16)" \
    -extfile "$tmp/ext.cnf" -out "$tmp/broker.crt"
  # Kafka's PEM keystore: the private key, then the certificate chain.
  cat "$tmp/broker.key" "$tmp/broker.crt" "$SECURE_CA" >"$SECURE_KEYSTORE.tmp"
  mv "$SECURE_KEYSTORE.tmp" "$SECURE_KEYSTORE"
  rm -rf "$tmp"
}

credential_var() { printf 'SHOAL_SCRAM_%s\n' "${1^^}"; }

# credential VAR: the value of VAR in credentials.env.
credential() { sed -n "s/^$1=//p" "$SECURE_CREDENTIALS" | tail -n1; }

# A password for every user (and the controller listener) that has none yet
# in credentials.env; passwords are hex, so they need no quoting in any
# config format.
ensure_credentials() {
  local var user added=0
  if [[ ! -f $SECURE_CREDENTIALS ]]; then
    cat >"$SECURE_CREDENTIALS" <<EOF
# Generated by scripts/kafka.sh (--secure); passwords of the secure broker's
# SCRAM-SHA-512 users, and of its controller listener (SASL/PLAIN). Keep
# private. 'up --fresh' keeps them; 'down --secure --purge' deletes them.
EOF
  fi
  chmod 600 "$SECURE_CREDENTIALS"
  for var in $(for user in "${SECURE_USERS[@]}"; do credential_var "$user"; done) \
    "$CONTROLLER_PASSWORD_VAR"; do
    [[ -z "$(credential "$var")" ]] || continue
    printf '%s=%s\n' "$var" "$(openssl rand -hex 24)" >>"$SECURE_CREDENTIALS"
    added=$((added + 1))
  done
  [[ $added -eq 0 ]] || log "secure: $added new password(s) in $SECURE_CREDENTIALS"
}

# Writes FILE (mode 0600 under secure_setup's umask) from stdin, replacing
# it only if the content changed.
write_if_changed() {
  local file="$1"
  cat >"$file.tmp"
  if cmp -s "$file.tmp" "$file"; then
    rm -f "$file.tmp"
  else
    mv -f "$file.tmp" "$file"
  fi
}

write_client_configs() {
  local user password
  mkdir -p "$SECURE_CLIENTS_DIR"
  for user in "${SECURE_USERS[@]}"; do
    password="$(credential "$(credential_var "$user")")"
    write_if_changed "$SECURE_CLIENTS_DIR/$user.properties" <<EOF
# librdkafka client config for SCRAM user '$user' of the secure broker
# (scripts/kafka.sh --secure). bootstrap.servers is not set here: see
# 'scripts/kafka.sh secure-env'.
security.protocol=SASL_SSL
sasl.mechanism=SCRAM-SHA-512
sasl.username=$user
sasl.password=$password
ssl.ca.location=$SECURE_CA
EOF
    write_if_changed "$SECURE_CLIENTS_DIR/$user.java.properties" <<EOF
# Java client config (e.g. --command-config of the Kafka CLI tools) for SCRAM
# user '$user' of the secure broker (scripts/kafka.sh --secure).
security.protocol=SASL_SSL
sasl.mechanism=SCRAM-SHA-512
sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required username="$user" password="$password";
ssl.truststore.type=PEM
ssl.truststore.location=$SECURE_CA
EOF
  done
}

# Everything the secure nodes and their clients need before a start: CA,
# certificates, credentials, client configs; and the readiness probe
# connects as admin over SASL_SSL.
secure_setup() {
  umask 077
  mkdir -p "$SECURE_DIR"
  ensure_openssl
  ensure_tls
  ensure_credentials
  write_client_configs
  # shellcheck disable=SC2034 # used by jars.sh's probe_output
  PROBE_CONFIG="$SECURE_CLIENTS_DIR/.probe.properties"
  # shellcheck disable=SC2034 # used by jars.sh's probe_output
  PROBE_CLIENT_CONFIG="$SECURE_ADMIN_CONFIG"
}

# fill_secure_config FILE: the secure template's own placeholders.
fill_secure_config() {
  sed -i -e "s|@KEYSTORE@|$SECURE_KEYSTORE|g" \
    -e "s|@CA_PEM@|$SECURE_CA|g" \
    -e "s|@ADMIN_PASSWORD@|$(credential "$(credential_var admin)")|g" \
    -e "s|@CONTROLLER_PASSWORD@|$(credential "$CONTROLLER_PASSWORD_VAR")|g" \
    "$1"
}

# StorageTool format's options that put the SCRAM users into the bootstrap
# metadata, one word a line.
scram_format_args() {
  local user
  for user in "${SECURE_USERS[@]}"; do
    printf '%s\n' --add-scram \
      "SCRAM-SHA-512=[name=$user,password=$(credential "$(credential_var "$user")")]"
  done
}

# A node's data holds the SCRAM users it was formatted with; the checksum of
# those users and passwords is kept beside it, so that data formatted with
# other credentials (credentials.env deleted or extended) is noticed.
scram_users_sum() {
  local user
  for user in "${SECURE_USERS[@]}"; do
    printf '%s=%s\n' "$user" "$(credential "$(credential_var "$user")")"
  done | sha256sum | cut -d' ' -f1
}
scram_sum_file() { printf '%s\n' "$(node_dir "$1")/scram-users.sha256"; }
record_scram_users() { scram_users_sum >"$(scram_sum_file "$1")"; }

# Wipes node n's data if it was formatted with other SCRAM users than those
# in credentials.env (they are only set when formatting).
check_scram_users() {
  local n="$1" data
  data="$(node_data_dir "$n")"
  [[ -f $data/meta.properties ]] || return 0
  [[ "$(cat "$(scram_sum_file "$n")" 2>/dev/null)" != "$(scram_users_sum)" ]] || return 0
  log "node $n: its data was formatted with other SCRAM users than those in $SECURE_CREDENTIALS; deleting it (a new cluster is formatted)"
  rm -rf "$data"
}

# secure-env: where the secure broker's files are and its bootstrap
# servers, as NAME=value lines (no passwords).
secure_env() {
  cat <<EOF
SHOAL_SECURE_DIR=$SECURE_DIR
SHOAL_SECURE_BOOTSTRAP=$(bootstrap_servers)
SHOAL_SECURE_CA=$SECURE_CA
SHOAL_SECURE_CREDENTIALS=$SECURE_CREDENTIALS
SHOAL_SECURE_CLIENTS_DIR=$SECURE_CLIENTS_DIR
SHOAL_SECURE_ADMIN_CONFIG=$SECURE_ADMIN_CONFIG
SHOAL_SECURE_PROTOCOL=SASL_SSL
SHOAL_SECURE_MECHANISM=SCRAM-SHA-512
SHOAL_SECURE_USERS=$(IFS=,; printf "%s" "${SECURE_USERS[*]}")
EOF
}
