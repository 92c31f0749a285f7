//! Business entities derived from the events topic: accounts (card
//! transactions) and devices (sensor readings).
//!
//! Samples are kept sorted by (event time, event id), so events of one key
//! arriving out of order land where they belong, and an event delivered
//! twice (same time and id) is recognised and counted instead of applied.

use std::collections::{BTreeMap, VecDeque};

use chrono::{DateTime, TimeDelta, Utc};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use shoal_protocol::messages::Event;
use uuid::Uuid;

use crate::freshness::{Provenance, Stamp, minus};
use crate::recent::insert_bounded;
use crate::table::Entity;

/// Countries remembered per account at most (the least recently seen go).
pub const MAX_COUNTRIES: usize = 250;
/// Metrics remembered per device at most (the least recently read go).
pub const MAX_METRICS: usize = 64;
/// Metric name of readings without a `metric` attribute.
pub const DEFAULT_METRIC: &str = "value";
/// The longest spend-velocity window; older spend samples are dropped.
pub const LONGEST_WINDOW: TimeDelta = TimeDelta::hours(24);

/// Bounds of the entity state (from the state's configuration).
#[derive(Debug, Clone, Copy)]
pub struct EntityLimits {
    /// Recent transactions or readings kept.
    pub max_recent: usize,
    /// Spend samples kept per account (within the longest window).
    pub max_window_samples: usize,
}

/// One card transaction.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Transaction {
    /// The event's id.
    pub event_id: Uuid,
    /// When it happened, and the event's record.
    #[serde(flatten)]
    pub stamp: Stamp,
    /// Amount in the transaction currency.
    pub amount: Decimal,
    /// Currency code, when given.
    pub currency: Option<String>,
    /// Country where it happened, when given.
    pub country: Option<String>,
    /// Merchant, when given.
    pub merchant: Option<String>,
    /// Merchant category code (`mcc` or `merchant_category`), when given.
    pub mcc: Option<String>,
    /// Whether the card was present, when given.
    pub card_present: Option<bool>,
}

/// One amount in the spend windows.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SpendSample {
    /// When it happened.
    pub at: DateTime<Utc>,
    /// The event's id.
    pub event_id: Uuid,
    /// Amount.
    pub amount: Decimal,
}

/// Count and sum of the amounts in one window.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Window {
    /// Transactions.
    pub count: u64,
    /// Sum of their amounts (whatever their currencies).
    pub sum: Decimal,
}

/// Spend over the last minute, hour and day, up to the account's newest
/// transaction (by event time; windows exclude their start).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Velocity {
    /// Last minute.
    #[serde(rename = "1m")]
    pub minute: Window,
    /// Last hour.
    #[serde(rename = "1h")]
    pub hour: Window,
    /// Last 24 hours.
    #[serde(rename = "24h")]
    pub day: Window,
}

/// When a country was seen on an account.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CountrySeen {
    /// Transactions there.
    pub transactions: u64,
    /// Earliest.
    pub first_seen: DateTime<Utc>,
    /// Latest.
    pub last_seen: DateTime<Utc>,
}

/// An account, from its card transactions.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccountState {
    /// Newest input that changed it.
    pub updated: Stamp,
    /// Transactions applied.
    pub transactions: u64,
    /// Events seen again (same time and id) and not applied twice.
    pub duplicates: u64,
    /// The newest transactions, oldest first.
    pub recent: VecDeque<Transaction>,
    /// Spend velocity.
    pub velocity: Velocity,
    /// Countries seen, by code.
    pub countries: BTreeMap<String, CountrySeen>,
    /// The amounts of the last 24 hours behind `velocity`, oldest first.
    pub spend: VecDeque<SpendSample>,
    /// What the decision rules remember about it, by name (e.g. when a
    /// rule last fired), set with [`State::mark`](crate::State::mark).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub marks: BTreeMap<String, DateTime<Utc>>,
}

impl Entity for AccountState {
    fn updated_at(&self) -> DateTime<Utc> {
        self.updated.at
    }
}

/// Reads a card transaction from an event's attributes: `amount` (decimal
/// string or number) is required; `currency`, `country`, `merchant`, `mcc`
/// (or `merchant_category`) and `card_present` are optional.
pub fn parse_transaction(event: &Event, provenance: &Provenance) -> Result<Transaction, String> {
    let attrs = &event.attributes;
    let amount = attrs.get("amount").ok_or("no `amount` attribute")?;
    let amount = decimal(amount).ok_or_else(|| format!("`amount` {amount} is not a decimal"))?;
    Ok(Transaction {
        event_id: event.id,
        stamp: Stamp::new(event.occurred_at, provenance.clone()),
        amount,
        currency: text(attrs, "currency"),
        country: text(attrs, "country"),
        merchant: text(attrs, "merchant"),
        mcc: text(attrs, "mcc").or_else(|| text(attrs, "merchant_category")),
        card_present: attrs.get("card_present").and_then(Value::as_bool),
    })
}

impl AccountState {
    /// An account without transactions, first changed by `stamp`.
    pub fn new(stamp: &Stamp) -> Self {
        Self {
            updated: stamp.clone(),
            transactions: 0,
            duplicates: 0,
            recent: VecDeque::new(),
            velocity: Velocity::default(),
            countries: BTreeMap::new(),
            spend: VecDeque::new(),
            marks: BTreeMap::new(),
        }
    }

    /// Applies a transaction.
    pub fn apply(&mut self, tx: Transaction, stamp: &Stamp, limits: EntityLimits) {
        self.updated.merge(stamp);
        let at = tx.stamp.at;
        let sample = SpendSample { at, event_id: tx.event_id, amount: tx.amount };
        let order = (at, tx.event_id);
        if self.recent.iter().any(|r| (r.stamp.at, r.event_id) == order)
            || insert_bounded(&mut self.spend, sample, limits.max_window_samples.max(1), |s| (s.at, s.event_id))
                .is_err()
        {
            self.duplicates += 1;
            return;
        }
        self.transactions += 1;
        let newest = self.spend.back().map_or(at, |s| s.at);
        let horizon = minus(newest, LONGEST_WINDOW);
        while self.spend.front().is_some_and(|s| s.at <= horizon) {
            self.spend.pop_front();
        }
        self.velocity = Velocity {
            minute: window(&self.spend, minus(newest, TimeDelta::minutes(1))),
            hour: window(&self.spend, minus(newest, TimeDelta::hours(1))),
            day: window(&self.spend, horizon),
        };
        if let Some(country) = &tx.country {
            let seen = self.countries.entry(country.clone()).or_insert(CountrySeen {
                transactions: 0,
                first_seen: at,
                last_seen: at,
            });
            seen.transactions += 1;
            seen.first_seen = seen.first_seen.min(at);
            seen.last_seen = seen.last_seen.max(at);
            evict_oldest(&mut self.countries, MAX_COUNTRIES, country, |c| c.last_seen);
        }
        // Never a duplicate: it was looked for above.
        // Event-time order, ties in log order, as for readings.
        let _ = insert_bounded(&mut self.recent, tx, limits.max_recent.max(1), |r| {
            (r.stamp.at, r.stamp.provenance.partition, r.stamp.provenance.offset)
        });
    }
}

fn window(spend: &VecDeque<SpendSample>, after: DateTime<Utc>) -> Window {
    spend
        .iter()
        .rev()
        .take_while(|s| s.at > after)
        .fold(Window::default(), |w, s| Window { count: w.count + 1, sum: w.sum.saturating_add(s.amount) })
}

/// One sensor reading.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reading {
    /// The event's id.
    pub event_id: Uuid,
    /// When it was read, and the event's record.
    #[serde(flatten)]
    pub stamp: Stamp,
    /// The value.
    pub value: Decimal,
    /// The threshold sent with it, when one was.
    pub threshold: Option<Decimal>,
}

/// The readings of one metric of a device.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MetricState {
    /// Newest input that changed it.
    pub updated: Stamp,
    /// The newest readings, oldest first.
    pub readings: VecDeque<Reading>,
    /// Change per second between the two newest readings (absent with one
    /// reading, or two at the same instant).
    pub rate_per_sec: Option<Decimal>,
    /// Whether the newest reading is at or above its threshold (absent
    /// without a threshold).
    pub above_threshold: Option<bool>,
}

/// A device, from its sensor readings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceState {
    /// Newest input that changed it.
    pub updated: Stamp,
    /// Readings applied.
    pub readings: u64,
    /// Events seen again (same time and id) and not applied twice.
    pub duplicates: u64,
    /// Per metric (`metric` attribute, else `value`).
    pub metrics: BTreeMap<String, MetricState>,
    /// What the decision rules remember about it, by name (e.g. when a
    /// rule last fired), set with [`State::mark`](crate::State::mark).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub marks: BTreeMap<String, DateTime<Utc>>,
}

impl Entity for DeviceState {
    fn updated_at(&self) -> DateTime<Utc> {
        self.updated.at
    }
}

/// Reads a sensor reading from an event's attributes: `value` (decimal
/// string or number) is required, `metric` and `threshold` optional.
/// Returns the metric name and the reading.
pub fn parse_reading(event: &Event, provenance: &Provenance) -> Result<(String, Reading), String> {
    let attrs = &event.attributes;
    let value = attrs.get("value").ok_or("no `value` attribute")?;
    let value = decimal(value).ok_or_else(|| format!("`value` {value} is not a decimal"))?;
    let threshold = match attrs.get("threshold") {
        None | Some(Value::Null) => None,
        Some(t) => Some(decimal(t).ok_or_else(|| format!("`threshold` {t} is not a decimal"))?),
    };
    let metric = text(attrs, "metric").unwrap_or_else(|| DEFAULT_METRIC.to_string());
    let reading =
        Reading { event_id: event.id, stamp: Stamp::new(event.occurred_at, provenance.clone()), value, threshold };
    Ok((metric, reading))
}

impl DeviceState {
    /// A device without readings, first changed by `stamp`.
    pub fn new(stamp: &Stamp) -> Self {
        Self { updated: stamp.clone(), readings: 0, duplicates: 0, metrics: BTreeMap::new(), marks: BTreeMap::new() }
    }

    /// Applies a reading of `metric`.
    pub fn apply(&mut self, metric: String, reading: Reading, stamp: &Stamp, limits: EntityLimits) {
        self.updated.merge(stamp);
        let state = self.metrics.entry(metric.clone()).or_insert_with(|| MetricState {
            updated: stamp.clone(),
            readings: VecDeque::new(),
            rate_per_sec: None,
            above_threshold: None,
        });
        // Readings are kept in event-time order, ties in log order (the
        // device's readings share a partition): the newest is the last one
        // to arrive among those of the latest time, never a random pick by
        // id. A reading whose event id is kept already is a duplicate.
        if state.readings.iter().any(|r| r.event_id == reading.event_id)
            || insert_bounded(&mut state.readings, reading, limits.max_recent.max(2), |r| {
                (r.stamp.at, r.stamp.provenance.partition, r.stamp.provenance.offset)
            })
            .is_err()
        {
            self.duplicates += 1;
            return;
        }
        self.readings += 1;
        state.updated.merge(stamp);
        let newest = state.readings.back();
        state.above_threshold = newest.and_then(|r| r.threshold.map(|t| r.value >= t));
        state.rate_per_sec = match (state.readings.len().checked_sub(2).and_then(|i| state.readings.get(i)), newest) {
            (Some(a), Some(b)) => rate(a, b),
            _ => None,
        };
        evict_oldest(&mut self.metrics, MAX_METRICS, &metric, |m| m.updated.at);
    }
}

fn rate(a: &Reading, b: &Reading) -> Option<Decimal> {
    let micros = (b.stamp.at - a.stamp.at).num_microseconds().filter(|m| *m != 0)?;
    b.value.checked_sub(a.value)?.checked_div(Decimal::new(micros, 6))
}

/// Removes the entry with the oldest `time` (ties: smallest key), other than
/// `keep`, while `map` holds more than `max`.
fn evict_oldest<V>(map: &mut BTreeMap<String, V>, max: usize, keep: &str, time: impl Fn(&V) -> DateTime<Utc>) {
    while map.len() > max {
        let victim = map.iter().filter(|(k, _)| k.as_str() != keep).min_by_key(|(k, v)| (time(*v), *k));
        let Some(victim) = victim.map(|(k, _)| k.clone()) else { return };
        map.remove(&victim);
    }
}

/// A decimal from a JSON string (`"42.10"`, also `"1e3"`) or number.
fn decimal(v: &Value) -> Option<Decimal> {
    let raw = match v {
        Value::String(s) => s.trim().to_string(),
        Value::Number(n) => n.to_string(),
        _ => return None,
    };
    raw.parse::<Decimal>().ok().or_else(|| Decimal::from_scientific(&raw).ok())
}

/// A string attribute (numbers are taken as their text).
fn text(attrs: &Value, name: &str) -> Option<String> {
    match attrs.get(name)? {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testkit::{d, event, prov, ts};
    use serde_json::json;

    const LIMITS: EntityLimits = EntityLimits { max_recent: 3, max_window_samples: 100 };

    fn spend(a: &mut AccountState, secs: i64, amount: &str, country: &str) {
        let e = event("card_transaction", "acct-1", secs, json!({"amount": amount, "country": country}));
        let p = prov("events", 0, secs);
        a.apply(parse_transaction(&e, &p).unwrap(), &Stamp::new(e.occurred_at, p), LIMITS);
    }

    #[test]
    fn velocity_windows_slide_by_event_time() {
        let mut a = AccountState::new(&Stamp::new(ts(0), prov("events", 0, 0)));
        spend(&mut a, 0, "10", "FR");
        spend(&mut a, 30, "20.50", "FR");
        assert_eq!(a.velocity.minute, Window { count: 2, sum: d("30.50") });
        spend(&mut a, 60, "5", "DE");
        assert_eq!(
            a.velocity.minute,
            Window { count: 2, sum: d("25.50") },
            "the 0 s one is out (window excludes its start)"
        );
        assert_eq!(a.velocity.hour, Window { count: 3, sum: d("35.50") });
        spend(&mut a, 3_630, "1", "FR");
        assert_eq!(a.velocity.minute, Window { count: 1, sum: d("1") });
        assert_eq!(a.velocity.hour, Window { count: 2, sum: d("6") }, "30 s < t ≤ 3630 s");
        assert_eq!(a.velocity.day, Window { count: 4, sum: d("36.50") });
        spend(&mut a, 86_430, "2", "FR");
        assert_eq!(a.velocity.day, Window { count: 3, sum: d("8") }, "the 0 s and 30 s ones left the day");
        assert_eq!(a.spend.len(), 3);
        assert_eq!(a.transactions, 5);
        assert_eq!(a.recent.iter().map(|t| t.stamp.at).collect::<Vec<_>>(), [ts(60), ts(3_630), ts(86_430)]);
        let fr = &a.countries["FR"];
        assert_eq!((fr.transactions, fr.first_seen, fr.last_seen), (4, ts(0), ts(86_430)));
        assert_eq!(a.countries.keys().collect::<Vec<_>>(), ["DE", "FR"]);
    }

    #[test]
    fn out_of_order_and_duplicate_transactions() {
        let mut a = AccountState::new(&Stamp::new(ts(0), prov("events", 0, 0)));
        spend(&mut a, 50, "1", "FR");
        spend(&mut a, 10, "2", "FR");
        assert_eq!(a.recent.iter().map(|t| t.stamp.at).collect::<Vec<_>>(), [ts(10), ts(50)]);
        assert_eq!(a.velocity.minute, Window { count: 2, sum: d("3") });
        spend(&mut a, 10, "2", "FR");
        assert_eq!((a.duplicates, a.transactions, a.velocity.minute.count), (1, 2, 2));
        assert_eq!(a.updated.at, ts(50), "an older event does not move the update time back");
    }

    #[test]
    fn transaction_attributes() {
        let p = prov("events", 1, 2);
        let e = event("t", "a", 0, json!({"amount": 12.5, "mcc": 5411, "merchant": "shop", "card_present": true}));
        let tx = parse_transaction(&e, &p).unwrap();
        assert_eq!((tx.amount, tx.mcc.as_deref(), tx.merchant.as_deref()), (d("12.5"), Some("5411"), Some("shop")));
        assert_eq!((tx.country, tx.card_present), (None, Some(true)));
        let e = event("t", "a", 0, json!({"amount": "1e3", "merchant_category": "5999"}));
        let tx = parse_transaction(&e, &p).unwrap();
        assert_eq!((tx.amount, tx.mcc.as_deref()), (d("1000"), Some("5999")));
        assert!(
            parse_transaction(&event("t", "a", 0, json!({"amount": "lots"})), &p)
                .unwrap_err()
                .contains("not a decimal")
        );
        assert!(parse_transaction(&event("t", "a", 0, json!({})), &p).unwrap_err().contains("no `amount`"));
        assert!(parse_transaction(&event("t", "a", 0, json!("x")), &p).is_err());
    }

    fn read(dev: &mut DeviceState, millis: i64, attrs: Value) {
        read_at(dev, millis, millis, Uuid::from_u64_pair(7, millis as u64), attrs);
    }

    fn read_at(dev: &mut DeviceState, millis: i64, offset: i64, id: Uuid, attrs: Value) {
        let mut e = event("sensor_reading", "dev-1", 0, attrs);
        (e.occurred_at, e.id) = (crate::testkit::ts_ms(millis), id);
        let p = prov("events", 0, offset);
        let (metric, reading) = parse_reading(&e, &p).unwrap();
        dev.apply(metric, reading, &Stamp::new(e.occurred_at, p), LIMITS);
    }

    #[test]
    fn readings_with_the_same_event_time_keep_their_log_order() {
        let mut dev = DeviceState::new(&Stamp::new(ts(0), prov("events", 0, 0)));
        // Ids in falling order, so that ordering ties by id would put the
        // last arrival first.
        for (offset, value) in [(1, "75.5"), (2, "80.25"), (3, "91"), (4, "79.0")] {
            let id = Uuid::from_u64_pair(100 - offset as u64, 0);
            read_at(&mut dev, 1_000, offset, id, json!({"value": value, "threshold": "80"}));
            assert_eq!(dev.metrics[DEFAULT_METRIC].readings.back().unwrap().value, d(value), "newest after {offset}");
        }
        read_at(&mut dev, 1_000, 9, Uuid::from_u64_pair(98, 0), json!({"value": "91", "threshold": "80"}));
        assert_eq!((dev.readings, dev.duplicates), (4, 1), "the same event again, later in the log");
    }

    #[test]
    fn device_readings_and_rate_of_change() {
        let mut dev = DeviceState::new(&Stamp::new(ts(0), prov("events", 0, 0)));
        read(&mut dev, 0, json!({"metric": "temperature", "value": "79.9", "threshold": "80"}));
        let t = &dev.metrics["temperature"];
        assert_eq!((t.rate_per_sec, t.above_threshold), (None, Some(false)));
        read(&mut dev, 2_000, json!({"metric": "temperature", "value": "80.5", "threshold": "80"}));
        let t = &dev.metrics["temperature"];
        assert_eq!((t.rate_per_sec, t.above_threshold), (Some(d("0.3")), Some(true)));
        read(&mut dev, 2_500, json!({"metric": "temperature", "value": "80.0"}));
        assert_eq!(dev.metrics["temperature"].rate_per_sec, Some(d("-1")), "-0.5 over 0.5 s");
        assert_eq!(dev.metrics["temperature"].above_threshold, None);
        read(&mut dev, 3_000, json!({"value": 7}));
        assert_eq!(dev.metrics.keys().collect::<Vec<_>>(), ["temperature", DEFAULT_METRIC]);
        read(&mut dev, 4_000, json!({"metric": "temperature", "value": "81"}));
        let t = &dev.metrics["temperature"];
        assert_eq!(t.readings.len(), 3, "bounded");
        assert_eq!(t.readings.front().unwrap().stamp.at, crate::testkit::ts_ms(2_000));
        assert_eq!(dev.readings, 5);
        read(&mut dev, 4_000, json!({"metric": "temperature", "value": "81"}));
        assert_eq!((dev.readings, dev.duplicates), (5, 1));
        let p = prov("e", 0, 0);
        assert!(parse_reading(&event("s", "d", 0, json!({"metric": "x"})), &p).is_err());
        assert!(parse_reading(&event("s", "d", 0, json!({"value": "1", "threshold": "hot"})), &p).is_err());
    }

    #[test]
    fn countries_and_metrics_are_bounded() {
        let mut m: BTreeMap<String, DateTime<Utc>> = BTreeMap::new();
        for (k, t) in [("b", 1), ("a", 1), ("c", 0)] {
            m.insert(k.into(), ts(t));
            evict_oldest(&mut m, 2, k, |t| *t);
        }
        assert_eq!(m.keys().collect::<Vec<_>>(), ["b", "c"], "c stays as just touched; a goes before b");
    }
}
