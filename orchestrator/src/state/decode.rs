//! Kafka records to state inputs: which message a record holds follows
//! from its topic and its `shoal-message-type` header.

use chrono::{DateTime, Utc};
use rdkafka::Message;
use shoal_kafka::headers::{self, HeaderView};
use shoal_protocol::headers::dead_letter;
use shoal_protocol::messages::{
    BookTop, Command, CommandResult, DataQuality, DecodeError, Event, MarketTick, WireMessage,
};
use shoal_state::{Input, Provenance, Record};

/// The input topics, by role.
#[derive(Debug, Clone, Default)]
pub struct InputTopics {
    /// Ticks (trades, book tops, data-quality events).
    pub ticks: String,
    /// Business events.
    pub events: String,
    /// Commands.
    pub commands: String,
    /// Results.
    pub results: String,
    /// Dead letters.
    pub dlq: String,
    /// Approvals.
    pub approvals: String,
}

/// Why a record is not an input: a machine-readable reason (the dead
/// letter's) and the detail.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NotAnInput {
    /// Reason, as in the `shoal-dlq-reason` header.
    pub reason: &'static str,
    /// What was wrong.
    pub detail: String,
}

impl From<DecodeError> for NotAnInput {
    fn from(error: DecodeError) -> Self {
        Self { reason: error.reason(), detail: error.to_string() }
    }
}

/// Decodes `message` into an input for the state.
pub fn decode<M: Message>(topics: &InputTopics, message: &M) -> Result<Input, NotAnInput> {
    let payload = message.payload().unwrap_or_default();
    let view = HeaderView(message.headers());
    let topic = message.topic();
    let record = if topic == topics.ticks {
        match view.get(headers::MESSAGE_TYPE) {
            Some("book_top") => Record::BookTop(BookTop::decode(payload)?),
            Some("data_quality") => Record::DataQuality(DataQuality::decode(payload)?),
            _ => Record::Tick(MarketTick::decode(payload)?),
        }
    } else if topic == topics.events {
        Record::Event(Event::decode(payload)?)
    } else if topic == topics.commands {
        Record::Command(Command::decode(payload)?)
    } else if topic == topics.results {
        Record::Result(CommandResult::decode(payload)?)
    } else if topic == topics.approvals {
        Record::Approval(Box::new(shoal_protocol::approvals::ApprovalEvent::decode(payload)?))
    } else if topic == topics.dlq {
        Record::DeadLetter {
            command_id: view.get(headers::COMMAND_ID).and_then(|id| id.parse().ok()),
            key: message.key().map(String::from_utf8_lossy).unwrap_or_default().into_owned(),
            reason: view.get(dead_letter::REASON).unwrap_or_default().to_string(),
            stage: view.get(dead_letter::STAGE).unwrap_or_default().to_string(),
            at: message
                .timestamp()
                .to_millis()
                .and_then(DateTime::<Utc>::from_timestamp_millis)
                .unwrap_or(DateTime::<Utc>::UNIX_EPOCH),
        }
    } else {
        return Err(NotAnInput { reason: "unexpected_topic", detail: format!("topic {topic:?} is not a state input") });
    };
    let provenance = Provenance::new(topic, message.partition(), message.offset());
    Ok(Input { provenance, record })
}
