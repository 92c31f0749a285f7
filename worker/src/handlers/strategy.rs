//! `evaluate_strategy`: a moving-average crossover with a volatility filter
//! over the window of prices that triggered the command.

use rust_decimal::Decimal;
use rust_decimal::prelude::ToPrimitive;
use serde::{Deserialize, Serialize};
use shoal_config::SettingsError;
use shoal_protocol::messages::{Command, kinds};
use shoal_protocol::payloads::EvaluateStrategy;

use super::{HandlerContext, HandlerError, Skill};

/// The `[worker.strategy]` section: whether buy and sell signals become
/// orders for the next level (docs/levels.md).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StrategySettings {
    /// The paper account a `buy` or `sell` signal places a `paper_order`
    /// for (in the result's `next`, published to `worker.next_topic`);
    /// empty: signals only.
    pub order_account: String,
    /// The quantity of each such order.
    pub order_quantity: Decimal,
}

impl Default for StrategySettings {
    fn default() -> Self {
        Self { order_account: String::new(), order_quantity: Decimal::ONE }
    }
}

impl StrategySettings {
    /// Checks the section, naming keys under `worker.strategy.`.
    pub fn validate(&self) -> Result<(), SettingsError> {
        if self.order_quantity <= Decimal::ZERO {
            return Err(SettingsError::invalid(
                "worker.strategy.order_quantity",
                self.order_quantity.to_string(),
                "a quantity > 0",
            ));
        }
        Ok(())
    }
}

/// `evaluate_strategy` that also orders: a `buy` or `sell` signal adds a
/// `paper_order` for `order_account` at the window's last price to the
/// result's `next`.
#[derive(Debug, Clone)]
pub struct OrderingStrategy {
    settings: StrategySettings,
}

impl OrderingStrategy {
    /// The skill with `settings`.
    pub fn new(settings: StrategySettings) -> Self {
        Self { settings }
    }

    fn decide(&self, p: &EvaluateStrategy) -> Result<serde_json::Value, HandlerError> {
        let mut out = evaluate(p)?;
        let signal = out["signal"].as_str().unwrap_or("hold").to_string();
        if let (false, "buy" | "sell", Some(last)) =
            (self.settings.order_account.is_empty(), signal.as_str(), p.prices.last())
        {
            out[crate::levels::NEXT_FIELD] = serde_json::json!([{
                "kind": super::paper::KIND,
                "key": self.settings.order_account,
                "payload": {
                    "symbol": p.symbol,
                    "side": signal,
                    "quantity": self.settings.order_quantity.to_string(),
                    "mid_price": last.to_string(),
                },
            }]);
        }
        Ok(out)
    }
}

#[async_trait::async_trait]
impl Skill for OrderingStrategy {
    const KIND: &'static str = kinds::EVALUATE_STRATEGY;
    type Payload = EvaluateStrategy;
    type Output = serde_json::Value;

    async fn run(
        &self,
        payload: EvaluateStrategy,
        _command: &Command,
        _ctx: &HandlerContext<'_>,
    ) -> Result<serde_json::Value, HandlerError> {
        self.decide(&payload)
    }
}

/// Short average length (most recent prices).
const SHORT: usize = 5;

fn mean(values: &[Decimal]) -> Decimal {
    // Callers guarantee a non-empty slice.
    values.iter().sum::<Decimal>() / Decimal::from(values.len())
}

/// The skill: a pure function of the payload (see [`super::pure`]).
pub fn evaluate(p: &EvaluateStrategy) -> Result<serde_json::Value, HandlerError> {
    if p.prices.len() < 2 {
        return Err(HandlerError::Rejected(format!("need at least 2 prices, got {}", p.prices.len())));
    }
    if p.prices.iter().any(|x| *x <= Decimal::ZERO) {
        return Err(HandlerError::Rejected("prices must be positive".into()));
    }
    let long_ma = mean(&p.prices);
    let short_ma = mean(&p.prices[p.prices.len().saturating_sub(SHORT)..]);
    // Volatility of one-step returns, in basis points; statistics are
    // reported as floats, prices stay exact.
    let returns: Vec<f64> = p.prices.windows(2).filter_map(|w| ((w[1] - w[0]) / w[0]).to_f64()).collect();
    let avg = returns.iter().sum::<f64>() / returns.len() as f64;
    let variance = returns.iter().map(|r| (r - avg).powi(2)).sum::<f64>() / returns.len() as f64;
    let volatility_bps = (variance.sqrt() * 10_000.0 * 100.0).round() / 100.0;
    let spread_bps = ((short_ma - long_ma) / long_ma * Decimal::from(10_000)).round_dp(2);
    let signal = if volatility_bps > 200.0 {
        "hold" // too noisy to act on
    } else if spread_bps > Decimal::from(5) && p.change_bps > 0 {
        "buy"
    } else if spread_bps < Decimal::from(-5) && p.change_bps < 0 {
        "sell"
    } else {
        "hold"
    };
    Ok(serde_json::json!({
        "symbol": p.symbol,
        "signal": signal,
        "short_ma": short_ma.round_dp(6).to_string(),
        "long_ma": long_ma.round_dp(6).to_string(),
        "spread_bps": spread_bps.to_string(),
        "volatility_bps": volatility_bps,
        "samples": p.prices.len(),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(prices: &[&str], change_bps: i64) -> EvaluateStrategy {
        EvaluateStrategy {
            symbol: "SIM-A".into(),
            window_secs: 30,
            prices: prices.iter().map(|s| s.parse().unwrap()).collect(),
            change_bps,
        }
    }

    #[test]
    fn rising_prices_signal_buy() {
        let out = evaluate(&p(&["100", "100.1", "100.2", "100.3", "100.5", "100.8", "101", "101.2"], 120)).unwrap();
        assert_eq!(out["signal"], "buy");
    }

    #[test]
    fn falling_prices_signal_sell() {
        let out = evaluate(&p(&["101.2", "101", "100.8", "100.5", "100.3", "100.2", "100.1", "100"], -120)).unwrap();
        assert_eq!(out["signal"], "sell");
    }

    #[test]
    fn with_an_account_buy_and_sell_signals_order_for_the_next_level() {
        let settings = StrategySettings { order_account: "paper-1".into(), order_quantity: Decimal::from(2) };
        let skill = OrderingStrategy::new(settings);
        let out = skill.decide(&p(&["100", "100.1", "100.2", "100.3", "100.5", "100.8", "101", "101.2"], 120)).unwrap();
        assert_eq!(out["signal"], "buy");
        assert_eq!(
            out["next"],
            serde_json::json!([{"kind": "paper_order", "key": "paper-1",
                "payload": {"symbol": "SIM-A", "side": "buy", "quantity": "2", "mid_price": "101.2"}}])
        );
        let order: super::super::paper::PaperOrder = serde_json::from_value(out["next"][0]["payload"].clone()).unwrap();
        assert_eq!(order.mid_price, "101.2".parse::<Decimal>().unwrap(), "the payload is a paper_order's");
        let hold = skill.decide(&p(&["100", "100", "100", "100", "100", "100"], 0)).unwrap();
        assert!(hold.get("next").is_none(), "a hold orders nothing");
        let off = OrderingStrategy::new(StrategySettings::default());
        assert!(
            off.decide(&p(&["101.2", "101", "100.8", "100.5", "100.3", "100.2", "100.1", "100"], -120))
                .unwrap()
                .get("next")
                .is_none()
        );
    }

    #[test]
    fn too_few_or_non_positive_prices_are_rejected() {
        assert!(evaluate(&p(&["100"], 0)).is_err());
        assert!(evaluate(&p(&["100", "0"], 0)).is_err());
    }
}
