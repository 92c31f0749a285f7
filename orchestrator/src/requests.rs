//! Command requests from the API (`POST /v1/command-requests`, MCP's
//! `issue_command`): written to the events topic as `command_requested`
//! events, keyed by the command's key, with the idempotent producer. The
//! decisions stage turns each into a command (see [`crate::rules`]).

use std::time::Duration;

use futures::FutureExt as _;
use futures::future::BoxFuture;
use shoal_api::http::requests::RequestSink;
use shoal_kafka::polled::{AwaitedProducer, Outgoing};
use shoal_kafka::settings::KafkaSettings;
use shoal_protocol::messages::Event;

/// How long a request waits for Kafka's acknowledgment.
const SEND_TIMEOUT: Duration = Duration::from_secs(10);

/// Writes requests to the events topic.
pub struct EventsSink {
    producer: AwaitedProducer,
    topic: String,
}

impl std::fmt::Debug for EventsSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EventsSink").field("topic", &self.topic).finish_non_exhaustive()
    }
}

impl EventsSink {
    /// A sink writing to `topic` as client `<instance>-requests`.
    pub fn new(kafka: &KafkaSettings, topic: &str, instance: &str) -> anyhow::Result<Self> {
        let producer = AwaitedProducer::create(&shoal_kafka::producer_config(kafka, &format!("{instance}-requests")))?;
        Ok(Self { producer, topic: topic.into() })
    }
}

impl RequestSink for EventsSink {
    fn submit(&self, event: Event) -> BoxFuture<'static, Result<(), String>> {
        let producer = self.producer.clone();
        let topic = self.topic.clone();
        async move {
            let body = serde_json::to_vec(&event).map_err(|e| e.to_string())?;
            let record = Outgoing { topic: &topic, partition: None, key: event.key.as_bytes(), payload: &body };
            match producer.send(record, SEND_TIMEOUT).await {
                Ok(_) => Ok(()),
                Err(error) => Err(format!("{error} (topic {topic})")),
            }
        }
        .boxed()
    }
}
