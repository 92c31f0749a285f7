//! State derived from ticks and the rules that turn it into commands.
//!
//! Pure logic: no I/O, no clocks. Time is the exchange timestamp carried by
//! each tick, so replaying the ticks topic reproduces the same decisions.

use std::collections::{HashMap, VecDeque};

use chrono::{DateTime, Duration, Utc};
use rust_decimal::Decimal;
use rust_decimal::prelude::ToPrimitive;
use shoal_protocol::messages::{Event, MarketTick, kinds};
use shoal_protocol::payloads::{EvaluateStrategy, RaiseAlert, ScoreTransaction};

use crate::settings::RulesSettings;

/// A command the rules want issued: kind, key and payload. The decisions
/// stage adds id, sequence number and timestamps.
#[derive(Debug, Clone, PartialEq)]
pub struct Draft {
    /// Command kind.
    pub kind: String,
    /// Entity key.
    pub key: String,
    /// Payload.
    pub payload: serde_json::Value,
}

#[derive(Debug, Default)]
struct SymbolState {
    window: VecDeque<(DateTime<Utc>, Decimal)>,
    last_move_command: Option<DateTime<Utc>>,
}

/// Per-symbol rolling state and the market rules.
#[derive(Debug)]
pub struct MarketRules {
    settings: RulesSettings,
    symbols: HashMap<String, SymbolState>,
    /// Last reading per sensor (`<key>/<metric>`), for threshold crossings.
    readings: HashMap<String, Decimal>,
}

/// Attributes of an event mapped to `raise_alert` (an IoT sensor reading):
/// the value read and the threshold whose crossing raises the alert.
#[derive(Debug, Clone, serde::Deserialize)]
struct SensorReading {
    #[serde(with = "rust_decimal::serde::str")]
    value: Decimal,
    #[serde(with = "rust_decimal::serde::str")]
    threshold: Decimal,
    #[serde(default)]
    metric: Option<String>,
}

/// Prices kept per symbol at most, so a very fast feed cannot grow the
/// window without bound.
const MAX_WINDOW_SAMPLES: usize = 4_096;

impl MarketRules {
    /// Creates empty state.
    pub fn new(settings: RulesSettings) -> Self {
        Self { settings, symbols: HashMap::new(), readings: HashMap::new() }
    }

    /// Symbols with state.
    pub fn symbols(&self) -> usize {
        self.symbols.len()
    }

    /// Applies a tick and returns the commands it triggers.
    pub fn on_tick(&mut self, tick: &MarketTick) -> Vec<Draft> {
        let s = &self.settings;
        let state = self.symbols.entry(tick.symbol.clone()).or_default();
        let previous = state.window.back().map(|(_, p)| *p);
        state.window.push_back((tick.exchange_ts, tick.price));
        let horizon = tick.exchange_ts - Duration::seconds(i64::try_from(s.window_secs).unwrap_or(i64::MAX));
        while state.window.len() > MAX_WINDOW_SAMPLES || state.window.front().is_some_and(|(ts, _)| *ts < horizon) {
            state.window.pop_front();
        }
        let mut drafts = Vec::new();

        if let Some(previous) = previous
            && let Some(level) = crossed_level(previous, tick.price, s.level_step)
        {
            let payload =
                RaiseAlert { symbol: tick.symbol.clone(), level, previous_price: previous, price: tick.price };
            drafts.push(draft(kinds::RAISE_ALERT, &tick.symbol, &payload));
        }

        let first = state.window.front().map(|(_, p)| *p).unwrap_or(tick.price);
        let change_bps = if first.is_zero() {
            0
        } else {
            ((tick.price - first) / first * Decimal::from(10_000)).round().to_i64().unwrap_or(0)
        };
        let cooled = state.last_move_command.is_none_or(|at| {
            tick.exchange_ts - at >= Duration::seconds(i64::try_from(s.move_cooldown_secs).unwrap_or(i64::MAX))
        });
        if change_bps.unsigned_abs() >= u64::from(s.move_threshold_bps) && cooled {
            state.last_move_command = Some(tick.exchange_ts);
            let payload = EvaluateStrategy {
                symbol: tick.symbol.clone(),
                window_secs: s.window_secs,
                prices: state.window.iter().map(|(_, p)| *p).collect(),
                change_bps,
            };
            drafts.push(draft(kinds::EVALUATE_STRATEGY, &tick.symbol, &payload));
        }
        drafts
    }

    /// Maps a business event to a command through `rules.events`.
    /// `Ok(None)`: no rule for this event type, or (for `raise_alert`) the
    /// reading crossed no threshold. `Err`: a rule applies but the event's
    /// attributes do not fit the command's payload.
    ///
    /// - `score_transaction`: the attributes are the transaction.
    /// - `raise_alert`: the attributes are a sensor reading `{value,
    ///   threshold, metric?}` (decimal strings). An alert is issued when the
    ///   reading crosses the threshold from the sensor's previous reading (in
    ///   either direction), or when the first reading is at or above it. The
    ///   alert's symbol is `<key>/<metric>` (or the key), its level the
    ///   threshold, its prices the previous and current reading.
    /// - any other kind: `{event_id, event_type, attributes}`.
    pub fn on_event(&mut self, event: &Event) -> Result<Option<Draft>, String> {
        let Some(kind) = self.settings.events.get(&event.event_type) else {
            return Ok(None);
        };
        let payload = if kind == kinds::SCORE_TRANSACTION {
            let mut attributes = event.attributes.clone();
            if let Some(map) = attributes.as_object_mut() {
                map.insert("event_id".into(), serde_json::json!(event.id));
                map.entry("account").or_insert_with(|| serde_json::json!(event.key));
            }
            let typed: ScoreTransaction = serde_json::from_value(attributes)
                .map_err(|e| format!("{} event does not fit {kind}: {e}", event.event_type))?;
            serde_json::to_value(typed).map_err(|e| e.to_string())?
        } else if kind == kinds::RAISE_ALERT {
            let reading: SensorReading = serde_json::from_value(event.attributes.clone())
                .map_err(|e| format!("{} event does not fit {kind} (value, threshold): {e}", event.event_type))?;
            let symbol = match &reading.metric {
                Some(metric) => format!("{}/{metric}", event.key),
                None => event.key.clone(),
            };
            let previous = self.readings.insert(symbol.clone(), reading.value);
            let (value, threshold) = (reading.value, reading.threshold);
            let crossed = match previous {
                Some(p) => (p < threshold && value >= threshold) || (p >= threshold && value < threshold),
                None => value >= threshold,
            };
            if !crossed {
                return Ok(None);
            }
            let alert =
                RaiseAlert { symbol, level: threshold, previous_price: previous.unwrap_or(value), price: value };
            serde_json::to_value(alert).map_err(|e| e.to_string())?
        } else {
            serde_json::json!({"event_id": event.id, "event_type": event.event_type, "attributes": event.attributes})
        };
        Ok(Some(Draft { kind: kind.clone(), key: event.key.clone(), payload }))
    }
}

fn draft<T: serde::Serialize>(kind: &str, key: &str, payload: &T) -> Draft {
    // The payload types serialise infallibly (strings, numbers, vectors).
    Draft { kind: kind.into(), key: key.into(), payload: serde_json::to_value(payload).unwrap_or_default() }
}

/// The multiple of `step` crossed going from `from` to `to`, nearest to `to`.
/// Landing exactly on a level counts as crossing it.
pub fn crossed_level(from: Decimal, to: Decimal, step: Decimal) -> Option<Decimal> {
    if step <= Decimal::ZERO || from == to {
        return None;
    }
    let mut level = if to > from { (to / step).floor() * step } else { (to / step).ceil() * step };
    // Quote the level like the prices (100.00, not 100.0).
    level.rescale(to.scale().max(step.scale()));
    let crossed = if to > from { level > from } else { level < from };
    crossed.then_some(level)
}

#[cfg(test)]
mod tests {
    use super::*;
    use shoal_protocol::messages::SCHEMA_VERSION;

    fn d(s: &str) -> Decimal {
        s.parse().unwrap()
    }

    fn tick(secs: i64, price: &str) -> MarketTick {
        let ts = DateTime::from_timestamp(1_700_000_000 + secs, 0).unwrap();
        MarketTick {
            schema_version: SCHEMA_VERSION,
            source: "test".into(),
            symbol: "SIM-A".into(),
            price: d(price),
            size: d("1"),
            side: None,
            trade_id: None,
            sequence: None,
            exchange_ts: ts,
            received_at: ts,
            channel: None,
        }
    }

    fn rules() -> MarketRules {
        MarketRules::new(RulesSettings {
            window_secs: 10,
            move_threshold_bps: 100,
            move_cooldown_secs: 5,
            level_step: d("5"),
            ..RulesSettings::default()
        })
    }

    #[test]
    fn level_crossings() {
        assert_eq!(crossed_level(d("99.5"), d("100.2"), d("1")), Some(d("100")));
        assert_eq!(crossed_level(d("100.2"), d("99.9"), d("1")), Some(d("100")));
        assert_eq!(crossed_level(d("100.2"), d("100.9"), d("1")), None);
        assert_eq!(crossed_level(d("99"), d("100"), d("1")), Some(d("100")));
        assert_eq!(crossed_level(d("100"), d("100.5"), d("1")), None, "leaving a level is not crossing");
        assert_eq!(crossed_level(d("97.5"), d("103.2"), d("1")), Some(d("103")), "nearest to the new price");
        assert_eq!(crossed_level(d("99"), d("101"), d("0")), None, "step 0 disables");
        assert_eq!(crossed_level(d("100.09"), d("99.95"), d("0.20")).unwrap().to_string(), "100.00");
    }

    #[test]
    fn a_large_move_within_the_window_triggers_one_strategy_command() {
        let mut r = rules();
        assert!(r.on_tick(&tick(0, "100.00")).is_empty());
        assert!(r.on_tick(&tick(1, "100.50")).is_empty());
        let drafts = r.on_tick(&tick(2, "101.20"));
        assert_eq!(drafts.len(), 1, "{drafts:?}");
        assert_eq!(drafts[0].kind, kinds::EVALUATE_STRATEGY);
        assert_eq!(drafts[0].payload["change_bps"], 120);
        assert_eq!(drafts[0].payload["prices"], serde_json::json!(["100.00", "100.50", "101.20"]));
        assert!(r.on_tick(&tick(3, "101.30")).is_empty(), "cooldown");
    }

    #[test]
    fn old_prices_leave_the_window() {
        let mut r = rules();
        r.on_tick(&tick(0, "100.00"));
        // 20 s later the 100.00 sample is outside the 10 s window: no move.
        assert!(r.on_tick(&tick(20, "101.50")).is_empty());
    }

    #[test]
    fn crossing_a_level_raises_an_alert() {
        let mut r = rules();
        r.on_tick(&tick(0, "104.90"));
        let drafts = r.on_tick(&tick(1, "105.10"));
        assert_eq!(drafts.len(), 1);
        assert_eq!(drafts[0].kind, kinds::RAISE_ALERT);
        assert_eq!(drafts[0].payload["level"], "105.00", "quoted like the price");
    }

    #[test]
    fn sensor_readings_raise_an_alert_when_they_cross_the_threshold() {
        let mut r = MarketRules::new(RulesSettings {
            events: [("sensor_reading".to_string(), kinds::RAISE_ALERT.to_string())].into(),
            ..RulesSettings::default()
        });
        let mut reading = |value: &str| {
            let event = Event {
                schema_version: SCHEMA_VERSION,
                id: uuid::Uuid::nil(),
                event_type: "sensor_reading".into(),
                key: "boiler-7".into(),
                occurred_at: Utc::now(),
                attributes: serde_json::json!({"metric": "temperature", "value": value, "threshold": "80.0"}),
            };
            r.on_event(&event)
        };
        assert_eq!(reading("75.5").unwrap(), None, "below the threshold");
        assert_eq!(reading("79.9").unwrap(), None);
        let alert = reading("80.25").unwrap().expect("crossed up");
        assert_eq!((alert.kind.as_str(), alert.key.as_str()), (kinds::RAISE_ALERT, "boiler-7"));
        assert_eq!(
            alert.payload,
            serde_json::json!({"symbol": "boiler-7/temperature", "level": "80.0", "previous_price": "79.9", "price": "80.25"})
        );
        assert_eq!(reading("81").unwrap(), None, "still above: no new alert");
        assert!(reading("79").unwrap().is_some(), "crossing back down alerts too");
        assert!(reading("hot").is_err(), "not a decimal");
    }

    #[test]
    fn card_transactions_become_scoring_commands_and_bad_ones_are_errors() {
        let mut r = rules();
        let mut event = Event {
            schema_version: SCHEMA_VERSION,
            id: uuid::Uuid::nil(),
            event_type: "card_transaction".into(),
            key: "acct-7".into(),
            occurred_at: Utc::now(),
            attributes: serde_json::json!({"amount": "42.00", "currency": "EUR", "country": "FR", "card_present": true}),
        };
        let draft = r.on_event(&event).unwrap().unwrap();
        assert_eq!(draft.kind, kinds::SCORE_TRANSACTION);
        assert_eq!(draft.key, "acct-7");
        assert_eq!(draft.payload["account"], "acct-7");
        event.attributes = serde_json::json!({"amount": "lots"});
        assert!(r.on_event(&event).is_err());
        event.event_type = "unmapped".into();
        assert_eq!(r.on_event(&event).unwrap(), None);
    }
}
