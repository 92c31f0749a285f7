//! Test input and output on the broker: producing, groups, commands and
//! results.

use std::collections::HashMap;
use std::time::Duration;

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Headers, OwnedMessage};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{ClientConfig, Message};
use shoal_protocol::messages::{Command, CommandResult, WireMessage};
use uuid::Uuid;

use super::proc::eventually;
use super::scope::{Scope, bootstrap};

/// A plain idempotent producer for test input.
pub fn producer() -> FutureProducer {
    producer_for(&bootstrap())
}

/// [`producer`] for another cluster.
pub fn producer_for(bootstrap: &str) -> FutureProducer {
    ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .create()
        .unwrap()
}

/// Produces `payload` to `topic` keyed by `key` and waits for the ack.
pub async fn produce(producer: &FutureProducer, topic: &str, key: &str, payload: &[u8]) {
    send(producer, FutureRecord::to(topic).key(key).payload(payload)).await;
}

/// [`produce`] to one partition, whatever the key's hash.
pub async fn produce_to(producer: &FutureProducer, topic: &str, partition: i32, key: &str, payload: &[u8]) {
    send(producer, FutureRecord::to(topic).partition(partition).key(key).payload(payload)).await;
}

async fn send(producer: &FutureProducer, record: FutureRecord<'_, str, [u8]>) {
    producer.send(record, Duration::from_secs(10)).await.map_err(|(e, _)| e).unwrap();
}

/// A header's value as text.
pub fn header(message: &OwnedMessage, name: &str) -> Option<String> {
    let headers = message.headers()?;
    (0..headers.count())
        .map(|i| headers.get(i))
        .find(|h| h.key == name)
        .and_then(|h| h.value)
        .map(|v| String::from_utf8_lossy(v).into_owned())
}

/// Members of `group` that have an assignment, as reported by the broker.
pub fn group_members_with_assignment(group: &str) -> usize {
    let consumer: BaseConsumer = ClientConfig::new().set("bootstrap.servers", bootstrap()).create().unwrap();
    let Ok(list) = consumer.fetch_group_list(Some(group), Duration::from_secs(5)) else { return 0 };
    list.groups()
        .iter()
        .filter(|g| g.name() == group && g.state() == "Stable")
        .flat_map(|g| g.members())
        .filter(|m| m.assignment().is_some_and(|a| !a.is_empty()))
        .count()
}

/// Waits until `n` members of the scope's workers group have partitions.
pub async fn wait_for_members(scope: &Scope, n: usize) {
    let group = scope.workers_group();
    eventually(Duration::from_secs(60), &format!("{n} workers with partitions in {group}"), || {
        let group = group.clone();
        async move { tokio::task::spawn_blocking(move || group_members_with_assignment(&group)).await.unwrap() == n }
    })
    .await;
}

/// Counts of each key in `ids`, to find duplicates and gaps.
pub fn counts<T: std::hash::Hash + Eq>(ids: impl IntoIterator<Item = T>) -> HashMap<T, usize> {
    let mut map = HashMap::new();
    for id in ids {
        *map.entry(id).or_insert(0) += 1;
    }
    map
}

/// A valid `raise_alert` command for `key`.
pub fn alert_command(key: &str, seq: u64) -> Command {
    use shoal_protocol::messages::{SCHEMA_VERSION, kinds};
    let payload = shoal_protocol::payloads::RaiseAlert {
        symbol: key.to_string(),
        level: "100".parse().unwrap(),
        previous_price: "99.95".parse().unwrap(),
        price: "100.05".parse().unwrap(),
    };
    Command {
        schema_version: SCHEMA_VERSION,
        id: Uuid::now_v7(),
        kind: kinds::RAISE_ALERT.into(),
        key: key.to_string(),
        seq,
        issued_at: chrono::Utc::now(),
        deadline: None,
        payload: serde_json::to_value(payload).unwrap(),
    }
}

/// Decodes every record of a results topic.
pub fn decode_results(messages: &[OwnedMessage]) -> Vec<CommandResult> {
    messages.iter().map(|m| CommandResult::decode(m.payload().unwrap_or_default()).unwrap()).collect()
}

/// Decodes every record of a commands topic.
pub fn decode_commands(messages: &[OwnedMessage]) -> Vec<Command> {
    messages.iter().map(|m| Command::decode(m.payload().unwrap_or_default()).unwrap()).collect()
}

/// Issues `rounds` rounds of one `raise_alert` command per key (`key-0`,
/// `key-1`, ...; round `r` has seq `r`) to the scope's commands topic, each
/// acknowledged before the next, a round every `pace` if given. Calls
/// `between(round)` after each round; returns the ids in issue order.
pub async fn issue_alert_rounds(
    scope: &Scope,
    keys: usize,
    rounds: u64,
    pace: Option<Duration>,
    mut between: impl FnMut(u64),
) -> Vec<Uuid> {
    let producer = producer();
    let mut pace = pace.map(tokio::time::interval);
    let mut issued = Vec::new();
    for round in 1..=rounds {
        if let Some(pace) = &mut pace {
            pace.tick().await;
        }
        for k in 0..keys {
            let command = alert_command(&format!("key-{k}"), round);
            produce(&producer, &scope.topics.commands.name, &command.key, &command.encode()).await;
            issued.push(command.id);
        }
        between(round);
    }
    issued
}

/// Checks that each issued command has exactly one result and that no
/// other command has any.
pub fn assert_one_result_each(results: &[CommandResult], issued: &[Uuid]) {
    let per_command = counts(results.iter().map(|r| r.command_id));
    let missing = issued.iter().filter(|id| !per_command.contains_key(id)).count();
    let duplicated: Vec<_> = per_command.iter().filter(|(_, n)| **n > 1).collect();
    assert_eq!(missing, 0, "{missing} of {} commands without a result", issued.len());
    assert!(duplicated.is_empty(), "duplicated results: {duplicated:?}");
    assert_eq!(per_command.len(), issued.len(), "results for commands never issued");
}
