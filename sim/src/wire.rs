//! Wire formats: how frames are encoded for clients and how client requests
//! are parsed. This module holds the native [`Format::Shoal`] protocol; the
//! exchange look-alikes live in `exchange.rs`.

use std::fmt::Display;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize, Serializer};
use tokio_tungstenite::tungstenite::Message;

use super::walk::{Side, Trade};

/// Feed name announced in the `hello` frame.
pub const FEED_NAME: &str = "shoal-sim";

/// Protocol version announced in the `hello` frame.
pub const PROTOCOL_VERSION: u32 = 1;

/// Subscription wildcard meaning "every symbol".
pub const WILDCARD: &str = "*";

/// The wire format the simulator speaks.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub enum Format {
    /// Shoal's own JSON protocol, documented in the [module
    /// docs](super#wire-protocol-formatshoal).
    #[default]
    Shoal,
    /// Binance spot public market streams (`/ws/<stream>`,
    /// `/stream?streams=...`, `SUBSCRIBE`).
    Binance,
    /// Coinbase Exchange public WebSocket feed (`matches`, `ticker`,
    /// `heartbeat`).
    Coinbase,
    /// Kraken WebSocket API v2 (`trade`, `ticker`, heartbeats).
    Kraken,
}

impl Format {
    /// Every format, in the order of their names.
    pub const ALL: [Format; 4] = [Format::Shoal, Format::Binance, Format::Coinbase, Format::Kraken];

    /// The lower-case name used in URL paths and on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Format::Shoal => "shoal",
            Format::Binance => "binance",
            Format::Coinbase => "coinbase",
            Format::Kraken => "kraken",
        }
    }

    /// The format named `name`.
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|f| f.name() == name)
    }
}

/// Kinds of deliberately malformed data frames, in the order the
/// `malformed_every` fault cycles through them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MalformedKind {
    /// A text frame that is not valid JSON (a truncated trade).
    InvalidJson,
    /// A JSON trade whose `price` is not a number (`"abc"`).
    InvalidPrice,
    /// A JSON object with an unknown `type`.
    UnknownType,
    /// A binary frame of garbage bytes (not valid UTF-8).
    BinaryGarbage,
}

impl MalformedKind {
    /// Every kind, in cycling order.
    pub const ALL: [MalformedKind; 4] = [
        MalformedKind::InvalidJson,
        MalformedKind::InvalidPrice,
        MalformedKind::UnknownType,
        MalformedKind::BinaryGarbage,
    ];

    /// The kind used for the `occurrence`-th malformed frame of a connection
    /// (1-based).
    pub fn for_occurrence(occurrence: u64) -> Self {
        // The modulo keeps the index below ALL.len(), so the cast is lossless.
        Self::ALL[(occurrence.saturating_sub(1) % Self::ALL.len() as u64) as usize]
    }
}

/// Text of the [`MalformedKind::InvalidJson`] frame.
pub const INVALID_JSON_TEXT: &str = r#"{"type":"trade","symbol":"#;

/// Payload of the [`MalformedKind::BinaryGarbage`] frame.
pub const GARBAGE_BYTES: &[u8] = &[0xde, 0xad, 0xbe, 0xef, 0x00, 0xff, 0xfe, 0x80, 0xc3, 0x28];

/// The `type` of the [`MalformedKind::UnknownType`] frame.
pub const UNKNOWN_TYPE: &str = "sim_fault";

/// A frame the server sends, independent of the wire format.
#[derive(Debug, Clone, Copy)]
pub(crate) enum ServerFrame<'a> {
    Hello { symbols: &'a [Arc<str>] },
    Subscribed { symbols: &'a [Arc<str>] },
    Unsubscribed { symbols: &'a [Arc<str>] },
    Error { message: &'a str },
    Trade { seq: u64, trade: &'a Trade },
    Heartbeat { seq: u64, ts: DateTime<Utc> },
}

/// A parsed client request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum ClientRequest {
    Subscribe { symbols: Vec<String> },
    Unsubscribe { symbols: Vec<String> },
}

impl Format {
    /// Encodes a frame of the Shoal protocol (the only one with these
    /// frames; exchange formats use `exchange::Session`).
    pub(crate) fn encode(self, frame: &ServerFrame<'_>) -> Message {
        shoal::encode(frame)
    }

    /// Encodes the malformed replacement of a data frame (a trade or a
    /// heartbeat). `fallback_symbol` is used when a trade-shaped frame
    /// replaces a heartbeat.
    pub(crate) fn encode_malformed(
        self,
        kind: MalformedKind,
        replaced: &ServerFrame<'_>,
        fallback_symbol: &str,
    ) -> Message {
        shoal::encode_malformed(kind, replaced, fallback_symbol)
    }

    /// Parses a client text frame; the error is the message for the client.
    pub(crate) fn parse_request(self, text: &str) -> Result<ClientRequest, String> {
        shoal::parse_request(text)
    }
}

/// Serialises any `Display` value as a JSON string without allocating.
fn as_display<T: Display, S: Serializer>(value: &T, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.collect_str(value)
}

/// Serialises a timestamp as RFC 3339 UTC with microseconds.
fn as_rfc3339_micros<S: Serializer>(ts: &DateTime<Utc>, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.collect_str(&ts.format("%Y-%m-%dT%H:%M:%S%.6fZ"))
}

/// Serialises a symbol list as a JSON array of strings.
fn as_str_list<S: Serializer>(symbols: &&[Arc<str>], serializer: S) -> Result<S::Ok, S::Error> {
    serializer.collect_seq(symbols.iter().map(|s| &**s))
}

/// The native Shoal JSON protocol.
mod shoal {
    use super::*;

    #[derive(Serialize)]
    #[serde(tag = "type", rename_all = "snake_case")]
    enum Out<'a> {
        Hello {
            feed: &'static str,
            version: u32,
            #[serde(serialize_with = "as_str_list")]
            symbols: &'a [Arc<str>],
        },
        Subscribed {
            #[serde(serialize_with = "as_str_list")]
            symbols: &'a [Arc<str>],
        },
        Unsubscribed {
            #[serde(serialize_with = "as_str_list")]
            symbols: &'a [Arc<str>],
        },
        Error {
            message: &'a str,
        },
        Trade {
            symbol: &'a str,
            seq: u64,
            trade_id: u64,
            #[serde(serialize_with = "as_display")]
            price: &'a dyn Display,
            #[serde(serialize_with = "as_display")]
            size: &'a dyn Display,
            side: Side,
            #[serde(serialize_with = "as_rfc3339_micros")]
            ts: DateTime<Utc>,
        },
        Heartbeat {
            seq: u64,
            #[serde(serialize_with = "as_rfc3339_micros")]
            ts: DateTime<Utc>,
        },
        /// Only used by the unknown-type fault.
        #[serde(rename = "sim_fault")]
        Fault {
            seq: u64,
            #[serde(serialize_with = "as_rfc3339_micros")]
            ts: DateTime<Utc>,
        },
    }

    fn out<'a>(frame: &ServerFrame<'a>) -> Out<'a> {
        match *frame {
            ServerFrame::Hello { symbols } => Out::Hello { feed: FEED_NAME, version: PROTOCOL_VERSION, symbols },
            ServerFrame::Subscribed { symbols } => Out::Subscribed { symbols },
            ServerFrame::Unsubscribed { symbols } => Out::Unsubscribed { symbols },
            ServerFrame::Error { message } => Out::Error { message },
            ServerFrame::Trade { seq, trade } => Out::Trade {
                symbol: &trade.symbol,
                seq,
                trade_id: trade.trade_id,
                price: &trade.price,
                size: &trade.size,
                side: trade.side,
                ts: trade.ts,
            },
            ServerFrame::Heartbeat { seq, ts } => Out::Heartbeat { seq, ts },
        }
    }

    fn to_text(out: &Out<'_>) -> Message {
        // Serialising these plain structs into a String cannot fail: no maps
        // with non-string keys, no failing custom serialisers.
        let text = serde_json::to_string(out).unwrap_or_else(|error| {
            tracing::error!(%error, "cannot encode simulator frame");
            String::from(r#"{"type":"error","message":"internal encoding error"}"#)
        });
        Message::text(text)
    }

    pub(super) fn encode(frame: &ServerFrame<'_>) -> Message {
        to_text(&out(frame))
    }

    pub(super) fn encode_malformed(kind: MalformedKind, replaced: &ServerFrame<'_>, fallback_symbol: &str) -> Message {
        let (seq, ts, trade) = match *replaced {
            ServerFrame::Trade { seq, trade } => (seq, trade.ts, Some(trade)),
            ServerFrame::Heartbeat { seq, ts } => (seq, ts, None),
            // Only data frames are ever replaced; encode anything else as is.
            _ => return encode(replaced),
        };
        match kind {
            MalformedKind::InvalidJson => Message::text(INVALID_JSON_TEXT),
            MalformedKind::InvalidPrice => to_text(&Out::Trade {
                symbol: trade.map_or(fallback_symbol, |t| &*t.symbol),
                seq,
                // Trade ids start at 1, so 0 marks a trade that never was.
                trade_id: trade.map_or(0, |t| t.trade_id),
                price: &"abc",
                size: &trade.map_or(rust_decimal::Decimal::new(1_000, 3), |t| t.size),
                side: trade.map_or(Side::Buy, |t| t.side),
                ts,
            }),
            MalformedKind::UnknownType => to_text(&Out::Fault { seq, ts }),
            MalformedKind::BinaryGarbage => Message::binary(GARBAGE_BYTES),
        }
    }

    #[derive(Deserialize)]
    #[serde(tag = "type", rename_all = "snake_case")]
    enum In {
        Subscribe { symbols: Vec<String> },
        Unsubscribe { symbols: Vec<String> },
    }

    pub(super) fn parse_request(text: &str) -> Result<ClientRequest, String> {
        match serde_json::from_str::<In>(text) {
            Ok(In::Subscribe { symbols }) => Ok(ClientRequest::Subscribe { symbols }),
            Ok(In::Unsubscribe { symbols }) => Ok(ClientRequest::Unsubscribe { symbols }),
            Err(error) => Err(format!(
                "invalid request ({error}); expected {{\"type\":\"subscribe\"|\"unsubscribe\",\"symbols\":[...]}}"
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use rust_decimal::Decimal;

    use super::*;

    fn trade() -> Trade {
        Trade {
            symbol_index: 0,
            symbol: "SIM-A".into(),
            trade_id: 123,
            price: Decimal::new(10_125, 2),
            size: Decimal::new(500, 3),
            side: Side::Buy,
            ts: DateTime::parse_from_rfc3339("2026-11-25T02:04:05.123456Z")
                .expect("valid timestamp")
                .with_timezone(&Utc),
        }
    }

    fn text(message: Message) -> String {
        match message {
            Message::Text(text) => text.as_str().to_owned(),
            other => panic!("expected a text frame, got {other:?}"),
        }
    }

    #[test]
    fn encodes_documented_frames_exactly() {
        let symbols: Vec<Arc<str>> = vec!["SIM-A".into(), "SIM-B".into()];
        let f = Format::Shoal;
        assert_eq!(
            text(f.encode(&ServerFrame::Hello { symbols: &symbols })),
            r#"{"type":"hello","feed":"shoal-sim","version":1,"symbols":["SIM-A","SIM-B"]}"#
        );
        assert_eq!(
            text(f.encode(&ServerFrame::Subscribed { symbols: &symbols[..1] })),
            r#"{"type":"subscribed","symbols":["SIM-A"]}"#
        );
        assert_eq!(
            text(f.encode(&ServerFrame::Unsubscribed { symbols: &[] })),
            r#"{"type":"unsubscribed","symbols":[]}"#
        );
        assert_eq!(
            text(f.encode(&ServerFrame::Error { message: "unknown symbol: X" })),
            r#"{"type":"error","message":"unknown symbol: X"}"#
        );
        let trade = trade();
        assert_eq!(
            text(f.encode(&ServerFrame::Trade { seq: 456, trade: &trade })),
            r#"{"type":"trade","symbol":"SIM-A","seq":456,"trade_id":123,"price":"101.25","size":"0.500","side":"buy","ts":"2026-11-25T02:04:05.123456Z"}"#
        );
        assert_eq!(
            text(f.encode(&ServerFrame::Heartbeat { seq: 7, ts: trade.ts })),
            r#"{"type":"heartbeat","seq":7,"ts":"2026-11-25T02:04:05.123456Z"}"#
        );
    }

    #[test]
    fn encodes_malformed_frames() {
        let trade = trade();
        let frame = ServerFrame::Trade { seq: 9, trade: &trade };
        let f = Format::Shoal;
        assert_eq!(text(f.encode_malformed(MalformedKind::InvalidJson, &frame, "SIM-A")), INVALID_JSON_TEXT);
        assert_eq!(
            text(f.encode_malformed(MalformedKind::InvalidPrice, &frame, "SIM-A")),
            r#"{"type":"trade","symbol":"SIM-A","seq":9,"trade_id":123,"price":"abc","size":"0.500","side":"buy","ts":"2026-11-25T02:04:05.123456Z"}"#
        );
        let heartbeat = ServerFrame::Heartbeat { seq: 10, ts: trade.ts };
        assert_eq!(
            text(f.encode_malformed(MalformedKind::InvalidPrice, &heartbeat, "SIM-Z")),
            r#"{"type":"trade","symbol":"SIM-Z","seq":10,"trade_id":0,"price":"abc","size":"1.000","side":"buy","ts":"2026-11-25T02:04:05.123456Z"}"#
        );
        assert_eq!(
            text(f.encode_malformed(MalformedKind::UnknownType, &frame, "SIM-A")),
            r#"{"type":"sim_fault","seq":9,"ts":"2026-11-25T02:04:05.123456Z"}"#
        );
        assert_eq!(f.encode_malformed(MalformedKind::BinaryGarbage, &frame, "SIM-A"), Message::binary(GARBAGE_BYTES));
        assert!(String::from_utf8(GARBAGE_BYTES.to_vec()).is_err());
        assert!(serde_json::from_str::<serde_json::Value>(INVALID_JSON_TEXT).is_err());
    }

    #[test]
    fn malformed_kinds_cycle() {
        let kinds: Vec<MalformedKind> = (1..=8).map(MalformedKind::for_occurrence).collect();
        assert_eq!(kinds[..4], MalformedKind::ALL);
        assert_eq!(kinds[4..], MalformedKind::ALL);
    }

    #[test]
    fn parses_requests() {
        let f = Format::Shoal;
        assert_eq!(
            f.parse_request(r#"{"type":"subscribe","symbols":["SIM-A","*"]}"#),
            Ok(ClientRequest::Subscribe { symbols: vec!["SIM-A".into(), "*".into()] })
        );
        assert_eq!(
            f.parse_request(r#"{"symbols":[],"type":"unsubscribe","extra":1}"#),
            Ok(ClientRequest::Unsubscribe { symbols: vec![] })
        );
        for bad in ["", "hello", "{}", r#"{"type":"nope"}"#, r#"{"type":"subscribe"}"#, "[1]"] {
            let error = f.parse_request(bad).expect_err(bad);
            assert!(error.starts_with("invalid request"), "{error}");
        }
    }
}
