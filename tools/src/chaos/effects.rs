//! `--webhook-every N`: every Nth command the tool issues is a
//! `notify_webhook` command with two notifications, delivered by the
//! workers to an HTTP endpoint in this process that counts the POSTs per
//! idempotency key and answers the workers' lookups (`reconcile`). At the
//! end, each step of a command with a result must have been POSTed exactly
//! once: the effects counted equal the distinct steps (docs/journal.md).
//!
//! `--llm-every N`: every Nth command is an `llm_decide` command, decided by
//! the workers' LLM skill against a scripted OpenAI-compatible endpoint on
//! the same server (it answers a valid decision at once) and a scripted
//! state summary. The endpoint counts its chat-completions calls per
//! command and round (`<command id>/chat-<n>`, the skill's journal step):
//! each must be called exactly once, however often the command is re-run.
//! It keeps each answer under the call's `Idempotency-Key` header and
//! answers the skill's lookups (`llm.lookup_url`) with it, as a gateway that
//! keeps answers by key would: a call in flight when its worker died is
//! found there instead of being made again.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::routing::{get, post};
use shoal_protocol::messages::{Command, CommandResult, ResultStatus};

/// Notifications per webhook command (so steps per command).
pub(super) const STEPS: usize = 2;

/// Per step (idempotency key), when each of its calls arrived.
type Posts = Arc<Mutex<HashMap<String, Vec<chrono::DateTime<chrono::Utc>>>>>;

/// Per idempotency key, the chat completion the scripted model gave.
type Answers = Arc<Mutex<HashMap<String, String>>>;

/// What the handlers share.
#[derive(Debug, Clone, Default)]
struct Ledger {
    posts: Posts,
    answers: Answers,
}

/// The scripted model's answer, valid against the skill's default schema.
const DECISION: &str = r#"{"action":"hold","reason":"chaos run","confidence":0.5}"#;

/// The counting endpoint.
#[derive(Debug)]
pub(super) struct Effects {
    posts: Posts,
    /// Where workers POST.
    pub(super) url: String,
    /// Where workers look deliveries up.
    pub(super) lookup_url: String,
}

async fn deliver(State(Ledger { posts, .. }): State<Ledger>, headers: HeaderMap) -> (StatusCode, String) {
    let Some(key) = headers.get("idempotency-key").and_then(|v| v.to_str().ok()) else {
        return (StatusCode::BAD_REQUEST, String::new());
    };
    posts.lock().unwrap_or_else(|p| p.into_inner()).entry(key.to_string()).or_default().push(chrono::Utc::now());
    (StatusCode::OK, serde_json::json!({ "delivered": key }).to_string())
}

/// A webhook delivery's or a model call's lookup by idempotency key: the
/// model's answer for a call it recorded, `{"delivered": key}` for a
/// delivery; 404 for neither.
async fn lookup(State(Ledger { posts, answers }): State<Ledger>, uri: Uri) -> (StatusCode, String) {
    let key = uri.query().unwrap_or_default().strip_prefix("idempotency_key=").unwrap_or_default().replace("%2F", "/");
    if let Some(answer) = answers.lock().unwrap_or_else(|p| p.into_inner()).get(&key) {
        return (StatusCode::OK, answer.clone());
    }
    if posts.lock().unwrap_or_else(|p| p.into_inner()).contains_key(&key) {
        (StatusCode::OK, serde_json::json!({ "delivered": key }).to_string())
    } else {
        (StatusCode::NOT_FOUND, String::new())
    }
}

/// The step a chat-completions request is: `<command id>/chat-<round>`, the
/// command read from the skill's user prompt (`Command: {json}`), the round
/// from the assistant turns already in the conversation.
fn chat_step(request: &serde_json::Value) -> Option<String> {
    let messages = request["messages"].as_array()?;
    let user = messages.iter().find(|m| m["role"] == "user")?["content"].as_str()?;
    let line = user.lines().find_map(|l| l.strip_prefix("Command: "))?;
    let command: serde_json::Value = serde_json::from_str(line).ok()?;
    let round = 1 + messages.iter().filter(|m| m["role"] == "assistant").count();
    Some(format!("{}/chat-{round}", command["id"].as_str()?))
}

/// A model call: counted under the step read from the prompt (not from the
/// header, so that a skill sending the wrong key shows as repeats), its
/// answer kept under the `Idempotency-Key` header for lookups.
async fn chat(
    State(Ledger { posts, answers }): State<Ledger>,
    headers: HeaderMap,
    body: String,
) -> (StatusCode, String) {
    let request: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
    let Some(step) = chat_step(&request) else {
        return (StatusCode::BAD_REQUEST, r#"{"error":{"message":"no command in the prompt"}}"#.into());
    };
    posts.lock().unwrap_or_else(|p| p.into_inner()).entry(step).or_default().push(chrono::Utc::now());
    let answer = serde_json::json!({
        "id": "chaos", "object": "chat.completion", "model": request["model"],
        "choices": [{"index": 0, "message": {"role": "assistant", "content": DECISION}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 100, "completion_tokens": 20, "total_tokens": 120},
    })
    .to_string();
    if let Some(key) = headers.get("idempotency-key").and_then(|v| v.to_str().ok()) {
        answers.lock().unwrap_or_else(|p| p.into_inner()).insert(key.to_string(), answer.clone());
    }
    (StatusCode::OK, answer)
}

async fn summary() -> (StatusCode, String) {
    let answer = serde_json::json!({
        "summary": "# Shoal state (chaos run): nothing to report", "format": "text", "tokens": 12,
        "max_tokens": 1000, "encoding": "o200k_base", "included": 0, "omitted": {}, "as_of": null,
        "freshness": {"event_time": null, "watermarks": []}, "served_by": "shoal-chaos",
    });
    (StatusCode::OK, answer.to_string())
}

impl Effects {
    /// Serves the endpoint on a free local port.
    pub(super) async fn start() -> Self {
        let ledger = Ledger::default();
        let posts = ledger.posts.clone();
        let app = axum::Router::new()
            .route("/hook", post(deliver))
            .route("/lookup", get(lookup))
            .route("/v1/chat/completions", post(chat))
            .route("/v1/summary", get(summary))
            .with_state(ledger);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind the webhook endpoint");
        let address = listener.local_addr().expect("its address");
        tokio::spawn(async move { axum::serve(listener, app).await });
        Self { posts, url: format!("http://{address}/hook"), lookup_url: format!("http://{address}/lookup") }
    }

    /// Up to `most` steps called more than once, each with the times of its
    /// calls: to match against the workers' logs.
    pub(super) fn repeats(&self, most: usize) -> Vec<String> {
        let posts = self.posts.lock().unwrap_or_else(|p| p.into_inner());
        let mut repeated: Vec<String> = posts
            .iter()
            .filter(|(_, calls)| calls.len() > 1)
            .map(|(key, calls)| {
                let times: Vec<String> = calls.iter().map(|t| t.format("%H:%M:%S%.3f").to_string()).collect();
                format!("{key} called {} times at {}", calls.len(), times.join(", "))
            })
            .collect();
        repeated.sort();
        repeated.truncate(most);
        repeated
    }

    /// The workers' settings for the endpoint: the webhook, and the LLM
    /// skill's model endpoint and state API (both scripted here).
    pub(super) fn worker_env(&self) -> Vec<(String, String)> {
        let base = self.url.trim_end_matches("/hook").to_string();
        vec![
            ("SHOAL__WORKER__WEBHOOK__URL".into(), self.url.clone()),
            ("SHOAL__WORKER__WEBHOOK__LOOKUP_URL".into(), self.lookup_url.clone()),
            ("SHOAL__LLM__ENABLED".into(), "true".into()),
            ("SHOAL__LLM__ENDPOINT".into(), format!("{base}/v1")),
            ("SHOAL__LLM__MODEL".into(), "chaos-scripted".into()),
            ("SHOAL__LLM__LOOKUP_URL".into(), self.lookup_url.clone()),
            ("SHOAL__LLM__STATE_API_URL".into(), base),
            ("SHOAL__LLM__CALL_TIMEOUT_MS".into(), "2000".into()),
            ("SHOAL__LLM__TOOL_TIMEOUT_MS".into(), "2000".into()),
        ]
    }

    /// What the endpoint counted against the commands and their results.
    pub(super) fn count(&self, commands: &[Command], results: &[CommandResult]) -> EffectCount {
        let posts: HashMap<String, u32> = self
            .posts
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .map(|(k, calls)| (k.clone(), u32::try_from(calls.len()).unwrap_or(u32::MAX)))
            .collect();
        let succeeded: HashSet<uuid::Uuid> =
            results.iter().filter(|r| r.status == ResultStatus::Succeeded).map(|r| r.command_id).collect();
        let webhook: HashSet<uuid::Uuid> =
            commands.iter().filter(|c| c.kind == "notify_webhook").map(|c| c.id).collect();
        let llm: HashSet<uuid::Uuid> = commands.iter().filter(|c| c.kind == "llm_decide").map(|c| c.id).collect();
        let expected: Vec<String> = webhook
            .iter()
            .filter(|id| succeeded.contains(id))
            .flat_map(|id| (0..STEPS).map(move |i| format!("{id}/post/{i}")))
            .chain(llm.iter().filter(|id| succeeded.contains(id)).map(|id| format!("{id}/chat-1")))
            .collect();
        EffectCount {
            commands: webhook.len(),
            llm_commands: llm.len(),
            model_calls: posts.iter().filter(|(k, _)| k.contains("/chat-")).map(|(_, &n)| u64::from(n)).sum(),
            steps: posts.len(),
            effects: posts.values().map(|&n| u64::from(n)).sum(),
            missing: expected.iter().filter(|k| !posts.contains_key(*k)).count(),
        }
    }
}

/// Effects counted at the endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct EffectCount {
    /// Webhook commands issued.
    pub(super) commands: usize,
    /// `llm_decide` commands issued.
    pub(super) llm_commands: usize,
    /// Chat-completions calls the scripted model answered (among `effects`).
    pub(super) model_calls: u64,
    /// Distinct steps the endpoint saw (idempotency keys).
    pub(super) steps: usize,
    /// POSTs the endpoint saw.
    pub(super) effects: u64,
    /// Steps of commands that succeeded that the endpoint never saw.
    pub(super) missing: usize,
}

impl EffectCount {
    /// The summary line's fields.
    pub(super) fn summary(&self) -> String {
        format!(
            " webhook_commands={} llm_commands={} model_calls={} effects={} effect_steps={} effects_repeated={} effects_missing={}",
            self.commands,
            self.llm_commands,
            self.model_calls,
            self.effects,
            self.steps,
            self.repeated(),
            self.missing
        )
    }

    /// Effects past one per step.
    pub(super) fn repeated(&self) -> u64 {
        self.effects.saturating_sub(self.steps as u64)
    }
}

/// A `notify_webhook` command for `key` with sequence number `seq`.
pub(super) fn webhook_command(key: &str, seq: u64) -> Command {
    let notifications: Vec<serde_json::Value> =
        (0..STEPS).map(|i| serde_json::json!({"key": key, "seq": seq, "part": i})).collect();
    Command {
        kind: "notify_webhook".into(),
        payload: serde_json::json!({ "notifications": notifications }),
        ..crate::alert_command(key, seq)
    }
}

/// An `llm_decide` command for `key` with sequence number `seq`.
pub(super) fn llm_command(key: &str, seq: u64) -> Command {
    Command {
        kind: "llm_decide".into(),
        payload: serde_json::json!({ "task": "Decide whether to act on this key (chaos run)." }),
        ..crate::alert_command(key, seq)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_chat_request_names_its_command_and_round() {
        let command = llm_command("k", 1);
        let prompt = format!("Task: x\n\nCommand: {}\n\nState summary:\n...", serde_json::json!({"id": command.id}));
        let first =
            serde_json::json!({"messages": [{"role": "system", "content": "s"}, {"role": "user", "content": prompt}]});
        assert_eq!(chat_step(&first), Some(format!("{}/chat-1", command.id)));
        let mut second = first.clone();
        second["messages"].as_array_mut().unwrap().push(serde_json::json!({"role": "assistant", "content": "{}"}));
        assert_eq!(chat_step(&second), Some(format!("{}/chat-2", command.id)));
        assert_eq!(chat_step(&serde_json::json!({"messages": []})), None);
    }

    #[test]
    fn effects_are_counted_against_the_steps_of_succeeded_commands() {
        let (a, b, alert) = (webhook_command("k", 1), webhook_command("k", 2), crate::alert_command("k", 3));
        let now = chrono::Utc::now();
        let ok = |c: &Command| {
            CommandResult::answering(c, "w", ResultStatus::Succeeded, serde_json::Value::Null, (now, now))
        };
        let posts = Posts::default();
        let effects = Effects { posts: posts.clone(), url: String::new(), lookup_url: String::new() };
        {
            let mut p = posts.lock().unwrap();
            p.insert(format!("{}/post/0", a.id), vec![chrono::Utc::now()]);
            p.insert(format!("{}/post/1", a.id), vec![now, now]);
            p.insert(format!("{}/post/0", b.id), vec![now]);
        }
        let count = effects.count(&[a.clone(), b.clone(), alert.clone()], &[ok(&a), ok(&b), ok(&alert)]);
        assert_eq!(
            count,
            EffectCount { commands: 2, llm_commands: 0, model_calls: 0, steps: 3, effects: 4, missing: 1 }
        );
        assert_eq!(count.repeated(), 1, "a's second step POSTed twice");
        assert_eq!(effects.repeats(5).len(), 1);
        assert!(effects.repeats(5)[0].starts_with(&format!("{}/post/1 called 2 times", a.id)));
        assert!(count.summary().contains("effects_repeated=1 effects_missing=1"));
    }
}
