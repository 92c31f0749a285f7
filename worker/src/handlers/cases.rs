//! The fraud topology's upper levels (docs/levels.md):
//!
//! - `build_case` (middle level, stateful): links scored transactions of
//!   different accounts through the devices they share (`shoal-detect`'s
//!   [`CaseBuilder`]) and opens a case when a shared device touches a
//!   flagged account. Its state per key (a case scope: one builder sees
//!   every transaction of the scope) is restored from its results
//!   ([`crate::keyed`]). A case opened, joined or merged becomes a
//!   `decide_case` for the level above, keyed by the case id.
//! - `decide_case` (upper level): block or alert on a case, with the reason.

use std::sync::Arc;

use serde::{Deserialize, Serialize};
use shoal_detect::fraud::{Case, CaseBuilder, Decision, Score, Transaction};
use shoal_protocol::messages::Command;

use super::{HandlerContext, HandlerError, Skill};
use crate::keyed::{KeyedState, Restorable, Versioned};
use crate::levels::NextCommand;

/// The middle level's kind.
pub const BUILD_CASE: &str = "build_case";
/// The upper level's kind.
pub const DECIDE_CASE: &str = "decide_case";

/// The `[worker.cases]` section.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CasesSettings {
    /// Serve `build_case` (stateful; its state restored from the results
    /// topic) and `decide_case`.
    pub enabled: bool,
}

/// `build_case`'s payload: a scored transaction.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BuildCase {
    /// The transaction.
    pub transaction: Transaction,
    /// Its score.
    pub score: Score,
}

/// What `build_case` answers.
#[derive(Debug, Clone, Serialize)]
pub struct CaseUpdate {
    /// The transaction's event.
    pub event_id: String,
    /// Its account.
    pub account: String,
    /// The case the transaction opened, joined or merged, if any.
    pub case: Option<Case>,
    /// Cases open in this scope.
    pub open_cases: usize,
    /// The scope's builder after this transaction (restored from here).
    pub state: Versioned<CaseBuilder>,
    /// `decide_case` for the case, when there is one.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub next: Vec<NextCommand>,
}

/// The stateful middle level.
#[derive(Debug, Clone)]
pub struct CaseSkill {
    store: Arc<KeyedState<CaseBuilder>>,
}

impl Default for CaseSkill {
    fn default() -> Self {
        Self { store: Arc::new(KeyedState::new(BUILD_CASE)) }
    }
}

impl CaseSkill {
    /// Applies `p` to `builder` (version `version` before it).
    fn apply(mut builder: CaseBuilder, version: u64, p: &BuildCase) -> CaseUpdate {
        let case = builder.observe(&p.transaction, &p.score);
        let next = case.iter().map(|c| NextCommand::new(DECIDE_CASE, &c.id, &DecideCase { case: c.clone() })).collect();
        CaseUpdate {
            event_id: p.transaction.event_id.clone(),
            account: p.transaction.account.clone(),
            open_cases: builder.cases().len(),
            case,
            state: Versioned { version: version + 1, value: builder },
            next,
        }
    }
}

#[async_trait::async_trait]
impl Skill for CaseSkill {
    const KIND: &'static str = BUILD_CASE;
    type Payload = BuildCase;
    type Output = CaseUpdate;

    async fn run(
        &self,
        payload: BuildCase,
        command: &Command,
        _ctx: &HandlerContext<'_>,
    ) -> Result<CaseUpdate, HandlerError> {
        let (held, generation) = self.store.get(&command.key);
        let (builder, version) = held.map_or_else(|| (CaseBuilder::new(), 0), |v| (v.value, v.version));
        let update = Self::apply(builder, version, &payload);
        self.store.put(&command.key, update.state.clone(), generation);
        Ok(update)
    }

    fn keyed_state(&self) -> Option<Arc<dyn Restorable>> {
        Some(self.store.clone())
    }
}

/// `decide_case`'s payload.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DecideCase {
    /// The case as the middle level last saw it.
    pub case: Case,
}

/// What to do about a case.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CaseAction {
    /// Block the case's accounts and devices.
    Block,
    /// Alert an analyst.
    Alert,
}

/// What `decide_case` answers.
#[derive(Debug, Clone, Serialize)]
pub struct CaseDecision {
    /// The case.
    pub case_id: String,
    /// Block or alert.
    pub action: CaseAction,
    /// Accounts the action covers.
    pub accounts: Vec<String>,
    /// Devices the action covers.
    pub devices: Vec<String>,
    /// Why, with the numbers.
    pub reason: String,
}

/// The upper level: a case with a declined account is blocked; any other
/// case (an account under review) alerts an analyst.
pub fn decide(p: &DecideCase) -> Result<serde_json::Value, HandlerError> {
    let case = &p.case;
    let action = if case.recommendation == Decision::Decline { CaseAction::Block } else { CaseAction::Alert };
    let reason = format!(
        "{} accounts share {} devices with a {:?} account (highest score {}), {} transactions",
        case.accounts.len(),
        case.devices.len(),
        case.recommendation,
        case.max_score,
        case.events.len()
    )
    .to_lowercase();
    let decision = CaseDecision {
        case_id: case.id.clone(),
        action,
        accounts: case.accounts.iter().cloned().collect(),
        devices: case.devices.iter().cloned().collect(),
        reason,
    };
    serde_json::to_value(decision).map_err(|e| HandlerError::Rejected(format!("decide_case output: {e}")))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use rust_decimal::Decimal;

    use super::*;

    fn scored(event: &str, account: &str, device: &str, score: u32) -> BuildCase {
        let decision = match score {
            s if s >= 70 => Decision::Decline,
            s if s >= 40 => Decision::Review,
            _ => Decision::Approve,
        };
        BuildCase {
            transaction: Transaction {
                event_id: event.into(),
                account: account.into(),
                device: Some(device.into()),
                amount: Decimal::from(10),
                country: "DE".into(),
                merchant_category: None,
                at: chrono::DateTime::from_timestamp(1_800_000_000, 0).unwrap(),
            },
            score: Score { score, decision, reasons: Vec::new() },
        }
    }

    #[test]
    fn a_shared_device_touching_a_declined_account_opens_a_case_to_block() {
        let mut builder = CaseBuilder::new();
        let mut version = 0;
        let mut updates = Vec::new();
        for p in [
            scored("e1", "acct-1", "dev-A", 5),
            scored("e2", "acct-2", "dev-A", 85),
            scored("e3", "acct-3", "dev-A", 5),
        ] {
            let update = CaseSkill::apply(builder.clone(), version, &p);
            builder = update.state.value.clone();
            version = update.state.version;
            updates.push(update);
        }
        assert!(updates[0].case.is_none() && updates[0].next.is_empty());
        let opened = updates[1].case.as_ref().unwrap();
        assert_eq!(opened.accounts.len(), 2);
        assert_eq!(updates[1].next.len(), 1);
        assert_eq!(
            (updates[1].next[0].kind.as_str(), updates[1].next[0].key.as_str()),
            (DECIDE_CASE, opened.id.as_str())
        );
        let joined = updates[2].case.as_ref().unwrap();
        assert_eq!(joined.id, opened.id, "acct-3 joins the open case");
        assert_eq!(joined.accounts.len(), 3);
        assert_eq!(version, 3);
        let decided = decide(&DecideCase { case: joined.clone() }).unwrap();
        assert_eq!(decided["action"], "block");
        assert_eq!(decided["accounts"], serde_json::json!(["acct-1", "acct-2", "acct-3"]));
    }

    #[test]
    fn the_state_in_a_result_restores_to_the_same_builder() {
        let update = CaseSkill::apply(CaseBuilder::new(), 0, &scored("e1", "acct-1", "dev-A", 50));
        let output = serde_json::to_value(&update).unwrap();
        let restored: Versioned<CaseBuilder> = serde_json::from_value(output["state"].clone()).unwrap();
        assert_eq!(restored, update.state);
        let review = decide(&DecideCase {
            case: CaseSkill::apply(restored.value, 1, &scored("e2", "acct-2", "dev-A", 5)).case.unwrap(),
        })
        .unwrap();
        assert_eq!(review["action"], "alert", "a case around a reviewed account alerts: {review}");
    }
}
