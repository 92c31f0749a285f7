//! One dead letter as read from the dead-letter topic: where it is, where
//! it came from, why, and the original record (key, body, headers).

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Utc};
use rdkafka::Message;
use rdkafka::message::Headers;
use shoal_protocol::headers::{COMMAND_ID, dead_letter as dlq};

/// A record's place: `topic/partition@offset`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Coordinates {
    /// Topic.
    pub topic: String,
    /// Partition.
    pub partition: i32,
    /// Offset.
    pub offset: i64,
}

impl fmt::Display for Coordinates {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}@{}", self.topic, self.partition, self.offset)
    }
}

/// `topic/partition@offset` that does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not topic/partition@offset")]
pub struct BadCoordinates(pub String);

impl FromStr for Coordinates {
    type Err = BadCoordinates;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || BadCoordinates(s.to_string());
        let (place, offset) = s.rsplit_once('@').ok_or_else(bad)?;
        let (topic, partition) = place.rsplit_once('/').ok_or_else(bad)?;
        let partition = partition.parse().map_err(|_| bad())?;
        let offset = offset.parse().map_err(|_| bad())?;
        if topic.is_empty() || partition < 0 || offset < 0 {
            return Err(bad());
        }
        Ok(Self { topic: topic.to_string(), partition, offset })
    }
}

/// The headers that dead-lettering adds; the others are the original
/// record's.
pub const ADDED_HEADERS: [&str; 7] =
    [dlq::REASON, dlq::ERROR, dlq::STAGE, dlq::ORIGIN_TOPIC, dlq::ORIGIN_PARTITION, dlq::ORIGIN_OFFSET, dlq::ATTEMPTS];

/// A dead letter, owned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeadLetter {
    /// Where it is on the dead-letter topic.
    pub at: Coordinates,
    /// When it was written (its record timestamp).
    pub time: Option<DateTime<Utc>>,
    /// The original key.
    pub key: Option<Vec<u8>>,
    /// The original body.
    pub payload: Option<Vec<u8>>,
    /// Every header, in order: the original ones, then those dead-lettering
    /// added.
    pub headers: Vec<(String, Option<Vec<u8>>)>,
}

impl DeadLetter {
    /// Copies a consumed record of the dead-letter topic.
    pub fn from_message<M: Message>(message: &M) -> Self {
        let headers = message
            .headers()
            .map(|h| h.iter().map(|h| (h.key.to_string(), h.value.map(<[u8]>::to_vec))).collect())
            .unwrap_or_default();
        Self {
            at: Coordinates {
                topic: message.topic().to_string(),
                partition: message.partition(),
                offset: message.offset(),
            },
            time: message.timestamp().to_millis().and_then(DateTime::from_timestamp_millis),
            key: message.key().map(<[u8]>::to_vec),
            payload: message.payload().map(<[u8]>::to_vec),
            headers,
        }
    }

    /// The first header called `name`, as text.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(key, _)| key == name)
            .and_then(|(_, value)| value.as_deref())
            .and_then(|v| std::str::from_utf8(v).ok())
    }

    /// `shoal-dlq-reason`.
    pub fn reason(&self) -> Option<&str> {
        self.header(dlq::REASON)
    }

    /// Where the original record was read, when the headers say so in full.
    pub fn origin(&self) -> Option<Coordinates> {
        let topic = self.header(dlq::ORIGIN_TOPIC).filter(|t| !t.is_empty())?;
        let partition = self.header(dlq::ORIGIN_PARTITION)?.trim().parse().ok().filter(|p: &i32| *p >= 0)?;
        let offset = self.header(dlq::ORIGIN_OFFSET)?.trim().parse().ok().filter(|o: &i64| *o >= 0)?;
        Some(Coordinates { topic: topic.to_string(), partition, offset })
    }

    /// The original record's headers: all but those dead-lettering added.
    pub fn original_headers(&self) -> impl Iterator<Item = (&str, Option<&[u8]>)> {
        self.headers
            .iter()
            .filter(|(key, _)| !ADDED_HEADERS.contains(&key.as_str()))
            .map(|(key, value)| (key.as_str(), value.as_deref()))
    }

    /// Ids it can be found by: the `shoal-command-id` header, and the `id`
    /// or `command_id` field of a JSON body.
    pub fn ids(&self) -> Vec<String> {
        let mut ids: Vec<String> = self.header(COMMAND_ID).map(str::to_string).into_iter().collect();
        if let Some(body) = self.payload.as_deref()
            && let Ok(serde_json::Value::Object(fields)) = serde_json::from_slice::<serde_json::Value>(body)
        {
            for name in ["id", "command_id"] {
                if let Some(id) = fields.get(name).and_then(|v| v.as_str()) {
                    ids.push(id.to_string());
                }
            }
        }
        ids
    }

    /// Whether `id` is one of its [`DeadLetter::ids`] (case-insensitive).
    pub fn has_id(&self, id: &str) -> bool {
        self.ids().iter().any(|mine| mine.eq_ignore_ascii_case(id))
    }
}

/// RFC 3339 in UTC with milliseconds, or `-`.
pub fn time_text(time: Option<DateTime<Utc>>) -> String {
    time.map_or_else(|| "-".to_string(), |t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
}

#[cfg(test)]
pub(crate) mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    /// A dead letter as the worker writes one.
    pub(crate) fn letter(offset: i64, reason: &str, origin: Option<(&str, i32, i64)>, body: &[u8]) -> DeadLetter {
        let mut headers = vec![
            ("shoal-message-type".to_string(), Some(b"command".to_vec())),
            ("traceparent".to_string(), Some(b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01".to_vec())),
            (dlq::REASON.to_string(), Some(reason.as_bytes().to_vec())),
            (dlq::ERROR.to_string(), Some(b"it broke".to_vec())),
            (dlq::STAGE.to_string(), Some(b"worker".to_vec())),
        ];
        if let Some((topic, partition, offset)) = origin {
            headers.push((dlq::ORIGIN_TOPIC.into(), Some(topic.as_bytes().to_vec())));
            headers.push((dlq::ORIGIN_PARTITION.into(), Some(partition.to_string().into_bytes())));
            headers.push((dlq::ORIGIN_OFFSET.into(), Some(offset.to_string().into_bytes())));
        }
        headers.push((dlq::ATTEMPTS.into(), Some(b"1".to_vec())));
        DeadLetter {
            at: Coordinates { topic: "shoal.dlq".into(), partition: 0, offset },
            time: DateTime::from_timestamp_millis(1_700_000_000_000 + offset * 1_000),
            key: Some(b"k1".to_vec()),
            payload: Some(body.to_vec()),
            headers,
        }
    }

    #[test]
    fn coordinates_round_trip_and_reject_garbage() {
        let c: Coordinates = "shoal.dlq/3@1042".parse().unwrap();
        assert_eq!(c, Coordinates { topic: "shoal.dlq".into(), partition: 3, offset: 1042 });
        assert_eq!(c.to_string(), "shoal.dlq/3@1042");
        for bad in ["", "shoal.dlq", "shoal.dlq/3", "3@4", "/3@4", "t/x@4", "t/3@y", "t/-1@4", "t/1@-4"] {
            assert!(bad.parse::<Coordinates>().is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn origin_and_original_headers_come_from_the_headers() {
        let l = letter(5, "handler_failed", Some(("shoal.commands", 7, 99)), b"{}");
        assert_eq!(l.reason(), Some("handler_failed"));
        assert_eq!(l.origin().unwrap().to_string(), "shoal.commands/7@99");
        let names: Vec<&str> = l.original_headers().map(|(k, _)| k).collect();
        assert_eq!(names, ["shoal-message-type", "traceparent"]);
        assert_eq!(letter(5, "malformed", None, b"").origin(), None);
        let mut partial = letter(5, "malformed", Some(("t", 1, 2)), b"");
        partial.headers.retain(|(k, _)| k != dlq::ORIGIN_OFFSET);
        assert_eq!(partial.origin(), None, "an origin without its offset is no origin");
    }

    #[test]
    fn ids_come_from_the_header_and_the_body() {
        let mut l = letter(1, "unsupported_kind", None, br#"{"id":"0195-ABC","kind":"x"}"#);
        l.headers.push((COMMAND_ID.into(), Some(b"0195-abc".to_vec())));
        assert_eq!(l.ids(), ["0195-abc", "0195-ABC"]);
        assert!(l.has_id("0195-abc"));
        assert!(!l.has_id("other"));
        assert!(letter(1, "malformed", None, b"\x00\x01").ids().is_empty());
    }
}
