//! The state's own topics: one compacted changelog per input topic, with
//! as many partitions as the input (partition `p` of the changelog holds
//! the checkpoints of input partition `p`'s shard), and the compacted
//! members topic.

use std::time::Duration;

use anyhow::Context as _;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::types::RDKafkaErrorCode;
use shoal_kafka::settings::KafkaSettings;

use super::log::LogReader;

/// Creates the changelog of each of `inputs` (`(input topic, replication)`)
/// and the members topic, when missing and `create` is set (otherwise they
/// must exist). Checks that an existing changelog has as many partitions as
/// its input.
pub async fn ensure(
    kafka: &KafkaSettings,
    settings: &super::StateSettings,
    inputs: &[(String, i32)],
    instance: &str,
    create: bool,
) -> anyhow::Result<()> {
    let reader = LogReader::new(kafka, &format!("{instance}-state-admin")).context("creating a metadata reader")?;
    let mut wanted = Vec::new();
    for (input, replication) in inputs {
        let bound = Duration::from_secs(10);
        // A topic created a moment ago may not be in the metadata yet.
        let deadline = std::time::Instant::now() + bound;
        let partitions = loop {
            let n = tokio::task::block_in_place(|| reader.partitions(input, bound))?.len();
            if n > 0 || std::time::Instant::now() > deadline {
                break n;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        };
        if partitions == 0 {
            anyhow::bail!("input topic {input:?} has no partitions (does it exist?)");
        }
        let changelog = settings.changelog_of(input);
        let existing = tokio::task::block_in_place(|| reader.partitions(&changelog, bound))?.len();
        if existing == 0 && !create {
            anyhow::bail!(
                "changelog topic {changelog:?} does not exist and topics.create is false: create it compacted, \
                 with {partitions} partitions (as many as {input:?})"
            );
        }
        if existing != 0 && existing != partitions {
            anyhow::bail!(
                "changelog {changelog:?} has {existing} partitions but its input {input:?} has {partitions}: \
                 delete the changelog (it is rebuilt from the input) or use another state.changelog_suffix"
            );
        }
        let partitions = i32::try_from(partitions).context("partition count")?;
        wanted.push((changelog, partitions, *replication));
    }
    if !create {
        return Ok(());
    }
    wanted.push((settings.members_topic.clone(), 1, inputs.first().map_or(1, |i| i.1)));
    let admin: AdminClient<DefaultClientContext> =
        shoal_kafka::client_config(kafka, &format!("{instance}-state-admin")).create().context("admin client")?;
    let topics: Vec<NewTopic<'_>> = wanted
        .iter()
        .map(|(name, partitions, replication)| {
            NewTopic::new(name, *partitions, TopicReplication::Fixed(*replication))
                .set("cleanup.policy", "compact")
                .set("min.compaction.lag.ms", "0")
                .set("segment.ms", "600000")
        })
        .collect();
    let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(30)));
    for result in admin.create_topics(topics.iter(), &options).await.context("creating state topics")? {
        match result {
            Ok(topic) => tracing::info!(%topic, "created state topic"),
            Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((topic, code)) => anyhow::bail!("cannot create state topic {topic:?}: {code}"),
        }
    }
    Ok(())
}
