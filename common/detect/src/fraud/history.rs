//! [`AccountHistory`]: what an account did before, and the [`Features`] of a
//! new transaction against it.

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, TimeDelta, Utc};
use rust_decimal::Decimal;
use rust_decimal::prelude::ToPrimitive;
use serde::{Deserialize, Serialize};

use super::{FraudSettings, Score, Transaction, score};
use crate::error::DetectError;

/// The velocity window: one hour.
const VELOCITY_WINDOW: TimeDelta = TimeDelta::hours(1);

/// The features of one transaction, computed against the account's history
/// before the transaction is recorded.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Features {
    /// The account's transactions in (at − 1 h, at], this one included.
    pub velocity_1h: u32,
    /// The account's spend in (at − 1 h, at], this amount included.
    pub spend_1h: Decimal,
    /// The account has history and has never transacted from this country.
    pub new_country: bool,
    /// (amount − μ) / σ′ over the account's past amounts; `None` until it has
    /// `zscore_min_history` past transactions.
    pub amount_zscore: Option<f64>,
    /// The merchant category's risk in [0, 1].
    pub merchant_risk: f64,
    /// The transaction's amount (for reasons).
    pub amount: Decimal,
    /// The account's mean past amount μ, when the z-score was computed.
    pub amount_mean: Option<f64>,
    /// The transaction's country (for reasons).
    pub country: String,
    /// The transaction's merchant category (for reasons).
    pub merchant_category: Option<String>,
}

/// A past transaction kept for the velocity window.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecentTransaction {
    /// When it happened.
    pub at: DateTime<Utc>,
    /// Its amount.
    pub amount: Decimal,
}

/// One account's history: Welford running mean and variance of its amounts,
/// the countries it used, and its transactions of the last hour.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct AccountHistory {
    /// Transactions recorded.
    pub count: u64,
    /// Running mean μ of the amounts.
    pub mean: f64,
    /// Welford's M₂: the sum of squared deviations from the mean.
    pub m2: f64,
    /// Countries the account transacted from.
    pub countries: BTreeSet<String>,
    /// Transactions within an hour of the latest one, in arrival order.
    pub recent: Vec<RecentTransaction>,
    /// The latest transaction time recorded.
    pub latest: Option<DateTime<Utc>>,
}

impl AccountHistory {
    /// The sample standard deviation √(M₂ / (n − 1)), once n ≥ 2.
    #[must_use]
    pub fn std_dev(&self) -> Option<f64> {
        // u64 → f64: exact up to 2⁵³ transactions.
        #[allow(clippy::cast_precision_loss)]
        let n = self.count as f64;
        (self.count >= 2).then(|| (self.m2.max(0.0) / (n - 1.0)).sqrt())
    }

    /// The features of `tx` against this history. Call before [`AccountHistory::record`].
    #[must_use]
    pub fn features(&self, tx: &Transaction, settings: &FraudSettings) -> Features {
        let window: Vec<&RecentTransaction> =
            self.recent.iter().filter(|r| r.at <= tx.at && tx.at - r.at < VELOCITY_WINDOW).collect();
        let velocity = u32::try_from(window.len()).unwrap_or(u32::MAX).saturating_add(1);
        let spend = window.iter().fold(tx.amount, |sum, r| sum.saturating_add(r.amount));
        let warm = self.count >= u64::from(settings.zscore_min_history.max(2));
        let amount = tx.amount.to_f64().unwrap_or(0.0);
        let amount_zscore = if warm { self.zscore(amount) } else { None };
        Features {
            velocity_1h: velocity,
            spend_1h: spend,
            new_country: self.count > 0 && !self.countries.contains(&tx.country),
            amount_zscore,
            merchant_risk: settings.risk_of(tx.merchant_category.as_deref()),
            amount: tx.amount,
            amount_mean: amount_zscore.map(|_| self.mean),
            country: tx.country.clone(),
            merchant_category: tx.merchant_category.clone(),
        }
    }

    /// (x − μ) / σ′ with σ′ = max(σ, 0.01·|μ|, 0.01), so an account with
    /// identical past amounts still yields a finite score; `None` if not finite.
    fn zscore(&self, amount: f64) -> Option<f64> {
        let sigma = self.std_dev()?.max(0.01 * self.mean.abs()).max(0.01);
        let z = (amount - self.mean) / sigma;
        z.is_finite().then_some(z)
    }

    /// Learns `tx`: Welford update (n += 1; δ = x − μ; μ += δ / n;
    /// M₂ += δ·(x − μ)), its country, and the velocity window, which keeps
    /// transactions less than an hour older than the latest one.
    pub fn record(&mut self, tx: &Transaction) {
        let amount = tx.amount.to_f64().unwrap_or(0.0);
        self.count = self.count.saturating_add(1);
        // u64 → f64: exact up to 2⁵³ transactions.
        #[allow(clippy::cast_precision_loss)]
        let n = self.count as f64;
        let delta = amount - self.mean;
        self.mean += delta / n;
        self.m2 += delta * (amount - self.mean);
        if !(self.mean.is_finite() && self.m2.is_finite()) {
            self.mean = amount;
            self.m2 = 0.0;
        }
        if !self.countries.contains(&tx.country) {
            self.countries.insert(tx.country.clone());
        }
        let latest = self.latest.map_or(tx.at, |l| l.max(tx.at));
        self.latest = Some(latest);
        self.recent.push(RecentTransaction { at: tx.at, amount: tx.amount });
        self.recent.retain(|r| latest - r.at < VELOCITY_WINDOW);
    }
}

/// A transaction's features and score.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Assessment {
    /// The features, computed before the transaction was recorded.
    pub features: Features,
    /// The score of those features.
    pub score: Score,
}

/// Every account's history, with the settings to assess transactions by.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AccountBook {
    settings: FraudSettings,
    accounts: BTreeMap<String, AccountHistory>,
}

impl AccountBook {
    /// An empty book.
    ///
    /// # Errors
    /// [`DetectError::InvalidSetting`] if `settings` does not validate.
    pub fn new(settings: FraudSettings) -> Result<Self, DetectError> {
        settings.validate()?;
        Ok(Self { settings, accounts: BTreeMap::new() })
    }

    /// The settings in use.
    #[must_use]
    pub fn settings(&self) -> &FraudSettings {
        &self.settings
    }

    /// The history of `account`, if it transacted.
    #[must_use]
    pub fn history(&self, account: &str) -> Option<&AccountHistory> {
        self.accounts.get(account)
    }

    /// Computes the features of `tx` against its account's history, scores
    /// them, then records `tx`.
    pub fn assess(&mut self, tx: &Transaction) -> Assessment {
        let history = self.accounts.entry(tx.account.clone()).or_default();
        let features = history.features(tx, &self.settings);
        history.record(tx);
        let score = score(&features, &self.settings);
        Assessment { features, score }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fraud::Decision;

    fn t(secs: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_700_000_000 + secs, 0).unwrap()
    }

    fn tx(id: &str, amount: i64, country: &str, secs: i64) -> Transaction {
        Transaction {
            event_id: id.into(),
            account: "acc-1".into(),
            device: None,
            amount: Decimal::new(amount, 2),
            country: country.into(),
            merchant_category: None,
            at: t(secs),
        }
    }

    /// Features of `next` after recording `past`.
    fn features_after(past: &[Transaction], next: &Transaction) -> Features {
        let mut history = AccountHistory::default();
        for p in past {
            history.record(p);
        }
        history.features(next, &FraudSettings::default())
    }

    #[test]
    fn velocity_and_spend_slide_with_the_hour() {
        let past = [tx("a", 1000, "GB", 0), tx("b", 2000, "GB", 600), tx("c", 3000, "GB", 1200)];
        let at_50min = features_after(&past, &tx("d", 500, "GB", 3000));
        assert_eq!((at_50min.velocity_1h, at_50min.spend_1h), (4, Decimal::new(6500, 2)));
        let at_70min = features_after(&past, &tx("d", 500, "GB", 4200));
        assert_eq!((at_70min.velocity_1h, at_70min.spend_1h), (2, Decimal::new(3500, 2)), "600 s is exactly 1 h old");
        let first = features_after(&[], &tx("a", 100, "GB", 0));
        assert_eq!((first.velocity_1h, first.spend_1h), (1, Decimal::ONE));
    }

    #[test]
    fn velocity_ignores_later_transactions_and_recent_is_pruned() {
        let past = [tx("a", 100, "GB", 0), tx("b", 100, "GB", 3000)];
        let late = features_after(&past, &tx("c", 100, "GB", 100));
        assert_eq!(late.velocity_1h, 2, "b happened after c");
        let past = [tx("a", 100, "GB", 0), tx("b", 100, "GB", 5000)];
        let mut history = AccountHistory::default();
        for p in &past {
            history.record(p);
        }
        assert_eq!(history.recent.len(), 1);
        assert_eq!(history.latest, Some(t(5000)));
    }

    #[test]
    fn new_country_needs_history_and_an_unseen_country() {
        assert!(!features_after(&[], &tx("a", 100, "GB", 0)).new_country, "no history: nothing to compare");
        let past = [tx("a", 100, "GB", 0), tx("b", 100, "US", 10)];
        assert!(!features_after(&past, &tx("c", 100, "US", 20)).new_country);
        let fr = features_after(&past, &tx("c", 100, "FR", 20));
        assert!(fr.new_country);
        assert_eq!(fr.country, "FR");
    }

    #[test]
    fn amount_zscore_starts_after_five_transactions() {
        let amounts = [1000, 2000, 3000, 4000, 5000]; // 10..50: μ = 30, σ = √250
        let past: Vec<Transaction> = amounts
            .iter()
            .enumerate()
            .map(|(i, a)| tx(&format!("t{i}"), *a, "GB", i64::try_from(i).unwrap()))
            .collect();
        let four = features_after(&past[..4], &tx("n", 10_000, "GB", 10));
        assert_eq!((four.amount_zscore, four.amount_mean), (None, None));
        let five = features_after(&past, &tx("n", 10_000, "GB", 10));
        let expected = (100.0 - 30.0) / 250f64.sqrt();
        assert!((five.amount_zscore.unwrap() - expected).abs() < 1e-9, "{:?}", five.amount_zscore);
        assert!((five.amount_mean.unwrap() - 30.0).abs() < 1e-9);
    }

    #[test]
    fn amount_zscore_stays_finite_for_identical_amounts() {
        let past: Vec<Transaction> = (0..6).map(|i| tx(&format!("t{i}"), 999, "GB", i)).collect();
        let z = features_after(&past, &tx("n", 50_000, "GB", 10)).amount_zscore.unwrap();
        // σ′ = max(0, 0.01 · 9.99, 0.01) = 0.0999
        assert!((z - (500.0 - 9.99) / 0.0999).abs() < 1e-6, "{z}");
        assert_eq!(features_after(&past, &tx("n", 999, "GB", 10)).amount_zscore, Some(0.0));
    }

    #[test]
    fn merchant_risk_uses_the_table_or_the_default() {
        let settings = FraudSettings::default();
        let history = AccountHistory::default();
        let mut gambling = tx("a", 100, "GB", 0);
        gambling.merchant_category = Some("7995".into());
        assert!((history.features(&gambling, &settings).merchant_risk - 0.9).abs() < f64::EPSILON);
        gambling.merchant_category = Some("0000".into());
        assert!((history.features(&gambling, &settings).merchant_risk - 0.1).abs() < f64::EPSILON);
        assert!((history.features(&tx("b", 100, "GB", 0), &settings).merchant_risk - 0.1).abs() < f64::EPSILON);
        let odd = FraudSettings { merchant_risk: BTreeMap::from([("1".into(), 7.0)]), ..settings };
        assert!((odd.risk_of(Some("1")) - 1.0).abs() < f64::EPSILON, "clamped");
        assert!(odd.validate().is_err());
    }

    #[test]
    fn account_book_scores_before_recording() {
        let mut book = AccountBook::new(FraudSettings::default()).unwrap();
        let first = book.assess(&tx("a", 100, "GB", 0));
        assert_eq!(first.features.velocity_1h, 1);
        assert_eq!(first.score.decision, Decision::Approve);
        let second = book.assess(&tx("b", 100, "FR", 10));
        assert!(second.features.new_country);
        assert_eq!(book.history("acc-1").unwrap().count, 2);
        assert!(book.history("acc-2").is_none());
        assert_eq!(book.settings().review_at, 40);
    }

    #[test]
    fn invalid_settings_are_rejected() {
        let d = FraudSettings::default;
        assert!(FraudSettings { review_at: 80, ..d() }.validate().is_err());
        assert!(FraudSettings { decline_at: 101, ..d() }.validate().is_err());
        assert!(FraudSettings { default_merchant_risk: -0.1, ..d() }.validate().is_err());
        assert!(FraudSettings { zscore_threshold: f64::NAN, ..d() }.validate().is_err());
        assert!(FraudSettings { spend_limit_1h: Decimal::NEGATIVE_ONE, ..d() }.validate().is_err());
        assert!(AccountBook::new(FraudSettings { decline_at: 101, ..d() }).is_err());
    }
}
