//! `shoal-mcp` as an LLM client runs it: a child process spoken to over
//! stdio by the official MCP SDK's client (rmcp), asking a real state API
//! server (on 127.0.0.1:0) over HTTP.

#![allow(clippy::unwrap_used)]

use std::sync::Arc;
use std::sync::atomic::AtomicUsize;

use chrono::{DateTime, Utc};
use rmcp::model::{CallToolRequestParams, CallToolResult};
use rmcp::service::RunningService;
use rmcp::transport::TokioChildProcess;
use rmcp::{RoleClient, ServiceExt as _};
use serde_json::{Value, json};
use shoal_api::auth::Tokens;
use shoal_api::{ApiContext, ApiSettings, EntityDoc, Hub, NoPeers, ShardId, ShardView, Watermark};
use shoal_state::{EntityKind, Provenance};
use tokio_util::sync::CancellationToken;

const READ: &str = "read-token-for-mcp-tests-01";
const CMD: &str = "0190a5b2-3c4d-7e8f-9a0b-1c2d3e4f5a6b";

fn ts(secs: i64) -> DateTime<Utc> {
    DateTime::from_timestamp(1_735_689_600 + secs, 0).unwrap()
}

fn shard(hub: &Hub, topic: &str, partition: i32, docs: Vec<(EntityKind, &str, i64, Value)>) {
    let id = ShardId { topic: topic.into(), partition };
    let newest = docs.iter().map(|(_, _, secs, _)| ts(*secs)).max();
    let offset = docs.iter().map(|(_, _, secs, _)| *secs).max().unwrap_or(-1);
    let entities = docs
        .into_iter()
        .map(|(kind, key, secs, state)| {
            let provenance = Provenance::new(topic, partition, secs);
            let doc = EntityDoc { kind, key: key.into(), shard: id.clone(), updated_at: ts(secs), provenance, state };
            ((kind, key.to_string()), Arc::new(doc))
        })
        .collect();
    let watermark = Watermark { topic: topic.into(), partition, offset, event_time: newest };
    hub.publish(Arc::new(ShardView { id, watermark, entities }), Vec::new());
}

/// A state API over a hub with two symbols and a pending command.
async fn api() -> (String, CancellationToken) {
    let hub = Arc::new(Hub::new());
    let symbol = |price: &str| json!({"last_trade": {"price": price, "size": "1"}});
    shard(
        &hub,
        "t.ticks",
        0,
        vec![(EntityKind::Symbol, "SIM-A", 10, symbol("100.5")), (EntityKind::Symbol, "SIM-B", 12, symbol("42.0"))],
    );
    let stamp = json!({"at": ts(11), "provenance": {"topic": "t.commands", "partition": 0, "offset": 11}});
    let command = json!({
        "id": CMD, "kind": "raise_alert", "key": "SIM-A", "seq": 1, "status": "issued",
        "issued": {"schema_version": 1, "id": CMD, "kind": "raise_alert", "key": "SIM-A", "seq": 1,
                   "issued_at": ts(11), "deadline": null, "payload": {"level": "100.00"},
                   "at": ts(11), "provenance": {"topic": "t.commands", "partition": 0, "offset": 11}},
        "result": null, "dead_letter": null,
        "timings": {"queue_ms": null, "handling_ms": null, "end_to_end_ms": null},
        "duplicates": 0, "updated": stamp,
    });
    shard(&hub, "t.commands", 0, vec![(EntityKind::Command, CMD, 11, command)]);
    let tokens = Tokens::parse(&format!("read:{READ}\n"), "test").unwrap();
    let ctx = ApiContext {
        hub,
        settings: Arc::new(ApiSettings::default()),
        tokens: Arc::new(tokens),
        directory: Arc::new(NoPeers),
        instance: "test".into(),
        subscriptions: Arc::new(AtomicUsize::new(0)),
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let shutdown = CancellationToken::new();
    tokio::spawn(shoal_api::http::serve(ctx, listener, shutdown.clone()));
    (base, shutdown)
}

/// `shoal-mcp` started as a client starts it, with `token` in its environment.
async fn mcp(base: &str, token: &str) -> RunningService<RoleClient, ()> {
    let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_shoal-mcp"));
    command.args(["--api-url", base]).env("SHOAL_MCP_TOKEN", token).env("RUST_LOG", "warn");
    ().serve(TokioChildProcess::new(command).unwrap()).await.unwrap()
}

async fn call(client: &RunningService<RoleClient, ()>, tool: &str, arguments: Value) -> CallToolResult {
    let Value::Object(arguments) = arguments else { panic!("arguments are an object") };
    client.call_tool(CallToolRequestParams::new(tool.to_string()).with_arguments(arguments)).await.unwrap()
}

fn text(result: &CallToolResult) -> String {
    result.content[0].as_text().unwrap_or_else(|| panic!("not text: {:?}", result.content[0])).text.clone()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_model_reads_the_live_state_through_the_tools() {
    let (base, shutdown) = api().await;
    let client = mcp(&base, &format!("read:{READ}")).await;

    let info = client.peer_info().unwrap();
    assert_eq!(info.server_info.as_ref().unwrap().name, "shoal-mcp");
    assert!(info.instructions.as_deref().unwrap().contains("provenance"));

    let tools = client.list_all_tools().await.unwrap();
    let mut names: Vec<&str> = tools.iter().map(|t| t.name.as_ref()).collect();
    names.sort_unstable();
    assert_eq!(
        names,
        [
            "approve_command",
            "find_commands",
            "get_command",
            "get_recent_alerts",
            "get_state",
            "issue_command",
            "list_approvals",
            "list_entities",
            "reject_command",
            "summarize"
        ]
    );
    for tool in &tools {
        assert!(tool.description.as_ref().is_some_and(|d| d.len() > 40), "{} is described", tool.name);
        assert_eq!(tool.input_schema.get("type"), Some(&json!("object")), "{}", tool.name);
        let output = tool.output_schema.as_ref().unwrap_or_else(|| panic!("{} has an output schema", tool.name));
        let needs = match tool.name.as_ref() {
            "issue_command" => "request_id",
            "approve_command" | "reject_command" => "command_id",
            _ => "freshness",
        };
        assert!(output["required"].as_array().unwrap().contains(&json!(needs)), "{}", tool.name);
    }
    let get_state = tools.iter().find(|t| t.name == "get_state").unwrap();
    assert_eq!(get_state.input_schema["required"], json!(["kind", "key"]));

    // One entity, with where it came from and how fresh it is.
    let state = call(&client, "get_state", json!({"kind": "symbol", "key": "SIM-A"})).await;
    assert_eq!(state.is_error, Some(false));
    let answer = state.structured_content.unwrap();
    assert_eq!(answer["state"]["last_trade"]["price"], "100.5");
    assert_eq!(answer["provenance"], json!({"topic": "t.ticks", "partition": 0, "offset": 10}));
    assert_eq!(answer["freshness"]["watermarks"][0]["offset"], 12);

    let listed = call(&client, "list_entities", json!({"kind": "symbol"})).await.structured_content.unwrap();
    assert_eq!(listed["entities"].as_array().unwrap().len(), 2);

    let pending = call(&client, "find_commands", json!({"status": "issued"})).await.structured_content.unwrap();
    assert_eq!(pending["commands"][0]["id"], CMD);
    let command = call(&client, "get_command", json!({"id": CMD})).await.structured_content.unwrap();
    assert_eq!(command["state"]["kind"], "raise_alert");

    // The digest is the text a model reads; its counts are structured.
    let summary = call(&client, "summarize", json!({"max_tokens": 600})).await;
    let digest = text(&summary);
    let counts = summary.structured_content.unwrap();
    assert_eq!(counts["summary"], digest.as_str());
    assert!(counts["tokens"].as_u64().unwrap() <= 600);
    assert!(digest.contains(CMD) && digest.contains("SIM-A"), "{digest}");

    // Errors come back as tool errors naming what to fix.
    let missing = call(&client, "get_state", json!({"kind": "symbol", "key": "NOPE"})).await;
    assert_eq!(missing.is_error, Some(true));
    assert_eq!(missing.structured_content.unwrap()["error"]["status"], 404);
    let bad = call(&client, "get_recent_alerts", json!({"since": "yesterday"})).await;
    assert_eq!(bad.is_error, Some(true));
    assert_eq!(bad.structured_content.unwrap()["error"]["parameter"], "since");
    let unknown_kind = client
        .call_tool(
            CallToolRequestParams::new("list_entities")
                .with_arguments(json!({"kind": "planet"}).as_object().unwrap().clone()),
        )
        .await;
    assert!(format!("{unknown_kind:?}").contains("planet"), "{unknown_kind:?}");

    // Entities are resources too.
    let resources = client.list_all_resources().await.unwrap();
    let uris: Vec<&str> = resources.iter().map(|r| r.uri.as_str()).collect();
    assert_eq!(uris, ["shoal://state/symbol/SIM-A", "shoal://state/symbol/SIM-B"]);
    let read =
        client.read_resource(rmcp::model::ReadResourceRequestParams::new("shoal://state/symbol/SIM-B")).await.unwrap();
    let rmcp::model::ResourceContents::TextResourceContents { text, .. } = &read.contents[0] else { panic!() };
    let doc: Value = serde_json::from_str(text).unwrap();
    assert_eq!(doc["state"]["last_trade"]["price"], "42.0");
    assert_eq!(doc["provenance"]["offset"], 12);

    // Acting needs an admin token: a read token is refused, naming why.
    let alert = json!({"symbol": "SIM-A", "level": "100", "previous_price": "99", "price": "101"});
    let refused =
        call(&client, "issue_command", json!({"kind": "raise_alert", "key": "SIM-A", "payload": alert})).await;
    assert_eq!(refused.is_error, Some(true));
    let error = refused.structured_content.unwrap();
    assert_eq!(error["error"]["status"], 403, "{error}");
    assert!(error["error"]["message"].as_str().unwrap().contains("admin"), "{error}");

    client.cancel().await.unwrap();
    shutdown.cancel();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_wrong_token_is_a_tool_error_not_a_crash() {
    let (base, shutdown) = api().await;
    let client = mcp(&base, "not-the-token-at-all-000").await;
    let refused = call(&client, "list_entities", json!({"kind": "symbol"})).await;
    assert_eq!(refused.is_error, Some(true));
    assert_eq!(refused.structured_content.unwrap()["error"]["status"], 401);
    // The server is still there.
    assert_eq!(client.list_all_tools().await.unwrap().len(), 10);
    client.cancel().await.unwrap();
    shutdown.cancel();
}

#[tokio::test(flavor = "multi_thread")]
async fn the_token_can_come_from_a_file() {
    let (base, shutdown) = api().await;
    let dir = std::env::temp_dir().join(format!("shoal-mcp-token-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("token");
    std::fs::write(&file, format!("# the read token\n\nread:{READ}\n")).unwrap();
    let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_shoal-mcp"));
    command.args(["--api-url", &base, "--token-file"]).arg(&file).env_remove("SHOAL_MCP_TOKEN").env("RUST_LOG", "warn");
    let client = ().serve(TokioChildProcess::new(command).unwrap()).await.unwrap();
    let listed = call(&client, "list_entities", json!({"kind": "symbol"})).await;
    assert_eq!(listed.is_error, Some(false), "{listed:?}");
    client.cancel().await.unwrap();
    std::fs::remove_dir_all(&dir).unwrap();
    shutdown.cancel();
}
