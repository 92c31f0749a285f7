//! Shoal's derived state, as pure and deterministic update functions over
//! the records in Kafka. This crate is the model only: no I/O, no clock, no
//! runtime. Reading the inputs, writing the changelog records it produces
//! and serving the state are its callers' business.
//!
//! # The model
//!
//! A [`State`] is built by applying [`Input`]s, one Kafka record each
//! (its [`Provenance`]: topic, partition, offset; and the decoded
//! [`Record`]), with [`State::apply`]. It holds:
//!
//! - **market**, per symbol ([`market::SymbolState`]): the last trade, best
//!   bid and ask and the spread (from book tops), OHLCV bars at 1 s, 1 min
//!   and 5 min with a VWAP each ([`bars`]), the trades (time, exact price,
//!   size) of a rolling window ([`StateConfig::rolling_window_secs`], one
//!   minute by default) with their VWAP and realised volatility, trade
//!   counts, the last data-quality event (symbol `*` holds the
//!   connection-wide ones);
//! - **accounts** ([`entities::AccountState`]), from events whose type is
//!   in [`StateConfig::account_event_types`]: recent card transactions,
//!   spend velocity over 1 min, 1 h and 24 h, countries seen;
//! - **devices** ([`entities::DeviceState`]), from events whose type is in
//!   [`StateConfig::device_event_types`]: the last readings per metric and
//!   their rate of change per second;
//! - **commands** ([`commands`]): the lifecycle per command id (issued,
//!   result, expired, dead-lettered) with timings, and the recent outcomes
//!   per command key;
//! - **alerts** ([`alerts`]): the results of `raise_alert` commands, by
//!   severity and entity;
//! - **freshness** ([`freshness`]): a watermark per input partition, and on
//!   every value the event time and provenance of the input that last
//!   changed it.
//!
//! Symbols, accounts and devices also carry **marks**: named instants the
//! decision rules remember with the entity (e.g. when a rule last fired),
//! set with [`State::mark`] and kept in the entity's value like the rest.
//!
//! # Determinism
//!
//! `apply` reads no clock: time is the event time each record carries
//! ([`Record::event_time`]). Maps are `BTreeMap`s, decimals stay exact
//! (`rust_decimal`, serialised as strings), and the one floating-point
//! value (volatility) is recomputed from scratch and serialised as a
//! string that parses back bit for bit. The same inputs in the same order
//! therefore give byte-identical [`State::to_canonical_json`].
//!
//! Across partitions the order of inputs is not fixed (a consumer
//! interleaves them as they come). Every entity's inputs that come from
//! one partition (a symbol's ticks, an account's or device's events) are
//! applied in offset order; where inputs of one entity come from several
//! partitions (a command, its result and its dead letter; the alerts of
//! all results), the state is made independent of their interleaving:
//! parts are joined whatever their order, stamps keep the newest event time
//! (ties broken by provenance), and bounded lists keep the newest items by
//! (event time, id). What still depends on the interleaving is which entity
//! is evicted when a kind is full, and (rarely) a bounded list of outcomes
//! when a command settles twice at different times (dead-lettered, then a
//! result with an earlier time) while the list is full.
//!
//! # Replays
//!
//! The watermark of each (topic, partition) is the offset of the last input
//! applied from it. An input at or below it is a replay (after an aborted
//! transaction or a rewind): [`Applied::ignored`] says so and nothing
//! changes, so re-applying inputs is idempotent. A snapshot
//! ([`State::to_canonical_json`], restored by [`State::from_snapshot`])
//! carries the watermarks with everything else: restoring it and applying
//! the rest of the inputs gives the same bytes as applying them all.
//!
//! # Bounds
//!
//! At most [`StateConfig::max_entities`] entities per kind: beyond it the
//! least recently updated (by event time, ties by key) is evicted and
//! counted ([`State::evictions`]). A command's lifecycle is also expired,
//! and counted the same way, once it was last updated more than
//! [`StateConfig::command_retention_secs`] before the newest event time the
//! state has applied (in a state of one partition, the order of its inputs
//! alone decides what expires, so a replay expires the same commands).
//! Lists inside an entity are bounded by the other `max_*` settings.
//!
//! # Shards and the changelog
//!
//! A state can hold any inputs; a caller that shards it keeps one state per
//! input partition, so each shard's watermarks are one partition's. A state
//! is also a changelog ([`changelog`]): one record per entity, keyed by
//! [`changelog_key`] (`{kind}/{key}`, read back by [`parse_changelog_key`])
//! with [`State::entity_value`] as its value (JSON, keys sorted, so
//! serialising it is deterministic), and one meta record,
//! [`State::meta_value`] (format, configuration, watermarks, eviction
//! counters). [`State::entity_refs`] lists the entities held, and
//! [`Applied`] names those each input changed or evicted (an evicted
//! entity's value is `None`: a tombstone). [`State::restore`] rebuilds a
//! state from the meta record and the latest value of each entity, with the
//! same canonical JSON and the same behaviour as the state they were taken
//! from. [`State::entity_stamp`] gives the event time and record of the
//! input that last changed an entity.
//!
//! An entity whose inputs come from several partitions (a command, its
//! result and its dead letter; a key's outcomes; an entity's alerts) has a
//! partial value in each of their shards. [`merge_entities`] joins such
//! values into the one a single state that applied all those inputs would
//! hold (the newest, for the kinds fed by one partition), and
//! [`complete_outcomes`] fills a key's merged outcomes in from its merged
//! commands. Merged lists are not cut to the bounds.

#![cfg_attr(test, allow(clippy::unwrap_used))]

pub mod alerts;
pub mod approvals;
pub mod bars;
pub mod canonical;
pub mod changelog;
pub mod commands;
pub mod config;
pub mod entities;
pub mod freshness;
pub mod market;
pub mod merge;
mod queries;
pub mod recent;
pub mod table;

#[cfg(test)]
mod changelog_tests;
#[cfg(test)]
mod merge_tests;
#[cfg(test)]
mod proptests;
#[cfg(test)]
mod testkit;
#[cfg(test)]
mod tests;

use std::fmt;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use shoal_protocol::messages::{BookTop, Command, CommandResult, DataQuality, Event, MarketTick};
use uuid::Uuid;

use crate::alerts::{Alert, Alerts};
pub use crate::canonical::StateError;
pub use crate::changelog::{changelog_key, parse_changelog_key};
use crate::commands::{CommandLimits, Commands, Part};
pub use crate::config::StateConfig;
use crate::entities::{AccountState, DeviceState, EntityLimits, parse_reading, parse_transaction};
use crate::freshness::Watermarks;
pub use crate::freshness::{Provenance, Stamp};
use crate::market::{MarketLimits, SymbolState, book_time, check_tick};
pub use crate::merge::{complete_outcomes, merge_entities};
use crate::table::Table;

/// Version of the snapshot format written by [`State::to_canonical_json`].
pub const FORMAT_VERSION: u32 = 1;

/// One decoded record from an input topic.
#[derive(Debug, Clone, PartialEq)]
pub enum Record {
    /// A trade (ticks topic).
    Tick(MarketTick),
    /// A best bid and offer (ticks topic).
    BookTop(BookTop),
    /// A feed's data-quality event (ticks topic).
    DataQuality(DataQuality),
    /// A business event (events topic).
    Event(Event),
    /// An issued command (commands topic).
    Command(Command),
    /// A command's result (results topic).
    Result(CommandResult),
    /// A change to a command's approval (approvals topic).
    Approval(Box<shoal_protocol::approvals::ApprovalEvent>),
    /// A dead-lettered command (dead-letter topic). The caller reads the
    /// fields from the record's key and headers.
    DeadLetter {
        /// The `shoal-command-id` header, when there is one.
        command_id: Option<Uuid>,
        /// The record key.
        key: String,
        /// The `shoal-dlq-reason` header.
        reason: String,
        /// The `shoal-dlq-stage` header.
        stage: String,
        /// The dead letter's Kafka record timestamp (stored in the log, so
        /// a replay sees the same).
        at: DateTime<Utc>,
    },
}

impl Record {
    /// The event time the record carries: the exchange time of a tick (of a
    /// book top, else its receive time), when a data-quality event was
    /// detected, when an event occurred, when a command was issued, when a
    /// result finished, the dead letter's record time.
    pub fn event_time(&self) -> DateTime<Utc> {
        match self {
            Record::Tick(t) => t.exchange_ts,
            Record::BookTop(b) => book_time(b),
            Record::DataQuality(dq) => dq.detected_at,
            Record::Event(e) => e.occurred_at,
            Record::Command(c) => c.issued_at,
            Record::Result(r) => r.finished_at,
            Record::Approval(a) => a.at,
            Record::DeadLetter { at, .. } => *at,
        }
    }
}

/// One input: a record and where it was read.
#[derive(Debug, Clone, PartialEq)]
pub struct Input {
    /// Topic, partition and offset of the record.
    pub provenance: Provenance,
    /// The decoded record.
    pub record: Record,
}

/// The kinds of entity in the state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EntityKind {
    /// A market symbol.
    Symbol,
    /// An account.
    Account,
    /// A device.
    Device,
    /// A command, keyed by its id.
    Command,
    /// The recent outcomes of one command key.
    Outcomes,
    /// The recent alerts about one entity (a command key).
    Alerts,
}

impl EntityKind {
    /// Every kind.
    pub const ALL: [EntityKind; 6] = [
        EntityKind::Symbol,
        EntityKind::Account,
        EntityKind::Device,
        EntityKind::Command,
        EntityKind::Outcomes,
        EntityKind::Alerts,
    ];

    /// The snake_case name used in JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Symbol => "symbol",
            Self::Account => "account",
            Self::Device => "device",
            Self::Command => "command",
            Self::Outcomes => "outcomes",
            Self::Alerts => "alerts",
        }
    }

    /// The kind named `name` (as [`EntityKind::as_str`] writes it).
    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.as_str() == name)
    }
}

impl fmt::Display for EntityKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One entity: its kind and key.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct EntityRef {
    /// Kind.
    pub kind: EntityKind,
    /// Key (a command's id for [`EntityKind::Command`]).
    pub key: String,
}

/// Why an input changed nothing but the watermark (or, for a replay, not
/// even that).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ignored {
    /// At or below its partition's watermark: applied before.
    Replay {
        /// The offset last applied from the partition.
        last_offset: i64,
    },
    /// Nothing in the state is derived from it (an event type that is
    /// neither an account's nor a device's, a dead letter without a command
    /// id).
    Untracked {
        /// What it was.
        what: String,
    },
    /// It should change the state but cannot be applied (a trade with a
    /// price that is not positive, an account event without an amount).
    Invalid {
        /// Why.
        reason: String,
    },
}

impl Ignored {
    /// A short machine-readable reason, for metrics.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::Replay { .. } => "replay",
            Self::Untracked { .. } => "untracked",
            Self::Invalid { .. } => "invalid",
        }
    }
}

impl fmt::Display for Ignored {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Replay { last_offset } => write!(f, "replay: offset {last_offset} already applied"),
            Self::Untracked { what } => write!(f, "untracked: {what}"),
            Self::Invalid { reason } => write!(f, "invalid: {reason}"),
        }
    }
}

/// What applying one input did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Applied {
    /// Entities it changed, in the order changed.
    pub changed: Vec<EntityRef>,
    /// Entities evicted to keep the bounds.
    pub evicted: Vec<EntityRef>,
    /// Set when it changed no entity, and why.
    pub ignored: Option<Ignored>,
}

impl Applied {
    fn ignore(&mut self, why: Ignored) {
        self.ignored = Some(why);
    }

    fn change(&mut self, kind: EntityKind, key: &str) {
        self.changed.push(EntityRef { kind, key: key.to_string() });
    }

    fn evict(&mut self, kind: EntityKind, keys: Vec<String>) {
        self.evicted.extend(keys.into_iter().map(|key| EntityRef { kind, key }));
    }

    /// Whether the input was ignored.
    pub fn is_ignored(&self) -> bool {
        self.ignored.is_some()
    }
}

/// The derived state. See the [crate documentation](crate).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct State {
    format: u32,
    config: StateConfig,
    watermarks: Watermarks,
    symbols: Table<SymbolState>,
    accounts: Table<AccountState>,
    devices: Table<DeviceState>,
    commands: Commands,
    alerts: Alerts,
}

impl Default for State {
    fn default() -> Self {
        Self::new(StateConfig::default())
    }
}

impl State {
    /// An empty state.
    pub fn new(config: StateConfig) -> Self {
        Self {
            format: FORMAT_VERSION,
            config,
            watermarks: Watermarks::default(),
            symbols: Table::default(),
            accounts: Table::default(),
            devices: Table::default(),
            commands: Commands::default(),
            alerts: Alerts::default(),
        }
    }

    /// Applies one input, unless its offset is at or below its partition's
    /// watermark (a replay). Reads no clock.
    pub fn apply(&mut self, input: &Input) -> Applied {
        let mut applied = Applied::default();
        if let Some(last_offset) = self.watermarks.replayed(&input.provenance) {
            applied.ignore(Ignored::Replay { last_offset });
            return applied;
        }
        let at = input.record.event_time();
        self.watermarks.advance(&input.provenance, Some(at));
        let stamp = Stamp::new(at, input.provenance.clone());
        match &input.record {
            Record::Tick(tick) => self.on_tick(tick, &stamp, &mut applied),
            Record::BookTop(top) => self.on_symbol(&top.symbol, &stamp, &mut applied, |s| s.apply_book(top, &stamp)),
            Record::DataQuality(dq) => {
                self.on_symbol(&dq.symbol, &stamp, &mut applied, |s| s.apply_quality(dq, &stamp))
            }
            Record::Event(event) => self.on_event(event, &stamp, &mut applied),
            Record::Command(c) => {
                self.on_command_part(Part::Command(c), &stamp, &mut applied);
            }
            Record::Result(r) => {
                let touched = self.on_command_part(Part::Result(r), &stamp, &mut applied);
                if let (true, Some(alert)) = (touched, Alert::from_result(r, &stamp.provenance)) {
                    for entity in self.alerts.insert(alert, self.config.max_alerts) {
                        applied.change(EntityKind::Alerts, &entity);
                    }
                }
            }
            Record::Approval(event) => self.on_approval(event, &stamp, &mut applied),
            Record::DeadLetter { command_id: Some(id), key, reason, stage, .. } => {
                self.on_command_part(Part::DeadLetter(*id, key, reason, stage), &stamp, &mut applied);
            }
            Record::DeadLetter { command_id: None, key, .. } => {
                applied.ignore(Ignored::Untracked { what: format!("dead letter of {key:?} without a command id") });
            }
        }
        applied
    }

    fn on_tick(&mut self, tick: &MarketTick, stamp: &Stamp, applied: &mut Applied) {
        let notional = match check_tick(tick) {
            Ok(notional) => notional,
            Err(reason) => return applied.ignore(Ignored::Invalid { reason }),
        };
        let limits = MarketLimits {
            max_closed_bars: self.config.max_closed_bars,
            max_window_samples: self.config.max_window_samples,
            rolling_window: self.config.rolling_window(),
        };
        self.on_symbol(&tick.symbol, stamp, applied, |s| s.apply_tick(tick, notional, stamp, limits));
    }

    fn on_symbol(&mut self, symbol: &str, stamp: &Stamp, applied: &mut Applied, f: impl FnOnce(&mut SymbolState)) {
        let ((), evicted) = self.symbols.upsert(symbol, self.config.max_entities, || SymbolState::new(stamp), f);
        applied.change(EntityKind::Symbol, symbol);
        applied.evict(EntityKind::Symbol, evicted);
    }

    fn on_event(&mut self, event: &Event, stamp: &Stamp, applied: &mut Applied) {
        let limits =
            EntityLimits { max_recent: self.config.max_recent, max_window_samples: self.config.max_window_samples };
        let max = self.config.max_entities;
        let (kind, evicted) = if self.config.account_event_types.contains(&event.event_type) {
            let tx = match parse_transaction(event, &stamp.provenance) {
                Ok(tx) => tx,
                Err(reason) => return applied.ignore(Ignored::Invalid { reason }),
            };
            let create = || AccountState::new(stamp);
            (EntityKind::Account, self.accounts.upsert(&event.key, max, create, |a| a.apply(tx, stamp, limits)).1)
        } else if self.config.device_event_types.contains(&event.event_type) {
            let (metric, reading) = match parse_reading(event, &stamp.provenance) {
                Ok(parsed) => parsed,
                Err(reason) => return applied.ignore(Ignored::Invalid { reason }),
            };
            let create = || DeviceState::new(stamp);
            let update = |d: &mut DeviceState| d.apply(metric, reading, stamp, limits);
            (EntityKind::Device, self.devices.upsert(&event.key, max, create, update).1)
        } else {
            return applied.ignore(Ignored::Untracked { what: format!("event type {:?}", event.event_type) });
        };
        applied.change(kind, &event.key);
        applied.evict(kind, evicted);
    }

    /// Applies a change to a command's approval. A decision or expiry of a
    /// command with no approval request here changes nothing. Approvals
    /// are not expired by `command_retention_secs` (a pending one may wait
    /// longer); `max_entities` bounds them.
    fn on_approval(&mut self, event: &shoal_protocol::approvals::ApprovalEvent, stamp: &Stamp, applied: &mut Applied) {
        use shoal_protocol::approvals::ApprovalChange;
        let requested = matches!(event.change, ApprovalChange::Requested { .. });
        if !requested && self.commands.by_id.get(&event.command_id.to_string()).is_none_or(|c| c.approval.is_none()) {
            return applied.ignore(Ignored::Untracked {
                what: format!("approval change of unknown command {}", event.command_id),
            });
        }
        let limits = CommandLimits {
            max_entities: self.config.max_entities,
            max_recent: self.config.max_recent,
            expire_before: None,
        };
        self.commands.apply(Part::Approval(event), stamp, limits, applied);
    }

    /// Applies a part of a command's life; whether it was the first of its
    /// type for the command id.
    fn on_command_part(&mut self, part: Part<'_>, stamp: &Stamp, applied: &mut Applied) -> bool {
        let expire_before = self
            .config
            .command_retention()
            .and_then(|retention| self.watermarks.newest_event_time()?.checked_sub_signed(retention));
        let limits =
            CommandLimits { max_entities: self.config.max_entities, max_recent: self.config.max_recent, expire_before };
        self.commands.apply(part, stamp, limits, applied)
    }
}
