//! The process's Prometheus metrics.
//!
//! Most counters already exist as atomics in the stages' stats structs
//! (`PipelineStats`, `GroupStats`, `FeedStats`, `WorkerStats`, ...); they
//! are not counted twice: each is registered here as a *source*, read when
//! `/metrics` is scraped. Only what the atomics cannot express lives here as
//! a metric of its own: counters split by a label (commands issued by kind,
//! outcomes by status) and the latency histograms.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric as _, MetricEncoder};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::{Registry, Unit};

/// Label pairs of one sample.
pub type Labels = Vec<(&'static str, String)>;

type Reader = Box<dyn Fn(&mut Vec<(Labels, i64)>) + Send + Sync>;

/// One metric family read at scrape time.
struct Source {
    name: &'static str,
    help: &'static str,
    kind: MetricType,
    read: Reader,
}

/// Help, type and samples of one metric name.
type Samples = (&'static str, MetricType, Vec<(Labels, i64)>);

/// Sources, grouped by name when scraped so that several stages can report
/// the same metric with different labels (one `# TYPE` line per name).
#[derive(Default)]
struct Sources(Mutex<Vec<Source>>);

impl std::fmt::Debug for Sources {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let n = self.0.lock().map(|s| s.len()).unwrap_or(0);
        f.debug_struct("Sources").field("count", &n).finish()
    }
}

impl Collector for Sources {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        // Read everything first (cheap atomic loads), then encode without
        // holding the lock while writing.
        let mut families: BTreeMap<&'static str, Samples> = BTreeMap::new();
        {
            let sources = self.0.lock().unwrap_or_else(|p| p.into_inner());
            for source in sources.iter() {
                let entry = families.entry(source.name).or_insert_with(|| (source.help, source.kind, Vec::new()));
                (source.read)(&mut entry.2);
            }
        }
        fn encode_value(counter: bool, value: i64, sample: MetricEncoder<'_>) -> Result<(), std::fmt::Error> {
            if counter {
                ConstCounter::new(u64::try_from(value).unwrap_or(0)).encode(sample)
            } else {
                ConstGauge::new(value).encode(sample)
            }
        }
        for (name, (help, kind, mut samples)) in families {
            let counter = matches!(kind, MetricType::Counter);
            let mut family = encoder.encode_descriptor(name, help, None, kind)?;
            if samples.len() == 1 && samples[0].0.is_empty() {
                // A single unlabelled sample: `name 3`, not `name{} 3`.
                let (_, value) = samples.remove(0);
                encode_value(counter, value, family)?;
                continue;
            }
            for (labels, value) in samples {
                encode_value(counter, value, family.encode_family(&labels)?)?;
            }
        }
        Ok(())
    }
}

/// Metrics of one application (see [`Telemetry`](crate::Telemetry)).
#[derive(Debug)]
pub struct Metrics {
    registry: Mutex<Registry>,
    sources: Arc<Sources>,
    /// Commands issued by the decisions stage, by kind.
    pub commands_issued: Family<Labels, Counter>,
    /// Outcomes recorded by the results stage, by kind and status.
    pub results_recorded: Family<Labels, Counter>,
    /// Handler run time per command (all attempts, retries' waits included),
    /// by kind.
    pub handler_duration: Family<Labels, Histogram>,
    /// Issue → result recorded, by kind (the results stage).
    pub command_latency: Family<Labels, Histogram>,
}

fn handler_histogram() -> Histogram {
    // 100 µs .. ~15 s
    Histogram::new(exponential_buckets(0.000_1, 2.5, 14))
}

fn latency_histogram() -> Histogram {
    // 1 ms .. ~65 s
    Histogram::new(exponential_buckets(0.001, 2.0, 17))
}

impl Metrics {
    /// An empty registry (Shoal's labelled families and `shoal_build_info`
    /// only).
    #[allow(clippy::new_without_default)]
    pub fn new() -> Self {
        let mut registry = Registry::default();
        let commands_issued = Family::<Labels, Counter>::default();
        registry.register("shoal_commands_issued", "Commands issued by the decisions stage", commands_issued.clone());
        let results_recorded = Family::<Labels, Counter>::default();
        registry.register(
            "shoal_results_recorded",
            "Outcomes recorded by the results stage (a result matched to its command)",
            results_recorded.clone(),
        );
        let handler_duration = Family::<Labels, Histogram>::new_with_constructor(handler_histogram as fn() -> _);
        registry.register_with_unit(
            "shoal_handler_duration",
            "Time a worker spent on a command: handler attempts and the waits between retries",
            Unit::Seconds,
            handler_duration.clone(),
        );
        let command_latency = Family::<Labels, Histogram>::new_with_constructor(latency_histogram as fn() -> _);
        registry.register_with_unit(
            "shoal_command_latency",
            "End-to-end command latency: issued by the decisions stage to its result recorded by the results stage",
            Unit::Seconds,
            command_latency.clone(),
        );
        let sources = Arc::new(Sources::default());
        registry.register_collector(Box::new(sources.clone()));
        let metrics = Self {
            registry: Mutex::new(registry),
            sources,
            commands_issued,
            results_recorded,
            handler_duration,
            command_latency,
        };
        metrics.gauge(
            "shoal_build_info",
            "Always 1; the labels name the build",
            vec![("version", env!("CARGO_PKG_VERSION").to_string())],
            || 1,
        );
        metrics
    }

    fn add(&self, source: Source) {
        self.sources.0.lock().unwrap_or_else(|p| p.into_inner()).push(source);
    }

    /// Registers a counter read from `read` at each scrape. `name` is
    /// without `_total` (the exposition adds it).
    pub fn counter(
        &self,
        name: &'static str,
        help: &'static str,
        labels: Labels,
        read: impl Fn() -> u64 + Send + Sync + 'static,
    ) {
        self.add(Source {
            name,
            help,
            kind: MetricType::Counter,
            read: Box::new(move |out| out.push((labels.clone(), i64::try_from(read()).unwrap_or(i64::MAX)))),
        });
    }

    /// Registers a gauge read from `read` at each scrape.
    pub fn gauge(
        &self,
        name: &'static str,
        help: &'static str,
        labels: Labels,
        read: impl Fn() -> i64 + Send + Sync + 'static,
    ) {
        self.add(Source {
            name,
            help,
            kind: MetricType::Gauge,
            read: Box::new(move |out| out.push((labels.clone(), read()))),
        });
    }

    /// Registers a gauge whose label sets are only known at scrape time
    /// (per-partition lag): `read` pushes one sample per label set.
    pub fn gauges(
        &self,
        name: &'static str,
        help: &'static str,
        read: impl Fn(&mut Vec<(Labels, i64)>) + Send + Sync + 'static,
    ) {
        self.add(Source { name, help, kind: MetricType::Gauge, read: Box::new(read) });
    }

    /// The metrics in the OpenMetrics text format.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        let registry = self.registry.lock().unwrap_or_else(|p| p.into_inner());
        if let Err(error) = prometheus_client::encoding::text::encode(&mut out, &registry) {
            tracing::warn!(%error, "cannot encode metrics");
        }
        out
    }
}

/// `[("kind", kind)]`.
pub fn kind_label(kind: &str) -> Labels {
    vec![("kind", kind.to_string())]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sources_of_one_name_share_one_family_and_counters_get_total() {
        let m = Metrics::new();
        m.counter("shoal_test_records", "records", vec![("stage", "a".into())], || 3);
        m.counter("shoal_test_records", "records", vec![("stage", "b".into())], || 4);
        m.gauges("shoal_test_lag", "lag", |out| {
            out.push((vec![("partition", "0".into())], 7));
            out.push((vec![("partition", "1".into())], 0));
        });
        m.counter("shoal_test_plain", "plain", vec![], || 5);
        m.command_latency.get_or_create(&kind_label("raise_alert")).observe(0.02);
        let text = m.encode();
        assert_eq!(text.matches("# TYPE shoal_test_records counter").count(), 1, "{text}");
        assert!(text.contains("shoal_test_records_total{stage=\"a\"} 3"), "{text}");
        assert!(text.contains("shoal_test_records_total{stage=\"b\"} 4"), "{text}");
        assert!(text.contains("shoal_test_lag{partition=\"0\"} 7"), "{text}");
        assert!(text.contains("shoal_command_latency_seconds_count{kind=\"raise_alert\"} 1"), "{text}");
        assert!(text.contains("shoal_build_info{version="), "{text}");
        assert!(text.contains("\nshoal_test_plain_total 5\n"), "{text}");
    }
}
