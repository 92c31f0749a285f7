//! Human approval (`docs/approval.md`) against a real broker: a command
//! whose kind needs approval is held on the approvals topic, then approved
//! (issued, handled by a worker), rejected (never issued) or left to
//! expire, through the state API and through MCP (`shoal-mcp`, driven by
//! the Rust SDK's client).

// A panic is how a test fails.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::time::Duration;

use rmcp::model::CallToolRequestParams;
use rmcp::service::RunningService;
use rmcp::transport::TokioChildProcess;
use rmcp::{RoleClient, ServiceExt as _};
use serde_json::{Value, json};
use shoal_integration_tests::*;
use shoal_protocol::approvals::{ApprovalChange, ApprovalEvent};
use shoal_protocol::messages::{Command, WireMessage};

const WAIT: Duration = Duration::from_secs(60);

/// `POST` to the API with a bearer token: status and JSON body.
async fn api_post(api: SocketAddr, path: &str, token: &str, body: &Value) -> (u16, Value) {
    shoal_integration_tests::api_post(api, path, token, body).await.unwrap()
}

/// An orchestrator holding `raise_alert` for approval, and a worker.
fn start(scope: &Scope, timeout_ms: &str) -> (Proc, Proc) {
    let orchestrator = scope
        .orchestrator("orchestrator")
        .stages("decisions,results")
        .with("SHOAL__API__ISSUE_COMMANDS", "true")
        .with("SHOAL__RULES__APPROVAL_KINDS", "raise_alert")
        .with("SHOAL__RULES__APPROVAL_TIMEOUT_MS", timeout_ms)
        .with("SHOAL__RULES__COMMAND_DEADLINE_MS", "0")
        .spawn();
    let worker = scope.worker("worker").spawn();
    (orchestrator, worker)
}

/// Requests a `raise_alert` for `key` and waits until it is held: its id.
async fn held(api: SocketAddr, key: &str) -> String {
    let payload = json!({"symbol": key, "level": "100.00", "previous_price": "99.90", "price": "100.10"});
    let body = json!({"kind": "raise_alert", "key": key, "payload": payload, "reason": "approval test"});
    let (status, answer) = api_post(api, "/v1/command-requests", ADMIN_TOKEN, &body).await;
    assert_eq!(status, 202, "{answer}");
    let path = format!("/v1/approvals?status=pending&key={key}");
    wait_for(WAIT, "the command held for approval", || {
        let path = path.clone();
        async move {
            let (_, body) = api_get(api, &path, Some(READ_TOKEN)).await.map_err(|e| e.to_string())?;
            match body["approvals"].as_array().and_then(|a| a.first()) {
                Some(c) if c["status"] == "pending_approval" => Ok(c["id"].as_str().unwrap().to_string()),
                _ => Err(format!("not held yet: {body}")),
            }
        }
    })
    .await
}

/// Waits until command `id` is in `status`: its state.
async fn status(api: SocketAddr, id: &str, status: &str) -> Value {
    let path = format!("/v1/commands/{id}");
    wait_for(WAIT, &format!("command {id} {status}"), || {
        let path = path.clone();
        async move {
            let (_, body) = api_get(api, &path, Some(READ_TOKEN)).await.map_err(|e| e.to_string())?;
            if body["state"]["status"] == status { Ok(body["state"].clone()) } else { Err(body.to_string()) }
        }
    })
    .await
}

/// `shoal-mcp` started as a client starts it, with the admin token.
async fn mcp(api: SocketAddr) -> RunningService<RoleClient, ()> {
    let mut command = tokio::process::Command::new(bin("shoal-mcp"));
    command.args(["--api-url", &format!("http://{api}")]).env("SHOAL_MCP_TOKEN", ADMIN_TOKEN).env("RUST_LOG", "warn");
    ().serve(TokioChildProcess::new(command).unwrap()).await.unwrap()
}

/// Calls `tool`: (is_error, structured content).
async fn call(client: &RunningService<RoleClient, ()>, tool: &str, arguments: Value) -> (bool, Value) {
    let Value::Object(arguments) = arguments else { panic!("arguments are an object") };
    let result =
        client.call_tool(CallToolRequestParams::new(tool.to_string()).with_arguments(arguments)).await.unwrap();
    (result.is_error == Some(true), result.structured_content.unwrap_or(Value::Null))
}

/// The approval records of command `id`, by type, in topic order.
async fn approval_records(scope: &Scope, id: &str) -> Vec<ApprovalEvent> {
    let mut reader = TopicReader::new(&scope.topics.approvals.name);
    reader.read_to_end(Duration::from_secs(20)).await;
    let events: Vec<ApprovalEvent> =
        reader.messages.iter().filter_map(|m| ApprovalEvent::decode(rdkafka::Message::payload(m)?).ok()).collect();
    events.into_iter().filter(|e| e.command_id.to_string() == id).collect()
}

fn kinds(events: &[ApprovalEvent]) -> Vec<&'static str> {
    events
        .iter()
        .map(|e| match &e.change {
            ApprovalChange::Requested { .. } => "requested",
            ApprovalChange::Decided { decision, .. } => decision.as_str(),
            ApprovalChange::Expired => "expired",
        })
        .collect()
}

/// The commands on the commands topic with id `id`.
async fn issued(scope: &Scope, id: &str) -> Vec<Command> {
    let mut reader = TopicReader::new(&scope.topics.commands.name);
    reader.read_to_end(Duration::from_secs(20)).await;
    let commands = reader.messages.iter().filter_map(|m| Command::decode(rdkafka::Message::payload(m)?).ok());
    commands.filter(|c| c.id.to_string() == id).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn approved_commands_are_issued_and_handled() {
    let scope = Scope::with_topics("approval-approve").await;
    let (mut orchestrator, mut worker) = start(&scope, "120000");
    let api = api_address(&orchestrator, WAIT).await;

    // Through the API.
    let by_api = held(api, "AP-API").await;
    let (code, answer) = api_post(api, &format!("/v1/approvals/{by_api}/approve"), READ_TOKEN, &json!({})).await;
    assert_eq!(code, 403, "a read token cannot decide: {answer}");
    let (code, answer) =
        api_post(api, &format!("/v1/approvals/{by_api}/approve"), ADMIN_TOKEN, &json!({"reason": "looks right"})).await;
    assert_eq!((code, answer["decision"].as_str()), (202, Some("approve")), "{answer}");
    let done = status(api, &by_api, "succeeded").await;
    assert_eq!(done["approval"]["status"], "approved");
    assert_eq!(done["approval"]["settled"]["reason"], "looks right");
    assert_eq!(done["result"]["status"], "succeeded");
    let (code, answer) = api_post(api, &format!("/v1/approvals/{by_api}/approve"), ADMIN_TOKEN, &json!({})).await;
    assert_eq!(code, 409, "approving twice: {answer}");
    let message = answer["error"]["message"].as_str().unwrap();
    assert!(message.contains(&by_api) && message.contains("approved"), "{message}");
    let unknown = "0190a5b2-3c4d-7e8f-9a0b-1c2d3e4f5a6b";
    let (code, answer) = api_post(api, &format!("/v1/approvals/{unknown}/approve"), ADMIN_TOKEN, &json!({})).await;
    assert_eq!(code, 404, "{answer}");
    assert!(answer["error"]["message"].as_str().unwrap().contains(unknown));

    // Through MCP.
    let by_mcp = held(api, "AP-MCP").await;
    let client = mcp(api).await;
    let (error, listed) = call(&client, "list_approvals", json!({"status": "pending"})).await;
    assert!(!error && listed["approvals"][0]["id"] == by_mcp.as_str(), "{listed}");
    let (error, answer) = call(&client, "approve_command", json!({"id": by_mcp, "reason": "via mcp"})).await;
    assert!(!error, "{answer}");
    status(api, &by_mcp, "succeeded").await;
    let (error, answer) = call(&client, "approve_command", json!({"id": by_mcp})).await;
    assert!(error && answer["error"]["status"] == 409, "{answer}");
    client.cancel().await.unwrap();

    for id in [&by_api, &by_mcp] {
        let records = approval_records(&scope, id).await;
        assert_eq!(kinds(&records)[..2], ["requested", "approve"], "{records:?}");
        let commands = issued(&scope, id).await;
        assert_eq!(commands.len(), 1, "issued once, with its held id");
        assert_eq!(commands[0].seq, 1, "the key's first seq");
    }
    stop_all_cleanly([&mut orchestrator, &mut worker], Duration::from_secs(30));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rejected_commands_are_never_issued() {
    let scope = Scope::with_topics("approval-reject").await;
    let (mut orchestrator, mut worker) = start(&scope, "120000");
    let api = api_address(&orchestrator, WAIT).await;

    let by_api = held(api, "RJ-API").await;
    let (code, answer) =
        api_post(api, &format!("/v1/approvals/{by_api}/reject"), ADMIN_TOKEN, &json!({"reason": "not now"})).await;
    assert_eq!(code, 202, "{answer}");
    let state = status(api, &by_api, "rejected").await;
    assert_eq!(state["approval"]["settled"]["reason"], "not now");
    assert_eq!(state["approval"]["settled"]["by"]["via"], "api");

    let by_mcp = held(api, "RJ-MCP").await;
    let client = mcp(api).await;
    let (error, answer) = call(&client, "reject_command", json!({"id": by_mcp, "reason": "model says no"})).await;
    assert!(!error, "{answer}");
    let state = status(api, &by_mcp, "rejected").await;
    assert_eq!(state["approval"]["settled"]["by"]["via"], "mcp");
    let (error, answer) = call(&client, "approve_command", json!({"id": by_mcp})).await;
    assert!(error && answer["error"]["status"] == 409, "approving after a rejection: {answer}");
    let (_, listed) = call(&client, "list_approvals", json!({"status": "rejected"})).await;
    assert_eq!(listed["approvals"].as_array().map(Vec::len), Some(2), "{listed}");
    client.cancel().await.unwrap();

    for id in [&by_api, &by_mcp] {
        assert_eq!(kinds(&approval_records(&scope, id).await), ["requested", "reject"]);
        assert!(issued(&scope, id).await.is_empty(), "a rejected command is never issued");
    }
    stop_all_cleanly([&mut orchestrator, &mut worker], Duration::from_secs(30));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unapproved_commands_expire_at_their_deadline() {
    let scope = Scope::with_topics("approval-expiry").await;
    let (mut orchestrator, mut worker) = start(&scope, "3000");
    let api = api_address(&orchestrator, WAIT).await;

    let id = held(api, "EX-A").await;
    let state = status(api, &id, "expired").await;
    assert_eq!(state["approval"]["status"], "expired");
    assert!(state["issued"].is_null(), "{state}");
    let (code, answer) = api_post(api, &format!("/v1/approvals/{id}/approve"), ADMIN_TOKEN, &json!({})).await;
    assert_eq!(code, 409, "{answer}");
    assert!(answer["error"]["message"].as_str().unwrap().contains("expired"), "{answer}");
    let client = mcp(api).await;
    let (error, answer) = call(&client, "approve_command", json!({"id": id})).await;
    assert!(error && answer["error"]["status"] == 409, "approving after expiry through MCP: {answer}");
    let (_, listed) = call(&client, "list_approvals", json!({"status": "expired"})).await;
    assert_eq!(listed["approvals"][0]["id"], id.as_str(), "{listed}");
    client.cancel().await.unwrap();

    let records = approval_records(&scope, &id).await;
    assert_eq!(kinds(&records)[..2], ["requested", "expired"], "{records:?}");
    assert!(issued(&scope, &id).await.is_empty(), "an expired command is never issued");
    stop_all_cleanly([&mut orchestrator, &mut worker], Duration::from_secs(30));
}
