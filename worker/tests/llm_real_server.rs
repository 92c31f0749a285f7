//! The `llm_decide` skill against a real OpenAI-compatible server:
//! llama-cpp-python's, started by `scripts/llm-server.sh` (which installs it
//! from PyPI on first use, compiling llama.cpp) serving a tiny llama model
//! with random weights that `scripts/llm/tiny_model.py` writes (no weights
//! are downloaded). The model's output is noise, but constrained by the
//! answer schema (`response_format` `json_object` with a `schema`, turned
//! into a grammar by the server), so it is always a valid answer: what is
//! tested for real is the wire protocol (request, tools, response format,
//! usage, finish reason), not the model's judgement.
//!
//! The state API the tools ask is a small scripted server in this test.

// A panic is how a test fails.
#![allow(clippy::unwrap_used)]

use std::path::PathBuf;
use std::process::{Child, Command as Process, Stdio};
use std::time::{Duration, Instant};

use axum::Json;
use axum::response::IntoResponse;
use serde_json::{Value, json};
use shoal_protocol::messages::{Command, SCHEMA_VERSION};
use shoal_worker::handlers::llm::{LLM_DECIDE, LlmHandler, LlmSettings};
use shoal_worker::handlers::{Handler, HandlerError};

/// How long the first start may take: it installs llama-cpp-python
/// (compiling llama.cpp, about 12 minutes on 2 cores).
const START_BOUND: Duration = Duration::from_secs(40 * 60);

/// Every answer field is fully constrained by the grammar the server makes
/// of this schema (an enum, a bounded string, a number from an enum):
/// random weights cannot produce an invalid answer.
fn schema() -> Value {
    json!({
        "type": "object",
        "additionalProperties": false,
        "required": ["action", "reason", "confidence"],
        "properties": {
            "action": {"type": "string", "enum": ["buy", "sell", "hold", "alert"]},
            "reason": {"type": "string", "minLength": 1, "maxLength": 16},
            "confidence": {"enum": [0, 0.5, 1]}
        }
    })
}

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_path_buf()
}

/// The server process, killed when dropped.
struct Server {
    child: Child,
    base: String,
    log: PathBuf,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Server {
    async fn start() -> Self {
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let dir = root().join("target/llm");
        std::fs::create_dir_all(&dir).unwrap();
        let log = dir.join(format!("server-{port}.log"));
        let out = std::fs::File::create(&log).unwrap();
        let child = Process::new("bash")
            .arg(root().join("scripts/llm-server.sh"))
            .arg(port.to_string())
            .stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .unwrap();
        let mut server = Self { child, base: format!("http://127.0.0.1:{port}/v1"), log };
        let started = Instant::now();
        let http = reqwest::Client::new();
        loop {
            if let Some(status) = server.child.try_wait().unwrap() {
                panic!("scripts/llm-server.sh exited with {status}:\n{}", server.log_tail());
            }
            let models = http.get(format!("{}/models", server.base)).timeout(Duration::from_secs(2)).send().await;
            if models.is_ok_and(|r| r.status().is_success()) {
                eprintln!("llama-cpp-python server ready after {:?}", started.elapsed());
                return server;
            }
            assert!(started.elapsed() < START_BOUND, "server not ready after {START_BOUND:?}:\n{}", server.log_tail());
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }

    fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        text.lines().rev().take(40).collect::<Vec<_>>().into_iter().rev().collect::<Vec<_>>().join("\n")
    }
}

/// A state API answering every question with a short summary.
async fn state_api() -> String {
    let app = axum::Router::new()
        .fallback(|| async { Json(json!({"summary": "SIM-A 100.5 fresh; no alerts", "tokens": 9})).into_response() });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    base
}

fn settings(server: &Server, state: &str) -> LlmSettings {
    let schema = root().join(format!("target/llm/answer-schema-{}.json", std::process::id()));
    std::fs::write(&schema, schema_text()).unwrap();
    LlmSettings {
        enabled: true,
        endpoint: server.base.clone(),
        model: "shoal-tiny".into(),
        provider: "llama_cpp".into(),
        response_format: "json_object_schema".into(),
        answer_schema_file: schema.display().to_string(),
        max_tokens_per_call: 200,
        call_timeout_ms: 120_000,
        summary_max_tokens: 50,
        state_api_url: state.into(),
        ..LlmSettings::default()
    }
}

fn schema_text() -> String {
    schema().to_string()
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
        payload: json!({"task": "Decide about SIM-A."}),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_real_server_answers_within_the_schema_and_reports_usage() {
    let server = Server::start().await;
    let state = state_api().await;

    // The whole loop: the prompt with the summary, the read tools offered,
    // a grammar-constrained answer, validated by the skill.
    let handler = LlmHandler::new(&settings(&server, &state)).unwrap();
    let started = Instant::now();
    let output = handler.handle(&command(), 1).await.unwrap();
    eprintln!("answer in {:?}: {}", started.elapsed(), output["answer"]);
    let answer = &output["answer"];
    assert!(["buy", "sell", "hold", "alert"].contains(&answer["action"].as_str().unwrap()), "{answer}");
    assert!(output["rounds"].as_u64().unwrap() >= 1);
    assert_eq!(output["finish_reason"], "stop");
    assert_eq!(output["response_model"], "shoal-tiny");
    let usage = &output["usage"];
    // Byte tokens: the prompt is at least as many tokens as the summary has bytes.
    assert!(usage["input_tokens"].as_u64().unwrap() > 100, "{usage}");
    assert!(usage["output_tokens"].as_u64().unwrap() > 5, "{usage}");
    assert!(output["prompts"][1]["content"].as_str().unwrap().contains("SIM-A 100.5 fresh"));

    // The server's real usage counts drive the budget: the prompt alone is
    // over 200 tokens, so the first round blows it.
    let tight = LlmSettings { max_tokens_per_command: 200, ..settings(&server, &state) };
    let error = LlmHandler::new(&tight).unwrap().handle(&command(), 1).await.unwrap_err();
    assert!(matches!(error, HandlerError::Rejected(_)), "{error}");
    assert!(error.to_string().contains("token budget exceeded"), "{error}");

    // llama-cpp-python does not take OpenAI's `json_schema` response format
    // (the default, for OpenAI and vLLM): it refuses the request with a 500,
    // which is retried, then left to the worker's retries.
    let openai_form = LlmSettings {
        response_format: "json_schema".into(),
        call_retries: 1,
        retry_initial_ms: 10,
        retry_max_ms: 10,
        ..settings(&server, &state)
    };
    let error = LlmHandler::new(&openai_form).unwrap().handle(&command(), 1).await.unwrap_err();
    assert!(matches!(error, HandlerError::Retryable(_)), "{error}");
    assert!(error.to_string().contains("500") && error.to_string().contains("json_object"), "{error}");
}
