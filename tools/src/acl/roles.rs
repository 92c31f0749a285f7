//! Each role's bindings, derived from what its code does with Kafka. The
//! reasons name the code; keep them in step with it.
//!
//! What the broker checks, per request Shoal's clients send:
//!
//! - Metadata, ListOffsets (watermarks), OffsetFetch: Describe on the topic
//!   (implied by Read and Write, listed anyway so every topic a role touches
//!   shows it);
//! - Produce: Write on the topic; Fetch: Read on the topic;
//! - JoinGroup, SyncGroup, Heartbeat, OffsetCommit (and KIP-848's
//!   ConsumerGroupHeartbeat): Read on the group;
//! - FindCoordinator of a group: Describe on the group. librdkafka asks it
//!   for every consumer with a `group.id`, including Shoal's readers that
//!   only assign partitions and commit nothing (`shoal_kafka::tail::
//!   reader_config`), and hands a refusal to the application as a consumer
//!   error (`shoal-dlq list` then fails with GROUP_AUTHORIZATION_FAILED;
//!   the tail and log readers log it): those reader groups get Describe
//!   only;
//! - InitProducerId with a `transactional.id`, AddPartitionsToTxn, EndTxn,
//!   FindCoordinator of the id: Write (and Describe) on the transactional
//!   id; AddOffsetsToTxn and TxnOffsetCommit: Read on the group too;
//! - InitProducerId without one (the idempotent producers outside
//!   transactions): IdempotentWrite on the cluster before Kafka 2.8, Write
//!   on any topic since (KIP-679), so no cluster binding unless
//!   [`AclOptions::idempotent_write`];
//! - CreateTopics: Create on the topic, asked even for a topic that exists,
//!   so only with `topics.create = true` (better: create the topics once as
//!   an admin and run with `topics.create = false`).
//!
//! Every consumer and reader Shoal creates reads `read_committed`
//! (`shoal_kafka::consumer_config`, `shoal_kafka::tail::reader_config`,
//! `feed::dedupe::recover`); isolation is a client setting, not an ACL.

use std::collections::BTreeMap;

use shoal_kafka::settings::{DeliveryMode, TopicsSettings};

use super::{
    ANY_HOST, AclBinding, AclError, AclOptions, AclSettings, CLUSTER_NAME, Grant, Operation, PatternType, Permission,
    ResourceType, Role, RoleAcls,
};

use Operation::{Create, Describe, IdempotentWrite, Read, Write};

/// Each of `roles`' bindings under `settings` and `options`, in the order
/// of [`Role::ALL`].
pub fn derive(settings: &AclSettings, options: &AclOptions, roles: &[Role]) -> Result<Vec<RoleAcls>, AclError> {
    let ctx = Ctx { s: settings, opts: options };
    let mut out = Vec::new();
    for role in Role::ALL.into_iter().filter(|r| roles.contains(r)) {
        let mut b = Builder::new(options.principal(role));
        match role {
            Role::Ingest => ingest(&ctx, &mut b),
            Role::Decisions => decisions(&ctx, &mut b)?,
            Role::State => state_cli(&ctx, &mut b),
            Role::Results => results(&ctx, &mut b)?,
            Role::Worker => worker(&ctx, &mut b)?,
            Role::Api => api(&ctx, &mut b, false),
            Role::Redrive => redrive(&ctx, &mut b)?,
        }
        out.push(b.finish(role)?);
    }
    Ok(out)
}

/// A resource, with the configuration key that named it.
#[derive(Debug, Clone)]
struct Res {
    kind: ResourceType,
    name: String,
    pattern: PatternType,
    from: String,
}

fn res(kind: ResourceType, pattern: PatternType, from: impl Into<String>, name: impl Into<String>) -> Res {
    Res { kind, name: name.into(), pattern, from: from.into() }
}

/// Collects one role's bindings, merging the reasons of repeated ones.
#[derive(Debug)]
struct Builder {
    principal: String,
    grants: BTreeMap<(ResourceType, String, PatternType, Operation), Grant>,
    notes: Vec<String>,
}

impl Builder {
    fn new(principal: String) -> Self {
        Self { principal, grants: BTreeMap::new(), notes: Vec::new() }
    }

    fn allow(&mut self, r: &Res, ops: &[Operation], why: &str) {
        for &operation in ops {
            let grant = self.grants.entry((r.kind, r.name.clone(), r.pattern, operation)).or_insert_with(|| Grant {
                binding: AclBinding {
                    principal: self.principal.clone(),
                    resource_type: r.kind,
                    name: r.name.clone(),
                    pattern: r.pattern,
                    operation,
                    permission: Permission::Allow,
                    host: ANY_HOST.into(),
                },
                from: r.from.clone(),
                why: Vec::new(),
            });
            if !grant.why.iter().any(|w| w == why) {
                grant.why.push(why.to_string());
            }
        }
    }

    /// A topic the role uses: `ops`, and Describe.
    fn topic(&mut self, r: &Res, ops: &[Operation], why: &str) {
        self.allow(r, ops, why);
        self.allow(r, &[Describe], why);
    }

    fn note(&mut self, note: impl Into<String>) {
        self.notes.push(note.into());
    }

    /// The role's bindings, refusing any that would name every resource.
    fn finish(self, role: Role) -> Result<RoleAcls, AclError> {
        for g in self.grants.values() {
            let b = &g.binding;
            if b.name.is_empty() || b.name == "*" {
                return Err(AclError::name(&g.from, format!("{:?} names every resource", b.name), "a specific name"));
            }
        }
        Ok(RoleAcls { role, principal: self.principal, grants: self.grants.into_values().collect(), notes: self.notes })
    }
}

/// The settings, with the names derived from them.
struct Ctx<'a> {
    s: &'a AclSettings,
    opts: &'a AclOptions,
}

impl Ctx<'_> {
    fn topics(&self) -> &TopicsSettings {
        &self.s.orchestrator.topics
    }

    /// The topic at `topics.<key>`.
    fn topic(&self, key: &str) -> Res {
        let name = self.topics().all().iter().find(|(k, _)| *k == key).map(|(_, t)| t.name.clone()).unwrap_or_default();
        res(ResourceType::Topic, PatternType::Literal, format!("topics.{key}.name"), name)
    }

    /// The state changelog of the input topic at `topics.<key>`
    /// (`orchestrator/src/state/settings.rs` `changelog_of`).
    fn changelog(&self, key: &str) -> Result<Res, AclError> {
        let input = self.topic(key);
        let name = self.s.orchestrator.state.changelog_of(&input.name);
        let from = format!("topics.{key}.name + state.changelog_suffix");
        check_topic_name("state.changelog_suffix", &name)?;
        Ok(res(ResourceType::Topic, PatternType::Literal, from, name))
    }

    fn members(&self) -> Res {
        let name = self.s.orchestrator.state.members_topic.clone();
        res(ResourceType::Topic, PatternType::Literal, "state.members_topic", name)
    }

    fn exactly_once(&self) -> bool {
        self.s.orchestrator.delivery.mode == DeliveryMode::ExactlyOnce
    }

    fn orchestrator_id(&self) -> &str {
        &self.s.orchestrator.orchestrator.id
    }
}

/// Kafka's rule for topic names (`TopicSettings::validate`).
fn check_topic_name(key: &str, name: &str) -> Result<(), AclError> {
    let valid = !name.is_empty()
        && name.len() <= 249
        && name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
    if valid {
        Ok(())
    } else {
        Err(AclError::name(
            key,
            format!("{name:?} is not a valid Kafka topic name"),
            "1-249 characters of [a-zA-Z0-9._-]",
        ))
    }
}

const WHY_CREATE: &str = "topics.create = true: creates the missing topics at start-up (shoal_kafka::ensure_topics, \
                          called by orchestrator/src/lib.rs run and worker/src/lib.rs run)";
const WHY_STATE_CREATE: &str = "topics.create = true: creates the missing changelogs and the members topic \
                                (orchestrator/src/state/topics.rs ensure)";
const WHY_LEGACY: &str = "--idempotent-write: idempotent producers outside transactions, on brokers before Kafka 2.8";
const NOTE_CREATE: &str = "topics.create = true grants Create on the topics this role creates at start-up; \
                           prefer creating them once as an admin (or the chart's job or KafkaTopics) and \
                           running with topics.create = false (SHOAL__TOPICS__CREATE=false), which drops these";

/// Create on Shoal's seven topics, when the processes create them.
fn create_topics(ctx: &Ctx<'_>, b: &mut Builder) {
    if !ctx.topics().create {
        return;
    }
    for (key, _) in ctx.topics().all() {
        b.allow(&ctx.topic(key), &[Create], WHY_CREATE);
    }
    b.note(NOTE_CREATE);
}

/// Write and Describe on the stage's transactional ids,
/// `<prefix>-<stage>-<instance>` (shoal_kafka::stage::StageEnv::connect,
/// DeliverySettings::transactional_id): prefixed, so every instance is
/// covered whatever its id.
fn transactional(ctx: &Ctx<'_>, b: &mut Builder, stage: &str, why: &str) {
    if !ctx.exactly_once() {
        b.note("delivery.mode = at_least_once: no transactional id; the stage's producer is idempotent");
        return;
    }
    let prefix = format!("{}-{stage}-", ctx.s.orchestrator.delivery.transactional_id_prefix);
    let from = "delivery.transactional_id_prefix";
    b.allow(&res(ResourceType::TransactionalId, PatternType::Prefixed, from, prefix), &[Write, Describe], why);
}

/// IdempotentWrite on the cluster, for old brokers, when asked.
fn legacy_idempotent(ctx: &Ctx<'_>, b: &mut Builder) {
    if ctx.opts.idempotent_write {
        b.allow(
            &res(ResourceType::Cluster, PatternType::Literal, "--idempotent-write", CLUSTER_NAME),
            &[IdempotentWrite],
            WHY_LEGACY,
        );
    }
}

/// Describe on the groups of the readers that assign partitions
/// themselves and commit nothing: all named `<instance id>-...`, so one
/// prefixed binding on the instance id covers them (and per-replica ids
/// that extend it).
fn reader_groups(b: &mut Builder, from: &str, instance: &str, groups: &str) {
    let why = format!(
        "readers that assign partitions and commit nothing ({groups}): librdkafka looks up their group's \
         coordinator (shoal_kafka::tail::reader_config)"
    );
    b.allow(&res(ResourceType::Group, PatternType::Prefixed, from, instance), &[Describe], &why);
}

/// `ingest`: the feed into the ticks topic (orchestrator/src/lib.rs
/// spawn_ingest). Not transactional.
fn ingest(ctx: &Ctx<'_>, b: &mut Builder) {
    let ticks = ctx.topic("ticks");
    b.topic(
        &ticks,
        &[Write],
        "writes the ticks with an idempotent producer (orchestrator/src/lib.rs spawn_ingest, feed::TickSink)",
    );
    if ctx.s.orchestrator.feed.recover_tail_records > 0 {
        b.topic(
            &ticks,
            &[Read],
            "reads the ticks topic's tail at start-up to skip trades already written \
             (orchestrator/src/lib.rs recover_ingest_state, feed/dedupe.rs recover)",
        );
        let group = res(
            ResourceType::Group,
            PatternType::Literal,
            "orchestrator/src/feed/dedupe.rs recover (fixed name)",
            "shoal-ingest-recovery",
        );
        b.allow(
            &group,
            &[Describe],
            "the tail reader's group.id: coordinator look-up only, nothing joined or committed",
        );
    }
    create_topics(ctx, b);
    legacy_idempotent(ctx, b);
}

/// What the decisions and results stages share: their consumer group,
/// transactional ids, the state's changelogs of `inputs` (`topics.<key>`),
/// the members topic's creation, the readers' groups, and the state API
/// they serve.
fn stage_common(
    ctx: &Ctx<'_>,
    b: &mut Builder,
    stage: &str,
    group: (&str, &str),
    inputs: &[&str],
) -> Result<(), AclError> {
    let (group_key, group_name) = group;
    let consumer = res(ResourceType::Group, PatternType::Literal, group_key, group_name);
    b.allow(
        &consumer,
        &[Read],
        &format!(
            "the {stage} stage's consumer group: join, commit, and (exactly-once) offsets sent in its \
             transactions (orchestrator/src/lib.rs connect, shoal_kafka::stage)"
        ),
    );
    for key in inputs {
        b.topic(
            &ctx.topic(key),
            &[Read],
            &format!("the {stage} stage's input (orchestrator/src/lib.rs {stage}_stage)"),
        );
        let changelog = ctx.changelog(key)?;
        b.topic(
            &changelog,
            &[Read, Write],
            "the state's changelog: checkpoints written in the stage's transactions, read to restore a shard \
             (orchestrator/src/state/shards.rs checkpoint, read_checkpoint)",
        );
        if ctx.topics().create {
            b.allow(&changelog, &[Create], WHY_STATE_CREATE);
        }
    }
    if ctx.topics().create {
        b.allow(&ctx.members(), &[Create], WHY_STATE_CREATE);
    }
    transactional(ctx, b, stage, &format!("the {stage} stage's transactional producer (exactly-once)"));
    let readers = format!("{0}-{stage}-state-reader, {0}-state-admin-reader", ctx.orchestrator_id());
    reader_groups(b, "orchestrator.id", ctx.orchestrator_id(), &readers);
    api(ctx, b, true);
    create_topics(ctx, b);
    legacy_idempotent(ctx, b);
    Ok(())
}

/// `decisions`: ticks, events and approvals in; commands, approval
/// requests and dead letters out, in one transaction with the state's
/// checkpoints (orchestrator/src/lib.rs decisions_stage, decisions.rs).
fn decisions(ctx: &Ctx<'_>, b: &mut Builder) -> Result<(), AclError> {
    let o = &ctx.s.orchestrator;
    let group = ("orchestrator.decisions_group", o.orchestrator.decisions_group.as_str());
    stage_common(ctx, b, "decisions", group, &["ticks", "events", "approvals"])?;
    b.topic(
        &ctx.topic("commands"),
        &[Write],
        "issues the commands, in the stage's transactions (decisions.rs issue, publish)",
    );
    b.topic(
        &ctx.topic("commands"),
        &[Read],
        "reads the commands topic's tail to recover each key's last seq (orchestrator/src/lib.rs decisions_stage, \
         TailReader)",
    );
    b.topic(&ctx.topic("dlq"), &[Write], "dead-letters inputs it cannot decode or apply (decisions.rs dead_letter)");
    if !o.rules.approval_kinds.is_empty() {
        b.topic(
            &ctx.topic("approvals"),
            &[Write],
            "rules.approval_kinds is set: writes approval requests (decisions.rs hold) and expiries (approvals.rs \
             ApprovalsSink, orchestrator/src/lib.rs approval_rules)",
        );
    }
    let id = ctx.orchestrator_id();
    reader_groups(b, "orchestrator.id", id, &format!("{id}-sequences-tail"));
    Ok(())
}

/// `results`: commands, results and dead letters in; dead letters and the
/// state's checkpoints out (orchestrator/src/lib.rs results_stage,
/// results.rs).
fn results(ctx: &Ctx<'_>, b: &mut Builder) -> Result<(), AclError> {
    let o = &ctx.s.orchestrator;
    let group = ("orchestrator.results_group", o.orchestrator.results_group.as_str());
    stage_common(ctx, b, "results", group, &["commands", "results", "dlq"])?;
    b.topic(&ctx.topic("dlq"), &[Write], "dead-letters commands and results it cannot decode (results.rs)");
    Ok(())
}

/// `state`: `shoal-state audit` and `replay` read input topics from the
/// start, read only (orchestrator/src/bin/shoal-state.rs).
fn state_cli(ctx: &Ctx<'_>, b: &mut Builder) {
    for key in ["ticks", "events", "approvals", "commands", "results", "dlq"] {
        b.topic(
            &ctx.topic(key),
            &[Read],
            "shoal-state replays an input topic's partitions (orchestrator/src/bin/shoal-state.rs, state/log.rs \
             LogReader)",
        );
    }
    let group = res(
        ResourceType::Group,
        PatternType::Literal,
        "orchestrator/src/bin/shoal-state.rs (fixed client id shoal-state-cli)",
        "shoal-state-cli-reader",
    );
    b.allow(&group, &[Describe], "the reader's group.id: coordinator look-up only, nothing joined or committed");
}

/// `worker`: commands in; results, dead letters and next-level commands
/// out in one transaction; the journal outside it (worker/src/lib.rs run).
fn worker(ctx: &Ctx<'_>, b: &mut Builder) -> Result<(), AclError> {
    let w = &ctx.s.worker.worker;
    let group = res(ResourceType::Group, PatternType::Literal, "worker.group_id", w.group_id.clone());
    b.allow(
        &group,
        &[Read],
        "the workers' consumer group: join, commit, and (exactly-once) offsets sent in the transactions \
         (worker/src/lib.rs run, shoal_kafka::stage)",
    );
    b.topic(&ctx.topic("commands"), &[Read], "the commands it handles (worker/src/lib.rs run)");
    b.topic(&ctx.topic("results"), &[Write], "publishes a result per command (processor.rs)");
    b.topic(&ctx.topic("dlq"), &[Write], "dead-letters commands that fail for good (processor.rs)");
    b.topic(
        &ctx.topic("journal"),
        &[Read, Write],
        "the side-effect journal: an idempotent producer outside the transactions, and a reader of a partition \
         from its start (worker/src/journal/kafka.rs KafkaStore)",
    );
    if !w.next_topic.is_empty() {
        check_topic_name("worker.next_topic", &w.next_topic)?;
        let next = res(ResourceType::Topic, PatternType::Literal, "worker.next_topic", w.next_topic.clone());
        b.topic(&next, &[Write], "publishes the commands skills emit for the next level (worker/src/levels.rs)");
    }
    let at_least_once = ctx.s.worker.delivery.mode == DeliveryMode::AtLeastOnce;
    if at_least_once {
        b.topic(
            &ctx.topic("results"),
            &[Read],
            "at-least-once: refills the dedupe window from the results topic's tail (worker/src/dedupe.rs)",
        );
    }
    if w.cases.enabled || w.incidents.enabled {
        b.topic(
            &ctx.topic("results"),
            &[Read],
            "worker.cases or worker.incidents: restores the stateful skills from the results topic's tail \
             (worker/src/keyed.rs Restorer)",
        );
    } else if !at_least_once {
        b.note(
            "no Read on the results topic: only the built-in stateful skills (worker.cases, worker.incidents) \
             and at-least-once dedupe read it; a custom skill with keyed state needs it too",
        );
    }
    transactional(ctx, b, "worker", "the worker's transactional producer (exactly-once)");
    let id = &w.id;
    reader_groups(b, "worker.id", id, &format!("{id}-journal-journal, {id}-state-tail, {id}-dedupe-tail"));
    if ctx.s.worker_id_defaulted {
        b.note(format!(
            "worker.id is not set, so the readers' group prefix is this host's name ({id}): set SHOAL__WORKER__ID \
             to the common prefix of the workers' ids (e.g. the StatefulSet's name)"
        ));
    }
    create_topics(ctx, b);
    legacy_idempotent(ctx, b);
    Ok(())
}

/// The state query API's Kafka access (orchestrator/src/lib.rs start_api,
/// api_app): the members topic, and the events and approvals topics when
/// it accepts command requests and approval decisions. `common/api` and
/// `shoal-mcp` (HTTP only) have none of their own. `in_stage`: added to a
/// decisions or results role, whose process serves the API.
fn api(ctx: &Ctx<'_>, b: &mut Builder, in_stage: bool) {
    let (o, a) = (&ctx.s.orchestrator, &ctx.s.orchestrator.api);
    let by = if in_stage { "the state API this process serves: " } else { "" };
    if !a.enabled() {
        if !in_stage {
            b.note("api.listen is empty: the state API is off and needs nothing");
        }
        return;
    }
    b.topic(
        &ctx.members(),
        &[Read, Write],
        &format!("{by}announces this instance's shards and reads the others' (orchestrator/src/state/members.rs)"),
    );
    let id = ctx.orchestrator_id();
    reader_groups(b, "orchestrator.id", id, &format!("{id}-directory"));
    if a.issue_commands {
        b.topic(
            &ctx.topic("events"),
            &[Write],
            &format!("{by}api.issue_commands: writes command requests as events (orchestrator/src/requests.rs)"),
        );
    }
    if !o.rules.approval_kinds.is_empty() {
        b.topic(
            &ctx.topic("approvals"),
            &[Write],
            &format!(
                "{by}rules.approval_kinds: writes approval decisions (orchestrator/src/approvals.rs ApprovalsSink)"
            ),
        );
    }
    if !in_stage {
        b.note(
            "no process authenticates as this role: the API runs inside the decisions and results processes \
             (with their Kafka settings), whose roles include these bindings",
        );
        legacy_idempotent(ctx, b);
    }
}

/// `redrive`: `shoal-dlq` reads the dead-letter topic and its re-drive log,
/// and re-publishes dead letters to their origin topics in transactions
/// with the log (tools/src/dlq).
fn redrive(ctx: &Ctx<'_>, b: &mut Builder) -> Result<(), AclError> {
    let dlq = ctx.topic("dlq");
    b.topic(&dlq, &[Read], "lists, shows and selects dead letters (tools/src/dlq/read.rs Reader)");
    let (log_name, log_from) = match &ctx.opts.redrive_topic {
        Some(topic) => (topic.clone(), "--redrive-topic".to_string()),
        None => (crate::dlq::default_log_topic(&dlq.name), "topics.dlq.name + \".redrive\"".to_string()),
    };
    check_topic_name(&log_from, &log_name)?;
    let log = res(ResourceType::Topic, PatternType::Literal, log_from, log_name);
    b.topic(
        &log,
        &[Read, Write],
        "the re-drive log: read to skip what was re-driven, written in each batch's transaction \
         (tools/src/dlq/redrive.rs, log.rs)",
    );
    if ctx.topics().create {
        b.allow(
            &log,
            &[Create],
            "topics.create = true: creates the re-drive log (tools/src/dlq/redrive.rs ensure_log_topic)",
        );
    }
    for key in ["ticks", "events", "approvals", "commands", "results"] {
        b.topic(
            &ctx.topic(key),
            &[Write],
            "re-publishes dead letters to the topic they came from (decisions: ticks, events, approvals; results \
             and workers: commands, results) (tools/src/dlq/redrive.rs publish)",
        );
    }
    let id = format!("{}-dlq-{}", ctx.s.orchestrator.delivery.transactional_id_prefix, ctx.opts.redrive_group);
    let txn = res(
        ResourceType::TransactionalId,
        PatternType::Literal,
        "delivery.transactional_id_prefix + --redrive-group",
        id,
    );
    b.allow(&txn, &[Write, Describe], "the re-drive's stable transactional id (tools/src/dlq/mod.rs transactional_id)");
    let group = res(
        ResourceType::Group,
        PatternType::Literal,
        "tools/src/dlq/read.rs (fixed client id shoal-dlq)",
        "shoal-dlq-reader",
    );
    b.allow(&group, &[Describe], "the reader's group.id: coordinator look-up only, nothing joined or committed");
    b.note(
        "a dead letter from a topic outside this configuration (another level's commands topic) needs Write there \
         too: run shoal-acl with that level's configuration",
    );
    Ok(())
}
