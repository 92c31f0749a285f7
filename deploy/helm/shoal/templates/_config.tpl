{{/*
Shoal's configuration file (shoal.toml), rendered from the values: the
ConfigMap the orchestrator and the workers mount (configmap.yaml) holds it,
and so does the ACL Job's hook ConfigMap (acl-job.yaml), so that shoal-acl
derives the ACLs from exactly what the processes load.
*/}}
{{- define "shoal.configToml" -}}
{{- $v := .Values }}
{{- $provisioned := ne $v.topics.provisioning "shoal" -}}
# Shoal's configuration, rendered by the Helm chart from the release's
# values. Both binaries read it (SHOAL_CONFIG) and ignore each other's
# sections. The chart sets per-pod identity (worker.id) and credentials
# through SHOAL__SECTION__KEY environment variables, which override it.

[kafka]
bootstrap_servers = {{ $v.kafka.bootstrapServers | toJson }}
security_protocol = {{ $v.kafka.securityProtocol | toJson }}
group_protocol = {{ $v.kafka.groupProtocol | toJson }}
session_timeout_ms = {{ int64 $v.kafka.sessionTimeoutMs }}
linger_ms = {{ int64 $v.kafka.lingerMs }}
message_timeout_ms = {{ int64 $v.kafka.messageTimeoutMs }}
compression = {{ $v.kafka.compression | toJson }}

[kafka.options]
{{- if hasPrefix "sasl_" $v.kafka.securityProtocol }}
sasl_mechanism = {{ $v.kafka.sasl.mechanism | toJson }}
{{- end }}
{{- if $v.kafka.tls.caSecret.name }}
ssl_ca_location = "/etc/shoal/kafka-tls/ca.crt"
{{- end }}
{{- if $v.kafka.tls.clientCertSecret.name }}
ssl_certificate_location = "/etc/shoal/kafka-tls-client/tls.crt"
ssl_key_location = "/etc/shoal/kafka-tls-client/tls.key"
{{- end }}
{{- range $name, $value := $v.kafka.options }}
{{ replace "." "_" $name }} = {{ $value | toString | toJson }}
{{- end }}

[topics]
create = {{ not $provisioned }}
{{- range $topic := list "ticks" "events" "commands" "results" "dlq" "journal" }}
{{- $t := index $v.topics $topic }}

[topics.{{ $topic }}]
name = {{ $t.name | toJson }}
partitions = {{ int64 $t.partitions }}
replication = {{ int64 $t.replication }}
{{- end }}

[log]
format = {{ $v.log.format | toJson }}
level = {{ $v.log.level | toJson }}
status_interval_secs = {{ int64 $v.log.statusIntervalSecs }}

[shutdown]
timeout_ms = {{ int64 $v.shutdown.timeoutMs }}

[delivery]
mode = {{ $v.delivery.mode | toJson }}
transactional_id_prefix = {{ include "shoal.transactionalIdPrefix" . | toJson }}
transaction_max_records = {{ int64 $v.delivery.transactionMaxRecords }}
transaction_max_ms = {{ int64 $v.delivery.transactionMaxMs }}
transaction_call_timeout_ms = {{ int64 $v.delivery.transactionCallTimeoutMs }}

[observability]
listen = {{ printf "0.0.0.0:%d" (int $v.observability.port) | toJson }}
otlp_enabled = {{ $v.observability.otlp.enabled }}

[worker]
# id: set per pod from its name (SHOAL__WORKER__ID).
group_id = {{ $v.workers.groupId | toJson }}
commit_interval_ms = {{ int64 $v.workers.commitIntervalMs }}
handler_timeout_ms = {{ int64 $v.workers.handlerTimeoutMs }}
max_attempts = {{ int64 $v.workers.maxAttempts }}
retry_initial_ms = {{ int64 $v.workers.retryInitialMs }}
retry_max_ms = {{ int64 $v.workers.retryMaxMs }}
max_concurrency = {{ int64 $v.workers.maxConcurrency }}
probe_handler = {{ $v.workers.probeHandler }}

[llm]
# The API key and the state API token come from Secrets as
# SHOAL_LLM_API_KEY and SHOAL_LLM_STATE_API_TOKEN (workers.llm.*.existingSecret).
enabled = {{ $v.workers.llm.enabled }}
endpoint = {{ $v.workers.llm.endpoint | toJson }}
model = {{ $v.workers.llm.model | toJson }}
provider = {{ $v.workers.llm.provider | toJson }}
response_format = {{ $v.workers.llm.responseFormat | toJson }}
max_rounds = {{ int64 $v.workers.llm.maxRounds }}
call_timeout_ms = {{ int64 $v.workers.llm.callTimeoutMs }}
max_tokens_per_command = {{ int64 $v.workers.llm.maxTokensPerCommand }}
lookup_url = {{ $v.workers.llm.lookupUrl | toJson }}
state_api_url = {{ $v.workers.llm.stateApi.url | default (printf "http://%s:%d" (include "shoal.orchestrator.fullname" .) (int $v.api.port)) | toJson }}

[orchestrator]
id = {{ include "shoal.orchestratorId" . | toJson }}
stages = {{ $v.orchestrator.stages | toJson }}
decisions_group = {{ $v.orchestrator.decisionsGroup | toJson }}
results_group = {{ $v.orchestrator.resultsGroup | toJson }}
commit_interval_ms = {{ int64 $v.orchestrator.commitIntervalMs }}

[feed]
{{- with include "shoal.feedUrl" . }}
url = {{ . | toJson }}
{{- end }}
format = {{ $v.orchestrator.feed.format | toJson }}
symbols = {{ $v.orchestrator.feed.symbols | toJson }}
reconnect_initial_ms = {{ int64 $v.orchestrator.feed.reconnectInitialMs }}
reconnect_max_ms = {{ int64 $v.orchestrator.feed.reconnectMaxMs }}
max_message_bytes = {{ int64 $v.orchestrator.feed.maxMessageBytes }}

[rules]
window_secs = {{ int64 $v.orchestrator.rules.windowSecs }}
move_threshold_bps = {{ int64 $v.orchestrator.rules.moveThresholdBps }}
move_cooldown_secs = {{ int64 $v.orchestrator.rules.moveCooldownSecs }}
level_step = {{ $v.orchestrator.rules.levelStep | toString | toJson }}
command_deadline_ms = {{ int64 $v.orchestrator.rules.commandDeadlineMs }}

[rules.events]
{{- range $type, $kind := $v.orchestrator.rules.events }}
{{ $type | toJson }} = {{ $kind | toJson }}
{{- end }}

[results]
max_pending = {{ int64 $v.orchestrator.results.maxPending }}
{{- end }}
