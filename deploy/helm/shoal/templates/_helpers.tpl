{{/*
Names, labels and the pieces every Shoal pod shares.
*/}}

{{- define "shoal.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Prefix of every resource name. Component names append a suffix, so it is
kept to 45 characters: "<prefix>-orchestrator" must stay within 63, and a
worker StatefulSet's name within 52 (its pods' controller-revision-hash label
appends 11 characters).
*/}}
{{- define "shoal.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 45 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 45 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 45 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "shoal.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "shoal.orchestrator.fullname" -}}
{{- printf "%s-orchestrator" (include "shoal.fullname" .) }}
{{- end }}

{{- define "shoal.worker.fullname" -}}
{{- printf "%s-worker" (include "shoal.fullname" .) }}
{{- end }}

{{- define "shoal.simulator.fullname" -}}
{{- printf "%s-sim" (include "shoal.fullname" .) }}
{{- end }}

{{- define "shoal.config.fullname" -}}
{{- printf "%s-config" (include "shoal.fullname" .) }}
{{- end }}

{{/* Selector labels: stable for the release's lifetime (a selector cannot change). */}}
{{- define "shoal.selectorLabels" -}}
app.kubernetes.io/name: {{ include "shoal.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/* Standard labels of every resource; components add app.kubernetes.io/component. */}}
{{- define "shoal.labels" -}}
helm.sh/chart: {{ include "shoal.chart" . }}
{{ include "shoal.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/part-of: shoal
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/* Labels of a component's resources: call with (dict "root" $ "component" "worker"). */}}
{{- define "shoal.componentLabels" -}}
{{ include "shoal.labels" .root }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{- define "shoal.componentSelectorLabels" -}}
{{ include "shoal.selectorLabels" .root }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{- define "shoal.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "shoal.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "shoal.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}
{{- end }}

{{- define "shoal.orchestratorId" -}}
{{- default (include "shoal.orchestrator.fullname" .) .Values.orchestrator.id }}
{{- end }}

{{- define "shoal.transactionalIdPrefix" -}}
{{- default (printf "%s-%s" .Release.Namespace (include "shoal.fullname" .)) .Values.delivery.transactionalIdPrefix }}
{{- end }}

{{/* The feed URL the orchestrator uses: the value, else the bundled simulator's Service, else empty (Shoal's default). */}}
{{- define "shoal.feedUrl" -}}
{{- if .Values.orchestrator.feed.url }}
{{- .Values.orchestrator.feed.url }}
{{- else if .Values.simulator.enabled }}
{{- printf "ws://%s:%d" (include "shoal.simulator.fullname" .) (int .Values.simulator.port) }}
{{- end }}
{{- end }}

{{/* "true" when the orchestrator serves the state API: api.enabled and the decisions stage runs (the API serves its state); else empty. */}}
{{- define "shoal.api.serves" -}}
{{- if and .Values.orchestrator.enabled .Values.api.enabled (has "decisions" .Values.orchestrator.stages) }}true{{ end }}
{{- end }}

{{/*
The orchestrator's state API settings, as environment variables because the
advertised URL holds the pod's IP (downward API) and the workers, which read
the same ConfigMap, have no [api] section: where it listens, the URL other
instances reach it at, how callers authenticate, and the tokens from an
existing Secret (none rendered without one). api.enabled=false empties
api.listen, which turns the API off.
*/}}
{{- define "shoal.apiEnv" -}}
{{- $a := .Values.api -}}
{{- if $a.enabled -}}
- name: POD_IP
  valueFrom:
    fieldRef:
      fieldPath: status.podIP
- name: SHOAL__API__LISTEN
  value: {{ printf "0.0.0.0:%d" (int $a.port) | quote }}
- name: SHOAL__API__ADVERTISED_URL
  value: {{ printf "http://$(POD_IP):%d" (int $a.port) | quote }}
- name: SHOAL__API__AUTH
  value: {{ $a.auth | quote }}
- name: SHOAL__API__MCP
  value: {{ $a.mcp.enabled | quote }}
{{- $svc := printf "%s-orchestrator" (include "shoal.fullname" .) }}
{{- $hosts := list "localhost" "127.0.0.1" "::1" $svc (printf "%s.%s" $svc .Release.Namespace) (printf "%s.%s.svc" $svc .Release.Namespace) (printf "%s.%s.svc.cluster.local" $svc .Release.Namespace) }}
- name: SHOAL__API__MCP_ALLOWED_HOSTS
  value: {{ concat $hosts $a.mcp.extraAllowedHosts | join "," | quote }}
- name: SHOAL__API__ISSUE_COMMANDS
  value: {{ $a.issueCommands | quote }}
- name: SHOAL__API__ISSUE_RATE_PER_MINUTE
  value: {{ $a.issueRatePerMinute | quote }}
{{- with $a.tokens.existingSecret }}
- name: SHOAL_API_TOKENS
  valueFrom:
    secretKeyRef:
      name: {{ . }}
      key: {{ $a.tokens.key }}
{{- end }}
{{- else -}}
- name: SHOAL__API__LISTEN
  value: ""
{{- end }}
{{- end }}

{{/* terminationGracePeriodSeconds: Shoal's shutdown bound rounded up to seconds, plus the margin. */}}
{{- define "shoal.terminationGracePeriodSeconds" -}}
{{- $ms := int64 .Values.shutdown.timeoutMs }}
{{- add (div (add $ms 999) 1000) (int64 .Values.shutdown.graceMarginSeconds) }}
{{- end }}

{{/* The SASL protocols need Secrets, the ACL Job an authenticated admin and principals; a few sanity checks that the schema cannot express. */}}
{{- define "shoal.validate" -}}
{{- $k := .Values.kafka }}
{{- $llm := .Values.workers.llm }}
{{- if and $llm.enabled (not $llm.model) }}
{{- fail "workers.llm.enabled is true: set workers.llm.model to the model the endpoint serves" }}
{{- end }}
{{- if and $llm.enabled (lt (int64 .Values.workers.handlerTimeoutMs) (int64 $llm.callTimeoutMs)) }}
{{- fail (printf "workers.llm.enabled is true: workers.handlerTimeoutMs (%d) must be at least workers.llm.callTimeoutMs (%d), better workers.llm.maxRounds times it" (int64 .Values.workers.handlerTimeoutMs) (int64 $llm.callTimeoutMs)) }}
{{- end }}
{{- $sasl := hasPrefix "sasl_" $k.securityProtocol }}
{{- range $c := list "orchestrator" "workers" }}
{{- $own := get (index $.Values $c) "kafkaSasl" }}
{{- if and $own.username (not $own.existingSecret) }}
{{- fail (printf "%s.kafkaSasl.username is set: set %s.kafkaSasl.existingSecret too, to the existing Secret holding that user's SASL password" $c $c) }}
{{- end }}
{{- if and $own.existingSecret (not $sasl) }}
{{- fail (printf "%s.kafkaSasl.existingSecret is set but kafka.securityProtocol is %s: SASL credentials need sasl_plaintext or sasl_ssl" $c $k.securityProtocol) }}
{{- end }}
{{- end }}
{{- $acls := .Values.acls }}
{{- /* Who logs in with the shared kafka.sasl credentials. */}}
{{- $sharedUsers := list }}
{{- if and .Values.orchestrator.enabled (not .Values.orchestrator.kafkaSasl.existingSecret) }}
{{- $sharedUsers = append $sharedUsers "the orchestrator" }}
{{- end }}
{{- if not .Values.workers.kafkaSasl.existingSecret }}
{{- $sharedUsers = append $sharedUsers "the workers" }}
{{- end }}
{{- if and (eq .Values.topics.provisioning "job") (not $acls.enabled) }}
{{- $sharedUsers = append $sharedUsers "the topics Job" }}
{{- end }}
{{- if and $sasl $sharedUsers (not $k.sasl.existingSecret) }}
{{- fail (printf "kafka.securityProtocol is %s: set kafka.sasl.existingSecret to an existing Secret holding the SASL password (the chart never takes credentials as values); it is used by %s (orchestrator.kafkaSasl and workers.kafkaSasl give a component its own)" $k.securityProtocol (join " and " $sharedUsers)) }}
{{- end }}
{{- if $acls.enabled }}
{{- if eq $k.securityProtocol "plaintext" }}
{{- fail "acls.enabled is true but kafka.securityProtocol is plaintext: every client is then User:ANONYMOUS, so per-role ACLs cannot tell Shoal's processes apart; use sasl_plaintext, sasl_ssl, or ssl with client certificates" }}
{{- end }}
{{- if and $sasl (not $acls.admin.existingSecret) }}
{{- fail (printf "acls.enabled is true and kafka.securityProtocol is %s: set acls.admin.existingSecret to an existing Secret holding the SASL password of a Kafka admin allowed to create ACLs" $k.securityProtocol) }}
{{- end }}
{{- if not $sasl }}
{{- if $acls.admin.existingSecret }}
{{- fail (printf "acls.admin.existingSecret is set but kafka.securityProtocol is %s: the ACL Job then authenticates with kafka.tls.clientCertSecret, so leave acls.admin empty" $k.securityProtocol) }}
{{- end }}
{{- if and .Values.orchestrator.enabled (not $acls.principals.orchestrator) }}
{{- fail (printf "acls.enabled is true and kafka.securityProtocol is %s (no SASL user names): set acls.principals.orchestrator to the orchestrator's principal, e.g. User:CN=shoal-orchestrator" $k.securityProtocol) }}
{{- end }}
{{- if not $acls.principals.workers }}
{{- fail (printf "acls.enabled is true and kafka.securityProtocol is %s (no SASL user names): set acls.principals.workers to the workers' principal, e.g. User:CN=shoal-worker" $k.securityProtocol) }}
{{- end }}
{{- end }}
{{- end }}
{{- if and (not (hasSuffix "ssl" $k.securityProtocol)) (or $k.tls.caSecret.name $k.tls.clientCertSecret.name) }}
{{- fail (printf "kafka.tls.* is set but kafka.securityProtocol is %s: use ssl or sasl_ssl" $k.securityProtocol) }}
{{- end }}
{{- range $name, $_ := $k.options }}
{{- $lower := lower $name }}
{{- if or (contains "password" $lower) (contains "secret" $lower) (hasSuffix "key.pem" $lower) (hasSuffix "certificate.pem" $lower) (eq $lower "sasl.jaas.config") (eq $lower "sasl.oauthbearer.config") }}
{{- fail (printf "kafka.options.%s looks like a credential: keep secrets out of values (kafka.sasl.existingSecret, kafka.tls.clientCertSecret, or workers.extraEnv/orchestrator.extraEnv with secretKeyRef)" $name) }}
{{- end }}
{{- if contains "_" $name }}
{{- fail (printf "kafka.options.%s: write the librdkafka property with dots, as librdkafka names it (e.g. socket.keepalive.enable)" $name) }}
{{- end }}
{{- end }}
{{- $partitions := int .Values.topics.commands.partitions }}
{{- $w := .Values.workers }}
{{- if and $w.autoscaling.enabled $w.keda.enabled }}
{{- fail "workers.autoscaling.enabled and workers.keda.enabled are both true: KEDA manages its own HorizontalPodAutoscaler, so enable one of them" }}
{{- end }}
{{- if and $w.keda.enabled (gt (int $w.keda.maxReplicaCount) $partitions) }}
{{- fail (printf "workers.keda.maxReplicaCount (%d) is larger than topics.commands.partitions (%d): workers beyond the partition count get no partition and sit idle" (int $w.keda.maxReplicaCount) $partitions) }}
{{- end }}
{{- if and $w.keda.enabled (gt (int $w.keda.minReplicaCount) (int $w.keda.maxReplicaCount)) }}
{{- fail (printf "workers.keda.minReplicaCount (%d) is larger than workers.keda.maxReplicaCount (%d)" (int $w.keda.minReplicaCount) (int $w.keda.maxReplicaCount)) }}
{{- end }}
{{- if and $w.autoscaling.enabled (gt (int $w.autoscaling.maxReplicas) $partitions) }}
{{- fail (printf "workers.autoscaling.maxReplicas (%d) is larger than topics.commands.partitions (%d): workers beyond the partition count get no partition and sit idle" (int $w.autoscaling.maxReplicas) $partitions) }}
{{- end }}
{{- if and $w.autoscaling.enabled (gt (int $w.autoscaling.minReplicas) (int $w.autoscaling.maxReplicas)) }}
{{- fail (printf "workers.autoscaling.minReplicas (%d) is larger than workers.autoscaling.maxReplicas (%d)" (int $w.autoscaling.minReplicas) (int $w.autoscaling.maxReplicas)) }}
{{- end }}
{{- $a := .Values.api }}
{{- if and $a.enabled (eq (int $a.port) (int .Values.observability.port)) }}
{{- fail (printf "api.port (%d) is observability.port too: give the state API and the metrics endpoint different ports" (int $a.port)) }}
{{- end }}
{{- if and (eq $a.auth "none") $a.tokens.existingSecret }}
{{- fail (printf "api.tokens.existingSecret is set (%s) but api.auth is none, which ignores tokens and lets every caller in as an admin: set api.auth=tokens, or leave api.tokens.existingSecret empty" $a.tokens.existingSecret) }}
{{- end }}
{{- if and .Values.observability.otlp.enabled (not .Values.observability.otlp.endpoint) }}
{{- fail "observability.otlp.enabled is true: set observability.otlp.endpoint to the OTLP collector (e.g. http://otel-collector.observability:4317)" }}
{{- end }}
{{- end }}

{{/*
The SASL credentials a component logs in with, as JSON {username,
existingSecret, usernameKey, passwordKey}: call with (dict "root" $
"component" C). C is "orchestrator" or "worker" (its own
<component>.kafkaSasl when that names a Secret, else the shared kafka.sasl),
or "admin" (acls.admin, the ACL Job's and, with acls.enabled, the topics
Job's login).
*/}}
{{- define "shoal.saslCredentials" -}}
{{- $v := .root.Values -}}
{{- $keys := list "username" "existingSecret" "usernameKey" "passwordKey" -}}
{{- $own := dict -}}
{{- if eq .component "orchestrator" -}}
{{- $own = $v.orchestrator.kafkaSasl -}}
{{- else if eq .component "worker" -}}
{{- $own = $v.workers.kafkaSasl -}}
{{- else if eq .component "admin" -}}
{{- $own = $v.acls.admin -}}
{{- end -}}
{{- if or $own.existingSecret (eq .component "admin") -}}
{{- toJson (pick $own "username" "existingSecret" "usernameKey" "passwordKey") -}}
{{- else -}}
{{- toJson (pick $v.kafka.sasl "username" "existingSecret" "usernameKey" "passwordKey") -}}
{{- end -}}
{{- end }}

{{/*
Environment variables holding SASL credentials (dict "creds" <from
shoal.saslCredentials> "usernameVar" NAME "passwordVar" NAME): the user name
as a value when one is given, else from the Secret; the password (when
passwordVar is not empty) only ever from the Secret.
*/}}
{{- define "shoal.saslEnv" -}}
{{- $c := .creds -}}
- name: {{ .usernameVar }}
{{- if $c.username }}
  value: {{ $c.username | quote }}
{{- else }}
  valueFrom:
    secretKeyRef:
      name: {{ $c.existingSecret }}
      key: {{ $c.usernameKey }}
{{- end }}
{{- if .passwordVar }}
- name: {{ .passwordVar }}
  valueFrom:
    secretKeyRef:
      name: {{ $c.existingSecret }}
      key: {{ $c.passwordKey }}
{{- end }}
{{- end }}

{{/* Volumes and mounts of the Kafka TLS Secrets (CA, client certificate), when set. */}}
{{- define "shoal.tlsVolumes" -}}
{{- with .Values.kafka.tls.caSecret.name }}
- name: kafka-ca
  secret:
    secretName: {{ . }}
    items:
      - key: {{ $.Values.kafka.tls.caSecret.key }}
        path: ca.crt
{{- end }}
{{- with .Values.kafka.tls.clientCertSecret.name }}
- name: kafka-client-cert
  secret:
    secretName: {{ . }}
    items:
      - key: {{ $.Values.kafka.tls.clientCertSecret.certKey }}
        path: tls.crt
      - key: {{ $.Values.kafka.tls.clientCertSecret.keyKey }}
        path: tls.key
{{- end }}
{{- end }}

{{- define "shoal.tlsVolumeMounts" -}}
{{- if .Values.kafka.tls.caSecret.name }}
- name: kafka-ca
  mountPath: /etc/shoal/kafka-tls
  readOnly: true
{{- end }}
{{- if .Values.kafka.tls.clientCertSecret.name }}
- name: kafka-client-cert
  mountPath: /etc/shoal/kafka-tls-client
  readOnly: true
{{- end }}
{{- end }}

{{/*
Environment shared by the orchestrator and the workers: the config file,
identity from the downward API, Kafka credentials from existing Secrets, and
the OpenTelemetry variables. Call with (dict "root" $ "component" "worker").
*/}}
{{- define "shoal.commonEnv" -}}
{{- $root := .root }}
{{- $v := $root.Values -}}
- name: SHOAL_CONFIG
  value: /etc/shoal/config/shoal.toml
- name: POD_NAME
  valueFrom:
    fieldRef:
      fieldPath: metadata.name
- name: POD_NAMESPACE
  valueFrom:
    fieldRef:
      fieldPath: metadata.namespace
- name: NODE_NAME
  valueFrom:
    fieldRef:
      fieldPath: spec.nodeName
{{- if hasPrefix "sasl_" $v.kafka.securityProtocol }}
{{- $creds := include "shoal.saslCredentials" (dict "root" $root "component" .component) | fromJson }}
{{ include "shoal.saslEnv" (dict "creds" $creds "usernameVar" "SHOAL__KAFKA__OPTIONS__SASL_USERNAME" "passwordVar" "SHOAL__KAFKA__OPTIONS__SASL_PASSWORD") }}
{{- end }}
{{- if $v.observability.otlp.enabled }}
- name: OTEL_EXPORTER_OTLP_ENDPOINT
  value: {{ $v.observability.otlp.endpoint | quote }}
- name: OTEL_EXPORTER_OTLP_PROTOCOL
  value: {{ $v.observability.otlp.protocol | quote }}
- name: OTEL_SERVICE_NAME
  value: {{ printf "shoal-%s" .component | quote }}
{{- $attrs := list "k8s.pod.name=$(POD_NAME)" "k8s.namespace.name=$(POD_NAMESPACE)" "k8s.node.name=$(NODE_NAME)" "service.instance.id=$(POD_NAME)" (printf "service.namespace=%s" (include "shoal.fullname" $root)) (printf "service.version=%s" $root.Chart.AppVersion) }}
{{- range $key, $value := $v.observability.otlp.resourceAttributes }}
{{- $attrs = append $attrs (printf "%s=%s" $key $value) }}
{{- end }}
- name: OTEL_RESOURCE_ATTRIBUTES
  value: {{ join "," $attrs | quote }}
{{- with $v.observability.otlp.sampler }}
- name: OTEL_TRACES_SAMPLER
  value: {{ . | quote }}
{{- end }}
{{- with $v.observability.otlp.samplerArg }}
- name: OTEL_TRACES_SAMPLER_ARG
  value: {{ . | quote }}
{{- end }}
- name: SHOAL__OBSERVABILITY__MAX_TRACED_PER_SEC
  value: {{ $v.observability.otlp.maxTracedPerSec | int64 | toString | quote }}
{{- end }}
{{- end }}

{{/* Volumes shared by the orchestrator and the workers. */}}
{{- define "shoal.volumes" -}}
- name: config
  configMap:
    name: {{ include "shoal.config.fullname" . }}
- name: tmp
  emptyDir:
    sizeLimit: 64Mi
{{- with include "shoal.tlsVolumes" . | trim }}
{{ . }}
{{- end }}
{{- end }}

{{- define "shoal.volumeMounts" -}}
- name: config
  mountPath: /etc/shoal/config
  readOnly: true
- name: tmp
  mountPath: /tmp
{{- with include "shoal.tlsVolumeMounts" . | trim }}
{{ . }}
{{- end }}
{{- end }}

{{/* Probes on the observability endpoint. */}}
{{- define "shoal.probes" -}}
{{- $p := .Values.probes -}}
startupProbe:
  httpGet:
    path: /healthz
    port: http-metrics
  periodSeconds: {{ $p.startup.periodSeconds }}
  failureThreshold: {{ $p.startup.failureThreshold }}
livenessProbe:
  httpGet:
    path: /healthz
    port: http-metrics
  periodSeconds: {{ $p.liveness.periodSeconds }}
  timeoutSeconds: {{ $p.liveness.timeoutSeconds }}
  failureThreshold: {{ $p.liveness.failureThreshold }}
readinessProbe:
  httpGet:
    path: /readyz
    port: http-metrics
  periodSeconds: {{ $p.readiness.periodSeconds }}
  timeoutSeconds: {{ $p.readiness.timeoutSeconds }}
  failureThreshold: {{ $p.readiness.failureThreshold }}
{{- end }}

{{/* Pod-level settings shared by every pod of the chart. */}}
{{- define "shoal.podCommon" -}}
serviceAccountName: {{ include "shoal.serviceAccountName" . }}
automountServiceAccountToken: {{ .Values.serviceAccount.automountToken }}
{{- with .Values.imagePullSecrets }}
imagePullSecrets:
  {{- toYaml . | nindent 2 }}
{{- end }}
securityContext:
  {{- toYaml .Values.podSecurityContext | nindent 2 }}
{{- end }}

{{/* A topic's configs (dict "root" . "key" <topic key>): the journal's own (compacted, 7 days) under the values' topics.<key>.config. */}}
{{- define "shoal.topicConfig" -}}
{{- $t := index .root.Values.topics .key -}}
{{- $cfg := deepCopy $t.config -}}
{{- if eq .key "journal" -}}
{{- $cfg = merge $cfg (dict "cleanup.policy" "compact,delete" "retention.ms" "604800000") -}}
{{- end -}}
{{- toJson $cfg -}}
{{- end }}
