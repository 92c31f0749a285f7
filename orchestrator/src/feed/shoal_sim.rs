//! Client side of the bundled simulator's wire format (documented by the
//! `shoal-sim` crate): the subscribe request and frame parsing into
//! [`MarketTick`]s.

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use serde::Deserialize;
use shoal_protocol::messages::{MarketTick, SCHEMA_VERSION, Side};

use super::protocol::{self, Exchange, FrameParser, Parsed};

/// Source name written into ticks from this feed.
pub const SOURCE: &str = "shoal-sim";

/// The simulator's own format: no channels, `*` for every symbol.
pub(crate) const EXCHANGE: Exchange = Exchange {
    source: SOURCE,
    channels: &[],
    default_channels: &[],
    example_symbol: None,
    subscribe: |to| vec![subscribe_request(to.symbols)],
    unsubscribe: |to| vec![serde_json::json!({"type": "unsubscribe", "symbols": to.symbols}).to_string()],
    parser: || Box::<Parser>::default(),
};

/// A frame received from the simulator.
#[derive(Debug, Clone, PartialEq)]
pub enum Frame {
    /// Greeting with the symbols on offer.
    Hello {
        /// Symbols the feed offers.
        symbols: Vec<String>,
    },
    /// Subscription confirmed.
    Subscribed {
        /// Symbols now subscribed.
        symbols: Vec<String>,
    },
    /// A trade, normalised.
    Trade(MarketTick),
    /// Liveness; carries a sequence number.
    Heartbeat {
        /// Feed sequence number.
        seq: u64,
    },
    /// Any other control frame (unsubscribed, error) worth logging only.
    Control(String),
}

/// Why a frame was rejected.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    /// Not JSON or missing/invalid fields (including invalid decimals).
    #[error("malformed frame: {0}")]
    Malformed(#[from] serde_json::Error),
    /// Valid JSON with a `type` this client does not know.
    #[error("unexpected frame type {0:?}")]
    UnknownType(String),
    /// A binary frame; the format is text only.
    #[error("unexpected binary frame of {0} bytes")]
    Binary(usize),
}

#[derive(Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum Wire {
    Hello {
        symbols: Vec<String>,
    },
    Subscribed {
        symbols: Vec<String>,
    },
    Unsubscribed {
        symbols: Vec<String>,
    },
    Error {
        message: String,
    },
    Heartbeat {
        seq: u64,
    },
    Trade {
        symbol: String,
        seq: u64,
        trade_id: u64,
        #[serde(with = "rust_decimal::serde::str")]
        price: Decimal,
        #[serde(with = "rust_decimal::serde::str")]
        size: Decimal,
        side: Side,
        ts: DateTime<Utc>,
    },
}

/// The subscribe request for `symbols` (`*` for all).
pub fn subscribe_request(symbols: &[String]) -> String {
    serde_json::json!({"type": "subscribe", "symbols": symbols}).to_string()
}

/// Parses one text frame.
pub fn parse(text: &str, received_at: DateTime<Utc>) -> Result<Frame, FrameError> {
    #[derive(Deserialize)]
    struct TypeOnly {
        #[serde(rename = "type")]
        kind: String,
    }
    let wire: Wire = match serde_json::from_str(text) {
        Ok(w) => w,
        Err(error) => {
            // Distinguish "unknown type" from "broken frame" for the counters.
            return Err(match serde_json::from_str::<TypeOnly>(text) {
                Ok(t)
                    if !["hello", "subscribed", "unsubscribed", "error", "heartbeat", "trade"]
                        .contains(&t.kind.as_str()) =>
                {
                    FrameError::UnknownType(t.kind)
                }
                _ => FrameError::Malformed(error),
            });
        }
    };
    Ok(match wire {
        Wire::Hello { symbols } => Frame::Hello { symbols },
        Wire::Subscribed { symbols } => Frame::Subscribed { symbols },
        Wire::Unsubscribed { symbols } => Frame::Control(format!("unsubscribed {symbols:?}")),
        Wire::Error { message } => Frame::Control(format!("feed error: {message}")),
        Wire::Heartbeat { seq } => Frame::Heartbeat { seq },
        Wire::Trade { symbol, seq, trade_id, price, size, side, ts } => Frame::Trade(MarketTick {
            schema_version: SCHEMA_VERSION,
            source: SOURCE.into(),
            symbol,
            price,
            size,
            side: Some(side),
            trade_id: Some(trade_id.to_string()),
            sequence: Some(seq),
            exchange_ts: ts,
            received_at,
            channel: None,
        }),
    })
}

/// Per-connection state: the simulator numbers every data frame of a
/// connection, so a skipped number is a gap.
#[derive(Debug, Default)]
pub struct Parser {
    last_seq: Option<u64>,
}

impl FrameParser for Parser {
    fn parse(
        &mut self,
        text: &str,
        received_at: DateTime<Utc>,
        out: &mut Vec<Parsed>,
    ) -> Result<(), protocol::FrameError> {
        let frame = parse(text, received_at).map_err(|error| match error {
            FrameError::UnknownType(t) => protocol::FrameError::UnknownType(t),
            FrameError::Binary(n) => protocol::FrameError::Binary(n),
            FrameError::Malformed(e) => protocol::FrameError::Malformed(e.to_string()),
        })?;
        let seq = match &frame {
            Frame::Trade(tick) => tick.sequence,
            Frame::Heartbeat { seq } => Some(*seq),
            _ => None,
        };
        if let Some(seq) = seq {
            // After u64::MAX no number is expected: nothing is a gap.
            if let Some(expected) = self.last_seq.and_then(|prev| prev.checked_add(1))
                && seq > expected
            {
                out.push(Parsed::Gap { symbol: "*".into(), expected, received: seq });
            }
            self.last_seq = Some(seq);
        }
        out.push(match frame {
            Frame::Trade(tick) => Parsed::Trade { tick, continuity: false },
            Frame::Heartbeat { .. } => Parsed::Heartbeat { symbol: None, last_trade_id: None },
            Frame::Subscribed { symbols } => Parsed::Subscribed(format!("{symbols:?}")),
            Frame::Hello { symbols } => Parsed::Info(format!("hello, symbols {symbols:?}")),
            Frame::Control(text) => Parsed::ExchangeError(text),
        });
        Ok(())
    }

    /// A malformed frame still consumed a sequence number.
    fn on_malformed(&mut self) {
        self.last_seq = self.last_seq.map(|s| s.saturating_add(1));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trade_is_normalised_with_exact_decimals() {
        let now = Utc::now();
        let frame = parse(
            r#"{"type":"trade","symbol":"SIM-A","seq":456,"trade_id":123,"price":"101.25","size":"0.500","side":"buy","ts":"2026-11-25T02:04:05.123456Z"}"#,
            now,
        )
        .unwrap();
        let Frame::Trade(t) = frame else { panic!("not a trade: {frame:?}") };
        assert_eq!(t.price.to_string(), "101.25");
        assert_eq!(t.size.to_string(), "0.500");
        assert_eq!(t.trade_id.as_deref(), Some("123"));
        assert_eq!(t.sequence, Some(456));
        assert_eq!(t.side, Some(Side::Buy));
        assert_eq!(t.exchange_ts.to_rfc3339(), "2026-11-25T02:04:05.123456+00:00");
    }

    #[test]
    fn each_kind_of_garbage_is_an_error() {
        let now = Utc::now();
        assert!(matches!(parse(r#"{"type":"trade","symbol":"#, now), Err(FrameError::Malformed(_))));
        assert!(matches!(
            parse(
                r#"{"type":"trade","symbol":"S","seq":1,"trade_id":0,"price":"abc","size":"1","side":"buy","ts":"2026-11-25T02:04:05Z"}"#,
                now
            ),
            Err(FrameError::Malformed(_))
        ));
        assert!(
            matches!(parse(r#"{"type":"sim_fault","seq":3}"#, now), Err(FrameError::UnknownType(t)) if t == "sim_fault")
        );
    }

    #[test]
    fn sequence_gaps_are_reported_and_malformed_frames_consume_a_number() {
        let mut parser = Parser::default();
        let mut out = Vec::new();
        let heartbeat = |seq: u64| format!(r#"{{"type":"heartbeat","seq":{seq},"ts":"2026-11-25T02:04:05Z"}}"#);
        for seq in [1, 2, 3] {
            parser.parse(&heartbeat(seq), Utc::now(), &mut out).unwrap();
        }
        parser.on_malformed();
        parser.parse(&heartbeat(5), Utc::now(), &mut out).unwrap();
        assert!(!out.iter().any(|p| matches!(p, Parsed::Gap { .. })), "4 was the malformed frame");
        parser.parse(&heartbeat(9), Utc::now(), &mut out).unwrap();
        assert!(out.iter().any(|p| matches!(p, Parsed::Gap { expected: 6, received: 9, .. })), "{out:?}");
    }

    /// Found by fuzzing (feed_shoal_sim): a sequence number of u64::MAX
    /// overflowed `prev + 1` on the next numbered or malformed frame.
    #[test]
    fn the_highest_sequence_number_does_not_overflow() {
        let mut parser = Parser::default();
        let mut out = Vec::new();
        let heartbeat = |seq: u64| format!(r#"{{"type":"heartbeat","seq":{seq},"ts":"2026-11-25T02:04:05Z"}}"#);
        parser.parse(&heartbeat(u64::MAX), Utc::now(), &mut out).unwrap();
        parser.parse(&heartbeat(1), Utc::now(), &mut out).unwrap();
        parser.parse(&heartbeat(u64::MAX - 1), Utc::now(), &mut out).unwrap();
        parser.on_malformed();
        parser.on_malformed();
        parser.parse(&heartbeat(u64::MAX), Utc::now(), &mut out).unwrap();
        let gaps: Vec<_> = out.iter().filter(|p| matches!(p, Parsed::Gap { .. })).collect();
        assert_eq!(gaps, [&Parsed::Gap { symbol: "*".into(), expected: 2, received: u64::MAX - 1 }]);
    }

    #[test]
    fn control_frames_parse() {
        let now = Utc::now();
        assert_eq!(
            parse(r#"{"type":"heartbeat","seq":9,"ts":"2026-11-25T02:04:05Z"}"#, now).unwrap(),
            Frame::Heartbeat { seq: 9 }
        );
        assert!(matches!(
            parse(r#"{"type":"hello","feed":"shoal-sim","version":1,"symbols":["A"]}"#, now).unwrap(),
            Frame::Hello { .. }
        ));
    }
}
