//! `evaluate_strategy`: a moving-average crossover with a volatility filter
//! over the window of prices that triggered the command.

use rust_decimal::Decimal;
use rust_decimal::prelude::ToPrimitive;
use shoal_protocol::payloads::EvaluateStrategy;

use super::HandlerError;

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
    fn too_few_or_non_positive_prices_are_rejected() {
        assert!(evaluate(&p(&["100"], 0)).is_err());
        assert!(evaluate(&p(&["100", "0"], 0)).is_err());
    }
}
