//! Feed frames, one target per exchange: the input is a connection's text
//! frames, one per line, fed to one parser (`FeedFormat::parser`, with its
//! per-connection state) the way ingest does: a rejected frame clears the
//! items and calls `on_malformed`; accepted items go through ingest's
//! deduplication and gap detection (`feed::dedupe`).

use chrono::{DateTime, Utc};
use shoal_orchestrator::feed::FeedFormat;
use shoal_orchestrator::feed::dedupe::{self, Dedupe, Verdict};
use shoal_orchestrator::feed::protocol::{FrameError, Parsed};

use crate::round_trip;

/// When every frame is received (a fixed time: inputs replay identically).
fn received_at() -> DateTime<Utc> {
    DateTime::from_timestamp_millis(1_767_225_600_000).unwrap()
}

/// Parses `data` as frames of `format`.
pub fn frames(format: FeedFormat, data: &[u8]) {
    // WebSocket text frames are UTF-8 by the protocol.
    let Ok(text) = std::str::from_utf8(data) else { return };
    let mut parser = format.parser();
    let mut dedupe = Dedupe::new();
    let mut items = Vec::new();
    for frame in text.split('\n') {
        match parser.parse(frame, received_at(), &mut items) {
            Ok(()) => {
                for item in items.drain(..) {
                    check(format, item, &mut dedupe);
                }
            }
            Err(error) => {
                if let FrameError::Binary(_) = error {
                    panic!("a text frame reported as binary: {frame:?}");
                }
                // Ingest drops whatever the frame had produced.
                items.clear();
                parser.on_malformed();
            }
        }
    }
}

/// One item, as ingest handles it.
fn check(format: FeedFormat, item: Parsed, dedupe: &mut Dedupe) {
    let source = format.source_name();
    match item {
        Parsed::Trade { tick, continuity } => {
            assert_eq!(tick.source, source);
            assert_eq!(tick.received_at, received_at());
            round_trip(&tick);
            if let Some(id) = tick.trade_id.as_deref().and_then(|t| t.parse::<u64>().ok()) {
                let space = dedupe::id_space(&tick);
                if let Verdict::New { gap: Some((expected, received)) } =
                    dedupe.trade(&tick.source, &tick.symbol, space, id, continuity)
                {
                    assert!(received > expected, "gap {expected}..{received}");
                }
            }
        }
        Parsed::Book(top) => {
            assert_eq!(top.source, source);
            round_trip(&top);
        }
        Parsed::Heartbeat { symbol: Some(symbol), last_trade_id: Some(last) } => {
            if let Some((expected, received)) = dedupe.announced(source, &symbol, "trade", last) {
                assert!(received >= expected, "gap {expected}..{received}");
            }
        }
        Parsed::Gap { expected, received, .. } => assert!(received > expected, "gap {expected}..{received}"),
        Parsed::Heartbeat { .. }
        | Parsed::Stale(_)
        | Parsed::Subscribed(_)
        | Parsed::Info(_)
        | Parsed::ExchangeError(_) => {}
    }
}
