//! [`CaseBuilder`]: links transactions of different accounts through the
//! devices they share, and opens a case when a shared device touches a
//! flagged account.

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::{Decision, Score, Transaction};

/// Events remembered per device before any case includes them.
const MAX_DEVICE_EVENTS: usize = 64;

/// Accounts and devices linked to one another, at least one account flagged.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Case {
    /// Deterministic id: `"case:<device>:<event id>"` of the shared device and
    /// the transaction that opened it.
    pub id: String,
    /// Accounts in the case.
    pub accounts: BTreeSet<String>,
    /// Devices in the case.
    pub devices: BTreeSet<String>,
    /// The highest score any of the case's accounts received.
    pub max_score: u32,
    /// Event ids of the case's transactions, in the order they were observed
    /// (a merged case's events follow the surviving case's).
    pub events: Vec<String>,
    /// The most severe decision any of the case's accounts received.
    pub recommendation: Decision,
    /// When the opening transaction happened.
    pub opened_at: DateTime<Utc>,
    /// The latest transaction time in the case.
    pub updated_at: DateTime<Utc>,
}

/// What the builder knows of one account.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct AccountLinks {
    devices: BTreeSet<String>,
    max_score: u32,
    worst: Decision,
}

/// What the builder knows of one device.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
struct DeviceLinks {
    accounts: BTreeSet<String>,
    /// (observation sequence number, event id), the latest [`MAX_DEVICE_EVENTS`].
    events: Vec<(u64, String)>,
}

/// Builds cases over the account–device graph.
///
/// A case opens when a device of the transaction's account is shared by at
/// least two accounts and one of them was scored Review or Decline. From then
/// on, any transaction of a case account or on a case device joins the case
/// (bringing its account, device and that device's accounts); a transaction
/// linking two cases merges them into the one with the smaller id.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct CaseBuilder {
    seq: u64,
    accounts: BTreeMap<String, AccountLinks>,
    devices: BTreeMap<String, DeviceLinks>,
    cases: BTreeMap<String, Case>,
    account_case: BTreeMap<String, String>,
    device_case: BTreeMap<String, String>,
}

impl CaseBuilder {
    /// A builder with no links.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// The open cases, by id.
    #[must_use]
    pub fn cases(&self) -> &BTreeMap<String, Case> {
        &self.cases
    }

    /// Links `tx` (scored `score`) into the graph; returns its case when the
    /// transaction opened, joined or merged one.
    pub fn observe(&mut self, tx: &Transaction, score: &Score) -> Option<Case> {
        self.link(tx, score);
        let account_devices = self.accounts.get(&tx.account).map(|a| a.devices.clone()).unwrap_or_default();
        let qualifying: Vec<String> = account_devices.into_iter().filter(|d| self.device_qualifies(d)).collect();
        let mut existing: BTreeSet<String> = BTreeSet::new();
        existing.extend(self.account_case.get(&tx.account).cloned());
        for device in tx.device.iter().chain(&qualifying) {
            existing.extend(self.device_case.get(device).cloned());
            for account in self.devices.get(device).map(|d| &d.accounts).into_iter().flatten() {
                existing.extend(self.account_case.get(account).cloned());
            }
        }
        let id = match existing.pop_first() {
            Some(id) => {
                for other in existing {
                    self.merge(&id, &other);
                }
                id
            }
            None => {
                let device = qualifying.first()?;
                let id = format!("case:{device}:{}", tx.event_id);
                let case = Case {
                    id: id.clone(),
                    accounts: BTreeSet::new(),
                    devices: BTreeSet::new(),
                    max_score: 0,
                    events: Vec::new(),
                    recommendation: Decision::Approve,
                    opened_at: tx.at,
                    updated_at: tx.at,
                };
                self.cases.insert(id.clone(), case);
                id
            }
        };
        let mut devices: BTreeSet<String> = qualifying.into_iter().collect();
        devices.extend(tx.device.clone());
        self.absorb(&id, tx, &devices)
    }

    /// Records `tx`'s account–device link, its event and its score.
    fn link(&mut self, tx: &Transaction, score: &Score) {
        self.seq = self.seq.saturating_add(1);
        let account = self.accounts.entry(tx.account.clone()).or_insert_with(|| AccountLinks {
            devices: BTreeSet::new(),
            max_score: 0,
            worst: Decision::Approve,
        });
        account.max_score = account.max_score.max(score.score);
        account.worst = account.worst.max(score.decision);
        if let Some(device) = &tx.device {
            account.devices.insert(device.clone());
            let links = self.devices.entry(device.clone()).or_default();
            links.accounts.insert(tx.account.clone());
            links.events.push((self.seq, tx.event_id.clone()));
            if links.events.len() > MAX_DEVICE_EVENTS {
                links.events.remove(0);
            }
        }
    }

    /// A device qualifies when ≥ 2 accounts used it and one was flagged.
    fn device_qualifies(&self, device: &str) -> bool {
        let Some(links) = self.devices.get(device) else { return false };
        links.accounts.len() >= 2
            && links.accounts.iter().any(|a| self.accounts.get(a).is_some_and(|l| l.worst >= Decision::Review))
    }

    /// Moves case `other` into case `into`.
    fn merge(&mut self, into: &str, other: &str) {
        let Some(other) = self.cases.remove(other) else { return };
        for account in &other.accounts {
            self.account_case.insert(account.clone(), into.to_owned());
        }
        for device in &other.devices {
            self.device_case.insert(device.clone(), into.to_owned());
        }
        if let Some(case) = self.cases.get_mut(into) {
            case.accounts.extend(other.accounts);
            case.devices.extend(other.devices);
            for event in other.events {
                if !case.events.contains(&event) {
                    case.events.push(event);
                }
            }
            case.opened_at = case.opened_at.min(other.opened_at);
            case.updated_at = case.updated_at.max(other.updated_at);
        }
    }

    /// Adds `tx`, its account and `devices` (with their accounts and recent
    /// events) to case `id`, refreshes its score and recommendation, and
    /// returns a copy.
    fn absorb(&mut self, id: &str, tx: &Transaction, devices: &BTreeSet<String>) -> Option<Case> {
        let mut accounts: BTreeSet<String> = BTreeSet::from([tx.account.clone()]);
        let mut events: Vec<(u64, String)> = vec![(self.seq, tx.event_id.clone())];
        let case = self.cases.get_mut(id)?;
        for device in devices {
            let Some(links) = self.devices.get(device) else { continue };
            accounts.extend(links.accounts.iter().cloned());
            if !case.devices.contains(device) {
                events.extend(links.events.iter().cloned());
            }
            case.devices.insert(device.clone());
            self.device_case.insert(device.clone(), id.to_owned());
        }
        events.sort();
        for (_, event) in events {
            if !case.events.contains(&event) {
                case.events.push(event);
            }
        }
        for account in accounts {
            self.account_case.insert(account.clone(), id.to_owned());
            case.accounts.insert(account);
        }
        for account in &case.accounts {
            if let Some(links) = self.accounts.get(account) {
                case.max_score = case.max_score.max(links.max_score);
                case.recommendation = case.recommendation.max(links.worst);
            }
        }
        case.updated_at = case.updated_at.max(tx.at);
        Some(case.clone())
    }
}

#[cfg(test)]
mod tests {
    use rust_decimal::Decimal;

    use super::*;

    fn t(secs: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_700_000_000 + secs, 0).unwrap()
    }

    fn tx(id: &str, account: &str, device: Option<&str>, secs: i64) -> Transaction {
        Transaction {
            event_id: id.into(),
            account: account.into(),
            device: device.map(Into::into),
            amount: Decimal::TEN,
            country: "GB".into(),
            merchant_category: None,
            at: t(secs),
        }
    }

    fn scored(score: u32) -> Score {
        let decision = Decision::for_score(score, &crate::fraud::FraudSettings::default());
        Score { score, decision, reasons: vec![] }
    }

    fn set(items: &[&str]) -> BTreeSet<String> {
        items.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn opens_when_a_shared_device_touches_a_flagged_account() {
        let mut b = CaseBuilder::new();
        assert_eq!(b.observe(&tx("e1", "a1", Some("dev"), 0), &scored(10)), None);
        assert_eq!(b.observe(&tx("e2", "a2", Some("dev"), 1), &scored(20)), None, "shared but all approved");
        let case = b.observe(&tx("e3", "a2", Some("dev"), 2), &scored(55)).unwrap();
        assert_eq!(case.id, "case:dev:e3");
        assert_eq!(case.accounts, set(&["a1", "a2"]));
        assert_eq!(case.devices, set(&["dev"]));
        assert_eq!(case.events, ["e1", "e2", "e3"]);
        assert_eq!((case.max_score, case.recommendation), (55, Decision::Review));
        assert_eq!((case.opened_at, case.updated_at), (t(2), t(2)));
        assert_eq!(b.cases().len(), 1);
    }

    #[test]
    fn a_flagged_account_alone_on_its_device_opens_nothing() {
        let mut b = CaseBuilder::new();
        assert_eq!(b.observe(&tx("e1", "a1", Some("dev"), 0), &scored(90)), None);
        assert_eq!(b.observe(&tx("e2", "a1", None, 1), &scored(90)), None);
        assert_eq!(b.observe(&tx("e3", "a2", Some("other"), 2), &scored(90)), None);
        assert!(b.cases().is_empty());
    }

    #[test]
    fn a_flag_on_another_device_opens_the_case_of_the_shared_one() {
        let mut b = CaseBuilder::new();
        b.observe(&tx("e1", "a1", Some("shared"), 0), &scored(0));
        b.observe(&tx("e2", "a2", Some("shared"), 1), &scored(0));
        let case = b.observe(&tx("e3", "a1", None, 2), &scored(80)).unwrap();
        assert_eq!(case.id, "case:shared:e3");
        assert_eq!((case.recommendation, case.max_score), (Decision::Decline, 80));
        assert_eq!(case.events, ["e1", "e2", "e3"], "the device's history, in observation order");
    }

    #[test]
    fn later_transactions_of_case_accounts_and_devices_join() {
        let mut b = CaseBuilder::new();
        b.observe(&tx("e1", "a1", Some("d1"), 0), &scored(50));
        b.observe(&tx("e2", "a2", Some("d1"), 1), &scored(0)).unwrap();
        let joined = b.observe(&tx("e3", "a2", Some("d2"), 2), &scored(0)).unwrap();
        assert_eq!(joined.devices, set(&["d1", "d2"]));
        let third = b.observe(&tx("e4", "a3", Some("d2"), 3), &scored(75)).unwrap();
        assert_eq!(third.accounts, set(&["a1", "a2", "a3"]));
        assert_eq!(third.events, ["e1", "e2", "e3", "e4"]);
        assert_eq!((third.max_score, third.recommendation, third.updated_at), (75, Decision::Decline, t(3)));
        assert_eq!(b.cases().len(), 1);
    }

    #[test]
    fn a_transaction_linking_two_cases_merges_them() {
        let mut b = CaseBuilder::new();
        b.observe(&tx("e1", "a1", Some("d1"), 0), &scored(50));
        let first = b.observe(&tx("e2", "a2", Some("d1"), 1), &scored(0)).unwrap();
        b.observe(&tx("e3", "b1", Some("d2"), 2), &scored(80));
        let second = b.observe(&tx("e4", "b2", Some("d2"), 3), &scored(0)).unwrap();
        assert_ne!(first.id, second.id);
        let merged = b.observe(&tx("e5", "a2", Some("d2"), 4), &scored(0)).unwrap();
        assert_eq!(merged.id, first.id.clone().min(second.id.clone()));
        assert_eq!(merged.accounts, set(&["a1", "a2", "b1", "b2"]));
        assert_eq!(merged.devices, set(&["d1", "d2"]));
        assert_eq!(merged.events.len(), 5);
        assert_eq!((merged.max_score, merged.recommendation, merged.opened_at), (80, Decision::Decline, t(1)));
        assert_eq!(b.cases().len(), 1);
    }

    #[test]
    fn device_history_is_bounded() {
        let mut b = CaseBuilder::new();
        for i in 0..100 {
            b.observe(&tx(&format!("e{i}"), "a1", Some("dev"), i), &scored(0));
        }
        let case = b.observe(&tx("last", "a2", Some("dev"), 100), &scored(60)).unwrap();
        assert_eq!(case.events.len(), MAX_DEVICE_EVENTS);
        assert_eq!(case.events.last().map(String::as_str), Some("last"));
    }
}
