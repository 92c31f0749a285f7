//! `shoal-backtest`: replays a recording of market ticks through the
//! trading topology on a virtual clock, as fast as the machine allows, and
//! prints what it decided, traded and earned.
//!
//! The topology, in process and in feed order, with the code the live
//! system runs:
//!
//! 1. the orchestrator's state and rules (`shoal_orchestrator::rules::decide`)
//!    turn each tick into commands (`raise_alert`, `evaluate_strategy`);
//! 2. the workers' bundled skills decide each command
//!    (`shoal_worker::handlers::Registry::with_builtin`);
//! 3. a `buy` or `sell` signal becomes an order for the paper account, with
//!    the client order id the journal would give it (`<command id>/order`),
//!    checked against the risk limits and filled at the tick's price with
//!    fees and slippage (`shoal_paper`); every tick marks the account.
//!
//! Time is the ticks' event time (no clock is read), command ids are
//! derived from their position in the run, and nothing external is called:
//! the same recording and settings give byte-identical commands, results
//! and ledger, summarised by one digest.

pub mod diff;
pub mod frames;
pub mod plot;
pub mod record;
pub mod recording;

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use serde::Serialize;
use sha2::{Digest as _, Sha256};
use shoal_orchestrator::rules::{RulesSettings, decide};
use shoal_orchestrator::state::StateSettings;
use shoal_paper::{FillModel, KillSwitch, Order, PaperBroker, RiskLimits, Side, SubmitError};
use shoal_protocol::messages::{Command, CommandResult, MarketTick, ResultStatus, SCHEMA_VERSION, kinds};
use shoal_state::{Input, Provenance, Record, State};
use shoal_worker::handlers::Registry;

/// The paper account's settings.
#[derive(Debug, Clone)]
pub struct AccountSettings {
    /// Account name.
    pub account: String,
    /// Starting cash.
    pub cash: Decimal,
    /// Quantity of each order.
    pub quantity: Decimal,
    /// Fees and slippage.
    pub fill: FillModel,
    /// Risk limits.
    pub limits: RiskLimits,
}

/// What a run needs.
#[derive(Debug, Clone)]
pub struct Setup {
    /// The orchestrator's `[state]` section.
    pub state: StateSettings,
    /// The orchestrator's `[rules]` section.
    pub rules: RulesSettings,
    /// The paper account.
    pub account: AccountSettings,
}

/// One point of the equity curve.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct EquityPoint {
    /// Event time.
    pub at: DateTime<Utc>,
    /// Equity then.
    pub equity: Decimal,
}

/// What a run produced.
#[derive(Debug)]
pub struct Outcome {
    /// Ticks replayed.
    pub ticks: usize,
    /// Commands the rules issued, in order.
    pub commands: Vec<Command>,
    /// Their results, in order.
    pub results: Vec<CommandResult>,
    /// Orders sent to the paper broker.
    pub orders: u64,
    /// Orders filled.
    pub fills: u64,
    /// The account's equity after each tick.
    pub equity: Vec<EquityPoint>,
    /// Largest fall from a peak of equity, as a fraction.
    pub max_drawdown: Decimal,
    /// Set when the drawdown limit stopped the account.
    pub kill_switch: Option<KillSwitch>,
    /// The broker at the end.
    pub broker: PaperBroker,
    /// SHA-256 of the commands, results and final broker state.
    pub digest: String,
}

/// Why a run failed.
#[derive(Debug, thiserror::Error)]
pub enum BacktestError {
    /// A command, result or the ledger could not be encoded.
    #[error("encoding the run's output: {0}")]
    Encode(#[from] serde_json::Error),
}

/// Deterministic id of the `n`th command of a run.
fn command_id(n: u64) -> uuid::Uuid {
    uuid::Uuid::from_u64_pair(0x5e0a_1bac_0000_0000, n)
}

/// Replays `ticks` through the topology.
pub async fn run(ticks: &[MarketTick], setup: &Setup) -> Result<Outcome, BacktestError> {
    let registry = Registry::with_builtin();
    let mut state = State::new(setup.state.model(&setup.rules));
    let a = &setup.account;
    let mut broker = PaperBroker::new(a.fill, a.limits.clone());
    broker.open_account(a.account.clone(), a.cash);
    let mut seqs: BTreeMap<String, u64> = BTreeMap::new();
    let (mut commands, mut results, mut equity) = (Vec::new(), Vec::new(), Vec::with_capacity(ticks.len()));
    let (mut orders, mut fills) = (0u64, 0u64);
    let mut kill_switch = None;
    for (offset, tick) in ticks.iter().enumerate() {
        let now = tick.exchange_ts;
        let input = Input {
            provenance: Provenance::new("recording", 0, i64::try_from(offset).unwrap_or(i64::MAX)),
            record: Record::Tick(tick.clone()),
        };
        let decision = decide(&mut state, &setup.rules, &input);
        for (_, tripped) in broker.update_price(&tick.symbol, tick.price, now) {
            kill_switch.get_or_insert(tripped);
        }
        for draft in decision.drafts {
            let seq = seqs.entry(draft.key.clone()).or_default();
            *seq += 1;
            let command = Command {
                schema_version: SCHEMA_VERSION,
                id: command_id(commands.len() as u64),
                kind: draft.kind,
                key: draft.key,
                seq: *seq,
                issued_at: now,
                deadline: None,
                payload: draft.payload,
            };
            let (status, output) = match registry.get(&command.kind) {
                Some(handler) => match handler.handle(&command, 1).await {
                    Ok(output) => (ResultStatus::Succeeded, output),
                    Err(error) => (ResultStatus::Failed, serde_json::json!({ "error": error.to_string() })),
                },
                None => (ResultStatus::Unsupported, serde_json::json!({ "error": "no handler" })),
            };
            if command.kind == kinds::EVALUATE_STRATEGY && status == ResultStatus::Succeeded {
                let side = match output["signal"].as_str() {
                    Some("buy") => Some(Side::Buy),
                    Some("sell") => Some(Side::Sell),
                    _ => None,
                };
                if let Some(side) = side {
                    orders += 1;
                    let order = Order {
                        client_order_id: format!("{}/order", command.id),
                        account: a.account.clone(),
                        symbol: tick.symbol.clone(),
                        side,
                        quantity: a.quantity,
                        limit_price: None,
                    };
                    match broker.submit(&order, tick.price, now) {
                        Ok(outcome) => {
                            fills += 1;
                            if let Some(tripped) = outcome.kill_switch() {
                                kill_switch.get_or_insert(tripped.clone());
                            }
                        }
                        Err(SubmitError::Risk(_) | SubmitError::Fill(_)) => {}
                        Err(other) => tracing::warn!(%other, "paper order not placed"),
                    }
                }
            }
            results.push(CommandResult::answering(&command, "backtest", status, output, (now, now)));
            commands.push(command);
        }
        if let Some(ledger) = broker.ledger(&a.account) {
            equity.push(EquityPoint { at: now, equity: ledger.equity(ledger.marks()) });
        }
    }
    let max_drawdown = max_drawdown(&equity);
    let digest = digest(&commands, &results, &broker)?;
    Ok(Outcome {
        ticks: ticks.len(),
        commands,
        results,
        orders,
        fills,
        equity,
        max_drawdown,
        kill_switch,
        broker,
        digest,
    })
}

/// Largest fall from a running peak, as a fraction of the peak.
pub fn max_drawdown(curve: &[EquityPoint]) -> Decimal {
    let mut peak = Decimal::MIN;
    let mut worst = Decimal::ZERO;
    for p in curve {
        peak = peak.max(p.equity);
        if peak > Decimal::ZERO {
            worst = worst.max((peak - p.equity) / peak);
        }
    }
    worst.round_dp(6)
}

fn digest(commands: &[Command], results: &[CommandResult], broker: &PaperBroker) -> Result<String, BacktestError> {
    let mut hash = Sha256::new();
    for c in commands {
        hash.update(serde_json::to_vec(c)?);
        hash.update(b"\n");
    }
    for r in results {
        hash.update(serde_json::to_vec(r)?);
        hash.update(b"\n");
    }
    hash.update(serde_json::to_vec(broker.snapshot())?);
    let hex: String = hash.finalize().iter().map(|b| format!("{b:02x}")).collect();
    Ok(format!("sha256:{hex}"))
}

impl Outcome {
    /// The run's summary line.
    pub fn summary(&self, account: &AccountSettings) -> String {
        let count = |kind: &str| self.commands.iter().filter(|c| c.kind == kind).count();
        let signals = self
            .results
            .iter()
            .filter(|r| matches!(r.output.get("signal").and_then(|s| s.as_str()), Some("buy" | "sell")))
            .count();
        let ledger = self.broker.ledger(&account.account);
        let end = self.equity.last().map_or(account.cash, |p| p.equity);
        let pnl = (end - account.cash).round_dp(2);
        let rejections: Vec<String> = self.broker.rejections().iter().map(|(k, v)| format!("{k}:{v}")).collect();
        format!(
            "backtest: ticks={} commands={} evaluate_strategy={} raise_alert={} signals={} orders={} trades={} rejections={} pnl={} fees={} end_equity={} max_drawdown_pct={} kill_switch={} digest={}",
            self.ticks,
            self.commands.len(),
            count(kinds::EVALUATE_STRATEGY),
            count(kinds::RAISE_ALERT),
            signals,
            self.orders,
            ledger.map_or(0, |l| l.fill_count()),
            if rejections.is_empty() { "none".to_string() } else { rejections.join(",") },
            pnl,
            ledger.map_or(Decimal::ZERO, |l| l.fees_paid()).round_dp(2),
            end.round_dp(2),
            (self.max_drawdown * Decimal::from(100)).round_dp(2),
            if self.kill_switch.is_some() { "tripped" } else { "no" },
            self.digest,
        )
    }
}

#[cfg(test)]
mod tests;
