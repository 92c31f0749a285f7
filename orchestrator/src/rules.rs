//! The decision rules: they read the derived state ([`shoal_state`]) and
//! turn inputs into commands.
//!
//! Pure logic: no I/O, no clocks. Time is the event time carried by each
//! record, so replaying the input topics reproduces the same decisions.

mod device;

use chrono::Duration;
use rust_decimal::Decimal;
use rust_decimal::prelude::{FromPrimitive, ToPrimitive};
use shoal_protocol::messages::{Event, MarketTick, kinds};
use shoal_protocol::payloads::{
    AccountHistory, COMMAND_REQUESTED, CommandRequest, EvaluateStrategy, RaiseAlert, ScoreTransaction, check_payload,
};
use shoal_state::entities::DEFAULT_METRIC;
use shoal_state::{Applied, EntityKind, Ignored, Input, Provenance, Record, State};

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use shoal_config::{SettingsError, at_least, non_empty};

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
    /// Who asked for it, when a person did (a `command_requested` event).
    pub requested_by: Option<shoal_protocol::payloads::Requester>,
}

/// What applying one input to the state decided.
#[derive(Debug, Default)]
pub struct Decision {
    /// What the input changed in the state.
    pub applied: Applied,
    /// Commands to issue.
    pub drafts: Vec<Draft>,
    /// Set when a rule applies but the input does not fit its command:
    /// (reason, detail). The input is still applied to the state.
    pub rejected: Option<(&'static str, String)>,
    /// Held commands whose approval the input settled as approved: issue
    /// them ([`crate::approvals`]).
    pub released: Vec<shoal_protocol::approvals::HeldCommand>,
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

/// The mark a symbol keeps of the last `evaluate_strategy` it fired (the
/// move rule's cooldown).
pub const MOVE_MARK: &str = "move_rule";

/// Applies one input to `state` and runs the rules over the result.
///
/// Deterministic: the rules read the state (and the memory they keep in it,
/// its marks) and the input, never a clock, so replaying a partition's
/// inputs from the beginning makes the same decisions and the same state.
/// An input the state already applied (a replay) decides nothing.
pub fn decide(state: &mut State, rules: &RulesSettings, input: &Input) -> Decision {
    let before = previous_value(state, &input.record);
    let was_pending = crate::approvals::pending_before(state, &input.record);
    let applied = state.apply(input);
    let mut decision = Decision { applied, ..Decision::default() };
    if matches!(decision.applied.ignored, Some(Ignored::Replay { .. })) {
        return decision;
    }
    match &input.record {
        Record::Tick(tick) => decision.drafts = on_tick(state, rules, tick, before, &input.provenance),
        Record::Event(event) => match on_event(state, rules, event, before) {
            Ok(draft) => decision.drafts.extend(draft),
            Err(error) => decision.rejected = Some(("invalid_event_attributes", error)),
        },
        Record::Approval(event) if was_pending => {
            decision.released.extend(crate::approvals::released(state, event));
        }
        _ => {}
    }
    // An input the state cannot apply decides nothing and is dead-lettered
    // (with the rule's own reason when its rule rejected it too).
    if let Some(Ignored::Invalid { reason }) = &decision.applied.ignored {
        decision.drafts.clear();
        if decision.rejected.is_none() {
            decision.rejected = Some(("invalid_state_input", reason.clone()));
        }
    }
    decision
}

/// The account's history around a transaction the state has just applied
/// (`event_id`, in `country`): the features `score_transaction` scores on.
fn account_history(state: &State, key: &str, event_id: uuid::Uuid, country: &str) -> Option<AccountHistory> {
    let account = state.account(key)?;
    let before: Vec<f64> =
        account.recent.iter().filter(|t| t.event_id != event_id).filter_map(|t| t.amount.to_f64()).collect();
    let n = before.len();
    let (mean_amount, std_amount) = if n == 0 {
        (None, None)
    } else {
        let mean = before.iter().sum::<f64>() / n as f64;
        let variance = before.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / n as f64;
        let exact = |v: f64| Decimal::from_f64(v).map(|d| d.round_dp(4));
        (exact(mean), exact(variance.sqrt()))
    };
    let seen_here = account.countries.get(country).map_or(0, |c| c.transactions);
    Some(AccountHistory {
        transactions_before: account.transactions.saturating_sub(1),
        transactions_1h: account.velocity.hour.count,
        spend_1h: account.velocity.hour.sum,
        new_country: account.transactions > 1 && seen_here == 1,
        mean_amount,
        std_amount,
        recent: n as u64,
    })
}

/// What the rules need from the state as it was before the input: the
/// symbol's last trade price, or the device metric's last reading.
fn previous_value(state: &State, record: &Record) -> Option<Decimal> {
    match record {
        Record::Tick(tick) => state.symbol(&tick.symbol)?.last_trade.as_ref().map(|t| t.value.price),
        Record::Event(event) => {
            let metric = event.attributes.get("metric").and_then(|m| m.as_str()).unwrap_or(DEFAULT_METRIC);
            state.device(&event.key)?.metrics.get(metric)?.readings.back().map(|r| r.value)
        }
        _ => None,
    }
}

/// The market rules, after the tick was applied: a level crossing from the
/// previous trade raises an alert; a move of at least the threshold over the
/// window (outside the cooldown) asks for a strategy evaluation.
fn on_tick(
    state: &mut State,
    rules: &RulesSettings,
    tick: &MarketTick,
    previous: Option<Decimal>,
    at: &Provenance,
) -> Vec<Draft> {
    let Some(symbol) = state.symbol(&tick.symbol) else { return Vec::new() };
    // A late trade (older than the last one) is counted, not applied.
    if symbol.last_trade.as_ref().is_none_or(|t| t.stamp.provenance != *at) {
        return Vec::new();
    }
    let mut drafts = Vec::new();
    if let Some(previous) = previous
        && let Some(level) = crossed_level(previous, tick.price, rules.level_step)
    {
        let payload = RaiseAlert { symbol: tick.symbol.clone(), level, previous_price: previous, price: tick.price };
        drafts.push(draft(kinds::RAISE_ALERT, &tick.symbol, &payload));
    }
    let secs = |s: u64| Duration::seconds(i64::try_from(s).unwrap_or(i64::MAX));
    let horizon = tick.exchange_ts - secs(rules.window_secs);
    let prices: Vec<Decimal> = symbol.rolling.samples.iter().filter(|s| s.at >= horizon).map(|s| s.price).collect();
    let first = prices.first().copied().unwrap_or(tick.price);
    let change_bps = if first.is_zero() {
        0
    } else {
        ((tick.price - first) / first * Decimal::from(10_000)).round().to_i64().unwrap_or(0)
    };
    let cooled =
        symbol.marks.get(MOVE_MARK).is_none_or(|last| tick.exchange_ts - *last >= secs(rules.move_cooldown_secs));
    if change_bps.unsigned_abs() >= u64::from(rules.move_threshold_bps) && cooled {
        state.mark(EntityKind::Symbol, &tick.symbol, MOVE_MARK, tick.exchange_ts);
        let payload =
            EvaluateStrategy { symbol: tick.symbol.clone(), window_secs: rules.window_secs, prices, change_bps };
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
///   reading crosses the threshold from the metric's previous reading in
///   the state (in either direction), or when the first reading is at or
///   above it. The alert's symbol is `<key>/<metric>` (or the key), its
///   level the threshold, its prices the previous and current reading.
/// - any other kind: `{event_id, event_type, attributes}`.
fn on_event(
    state: &State,
    rules: &RulesSettings,
    event: &Event,
    previous: Option<Decimal>,
) -> Result<Option<Draft>, String> {
    if event.event_type == COMMAND_REQUESTED {
        return requested(event).map(Some);
    }
    let Some(kind) = rules.events.get(&event.event_type) else {
        return Ok(None);
    };
    let payload = if kind == kinds::SCORE_TRANSACTION {
        let mut attributes = event.attributes.clone();
        if let Some(map) = attributes.as_object_mut() {
            map.insert("event_id".into(), serde_json::json!(event.id));
            map.entry("account").or_insert_with(|| serde_json::json!(event.key));
            map.entry("at").or_insert_with(|| serde_json::json!(event.occurred_at));
        }
        let mut typed: ScoreTransaction = serde_json::from_value(attributes)
            .map_err(|e| format!("{} event does not fit {kind}: {e}", event.event_type))?;
        typed.history = account_history(state, &event.key, event.id, &typed.country);
        serde_json::to_value(typed).map_err(|e| e.to_string())?
    } else if kind == kinds::CHECK_DEVICE {
        device::check(state, event)?
    } else if kind == kinds::RAISE_ALERT {
        let reading: SensorReading = serde_json::from_value(event.attributes.clone())
            .map_err(|e| format!("{} event does not fit {kind} (value, threshold): {e}", event.event_type))?;
        let symbol = match &reading.metric {
            Some(metric) => format!("{}/{metric}", event.key),
            None => event.key.clone(),
        };
        let (value, threshold) = (reading.value, reading.threshold);
        let crossed = match previous {
            Some(p) => (p < threshold && value >= threshold) || (p >= threshold && value < threshold),
            None => value >= threshold,
        };
        if !crossed {
            return Ok(None);
        }
        let alert = RaiseAlert { symbol, level: threshold, previous_price: previous.unwrap_or(value), price: value };
        serde_json::to_value(alert).map_err(|e| e.to_string())?
    } else {
        serde_json::json!({"event_id": event.id, "event_type": event.event_type, "attributes": event.attributes})
    };
    Ok(Some(Draft { kind: kind.clone(), key: event.key.clone(), payload, requested_by: None }))
}

/// The command a `command_requested` event asks for (written by the API
/// after checking it; checked again here, since anyone allowed to write the
/// events topic can write one).
fn requested(event: &Event) -> Result<Draft, String> {
    let request: CommandRequest = serde_json::from_value(event.attributes.clone())
        .map_err(|e| format!("{COMMAND_REQUESTED} event is not a command request: {e}"))?;
    let payload = check_payload(&request.kind, &request.payload)?;
    Ok(Draft { kind: request.kind, key: event.key.clone(), payload, requested_by: Some(request.requested_by) })
}

fn draft<T: serde::Serialize>(kind: &str, key: &str, payload: &T) -> Draft {
    // The payload types serialise infallibly (strings, numbers, vectors).
    let payload = serde_json::to_value(payload).unwrap_or_default();
    Draft { kind: kind.into(), key: key.into(), payload, requested_by: None }
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

/// The `[rules]` section.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RulesSettings {
    /// Rolling window length, seconds of exchange time.
    pub window_secs: u64,
    /// A move of at least this many basis points over the window issues
    /// `evaluate_strategy`.
    pub move_threshold_bps: u32,
    /// After a move command, the same symbol waits this long before the
    /// next one, seconds.
    pub move_cooldown_secs: u64,
    /// Crossing a multiple of this price step issues `raise_alert`; `0`
    /// disables the rule.
    #[serde(with = "rust_decimal::serde::str")]
    pub level_step: Decimal,
    /// Commands must be executed within this long of being issued,
    /// milliseconds; `0` for no deadline.
    pub command_deadline_ms: u64,
    /// Event type → command kind for events on the events topic.
    pub events: BTreeMap<String, String>,
    /// Command kinds held for a person's approval before they are issued
    /// (`docs/approval.md`); empty: none.
    pub approval_kinds: Vec<String>,
    /// How long a held command waits for approval when it has no deadline
    /// of its own (`command_deadline_ms` is 0), milliseconds.
    pub approval_timeout_ms: u64,
}

impl RulesSettings {
    /// Checks the section.
    pub fn validate(&self) -> Result<(), SettingsError> {
        at_least("rules.window_secs", self.window_secs, 1, "seconds")?;
        at_least("rules.move_threshold_bps", self.move_threshold_bps, 1, "basis points")?;
        if self.level_step < Decimal::ZERO {
            return Err(SettingsError::invalid(
                "rules.level_step",
                self.level_step.to_string(),
                "a decimal >= 0 (0 disables)",
            ));
        }
        for (event_type, kind) in &self.events {
            non_empty(&format!("rules.events.{event_type}"), kind, "a command kind")?;
        }
        for (i, kind) in self.approval_kinds.iter().enumerate() {
            non_empty("rules.approval_kinds", kind, "a list of command kinds")?;
            if self.approval_kinds[..i].contains(kind) {
                return Err(SettingsError::invalid("rules.approval_kinds", kind, "a list of distinct command kinds"));
            }
        }
        at_least("rules.approval_timeout_ms", self.approval_timeout_ms, 100, "milliseconds")?;
        Ok(())
    }
}

impl Default for RulesSettings {
    fn default() -> Self {
        Self {
            window_secs: 30,
            move_threshold_bps: 50,
            move_cooldown_secs: 10,
            level_step: Decimal::new(100, 2),
            command_deadline_ms: 60_000,
            events: BTreeMap::from([
                ("card_transaction".to_string(), kinds::SCORE_TRANSACTION.to_string()),
                ("sensor_reading".to_string(), kinds::RAISE_ALERT.to_string()),
            ]),
            approval_kinds: Vec::new(),
            approval_timeout_ms: 300_000,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{DateTime, Utc};
    use shoal_protocol::messages::SCHEMA_VERSION;
    use shoal_state::StateConfig;

    fn d(s: &str) -> Decimal {
        s.parse().unwrap()
    }

    /// The state and rules of one stage, fed one partition's records.
    struct Bench {
        state: State,
        rules: RulesSettings,
        offset: i64,
    }

    impl Bench {
        fn new(rules: RulesSettings) -> Self {
            let state = State::new(StateConfig::from_rule_events(&rules.events));
            Self { state, rules, offset: 0 }
        }

        fn feed(&mut self, record: Record) -> Decision {
            self.offset += 1;
            let input = Input { provenance: Provenance::new("in", 0, self.offset), record };
            decide(&mut self.state, &self.rules, &input)
        }

        fn tick(&mut self, secs: i64, price: &str) -> Vec<Draft> {
            self.feed(Record::Tick(tick(secs, price))).drafts
        }
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

    fn market() -> Bench {
        Bench::new(RulesSettings {
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
        let mut b = market();
        assert!(b.tick(0, "100.00").is_empty());
        assert!(b.tick(1, "100.50").is_empty());
        let drafts = b.tick(2, "101.20");
        assert_eq!(drafts.len(), 1, "{drafts:?}");
        assert_eq!(drafts[0].kind, kinds::EVALUATE_STRATEGY);
        assert_eq!(drafts[0].payload["change_bps"], 120);
        assert_eq!(drafts[0].payload["prices"], serde_json::json!(["100.00", "100.50", "101.20"]));
        assert!(b.tick(3, "101.30").is_empty(), "cooldown");
        let mark = b.state.symbol("SIM-A").unwrap().marks.get(MOVE_MARK).copied();
        assert_eq!(mark, DateTime::from_timestamp(1_700_000_002, 0), "the cooldown is kept in the state");
    }

    #[test]
    fn old_prices_leave_the_window() {
        let mut b = market();
        b.tick(0, "100.00");
        // 20 s later the 100.00 sample is outside the 10 s window: no move.
        assert!(b.tick(20, "101.50").is_empty());
    }

    #[test]
    fn crossing_a_level_raises_an_alert() {
        let mut b = market();
        b.tick(0, "104.90");
        let drafts = b.tick(1, "105.10");
        assert_eq!(drafts.len(), 1);
        assert_eq!(drafts[0].kind, kinds::RAISE_ALERT);
        assert_eq!(drafts[0].payload["level"], "105.00", "quoted like the price");
    }

    #[test]
    fn a_tick_the_state_cannot_apply_decides_nothing_and_is_rejected() {
        let mut b = market();
        b.tick(0, "104.90");
        b.offset += 1;
        let input = Input { provenance: Provenance::new("in", 0, b.offset), record: Record::Tick(tick(1, "0")) };
        let decision = decide(&mut b.state, &b.rules, &input);
        assert!(decision.drafts.is_empty(), "a price of 0 would cross every level down: {:?}", decision.drafts);
        assert_eq!(decision.rejected.map(|r| r.0), Some("invalid_state_input"));
    }

    #[test]
    fn replayed_and_late_ticks_decide_nothing() {
        let mut b = market();
        b.tick(0, "104.90");
        let input =
            Input { provenance: Provenance::new("in", 0, b.offset + 1), record: Record::Tick(tick(1, "105.10")) };
        assert_eq!(decide(&mut b.state, &b.rules, &input).drafts.len(), 1);
        let again = decide(&mut b.state, &b.rules, &input);
        assert!(again.drafts.is_empty() && again.applied.is_ignored(), "a replay is not decided twice");
        b.offset += 1;
        assert!(b.tick(-5, "99.00").is_empty(), "a late trade changes nothing the rules read");
    }

    #[test]
    fn the_same_inputs_make_the_same_decisions_and_state() {
        let run = || {
            let mut b = market();
            let drafts: Vec<_> =
                (0..200).flat_map(|i| b.tick(i, &format!("{}.{:02}", 100 + (i * 7) % 13, i % 100))).collect();
            (drafts, b.state.to_canonical_json())
        };
        let (a, b) = (run(), run());
        assert!(!a.0.is_empty());
        assert_eq!(a, b);
    }

    fn event(event_type: &str, key: &str, attributes: serde_json::Value) -> Event {
        Event {
            schema_version: SCHEMA_VERSION,
            id: uuid::Uuid::new_v4(),
            event_type: event_type.into(),
            key: key.into(),
            occurred_at: Utc::now(),
            attributes,
        }
    }

    #[test]
    fn sensor_readings_raise_an_alert_when_they_cross_the_threshold() {
        let mut b = Bench::new(RulesSettings::default());
        let mut reading = |value: &str| {
            let attributes = serde_json::json!({"metric": "temperature", "value": value, "threshold": "80.0"});
            let decision = b.feed(Record::Event(event("sensor_reading", "boiler-7", attributes)));
            match decision.rejected {
                Some((_, error)) => Err(error),
                None => Ok(decision.drafts.into_iter().next()),
            }
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
    fn device_checks_carry_the_metrics_readings_from_the_state() {
        let events = BTreeMap::from([("vibration".to_string(), kinds::CHECK_DEVICE.to_string())]);
        let mut b = Bench::new(RulesSettings { events, ..RulesSettings::default() });
        let mut reading = |value: &str, metric: &str| {
            let attributes = serde_json::json!({"metric": metric, "value": value, "site": "plant-1"});
            let decision = b.feed(Record::Event(event("vibration", "pump-3", attributes)));
            (decision.drafts, decision.rejected)
        };
        reading("1.5", "rms");
        reading("9", "peak");
        let (drafts, rejected) = reading("1.75", "rms");
        assert_eq!(rejected, None);
        let check = drafts.into_iter().next().expect("a check per reading");
        assert_eq!((check.kind.as_str(), check.key.as_str()), (kinds::CHECK_DEVICE, "pump-3"));
        let values: Vec<&str> =
            check.payload["readings"].as_array().unwrap().iter().map(|r| r["value"].as_str().unwrap()).collect();
        assert_eq!(values, ["1.5", "1.75"], "this metric's readings, oldest first");
        assert_eq!((check.payload["metric"].as_str(), check.payload["site"].as_str()), (Some("rms"), Some("plant-1")));
        let (drafts, rejected) = reading("loud", "rms");
        assert!(drafts.is_empty() && rejected.is_some(), "not a decimal: {rejected:?}");
    }

    #[test]
    fn a_requested_command_is_issued_as_asked_and_a_bad_request_is_rejected() {
        let mut b = Bench::new(RulesSettings::default());
        let alert = serde_json::json!({"symbol": "SIM-A", "level": "100", "previous_price": "99", "price": "101"});
        let request = |kind: &str, payload: serde_json::Value| {
            serde_json::json!({
                "kind": kind, "payload": payload, "reason": "test",
                "requested_by": {"via": "mcp", "role": "admin", "token_id": "0123456789ab", "client": null},
            })
        };
        let decision = b.feed(Record::Event(event(COMMAND_REQUESTED, "SIM-A", request("raise_alert", alert.clone()))));
        assert_eq!(decision.rejected, None);
        assert_eq!(
            decision.drafts,
            [Draft {
                kind: kinds::RAISE_ALERT.into(),
                key: "SIM-A".into(),
                payload: alert.clone(),
                requested_by: Some(shoal_protocol::payloads::Requester {
                    via: "mcp".into(),
                    role: "admin".into(),
                    token_id: Some("0123456789ab".into()),
                    client: None,
                }),
            }]
        );
        let bad = b.feed(Record::Event(event(COMMAND_REQUESTED, "SIM-A", request("launch", alert))));
        assert!(bad.drafts.is_empty());
        assert!(bad.rejected.is_some_and(|(_, e)| e.contains("launch")));
        let not_a_request = b.feed(Record::Event(event(COMMAND_REQUESTED, "SIM-A", serde_json::json!({"x": 1}))));
        assert!(not_a_request.rejected.is_some());
    }

    #[test]
    fn card_transactions_become_scoring_commands_and_bad_ones_are_rejected() {
        let mut b = market();
        let attributes =
            serde_json::json!({"amount": "42.00", "currency": "EUR", "country": "FR", "card_present": true});
        let decision = b.feed(Record::Event(event("card_transaction", "acct-7", attributes)));
        let draft = &decision.drafts[0];
        assert_eq!(draft.kind, kinds::SCORE_TRANSACTION);
        assert_eq!(draft.key, "acct-7");
        assert_eq!(draft.payload["account"], "acct-7");
        assert!(b.state.account("acct-7").is_some(), "the account is in the state");
        let bad = b.feed(Record::Event(event("card_transaction", "acct-7", serde_json::json!({"amount": "lots"}))));
        assert!(bad.rejected.is_some() && bad.drafts.is_empty());
        let unmapped = b.feed(Record::Event(event("unmapped", "acct-7", serde_json::json!({}))));
        assert!(unmapped.drafts.is_empty() && unmapped.rejected.is_none());
    }

    #[test]
    fn a_scoring_command_carries_the_account_history_from_the_state() {
        let mut b = market();
        let mut pay = |amount: &str, country: &str| {
            let attributes = serde_json::json!({"amount": amount, "currency": "EUR", "country": country});
            let decision = b.feed(Record::Event(event("card_transaction", "acct-9", attributes)));
            decision.drafts[0].payload["history"].clone()
        };
        let first = pay("40", "FR");
        assert_eq!(first["transactions_before"], 0);
        assert_eq!(first["new_country"], false, "an account's first country is not new");
        assert!(first["mean_amount"].is_null(), "no earlier amounts: {first}");
        for amount in ["38", "42", "40", "39", "41"] {
            pay(amount, "FR");
        }
        let odd = pay("900", "BR");
        assert_eq!(odd["transactions_before"], 6, "{odd}");
        assert_eq!(odd["transactions_1h"], 7);
        assert_eq!(odd["new_country"], true);
        assert_eq!(odd["recent"], 6);
        assert_eq!(odd["mean_amount"], "40");
        assert_eq!(odd["spend_1h"], "1140");
    }
}
