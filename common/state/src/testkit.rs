//! Small hand-built records for the tests.

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use shoal_protocol::messages::{
    BookTop, Command, CommandResult, DataQuality, DataQualityKind, Event, MarketTick, ResultStatus, SCHEMA_VERSION,
    Side, kinds,
};
use uuid::Uuid;

use crate::{Input, Provenance, Record};

pub fn d(s: &str) -> Decimal {
    s.parse().unwrap()
}

/// `secs` seconds after the Unix epoch.
pub fn ts(secs: i64) -> DateTime<Utc> {
    DateTime::from_timestamp(secs, 0).unwrap()
}

/// `millis` milliseconds after the Unix epoch.
pub fn ts_ms(millis: i64) -> DateTime<Utc> {
    DateTime::from_timestamp_millis(millis).unwrap()
}

pub fn prov(topic: &str, partition: i32, offset: i64) -> Provenance {
    Provenance::new(topic, partition, offset)
}

pub fn input(topic: &str, partition: i32, offset: i64, record: Record) -> Input {
    Input { provenance: prov(topic, partition, offset), record }
}

/// A trade at `millis` after the epoch.
pub fn tick(symbol: &str, millis: i64, price: &str, size: &str) -> MarketTick {
    MarketTick {
        schema_version: SCHEMA_VERSION,
        source: "test".into(),
        symbol: symbol.into(),
        price: d(price),
        size: d(size),
        side: Some(Side::Buy),
        trade_id: Some(millis.to_string()),
        sequence: None,
        exchange_ts: ts_ms(millis),
        received_at: ts_ms(millis),
        channel: None,
    }
}

pub fn book_top(symbol: &str, secs: i64, bid: &str, ask: &str) -> BookTop {
    BookTop {
        schema_version: SCHEMA_VERSION,
        source: "test".into(),
        symbol: symbol.into(),
        bid_price: d(bid),
        bid_size: d("1"),
        ask_price: d(ask),
        ask_size: d("2"),
        sequence: None,
        exchange_ts: Some(ts(secs)),
        received_at: ts(secs),
    }
}

pub fn quality(symbol: &str, secs: i64) -> DataQuality {
    DataQuality {
        schema_version: SCHEMA_VERSION,
        source: "test".into(),
        symbol: symbol.into(),
        kind: DataQualityKind::SequenceGap,
        expected: Some(3),
        received: Some(5),
        missing: Some(2),
        detail: "skipped".into(),
        detected_at: ts(secs),
    }
}

/// An event whose id is derived from its type, key and time, so the same
/// arguments make the same event (a redelivery).
pub fn event(event_type: &str, key: &str, secs: i64, attributes: serde_json::Value) -> Event {
    let name = format!("{event_type}/{key}/{secs}");
    let hash = name.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3));
    Event {
        schema_version: SCHEMA_VERSION,
        id: Uuid::from_u64_pair(hash, secs as u64),
        event_type: event_type.into(),
        key: key.into(),
        occurred_at: ts(secs),
        attributes,
    }
}

/// A `score_transaction` command with id `n`, issued at `secs`.
pub fn command(n: u128, key: &str, seq: u64, secs: i64) -> Command {
    Command {
        schema_version: SCHEMA_VERSION,
        id: Uuid::from_u128(n),
        kind: kinds::SCORE_TRANSACTION.into(),
        key: key.into(),
        seq,
        issued_at: ts(secs),
        deadline: Some(ts(secs + 60)),
        payload: serde_json::json!({}),
    }
}

/// `cmd`'s result, started and finished at the given milliseconds.
pub fn result(cmd: &Command, status: ResultStatus, started_ms: i64, finished_ms: i64) -> CommandResult {
    CommandResult::answering(cmd, "w1", status, serde_json::json!({}), (ts_ms(started_ms), ts_ms(finished_ms)))
}
