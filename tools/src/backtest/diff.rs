//! Shadow comparison: two versions of the topology (different rules,
//! state or account settings) over one recording, and where their
//! decisions part.
//!
//! A decision is a command with its result. Decisions of the two runs are
//! matched by entity key, kind, event time and occurrence (the n-th such
//! command of that key at that time); command ids and sequence numbers are
//! each run's own and are not compared. A matched pair whose payload or
//! result output differs *differs*; an unmatched one is *only in A* or *only
//! in B*. Per key, the first divergence is the earliest of these.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use shoal_protocol::messages::{Command, CommandResult};

use super::Outcome;

/// Where a decision sits, for matching.
type Slot = (String, DateTime<Utc>, String, usize);

/// One way the runs part.
#[derive(Debug, Clone, PartialEq)]
pub enum Divergence {
    /// A command only the first run issued.
    OnlyInA(Command),
    /// A command only the second run issued.
    OnlyInB(Command),
    /// The same command slot with another payload or result output.
    Differs {
        /// The first run's decision.
        a: Box<(Command, CommandResult)>,
        /// The second run's decision.
        b: Box<(Command, CommandResult)>,
    },
}

impl Divergence {
    fn at(&self) -> DateTime<Utc> {
        match self {
            Divergence::OnlyInA(c) | Divergence::OnlyInB(c) => c.issued_at,
            Divergence::Differs { a, .. } => a.0.issued_at,
        }
    }

    /// One line for people.
    pub fn describe(&self) -> String {
        let at = self.at().format("%Y-%m-%dT%H:%M:%S%.3fZ");
        match self {
            Divergence::OnlyInA(c) => format!("{} {at}: only in A: {} {}", c.key, c.kind, c.payload),
            Divergence::OnlyInB(c) => format!("{} {at}: only in B: {} {}", c.key, c.kind, c.payload),
            Divergence::Differs { a, b } => {
                let what = if a.0.payload != b.0.payload {
                    format!("payload {} → {}", a.0.payload, b.0.payload)
                } else {
                    format!("output {} → {}", a.1.output, b.1.output)
                };
                format!("{} {at}: {} differs: {what}", a.0.key, a.0.kind)
            }
        }
    }
}

/// The decision diff of two runs.
#[derive(Debug, Default)]
pub struct DecisionDiff {
    /// Decisions the same in both.
    pub same: usize,
    /// Commands only the first run issued.
    pub only_in_a: usize,
    /// Commands only the second run issued.
    pub only_in_b: usize,
    /// Matched commands with another payload or output.
    pub differ: usize,
    /// Per entity key, its earliest divergence.
    pub first_divergence: BTreeMap<String, Divergence>,
}

fn slots(outcome: &Outcome) -> BTreeMap<Slot, (Command, CommandResult)> {
    let mut seen: BTreeMap<(String, DateTime<Utc>, String), usize> = BTreeMap::new();
    let mut out = BTreeMap::new();
    for (c, r) in outcome.commands.iter().zip(&outcome.results) {
        let n = seen.entry((c.key.clone(), c.issued_at, c.kind.clone())).or_default();
        out.insert((c.key.clone(), c.issued_at, c.kind.clone(), *n), (c.clone(), r.clone()));
        *n += 1;
    }
    out
}

/// Keeps `divergence` if it is its key's earliest.
fn note(d: &mut DecisionDiff, divergence: Divergence) {
    let key = match &divergence {
        Divergence::OnlyInA(c) | Divergence::OnlyInB(c) => c.key.clone(),
        Divergence::Differs { a, .. } => a.0.key.clone(),
    };
    if d.first_divergence.get(&key).is_none_or(|first| divergence.at() < first.at()) {
        d.first_divergence.insert(key, divergence);
    }
}

/// Compares the decisions of `a` and `b`.
pub fn diff(a: &Outcome, b: &Outcome) -> DecisionDiff {
    let (mut left, right) = (slots(a), slots(b));
    let mut d = DecisionDiff::default();
    for (slot, (cb, rb)) in right {
        match left.remove(&slot) {
            Some((ca, ra)) if ca.payload == cb.payload && ra.output == rb.output && ra.status == rb.status => {
                d.same += 1;
            }
            Some(pair) => {
                d.differ += 1;
                note(&mut d, Divergence::Differs { a: Box::new(pair), b: Box::new((cb, rb)) });
            }
            None => {
                d.only_in_b += 1;
                note(&mut d, Divergence::OnlyInB(cb));
            }
        }
    }
    for (_, (ca, _)) in left {
        d.only_in_a += 1;
        note(&mut d, Divergence::OnlyInA(ca));
    }
    d
}

impl DecisionDiff {
    /// The diff's summary line.
    pub fn summary(&self) -> String {
        format!(
            "shadow: same={} only_in_a={} only_in_b={} differ={} keys_diverged={}",
            self.same,
            self.only_in_a,
            self.only_in_b,
            self.differ,
            self.first_divergence.len()
        )
    }
}

#[cfg(test)]
mod tests {
    use chrono::TimeDelta;
    use rust_decimal::Decimal;
    use shoal_orchestrator::rules::RulesSettings;
    use shoal_orchestrator::state::StateSettings;
    use shoal_paper::{FillModel, RiskLimits};

    use super::super::recording::{Synth, default_walk, synthesize};
    use super::super::{AccountSettings, Setup, run};
    use super::*;

    fn setup(rules: RulesSettings) -> Setup {
        Setup {
            state: StateSettings::default(),
            rules,
            account: AccountSettings {
                account: "p".into(),
                cash: Decimal::from(100_000),
                quantity: Decimal::from(10),
                fill: FillModel::default(),
                limits: RiskLimits::default(),
            },
        }
    }

    #[tokio::test]
    async fn the_same_version_does_not_diverge_and_a_changed_rule_does_from_a_point() {
        let ticks = synthesize(&Synth {
            seed: 42,
            symbols: vec!["SIM-A".into(), "SIM-B".into()],
            ticks: 6_000,
            interval: TimeDelta::milliseconds(200),
            start: DateTime::from_timestamp(1_767_225_600, 0).unwrap_or_default(),
            walk: default_walk(),
        });
        let base = run(&ticks, &setup(RulesSettings::default())).await.expect("runs");
        let again = run(&ticks, &setup(RulesSettings::default())).await.expect("runs");
        let none = diff(&base, &again);
        assert_eq!((none.only_in_a, none.only_in_b, none.differ), (0, 0, 0));
        assert_eq!(none.same, base.commands.len());
        assert!(none.first_divergence.is_empty());

        let defaults = RulesSettings::default();
        let eager = RulesSettings { move_threshold_bps: defaults.move_threshold_bps / 2, ..defaults };
        let other = run(&ticks, &setup(eager)).await.expect("runs");
        let d = diff(&base, &other);
        assert!(d.only_in_b > 0, "a lower threshold fires more often: {}", d.summary());
        assert_eq!(d.same + d.differ + d.only_in_a, base.commands.len(), "every A decision is accounted for");
        assert_eq!(d.same + d.differ + d.only_in_b, other.commands.len(), "every B decision is accounted for");
        let first = d.first_divergence.values().next().expect("a divergence");
        assert!(first.describe().contains("evaluate_strategy"), "{}", first.describe());
        // Nothing of a key diverges before its first divergence.
        for (key, divergence) in &d.first_divergence {
            let earlier = base.commands.iter().filter(|c| &c.key == key && c.issued_at < divergence.at()).count();
            let earlier_b = other.commands.iter().filter(|c| &c.key == key && c.issued_at < divergence.at()).count();
            assert_eq!(earlier, earlier_b, "{key}: the runs agree before {}", divergence.describe());
        }
    }
}
