//! A bounded map of entities keyed by string, evicting the least recently
//! updated (by event time, ties by key) beyond its bound and counting it.

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// An entity kept in a [`Table`]: something with a last-update event time.
pub trait Entity {
    /// Event time of the newest input that changed it.
    fn updated_at(&self) -> DateTime<Utc>;
}

/// A bounded map of entities.
///
/// Serialised as `{"evicted": n, "entries": {key: entity, ...}}`; the
/// recency index is derived from the entries and rebuilt on restore.
#[derive(Debug, Clone, PartialEq)]
pub struct Table<V> {
    entries: BTreeMap<String, V>,
    evicted: u64,
    /// (updated_at, key) of every entry: the eviction order.
    index: BTreeSet<(DateTime<Utc>, String)>,
}

impl<V> Default for Table<V> {
    fn default() -> Self {
        Self { entries: BTreeMap::new(), evicted: 0, index: BTreeSet::new() }
    }
}

impl<V: Entity> Table<V> {
    /// A table holding `entries`, `evicted` evicted so far; the recency
    /// index is rebuilt from the entries. The bound is not applied here (the
    /// next insert applies it).
    pub fn from_parts(entries: BTreeMap<String, V>, evicted: u64) -> Self {
        let index = entries.iter().map(|(k, v)| (v.updated_at(), k.clone())).collect();
        Self { entries, evicted, index }
    }

    /// The entity under `key`.
    pub fn get(&self, key: &str) -> Option<&V> {
        self.entries.get(key)
    }

    /// Entities kept.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether no entity is kept.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Entities evicted so far to keep the bound.
    pub fn evicted(&self) -> u64 {
        self.evicted
    }

    /// Every entity, ordered by key.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &V)> {
        self.entries.iter().map(|(k, v)| (k.as_str(), v))
    }

    /// Runs `f` on the entity under `key`, made by `create` when absent,
    /// then evicts the least recently updated others while more than `max`
    /// (at least 1) are kept. The entity just updated is never evicted.
    /// Returns `f`'s answer and the keys evicted.
    pub fn upsert<R>(
        &mut self,
        key: &str,
        max: usize,
        create: impl FnOnce() -> V,
        f: impl FnOnce(&mut V) -> R,
    ) -> (R, Vec<String>) {
        if let Some(entry) = self.entries.get(key) {
            self.index.remove(&(entry.updated_at(), key.to_string()));
        }
        let entry = self.entries.entry(key.to_string()).or_insert_with(create);
        let answer = f(entry);
        self.index.insert((entry.updated_at(), key.to_string()));
        (answer, self.evict_beyond(max.max(1), key))
    }

    /// Runs `f` on the entity under `key` if there is one.
    pub fn update<R>(&mut self, key: &str, f: impl FnOnce(&mut V) -> R) -> Option<R> {
        let entry = self.entries.get_mut(key)?;
        self.index.remove(&(entry.updated_at(), key.to_string()));
        let answer = f(entry);
        self.index.insert((entry.updated_at(), key.to_string()));
        Some(answer)
    }

    /// Removes the entities last updated before `cutoff` (never `keep`),
    /// counting them as evicted. Returns their keys, oldest first.
    pub fn expire_before(&mut self, cutoff: DateTime<Utc>, keep: &str) -> Vec<String> {
        let victims: Vec<(DateTime<Utc>, String)> =
            self.index.range(..(cutoff, String::new())).filter(|(_, k)| k != keep).cloned().collect();
        let mut expired = Vec::with_capacity(victims.len());
        for victim in victims {
            self.index.remove(&victim);
            self.entries.remove(&victim.1);
            self.evicted += 1;
            expired.push(victim.1);
        }
        expired
    }

    fn evict_beyond(&mut self, max: usize, keep: &str) -> Vec<String> {
        let mut evicted = Vec::new();
        while self.entries.len() > max {
            let Some(victim) = self.index.iter().find(|(_, k)| k != keep).cloned() else {
                break;
            };
            self.index.remove(&victim);
            self.entries.remove(&victim.1);
            self.evicted += 1;
            evicted.push(victim.1);
        }
        evicted
    }
}

#[derive(Serialize)]
struct TableRef<'a, V> {
    evicted: u64,
    entries: &'a BTreeMap<String, V>,
}

#[derive(Deserialize)]
struct TableOwned<V> {
    evicted: u64,
    entries: BTreeMap<String, V>,
}

impl<V: Serialize> Serialize for Table<V> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        TableRef { evicted: self.evicted, entries: &self.entries }.serialize(s)
    }
}

impl<'de, V: Entity + Deserialize<'de>> Deserialize<'de> for Table<V> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let owned = TableOwned::<V>::deserialize(d)?;
        Ok(Self::from_parts(owned.entries, owned.evicted))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testkit::ts;

    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    struct Item(DateTime<Utc>);

    impl Entity for Item {
        fn updated_at(&self) -> DateTime<Utc> {
            self.0
        }
    }

    fn put(t: &mut Table<Item>, key: &str, secs: i64) -> Vec<String> {
        t.upsert(key, 2, || Item(ts(secs)), |i| i.0 = ts(secs)).1
    }

    #[test]
    fn evicts_the_least_recently_updated_ties_by_key_and_counts() {
        let mut t = Table::default();
        assert!(put(&mut t, "b", 5).is_empty());
        assert!(put(&mut t, "a", 5).is_empty());
        assert_eq!(put(&mut t, "c", 9), ["a"], "same time: the smaller key goes first");
        assert_eq!(put(&mut t, "b", 10), Vec::<String>::new(), "an update adds nothing");
        assert_eq!(put(&mut t, "d", 1), ["c"], "the entity just touched stays even when oldest");
        assert_eq!(t.evicted(), 2);
        assert_eq!(t.iter().map(|(k, _)| k).collect::<Vec<_>>(), ["b", "d"]);
    }

    #[test]
    fn expires_what_was_last_updated_before_the_cutoff_and_counts() {
        let mut t = Table::default();
        for (key, secs) in [("a", 1), ("b", 3), ("c", 5), ("d", 2)] {
            t.upsert(key, 10, || Item(ts(secs)), |_| ());
        }
        assert_eq!(t.expire_before(ts(3), "d"), ["a"], "d is kept, b is at the cutoff, not before it");
        assert_eq!(t.expire_before(ts(6), "c"), ["d", "b"], "oldest first");
        assert!(t.expire_before(ts(6), "c").is_empty());
        assert_eq!(t.evicted(), 3);
        assert_eq!(t.iter().map(|(k, _)| k).collect::<Vec<_>>(), ["c"]);
    }

    #[test]
    fn round_trips_and_rebuilds_the_index() {
        let mut t = Table::default();
        put(&mut t, "x", 3);
        put(&mut t, "y", 1);
        put(&mut t, "z", 2);
        let json = serde_json::to_string(&t).unwrap();
        assert!(json.starts_with("{\"evicted\":1,\"entries\":{\"x\""), "{json}");
        let back: Table<Item> = serde_json::from_str(&json).unwrap();
        assert_eq!(back, t);
        let mut back = back;
        assert_eq!(put(&mut back, "w", 4), ["z"]);
    }
}
