//! `shoal-dlq redrive`: re-publishes chosen dead letters' original key,
//! body and headers to their origin partition, exactly once.
//!
//! How exactly once holds:
//!
//! 1. The producer's transactional id is stable for the tool
//!    (`<prefix>-dlq-<group>`). `init_transactions` fences any earlier run
//!    with that id and completes its open transaction (a crashed run's is
//!    aborted; one that was committing finishes), before anything is read.
//! 2. The re-drive log is then read `read_committed` to its end: every
//!    dead letter a committed run re-drove is in it.
//! 3. Each batch of re-driven records is written in one transaction with
//!    a log record per dead letter. Either the records and their log
//!    records become visible together, or neither does.
//!
//! So a second run re-drives nothing the first committed, and a run that
//! died mid-batch leaves nothing of that batch visible: the next run
//! re-drives it.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::io::Write;
use std::time::Duration;

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};

use super::{Coordinates, DeadLetter, DlqError, DlqSettings, LogEntry, Reader, RedriveLog, Selector};

/// What to re-drive and how.
#[derive(Debug, Clone)]
pub struct RedriveOptions {
    /// Which dead letters.
    pub selector: Selector,
    /// The re-drive log topic.
    pub log_topic: String,
    /// The stable transactional id.
    pub transactional_id: String,
    /// Act (`--yes`); otherwise only say what would be done.
    pub act: bool,
    /// Dead letters per transaction.
    pub batch: usize,
    /// Fault injection for tests: produce batch N (1-based), then stop
    /// without committing or aborting it, as a crash would.
    pub crash_before_commit_of_batch: Option<usize>,
}

/// What a run did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RedriveSummary {
    /// Dead letters the selectors chose.
    pub selected: usize,
    /// Re-driven by this run.
    pub redriven: usize,
    /// Re-driven before (the re-drive log lists them, or their origin
    /// record), so not again.
    pub already_redriven: usize,
    /// Without origin headers: nowhere to re-drive them to.
    pub skipped_no_origin: usize,
    /// For a dry run, how many a real run would re-drive.
    pub would_redrive: Option<usize>,
}

impl fmt::Display for RedriveSummary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "dlq redrive: selected={} redriven={} already_redriven={} skipped_no_origin={}",
            self.selected, self.redriven, self.already_redriven, self.skipped_no_origin
        )?;
        if let Some(would) = self.would_redrive {
            write!(f, " dry_run=true would_redrive={would}")?;
        }
        Ok(())
    }
}

/// The selected dead letters, sorted out.
#[derive(Debug, Default)]
struct Plan {
    selected: usize,
    /// To re-drive, in origin order, with their origin.
    todo: Vec<(DeadLetter, Coordinates)>,
    /// Already re-driven: the dead letter and how we know.
    already: Vec<(Coordinates, String)>,
    no_origin: Vec<Coordinates>,
}

impl Plan {
    /// Sorts `letter` (which the selector chose) in.
    fn add(&mut self, letter: DeadLetter, log: &RedriveLog, origins: &mut HashMap<Coordinates, Coordinates>) {
        self.selected += 1;
        let Some(origin) = letter.origin() else {
            self.no_origin.push(letter.at);
            return;
        };
        if let Some(redriven) = log.redriven(&letter) {
            self.already.push((letter.at, redriven.describe()));
        } else if let Some(same) = origins.get(&origin) {
            // The same origin record dead-lettered twice (an at-least-once
            // stage repeated it): re-driven once.
            self.already.push((letter.at, format!("same origin record as {same}")));
        } else {
            origins.insert(origin.clone(), letter.at.clone());
            self.todo.push((letter, origin));
        }
    }
}

/// Runs `redrive`: writes a line per selected dead letter and the summary
/// line to `out`, and returns the summary.
pub fn redrive(
    settings: &DlqSettings,
    reader: &Reader,
    options: &RedriveOptions,
    out: &mut impl Write,
) -> Result<RedriveSummary, DlqError> {
    // Fence earlier runs and settle their transactions before reading the
    // log: that is what makes the log complete.
    let producer = if options.act {
        ensure_log_topic(settings, &options.log_topic)?;
        Some(Transactional::create(settings, &options.transactional_id)?)
    } else {
        None
    };
    let log = RedriveLog::load(reader, &options.log_topic)?;
    let mut plan = Plan::default();
    let mut origins = log.origins();
    let dlq_topic = &settings.topics.dlq.name;
    reader.scan(dlq_topic, |message| {
        let letter = DeadLetter::from_message(message);
        if options.selector.matches(&letter) {
            plan.add(letter, &log, &mut origins);
        }
    })?;
    plan.todo.sort_by(|a, b| a.1.cmp(&b.1));
    for (at, how) in &plan.already {
        writeln!(out, "already redriven {at} ({how})")?;
    }
    for at in &plan.no_origin {
        writeln!(out, "skipped {at}: no origin headers")?;
    }
    check_origins(reader, &plan.todo)?;
    let mut summary = RedriveSummary {
        selected: plan.selected,
        already_redriven: plan.already.len(),
        skipped_no_origin: plan.no_origin.len(),
        ..RedriveSummary::default()
    };
    match producer {
        None => {
            for (letter, origin) in &plan.todo {
                writeln!(
                    out,
                    "would redrive {} -> {}/{} {}",
                    letter.at,
                    origin.topic,
                    origin.partition,
                    brief(letter)
                )?;
            }
            summary.would_redrive = Some(plan.todo.len());
        }
        Some(producer) => {
            summary.redriven = publish(producer, options, &plan.todo, out)?;
        }
    }
    writeln!(out, "{summary}")?;
    Ok(summary)
}

/// Re-drives `todo` in batches of `options.batch`, one transaction each;
/// returns how many were re-driven.
fn publish(
    producer: Transactional,
    options: &RedriveOptions,
    todo: &[(DeadLetter, Coordinates)],
    out: &mut impl Write,
) -> Result<usize, DlqError> {
    let mut redriven = 0;
    for (index, batch) in todo.chunks(options.batch.max(1)).enumerate() {
        let number = index + 1;
        producer.begin()?;
        for (letter, origin) in batch {
            producer.send(
                &origin.topic,
                Some(origin.partition),
                letter.key.as_deref(),
                letter.payload.as_deref(),
                {
                    letter
                        .original_headers()
                        .fold(OwnedHeaders::new(), |h, (key, value)| h.insert(Header { key, value }))
                },
            )?;
            let entry = LogEntry::new(letter, origin, &options.transactional_id);
            let key = letter.at.to_string();
            producer.send(
                &options.log_topic,
                None,
                Some(key.as_bytes()),
                Some(&entry.encode()),
                OwnedHeaders::new(),
            )?;
        }
        if options.crash_before_commit_of_batch == Some(number) {
            // Put the records on the broker, then vanish without a word, as
            // a killed process would: no commit, no abort, no clean close.
            let flushed = producer.inner.flush(producer.timeout);
            tracing::warn!(batch = number, ?flushed, "fault injection: batch produced, stopping without a commit");
            std::mem::forget(producer);
            return Err(DlqError::InjectedCrash(number));
        }
        producer.commit()?;
        for (letter, origin) in batch {
            writeln!(out, "redriven {} -> {}/{} {}", letter.at, origin.topic, origin.partition, brief(letter))?;
        }
        redriven += batch.len();
    }
    Ok(redriven)
}

/// `reason=... key=... bytes=...` of a dead letter, for its output line.
fn brief(letter: &DeadLetter) -> String {
    let key = letter.key.as_deref().map_or_else(|| "(none)".to_string(), |k| String::from_utf8_lossy(k).into_owned());
    format!(
        "reason={} key={key} bytes={}",
        letter.reason().unwrap_or(super::list::NONE),
        letter.payload.as_ref().map_or(0, Vec::len)
    )
}

/// Every origin partition must exist, or nothing is re-driven.
fn check_origins(reader: &Reader, todo: &[(DeadLetter, Coordinates)]) -> Result<(), DlqError> {
    let mut known: HashMap<&str, Option<HashSet<i32>>> = HashMap::new();
    for (letter, origin) in todo {
        if !known.contains_key(origin.topic.as_str()) {
            let partitions = reader.partitions(&origin.topic)?.map(|p| p.into_iter().collect());
            known.insert(&origin.topic, partitions);
        }
        let exists =
            known.get(origin.topic.as_str()).and_then(Option::as_ref).is_some_and(|p| p.contains(&origin.partition));
        if !exists {
            return Err(DlqError::MissingOrigin { letter: letter.at.clone(), origin: origin.clone() });
        }
    }
    Ok(())
}

/// Creates the re-drive log topic if it is missing (one partition,
/// compacted: one record per dead letter, kept for good), unless
/// `topics.create` is off.
fn ensure_log_topic(settings: &DlqSettings, topic: &str) -> Result<(), DlqError> {
    let failed = |reason: String| DlqError::CreateLog { topic: topic.to_string(), reason };
    if !settings.topics.create {
        return Ok(());
    }
    let admin: AdminClient<DefaultClientContext> = shoal_kafka::client_config(&settings.kafka, "shoal-dlq-admin")
        .create()
        .map_err(DlqError::kafka("creating a Kafka admin client"))?;
    let new = NewTopic::new(topic, 1, TopicReplication::Fixed(settings.topics.dlq.replication))
        .set("cleanup.policy", "compact");
    let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(30)));
    let results =
        futures::executor::block_on(admin.create_topics([&new], &options)).map_err(|e| failed(e.to_string()))?;
    for result in results {
        match result {
            Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((_, code)) => return Err(failed(code.to_string())),
        }
    }
    Ok(())
}

/// Retries of a retriable transactional call.
const RETRIES: u32 = 5;

/// A transactional producer, used from this (blocking) thread only.
struct Transactional {
    inner: BaseProducer,
    timeout: Duration,
}

impl Transactional {
    /// Creates the producer and initialises transactions: fences earlier
    /// runs with `transactional_id` and settles their open transaction.
    fn create(settings: &DlqSettings, transactional_id: &str) -> Result<Self, DlqError> {
        let timeout = settings.call_timeout();
        let mut cfg = shoal_kafka::producer_config(&settings.kafka, "shoal-dlq");
        // librdkafka requires message.timeout.ms <= transaction.timeout.ms.
        let transaction_timeout =
            timeout.saturating_mul(2).max(Duration::from_millis(u64::from(settings.kafka.message_timeout_ms)));
        cfg.set("transactional.id", transactional_id)
            .set("transaction.timeout.ms", transaction_timeout.as_millis().to_string());
        let inner: BaseProducer = cfg.create().map_err(DlqError::kafka("creating a transactional producer"))?;
        let this = Self { inner, timeout };
        this.retrying("initialising transactions", |p| p.inner.init_transactions(p.timeout))
            .map_err(|source| DlqError::Transaction { state: "nothing re-driven", source })?;
        Ok(this)
    }

    fn begin(&self) -> Result<(), DlqError> {
        self.inner.begin_transaction().map_err(|source| DlqError::Transaction { state: "not begun", source })
    }

    /// Enqueues a record of the open transaction, waiting for room when
    /// librdkafka's queue is full.
    fn send(
        &self,
        topic: &str,
        partition: Option<i32>,
        key: Option<&[u8]>,
        payload: Option<&[u8]>,
        headers: OwnedHeaders,
    ) -> Result<(), DlqError> {
        let mut record: BaseRecord<'_, [u8], [u8]> = BaseRecord::to(topic).headers(headers);
        record.partition = partition;
        record.key = key;
        record.payload = payload;
        loop {
            match self.inner.send(record) {
                Ok(()) => return Ok(()),
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), returned)) => {
                    record = returned;
                    self.inner.poll(Duration::from_millis(10));
                }
                Err((source, _)) => return Err(self.abort(source)),
            }
        }
    }

    /// Commits the open transaction; aborts it when it cannot be.
    fn commit(&self) -> Result<(), DlqError> {
        self.retrying("committing", |p| p.inner.commit_transaction(p.timeout)).map_err(|source| self.abort(source))
    }

    /// Aborts the open transaction after `source` went wrong, and says what
    /// became of it.
    fn abort(&self, source: KafkaError) -> DlqError {
        let unknown = matches!(&source, KafkaError::Transaction(rd) if rd.is_fatal())
            || matches!(
                source.rdkafka_error_code(),
                Some(
                    RDKafkaErrorCode::Fenced
                        | RDKafkaErrorCode::ProducerFenced
                        | RDKafkaErrorCode::InvalidProducerEpoch
                        | RDKafkaErrorCode::OperationTimedOut
                )
            );
        if unknown {
            return DlqError::Transaction {
                state: "outcome unknown: the next run settles it and reads the re-drive log",
                source,
            };
        }
        match self.retrying("aborting", |p| p.inner.abort_transaction(p.timeout)) {
            Ok(()) => DlqError::Transaction { state: "aborted: none of the batch is visible", source },
            Err(error) => {
                tracing::error!(%error, "aborting the re-drive transaction failed");
                DlqError::Transaction { state: "not aborted: the next run aborts it", source }
            }
        }
    }

    fn retrying(&self, what: &str, call: impl Fn(&Self) -> Result<(), KafkaError>) -> Result<(), KafkaError> {
        let mut attempt = 0;
        loop {
            match call(self) {
                Err(KafkaError::Transaction(rd)) if rd.is_retriable() && attempt < RETRIES => {
                    attempt += 1;
                    tracing::warn!(error = %rd, attempt, "{what} failed; retrying");
                }
                other => return other,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::super::letter::tests::letter;
    use super::*;

    #[test]
    fn the_plan_skips_what_the_log_lists_letters_without_origin_and_repeats_of_an_origin() {
        let done = letter(1, "retries_exhausted", Some(("shoal.commands", 0, 10)), b"a");
        let mut log = RedriveLog::default();
        log.insert(LogEntry::new(&done, &done.origin().unwrap(), "shoal-dlq-redrive"));
        let mut origins = log.origins();
        let mut plan = Plan::default();
        plan.add(done.clone(), &log, &mut origins);
        plan.add(letter(2, "retries_exhausted", Some(("shoal.commands", 0, 11)), b"b"), &log, &mut origins);
        plan.add(letter(3, "malformed", None, b"c"), &log, &mut origins);
        // The same origin as the dead letter at offset 2, dead-lettered again.
        plan.add(letter(4, "retries_exhausted", Some(("shoal.commands", 0, 11)), b"b"), &log, &mut origins);
        // The same origin as one the log lists.
        plan.add(letter(5, "retries_exhausted", Some(("shoal.commands", 0, 10)), b"a"), &log, &mut origins);
        assert_eq!(plan.selected, 5);
        let todo: Vec<String> = plan.todo.iter().map(|(l, o)| format!("{} {o}", l.at)).collect();
        assert_eq!(todo, ["shoal.dlq/0@2 shoal.commands/0@11"]);
        let already: Vec<String> = plan.already.iter().map(|(at, _)| at.to_string()).collect();
        assert_eq!(already, ["shoal.dlq/0@1", "shoal.dlq/0@4", "shoal.dlq/0@5"]);
        assert_eq!(plan.no_origin.len(), 1);
    }

    #[test]
    fn the_summary_line_names_every_count() {
        let summary =
            RedriveSummary { selected: 4, redriven: 2, already_redriven: 1, skipped_no_origin: 1, would_redrive: None };
        assert_eq!(summary.to_string(), "dlq redrive: selected=4 redriven=2 already_redriven=1 skipped_no_origin=1");
        let dry = RedriveSummary { would_redrive: Some(3), selected: 3, ..RedriveSummary::default() };
        assert_eq!(
            dry.to_string(),
            "dlq redrive: selected=3 redriven=0 already_redriven=0 skipped_no_origin=0 dry_run=true would_redrive=3"
        );
    }
}
