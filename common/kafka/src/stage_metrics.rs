//! A consuming stage's pipeline and group counters, registered as metrics.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use shoal_telemetry::metrics::Metrics;

use crate::consumer::GroupStats;
use crate::pipeline::PipelineStats;

/// Registers a consuming stage's pipeline and group counters as metrics.
pub fn register_stage(metrics: &Metrics, stage: &'static str, pipeline: &Arc<PipelineStats>, group: &Arc<GroupStats>) {
    pipeline.register_metrics(metrics, &vec![("stage", stage.to_string())]);
    let group_labels = || vec![("stage", stage.to_string()), ("group", group.group_id.clone())];
    group.register_metrics(metrics, &group_labels());
    let g = group.clone();
    metrics.gauge(
        "shoal_consumer_assigned_partitions",
        "Partitions assigned to this member",
        group_labels(),
        move || g.assigned.load(Ordering::Relaxed),
    );
    let g = group.clone();
    metrics.gauge(
        "shoal_kafka_brokers_up",
        "Brokers the client is connected to (librdkafka statistics)",
        group_labels(),
        move || g.client.brokers().0,
    );
    let g = group.clone();
    metrics.gauges(
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
