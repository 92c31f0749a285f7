//! The LLM skill in a real `shoal-worker` process: `llm_decide` commands
//! produced to a real broker, the model a scripted OpenAI-compatible
//! endpoint in this test (real HTTP), the tools' state API scripted too.
//! One command gets a tool call and then a valid answer (a succeeded
//! result carrying the record); the other only ever gets invalid answers
//! (a failed result and a dead letter carrying the model's last output).
//! Every model call, the summary and the tool call are journal steps.

// A panic is how a test fails.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use axum::http::header::CONTENT_TYPE;
use axum::response::IntoResponse;
use serde_json::{Value, json};
use shoal_integration_tests::*;
use shoal_kafka::dlq;
use shoal_protocol::messages::{Command, ResultStatus, SCHEMA_VERSION, WireMessage as _};

const KEY: &str = "sk-integration-llm-key-0123456789";
const INVALID: &str = r#"{"action": "panic", "reason": "never valid", "confidence": 2}"#;

fn json_response(value: Value) -> axum::response::Response {
    ([(CONTENT_TYPE, "application/json")], value.to_string()).into_response()
}

fn completion(message: Value, finish: &str) -> Value {
    json!({
        "id": "chatcmpl-it", "object": "chat.completion", "model": "scripted",
        "choices": [{"index": 0, "message": message, "finish_reason": finish}],
        "usage": {"prompt_tokens": 120, "completion_tokens": 15, "total_tokens": 135},
    })
}

/// The scripted model: by the task in the prompt. "GOOD": a tool call
/// first, then a valid decision; "BAD": an invalid answer every time.
/// Requests without the bearer key are refused.
async fn chat(headers: axum::http::HeaderMap, body: String) -> axum::response::Response {
    if headers.get("authorization").and_then(|v| v.to_str().ok()) != Some(&format!("Bearer {KEY}")) {
        return (axum::http::StatusCode::UNAUTHORIZED, "bad key").into_response();
    }
    let request: Value = serde_json::from_str(&body).unwrap();
    let messages = request["messages"].as_array().unwrap();
    let prompt = messages[1]["content"].as_str().unwrap();
    let answered_tool = messages.iter().any(|m| m["role"] == "tool");
    let reply = if prompt.contains("BAD") {
        completion(json!({"role": "assistant", "content": INVALID}), "stop")
    } else if !answered_tool {
        let call = json!({"id": "call-1", "type": "function",
                          "function": {"name": "get_state", "arguments": "{\"kind\": \"symbol\", \"key\": \"SIM-A\"}"}});
        completion(json!({"role": "assistant", "content": null, "tool_calls": [call]}), "tool_calls")
    } else {
        let content = r#"{"action": "hold", "reason": "SIM-A is flat", "confidence": 0.6}"#;
        completion(json!({"role": "assistant", "content": content}), "stop")
    };
    json_response(reply)
}

/// The scripted state API: a summary, and SIM-A's state.
async fn state(uri: axum::http::Uri) -> axum::response::Response {
    if uri.path().ends_with("/v1/summary") {
        return json_response(json!({"summary": "SIM-A 100.5 (fresh)", "tokens": 6}));
    }
    json_response(json!({"kind": "symbol", "key": "SIM-A", "state": {"last_trade": {"price": "100.5"}}}))
}

async fn scripted_endpoint() -> String {
    let app = axum::Router::new().route("/v1/chat/completions", axum::routing::post(chat)).fallback(state);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    base
}

fn decide(key: &str, task: &str) -> Command {
    Command {
        schema_version: SCHEMA_VERSION,
        id: uuid::Uuid::now_v7(),
        kind: "llm_decide".into(),
        key: key.into(),
        seq: 1,
        issued_at: chrono::Utc::now(),
        deadline: None,
        payload: json!({"task": task}),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_process_decides_with_a_model_and_dead_letters_answers_that_never_validate() {
    let scope = Scope::with_topics("llm").await;
    let base = scripted_endpoint().await;
    let key_file = scope.dir.join("llm-key");
    std::fs::write(&key_file, format!("{KEY}\n")).unwrap();
    let mut worker = scope
        .worker("worker-llm")
        .id("worker-llm")
        .with_all([
            ("SHOAL__LLM__ENABLED", "true"),
            ("SHOAL__LLM__MODEL", "scripted"),
            ("SHOAL__LLM__MAX_ROUNDS", "3"),
            ("SHOAL__LLM__CALL_TIMEOUT_MS", "5000"),
            ("SHOAL__WORKER__HANDLER_TIMEOUT_MS", "30000"),
            ("SHOAL__WORKER__MAX_ATTEMPTS", "2"),
        ])
        .with("SHOAL__LLM__ENDPOINT", format!("{base}/v1"))
        .with("SHOAL__LLM__STATE_API_URL", format!("{base}/api"))
        .with("SHOAL__LLM__API_KEY_FILE", key_file.display().to_string())
        .spawn();
    wait_for_members(&scope, 1).await;

    let good = decide("SIM-A", "GOOD: decide about SIM-A");
    let bad = decide("SIM-B", "BAD: decide about SIM-B");
    let producer = producer();
    for command in [&good, &bad] {
        produce(&producer, &scope.topics.commands.name, &command.key, &command.encode()).await;
    }

    let mut results = TopicReader::new(&scope.topics.results.name);
    results.read_until(Duration::from_secs(60), "two results", |m| m.len() >= 2).await;
    let decoded = decode_results(&results.messages);
    let result_of = |c: &Command| decoded.iter().find(|r| r.command_id == c.id).expect("a result per command");

    let r = result_of(&good);
    assert_eq!(r.status, ResultStatus::Succeeded, "{r:?}\n{}", worker.log_text());
    assert_eq!(r.worker_id, "worker-llm");
    assert_eq!(r.output["answer"], json!({"action": "hold", "reason": "SIM-A is flat", "confidence": 0.6}));
    assert_eq!(r.output["rounds"], 2);
    assert_eq!(r.output["usage"]["total_tokens"], 270);
    assert_eq!(r.output["transcript"][0]["tool_calls"][0]["name"], "get_state");
    assert!(r.output["transcript"][0]["tool_calls"][0]["answer"].as_str().unwrap().contains("100.5"));

    let r = result_of(&bad);
    assert_eq!(r.status, ResultStatus::Failed, "{r:?}");
    assert_eq!(r.output["attempts"], 1, "an answer that never validates is not retried");
    let error = r.output["error"].as_str().unwrap();
    assert!(error.contains("no valid final answer within llm.max_rounds = 3"), "{error}");
    assert!(error.contains(&format!("last output: {INVALID}")), "{error}");

    let mut dead = TopicReader::new(&scope.topics.dlq.name);
    dead.read_until(Duration::from_secs(30), "a dead letter", |m| !m.is_empty()).await;
    let letter = &dead.messages[0];
    assert_eq!(header(letter, dlq::REASON).as_deref(), Some("handler_failed"));
    let text = header(letter, dlq::ERROR).unwrap();
    assert!(
        text.contains(&format!("last output: {INVALID}")),
        "the dead letter carries the model's last output: {text}"
    );
    let original = Command::decode(rdkafka::Message::payload(letter).unwrap()).unwrap();
    assert_eq!(original.id, bad.id);

    // Each round's model call, the summary and each tool call went through
    // the side-effect journal as a step (recorded started, then done).
    let mut journal = TopicReader::new(&scope.topics.journal.name);
    journal.read_until(Duration::from_secs(30), "the LLM steps in the journal", |m| m.len() >= 16).await;
    let steps: std::collections::HashSet<String> = journal
        .messages
        .iter()
        .map(|m| String::from_utf8_lossy(rdkafka::Message::key(m).unwrap()).into_owned())
        .collect();
    let expected = ["summary", "chat-1", "tool-1-0", "chat-2"].map(|s| format!("{}/{s}", good.id));
    let expected =
        expected.into_iter().chain(["summary", "chat-1", "chat-2", "chat-3"].map(|s| format!("{}/{s}", bad.id)));
    for step in expected {
        assert!(steps.contains(&step), "no journal step {step}: {steps:?}");
    }
    assert_eq!(steps.len(), 8, "{steps:?}");

    worker.stop_cleanly(Duration::from_secs(20));
    let log = worker.log_text();
    assert!(log.contains("LLM skill enabled"), "{log}");
    assert!(!log.contains(KEY), "the API key is in the worker's log");
}
