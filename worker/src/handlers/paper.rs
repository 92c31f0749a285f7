//! `paper_order`: paper execution with risk limits (`shoal-paper`), one
//! account per command key, orders that never fill twice.
//!
//! The journal is the account's book. Each order is one journalled effect
//! step, `order`, whose recorded outcome holds the order, the mid price and
//! the time it was decided at, and the decision (the fill, or the limit that
//! refused it). To decide an order, the skill rebuilds the account from the
//! journal — every recorded `order` step of the account, replayed in the
//! order they were decided through the same broker logic — then submits the
//! new order. The order's client order id is the journal's idempotency key
//! (`<command id>/order`): a command run again after a crash, a rebalance
//! or an abort gets its recorded decision back, and the order is not filled
//! a second time.
//!
//! Time is the command's `issued_at` (orders per minute are per minute of
//! decision time), so a replay decides the same way.

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use shoal_config::SettingsError;
use shoal_paper::{FillModel, FillOutcome, Order, PaperBroker, RiskLimits, Side, SubmitError};
use shoal_protocol::messages::Command;

use super::{HandlerContext, HandlerError, Skill};
use crate::journal::{JournalRecord, StepState};

/// The command kind.
pub const KIND: &str = "paper_order";

/// The journal step of an order.
const STEP: &str = "order";

/// The `[worker.paper]` section.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PaperSettings {
    /// Register the `paper_order` skill.
    pub enabled: bool,
    /// Starting cash of every account.
    pub cash: Decimal,
    /// Fee, basis points of the notional.
    pub fee_bps: Decimal,
    /// Slippage against the mid price, basis points.
    pub slippage_bps: Decimal,
    /// Risk limits of every account.
    pub limits: RiskLimits,
}

impl Default for PaperSettings {
    fn default() -> Self {
        Self {
            enabled: false,
            cash: Decimal::from(100_000),
            fee_bps: Decimal::ONE,
            slippage_bps: Decimal::TWO,
            limits: RiskLimits::default(),
        }
    }
}

impl PaperSettings {
    /// Checks the section, naming keys under `worker.paper.`.
    pub fn validate(&self) -> Result<(), SettingsError> {
        let positive = |key: &str, value: Decimal| {
            if value > Decimal::ZERO {
                Ok(())
            } else {
                Err(SettingsError::invalid(key, value.to_string(), "a number > 0"))
            }
        };
        let not_negative = |key: &str, value: Decimal| {
            if value >= Decimal::ZERO {
                Ok(())
            } else {
                Err(SettingsError::invalid(key, value.to_string(), "a number >= 0"))
            }
        };
        positive("worker.paper.cash", self.cash)?;
        not_negative("worker.paper.fee_bps", self.fee_bps)?;
        not_negative("worker.paper.slippage_bps", self.slippage_bps)?;
        let l = &self.limits;
        positive("worker.paper.limits.max_position_per_symbol", l.max_position_per_symbol)?;
        positive("worker.paper.limits.max_notional_per_symbol", l.max_notional_per_symbol)?;
        positive("worker.paper.limits.max_total_notional", l.max_total_notional)?;
        if l.max_orders_per_minute == 0 {
            return Err(SettingsError::invalid("worker.paper.limits.max_orders_per_minute", "0", "an integer >= 1"));
        }
        if l.max_drawdown <= Decimal::ZERO || l.max_drawdown > Decimal::ONE {
            return Err(SettingsError::invalid(
                "worker.paper.limits.max_drawdown",
                l.max_drawdown.to_string(),
                "a fraction of peak equity in (0, 1], e.g. 0.1",
            ));
        }
        Ok(())
    }
}

/// The command's payload: an order for the account named by the command's
/// key.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PaperOrder {
    /// Instrument.
    pub symbol: String,
    /// `buy` or `sell`.
    pub side: Side,
    /// Quantity, > 0.
    pub quantity: Decimal,
    /// The mid price the order is filled against (the live state's price
    /// when the order was decided).
    pub mid_price: Decimal,
    /// A limit price; none: a market order.
    #[serde(default)]
    pub limit_price: Option<Decimal>,
}

/// What the journal keeps of a decided order: enough to decide it again.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Decided {
    order: Order,
    mid_price: Decimal,
    at: DateTime<Utc>,
    /// `filled` or `rejected`.
    status: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    fill: Option<shoal_paper::Fill>,
    /// The limit (or fill check) that refused it.
    #[serde(skip_serializing_if = "Option::is_none")]
    rejected_by: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    reason: Option<String>,
    /// Set when this order's fill tripped the kill switch.
    #[serde(skip_serializing_if = "Option::is_none")]
    kill_switch: Option<shoal_paper::KillSwitch>,
}

/// The skill.
#[derive(Debug, Clone)]
pub struct PaperSkill {
    settings: PaperSettings,
}

impl PaperSkill {
    /// The skill with `settings`.
    pub fn new(settings: PaperSettings) -> Self {
        Self { settings }
    }

    fn broker(&self, account: &str) -> PaperBroker {
        let s = &self.settings;
        let mut broker = PaperBroker::new(FillModel::new(s.fee_bps, s.slippage_bps), s.limits.clone());
        broker.open_account(account, s.cash);
        broker
    }

    /// The account as the journal's recorded decisions make it, in the
    /// order they were decided.
    fn rebuild(&self, account: &str, records: &[JournalRecord]) -> PaperBroker {
        let mut decided: Vec<(DateTime<Utc>, uuid::Uuid, Decided)> = records
            .iter()
            .filter(|r| r.step == STEP && r.state == StepState::Done)
            .filter_map(|r| {
                let d: Decided = serde_json::from_value(r.outcome.clone()?).ok()?;
                (d.order.account == account).then_some((d.at, r.command_id, d))
            })
            .collect();
        decided.sort_by_key(|(at, id, _)| (*at, *id));
        let mut broker = self.broker(account);
        for (_, _, d) in decided {
            // The same logic on the same inputs: the same decision.
            let _ = broker.submit(&d.order, d.mid_price, d.at);
        }
        broker
    }
}

fn decide(broker: &mut PaperBroker, order: Order, mid_price: Decimal, at: DateTime<Utc>) -> Decided {
    let mut d = Decided {
        order,
        mid_price,
        at,
        status: "filled".into(),
        fill: None,
        rejected_by: None,
        reason: None,
        kill_switch: None,
    };
    match broker.submit(&d.order, mid_price, at) {
        Ok(outcome) => {
            d.kill_switch = outcome.kill_switch().cloned();
            d.fill = Some(outcome.fill().clone());
            if let FillOutcome::AlreadyFilled(_) = outcome {
                d.reason = Some("already filled".into());
            }
        }
        Err(error) => {
            d.status = "rejected".into();
            d.rejected_by = Some(error.name().to_string());
            d.reason = Some(match &error {
                SubmitError::Risk(r) => r.to_string(),
                other => other.to_string(),
            });
        }
    }
    d
}

#[async_trait::async_trait]
impl Skill for PaperSkill {
    const KIND: &'static str = KIND;
    type Payload = PaperOrder;
    type Output = serde_json::Value;

    async fn run(
        &self,
        p: PaperOrder,
        command: &Command,
        ctx: &HandlerContext<'_>,
    ) -> Result<serde_json::Value, HandlerError> {
        if p.quantity <= Decimal::ZERO || p.mid_price <= Decimal::ZERO {
            return Err(HandlerError::Rejected(format!(
                "quantity and mid_price must be > 0 (got {} and {})",
                p.quantity, p.mid_price
            )));
        }
        let account = command.key.clone();
        let records = ctx.journal_records().await?;
        let mut broker = self.rebuild(&account, &records);
        let order = Order {
            client_order_id: crate::journal::idempotency_key(command.id, STEP),
            account: account.clone(),
            symbol: p.symbol,
            side: p.side,
            quantity: p.quantity,
            limit_price: p.limit_price,
        };
        let args = serde_json::json!({ "order": order, "mid_price": p.mid_price, "at": command.issued_at });
        let at = command.issued_at;
        let outcome = ctx
            .effect(STEP, &args, |_key| {
                let decided = decide(&mut broker, order.clone(), p.mid_price, at);
                async move { serde_json::to_value(decided).map_err(|e| HandlerError::Rejected(e.to_string())) }
            })
            .await?;
        // `broker` now holds this order either way: submitted just now, or,
        // when the journal answered, replayed by the rebuild above.
        let after = broker;
        let ledger = after.ledger(&account).map(|l| {
            let mark = l.mark(l.marks());
            serde_json::json!({
                "cash": l.cash(), "positions": l.positions(), "realised_pnl": l.realised_pnl(),
                "fees_paid": l.fees_paid(), "equity": mark.equity, "fills": l.fill_count(),
            })
        });
        Ok(serde_json::json!({
            "account": account,
            "decision": outcome,
            "ledger": ledger,
            "halted": after.halted(&account).is_some(),
        }))
    }
}

#[cfg(test)]
mod tests;
