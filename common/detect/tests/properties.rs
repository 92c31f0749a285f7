//! Property tests: the detectors never panic or produce NaN for arbitrary
//! finite inputs in arbitrary time order, and replaying the same inputs gives
//! byte-identical serialised output.
#![allow(clippy::unwrap_used)]

use chrono::{DateTime, Utc};
use proptest::prelude::*;
use rust_decimal::Decimal;
use shoal_detect::fraud::{AccountBook, CaseBuilder, FraudSettings, Transaction};
use shoal_detect::iot::{CorrelatorSettings, DeviceMonitor, IotSettings, Reading, SiteCorrelator};

fn t(secs: i64) -> DateTime<Utc> {
    DateTime::from_timestamp(1_700_000_000 + secs, 0).unwrap()
}

fn finite() -> impl Strategy<Value = f64> {
    prop_oneof![
        4 => -100.0..100.0f64,
        2 => any::<f64>().prop_filter("finite", |v| v.is_finite()),
        1 => Just(0.0),
        1 => Just(f64::MAX),
        1 => Just(-f64::MAX),
        1 => Just(f64::MIN_POSITIVE),
    ]
}

fn iot_settings() -> impl Strategy<Value = IotSettings> {
    (
        (proptest::option::of(-50.0..50.0f64), proptest::option::of(0.0..100.0f64)),
        proptest::option::of(1e-6..1e6f64),
        (0u64..100, 0.0..1.0f64),
        (0.1..10.0f64, 0u32..10, 0.01..=1.0f64),
    )
        .prop_map(|((low, spread), max_rate_per_s, (flatline_after_s, flatline_epsilon), (z, warmup, alpha))| {
            IotSettings {
                threshold_low: low,
                threshold_high: low.zip(spread).map(|(l, s)| l + s).or(spread),
                max_rate_per_s,
                flatline_after_s,
                flatline_epsilon,
                z_threshold: z,
                warmup,
                alpha,
            }
        })
}

fn readings() -> impl Strategy<Value = Vec<Reading>> {
    let reading = (0usize..4, 0usize..2, 0usize..2, finite(), -5_000i64..5_000, any::<bool>());
    proptest::collection::vec(reading, 0..120).prop_map(|raw| {
        let mut secs = 0;
        raw.into_iter()
            .map(|(device, site, metric, value, jump, repeat)| {
                // Mostly small steps (so flatlines and rates happen), sometimes
                // arbitrary jumps, backwards included.
                secs = if repeat { secs + jump.rem_euclid(30) } else { jump };
                Reading {
                    device: format!("d{device}"),
                    site: format!("s{site}"),
                    metric: ["temp", "volts"][metric].into(),
                    value,
                    at: t(secs),
                }
            })
            .collect()
    })
}

fn clean_text(text: &str) -> bool {
    !text.contains("NaN") && !text.contains("inf")
}

/// Runs monitor → correlator over `readings`, returning everything emitted
/// and the final state, serialised.
fn run_iot(settings: IotSettings, correlator: CorrelatorSettings, readings: &[Reading]) -> String {
    let mut monitor = DeviceMonitor::new(settings).unwrap();
    let mut sites = SiteCorrelator::new(correlator).unwrap();
    let mut out = Vec::new();
    for (i, reading) in readings.iter().enumerate() {
        for anomaly in monitor.observe(reading) {
            assert!(anomaly.value.is_finite(), "{anomaly:?}");
            assert!(anomaly.expected.is_none_or(f64::is_finite), "{anomaly:?}");
            assert!(clean_text(&anomaly.reason), "{anomaly:?}");
            let incident = sites.observe(&anomaly);
            out.push(serde_json::json!({ "anomaly": anomaly, "incident": incident }));
        }
        if i % 7 == 0 {
            out.push(serde_json::json!({ "closed": sites.close_stale(reading.at) }));
        }
    }
    serde_json::to_string(&serde_json::json!({ "out": out, "monitor": monitor, "sites": sites })).unwrap()
}

fn transactions() -> impl Strategy<Value = Vec<Transaction>> {
    let amount = prop_oneof![
        6 => (0i64..1_000_000, 0u32..=2).prop_map(|(m, s)| Decimal::new(m, s)),
        2 => (any::<i64>(), 0u32..=28).prop_map(|(m, s)| Decimal::new(m, s)),
        1 => Just(Decimal::MAX),
        1 => Just(Decimal::MIN),
    ];
    let tx = (0usize..4, proptest::option::of(0usize..3), amount, 0usize..3, 0usize..4, -10_000i64..10_000);
    proptest::collection::vec(tx, 0..80).prop_map(|raw| {
        raw.into_iter()
            .enumerate()
            .map(|(i, (account, device, amount, country, mcc, secs))| Transaction {
                event_id: format!("e{i}"),
                account: format!("a{account}"),
                device: device.map(|d| format!("dev{d}")),
                amount,
                country: ["GB", "US", "FR"][country].into(),
                merchant_category: [Some("7995"), Some("5411"), Some("0000"), None][mcc].map(Into::into),
                at: t(secs),
            })
            .collect()
    })
}

/// Runs book → case builder over `txs`, returning everything emitted and the
/// final state, serialised.
fn run_fraud(settings: &FraudSettings, txs: &[Transaction]) -> String {
    let mut book = AccountBook::new(settings.clone()).unwrap();
    let mut cases = CaseBuilder::new();
    let mut out = Vec::new();
    for tx in txs {
        let assessment = book.assess(tx);
        assert!(assessment.score.score <= 100);
        assert!(assessment.features.amount_zscore.is_none_or(f64::is_finite), "{assessment:?}");
        assert!(assessment.features.merchant_risk.is_finite());
        assert!(assessment.score.reasons.iter().all(|r| clean_text(r)), "{assessment:?}");
        let case = cases.observe(tx, &assessment.score);
        out.push(serde_json::json!({ "assessment": assessment, "case": case }));
    }
    serde_json::to_string(&serde_json::json!({ "out": out, "book": book, "cases": cases })).unwrap()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn iot_never_panics_or_emits_nan_and_replays_identically(
        settings in iot_settings(),
        min_devices in 1usize..4,
        window_s in 1u64..1_000,
        readings in readings(),
    ) {
        let correlator = CorrelatorSettings { min_devices, window_s };
        let first = run_iot(settings, correlator, &readings);
        let second = run_iot(settings, correlator, &readings);
        prop_assert_eq!(first, second);
    }

    #[test]
    fn fraud_never_panics_or_emits_nan_and_replays_identically(
        review_at in 0u32..=100,
        extra in 0u32..=100,
        txs in transactions(),
    ) {
        let settings = FraudSettings { review_at, decline_at: (review_at + extra).min(100), ..FraudSettings::default() };
        let first = run_fraud(&settings, &txs);
        let second = run_fraud(&settings, &txs);
        prop_assert_eq!(first, second);
    }
}

#[test]
fn the_detectors_fire_under_the_property_generators() {
    // Guards the properties against vacuity: the IoT generator's settings
    // and steps do make the detectors fire.
    let readings: Vec<Reading> = (0..50)
        .map(|i| Reading {
            device: format!("d{}", i % 3),
            site: "s0".into(),
            metric: "temp".into(),
            value: if i > 40 { 1e6 } else { 1.0 },
            at: t(i * 10),
        })
        .collect();
    let settings = IotSettings { threshold_high: Some(10.0), flatline_after_s: 60, ..IotSettings::default() };
    let out = run_iot(settings, CorrelatorSettings { min_devices: 2, window_s: 600 }, &readings);
    for needle in ["\"threshold\"", "\"flatline\"", "\"incident\":{"] {
        assert!(out.contains(needle), "{needle} missing from {out}");
    }
}
