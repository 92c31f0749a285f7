//! Agent levels over topics: the trading topology's three levels on the
//! real broker, each a Shoal stage with its own topics and group — the
//! orchestrator (feed → state per symbol → rules: `evaluate_strategy`), the
//! strategy workers (signals; a buy or sell becomes a `paper_order` on the
//! orders topic, in the same transaction as the signal's result) and the
//! paper workers (risk limits, fills) — with one trace per decision across
//! every level, checked through a real OTLP receiver.

// A panic is how a test fails.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use nix::sys::signal::Signal;
use shoal_integration_tests::otlp::{ReceivedSpan, Receiver};
use shoal_integration_tests::*;
use shoal_protocol::messages::ResultStatus;

fn parent<'a>(span: &ReceivedSpan, index: &HashMap<&str, &'a ReceivedSpan>) -> &'a ReceivedSpan {
    index.get(span.parent_span_id.as_str()).unwrap_or_else(|| {
        panic!("parent {:?} of {:?} ({}) was not exported", span.parent_span_id, span.name, span.service)
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_trading_topology_runs_three_levels_as_one_trace_per_decision() {
    let receiver = Receiver::start(true).await.unwrap();
    let scope = Scope::with_topics("levels-trading").await;
    // Level 3's commands (the orders), results and group.
    let orders = Scope::with_topics("levels-orders").await;
    let symbols = "SIM-AAA,SIM-DDD,SIM-EEE,SIM-HHH";
    let (mut sim, url) = start_sim(&["--rate", "20", "--seed", "5", "--symbols", symbols], &scope.dir);
    let mut strategy = scope
        .worker("strategy")
        .id("strategy-1")
        .with("SHOAL__WORKER__STRATEGY__ORDER_ACCOUNT", "paper-1")
        .with("SHOAL__WORKER__NEXT_TOPIC", orders.topics.commands.name.clone())
        .otlp("http/protobuf", receiver.http_endpoint())
        .spawn();
    let mut paper = scope
        .worker("paper")
        .id("paper-1")
        .with("SHOAL__TOPICS__COMMANDS__NAME", orders.topics.commands.name.clone())
        .with("SHOAL__TOPICS__RESULTS__NAME", orders.topics.results.name.clone())
        .with("SHOAL__WORKER__GROUP_ID", orders.workers_group())
        .with("SHOAL__WORKER__PAPER__ENABLED", "true")
        .otlp("grpc", receiver.grpc_endpoint())
        .spawn();
    let mut orchestrator = scope
        .orchestrator("orchestrator")
        .otlp("http/protobuf", receiver.http_endpoint())
        .feed(&url)
        .lively_rules()
        .spawn();

    let mut fills = TopicReader::new(&orders.topics.results.name);
    fills.read_until(Duration::from_secs(120), "5 results of paper orders", |m| m.len() >= 5).await;
    // Upstream first, so each level drains what the one above committed.
    orchestrator.stop_cleanly(Duration::from_secs(20));
    strategy.stop_cleanly(Duration::from_secs(20));
    paper.stop_cleanly(Duration::from_secs(20));
    sim.signal(Signal::SIGTERM);
    tokio::task::block_in_place(|| sim.wait_exit(Duration::from_secs(10)));

    // Level 2 → 3: one order per buy or sell signal, no more, no less.
    let mut signals = TopicReader::new(&scope.topics.results.name);
    signals.read_to_end(Duration::from_secs(30)).await;
    let signals: Vec<_> = decode_results(&signals.messages)
        .into_iter()
        .filter(|r| r.kind == "evaluate_strategy" && matches!(r.output["signal"].as_str(), Some("buy" | "sell")))
        .collect();
    let mut placed = TopicReader::new(&orders.topics.commands.name);
    placed.read_to_end(Duration::from_secs(30)).await;
    let placed = decode_commands(&placed.messages);
    assert!(placed.len() >= 5, "orders placed: {}", placed.len());
    assert_eq!(placed.len(), signals.len(), "one order per buy or sell signal");
    for order in &placed {
        assert_eq!((order.kind.as_str(), order.key.as_str(), order.seq), ("paper_order", "paper-1", 0), "{order:?}");
    }
    let sides: HashSet<&str> = signals.iter().filter_map(|s| s.output["signal"].as_str()).collect();
    let order_sides: HashSet<&str> = placed.iter().filter_map(|o| o.payload["side"].as_str()).collect();
    assert_eq!(sides, order_sides);

    // Level 3: every order has exactly one result.
    fills.read_to_end(Duration::from_secs(30)).await;
    let fills = decode_results(&fills.messages);
    let placed_ids: HashSet<_> = placed.iter().map(|o| o.id).collect();
    let filled_ids: Vec<_> = fills.iter().map(|r| r.command_id).collect();
    assert_eq!(filled_ids.len(), placed_ids.len(), "one result per order");
    assert_eq!(filled_ids.iter().copied().collect::<HashSet<_>>(), placed_ids);
    assert!(fills.iter().all(|r| r.status == ResultStatus::Succeeded), "{fills:?}");

    // One trace per decision: feed receive → evaluate rules → publish
    // command (orchestrator) → process command → publish command (strategy
    // worker) → process command (paper worker).
    let spans = receiver.spans();
    let index: HashMap<&str, &ReceivedSpan> = spans.iter().map(|s| (s.span_id.as_str(), s)).collect();
    let mut checked = 0;
    for fill in &fills {
        let id = fill.command_id.to_string();
        let process: Vec<&ReceivedSpan> =
            spans.iter().filter(|s| s.name == "process command" && s.attr("command.id") == Some(id.as_str())).collect();
        assert!(!process.is_empty(), "the paper worker's span of order {id}");
        let level3 = process[0];
        let emitted = parent(level3, &index);
        assert_eq!((emitted.name.as_str(), emitted.attr("command.id")), ("publish command", Some(id.as_str())));
        let level2 = parent(emitted, &index);
        assert_eq!(level2.name, "process command");
        assert_eq!(level2.attr("command.kind"), Some("evaluate_strategy"));
        let issued = parent(level2, &index);
        assert_eq!((issued.name.as_str(), issued.service.as_str()), ("publish command", "shoal-orchestrator"));
        let rules = parent(issued, &index);
        assert_eq!(rules.name, "evaluate rules");
        let feed = parent(rules, &index);
        assert_eq!(feed.name, "feed receive");
        assert!(feed.parent_span_id.is_empty(), "the feed receive span starts the trace");
        for span in [level3, emitted, level2, issued, rules] {
            assert_eq!(span.trace_id, feed.trace_id, "{} is in the decision's trace", span.name);
        }
        assert_eq!((level3.service.as_str(), level2.service.as_str()), ("shoal-worker", "shoal-worker"));
        checked += 1;
    }
    assert!(checked >= 5, "decisions followed across the three levels: {checked}");
}
