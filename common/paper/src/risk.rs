//! Pre-trade risk limits and the drawdown kill switch.
//!
//! Time is always passed in (`now`); nothing here reads a clock, so a replay
//! of the same orders at the same timestamps decides the same way.

use std::collections::VecDeque;

use chrono::{DateTime, TimeDelta, Utc};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::ledger::{KillSwitch, Ledger, Prices};
use crate::order::Order;

/// The limits one account trades under.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RiskLimits {
    /// The largest absolute quantity held in any one symbol.
    pub max_position_per_symbol: Decimal,
    /// The largest absolute `quantity * price` held in any one symbol.
    pub max_notional_per_symbol: Decimal,
    /// The largest gross notional, `sum(|quantity * price|)`, across symbols.
    pub max_total_notional: Decimal,
    /// The most orders accepted in any 60 s window.
    pub max_orders_per_minute: u32,
    /// The drawdown from peak equity, as a fraction (0.10 is 10 %), at which
    /// the kill switch trips. A drawdown must also be positive to trip it, so
    /// 0 halts on the first loss.
    pub max_drawdown: Decimal,
}

impl Default for RiskLimits {
    /// 1 000 units and 100 000 of notional per symbol, 250 000 of gross
    /// notional, 60 orders a minute and a 10 % drawdown.
    fn default() -> Self {
        RiskLimits {
            max_position_per_symbol: Decimal::from(1_000),
            max_notional_per_symbol: Decimal::from(100_000),
            max_total_notional: Decimal::from(250_000),
            max_orders_per_minute: 60,
            max_drawdown: Decimal::new(10, 2),
        }
    }
}

/// Which limit refused an order, with the limit and the value the order
/// would have reached.
#[derive(Debug, Clone, PartialEq, Eq, Error, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum RiskRejection {
    /// The account is halted; see [`RiskCheck::reset_kill_switch`].
    #[error("kill_switch: the account is halted since {} ({})", .0.at, .0.reason)]
    KillSwitch(KillSwitch),
    /// The drawdown reached the limit before this order; the kill switch has
    /// now tripped.
    #[error("max_drawdown: drawdown {reached} reached the limit of {limit}; the kill switch has tripped")]
    MaxDrawdown {
        /// The limit.
        limit: Decimal,
        /// The drawdown.
        reached: Decimal,
    },
    /// Too many orders in the last 60 s.
    #[error("max_orders_per_minute: this would be order {reached} in 60 s against a limit of {limit}")]
    MaxOrdersPerMinute {
        /// The limit.
        limit: u32,
        /// The count in the window with this order.
        reached: u64,
    },
    /// The position in the symbol would grow beyond the limit.
    #[error("max_position_per_symbol: {symbol} would reach {reached} against a limit of {limit}")]
    MaxPositionPerSymbol {
        /// The symbol.
        symbol: String,
        /// The limit.
        limit: Decimal,
        /// The absolute quantity after the order.
        reached: Decimal,
    },
    /// The notional in the symbol would grow beyond the limit.
    #[error("max_notional_per_symbol: {symbol} would reach {reached} against a limit of {limit}")]
    MaxNotionalPerSymbol {
        /// The symbol.
        symbol: String,
        /// The limit.
        limit: Decimal,
        /// The absolute notional after the order.
        reached: Decimal,
    },
    /// The gross notional would grow beyond the limit.
    #[error("max_total_notional: gross notional would reach {reached} against a limit of {limit}")]
    MaxTotalNotional {
        /// The limit.
        limit: Decimal,
        /// The gross notional after the order.
        reached: Decimal,
    },
    /// The order cannot be checked: wrong account, empty id, quantity or
    /// price not positive, or arithmetic overflow.
    #[error("invalid_order: {reason}")]
    InvalidOrder {
        /// What is wrong.
        reason: String,
    },
}

impl RiskRejection {
    /// The stable snake_case name of the limit, e.g. `"max_position_per_symbol"`.
    #[must_use]
    pub fn limit(&self) -> &'static str {
        match self {
            RiskRejection::KillSwitch(_) => "kill_switch",
            RiskRejection::MaxDrawdown { .. } => "max_drawdown",
            RiskRejection::MaxOrdersPerMinute { .. } => "max_orders_per_minute",
            RiskRejection::MaxPositionPerSymbol { .. } => "max_position_per_symbol",
            RiskRejection::MaxNotionalPerSymbol { .. } => "max_notional_per_symbol",
            RiskRejection::MaxTotalNotional { .. } => "max_total_notional",
            RiskRejection::InvalidOrder { .. } => "invalid_order",
        }
    }
}

/// The length of the orders-per-minute window.
const WINDOW: TimeDelta = TimeDelta::seconds(60);

/// One account's risk state: its limits, the times of the orders accepted in
/// the last minute, and the kill switch.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RiskCheck {
    limits: RiskLimits,
    recent_orders: VecDeque<DateTime<Utc>>,
    halted: Option<KillSwitch>,
}

impl RiskCheck {
    /// A fresh check under `limits`: no recent orders, not halted.
    #[must_use]
    pub fn new(limits: RiskLimits) -> Self {
        RiskCheck { limits, recent_orders: VecDeque::new(), halted: None }
    }

    /// The limits.
    #[must_use]
    pub fn limits(&self) -> &RiskLimits {
        &self.limits
    }

    /// The kill switch, if the account is halted.
    #[must_use]
    pub fn halted(&self) -> Option<&KillSwitch> {
        self.halted.as_ref()
    }

    /// Lets orders through again and returns the kill switch that was set.
    /// The drawdown is still measured from the ledger's peak: callers that
    /// want a fresh start also call [`Ledger::rebase_peak`] (as
    /// [`crate::PaperBroker::reset_kill_switch`] does).
    pub fn reset_kill_switch(&mut self) -> Option<KillSwitch> {
        self.halted.take()
    }

    /// The number of accepted orders in the 60 s up to `now`: those at
    /// times `t` with `now - 60 s < t`.
    #[must_use]
    pub fn orders_in_window(&self, now: DateTime<Utc>) -> usize {
        match now.checked_sub_signed(WINDOW) {
            Some(cutoff) => self.recent_orders.iter().filter(|at| **at > cutoff).count(),
            None => self.recent_orders.len(),
        }
    }

    /// Trips the kill switch if the ledger's drawdown at `prices` (the
    /// ledger's marks filling gaps) is positive and at least
    /// [`RiskLimits::max_drawdown`]. Returns the kill switch if this call
    /// tripped it; `None` if it did not or the account was already halted.
    pub fn evaluate_drawdown(&mut self, ledger: &Ledger, prices: &Prices, now: DateTime<Utc>) -> Option<KillSwitch> {
        if self.halted.is_some() {
            return None;
        }
        let drawdown = ledger.drawdown(prices);
        if drawdown <= Decimal::ZERO || drawdown < self.limits.max_drawdown {
            return None;
        }
        let kill_switch = KillSwitch {
            at: now,
            drawdown,
            reason: format!("drawdown {drawdown} reached max_drawdown {}", self.limits.max_drawdown),
        };
        self.halted = Some(kill_switch.clone());
        Some(kill_switch)
    }

    /// Decides whether `order`, priced at `price`, may trade now, and if so
    /// counts it in the orders-per-minute window.
    ///
    /// In order: the kill switch; the order's validity; the drawdown (with
    /// the order's symbol at `price`, which trips the kill switch if it is
    /// reached); orders per minute; then the position, the symbol's notional
    /// and the gross notional after the order, each at `price` for the
    /// order's symbol and at the ledger's marks for the others. An order
    /// that does not increase the symbol's absolute position passes the
    /// position and notional limits even above them, so risk can always be
    /// reduced unless the account is halted.
    ///
    /// # Errors
    ///
    /// The first [`RiskRejection`] that applies.
    pub fn check(
        &mut self,
        ledger: &Ledger,
        order: &Order,
        price: Decimal,
        now: DateTime<Utc>,
    ) -> Result<(), RiskRejection> {
        if let Some(kill_switch) = &self.halted {
            return Err(RiskRejection::KillSwitch(kill_switch.clone()));
        }
        validate(ledger, order, price)?;
        let prices = Prices::from([(order.symbol.clone(), price)]);
        if let Some(kill_switch) = self.evaluate_drawdown(ledger, &prices, now) {
            return Err(RiskRejection::MaxDrawdown { limit: self.limits.max_drawdown, reached: kill_switch.drawdown });
        }
        if let Some(cutoff) = now.checked_sub_signed(WINDOW) {
            self.recent_orders.retain(|at| *at > cutoff);
        }
        let reached = self.recent_orders.len() as u64 + 1;
        if reached > u64::from(self.limits.max_orders_per_minute) {
            return Err(RiskRejection::MaxOrdersPerMinute { limit: self.limits.max_orders_per_minute, reached });
        }
        self.check_exposure(ledger, order, &prices)?;
        self.recent_orders.push_back(now);
        Ok(())
    }

    fn check_exposure(&self, ledger: &Ledger, order: &Order, prices: &Prices) -> Result<(), RiskRejection> {
        let overflow = || RiskRejection::InvalidOrder { reason: "the exposure arithmetic overflows".into() };
        let price = prices.get(&order.symbol).copied().unwrap_or(Decimal::ZERO);
        let before = ledger.quantity(&order.symbol);
        let after = before.checked_add(order.side.signed(order.quantity)).ok_or_else(overflow)?.abs();
        let before = before.abs();
        if after <= before {
            return Ok(());
        }
        let limits = &self.limits;
        if after > limits.max_position_per_symbol {
            return Err(RiskRejection::MaxPositionPerSymbol {
                symbol: order.symbol.clone(),
                limit: limits.max_position_per_symbol,
                reached: after,
            });
        }
        let notional_before = before.checked_mul(price).ok_or_else(overflow)?;
        let notional_after = after.checked_mul(price).ok_or_else(overflow)?;
        if notional_after > limits.max_notional_per_symbol {
            return Err(RiskRejection::MaxNotionalPerSymbol {
                symbol: order.symbol.clone(),
                limit: limits.max_notional_per_symbol,
                reached: notional_after,
            });
        }
        let gross_before = ledger.mark(prices).gross_notional;
        let gross_after = gross_before
            .checked_sub(notional_before)
            .and_then(|others| others.checked_add(notional_after))
            .ok_or_else(overflow)?;
        if gross_after > limits.max_total_notional {
            return Err(RiskRejection::MaxTotalNotional { limit: limits.max_total_notional, reached: gross_after });
        }
        Ok(())
    }
}

fn validate(ledger: &Ledger, order: &Order, price: Decimal) -> Result<(), RiskRejection> {
    let reason = if order.account != ledger.account() {
        format!("order is for account {:?}, not {:?}", order.account, ledger.account())
    } else if order.client_order_id.is_empty() {
        "client_order_id is empty".to_owned()
    } else if order.quantity <= Decimal::ZERO {
        format!("quantity {} is not positive", order.quantity)
    } else if price <= Decimal::ZERO {
        format!("price {price} is not positive")
    } else {
        return Ok(());
    };
    Err(RiskRejection::InvalidOrder { reason })
}

#[cfg(test)]
#[path = "risk_tests.rs"]
mod tests;
