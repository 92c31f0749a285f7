//! Logging and tracing set-up shared by every Shoal binary.
//!
//! With `observability.otlp_enabled`, `tracing` spans become OpenTelemetry
//! spans (through `tracing-opentelemetry`), their W3C trace context travels
//! in Kafka headers so one decision is one trace across processes, and they
//! are exported over OTLP (gRPC or HTTP/protobuf) by a batch span processor:
//! spans are queued (bounded) and exported from its own thread, so the hot
//! path never waits for the collector; a full queue drops spans rather than
//! blocking. Without export no OpenTelemetry spans are made (they cost the
//! hot path for nothing); a record's trace context is passed on unchanged to
//! the records it causes, so the processes that do export still see whole
//! traces.
//!
//! Which settings win: the standard `OTEL_*` environment variables override
//! the `observability.*` keys, so an operator (or the OpenTelemetry
//! operator on Kubernetes) can redirect export without touching Shoal's
//! configuration. `opentelemetry-otlp` reads `OTEL_EXPORTER_OTLP_ENDPOINT`,
//! `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`, `..._HEADERS`, `..._TIMEOUT` and
//! `..._COMPRESSION` itself; `opentelemetry_sdk` reads `OTEL_SERVICE_NAME`,
//! `OTEL_RESOURCE_ATTRIBUTES`, `OTEL_TRACES_SAMPLER(_ARG)` and `OTEL_BSP_*`.
//! This module fills the one gap: the transport, from
//! `OTEL_EXPORTER_OTLP_TRACES_PROTOCOL` or `OTEL_EXPORTER_OTLP_PROTOCOL`.
//!
//! With export on, every log line written inside a span carries that span's
//! `trace_id` and `span_id` (JSON fields, or appended to a text line), so a
//! log line leads to its trace and back.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::WithExportConfig as _;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::trace::{Sampler, SdkTracerProvider};
use tracing::dispatcher::WeakDispatch;
use tracing::field::{Field, Visit};
use tracing::{Dispatch, Event, Level, Subscriber};
use tracing_subscriber::filter::LevelFilter;
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::time::{FormatTime, SystemTime};
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::{EnvFilter, Layer as _, fmt, prelude::*};

pub use crate::settings::LogFormat;
use crate::settings::ObservabilitySettings;

/// Environment variables that choose the OTLP transport (signal-specific
/// first), which `opentelemetry-otlp` does not read itself.
const PROTOCOL_VARS: [&str; 2] = ["OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "OTEL_EXPORTER_OTLP_PROTOCOL"];
/// Environment variables naming the endpoint, read by `opentelemetry-otlp`.
const ENDPOINT_VARS: [&str; 2] = ["OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_EXPORTER_OTLP_ENDPOINT"];

/// Where and how spans are exported, resolved from settings and environment.
#[derive(Debug, Clone, PartialEq)]
pub struct ExportPlan {
    /// `grpc` or `http/protobuf`.
    pub protocol: String,
    /// Endpoint given to the exporter; `None` to let it read the
    /// environment (or use the protocol's default).
    pub endpoint: Option<String>,
    /// `service.name` to set; `None` when the environment sets it.
    pub service_name: Option<String>,
    /// Share of decisions starting here that are traced.
    pub sample_ratio: f64,
    /// Cap on traced decisions per second starting here (0: none).
    pub max_traced_per_sec: u32,
}

/// A problem with the export configuration.
#[derive(Debug, thiserror::Error)]
pub enum TelemetryError {
    /// `OTEL_EXPORTER_OTLP_(TRACES_)PROTOCOL` names a transport Shoal lacks.
    #[error("{var}={value:?} is not supported (expected grpc or http/protobuf)")]
    Protocol {
        /// The variable.
        var: &'static str,
        /// Its value.
        value: String,
    },
    /// `OTEL_TRACES_SAMPLER(_ARG)` names a sampler Shoal cannot follow.
    #[error("{var}={value:?} is not supported (expected {expected})")]
    Sampler {
        /// The variable.
        var: &'static str,
        /// Its value.
        value: String,
        /// What would be accepted.
        expected: &'static str,
    },
    /// The exporter could not be built.
    #[error("cannot build the OTLP span exporter: {0}")]
    Exporter(#[from] opentelemetry_otlp::ExporterBuildError),
}

impl ExportPlan {
    /// Resolves the plan: `OTEL_*` variables in `env` win over `settings`.
    pub fn resolve(
        settings: &ObservabilitySettings,
        default_service: &str,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Self, TelemetryError> {
        let set = |var: &str| env(var).filter(|v| !v.trim().is_empty());
        let mut protocol = settings.otlp_protocol.to_string();
        if let Some((var, value)) = PROTOCOL_VARS.iter().find_map(|var| set(var).map(|v| (*var, v))) {
            match value.trim() {
                "grpc" | "http/protobuf" => protocol = value.trim().to_string(),
                _ => return Err(TelemetryError::Protocol { var, value }),
            }
        }
        let endpoint = if ENDPOINT_VARS.iter().any(|var| set(var).is_some()) || settings.otlp_endpoint.is_empty() {
            None
        } else if protocol == "grpc" {
            Some(settings.otlp_endpoint.clone())
        } else {
            // Like OTEL_EXPORTER_OTLP_ENDPOINT, the key is a base URL: the
            // HTTP exporter posts to <base>/v1/traces.
            Some(format!("{}/v1/traces", settings.otlp_endpoint.trim_end_matches('/')))
        };
        let env_names_service = set("OTEL_SERVICE_NAME").is_some()
            || set("OTEL_RESOURCE_ATTRIBUTES")
                .is_some_and(|attrs| attrs.split(',').any(|kv| kv.trim_start().starts_with("service.name=")));
        let service_name = (!env_names_service).then(|| {
            if settings.service_name.trim().is_empty() {
                default_service.to_string()
            } else {
                settings.service_name.clone()
            }
        });
        let sample_ratio = match set("OTEL_TRACES_SAMPLER") {
            None => settings.sample_ratio,
            Some(sampler) => sampler_ratio(sampler.trim(), set("OTEL_TRACES_SAMPLER_ARG"))?,
        };
        Ok(Self { protocol, endpoint, service_name, sample_ratio, max_traced_per_sec: settings.max_traced_per_sec })
    }
}

/// The root sampling ratio an `OTEL_TRACES_SAMPLER` value stands for.
/// Shoal always follows a received decision (parent-based), so the
/// `parentbased_` forms and the plain ones mean the same here.
fn sampler_ratio(sampler: &str, arg: Option<String>) -> Result<f64, TelemetryError> {
    match sampler {
        "always_on" | "parentbased_always_on" => Ok(1.0),
        "always_off" | "parentbased_always_off" => Ok(0.0),
        "traceidratio" | "parentbased_traceidratio" => match arg {
            // The specification's default ratio.
            None => Ok(1.0),
            Some(arg) => match arg.trim().parse::<f64>() {
                Ok(ratio) if (0.0..=1.0).contains(&ratio) => Ok(ratio),
                _ => Err(TelemetryError::Sampler {
                    var: "OTEL_TRACES_SAMPLER_ARG",
                    value: arg,
                    expected: "a ratio from 0.0 to 1.0",
                }),
            },
        },
        other => Err(TelemetryError::Sampler {
            var: "OTEL_TRACES_SAMPLER",
            value: other.to_string(),
            expected: "always_on, always_off, traceidratio or their parentbased_ forms",
        }),
    }
}

/// One export attempt per batch, as before opentelemetry-otlp 0.33 (which
/// turned retries with backoff on by default): a failed batch is dropped,
/// not retried on the export thread.
fn build_exporter(plan: &ExportPlan) -> Result<opentelemetry_otlp::SpanExporter, TelemetryError> {
    use opentelemetry_otlp::{RetryPolicy, WithHttpConfig as _, WithTonicConfig as _};
    let builder = opentelemetry_otlp::SpanExporter::builder();
    let exporter = if plan.protocol == "grpc" {
        let mut b = builder.with_tonic().with_retry_policy(RetryPolicy::disabled());
        if let Some(endpoint) = &plan.endpoint {
            b = b.with_endpoint(endpoint);
        }
        b.build()?
    } else {
        let mut b = builder
            .with_http()
            .with_protocol(opentelemetry_otlp::Protocol::HttpBinary)
            .with_retry_policy(RetryPolicy::disabled());
        if let Some(endpoint) = &plan.endpoint {
            b = b.with_endpoint(endpoint);
        }
        b.build()?
    };
    Ok(exporter)
}

/// Spans queued for export at most (`OTEL_BSP_MAX_QUEUE_SIZE` overrides):
/// the SDK's 2,048 is 30 ms of a busy worker's spans, so a burst dropped
/// spans while a batch was in flight. About 1 KiB each.
const EXPORT_QUEUE: usize = 16_384;
/// Spans per export request (`OTEL_BSP_MAX_EXPORT_BATCH_SIZE` overrides):
/// fewer, larger requests cost less per span than the SDK's 512.
const EXPORT_BATCH: usize = 2_048;

/// The batch span processor: its own thread, a bounded queue, and Shoal's
/// sizes unless the standard `OTEL_BSP_*` variables say otherwise.
fn batch_processor(exporter: opentelemetry_otlp::SpanExporter) -> opentelemetry_sdk::trace::BatchSpanProcessor {
    use opentelemetry_sdk::trace::{BatchConfigBuilder, BatchSpanProcessor};
    // The default builder reads the OTEL_BSP_* variables.
    let mut config = BatchConfigBuilder::default();
    if std::env::var_os("OTEL_BSP_MAX_QUEUE_SIZE").is_none() {
        config = config.with_max_queue_size(EXPORT_QUEUE);
    }
    if std::env::var_os("OTEL_BSP_MAX_EXPORT_BATCH_SIZE").is_none() {
        config = config.with_max_export_batch_size(EXPORT_BATCH);
    }
    BatchSpanProcessor::builder(exporter).with_batch_config(config.build()).build()
}

/// Keeps the tracer provider alive; [`TelemetryGuard::shutdown`] flushes
/// what is queued for export.
#[derive(Debug)]
pub struct TelemetryGuard {
    provider: Option<SdkTracerProvider>,
    sampling: crate::trace::Sampling,
}

impl TelemetryGuard {
    /// Whether spans are exported.
    pub fn exporting(&self) -> bool {
        self.sampling.exporting
    }

    /// How decisions are sampled, given what is exported: the process's
    /// [`Telemetry`](crate::Telemetry) handle is made from it.
    pub fn sampling(&self) -> crate::trace::Sampling {
        self.sampling
    }

    /// Exports what is queued and stops the exporter, waiting at most
    /// `timeout` (on a blocking thread: the SDK's shutdown blocks).
    pub async fn shutdown(mut self, timeout: Duration) {
        let Some(provider) = self.provider.take() else { return };
        let exporting = self.sampling.exporting;
        let done = tokio::task::spawn_blocking(move || provider.shutdown_with_timeout(timeout));
        match tokio::time::timeout(timeout + Duration::from_millis(100), done).await {
            Ok(Ok(Ok(()))) => {
                if exporting {
                    tracing::debug!("spans flushed");
                }
            }
            Ok(Ok(Err(error))) => tracing::warn!(%error, "spans not all exported before shutdown"),
            Ok(Err(_)) | Err(_) => tracing::warn!(?timeout, "span export did not finish before shutdown"),
        }
    }
}

impl Drop for TelemetryGuard {
    fn drop(&mut self) {
        if let Some(provider) = self.provider.take() {
            // Not shut down explicitly (an early error path): a short bound,
            // since nothing can be reported past this point anyway.
            let _ = provider.shutdown_with_timeout(Duration::from_millis(500));
        }
    }
}

/// Which callsites reach the OpenTelemetry layer: spans of Shoal's own
/// crates at INFO and above, whatever the log level, so that a quiet log
/// does not break a trace; their events (which become span events) only at
/// WARN and above, since an INFO line per command would otherwise be
/// formatted into every trace. Other crates (notably the HTTP/2 and gRPC
/// stacks the exporter itself uses) never, so the exporter cannot trace its
/// own exports.
///
/// The decision depends only on a callsite's static metadata, so it is
/// cached per callsite (`callsite_enabled`): a disabled `info!` costs nothing
/// on the hot path.
#[derive(Debug, Clone, Copy)]
struct OtelFilter {
    /// Off for every callsite when nothing is exported.
    exporting: bool,
}

impl OtelFilter {
    fn decide(&self, meta: &tracing::Metadata<'_>) -> bool {
        // Shoal's crates are all named `shoal-*` (targets `shoal_*`).
        let ours = meta.target().starts_with("shoal_");
        let floor = if meta.is_span() { Level::INFO } else { Level::WARN };
        self.exporting && ours && *meta.level() <= floor
    }
}

impl<S> tracing_subscriber::layer::Filter<S> for OtelFilter {
    fn enabled(&self, meta: &tracing::Metadata<'_>, _: &tracing_subscriber::layer::Context<'_, S>) -> bool {
        self.decide(meta)
    }

    fn callsite_enabled(&self, meta: &'static tracing::Metadata<'static>) -> tracing::subscriber::Interest {
        if self.decide(meta) { tracing::subscriber::Interest::always() } else { tracing::subscriber::Interest::never() }
    }

    fn max_level_hint(&self) -> Option<tracing::level_filters::LevelFilter> {
        Some(if self.exporting {
            tracing::level_filters::LevelFilter::INFO
        } else {
            tracing::level_filters::LevelFilter::OFF
        })
    }
}

/// Installs the global `tracing` subscriber writing to stderr, and OTLP
/// export when `observability.otlp_enabled`.
///
/// `RUST_LOG` overrides `default_filter` for the log when set. A second call
/// (components run in-process by tests) keeps the first subscriber. Must be
/// called inside a tokio runtime (the gRPC exporter needs one).
pub fn init(
    service_name: &'static str,
    format: LogFormat,
    default_filter: &str,
    observability: &ObservabilitySettings,
) -> TelemetryGuard {
    let mut builder = SdkTracerProvider::builder();
    let mut export_error = None;
    let mut plan = None;
    if observability.otlp_enabled {
        match ExportPlan::resolve(observability, service_name, |var| std::env::var(var).ok())
            .and_then(|p| build_exporter(&p).map(|e| (p, e)))
        {
            Ok((p, exporter)) => {
                let mut resource = Resource::builder();
                if let Some(name) = &p.service_name {
                    resource = resource.with_service_name(name.clone());
                }
                // Spans are only made for sampled decisions (crate::trace),
                // so the SDK keeps whatever it is given; it must not draw
                // again (nor read OTEL_TRACES_SAMPLER itself).
                builder = builder
                    .with_span_processor(batch_processor(exporter))
                    .with_resource(resource.build())
                    .with_sampler(Sampler::ParentBased(Box::new(Sampler::AlwaysOn)));
                plan = Some(p);
            }
            Err(error) => export_error = Some(error),
        }
    }
    let provider = builder.build();
    let sampling = crate::trace::Sampling {
        exporting: plan.is_some(),
        ratio: plan.as_ref().map_or(0.0, |p| p.sample_ratio),
        max_per_sec: plan.as_ref().map_or(0, |p| p.max_traced_per_sec),
    };
    // Without export no OpenTelemetry spans are made at all: they would cost
    // the hot path (a third of the worker's throughput, measured) for
    // nothing. Trace context is then passed on from the consumed record to
    // what it causes (`shoal_kafka::trace::Trace`), so processes that do export
    // still see one trace per decision.
    //
    // With export, per-command spans are on the hot path: no busy/idle timing, thread or
    // source-location attributes, and no OpenTelemetry context activation
    // on each poll (context travels through `OpenTelemetrySpanExt`, not the
    // ambient context). Without export the filter turns the layer off for
    // every callsite (an `Option` layer instead upsets per-layer filtering
    // in tracing-subscriber: the log lost lines).
    let otel = tracing_opentelemetry::layer()
        .with_tracer(provider.tracer(service_name))
        .with_tracked_inactivity(false)
        .with_threads(false)
        .with_location(false)
        .with_context_activation(false)
        .with_filter(OtelFilter { exporting: plan.is_some() });
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_filter));
    // Filtered off: it sees no callsite, so the log's per-layer filters
    // still decide which callsites are enabled at all.
    let ids = SpanIds::default();
    let registry = tracing_subscriber::registry().with(otel).with(ids.clone().with_filter(LevelFilter::OFF));
    let _already_set = match format {
        LogFormat::Text => registry
            .with(fmt::layer().event_format(TextWithTrace(ids)).with_writer(std::io::stderr).with_filter(filter))
            .try_init(),
        LogFormat::Json => registry
            .with(fmt::layer().event_format(JsonWithTrace(ids)).with_writer(std::io::stderr).with_filter(filter))
            .try_init(),
    };
    if let Some(error) = export_error {
        tracing::error!(%error, "OTLP export is enabled but not possible; spans are not exported");
    } else if let Some(plan) = &plan {
        tracing::info!(
            protocol = %plan.protocol,
            sample_ratio = plan.sample_ratio,
            max_traced_per_sec = plan.max_traced_per_sec,
            endpoint = plan.endpoint.as_deref().unwrap_or("from OTEL_EXPORTER_OTLP_* or the default"),
            "exporting spans over OTLP"
        );
    }
    TelemetryGuard { provider: Some(provider), sampling }
}

/// Logging only, for small CLIs (the simulator) that produce no traces.
pub fn init_logging(format: LogFormat, default_filter: &str) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_filter));
    let registry = tracing_subscriber::registry().with(filter);
    let _already_set = match format {
        LogFormat::Text => {
            registry.with(fmt::layer().event_format(TextWithTrace::default()).with_writer(std::io::stderr)).try_init()
        }
        LogFormat::Json => {
            registry.with(fmt::layer().event_format(JsonWithTrace::default()).with_writer(std::io::stderr)).try_init()
        }
    };
}

/// How the log formatters reach the span ids: tracing-opentelemetry keeps
/// its per-span data private, so they are read through its layer, from the
/// subscriber's dispatch, which this (filtered-off) layer is handed when the
/// subscriber is built. Empty, so no ids, without the OpenTelemetry layer.
#[derive(Debug, Clone, Default)]
struct SpanIds(Arc<OnceLock<WeakDispatch>>);

impl<S: Subscriber> tracing_subscriber::Layer<S> for SpanIds {
    fn on_register_dispatch(&self, dispatch: &Dispatch) {
        let _ = self.0.set(dispatch.downgrade());
    }
}

/// Trace and span id (hex) of the innermost span around `event` that the
/// OpenTelemetry layer sees (its context is built if it was not yet).
fn trace_ids<S, N>(ctx: &FmtContext<'_, S, N>, ids: &SpanIds) -> Option<(String, String)>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    use opentelemetry::trace::TraceContextExt as _;
    let dispatch = ids.0.get()?.upgrade()?;
    for span in ctx.event_scope()? {
        // No extensions of the span may be held here (the layer takes them).
        if let Some(context) = tracing_opentelemetry::get_otel_context(&span.id(), &dispatch) {
            let span = context.span();
            let span_context = span.span_context();
            return Some((span_context.trace_id().to_string(), span_context.span_id().to_string()));
        }
    }
    None
}

/// Text lines: `<time> <LEVEL> <target>: <message> <fields> [trace_id=.. span_id=..]`.
/// Span fields are not repeated on each line (the ids lead to them).
#[derive(Debug, Clone, Default)]
pub struct TextWithTrace(SpanIds);

impl<S, N> FormatEvent<S, N> for TextWithTrace
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(&self, ctx: &FmtContext<'_, S, N>, mut writer: Writer<'_>, event: &Event<'_>) -> std::fmt::Result {
        let meta = event.metadata();
        SystemTime.format_time(&mut writer)?;
        let level = *meta.level();
        if writer.has_ansi_escapes() {
            let colour = match level {
                Level::ERROR => "31",
                Level::WARN => "33",
                Level::INFO => "32",
                Level::DEBUG => "34",
                Level::TRACE => "35",
            };
            write!(writer, " \x1b[{colour}m{level:>5}\x1b[0m {}: ", meta.target())?;
        } else {
            write!(writer, " {level:>5} {}: ", meta.target())?;
        }
        ctx.field_format().format_fields(writer.by_ref(), event)?;
        if let Some((trace_id, span_id)) = trace_ids(ctx, &self.0) {
            write!(writer, " trace_id={trace_id} span_id={span_id}")?;
        }
        writeln!(writer)
    }
}

/// One JSON object per line: `timestamp`, `level`, `target`, `fields`,
/// `span` (the innermost span's name) and, inside a span, `trace_id` and
/// `span_id`.
#[derive(Debug, Clone, Default)]
pub struct JsonWithTrace(SpanIds);

struct JsonFields(serde_json::Map<String, serde_json::Value>);

impl Visit for JsonFields {
    fn record_f64(&mut self, field: &Field, value: f64) {
        self.0.insert(field.name().into(), serde_json::json!(value));
    }
    fn record_i64(&mut self, field: &Field, value: i64) {
        self.0.insert(field.name().into(), value.into());
    }
    fn record_u64(&mut self, field: &Field, value: u64) {
        self.0.insert(field.name().into(), value.into());
    }
    fn record_bool(&mut self, field: &Field, value: bool) {
        self.0.insert(field.name().into(), value.into());
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        self.0.insert(field.name().into(), value.into());
    }
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.0.insert(field.name().into(), format!("{value:?}").into());
    }
}

impl<S, N> FormatEvent<S, N> for JsonWithTrace
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(&self, ctx: &FmtContext<'_, S, N>, mut writer: Writer<'_>, event: &Event<'_>) -> std::fmt::Result {
        let meta = event.metadata();
        let mut timestamp = String::new();
        SystemTime.format_time(&mut Writer::new(&mut timestamp))?;
        let mut fields = JsonFields(serde_json::Map::new());
        event.record(&mut fields);
        let mut line = serde_json::Map::new();
        line.insert("timestamp".into(), timestamp.into());
        line.insert("level".into(), meta.level().as_str().into());
        line.insert("target".into(), meta.target().into());
        line.insert("fields".into(), serde_json::Value::Object(fields.0));
        if let Some(span) = ctx.event_scope().and_then(|mut s| s.next()) {
            line.insert("span".into(), serde_json::json!({ "name": span.name() }));
        }
        if let Some((trace_id, span_id)) = trace_ids(ctx, &self.0) {
            line.insert("trace_id".into(), trace_id.into());
            line.insert("span_id".into(), span_id.into());
        }
        writeln!(writer, "{}", serde_json::Value::Object(line))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env<'a>(pairs: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<String> + 'a {
        move |var| pairs.iter().find(|(k, _)| *k == var).map(|(_, v)| v.to_string())
    }

    fn settings(protocol: &str, endpoint: &str) -> ObservabilitySettings {
        ObservabilitySettings {
            otlp_enabled: true,
            otlp_protocol: protocol.parse().unwrap(),
            otlp_endpoint: endpoint.into(),
            ..ObservabilitySettings::default()
        }
    }

    #[test]
    fn configuration_applies_when_the_environment_is_silent() {
        let plan = ExportPlan::resolve(&settings("grpc", "http://collector:4317"), "shoal-worker", env(&[])).unwrap();
        assert_eq!(plan.protocol, "grpc");
        assert_eq!(plan.endpoint.as_deref(), Some("http://collector:4317"));
        assert_eq!(plan.service_name.as_deref(), Some("shoal-worker"));
        let http = ExportPlan::resolve(&settings("http/protobuf", "http://c:4318/"), "w", env(&[])).unwrap();
        assert_eq!(http.endpoint.as_deref(), Some("http://c:4318/v1/traces"), "base URL like the env variable");
    }

    #[test]
    fn otel_environment_variables_win() {
        let vars = [
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf"),
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://elsewhere:4318"),
            ("OTEL_SERVICE_NAME", "custom"),
        ];
        let plan = ExportPlan::resolve(&settings("grpc", "http://collector:4317"), "shoal-worker", env(&vars)).unwrap();
        assert_eq!(plan.protocol, "http/protobuf");
        assert_eq!(plan.endpoint, None, "left to the exporter, which reads the variable");
        assert_eq!(plan.service_name, None, "left to the SDK, which reads OTEL_SERVICE_NAME");
        let traces_first =
            [("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "grpc"), ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf")];
        assert_eq!(ExportPlan::resolve(&settings("grpc", ""), "w", env(&traces_first)).unwrap().protocol, "grpc");
        let ratio = [("OTEL_TRACES_SAMPLER", "parentbased_traceidratio"), ("OTEL_TRACES_SAMPLER_ARG", "0.25")];
        assert_eq!(ExportPlan::resolve(&settings("grpc", ""), "w", env(&ratio)).unwrap().sample_ratio, 0.25);
        let off = [("OTEL_TRACES_SAMPLER", "always_off")];
        assert_eq!(ExportPlan::resolve(&settings("grpc", ""), "w", env(&off)).unwrap().sample_ratio, 0.0);
        let bad = [("OTEL_TRACES_SAMPLER", "traceidratio"), ("OTEL_TRACES_SAMPLER_ARG", "2")];
        let error = ExportPlan::resolve(&settings("grpc", ""), "w", env(&bad)).unwrap_err().to_string();
        assert!(error.contains("OTEL_TRACES_SAMPLER_ARG") && error.contains("0.0 to 1.0"), "{error}");
        let unknown = [("OTEL_TRACES_SAMPLER", "jaeger_remote")];
        assert!(ExportPlan::resolve(&settings("grpc", ""), "w", env(&unknown)).is_err());
        let attrs = [("OTEL_RESOURCE_ATTRIBUTES", "team=a, service.name=from-attrs")];
        assert_eq!(ExportPlan::resolve(&settings("grpc", ""), "w", env(&attrs)).unwrap().service_name, None);
    }

    #[test]
    fn unsupported_protocol_is_an_error_naming_the_variable() {
        let err = ExportPlan::resolve(&settings("grpc", ""), "w", env(&[("OTEL_EXPORTER_OTLP_PROTOCOL", "http/json")]))
            .unwrap_err()
            .to_string();
        assert!(err.contains("OTEL_EXPORTER_OTLP_PROTOCOL"), "{err}");
    }
}
