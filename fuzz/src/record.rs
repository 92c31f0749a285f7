//! Kafka records as the consumers read them: the orchestrator's state
//! decoding (`state::decode::decode`: topic and `shoal-message-type` header
//! select the message type) and the record headers (`shoal-kafka`'s
//! `HeaderView`: lookups, trace context, the copy a dead letter carries).
//!
//! Input format, bytes:
//!
//! ```text
//! shoal.ticks                      <- topic (first line)
//! shoal-message-type: book_top     <- headers, `name: value`, up to a blank line;
//! shoal-dlq-reason                 <- a name alone: a header without a value
//! @key: BTC-USD                    <- `@key` sets the record key instead
//!                                  <- blank line
//! {"schema_version":1,...}         <- the payload (none without a blank line)
//! ```

use rdkafka::Message;
use rdkafka::message::{Header, Headers, OwnedHeaders, OwnedMessage, Timestamp};
use shoal_kafka::headers::{self, HeaderView};
use shoal_orchestrator::state::decode::{InputTopics, decode};
use shoal_protocol::messages::{BookTop, Command, CommandResult, DataQuality, Event, MarketTick, WireMessage};
use shoal_state::Record;

use crate::round_trip;

/// The input topics the records are decoded against.
fn topics() -> InputTopics {
    InputTopics {
        ticks: "shoal.ticks".into(),
        events: "shoal.events".into(),
        commands: "shoal.commands".into(),
        results: "shoal.results".into(),
        dlq: "shoal.dlq".into(),
        approvals: "shoal.approvals".into(),
    }
}

/// Reasons `decode` may give (the dead-letter reasons).
const REASONS: [&str; 4] = ["malformed", "unsupported_schema_version", "empty", "unexpected_topic"];

/// Builds the record `data` describes and decodes it.
pub fn record(data: &[u8]) {
    let message = parse(data);
    check_headers(message.headers());
    let topics = topics();
    match decode(&topics, &message) {
        Ok(input) => {
            assert_eq!(input.provenance.topic, message.topic());
            assert_eq!((input.provenance.partition, input.provenance.offset), (message.partition(), message.offset()));
            check_record(&input.record, message.payload().unwrap_or_default());
        }
        Err(not) => assert!(REASONS.contains(&not.reason), "unknown reason {:?}: {}", not.reason, not.detail),
    }
}

fn parse(data: &[u8]) -> OwnedMessage {
    let (head, payload) = match data.windows(2).position(|w| w == b"\n\n") {
        Some(at) => (&data[..at], Some(data[at + 2..].to_vec())),
        None => (data, None),
    };
    let mut lines = head.split(|b| *b == b'\n');
    let topic = String::from_utf8_lossy(lines.next().unwrap_or_default()).into_owned();
    let mut key = None;
    let mut headers = OwnedHeaders::new();
    for line in lines {
        let (name, value) = match line.windows(2).position(|w| w == b": ") {
            Some(at) => (&line[..at], Some(&line[at + 2..])),
            None => (line, None),
        };
        let name = String::from_utf8_lossy(name);
        if name.contains('\0') {
            // librdkafka hands header names over as C strings: never a NUL.
            continue;
        }
        if name == "@key" {
            key = value.map(<[u8]>::to_vec);
        } else {
            headers = headers.insert(Header { key: name.as_ref(), value });
        }
    }
    let timestamp = Timestamp::CreateTime(1_767_225_600_000 + data.len() as i64);
    OwnedMessage::new(payload, key, topic, timestamp, 3, 42, Some(headers))
}

/// The decoded record is what the payload decodes to directly, and it
/// round-trips.
fn check_record(record: &Record, payload: &[u8]) {
    fn same<T: WireMessage + PartialEq + std::fmt::Debug>(decoded: &T, payload: &[u8]) {
        assert_eq!(T::decode(payload).ok().as_ref(), Some(decoded));
        round_trip(decoded);
    }
    match record {
        Record::Tick(m) => same::<MarketTick>(m, payload),
        Record::BookTop(m) => same::<BookTop>(m, payload),
        Record::DataQuality(m) => same::<DataQuality>(m, payload),
        Record::Event(m) => same::<Event>(m, payload),
        Record::Command(m) => same::<Command>(m, payload),
        Record::Result(m) => same::<CommandResult>(m, payload),
        Record::Approval(m) => same(m.as_ref(), payload),
        Record::DeadLetter { .. } => {}
    }
}

/// Header lookups and trace context never panic; the copy a dead letter
/// carries (`to_set`) reads like the original.
fn check_headers(owned: Option<&OwnedHeaders>) {
    let view = HeaderView(owned);
    let _ = format!("{view:?}");
    let (parent, shoal) = view.trace_origin();
    assert_eq!(shoal, owned.is_some_and(|h| h.iter().any(|h| h.key == headers::MESSAGE_TYPE)));
    if let Some(parent) = &parent {
        let sampled = parent.validated_sampled();
        assert_eq!(sampled.is_some(), parent.is_valid());
        assert_eq!(parent.trace_id().is_some(), parent.is_valid());
        assert_eq!(parent.sampled(), sampled == Some(true));
    }
    assert_eq!(view.trace_parent(), parent);
    let _ = view.span_context();
    let copy = view.to_set().into_owned();
    let copied = HeaderView(Some(&copy));
    for header in owned.into_iter().flat_map(|h| h.iter()) {
        if let Some(value) = view.get(header.key) {
            assert_eq!(copied.get(header.key), Some(value), "header {:?} copied differently", header.key);
        }
    }
    assert_eq!(copy.count(), owned.map_or(0, |h| h.count()));
}
