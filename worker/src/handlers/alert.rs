//! `raise_alert`: classifies a level crossing and builds the alert.

use rust_decimal::Decimal;
use shoal_protocol::payloads::RaiseAlert;

use super::HandlerError;

/// The skill: a pure function of the payload (see [`super::pure`]).
pub fn alert(p: &RaiseAlert) -> Result<serde_json::Value, HandlerError> {
    if p.previous_price <= Decimal::ZERO {
        return Err(HandlerError::Rejected("previous_price must be positive".into()));
    }
    let direction = if p.price >= p.previous_price { "up" } else { "down" };
    let move_bps = ((p.price - p.previous_price) / p.previous_price * Decimal::from(10_000)).round_dp(2);
    let severity = match move_bps.abs() {
        m if m >= Decimal::from(100) => "critical",
        m if m >= Decimal::from(25) => "warning",
        _ => "info",
    };
    Ok(serde_json::json!({
        "symbol": p.symbol,
        "direction": direction,
        "severity": severity,
        "move_bps": move_bps.to_string(),
        "message": format!("{} crossed {} {} (now {})", p.symbol, p.level, direction, p.price),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn crossing(level: &str, previous_price: &str, price: &str) -> RaiseAlert {
        RaiseAlert {
            symbol: "SIM-A".into(),
            level: level.parse().unwrap(),
            previous_price: previous_price.parse().unwrap(),
            price: price.parse().unwrap(),
        }
    }

    #[test]
    fn a_big_jump_through_a_level_is_critical() {
        let out = alert(&crossing("100", "98.5", "100.2")).unwrap();
        assert_eq!(out["direction"], "up");
        assert_eq!(out["severity"], "critical");
        assert_eq!(out["move_bps"], "172.59");
    }

    #[test]
    fn landing_on_a_level_from_above_is_down() {
        let out = alert(&crossing("100.00", "100.09", "100.00")).unwrap();
        assert_eq!(out["direction"], "down");
    }
}
