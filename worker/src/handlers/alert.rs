//! `raise_alert`: classifies a level crossing and builds the alert.

use rust_decimal::Decimal;
use shoal_protocol::messages::Command;
use shoal_protocol::payloads::RaiseAlert;

use super::{Handler, HandlerError, payload};

/// Handler for `raise_alert`.
#[derive(Debug, Clone, Copy)]
pub struct RaiseAlertHandler;

/// Pure evaluation, separate from the async trait for unit tests.
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

#[async_trait::async_trait]
impl Handler for RaiseAlertHandler {
    async fn handle(&self, command: &Command, _attempt: u32) -> Result<serde_json::Value, HandlerError> {
        alert(&payload(command)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_big_jump_through_a_level_is_critical() {
        let out = alert(&RaiseAlert {
            symbol: "SIM-A".into(),
            level: "100".parse().unwrap(),
            previous_price: "98.5".parse().unwrap(),
            price: "100.2".parse().unwrap(),
        })
        .unwrap();
        assert_eq!(out["direction"], "up");
        assert_eq!(out["severity"], "critical");
        assert_eq!(out["move_bps"], "172.59");
    }

    #[test]
    fn landing_on_a_level_from_above_is_down() {
        let out = alert(&RaiseAlert {
            symbol: "SIM-A".into(),
            level: "100.00".parse().unwrap(),
            previous_price: "100.09".parse().unwrap(),
            price: "100.00".parse().unwrap(),
        })
        .unwrap();
        assert_eq!(out["direction"], "down");
    }
}
