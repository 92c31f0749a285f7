//! A consuming stage's pipeline and group counters, registered as metrics.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use shoal_telemetry::metrics::metrics;

use crate::consumer::GroupStats;
use crate::pipeline::PipelineStats;

/// Registers a consuming stage's pipeline and group counters as metrics.
pub fn register_stage(stage: &'static str, pipeline: &Arc<PipelineStats>, group: &Arc<GroupStats>) {
    let m = metrics();
    let stage_label = || vec![("stage", stage.to_string())];
    type Read = fn(&PipelineStats) -> u64;
    let pipeline_counters: [(&'static str, &'static str, Read); 7] = [
        ("shoal_pipeline_records", "Records consumed by the stage", |s| s.records.load(Ordering::Relaxed)),
        ("shoal_pipeline_outputs", "Records produced (committed, with exactly-once delivery)", |s| {
            s.outputs.load(Ordering::Relaxed)
        }),
        ("shoal_pipeline_produce_errors", "Outputs that could not be enqueued (at-least-once)", |s| {
            s.produce_errors.load(Ordering::Relaxed)
        }),
        ("shoal_pipeline_producer_restarts", "Transactional producers recreated after a fatal error", |s| {
            s.producer_restarts.load(Ordering::Relaxed)
        }),
        ("shoal_pipeline_skipped_done", "Records skipped because an earlier owner finished them", |s| {
            s.skipped_done.load(Ordering::Relaxed)
        }),
        (
            "shoal_pipeline_discarded",
            "Finished work dropped because its partition moved or the input was rewound",
            |s| s.discarded.load(Ordering::Relaxed),
        ),
        ("shoal_pipeline_freezes", "Process pauses long enough to have lost the partitions", |s| {
            s.freezes.load(Ordering::Relaxed)
        }),
    ];
    for (name, help, read) in pipeline_counters {
        let stats = pipeline.clone();
        m.counter(name, help, stage_label(), move || read(&stats));
    }
    for (outcome, read) in [
        ("committed", (|s: &PipelineStats| s.transactions.load(Ordering::Relaxed)) as Read),
        ("aborted", |s: &PipelineStats| s.aborts.load(Ordering::Relaxed)),
    ] {
        let stats = pipeline.clone();
        m.counter(
            "shoal_transactions",
            "Kafka transactions of the stage (exactly-once delivery), by outcome",
            vec![("stage", stage.to_string()), ("outcome", outcome.to_string())],
            move || read(&stats),
        );
    }
    let stats = pipeline.clone();
    m.gauge(
        "shoal_pipeline_in_flight",
        "Records read and not yet finished (delivered, at-least-once)",
        stage_label(),
        move || i64::try_from(stats.in_flight.load(Ordering::Relaxed)).unwrap_or(i64::MAX),
    );

    let group_labels = || vec![("stage", stage.to_string()), ("group", group.group_id.clone())];
    let g = group.clone();
    m.counter(
        "shoal_consumer_rebalances",
        "Partition assignments and revocations this member took part in",
        group_labels(),
        move || g.rebalances.load(Ordering::Relaxed),
    );
    let g = group.clone();
    m.counter("shoal_consumer_commit_failures", "Offset commits that failed", group_labels(), move || {
        g.commit_failures.load(Ordering::Relaxed)
    });
    let g = group.clone();
    m.gauge("shoal_consumer_assigned_partitions", "Partitions assigned to this member", group_labels(), move || {
        g.assigned.load(Ordering::Relaxed)
    });
    let g = group.clone();
    m.gauge(
        "shoal_kafka_brokers_up",
        "Brokers the client is connected to (librdkafka statistics)",
        group_labels(),
        move || g.client.brokers().0,
    );
    let g = group.clone();
    m.gauges(
        "shoal_consumer_lag",
        "Messages between the consumer's position and the end (last stable offset) of each assigned partition, from librdkafka statistics",
        move |out| {
            for ((topic, partition), lag) in g.client.lag() {
                let labels = vec![
                    ("stage", stage.to_string()),
                    ("group", g.group_id.clone()),
                    ("topic", topic),
                    ("partition", partition.to_string()),
                ];
                out.push((labels, lag));
            }
        },
    );
}
