//! The paper broker: accounts (a ledger and a risk check each), one fill
//! model, and the single entry point that takes an order through
//! idempotency, risk, the fill simulator, the ledger and the kill switch.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::ledger::KillSwitch;
use crate::ledger::{FillOutcome, Ledger, LedgerError, Prices};
use crate::order::{FillModel, Order, Reject, simulate_fill};
use crate::risk::{RiskCheck, RiskLimits, RiskRejection};

/// Why [`PaperBroker::submit`] refused an order.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum SubmitError {
    /// No account of that name was opened.
    #[error("unknown account {0:?}")]
    UnknownAccount(String),
    /// A risk limit refused the order.
    #[error(transparent)]
    Risk(#[from] RiskRejection),
    /// The fill simulator refused the order.
    #[error(transparent)]
    Fill(#[from] Reject),
    /// The ledger refused the fill (not expected from the broker's own fills).
    #[error(transparent)]
    Ledger(#[from] LedgerError),
}

impl SubmitError {
    /// The stable snake_case name the rejection is counted under: the
    /// limit's name for a risk rejection ([`RiskRejection::limit`]), the
    /// reason's for a fill reject ([`Reject::kind`]), else `unknown_account`
    /// or `ledger`.
    #[must_use]
    pub fn name(&self) -> &'static str {
        match self {
            SubmitError::UnknownAccount(_) => "unknown_account",
            SubmitError::Risk(rejection) => rejection.limit(),
            SubmitError::Fill(reject) => reject.kind(),
            SubmitError::Ledger(_) => "ledger",
        }
    }
}

/// One account at the broker.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Account {
    /// Its books.
    pub ledger: Ledger,
    /// Its limits, order window and kill switch.
    pub risk: RiskCheck,
}

/// The whole state of a [`PaperBroker`]: serialise it to save or compare a
/// run, and [`PaperBroker::from_snapshot`] to resume one. All maps are
/// ordered, so the same run serialises to the same bytes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BrokerSnapshot {
    /// How orders fill.
    pub fill_model: FillModel,
    /// The limits new accounts get from [`PaperBroker::open_account`].
    pub default_limits: RiskLimits,
    /// The accounts by name, each with its ledger and risk state (the
    /// kill switch is `risk.halted`).
    pub accounts: BTreeMap<String, Account>,
    /// Refused orders by [`SubmitError::name`].
    pub rejections: BTreeMap<String, u64>,
}

/// A simulated broker for paper trading under risk limits.
///
/// Deterministic: it reads no clock and draws no random numbers, so the same
/// calls with the same arguments leave the same state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PaperBroker {
    state: BrokerSnapshot,
}

impl PaperBroker {
    /// A broker with no accounts, filling under `fill_model`; accounts opened
    /// with [`PaperBroker::open_account`] trade under `default_limits`.
    #[must_use]
    pub fn new(fill_model: FillModel, default_limits: RiskLimits) -> Self {
        PaperBroker {
            state: BrokerSnapshot {
                fill_model,
                default_limits,
                accounts: BTreeMap::new(),
                rejections: BTreeMap::new(),
            },
        }
    }

    /// Resumes a broker from its snapshot.
    #[must_use]
    pub fn from_snapshot(snapshot: BrokerSnapshot) -> Self {
        PaperBroker { state: snapshot }
    }

    /// The broker's whole state.
    #[must_use]
    pub fn snapshot(&self) -> &BrokerSnapshot {
        &self.state
    }

    /// Opens `account` with `cash` under the default limits. Returns `false`,
    /// changing nothing, if it is already open.
    pub fn open_account(&mut self, account: impl Into<String>, cash: Decimal) -> bool {
        let limits = self.state.default_limits.clone();
        self.open_account_with_limits(account, cash, limits)
    }

    /// Opens `account` with `cash` under `limits`. Returns `false`, changing
    /// nothing, if it is already open.
    pub fn open_account_with_limits(&mut self, account: impl Into<String>, cash: Decimal, limits: RiskLimits) -> bool {
        let account = account.into();
        if self.state.accounts.contains_key(&account) {
            return false;
        }
        let opened = Account { ledger: Ledger::new(account.clone(), cash), risk: RiskCheck::new(limits) };
        self.state.accounts.insert(account, opened);
        true
    }

    /// The account of that name.
    #[must_use]
    pub fn account(&self, account: &str) -> Option<&Account> {
        self.state.accounts.get(account)
    }

    /// The ledger of that account.
    #[must_use]
    pub fn ledger(&self, account: &str) -> Option<&Ledger> {
        self.account(account).map(|account| &account.ledger)
    }

    /// The account's kill switch, if it is halted.
    #[must_use]
    pub fn halted(&self, account: &str) -> Option<&KillSwitch> {
        self.account(account).and_then(|account| account.risk.halted())
    }

    /// Refused orders by [`SubmitError::name`].
    #[must_use]
    pub fn rejections(&self) -> &BTreeMap<String, u64> {
        &self.state.rejections
    }

    /// Takes `order` against `mid_price` at `now`, in this order:
    ///
    /// 1. idempotency: if the order's `client_order_id` already filled in its
    ///    account, the earlier fill comes back as
    ///    [`FillOutcome::AlreadyFilled`], without touching any limit or
    ///    counter (even if the account has been halted since);
    /// 2. risk: [`RiskCheck::check`] at `mid_price`;
    /// 3. the fill simulator, [`simulate_fill`];
    /// 4. the ledger, [`Ledger::fill`];
    /// 5. the drawdown after the fill: if it trips the kill switch, the
    ///    outcome is [`FillOutcome::FilledAndHalted`].
    ///
    /// A refused order changes nothing but the rejection counter (and the
    /// drawdown check may trip the kill switch); an order the fill simulator
    /// refuses after passing risk has still used a slot of the orders-per-
    /// minute window.
    ///
    /// # Errors
    ///
    /// A [`SubmitError`] naming the reason.
    pub fn submit(
        &mut self,
        order: &Order,
        mid_price: Decimal,
        now: DateTime<Utc>,
    ) -> Result<FillOutcome, SubmitError> {
        let result = self.try_submit(order, mid_price, now);
        if let Err(error) = &result {
            *self.state.rejections.entry(error.name().to_owned()).or_default() += 1;
        }
        result
    }

    fn try_submit(
        &mut self,
        order: &Order,
        mid_price: Decimal,
        now: DateTime<Utc>,
    ) -> Result<FillOutcome, SubmitError> {
        let account = self
            .state
            .accounts
            .get_mut(&order.account)
            .ok_or_else(|| SubmitError::UnknownAccount(order.account.clone()))?;
        if let Some(previous) = account.ledger.filled(&order.client_order_id) {
            return Ok(FillOutcome::AlreadyFilled(previous.clone()));
        }
        account.risk.check(&account.ledger, order, mid_price, now)?;
        let fill = simulate_fill(order, mid_price, &self.state.fill_model)?;
        let outcome = account.ledger.fill(order, &fill)?;
        Ok(match account.risk.evaluate_drawdown(&account.ledger, &Prices::new(), now) {
            Some(kill_switch) => FillOutcome::FilledAndHalted { fill, kill_switch },
            None => outcome,
        })
    }

    /// Records a new price for `symbol` in every account (raising equity
    /// peaks where equity rose) and evaluates every account's drawdown,
    /// so a fall in price alone can halt an account. Returns the kill
    /// switches this tripped, by account. Non-positive prices are ignored.
    pub fn update_price(&mut self, symbol: &str, price: Decimal, now: DateTime<Utc>) -> Vec<(String, KillSwitch)> {
        if price <= Decimal::ZERO {
            return Vec::new();
        }
        let mut tripped = Vec::new();
        for (name, account) in &mut self.state.accounts {
            account.ledger.update_mark(symbol, price);
            if let Some(kill_switch) = account.risk.evaluate_drawdown(&account.ledger, &Prices::new(), now) {
                tripped.push((name.clone(), kill_switch));
            }
        }
        tripped
    }

    /// Lets the account trade again and measures its drawdown afresh from
    /// its equity now (at its last marks). Returns the kill switch that was
    /// set, or `None` if the account was not halted or does not exist.
    pub fn reset_kill_switch(&mut self, account: &str) -> Option<KillSwitch> {
        let account = self.state.accounts.get_mut(account)?;
        let kill_switch = account.risk.reset_kill_switch()?;
        account.ledger.rebase_peak();
        Some(kill_switch)
    }
}

#[cfg(test)]
#[path = "broker_tests.rs"]
mod tests;
