//! Shoal's paper trading: simulated fills booked to per-account ledgers,
//! behind pre-trade risk limits and a drawdown kill switch. Pure and
//! deterministic: no I/O, no clock (every time is passed in as `now`), no
//! randomness and no hash maps in anything serialised, so a backtest that
//! replays the same orders and prices gets byte-identical snapshots.
//!
//! # The model
//!
//! [`PaperBroker::submit`] takes an [`Order`] for one account with the
//! symbol's mid price and the time, and in order:
//!
//! 1. **idempotency**: an order whose `client_order_id` has already filled
//!    in the account returns that earlier fill
//!    ([`FillOutcome::AlreadyFilled`]) and changes nothing, so a retried
//!    order never fills twice;
//! 2. **risk** ([`RiskCheck::check`] under the account's [`RiskLimits`]):
//!    the kill switch, the drawdown, orders per minute (a sliding 60 s
//!    window over the `now`s passed in), the absolute position and notional
//!    per symbol and the gross notional across symbols after the order. An
//!    order that does not grow the symbol's absolute position passes the
//!    position and notional limits, so exposure can always be reduced unless
//!    the account is halted. A refusal is a [`RiskRejection`] naming the
//!    limit ([`RiskRejection::limit`]), its value and the value reached;
//! 3. **the fill** ([`simulate_fill`] under the broker's [`FillModel`]): a
//!    buy pays `mid * (1 + slippage_bps / 10000)`, a sell gets
//!    `mid * (1 - slippage_bps / 10000)`, the fee is
//!    `notional * fee_bps / 10000`, and a limit order whose slipped price is
//!    worse than its limit is rejected ([`Reject::LimitNotMarketable`]);
//! 4. **the ledger** ([`Ledger::fill`]): cash moves by the notional and the
//!    fee; the signed position moves, at average cost, realising P&L when it
//!    is reduced and re-opening at the fill price when it goes through flat;
//! 5. **the kill switch**: if the drawdown from peak equity is now at least
//!    [`RiskLimits::max_drawdown`], the account is halted
//!    ([`FillOutcome::FilledAndHalted`]) and every later order is refused
//!    with [`RiskRejection::KillSwitch`] until
//!    [`PaperBroker::reset_kill_switch`].
//!
//! Equity is `cash + sum(quantity * price)`; a [`Ledger`] values positions
//! at the prices given, else at the last price it saw for the symbol (a
//! fill's mid or [`PaperBroker::update_price`]), else at average cost. The
//! equity peak, which drawdown is measured from, is raised whenever equity
//! is observed higher. Realised P&L is before fees; fees are kept apart.
//! Decimals are exact and never rounded (beyond `rust_decimal`'s 28
//! significant digits, which an average cost may need).
//!
//! # What is not simulated
//!
//! There is no order book, queue position or market impact: every order that
//! passes risk fills whole, at once, at the slipped mid. There are no partial
//! fills, no resting orders (a non-marketable limit order is rejected, not
//! queued), no cancels, no latency between submission and fill, no margin or
//! buying-power check (cash may go negative; the notional limits bound
//! exposure), no borrow costs for shorts, no funding or interest, and no
//! currencies: every amount is in one unit.

#![warn(missing_docs)]

pub mod broker;
pub mod ledger;
pub mod order;
pub mod risk;

#[cfg(test)]
mod proptests;

pub use broker::{Account, BrokerSnapshot, PaperBroker, SubmitError};
pub use ledger::{FillOutcome, KillSwitch, Ledger, LedgerError, Mark, Position, Prices};
pub use order::{Fill, FillModel, Order, Reject, Side, simulate_fill};
pub use risk::{RiskCheck, RiskLimits, RiskRejection};
