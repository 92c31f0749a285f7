//! The roles' bindings for known configurations, written out in full.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeSet;

use super::format::{self, StrimziTarget};
use super::*;

use Operation::{Create, Describe, IdempotentWrite, Read, Write};
use PatternType::{Literal, Prefixed};
use ResourceType::{Cluster, Group, Topic, TransactionalId};

type Key = (ResourceType, String, PatternType, Operation);

fn settings(env: &[(&str, &str)]) -> AclSettings {
    try_settings(env).unwrap_or_else(|e| panic!("{env:?}: {e}"))
}

fn try_settings(env: &[(&str, &str)]) -> Result<AclSettings, AclError> {
    // worker.id defaults to the host name: fix it.
    let mut vars = vec![("SHOAL__WORKER__ID".to_string(), "shoal-worker".to_string())];
    vars.extend(env.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    AclSettings::load_from(None, vars)
}

fn role_of(settings: &AclSettings, options: &AclOptions, role: Role) -> RoleAcls {
    derive(settings, options, &[role]).unwrap().remove(0)
}

fn keys(role: &RoleAcls) -> BTreeSet<Key> {
    role.bindings().map(|b| (b.resource_type, b.name.clone(), b.pattern, b.operation)).collect()
}

/// `ops` on one resource.
fn on(kind: ResourceType, name: &str, pattern: PatternType, ops: &[Operation]) -> Vec<Key> {
    ops.iter().map(|op| (kind, name.to_string(), pattern, *op)).collect()
}

fn topic(name: &str, ops: &[Operation]) -> Vec<Key> {
    on(Topic, name, Literal, ops)
}

fn set(parts: Vec<Vec<Key>>) -> BTreeSet<Key> {
    parts.into_iter().flatten().collect()
}

fn assert_role(settings: &AclSettings, role: Role, expected: BTreeSet<Key>) {
    let actual = keys(&role_of(settings, &AclOptions::default(), role));
    let missing: Vec<_> = expected.difference(&actual).collect();
    let extra: Vec<_> = actual.difference(&expected).collect();
    assert!(missing.is_empty() && extra.is_empty(), "{role}: missing {missing:#?}\nextra {extra:#?}");
}

#[test]
fn default_configuration_gives_each_role_exactly_these_bindings() {
    let s = settings(&[]);
    let create_only = |names: &[&str]| names.iter().flat_map(|n| topic(n, &[Create])).collect::<Vec<_>>();
    assert_role(
        &s,
        Role::Ingest,
        set(vec![
            topic("shoal.ticks", &[Create, Describe, Read, Write]),
            on(Group, "shoal-ingest-recovery", Literal, &[Describe]),
            create_only(&[
                "shoal.events",
                "shoal.commands",
                "shoal.results",
                "shoal.dlq",
                "shoal.journal",
                "shoal.approvals",
            ]),
        ]),
    );
    assert_role(
        &s,
        Role::Decisions,
        set(vec![
            on(Group, "shoal-orchestrator-decisions", Literal, &[Read]),
            on(Group, "shoal-orchestrator", Prefixed, &[Describe]),
            on(TransactionalId, "shoal-decisions-", Prefixed, &[Describe, Write]),
            topic("shoal.ticks", &[Create, Describe, Read]),
            topic("shoal.events", &[Create, Describe, Read]),
            topic("shoal.approvals", &[Create, Describe, Read]),
            topic("shoal.commands", &[Create, Describe, Read, Write]),
            topic("shoal.dlq", &[Create, Describe, Write]),
            topic("shoal.ticks.changelog", &[Create, Describe, Read, Write]),
            topic("shoal.events.changelog", &[Create, Describe, Read, Write]),
            topic("shoal.approvals.changelog", &[Create, Describe, Read, Write]),
            topic("shoal.state.members", &[Create, Describe, Read, Write]),
            create_only(&["shoal.results", "shoal.journal"]),
        ]),
    );
    assert_role(
        &s,
        Role::Results,
        set(vec![
            on(Group, "shoal-orchestrator-results", Literal, &[Read]),
            on(Group, "shoal-orchestrator", Prefixed, &[Describe]),
            on(TransactionalId, "shoal-results-", Prefixed, &[Describe, Write]),
            topic("shoal.commands", &[Create, Describe, Read]),
            topic("shoal.results", &[Create, Describe, Read]),
            topic("shoal.dlq", &[Create, Describe, Read, Write]),
            topic("shoal.commands.changelog", &[Create, Describe, Read, Write]),
            topic("shoal.results.changelog", &[Create, Describe, Read, Write]),
            topic("shoal.dlq.changelog", &[Create, Describe, Read, Write]),
            topic("shoal.state.members", &[Create, Describe, Read, Write]),
            create_only(&["shoal.ticks", "shoal.events", "shoal.journal", "shoal.approvals"]),
        ]),
    );
    assert_role(
        &s,
        Role::State,
        set(vec![
            topic("shoal.ticks", &[Describe, Read]),
            topic("shoal.events", &[Describe, Read]),
            topic("shoal.approvals", &[Describe, Read]),
            topic("shoal.commands", &[Describe, Read]),
            topic("shoal.results", &[Describe, Read]),
            topic("shoal.dlq", &[Describe, Read]),
            on(Group, "shoal-state-cli-reader", Literal, &[Describe]),
        ]),
    );
    assert_role(
        &s,
        Role::Worker,
        set(vec![
            on(Group, "shoal-workers", Literal, &[Read]),
            on(Group, "shoal-worker", Prefixed, &[Describe]),
            on(TransactionalId, "shoal-worker-", Prefixed, &[Describe, Write]),
            topic("shoal.commands", &[Create, Describe, Read]),
            topic("shoal.results", &[Create, Describe, Write]),
            topic("shoal.dlq", &[Create, Describe, Write]),
            topic("shoal.journal", &[Create, Describe, Read, Write]),
            create_only(&["shoal.ticks", "shoal.events", "shoal.approvals"]),
        ]),
    );
    assert_role(
        &s,
        Role::Api,
        set(vec![
            topic("shoal.state.members", &[Describe, Read, Write]),
            on(Group, "shoal-orchestrator", Prefixed, &[Describe]),
        ]),
    );
    assert_role(
        &s,
        Role::Redrive,
        set(vec![
            topic("shoal.dlq", &[Describe, Read]),
            topic("shoal.dlq.redrive", &[Create, Describe, Read, Write]),
            topic("shoal.ticks", &[Describe, Write]),
            topic("shoal.events", &[Describe, Write]),
            topic("shoal.approvals", &[Describe, Write]),
            topic("shoal.commands", &[Describe, Write]),
            topic("shoal.results", &[Describe, Write]),
            on(TransactionalId, "shoal-dlq-redrive", Literal, &[Describe, Write]),
            on(Group, "shoal-dlq-reader", Literal, &[Describe]),
        ]),
    );
}

#[test]
fn without_topic_creation_no_role_may_create_and_the_rest_stays() {
    let with = settings(&[]);
    let without = settings(&[("SHOAL__TOPICS__CREATE", "false")]);
    for role in Role::ALL {
        let (a, b) = (
            keys(&role_of(&with, &AclOptions::default(), role)),
            keys(&role_of(&without, &AclOptions::default(), role)),
        );
        assert!(b.iter().all(|k| k.3 != Create), "{role}");
        let kept: BTreeSet<Key> = a.into_iter().filter(|k| k.3 != Create).collect();
        assert_eq!(kept, b, "{role}: only Create goes");
    }
    assert_role(
        &without,
        Role::Ingest,
        set(vec![
            topic("shoal.ticks", &[Describe, Read, Write]),
            on(Group, "shoal-ingest-recovery", Literal, &[Describe]),
        ]),
    );
    let notes = role_of(&with, &AclOptions::default(), Role::Worker).notes;
    assert!(notes.iter().any(|n| n.contains("topics.create = false")), "{notes:?}");
}

#[test]
fn renames_in_the_configuration_change_the_bindings() {
    let s = settings(&[
        ("SHOAL__TOPICS__COMMANDS__NAME", "prod.commands"),
        ("SHOAL__TOPICS__DLQ__NAME", "prod.dlq"),
        ("SHOAL__STATE__CHANGELOG_SUFFIX", ".cl"),
        ("SHOAL__STATE__MEMBERS_TOPIC", "prod.members"),
        ("SHOAL__DELIVERY__TRANSACTIONAL_ID_PREFIX", "prod"),
        ("SHOAL__ORCHESTRATOR__RESULTS_GROUP", "prod-results"),
        ("SHOAL__ORCHESTRATOR__DECISIONS_GROUP", "prod-decisions"),
        ("SHOAL__ORCHESTRATOR__ID", "orch-eu"),
        ("SHOAL__WORKER__GROUP_ID", "prod-workers"),
        ("SHOAL__WORKER__ID", "prod-worker"),
    ]);
    let all = derive(&s, &AclOptions::default(), &Role::ALL).unwrap();
    for role in &all {
        for b in role.bindings() {
            for old in ["shoal.commands", "shoal.dlq", "shoal-orchestrator", "shoal-workers", "shoal-results-"] {
                assert!(!b.name.starts_with(old), "{}: {b}", role.role);
            }
        }
    }
    let results = keys(&all[3]);
    assert_eq!(all[3].role, Role::Results);
    for key in [
        (Topic, "prod.commands", Literal, Read),
        (Topic, "prod.commands.cl", Literal, Write),
        (Topic, "prod.dlq.cl", Literal, Read),
        (Topic, "prod.members", Literal, Write),
        (Group, "prod-results", Literal, Read),
        (Group, "orch-eu", Prefixed, Describe),
        (TransactionalId, "prod-results-", Prefixed, Write),
    ] {
        assert!(results.contains(&(key.0, key.1.to_string(), key.2, key.3)), "{key:?} in {results:#?}");
    }
    let worker = keys(&all[4]);
    assert!(worker.contains(&(Group, "prod-workers".into(), Literal, Read)));
    assert!(worker.contains(&(Group, "prod-worker".into(), Prefixed, Describe)));
    assert!(worker.contains(&(TransactionalId, "prod-worker-".into(), Prefixed, Write)));
    let redrive = keys(&all[6]);
    assert!(redrive.contains(&(Topic, "prod.dlq.redrive".into(), Literal, Write)));
    assert!(redrive.contains(&(TransactionalId, "prod-dlq-redrive".into(), Literal, Write)));
    let grant = all[3].grants.iter().find(|g| g.binding.name == "prod.commands.cl").unwrap();
    assert_eq!(grant.from, "topics.commands.name + state.changelog_suffix");
}

#[test]
fn principals_default_to_the_role_and_can_be_overridden() {
    let s = settings(&[]);
    let mut options = AclOptions::default();
    options.set_principal("worker=User:shoal-worker").unwrap();
    options.set_principal(" api = svc-api ").unwrap();
    let all = derive(&s, &options, &Role::ALL).unwrap();
    for role in &all {
        let expected = match role.role {
            Role::Worker => "User:shoal-worker".to_string(),
            Role::Api => "User:svc-api".to_string(),
            other => format!("User:{other}"),
        };
        assert_eq!(role.principal, expected);
        assert!(role.bindings().all(|b| b.principal == expected), "{}", role.role);
    }
    for bad in ["worker", "wroker=User:x", "worker=User:", "worker=User:*", "worker=:x", "worker=User:a b"] {
        let error = options.clone().set_principal(bad).unwrap_err().to_string();
        assert!(error.contains("--principal") && error.contains("ingest, decisions"), "{bad}: {error}");
    }
}

/// Configurations that turn on everything conditional.
fn variants() -> Vec<AclSettings> {
    vec![
        settings(&[]),
        settings(&[("SHOAL__DELIVERY__MODE", "at_least_once"), ("SHOAL__TOPICS__CREATE", "false")]),
        settings(&[
            ("SHOAL__RULES__APPROVAL_KINDS", "paper_order"),
            ("SHOAL__API__ISSUE_COMMANDS", "true"),
            ("SHOAL__WORKER__NEXT_TOPIC", "shoal.orders"),
            ("SHOAL__WORKER__CASES__ENABLED", "true"),
        ]),
        settings(&[("SHOAL__API__LISTEN", ""), ("SHOAL__FEED__RECOVER_TAIL_RECORDS", "0")]),
    ]
}

#[test]
fn every_binding_is_an_allow_on_a_named_resource_never_all() {
    let legacy = AclOptions { idempotent_write: true, ..AclOptions::default() };
    for s in variants() {
        for options in [AclOptions::default(), legacy.clone()] {
            for role in derive(&s, &options, &Role::ALL).unwrap() {
                for grant in &role.grants {
                    let b = &grant.binding;
                    assert_eq!(b.permission, Permission::Allow, "{b}");
                    assert_ne!(b.operation, Operation::All, "{b}");
                    assert!(!b.name.is_empty() && b.name != "*" && !b.name.contains('*'), "{b}");
                    assert_eq!(b.host, "*");
                    assert!(!grant.why.is_empty() && !grant.from.is_empty(), "{b}");
                    assert!(b.resource_type != Cluster || b.operation == IdempotentWrite, "{b}");
                }
            }
        }
    }
}

#[test]
fn conditional_access_follows_the_configuration() {
    let [plain, at_least_once, features, no_api] = <[AclSettings; 4]>::try_from(variants()).ok().unwrap();
    let get = |s: &AclSettings, role| keys(&role_of(s, &AclOptions::default(), role));
    let has = |k: &BTreeSet<Key>, kind, name: &str, op| k.iter().any(|x| x.0 == kind && x.1 == name && x.3 == op);
    // Exactly-once only: transactional ids of the stages, not the re-drive's.
    for role in [Role::Decisions, Role::Results, Role::Worker] {
        assert!(get(&plain, role).iter().any(|k| k.0 == TransactionalId), "{role}");
        assert!(!get(&at_least_once, role).iter().any(|k| k.0 == TransactionalId), "{role}");
    }
    assert!(get(&at_least_once, Role::Redrive).iter().any(|k| k.0 == TransactionalId));
    // The worker reads results for at-least-once dedupe and stateful skills.
    assert!(!has(&get(&plain, Role::Worker), Topic, "shoal.results", Read));
    assert!(has(&get(&at_least_once, Role::Worker), Topic, "shoal.results", Read));
    assert!(has(&get(&features, Role::Worker), Topic, "shoal.results", Read));
    assert!(has(&get(&features, Role::Worker), Topic, "shoal.orders", Write));
    // Approvals and command requests.
    assert!(!has(&get(&plain, Role::Decisions), Topic, "shoal.approvals", Write));
    for role in [Role::Decisions, Role::Results, Role::Api] {
        assert!(has(&get(&features, role), Topic, "shoal.approvals", Write), "{role}");
        assert!(has(&get(&features, role), Topic, "shoal.events", Write), "{role}");
    }
    // No API: no members access beyond creating the topic.
    assert!(get(&no_api, Role::Api).is_empty());
    assert!(!has(&get(&no_api, Role::Decisions), Topic, "shoal.state.members", Write));
    assert!(has(&get(&no_api, Role::Decisions), Topic, "shoal.state.members", Create));
    // No tail recovery: ingest only writes.
    assert!(!has(&get(&no_api, Role::Ingest), Topic, "shoal.ticks", Read));
    assert!(!get(&no_api, Role::Ingest).iter().any(|k| k.0 == Group));
    // IdempotentWrite only when asked, only for idempotent producers.
    let legacy = AclOptions { idempotent_write: true, ..AclOptions::default() };
    for role in Role::ALL {
        let cluster = keys(&role_of(&plain, &legacy, role)).iter().any(|k| k.0 == Cluster);
        assert_eq!(cluster, !matches!(role, Role::State | Role::Redrive), "{role}");
        assert!(!get(&plain, role).iter().any(|k| k.0 == Cluster), "{role}");
    }
}

#[test]
fn bad_names_are_refused_naming_their_key() {
    for (var, value, key) in [
        ("SHOAL__STATE__CHANGELOG_SUFFIX", "/changes", "state.changelog_suffix"),
        ("SHOAL__WORKER__NEXT_TOPIC", "next level", "worker.next_topic"),
        ("SHOAL__TOPICS__DLQ__NAME", "*", "topics.dlq.name"),
        ("SHOAL__TOPICS__COMMANDS__PARTITIONS", "0", "topics.commands.partitions"),
        ("SHOAL__DELIVERY__MODE", "twice", "mode"),
    ] {
        let error = try_settings(&[(var, value)])
            .and_then(|s| derive(&s, &AclOptions::default(), &Role::ALL))
            .unwrap_err()
            .to_string();
        assert!(error.contains(key), "{var}={value}: {error}");
    }
    let s = settings(&[]);
    let options = AclOptions { redrive_topic: Some("bad topic".into()), ..AclOptions::default() };
    let error = derive(&s, &options, &[Role::Redrive]).unwrap_err().to_string();
    assert!(error.contains("--redrive-topic"), "{error}");
}

#[test]
fn every_format_carries_the_bindings() {
    let s = settings(&[]);
    let mut options = AclOptions::default();
    options.set_principal("results=User:decisions").unwrap();
    let roles = derive(&s, &options, &[Role::Decisions, Role::Results, Role::Worker]).unwrap();
    let mut out = Vec::new();
    format::table(&roles, true, &mut out).unwrap();
    let table = String::from_utf8(out).unwrap();
    assert!(table.contains("decisions (User:decisions)") && table.contains("RESOURCE"), "{table}");
    assert!(table.contains("shoal-decisions-") && table.contains("orchestrator/src/"), "{table}");

    let mut out = Vec::new();
    format::kafka_acls(&roles, "broker:9093", "admin.properties", &mut out).unwrap();
    let commands = String::from_utf8(out).unwrap();
    assert!(
        commands.contains(
            "kafka-acls.sh --bootstrap-server broker:9093 --command-config admin.properties --add --allow-principal \
         User:worker --allow-host '*' --operation Write --operation Describe --transactional-id shoal-worker- \
         --resource-pattern-type prefixed"
        ),
        "{commands}"
    );
    let lines = commands.lines().filter(|l| l.starts_with("kafka-acls.sh")).count();
    assert!(lines > 10, "{commands}");

    let json = format::json(&roles);
    let count: usize = json["roles"].as_array().unwrap().iter().map(|r| r["bindings"].as_array().unwrap().len()).sum();
    assert_eq!(count, roles.iter().map(|r| r.grants.len()).sum::<usize>());
    assert_eq!(json["roles"][0]["principal"], "User:decisions");

    let mut out = Vec::new();
    let target = StrimziTarget { cluster: "prod".into(), namespace: Some("shoal".into()) };
    format::strimzi(&roles, &target, &mut out).unwrap();
    let yaml = String::from_utf8(out).unwrap();
    // Decisions and results share a principal: one KafkaUser for both.
    assert_eq!(yaml.matches("kind: KafkaUser").count(), 2, "{yaml}");
    assert!(yaml.contains("# Shoal role(s) decisions, results as User:decisions"), "{yaml}");
    assert!(yaml.contains("type: transactionalId\n          name: \"shoal-results-\"\n          patternType: prefix"));
    assert!(yaml.contains("strimzi.io/cluster: \"prod\"") && yaml.contains("type: scram-sha-512"));
    assert_eq!(yaml.matches("name: \"shoal.state.members\"").count(), 1, "merged, not repeated: {yaml}");

    options.set_principal("worker=User:Shoal_Worker").unwrap();
    let roles = derive(&s, &options, &[Role::Worker]).unwrap();
    let error = format::strimzi(&roles, &target, &mut Vec::new()).unwrap_err().to_string();
    assert!(error.contains("--principal worker"), "{error}");
}
