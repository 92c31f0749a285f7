//! Token-budgeted summaries of the live state, for language models.
//!
//! [`summarize`] turns a [`StateView`] into a digest that never exceeds a
//! budget of tokens, counted with a real tokenizer ([`TokenCounter`]). Every
//! entity in scope becomes one item, ranked by salience (failing or pending
//! commands, alerts, recent feed-quality events, symbols far from their
//! rolling VWAP, keys with failed outcomes, then the rest; ties by kind and
//! key). Items are taken in that order while they fit and are never cut:
//! the first that does not fit ends the list. The header says how many of
//! each kind were left out, the reference time, and the state's watermark.
//!
//! Freshness and provenance: each item carries the event time of the input
//! that last changed it (`at`), its age at the summary's reference time
//! (`age`), and that input's record (`src`, `topic/partition@offset`). The
//! reference time (`as_of`) is the newest event time the view has applied,
//! not the wall clock, so the same state always gives the same digest.

mod items;
mod tokens;

#[cfg(test)]
mod proptests;

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use shoal_state::EntityKind;

use self::items::{Item, time};
pub use self::tokens::{Encoding, TokenCounter};
use crate::hub::merge_docs;
use crate::hub::{EntityDoc, StateView};

/// The smallest budget accepted: the short header alone fits in it.
pub const MIN_TOKENS: usize = 50;

/// The budget of a summary when the caller does not say.
pub const DEFAULT_MAX_TOKENS: usize = 1_000;

/// What a summary covers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "scope", content = "of")]
pub enum Scope {
    /// Every entity.
    All,
    /// The entities of one kind.
    Kind(EntityKind),
    /// The entities with one of these keys, of any kind (a symbol's key
    /// names its symbol, outcomes and alerts entities).
    Keys(Vec<String>),
    /// The entities of one kind with one of these keys.
    KeysOfKind(EntityKind, Vec<String>),
}

impl Scope {
    fn covers(&self, kind: EntityKind, key: &str) -> bool {
        match self {
            Self::All => true,
            Self::Kind(k) => *k == kind,
            Self::Keys(keys) => keys.iter().any(|k| k == key),
            Self::KeysOfKind(k, keys) => *k == kind && keys.iter().any(|k| k == key),
        }
    }

    fn describe(&self) -> String {
        match self {
            Self::All => "all".into(),
            Self::Kind(k) => format!("kind {k}"),
            Self::Keys(keys) => format!("keys {}", keys.join(",")),
            Self::KeysOfKind(k, keys) => format!("kind {k}, keys {}", keys.join(",")),
        }
    }
}

shoal_config::choice! {
    /// The digest's form.
    #[derive(Default)]
    pub enum Format {
        /// Lines of text: a header, then one line per item (the default).
        #[default]
        Text = "text",
        /// One JSON object: the header's fields and an `items` array.
        Json = "json",
    }
}

/// Why no summary could be made.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SummaryError {
    /// `max_tokens` is below [`MIN_TOKENS`].
    #[error("max_tokens must be at least {MIN_TOKENS} (got {0})")]
    BudgetTooSmall(usize),
    /// The tokenizer's encoding is unknown or cannot be loaded.
    #[error("tokenizer: {0}")]
    Encoding(String),
}

/// A digest and what it holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Summary {
    /// The digest itself.
    pub text: String,
    /// Its tokens, counted with the counter given.
    pub tokens: usize,
    /// The budget it was made for.
    pub max_tokens: usize,
    /// Items in it.
    pub included: usize,
    /// Items in scope left out, by kind.
    pub omitted: BTreeMap<EntityKind, usize>,
    /// The reference time: the newest event time applied.
    pub as_of: Option<DateTime<Utc>>,
}

/// The view's watermark, in short: partitions, and the oldest and newest
/// event time applied across them.
struct Mark {
    partitions: usize,
    oldest: Option<DateTime<Utc>>,
    newest: Option<DateTime<Utc>>,
}

impl Mark {
    fn of(view: &StateView) -> Self {
        let marks = view.watermarks();
        let times = || marks.iter().filter_map(|w| w.event_time);
        Self { partitions: marks.len(), oldest: times().min(), newest: times().max() }
    }
}

/// The digest of `view` within `scope`, at most `max_tokens` tokens as
/// `counter` counts them.
pub fn summarize(
    view: &StateView,
    scope: &Scope,
    max_tokens: usize,
    format: Format,
    counter: &TokenCounter,
) -> Result<Summary, SummaryError> {
    if max_tokens < MIN_TOKENS {
        return Err(SummaryError::BudgetTooSmall(max_tokens));
    }
    let mark = Mark::of(view);
    let as_of = mark.newest.unwrap_or(DateTime::<Utc>::UNIX_EPOCH);
    let mut items: Vec<Item> = entities(view, scope).iter().map(|d| Item::of(d, as_of)).collect();
    // Deterministic: salience, then kind and key (one item per entity).
    items.sort_by(|a, b| (b.salience, a.kind, &a.key).cmp(&(a.salience, b.kind, &b.key)));
    let mut totals = BTreeMap::new();
    items.iter().for_each(|i| *totals.entry(i.kind).or_insert(0) += 1);
    let render = Render { scope, mark: &mark, as_of, format, max_tokens, items: &items, totals };
    let (text, included) = render.fit(counter);
    let tokens = counter.count(&text);
    Ok(Summary { text, tokens, max_tokens, included, omitted: render.omitted(included), as_of: mark.newest })
}

/// The entities in `scope`, one per (kind, key): an entity served by several
/// shards (a command's issue and its result come from different
/// partitions) is merged from its parts, oldest first, and stamped with
/// its newest part.
fn entities(view: &StateView, scope: &Scope) -> Vec<EntityDoc> {
    let mut parts: BTreeMap<(EntityKind, &str), Vec<&EntityDoc>> = BTreeMap::new();
    for doc in view.shards.values().flat_map(|s| s.entities.values()) {
        if scope.covers(doc.kind, &doc.key) {
            parts.entry((doc.kind, doc.key.as_str())).or_default().push(doc);
        }
    }
    parts
        .into_values()
        .filter_map(|mut docs| {
            docs.sort_by(|a, b| (a.updated_at, &a.provenance).cmp(&(b.updated_at, &b.provenance)));
            let newest = (*docs.last()?).clone();
            if docs.len() == 1 {
                return Some(newest);
            }
            let states: Vec<Value> = docs.iter().map(|d| d.state.clone()).collect();
            Some(EntityDoc { state: merge_docs(newest.kind, &states), ..newest })
        })
        .collect()
}

struct Render<'a> {
    scope: &'a Scope,
    mark: &'a Mark,
    as_of: DateTime<Utc>,
    format: Format,
    max_tokens: usize,
    items: &'a [Item],
    /// Items in scope, by kind.
    totals: BTreeMap<EntityKind, usize>,
}

impl Render<'_> {
    /// The longest prefix of the ranked items that fits, and its digest.
    /// Item costs are counted one by one; the whole digest is counted at
    /// the end and shortened while the sum was optimistic (tokens can
    /// merge across a boundary).
    fn fit(&self, counter: &TokenCounter) -> (String, usize) {
        let (mut n, mut body) = (0, 0);
        while n < self.items.len() {
            let cost = counter.count(&self.item(&self.items[n]));
            if counter.count(&self.header(n + 1)) + body + cost > self.max_tokens {
                break;
            }
            body += cost;
            n += 1;
        }
        loop {
            let text = self.digest(n);
            if counter.count(&text) <= self.max_tokens {
                return (text, n);
            }
            if n == 0 {
                // The full header alone is too long: the short one fits in
                // MIN_TOKENS.
                return (self.short_header(), 0);
            }
            n -= 1;
        }
    }

    fn omitted(&self, included: usize) -> BTreeMap<EntityKind, usize> {
        let mut omitted = self.totals.clone();
        for item in &self.items[..included] {
            if let Some(n) = omitted.get_mut(&item.kind) {
                *n -= 1;
            }
        }
        omitted.retain(|_, n| *n > 0);
        omitted
    }

    fn header(&self, included: usize) -> String {
        let (total, budget) = (self.items.len(), self.max_tokens);
        match self.format {
            Format::Text => {
                let omitted = self.omitted(included);
                let oldest = self.mark.oldest.map(time).unwrap_or_else(|| "none".into());
                let left_out = if omitted.is_empty() {
                    "none".to_string()
                } else {
                    omitted.iter().map(|(k, n)| format!("{n} {k}")).collect::<Vec<_>>().join(", ")
                };
                format!(
                    "# Shoal state, {}: {included} of {total} items, most salient first (budget {budget} tokens)\n# as_of={} watermark: {} partitions, oldest event {oldest}\n# left out: {left_out}\n",
                    self.scope.describe(),
                    time(self.as_of),
                    self.mark.partitions,
                )
            }
            Format::Json => self.head(included).to_string(),
        }
    }

    /// The JSON form's fields before its items.
    fn head(&self, included: usize) -> Value {
        let omitted: serde_json::Map<String, Value> =
            self.omitted(included).iter().map(|(k, n)| (k.as_str().to_string(), json!(n))).collect();
        json!({
            "scope": self.scope.describe(),
            "as_of": time(self.as_of),
            "watermark": {"partitions": self.mark.partitions, "oldest_event": self.mark.oldest.map(time)},
            "budget": self.max_tokens,
            "included": included,
            "total": self.items.len(),
            "omitted": omitted,
        })
    }

    fn short_header(&self) -> String {
        let total = self.items.len();
        match self.format {
            Format::Text => format!("# Shoal state: 0 of {total} items fit in {} tokens\n", self.max_tokens),
            Format::Json => json!({"included": 0, "total": total, "budget": self.max_tokens}).to_string(),
        }
    }

    /// One item as it is appended to the digest.
    fn item(&self, item: &Item) -> String {
        match self.format {
            Format::Text => format!("{}\n", item.line(self.as_of)),
            Format::Json => format!("{},", item.json(self.as_of)),
        }
    }

    fn digest(&self, included: usize) -> String {
        match self.format {
            Format::Text => {
                let mut text = self.header(included);
                self.items[..included].iter().for_each(|i| text.push_str(&self.item(i)));
                text
            }
            Format::Json => {
                let mut head = self.head(included);
                let items: Vec<Value> = self.items[..included].iter().map(|i| i.json(self.as_of)).collect();
                head["items"] = Value::Array(items);
                head.to_string()
            }
        }
    }
}
