//! The `llm_decide` skill against a scripted OpenAI-compatible endpoint: a
//! real HTTP server (axum, on 127.0.0.1:0) whose answers the test scripts,
//! for what a real model cannot be made to do on demand (a tool call with
//! bad arguments, a time-out, answers that never validate, a token budget
//! blown). The same server plays the state API the tools ask.

// A panic is how a test fails.
#![allow(clippy::unwrap_used)]

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Json;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use shoal_protocol::messages::{Command, SCHEMA_VERSION};
use shoal_worker::handlers::llm::{LLM_DECIDE, LlmHandler, LlmSettings};
use shoal_worker::handlers::{Handler, HandlerError};
use tracing_subscriber::layer::SubscriberExt as _;

const KEY: &str = "sk-test-0123456789-secret-key";
const STATE_TOKEN: &str = "read-token-for-llm-tests-01";
const MODEL: &str = "scripted-model";

/// One scripted answer of the chat endpoint.
#[derive(Clone)]
enum Step {
    /// A chat completion: content or tool calls, and usage.
    Reply(Value),
    /// Sleeps, then answers like `Reply`.
    Slow(Duration, Value),
    /// An error status with a body.
    Status(u16, String),
}

#[derive(Default)]
struct Script {
    steps: Mutex<VecDeque<Step>>,
    chats: Mutex<Vec<(Option<String>, Value)>>,
    state_calls: Mutex<Vec<(Option<String>, String)>>,
    /// Replies given, by the call's `Idempotency-Key` (what `/lookup` answers).
    answers: Mutex<HashMap<String, Value>>,
    /// The keys asked for at `/lookup`.
    lookups: Mutex<Vec<String>>,
}

fn auth(headers: &HeaderMap) -> Option<String> {
    headers.get("authorization").and_then(|v| v.to_str().ok()).map(str::to_string)
}

async fn chat(State(script): State<Arc<Script>>, headers: HeaderMap, Json(body): Json<Value>) -> Response {
    script.chats.lock().unwrap().push((auth(&headers), body));
    let step = script.steps.lock().unwrap().pop_front();
    // Kept when the call arrives, as a gateway that records the upstream's
    // answer would: the caller may time out before it gets it.
    if let (Some(key), Some(Step::Reply(reply) | Step::Slow(_, reply))) =
        (headers.get("idempotency-key").and_then(|v| v.to_str().ok()), &step)
    {
        script.answers.lock().unwrap().insert(key.to_string(), reply.clone());
    }
    match step {
        Some(Step::Reply(reply)) => Json(reply).into_response(),
        Some(Step::Slow(delay, reply)) => {
            tokio::time::sleep(delay).await;
            Json(reply).into_response()
        }
        Some(Step::Status(code, body)) => (StatusCode::from_u16(code).unwrap(), body).into_response(),
        None => (StatusCode::INTERNAL_SERVER_ERROR, "script exhausted").into_response(),
    }
}

/// `GET /lookup?idempotency_key=<key>`: the reply given to that call, or 404.
async fn lookup(State(script): State<Arc<Script>>, uri: axum::http::Uri) -> Response {
    let query = uri.query().unwrap_or_default().as_bytes();
    let key = url::form_urlencoded::parse(query)
        .find(|(name, _)| name == "idempotency_key")
        .map(|(_, value)| value.into_owned())
        .unwrap_or_default();
    script.lookups.lock().unwrap().push(key.clone());
    match script.answers.lock().unwrap().get(&key) {
        Some(reply) => Json(reply.clone()).into_response(),
        None => (StatusCode::NOT_FOUND, "no such call").into_response(),
    }
}

/// The state API: a summary and one symbol's state.
async fn state_api(State(script): State<Arc<Script>>, request: Request) -> Response {
    let target = request.uri().to_string();
    script.state_calls.lock().unwrap().push((auth(request.headers()), target.clone()));
    if auth(request.headers()).as_deref() != Some(&format!("Bearer {STATE_TOKEN}")) {
        let body = json!({"error": {"code": "unauthorized", "message": "bad token"}});
        return (StatusCode::UNAUTHORIZED, Json(body)).into_response();
    }
    if target.starts_with("/api/v1/summary") {
        return Json(json!({"summary": "SIM-A last 100.5 (fresh); 1 pending command", "tokens": 12})).into_response();
    }
    if target.starts_with("/api/v1/state/symbol/SIM-A") {
        return Json(json!({"kind": "symbol", "key": "SIM-A", "state": {"last_trade": {"price": "100.5"}}}))
            .into_response();
    }
    let body = json!({"error": {"code": "not_found", "message": format!("nothing at {target}")}});
    (StatusCode::NOT_FOUND, Json(body)).into_response()
}

async fn serve(steps: Vec<Step>) -> (String, Arc<Script>) {
    let script = Arc::new(Script { steps: Mutex::new(steps.into()), ..Script::default() });
    let app = axum::Router::new()
        .route("/v1/chat/completions", axum::routing::post(chat))
        .route("/lookup", axum::routing::get(lookup))
        .fallback(state_api)
        .with_state(script.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (base, script)
}

/// A secret file of its own per call: the tests run in parallel, and one
/// rewriting a shared file (truncated, then written) while another reads it
/// made the reader see an empty file.
fn secret_file(name: &str, text: &str) -> String {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let path = std::env::temp_dir().join(format!("shoal-llm-test-{}-{n}-{name}", std::process::id()));
    std::fs::write(&path, text).unwrap();
    path.display().to_string()
}

fn settings(base: &str) -> LlmSettings {
    LlmSettings {
        enabled: true,
        endpoint: format!("{base}/v1"),
        model: MODEL.into(),
        api_key_file: secret_file("key", &format!("# the key\n{KEY}\n")),
        state_api_url: format!("{base}/api"),
        state_api_token_file: secret_file("token", &format!("read:{STATE_TOKEN}\n")),
        call_timeout_ms: 2_000,
        retry_initial_ms: 10,
        retry_max_ms: 50,
        ..LlmSettings::default()
    }
}

fn command() -> Command {
    Command {
        schema_version: SCHEMA_VERSION,
        id: uuid::Uuid::now_v7(),
        kind: LLM_DECIDE.into(),
        key: "SIM-A".into(),
        seq: 1,
        issued_at: chrono::Utc::now(),
        deadline: None,
        payload: json!({"task": "Should we act on SIM-A?", "keys": ["SIM-A"]}),
    }
}

fn completion(message: Value, finish: &str, input: u64, output: u64) -> Value {
    json!({
        "id": "chatcmpl-1", "object": "chat.completion", "model": "scripted-model-2026",
        "choices": [{"index": 0, "message": message, "finish_reason": finish}],
        "usage": {"prompt_tokens": input, "completion_tokens": output, "total_tokens": input + output},
    })
}

fn answer(content: &str, input: u64, output: u64) -> Step {
    Step::Reply(completion(json!({"role": "assistant", "content": content}), "stop", input, output))
}

fn tool_calls(calls: &[(&str, &str, &str)], input: u64, output: u64) -> Step {
    let calls: Vec<Value> = calls
        .iter()
        .map(|(id, name, args)| json!({"id": id, "type": "function", "function": {"name": name, "arguments": args}}))
        .collect();
    Step::Reply(completion(
        json!({"role": "assistant", "content": null, "tool_calls": calls}),
        "tool_calls",
        input,
        output,
    ))
}

const GOOD: &str = r#"{"action": "hold", "reason": "SIM-A is flat and fresh", "confidence": 0.7}"#;

/// A span's name and fields.
type SpanSeen = (String, HashMap<String, String>);

/// Spans (by id) and log lines seen while a test runs.
#[derive(Clone, Default)]
struct Seen {
    spans: Arc<Mutex<HashMap<u64, SpanSeen>>>,
    lines: Arc<Mutex<Vec<String>>>,
}

struct Fields<'a>(&'a mut HashMap<String, String>);

impl tracing::field::Visit for Fields<'_> {
    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
        self.0.insert(field.name().to_string(), format!("{value:?}").trim_matches('"').to_string());
    }
    fn record_str(&mut self, field: &tracing::field::Field, value: &str) {
        self.0.insert(field.name().to_string(), value.to_string());
    }
}

impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for Seen {
    fn on_new_span(
        &self,
        attrs: &tracing::span::Attributes<'_>,
        id: &tracing::span::Id,
        _: tracing_subscriber::layer::Context<'_, S>,
    ) {
        let mut fields = HashMap::new();
        attrs.record(&mut Fields(&mut fields));
        self.spans.lock().unwrap().insert(id.into_u64(), (attrs.metadata().name().to_string(), fields));
    }
    fn on_record(
        &self,
        id: &tracing::span::Id,
        values: &tracing::span::Record<'_>,
        _: tracing_subscriber::layer::Context<'_, S>,
    ) {
        if let Some((_, fields)) = self.spans.lock().unwrap().get_mut(&id.into_u64()) {
            values.record(&mut Fields(fields));
        }
    }
    fn on_event(&self, event: &tracing::Event<'_>, _: tracing_subscriber::layer::Context<'_, S>) {
        let mut fields = HashMap::new();
        event.record(&mut Fields(&mut fields));
        self.lines.lock().unwrap().push(format!("{fields:?}"));
    }
}

impl Seen {
    fn install(&self) -> tracing::subscriber::DefaultGuard {
        tracing::subscriber::set_default(tracing_subscriber::registry().with(self.clone()))
    }
    fn named(&self, name: &str) -> Vec<HashMap<String, String>> {
        let spans = self.spans.lock().unwrap();
        let mut found: Vec<(u64, HashMap<String, String>)> =
            spans.iter().filter(|(_, (n, _))| n == name).map(|(id, (_, f))| (*id, f.clone())).collect();
        found.sort_by_key(|(id, _)| *id);
        found.into_iter().map(|(_, f)| f).collect()
    }
    fn everything(&self) -> String {
        format!("{:?} {:?}", self.spans.lock().unwrap(), self.lines.lock().unwrap())
    }
}

#[tokio::test]
async fn a_tool_call_then_a_final_answer_gives_the_answer_and_its_record() {
    let seen = Seen::default();
    let _guard = seen.install();
    let (base, script) = serve(vec![
        tool_calls(&[("call-1", "get_state", r#"{"kind": "symbol", "key": "SIM-A"}"#)], 100, 20),
        answer(GOOD, 150, 30),
    ])
    .await;
    let handler = LlmHandler::new(&settings(&base)).unwrap();
    let output = handler.handle(&command(), 1).await.unwrap();

    assert_eq!(output["answer"], json!({"action": "hold", "reason": "SIM-A is flat and fresh", "confidence": 0.7}));
    assert_eq!(output["rounds"], 2);
    assert_eq!(output["model"], MODEL);
    assert_eq!(output["response_model"], "scripted-model-2026");
    assert_eq!(output["finish_reason"], "stop");
    assert_eq!(output["usage"], json!({"input_tokens": 250, "output_tokens": 50, "total_tokens": 300}));
    assert_eq!(output["prompts"][0]["role"], "system");
    assert!(output["prompts"][1]["content"].as_str().unwrap().contains("SIM-A last 100.5"), "summary in the prompt");
    let call = &output["transcript"][0]["tool_calls"][0];
    assert_eq!(call["name"], "get_state");
    assert!(call["answer"].as_str().unwrap().contains("100.5"), "{call}");
    assert_eq!(output["transcript"][1]["usage"], json!({"input_tokens": 150, "output_tokens": 30}));

    let chats = script.chats.lock().unwrap().clone();
    assert_eq!(chats.len(), 2);
    for (auth, _) in &chats {
        assert_eq!(auth.as_deref(), Some(format!("Bearer {KEY}").as_str()), "the key goes as a bearer token");
    }
    let first = &chats[0].1;
    assert_eq!(first["model"], MODEL);
    let names: Vec<&str> =
        first["tools"].as_array().unwrap().iter().map(|t| t["function"]["name"].as_str().unwrap()).collect();
    assert!(
        names.contains(&"get_state") && names.contains(&"summarize") && !names.contains(&"issue_command"),
        "{names:?}"
    );
    assert_eq!(first["response_format"]["type"], "json_schema");
    assert_eq!(
        first["response_format"]["json_schema"]["schema"]["required"],
        json!(["action", "reason", "confidence"])
    );
    let second = chats[1].1["messages"].as_array().unwrap().clone();
    assert_eq!(second.len(), 4, "system, user, the assistant's tool call, the tool's answer");
    assert_eq!(second[2]["tool_calls"][0]["id"], "call-1");
    assert_eq!(second[3]["role"], "tool");
    assert_eq!(second[3]["tool_call_id"], "call-1");
    assert!(second[3]["content"].as_str().unwrap().contains("last_trade"));

    let state = script.state_calls.lock().unwrap().clone();
    assert!(state[0].1.starts_with("/api/v1/summary?") && state[0].1.contains("keys=SIM-A"), "{state:?}");
    assert!(state.iter().all(|(auth, _)| auth.as_deref() == Some(&format!("Bearer {STATE_TOKEN}"))));

    // GenAI spans: one `chat {model}` a round, one `execute_tool {name}` a tool call.
    let chat_spans = seen.named("chat");
    assert_eq!(chat_spans.len(), 2);
    assert_eq!(chat_spans[0]["otel.name"], format!("chat {MODEL}"));
    assert_eq!(chat_spans[0]["gen_ai.operation.name"], "chat");
    assert_eq!(chat_spans[0]["gen_ai.provider.name"], "openai");
    assert_eq!(chat_spans[0]["gen_ai.request.model"], MODEL);
    assert_eq!(chat_spans[0]["gen_ai.response.model"], "scripted-model-2026");
    assert_eq!(chat_spans[0]["gen_ai.usage.input_tokens"], "100");
    assert_eq!(chat_spans[1]["gen_ai.usage.output_tokens"], "30");
    assert_eq!(chat_spans[1]["gen_ai.response.finish_reasons"], r#"["stop"]"#);
    let tools = seen.named("execute_tool");
    let get_state = tools.iter().find(|t| t["gen_ai.tool.name"] == "get_state").unwrap();
    assert_eq!(get_state["otel.name"], "execute_tool get_state");
    assert_eq!(get_state["gen_ai.tool.call.id"], "call-1");
    assert_eq!(get_state["gen_ai.operation.name"], "execute_tool");
    assert!(!seen.everything().contains(KEY), "the API key is in a span or a log line");
}

#[tokio::test]
async fn malformed_tool_calls_are_answered_to_the_model_as_tool_errors() {
    let (base, script) = serve(vec![
        tool_calls(
            &[
                ("a", "launch_missiles", "{}"),
                ("b", "get_state", "{not json"),
                ("c", "summarize", "[1, 2]"),
                ("d", "", ""),
            ],
            50,
            10,
        ),
        answer(GOOD, 80, 10),
    ])
    .await;
    let handler = LlmHandler::new(&settings(&base)).unwrap();
    let output = handler.handle(&command(), 1).await.unwrap();
    assert_eq!(output["answer"]["action"], "hold");

    let chats = script.chats.lock().unwrap().clone();
    let messages = chats[1].1["messages"].as_array().unwrap().clone();
    let answers: HashMap<&str, &str> = messages
        .iter()
        .filter(|m| m["role"] == "tool")
        .map(|m| (m["tool_call_id"].as_str().unwrap(), m["content"].as_str().unwrap()))
        .collect();
    assert_eq!(answers.len(), 4, "every call is answered: {answers:?}");
    assert!(answers["a"].contains("unknown_tool"), "{}", answers["a"]);
    assert!(answers["b"].contains("bad_arguments"), "{}", answers["b"]);
    assert!(answers["c"].contains("bad_arguments"), "{}", answers["c"]);
    assert!(answers["d"].contains("unknown_tool"), "{}", answers["d"]);
    // Only the summary reached the state API: none of the bad calls did.
    assert_eq!(script.state_calls.lock().unwrap().len(), 1);
}

#[tokio::test]
async fn a_call_that_times_out_is_retried_and_fails_as_transient_when_retries_run_out() {
    let late = |ms| {
        Step::Slow(Duration::from_millis(ms), completion(json!({"role": "assistant", "content": GOOD}), "stop", 1, 1))
    };

    // One late answer, then a prompt one: the retry succeeds.
    let (base, script) = serve(vec![late(1_500), answer(GOOD, 10, 10)]).await;
    let handler = LlmHandler::new(&LlmSettings { call_timeout_ms: 300, call_retries: 2, ..settings(&base) }).unwrap();
    let output = handler.handle(&command(), 1).await.unwrap();
    assert_eq!(output["answer"]["action"], "hold");
    assert_eq!(script.chats.lock().unwrap().len(), 2);

    // Always late: 1 try + 2 retries, then a transient failure (the worker
    // retries the command, then dead-letters it).
    let (base, script) = serve(vec![late(1_500), late(1_500), late(1_500), answer(GOOD, 1, 1)]).await;
    let handler = LlmHandler::new(&LlmSettings { call_timeout_ms: 300, call_retries: 2, ..settings(&base) }).unwrap();
    let started = std::time::Instant::now();
    let error = handler.handle(&command(), 1).await.unwrap_err();
    assert!(matches!(error, HandlerError::Retryable(_)), "{error}");
    assert!(error.to_string().contains("did not answer within 300ms"), "{error}");
    assert_eq!(script.chats.lock().unwrap().len(), 3);
    assert!(
        started.elapsed() < Duration::from_millis(1_400),
        "each try was cut at the call time-out: {:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn answers_that_never_validate_fail_permanently_with_the_last_output() {
    let last = r#"{"action": "buy", "reason": "up", "confidence": 7}"#;
    let (base, script) = serve(vec![
        answer("I think we should buy.", 10, 5),
        answer(r#"{"action": "panic"}"#, 20, 5),
        answer(last, 30, 5),
    ])
    .await;
    let handler = LlmHandler::new(&LlmSettings { max_rounds: 3, ..settings(&base) }).unwrap();
    let error = handler.handle(&command(), 1).await.unwrap_err();
    assert!(matches!(error, HandlerError::Rejected(_)), "a permanent failure: {error}");
    let text = error.to_string();
    assert!(text.contains("no valid final answer within llm.max_rounds = 3"), "{text}");
    assert!(text.contains(&format!("last output: {last}")), "the model's last output is kept: {text}");
    assert!(text.contains("confidence"), "the last problem is named: {text}");

    // Each refusal was sent back with the reason, for the model to fix.
    let chats = script.chats.lock().unwrap().clone();
    assert_eq!(chats.len(), 3);
    let second = chats[1].1["messages"].as_array().unwrap();
    let feedback = second.last().unwrap()["content"].as_str().unwrap();
    assert!(feedback.contains("not JSON"), "{feedback}");
    let third = chats[2].1["messages"].as_array().unwrap();
    let feedback = third.last().unwrap()["content"].as_str().unwrap();
    assert!(feedback.contains("schema violations") && feedback.contains("panic"), "{feedback}");
}

#[tokio::test]
async fn a_blown_token_budget_stops_the_command_for_good() {
    let (base, script) = serve(vec![
        tool_calls(&[("a", "get_state", r#"{"kind": "symbol", "key": "SIM-A"}"#)], 300, 50),
        tool_calls(&[("b", "get_state", r#"{"kind": "symbol", "key": "SIM-A"}"#)], 400, 60),
        answer(GOOD, 1, 1),
    ])
    .await;
    let handler = LlmHandler::new(&LlmSettings { max_tokens_per_command: 500, ..settings(&base) }).unwrap();
    let error = handler.handle(&command(), 1).await.unwrap_err();
    assert!(matches!(error, HandlerError::Rejected(_)), "{error}");
    let text = error.to_string();
    assert!(
        text.contains("token budget exceeded: 810 tokens used of llm.max_tokens_per_command = 500 after 2 round(s)"),
        "{text}"
    );
    assert!(text.contains("last output") && text.contains("\"b\""), "{text}");
    assert_eq!(script.chats.lock().unwrap().len(), 2, "no call after the budget is blown");
}

#[tokio::test]
async fn a_key_over_its_token_budget_per_minute_is_refused_before_the_model_is_called() {
    let (base, script) = serve(vec![answer(GOOD, 400, 100), answer(GOOD, 10, 10)]).await;
    let budget = Arc::new(shoal_worker::flow::TokenBudget::new(450));
    let stats = Arc::new(shoal_worker::flow::FlowStats::default());
    let handler = LlmHandler::new(&settings(&base)).unwrap().with_key_budget(Some(budget), stats.clone());
    handler.handle(&command(), 1).await.unwrap();
    let error = handler.handle(&command(), 1).await.unwrap_err();
    assert!(matches!(error, HandlerError::Rejected(_)), "not retried: {error}");
    let text = error.to_string();
    assert!(text.contains("worker.flow.llm.tokens_per_key_per_minute = 450") && text.contains("SIM-A"), "{text}");
    assert_eq!(script.chats.lock().unwrap().len(), 1, "the second command did not reach the model");
    assert_eq!(stats.llm_budget_refusals.load(std::sync::atomic::Ordering::Relaxed), 1);
    let other = Command { key: "SIM-B".into(), ..command() };
    handler.handle(&other, 1).await.unwrap();
}

#[tokio::test]
async fn the_api_key_never_shows_in_debug_errors_spans_or_logs() {
    let seen = Seen::default();
    let _guard = seen.install();
    // A server that echoes the key in its refusal, then fails, then answers.
    let (base, script) = serve(vec![
        Step::Status(503, "overloaded".into()),
        Step::Status(401, format!("{{\"error\": \"Incorrect API key provided: {KEY}\"}}")),
    ])
    .await;
    let handler = LlmHandler::new(&settings(&base)).unwrap();
    assert!(!format!("{handler:?}").contains(KEY), "{handler:?}");
    let error = handler.handle(&command(), 1).await.unwrap_err();
    assert!(matches!(error, HandlerError::Rejected(_)), "401 is not retried: {error}");
    let text = error.to_string();
    assert!(text.contains("401") && text.contains("<redacted>") && !text.contains(KEY), "{text}");
    assert_eq!(script.chats.lock().unwrap().len(), 2, "the 503 was retried, the 401 not");
    assert!(!seen.everything().contains(KEY), "the API key is in a span or a log line");
    assert!(seen.everything().contains("model call failed; retrying"), "the retry was logged");
}

#[tokio::test]
async fn settings_problems_name_the_key() {
    let missing = LlmSettings { api_key_file: "/nonexistent/shoal-key".into(), ..settings("http://127.0.0.1:1") };
    let error = LlmHandler::new(&missing).unwrap_err().to_string();
    assert!(error.contains("llm.api_key_file"), "{error}");
    let schema = secret_file("schema.json", r#"{"type": 12}"#);
    let bad = LlmSettings { answer_schema_file: schema, ..settings("http://127.0.0.1:1") };
    let error = LlmHandler::new(&bad).unwrap_err().to_string();
    assert!(error.contains("llm.answer_schema_file"), "{error}");
}

#[tokio::test]
async fn a_command_run_again_replays_journalled_rounds_instead_of_paying_for_them_again() {
    use shoal_worker::handlers::HandlerContext;
    use shoal_worker::journal::{Journal, JournalStats, MemoryStore};

    // First run: a tool call, then the endpoint fails until the call's
    // retries run out (the worker would retry the command).
    let (base, script) = serve(vec![
        tool_calls(&[("call-1", "get_state", r#"{"kind": "symbol", "key": "SIM-A"}"#)], 100, 20),
        Step::Status(503, "overloaded".into()),
        Step::Status(503, "overloaded".into()),
        Step::Status(503, "overloaded".into()),
        answer(GOOD, 150, 30),
    ])
    .await;
    let handler = LlmHandler::new(&settings(&base)).unwrap();
    let journal = Journal::new(Arc::new(MemoryStore::default()), "worker-1", || 0, Arc::new(JournalStats::default()));
    let command = command();
    let first = HandlerContext::new(1, &command, 0, &handler, &journal);
    let error = handler.handle_with(&command, &first).await.unwrap_err();
    assert!(matches!(error, HandlerError::Retryable(_)), "{error}");
    assert_eq!(script.chats.lock().unwrap().len(), 4, "round 1, then round 2 tried 3 times");
    assert_eq!(script.state_calls.lock().unwrap().len(), 2, "the summary and the tool call");

    // The next attempt replays the summary, round 1 and the tool answer from
    // the journal and calls the model only for round 2.
    let second = HandlerContext::new(2, &command, 0, &handler, &journal);
    let output = handler.handle_with(&command, &second).await.unwrap();
    assert_eq!(output["answer"]["action"], "hold");
    assert_eq!(output["usage"]["total_tokens"], 300, "the replayed round's usage counts");
    assert_eq!(script.chats.lock().unwrap().len(), 5, "one new model call");
    assert_eq!(script.state_calls.lock().unwrap().len(), 2, "no new state API call");

    // Once more (a result lost, say): everything is replayed.
    let third = HandlerContext::new(3, &command, 0, &handler, &journal);
    assert_eq!(handler.handle_with(&command, &third).await.unwrap(), output);
    assert_eq!(script.chats.lock().unwrap().len(), 5);
}

#[tokio::test]
async fn a_model_call_started_but_not_recorded_is_looked_up_by_its_key_instead_of_made_again() {
    use shoal_worker::handlers::HandlerContext;
    use shoal_worker::journal::{Journal, JournalStats, MemoryStore};

    // The model answers after the call's time-out: the worker never gets
    // the answer, so the step stays `started` in the journal, but the
    // endpoint has it under the call's idempotency key.
    let slow = || {
        Step::Slow(
            Duration::from_millis(600),
            completion(json!({"role": "assistant", "content": GOOD}), "stop", 40, 10),
        )
    };
    let (base, script) = serve(vec![slow(), slow(), answer(GOOD, 40, 10)]).await;
    let quick = |lookup: bool| LlmSettings {
        call_timeout_ms: 150,
        call_retries: 0,
        lookup_url: if lookup { format!("{base}/lookup") } else { String::new() },
        ..settings(&base)
    };
    let journal = Journal::new(Arc::new(MemoryStore::default()), "worker-1", || 0, Arc::new(JournalStats::default()));

    let handler = LlmHandler::new(&quick(true)).unwrap();
    let command = command();
    let first = HandlerContext::new(1, &command, 0, &handler, &journal);
    let error = handler.handle_with(&command, &first).await.unwrap_err();
    assert!(matches!(error, HandlerError::Retryable(ref text) if text.contains("did not answer")), "{error}");
    let key = format!("{}/chat-1", command.id);
    assert!(script.answers.lock().unwrap().contains_key(&key), "the call carried its idempotency key");

    // The next attempt finds the call at the lookup URL and does not call
    // the model again.
    let second = HandlerContext::new(2, &command, 0, &handler, &journal);
    let output = handler.handle_with(&command, &second).await.unwrap();
    assert_eq!(output["answer"]["action"], "hold");
    assert_eq!(script.chats.lock().unwrap().len(), 1, "one model call in all");
    assert_eq!(*script.lookups.lock().unwrap(), vec![key]);
    assert_eq!(journal.stats.reconciled.load(std::sync::atomic::Ordering::SeqCst), 1);

    // Without a lookup URL the same situation makes the call again.
    let handler = LlmHandler::new(&quick(false)).unwrap();
    let other = self::command();
    let first = HandlerContext::new(1, &other, 0, &handler, &journal);
    assert!(handler.handle_with(&other, &first).await.is_err());
    let second = HandlerContext::new(2, &other, 0, &handler, &journal);
    assert_eq!(handler.handle_with(&other, &second).await.unwrap()["answer"]["action"], "hold");
    assert_eq!(script.chats.lock().unwrap().len(), 3, "the second command's call was made twice");
    assert_eq!(script.lookups.lock().unwrap().len(), 1, "and not looked up");
    assert_eq!(journal.stats.rerun.load(std::sync::atomic::Ordering::SeqCst), 1);
}
