//! Orders, fills and the fill simulator: an order fills whole, at once, at
//! the mid price moved against it by a fixed slippage, and pays a fee
//! proportional to its notional.

use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use thiserror::Error;

/// Basis points in one whole (1 bp = 0.01 %).
const BPS: Decimal = Decimal::from_parts(10_000, 0, 0, false, 0);

/// The direction of an order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Side {
    /// Buy: increases the position (or covers a short).
    Buy,
    /// Sell: decreases the position (or opens a short).
    Sell,
}

impl Side {
    /// The sign this side gives a quantity: `+1` for a buy, `-1` for a sell.
    #[must_use]
    pub fn sign(self) -> Decimal {
        match self {
            Side::Buy => Decimal::ONE,
            Side::Sell => Decimal::NEGATIVE_ONE,
        }
    }

    /// `quantity` signed by this side: positive for a buy, negative for a sell.
    #[must_use]
    pub fn signed(self, quantity: Decimal) -> Decimal {
        quantity * self.sign()
    }
}

impl std::fmt::Display for Side {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Side::Buy => "buy",
            Side::Sell => "sell",
        })
    }
}

/// An order to trade one symbol for one account.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Order {
    /// The caller's id for the order. A retried order keeps its id, and an
    /// id that has filled once never fills again (see [`crate::Ledger::fill`]).
    pub client_order_id: String,
    /// The account that trades.
    pub account: String,
    /// The instrument traded.
    pub symbol: String,
    /// Buy or sell.
    pub side: Side,
    /// How much to trade; must be positive (the side gives the direction).
    pub quantity: Decimal,
    /// The worst price the order accepts: the most a buy pays, the least a
    /// sell gets. `None` for a market order.
    pub limit_price: Option<Decimal>,
}

/// How orders fill: a fee and a slippage, both in basis points of the price.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FillModel {
    /// The fee, in basis points of the fill's notional. Must not be negative.
    pub fee_bps: Decimal,
    /// How far from the mid an order fills, against it, in basis points of
    /// the mid: a buy pays `mid * (1 + slippage_bps / 10000)`, a sell gets
    /// `mid * (1 - slippage_bps / 10000)`. Must be in `[0, 10000)`.
    pub slippage_bps: Decimal,
}

impl FillModel {
    /// A model with no fee and no slippage: orders fill at the mid for free.
    /// Also what [`FillModel::default`] gives.
    pub const FRICTIONLESS: FillModel = FillModel { fee_bps: Decimal::ZERO, slippage_bps: Decimal::ZERO };

    /// A model with the given fee and slippage, both in basis points.
    #[must_use]
    pub fn new(fee_bps: Decimal, slippage_bps: Decimal) -> Self {
        FillModel { fee_bps, slippage_bps }
    }

    /// The price `side` fills at when the mid is `mid`.
    #[must_use]
    pub fn fill_price(&self, side: Side, mid: Decimal) -> Option<Decimal> {
        let slip = self.slippage_bps.checked_div(BPS)?;
        let factor = Decimal::ONE.checked_add(side.sign().checked_mul(slip)?)?;
        mid.checked_mul(factor)
    }

    /// The fee on a fill of `notional`.
    #[must_use]
    pub fn fee(&self, notional: Decimal) -> Option<Decimal> {
        notional.checked_mul(self.fee_bps)?.checked_div(BPS)
    }

    fn validate(&self) -> Result<(), Reject> {
        if self.fee_bps < Decimal::ZERO {
            return Err(Reject::InvalidFillModel { reason: format!("fee_bps {} is negative", self.fee_bps) });
        }
        if self.slippage_bps < Decimal::ZERO || self.slippage_bps >= BPS {
            return Err(Reject::InvalidFillModel {
                reason: format!("slippage_bps {} is outside [0, 10000)", self.slippage_bps),
            });
        }
        Ok(())
    }
}

/// A simulated execution of a whole order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Fill {
    /// The id of the order that filled.
    pub client_order_id: String,
    /// The account that traded.
    pub account: String,
    /// The instrument traded.
    pub symbol: String,
    /// Buy or sell.
    pub side: Side,
    /// The quantity filled: always the order's whole quantity.
    pub quantity: Decimal,
    /// The price paid (buy) or received (sell), slippage included.
    pub price: Decimal,
    /// The mid price the order was filled against.
    pub mid_price: Decimal,
    /// `quantity * price`.
    pub notional: Decimal,
    /// The fee paid, on top of the notional.
    pub fee: Decimal,
}

/// Why the fill simulator refused an order.
#[derive(Debug, Clone, PartialEq, Eq, Error, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Reject {
    /// The order's quantity is zero or negative.
    #[error("order quantity {quantity} is not positive")]
    InvalidQuantity {
        /// The quantity ordered.
        quantity: Decimal,
    },
    /// The mid price is zero or negative.
    #[error("mid price {price} is not positive")]
    InvalidPrice {
        /// The mid price given.
        price: Decimal,
    },
    /// The order's limit price is zero or negative.
    #[error("limit price {limit} is not positive")]
    InvalidLimitPrice {
        /// The limit price on the order.
        limit: Decimal,
    },
    /// The fill model cannot produce a price.
    #[error("invalid fill model: {reason}")]
    InvalidFillModel {
        /// What is wrong with it.
        reason: String,
    },
    /// A limit order would fill at a worse price than its limit.
    #[error("{side} limit {limit} is not marketable: it would fill at {fill_price}")]
    LimitNotMarketable {
        /// The order's side.
        side: Side,
        /// The order's limit price.
        limit: Decimal,
        /// The price it would have filled at, slippage included.
        fill_price: Decimal,
    },
    /// The fill's price, notional or fee is too large for a decimal.
    #[error("the fill's arithmetic overflows")]
    Overflow,
}

impl Reject {
    /// A stable snake_case name for the reason, for counters and logs.
    #[must_use]
    pub fn kind(&self) -> &'static str {
        match self {
            Reject::InvalidQuantity { .. } => "invalid_quantity",
            Reject::InvalidPrice { .. } => "invalid_price",
            Reject::InvalidLimitPrice { .. } => "invalid_limit_price",
            Reject::InvalidFillModel { .. } => "invalid_fill_model",
            Reject::LimitNotMarketable { .. } => "limit_not_marketable",
            Reject::Overflow => "overflow",
        }
    }
}

/// Fills `order` whole against `mid_price` under `model`.
///
/// A buy pays `mid * (1 + slippage)`, a sell gets `mid * (1 - slippage)`,
/// and the fee is `notional * fee_bps / 10000`. A limit order fills only if
/// that slipped price is no worse than its limit; otherwise it is rejected
/// with [`Reject::LimitNotMarketable`]. No rounding is applied (trailing
/// zeros are dropped: `100.100` is `100.1`).
///
/// # Errors
///
/// A [`Reject`] if the quantity, mid or limit is not positive, the model is
/// invalid, the limit is not marketable or the arithmetic overflows.
pub fn simulate_fill(order: &Order, mid_price: Decimal, model: &FillModel) -> Result<Fill, Reject> {
    if order.quantity <= Decimal::ZERO {
        return Err(Reject::InvalidQuantity { quantity: order.quantity });
    }
    if mid_price <= Decimal::ZERO {
        return Err(Reject::InvalidPrice { price: mid_price });
    }
    model.validate()?;
    let price = model.fill_price(order.side, mid_price).ok_or(Reject::Overflow)?.normalize();
    if let Some(limit) = order.limit_price {
        if limit <= Decimal::ZERO {
            return Err(Reject::InvalidLimitPrice { limit });
        }
        let marketable = match order.side {
            Side::Buy => price <= limit,
            Side::Sell => price >= limit,
        };
        if !marketable {
            return Err(Reject::LimitNotMarketable { side: order.side, limit, fill_price: price });
        }
    }
    let notional = order.quantity.checked_mul(price).ok_or(Reject::Overflow)?.normalize();
    let fee = model.fee(notional).ok_or(Reject::Overflow)?.normalize();
    Ok(Fill {
        client_order_id: order.client_order_id.clone(),
        account: order.account.clone(),
        symbol: order.symbol.clone(),
        side: order.side,
        quantity: order.quantity,
        price,
        mid_price,
        notional,
        fee,
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use std::str::FromStr;

    use super::*;

    fn d(text: &str) -> Decimal {
        Decimal::from_str(text).unwrap()
    }

    fn order(side: Side, quantity: &str, limit: Option<&str>) -> Order {
        Order {
            client_order_id: "o-1".into(),
            account: "acct".into(),
            symbol: "SIM-A".into(),
            side,
            quantity: d(quantity),
            limit_price: limit.map(d),
        }
    }

    #[test]
    fn fees_and_slippage_are_exact() {
        let model = FillModel::new(d("2.5"), d("10"));
        let buy = simulate_fill(&order(Side::Buy, "3", None), d("100"), &model).unwrap();
        assert_eq!(buy.price, d("100.1"));
        assert_eq!(buy.notional, d("300.3"));
        assert_eq!(buy.fee, d("0.0750750"));
        assert_eq!(buy.mid_price, d("100"));
        let sell = simulate_fill(&order(Side::Sell, "3", None), d("100"), &model).unwrap();
        assert_eq!(sell.price, d("99.9"));
        assert_eq!(sell.notional, d("299.7"));
        assert_eq!(sell.fee, d("0.0749250"));
    }

    #[test]
    fn a_frictionless_model_fills_at_the_mid_for_free() {
        let fill = simulate_fill(&order(Side::Buy, "7", None), d("12.34"), &FillModel::default()).unwrap();
        assert_eq!((fill.price, fill.notional, fill.fee), (d("12.34"), d("86.38"), Decimal::ZERO));
    }

    #[test]
    fn limits_are_checked_against_the_slipped_price() {
        let model = FillModel::new(Decimal::ZERO, d("10"));
        // A buy at mid 100 pays 100.1: a limit of 100.1 fills, 100.05 does not.
        assert!(simulate_fill(&order(Side::Buy, "1", Some("100.1")), d("100"), &model).is_ok());
        let reject = simulate_fill(&order(Side::Buy, "1", Some("100.05")), d("100"), &model).unwrap_err();
        assert_eq!(reject, Reject::LimitNotMarketable { side: Side::Buy, limit: d("100.05"), fill_price: d("100.1") });
        assert_eq!(reject.kind(), "limit_not_marketable");
        assert_eq!(reject.to_string(), "buy limit 100.05 is not marketable: it would fill at 100.1");
        // A sell at mid 100 gets 99.9: a limit of 99.9 fills, 99.95 does not.
        assert!(simulate_fill(&order(Side::Sell, "1", Some("99.9")), d("100"), &model).is_ok());
        let reject = simulate_fill(&order(Side::Sell, "1", Some("99.95")), d("100"), &model).unwrap_err();
        assert!(matches!(reject, Reject::LimitNotMarketable { side: Side::Sell, .. }));
    }

    #[test]
    fn bad_inputs_are_rejected() {
        let model = FillModel::default();
        let zero = simulate_fill(&order(Side::Buy, "0", None), d("1"), &model).unwrap_err();
        assert_eq!(zero.kind(), "invalid_quantity");
        let negative = simulate_fill(&order(Side::Buy, "-1", None), d("1"), &model).unwrap_err();
        assert_eq!(negative.kind(), "invalid_quantity");
        assert_eq!(simulate_fill(&order(Side::Buy, "1", None), d("0"), &model).unwrap_err().kind(), "invalid_price");
        let limit = simulate_fill(&order(Side::Buy, "1", Some("-2")), d("1"), &model).unwrap_err();
        assert_eq!(limit.kind(), "invalid_limit_price");
        let slippy = FillModel::new(Decimal::ZERO, d("10000"));
        assert_eq!(
            simulate_fill(&order(Side::Sell, "1", None), d("1"), &slippy).unwrap_err().kind(),
            "invalid_fill_model"
        );
        let rebate = FillModel::new(d("-1"), Decimal::ZERO);
        assert_eq!(
            simulate_fill(&order(Side::Sell, "1", None), d("1"), &rebate).unwrap_err().kind(),
            "invalid_fill_model"
        );
        let huge = simulate_fill(&order(Side::Buy, "79228162514264337593543950335", None), d("2"), &model);
        assert_eq!(huge.unwrap_err(), Reject::Overflow);
    }

    #[test]
    fn sides_serialise_in_snake_case() {
        assert_eq!(serde_json::to_string(&Side::Buy).unwrap(), "\"buy\"");
        assert_eq!(Side::Sell.signed(d("2")), d("-2"));
    }
}
