//! The derived state's figures, measured in the same run as the raw loop
//! (whose records/s they are set against):
//!
//! - **updates/s**: [`State::apply`] of synthetic trades ([`TICKS`] over
//!   [`SYMBOLS`] symbols) in one thread, in-process (inputs built before
//!   the clock starts);
//! - **restore**: a state of [`ENTITIES`] accounts (one card transaction
//!   each) is written to a fresh compacted topic exactly as the
//!   orchestrator checkpoints a shard (key `changelog_key(entity)`, value
//!   the entity's JSON, then `_meta`), then read back with the
//!   orchestrator's [`LogReader`] and rebuilt with [`State::restore`] as
//!   `Shards::restore` does; timed from the first read to the restored
//!   state. The restored canonical JSON must equal the original's, or the
//!   bench fails;
//! - **memory per entity**: the canonical JSON's size over the entities
//!   (serialised size), and the process's resident set growth
//!   (`/proc/self/statm`) while the state was built, over the entities
//!   (in-memory size, allocator overhead included);
//! - **query latency under ingest**: the query API (`shoal_api::http::router`,
//!   no auth) on 127.0.0.1:0 over a [`Hub`] that a thread keeps publishing
//!   to (applying trades as fast as it can and publishing the changed
//!   symbols every `state.publish_interval_ms`, as `Shards::publish` does);
//!   [`QUERIES`] sequential `GET /v1/state/symbol/{key}` with reqwest
//!   (keep-alive), one every [`QUERY_EVERY`] at most, p50 and p99.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail, ensure};
use chrono::{DateTime, Utc};
use rdkafka::ClientConfig;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::producer::{BaseRecord, Producer as _};
use rust_decimal::Decimal;
use shoal_api::settings::{ApiAuth, ApiSettings};
use shoal_api::{ApiContext, Change, EntityDoc, Hub, NoPeers, ShardId, ShardView, Watermark};
use shoal_kafka::settings::KafkaSettings;
use shoal_orchestrator::state::log::LogReader;
use shoal_orchestrator::state::shards::META_KEY;
use shoal_protocol::messages::{Event, MarketTick, SCHEMA_VERSION, Side};
use shoal_state::{EntityRef, Input, Provenance, Record, State, StateConfig};
use shoal_state::{changelog_key, parse_changelog_key};

use super::load::{batching_producer, send_waiting};
use super::stats::percentile;

/// Trades applied in the updates/s measurement.
const TICKS: usize = 200_000;
/// Symbols they are spread over.
const SYMBOLS: usize = 1_000;
/// Entities (accounts) in the restore and memory measurements.
const ENTITIES: usize = 100_000;
/// Queries timed under ingest (after [`WARM_QUERIES`] untimed ones), one
/// every [`QUERY_EVERY`] (so that they span many publications).
const QUERIES: usize = 2_000;
const QUERY_EVERY: Duration = Duration::from_millis(2);
const WARM_QUERIES: usize = 100;
/// `state.publish_interval_ms`'s default.
const PUBLISH_INTERVAL: Duration = Duration::from_millis(50);
/// Input topic named in the synthetic records' provenance.
const INPUT: &str = "shoal-bench-state.ticks";

/// What the state phase measured.
#[derive(Debug, Clone)]
pub(crate) struct StateFigures {
    pub(crate) updates_per_s: f64,
    pub(crate) restore_s: f64,
    /// Of which reading the changelog (records parsed as JSON, as
    /// `Shards::restore` does).
    pub(crate) restore_read_s: f64,
    pub(crate) restore_records: u64,
    pub(crate) canonical_bytes_per_entity: f64,
    pub(crate) changelog_bytes_per_entity: f64,
    pub(crate) rss_bytes_per_entity: f64,
    pub(crate) query_p50_ms: f64,
    pub(crate) query_p99_ms: f64,
    /// Trades the ingest thread applied per second while queries ran.
    pub(crate) ingest_per_s: f64,
    pub(crate) took_s: f64,
}

/// Measures every state figure; fails when the restored state differs from
/// the original or a query fails.
pub(crate) async fn measure(bootstrap: &str) -> anyhow::Result<StateFigures> {
    let started = Instant::now();
    println!("bench: state: applying {TICKS} trades over {SYMBOLS} symbols ...");
    let updates_per_s = tokio::task::spawn_blocking(updates_per_sec).await?;
    println!("bench: state: building {ENTITIES} accounts, writing their changelog, restoring it ...");
    let bootstrap_owned = bootstrap.to_string();
    let restored = tokio::task::spawn_blocking(move || restore(&bootstrap_owned)).await??;
    println!("bench: state: {QUERIES} queries under ingest ...");
    let (query_p50_ms, query_p99_ms, ingest_per_s) = queries_under_ingest().await?;
    Ok(StateFigures {
        updates_per_s,
        restore_s: restored.restore_s,
        restore_read_s: restored.read_s,
        restore_records: restored.records,
        canonical_bytes_per_entity: restored.canonical_bytes_per_entity,
        changelog_bytes_per_entity: restored.changelog_bytes_per_entity,
        rss_bytes_per_entity: restored.rss_bytes_per_entity,
        query_p50_ms,
        query_p99_ms,
        ingest_per_s,
        took_s: started.elapsed().as_secs_f64(),
    })
}

/// Prints the state figures, against the raw loop's records/s `raw` when it
/// was measured.
pub(crate) fn report(f: &StateFigures, raw: Option<f64>) {
    let ratio = raw.map_or("no raw run".to_string(), |raw| format!("x{:.1} of raw", f.updates_per_s / raw));
    println!(
        "bench: state: restore read {} changelog records in {:.2}s, rebuilt the state in {:.2}s; {:.0} trades/s applied by the ingest thread while \
         queried; the state phase took {:.1}s",
        f.restore_records,
        f.restore_read_s,
        f.restore_s - f.restore_read_s,
        f.ingest_per_s,
        f.took_s
    );
    println!(
        "bench: state: bytes_per_entity_json is the canonical JSON's size per entity (changelog values: {:.0} B); \
         rss_per_entity is the resident set growth while the {ENTITIES} accounts were built",
        f.changelog_bytes_per_entity
    );
    println!(
        "state: updates_per_s={:.0} ({ratio}) restore_100k_s={:.2} bytes_per_entity_json={:.0} rss_per_entity={:.0} \
         query_p50_ms={:.2} query_p99_ms={:.2}",
        f.updates_per_s,
        f.restore_s,
        f.canonical_bytes_per_entity,
        f.rss_bytes_per_entity,
        f.query_p50_ms,
        f.query_p99_ms
    );
}

fn epoch() -> DateTime<Utc> {
    DateTime::from_timestamp(1_780_000_000, 0).unwrap_or_default()
}

/// The `n`th synthetic trade: symbols in turn, one millisecond apart,
/// offsets from `n`.
fn tick(n: u64) -> Input {
    let symbol = format!("SYM{:04}", n % SYMBOLS as u64);
    let at = epoch() + chrono::TimeDelta::milliseconds(n as i64);
    let record = Record::Tick(MarketTick {
        schema_version: SCHEMA_VERSION,
        source: "shoal-bench".into(),
        symbol,
        price: Decimal::new(10_000 + (n % 97) as i64, 2),
        size: Decimal::new(1 + (n % 13) as i64, 1),
        side: Some(if n.is_multiple_of(2) { Side::Buy } else { Side::Sell }),
        trade_id: Some(n.to_string()),
        sequence: None,
        exchange_ts: at,
        received_at: at,
        channel: None,
    });
    Input { provenance: Provenance::new(INPUT, 0, n as i64), record }
}

/// Trades applied per second, one thread.
fn updates_per_sec() -> f64 {
    let inputs: Vec<Input> = (0..TICKS as u64).map(tick).collect();
    let mut state = State::new(StateConfig::default());
    let started = Instant::now();
    for input in &inputs {
        let applied = state.apply(input);
        debug_assert!(!applied.is_ignored());
    }
    let took = started.elapsed().as_secs_f64();
    std::hint::black_box(&state);
    TICKS as f64 / took
}

/// The `n`th account's card transaction.
fn transaction(n: u64) -> Input {
    let at = epoch() + chrono::TimeDelta::milliseconds(n as i64);
    let country = ["DE", "FR", "NL", "ES"][(n % 4) as usize];
    let record = Record::Event(Event {
        schema_version: SCHEMA_VERSION,
        id: uuid::Uuid::from_u64_pair(0x5eed, n),
        event_type: "card_transaction".into(),
        key: format!("acct-{n:06}"),
        occurred_at: at,
        attributes: serde_json::json!({
            "amount": format!("{}.{:02}", 10 + n % 500, n % 100),
            "currency": "EUR",
            "country": country,
            "merchant": format!("merchant-{}", n % 1_000),
            "mcc": "5411",
            "card_present": n.is_multiple_of(3),
        }),
    });
    Input { provenance: Provenance::new("shoal-bench-state.events", 0, n as i64), record }
}

/// Resident set size, bytes (`/proc/self/statm`, pages of 4 KiB).
fn rss_bytes() -> anyhow::Result<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm").context("reading /proc/self/statm")?;
    let pages: u64 = statm.split_whitespace().nth(1).context("statm: no resident field")?.parse()?;
    Ok(pages * 4_096)
}

struct Restored {
    restore_s: f64,
    read_s: f64,
    records: u64,
    canonical_bytes_per_entity: f64,
    changelog_bytes_per_entity: f64,
    rss_bytes_per_entity: f64,
}

/// Builds the accounts' state, checkpoints it to a fresh compacted topic,
/// times its restore and checks it.
fn restore(bootstrap: &str) -> anyhow::Result<Restored> {
    let before = rss_bytes()?;
    let mut state = State::new(StateConfig::default());
    for n in 0..ENTITIES as u64 {
        let applied = state.apply(&transaction(n));
        ensure!(applied.ignored.is_none(), "transaction {n} ignored: {:?}", applied.ignored);
    }
    let after = rss_bytes()?;
    let entities = state.entity_refs();
    ensure!(entities.len() == ENTITIES, "{} entities built, not {ENTITIES}", entities.len());
    let original = state.to_canonical_json();

    let topic = format!("shoal-bench-state-{}.changelog", uuid::Uuid::new_v4().simple());
    let runtime = tokio::runtime::Handle::current();
    runtime.block_on(create_compacted(bootstrap, &topic))?;
    let result = write_and_restore(bootstrap, &topic, &state, &entities, &original);
    runtime.block_on(delete(bootstrap, &topic));
    let (restore_s, read_s, records, changelog_bytes) = result?;
    Ok(Restored {
        restore_s,
        read_s,
        records,
        canonical_bytes_per_entity: original.len() as f64 / ENTITIES as f64,
        changelog_bytes_per_entity: changelog_bytes as f64 / ENTITIES as f64,
        rss_bytes_per_entity: after.saturating_sub(before) as f64 / ENTITIES as f64,
    })
}

/// Writes the checkpoint, reads it back; returns the restore's seconds (all,
/// and reading the changelog), the records read and the bytes of the entity
/// values written.
fn write_and_restore(
    bootstrap: &str,
    topic: &str,
    state: &State,
    entities: &[EntityRef],
    original: &str,
) -> anyhow::Result<(f64, f64, u64, usize)> {
    // As `shards::checkpoint`: every entity, then the meta record.
    let producer = batching_producer(bootstrap, Some("1000000"));
    let mut bytes = 0;
    for entity in entities {
        let value = state.entity_value(entity).map(|v| serde_json::to_vec(&v)).transpose()?;
        bytes += value.as_ref().map_or(0, Vec::len);
        let key = changelog_key(entity);
        match &value {
            Some(value) => send_waiting(&producer, BaseRecord::to(topic).partition(0).key(&key).payload(value)),
            None => send_waiting(&producer, BaseRecord::<String, [u8]>::to(topic).partition(0).key(&key)),
        }
    }
    let meta = serde_json::to_vec(&state.meta_value())?;
    send_waiting(&producer, BaseRecord::to(topic).partition(0).key(META_KEY).payload(&meta));
    producer.flush(Duration::from_secs(60)).context("flushing the changelog")?;

    // As `Shards::restore`, with the reader already made.
    let kafka = KafkaSettings { bootstrap_servers: bootstrap.to_string(), ..KafkaSettings::default() };
    let reader = LogReader::new(&kafka, "shoal-bench-state").context("the changelog reader")?;
    let started = Instant::now();
    let mut meta = None;
    let mut restored = BTreeMap::new();
    let mut bad = None;
    let read = reader.read(topic, 0, None, None, Duration::from_secs(120), |message| {
        use rdkafka::Message as _;
        let key = message.key().map(String::from_utf8_lossy).unwrap_or_default().into_owned();
        let value = message.payload().map(serde_json::from_slice::<serde_json::Value>).transpose();
        match (key.as_str(), value) {
            (META_KEY, Ok(value)) => meta = value,
            (_, Ok(value)) => match parse_changelog_key(&key) {
                Some(entity) => {
                    match value {
                        Some(value) => restored.insert(entity, value),
                        None => restored.remove(&entity),
                    };
                }
                None => bad = Some(format!("key {key:?} names no entity")),
            },
            (_, Err(error)) => bad = Some(format!("value of {key:?}: {error}")),
        }
    })?;
    let read_s = started.elapsed().as_secs_f64();
    if let Some(bad) = bad {
        bail!("changelog {topic}: {bad}");
    }
    let meta = meta.context("no _meta record read back")?;
    let back = State::restore(&meta, restored)?;
    let took = started.elapsed().as_secs_f64();
    if back.to_canonical_json() != original {
        bail!("the state restored from {topic} differs from the original (canonical JSON)");
    }
    Ok((took, read_s, read.records, bytes))
}

fn admin(bootstrap: &str) -> anyhow::Result<AdminClient<DefaultClientContext>> {
    Ok(ClientConfig::new().set("bootstrap.servers", bootstrap).create()?)
}

/// A one-partition compacted topic, configured as the orchestrator's
/// changelogs (`state::topics`).
async fn create_compacted(bootstrap: &str, topic: &str) -> anyhow::Result<()> {
    let topics = [NewTopic::new(topic, 1, TopicReplication::Fixed(1))
        .set("cleanup.policy", "compact")
        .set("min.compaction.lag.ms", "0")
        .set("segment.ms", "600000")];
    let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(30)));
    for result in admin(bootstrap)?.create_topics(topics.iter(), &options).await? {
        result.map_err(|(topic, code)| anyhow::anyhow!("creating {topic}: {code}"))?;
    }
    Ok(())
}

async fn delete(bootstrap: &str, topic: &str) {
    if let Ok(admin) = admin(bootstrap) {
        let _ = admin.delete_topics(&[topic], &AdminOptions::new()).await;
    }
}

/// One shard's publishing, as `Shards::publish`: the changed entities
/// rendered into the shard's reader map, then its view published.
struct Publisher {
    id: ShardId,
    hub: Arc<Hub>,
    entities: shoal_api::hub::Entities,
}

impl Publisher {
    fn publish(&mut self, state: &State, unpublished: &mut BTreeSet<EntityRef>) {
        let mut changes = Vec::with_capacity(unpublished.len());
        for entity in std::mem::take(unpublished) {
            let key = (entity.kind, entity.key.clone());
            let doc = state.entity_value(&entity).zip(state.entity_stamp(&entity)).map(|(value, stamp)| {
                Arc::new(EntityDoc {
                    kind: entity.kind,
                    key: entity.key.clone(),
                    shard: self.id.clone(),
                    updated_at: stamp.at,
                    provenance: stamp.provenance,
                    state: value,
                })
            });
            match &doc {
                Some(doc) => self.entities.insert(key, doc.clone()),
                None => self.entities.remove(&key),
            };
            changes.push(Change { kind: entity.kind, key: entity.key, doc });
        }
        let mark = state.watermarks().mark(&self.id.topic, self.id.partition);
        let watermark = Watermark {
            topic: self.id.topic.clone(),
            partition: self.id.partition,
            offset: mark.map_or(-1, |m| m.offset),
            event_time: mark.and_then(|m| m.event_time),
        };
        let view = ShardView { id: self.id.clone(), watermark, entities: self.entities.clone() };
        self.hub.publish(Arc::new(view), changes);
    }
}

/// Applies trades as fast as it can until `stop`, publishing every
/// [`PUBLISH_INTERVAL`]; counts them in `applied`. Publishes every symbol
/// once before returning from the first publication (`ready`).
fn ingest(hub: Arc<Hub>, stop: Arc<AtomicBool>, ready: Arc<AtomicBool>, applied: Arc<AtomicU64>) {
    let mut state = State::new(StateConfig::default());
    let mut publisher =
        Publisher { id: ShardId { topic: INPUT.into(), partition: 0 }, hub, entities: Default::default() };
    let mut unpublished = BTreeSet::new();
    let mut last_publish = Instant::now();
    let mut n = 0_u64;
    while !stop.load(Ordering::Relaxed) {
        let done = state.apply(&tick(n));
        unpublished.extend(done.changed.into_iter().chain(done.evicted));
        n += 1;
        if n.is_multiple_of(64) {
            applied.store(n, Ordering::Relaxed);
        }
        let warm = n >= SYMBOLS as u64;
        if warm && (!ready.load(Ordering::Relaxed) || last_publish.elapsed() >= PUBLISH_INTERVAL) {
            publisher.publish(&state, &mut unpublished);
            last_publish = Instant::now();
            ready.store(true, Ordering::Relaxed);
        }
    }
    applied.store(n, Ordering::Relaxed);
}

/// The query API (no auth) over `hub` on 127.0.0.1:0: its address and its
/// server task.
pub(super) async fn serve_api(
    hub: Arc<Hub>,
) -> anyhow::Result<(std::net::SocketAddr, tokio::task::JoinHandle<std::io::Result<()>>)> {
    let ctx = ApiContext {
        hub,
        settings: Arc::new(ApiSettings { auth: ApiAuth::None, ..ApiSettings::default() }),
        tokens: Arc::new(shoal_api::auth::Tokens::open()),
        directory: Arc::new(NoPeers),
        instance: "shoal-bench".into(),
        subscriptions: Arc::default(),
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let address = listener.local_addr()?;
    Ok((address, tokio::spawn(async move { axum::serve(listener, shoal_api::http::router(ctx)).await })))
}

/// The ingest thread ([`ingest`]) publishing to a hub, and its counters.
pub(super) struct Ingest {
    stop: Arc<AtomicBool>,
    ready: Arc<AtomicBool>,
    /// Trades applied so far.
    pub(super) applied: Arc<AtomicU64>,
    thread: std::thread::JoinHandle<()>,
}

impl Ingest {
    /// Starts applying and publishing to `hub`.
    pub(super) fn start(hub: Arc<Hub>) -> Self {
        let (stop, ready, applied) =
            (Arc::new(AtomicBool::new(false)), Arc::new(AtomicBool::new(false)), Arc::default());
        let thread = {
            let (stop, ready, applied) = (stop.clone(), ready.clone(), Arc::clone(&applied));
            std::thread::spawn(move || ingest(hub, stop, ready, applied))
        };
        Self { stop, ready, applied, thread }
    }

    /// Waits until every symbol was published once.
    pub(super) async fn ready(&self) {
        while !self.ready.load(Ordering::Relaxed) {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// Stops the thread and waits for it.
    pub(super) async fn stop(self) {
        self.stop.store(true, Ordering::Relaxed);
        let thread = self.thread;
        let _ = tokio::task::spawn_blocking(move || thread.join()).await;
    }
}

/// Query p50 and p99 (ms) with the ingest thread running, and the trades
/// it applied per second meanwhile.
async fn queries_under_ingest() -> anyhow::Result<(f64, f64, f64)> {
    let hub = Arc::new(Hub::new());
    let (address, server) = serve_api(hub.clone()).await?;
    let ingest = Ingest::start(hub);
    let applied = ingest.applied.clone();
    let outcome = async {
        ingest.ready().await;
        let client = reqwest::Client::new();
        let mut latencies = Vec::with_capacity(QUERIES);
        let mut pace = tokio::time::interval(QUERY_EVERY);
        pace.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let (mut first_applied, mut started) = (0, Instant::now());
        for i in 0..WARM_QUERIES + QUERIES {
            if i == WARM_QUERIES {
                first_applied = applied.load(Ordering::Relaxed);
                started = Instant::now();
            }
            pace.tick().await;
            let url = format!("http://{address}/v1/state/symbol/SYM{:04}", (i * 7) % SYMBOLS);
            let sent = Instant::now();
            let response = client.get(&url).send().await?;
            let status = response.status();
            let body = response.bytes().await?;
            let took = sent.elapsed().as_secs_f64() * 1e3;
            ensure!(status.is_success(), "GET {url}: {status}: {}", String::from_utf8_lossy(&body));
            if i >= WARM_QUERIES {
                latencies.push(took);
            }
        }
        let ingest_per_s = (applied.load(Ordering::Relaxed) - first_applied) as f64 / started.elapsed().as_secs_f64();
        latencies.sort_by(f64::total_cmp);
        anyhow::Ok((percentile(&latencies, 50.0), percentile(&latencies, 99.0), ingest_per_s))
    }
    .await;
    ingest.stop().await;
    server.abort();
    outcome
}

#[cfg(test)]
mod tests {
    use shoal_state::EntityKind;

    use super::*;

    #[test]
    fn synthetic_inputs_change_the_state() {
        let mut state = State::new(StateConfig::default());
        assert!(!state.apply(&tick(0)).is_ignored());
        assert!(!state.apply(&transaction(0)).is_ignored());
        let refs = state.entity_refs();
        assert!(refs.iter().any(|e| e.kind == EntityKind::Symbol && e.key == "SYM0000"));
        assert!(refs.iter().any(|e| e.kind == EntityKind::Account && e.key == "acct-000000"));
    }
}
