//! `--webhook-every N`: every Nth command the tool issues is a
//! `notify_webhook` command with two notifications, delivered by the
//! workers to an HTTP endpoint in this process that counts the POSTs per
//! idempotency key and answers the workers' lookups (`reconcile`). At the
//! end, each step of a command with a result must have been POSTed exactly
//! once: the effects counted equal the distinct steps (docs/journal.md).

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::routing::{get, post};
use shoal_protocol::messages::{Command, CommandResult, ResultStatus};

/// Notifications per webhook command (so steps per command).
pub(super) const STEPS: usize = 2;

type Posts = Arc<Mutex<HashMap<String, u32>>>;

/// The counting endpoint.
#[derive(Debug)]
pub(super) struct Effects {
    posts: Posts,
    /// Where workers POST.
    pub(super) url: String,
    /// Where workers look deliveries up.
    pub(super) lookup_url: String,
}

async fn deliver(State(posts): State<Posts>, headers: HeaderMap) -> (StatusCode, String) {
    let Some(key) = headers.get("idempotency-key").and_then(|v| v.to_str().ok()) else {
        return (StatusCode::BAD_REQUEST, String::new());
    };
    *posts.lock().unwrap_or_else(|p| p.into_inner()).entry(key.to_string()).or_default() += 1;
    (StatusCode::OK, serde_json::json!({ "delivered": key }).to_string())
}

async fn lookup(State(posts): State<Posts>, uri: Uri) -> (StatusCode, String) {
    let key = uri.query().unwrap_or_default().strip_prefix("idempotency_key=").unwrap_or_default().replace("%2F", "/");
    if posts.lock().unwrap_or_else(|p| p.into_inner()).contains_key(&key) {
        (StatusCode::OK, serde_json::json!({ "delivered": key }).to_string())
    } else {
        (StatusCode::NOT_FOUND, String::new())
    }
}

impl Effects {
    /// Serves the endpoint on a free local port.
    pub(super) async fn start() -> Self {
        let posts = Posts::default();
        let app =
            axum::Router::new().route("/hook", post(deliver)).route("/lookup", get(lookup)).with_state(posts.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind the webhook endpoint");
        let address = listener.local_addr().expect("its address");
        tokio::spawn(async move { axum::serve(listener, app).await });
        Self { posts, url: format!("http://{address}/hook"), lookup_url: format!("http://{address}/lookup") }
    }

    /// The workers' settings for the endpoint.
    pub(super) fn worker_env(&self) -> [(String, String); 2] {
        [
            ("SHOAL__WORKER__WEBHOOK__URL".into(), self.url.clone()),
            ("SHOAL__WORKER__WEBHOOK__LOOKUP_URL".into(), self.lookup_url.clone()),
        ]
    }

    /// What the endpoint counted against the commands and their results.
    pub(super) fn count(&self, commands: &[Command], results: &[CommandResult]) -> EffectCount {
        let posts = self.posts.lock().unwrap_or_else(|p| p.into_inner()).clone();
        let succeeded: HashSet<uuid::Uuid> =
            results.iter().filter(|r| r.status == ResultStatus::Succeeded).map(|r| r.command_id).collect();
        let webhook: HashSet<uuid::Uuid> =
            commands.iter().filter(|c| c.kind == "notify_webhook").map(|c| c.id).collect();
        let expected: Vec<String> = webhook
            .iter()
            .filter(|id| succeeded.contains(id))
            .flat_map(|id| (0..STEPS).map(move |i| format!("{id}/post/{i}")))
            .collect();
        EffectCount {
            commands: webhook.len(),
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
            " webhook_commands={} effects={} effect_steps={} effects_repeated={} effects_missing={}",
            self.commands,
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

#[cfg(test)]
mod tests {
    use super::*;

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
            p.insert(format!("{}/post/0", a.id), 1);
            p.insert(format!("{}/post/1", a.id), 2);
            p.insert(format!("{}/post/0", b.id), 1);
        }
        let count = effects.count(&[a.clone(), b.clone(), alert.clone()], &[ok(&a), ok(&b), ok(&alert)]);
        assert_eq!(count, EffectCount { commands: 2, steps: 3, effects: 4, missing: 1 });
        assert_eq!(count.repeated(), 1, "a's second step POSTed twice");
        assert!(count.summary().contains("effects_repeated=1 effects_missing=1"));
    }
}
