//! The agent loop: a prompt with the command and a state summary, then up
//! to `max_rounds` model calls; tool calls are executed against the state
//! API and answered, a final answer is validated against the schema (and
//! re-asked for with the validation error when it fails).

use serde::Deserialize;
use serde_json::{Value, json};
use shoal_mcp::ShoalTools;
use shoal_protocol::messages::Command;
use tracing::Instrument as _;

use super::client::{CallError, ChatClient, ChatReply, ChatRequest, ToolCall, Usage, clip};
use super::record::{Recorder, Round, ToolRecord, chat_span, finish_chat_span, tool_span};
use super::settings::LlmSettings;
use crate::handlers::{HandlerContext, HandlerError};

/// Tool calls answered per round; more are answered with an error.
pub const MAX_TOOL_CALLS_PER_ROUND: usize = 8;
/// Most characters of one tool answer the model is sent.
pub const MAX_TOOL_ANSWER_CHARS: usize = 16_000;
/// Most characters of the model's last output quoted in a failure.
pub const MAX_LAST_OUTPUT_CHARS: usize = 4_000;
/// Most characters of the task and of the payload put into the prompt.
const MAX_TASK_CHARS: usize = 4_000;
/// Most keys a command may scope the summary to.
const MAX_KEYS: usize = 50;
/// Journal step name of a model call, before its round (`chat-<n>`).
const CHAT_STEP: &str = "chat-";

const SYSTEM_PROMPT: &str = "You are a decision agent inside Shoal, a trading and monitoring system. \
You are given one command (its kind, key and payload), a task, and a summary of Shoal's live state. \
You may call the read-only tools to look at the state in more detail; every answer says how fresh it is. \
When you have decided, reply with only a JSON object (no prose, no code fence) that satisfies this JSON schema:\n";

/// The `llm_decide` payload; other fields are passed to the model as they are.
#[derive(Debug, Deserialize)]
pub struct Payload {
    /// What to decide (default: decide what to do about the command's key).
    #[serde(default)]
    pub task: Option<String>,
    /// Keys to scope the state summary to (default: the whole state).
    #[serde(default)]
    pub keys: Option<Vec<String>>,
}

/// The configured agent.
#[derive(Debug)]
pub struct Agent {
    client: ChatClient,
    tools: ShoalTools,
    offered: Option<Vec<Value>>,
    schema: Value,
    validator: jsonschema::Validator,
    response_format: Option<Value>,
    model: String,
    provider: String,
    max_rounds: u32,
    budget: u64,
    max_tokens: u32,
    temperature: f64,
    summary_max_tokens: u32,
    /// Tokens per key per minute (`worker.flow.llm`), if limited.
    pub key_budget: Option<KeyBudget>,
}

/// The per-key token budget and where its refusals are counted.
#[derive(Debug)]
pub struct KeyBudget {
    /// The budget.
    pub budget: std::sync::Arc<crate::flow::TokenBudget>,
    /// Counters.
    pub stats: std::sync::Arc<crate::flow::FlowStats>,
}

impl KeyBudget {
    /// Refuses a call of a key whose budget is spent; a failure for good (the
    /// command is dead-lettered): retrying at once would be refused again.
    fn check(&self, key: &str) -> Result<(), HandlerError> {
        self.budget.check(key, tokio::time::Instant::now()).map(drop).map_err(|exceeded| {
            self.stats.llm_budget_refusals.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            HandlerError::Rejected(exceeded.to_string())
        })
    }
}

/// How the loop ended without an answer.
enum Stop {
    /// A failure to give up on (the worker dead-letters it).
    Permanent(String),
    /// A failure another attempt may not have.
    Transient(String),
}

impl Agent {
    /// The agent of `settings`, with its clients and schema.
    pub fn new(
        settings: &LlmSettings,
        client: ChatClient,
        tools: ShoalTools,
        schema: Value,
        validator: jsonschema::Validator,
    ) -> Self {
        let response_format = match settings.response_format.as_str() {
            "json_schema" => Some(json!({
                "type": "json_schema",
                "json_schema": {"name": "shoal_decision", "strict": true, "schema": schema},
            })),
            "json_object_schema" => Some(json!({"type": "json_object", "schema": schema})),
            "json_object" => Some(json!({"type": "json_object"})),
            _ => None,
        };
        Self {
            client,
            tools,
            offered: settings.tools.then(ShoalTools::function_tools),
            schema,
            validator,
            response_format,
            model: settings.model.clone(),
            provider: settings.provider.clone(),
            max_rounds: settings.max_rounds,
            budget: settings.max_tokens_per_command,
            max_tokens: settings.max_tokens_per_call,
            temperature: settings.temperature,
            summary_max_tokens: settings.summary_max_tokens,
            key_budget: None,
        }
    }

    /// Runs the rounds for `command`; the result's output on success.
    /// With a `journal`, the summary, each round's model call (`chat-<n>`)
    /// and each tool call (`tool-<n>-<i>`) are effect steps: a command run
    /// again after a crash replays the recorded answers instead of asking
    /// (and paying for) the model again, and its conversation stays the same.
    pub async fn run(
        &self,
        command: &Command,
        payload: &Payload,
        attempt: u32,
        journal: Option<&HandlerContext<'_>>,
    ) -> Result<Value, HandlerError> {
        let summary = self.summary(payload, journal).await?;
        let system = format!("{SYSTEM_PROMPT}{}", self.schema);
        let user = self.user_prompt(command, payload, &summary);
        let mut record = Recorder::new(&system, &user);
        let mut messages = vec![json!({"role": "system", "content": system}), json!({"role": "user", "content": user})];
        let mut usage = Usage::default();
        let mut sent = 0;
        for round in 1..=self.max_rounds {
            let request = self.request(&messages);
            let span = chat_span(&self.provider, &self.model, &request, &messages[sent..], round);
            sent = messages.len();
            let args = serde_json::to_value(&request).map_err(|e| HandlerError::Rejected(e.to_string()))?;
            // Inside the journalled step: a call replayed from the journal is
            // neither checked against the key's budget nor charged again.
            // The step's idempotency key goes with the call (and its
            // retries), so that an endpoint or gateway that keeps answers by
            // key can answer `reconcile`'s lookup (`llm.lookup_url`).
            let (sent_request, call_span) = (&request, &span);
            let call = move |key: Option<String>| async move {
                if let Some(budget) = &self.key_budget {
                    budget.check(&command.key)?;
                }
                let reply = self.client.complete(sent_request, key.as_deref()).await.map_err(|error| {
                    finish_chat_span(call_span, None, Some(&error));
                    call_failure(&error, round, attempt)
                })?;
                if let Some(key_budget) = &self.key_budget {
                    key_budget.budget.charge(&command.key, reply.usage.total(), tokio::time::Instant::now());
                }
                Ok(reply)
            };
            let reply: ChatReply =
                step(journal, &format!("{CHAT_STEP}{round}"), &args, call).instrument(span.clone()).await?;
            finish_chat_span(&span, Some(&reply), None);
            usage.input_tokens += reply.usage.input_tokens;
            usage.output_tokens += reply.usage.output_tokens;
            let mut entry = Round::of(round, &reply, &mut record);
            if usage.total() > self.budget {
                let text = format!(
                    "token budget exceeded: {} tokens used of llm.max_tokens_per_command = {} after {round} round(s); last output: {}",
                    usage.total(),
                    self.budget,
                    last_output(&reply),
                );
                return Err(HandlerError::Rejected(text));
            }
            if !reply.tool_calls.is_empty() {
                messages.push(assistant_tool_calls(&reply));
                let calls = ToolCalls { round, calls: &reply.tool_calls, journal };
                self.answer_tool_calls(calls, &mut messages, &mut entry, &mut record).await?;
                record.push(entry);
                continue;
            }
            let content = reply.content.clone().unwrap_or_default();
            match self.validate(&content) {
                Ok(answer) => {
                    record.push(entry);
                    return Ok(record.finish(answer, &self.model, &self.provider, &reply, usage));
                }
                Err(problem) => {
                    entry.problem = Some(problem.clone());
                    record.push(entry);
                    if round == self.max_rounds {
                        let stop = Stop::Permanent(format!(
                            "no valid final answer within llm.max_rounds = {} (last problem: {problem}); last output: {}",
                            self.max_rounds,
                            last_output(&reply),
                        ));
                        return Err(stop.into());
                    }
                    messages.push(json!({"role": "assistant", "content": content}));
                    messages.push(json!({"role": "user", "content": format!(
                        "That answer is not valid: {problem}. Reply with only a JSON object that satisfies the schema."
                    )}));
                }
            }
        }
        let last = record.last_output();
        Err(Stop::Permanent(format!(
            "no final answer within llm.max_rounds = {} (the model was still calling tools); last output: {last}",
            self.max_rounds
        ))
        .into())
    }

    /// For a model call's step (`chat-<n>`), the recorded answer of the
    /// call sent with `idempotency_key`, as the journal keeps the step's
    /// outcome; `None` when the endpoint has none, no lookup is configured,
    /// or the step is not a model call (the summary and tool steps only read
    /// Shoal's state: they are asked again).
    pub async fn look_up_call(&self, step: &str, idempotency_key: &str) -> Result<Option<Value>, HandlerError> {
        if !step.starts_with(CHAT_STEP) {
            return Ok(None);
        }
        let found = self.client.lookup(idempotency_key).await.map_err(|error| {
            HandlerError::Retryable(format!("looking up model call {idempotency_key} at llm.lookup_url: {error}"))
        })?;
        found.map(|reply| serde_json::to_value(reply).map_err(|e| HandlerError::Rejected(e.to_string()))).transpose()
    }

    /// The state summary for the first prompt (a tool call of ours).
    async fn summary(&self, payload: &Payload, journal: Option<&HandlerContext<'_>>) -> Result<String, HandlerError> {
        let mut args = json!({"max_tokens": self.summary_max_tokens});
        if let Some(keys) = &payload.keys {
            if keys.len() > MAX_KEYS {
                return Err(HandlerError::Rejected(format!(
                    "payload.keys has {} keys, at most {MAX_KEYS}",
                    keys.len()
                )));
            }
            args["keys"] = json!(keys);
        }
        let span = tool_span("summarize", "summary", &args.to_string());
        let ask = |_key| async {
            let answer = self.tools.call_json("summarize", args.clone()).await;
            match answer.get("error") {
                // The state API is down or refuses us: another attempt may
                // find it (and nothing is journalled).
                Some(error) => {
                    span.record("error.type", "tool_error");
                    Err(HandlerError::Retryable(format!("state summary unavailable: {error}")))
                }
                None => Ok(answer),
            }
        };
        let answer: Value = step(journal, "summary", &args, ask).instrument(span.clone()).await?;
        span.record("gen_ai.tool.call.result", clip(&answer.to_string(), 2_000).as_str());
        Ok(match answer.get("summary") {
            Some(Value::String(text)) => text.clone(),
            _ => answer.to_string(),
        })
    }

    fn user_prompt(&self, command: &Command, payload: &Payload, summary: &str) -> String {
        let task = payload.task.as_deref().unwrap_or("Decide what to do about this command's key.");
        let shown = json!({"id": command.id, "kind": command.kind, "key": command.key, "seq": command.seq,
                           "issued_at": command.issued_at, "payload": command.payload});
        format!(
            "Task: {}\n\nCommand: {}\n\nState summary:\n{summary}",
            clip(task, MAX_TASK_CHARS),
            clip(&shown.to_string(), MAX_TASK_CHARS),
        )
    }

    fn request(&self, messages: &[Value]) -> ChatRequest {
        ChatRequest {
            model: self.model.clone(),
            messages: messages.to_vec(),
            tools: self.offered.clone(),
            response_format: self.response_format.clone(),
            temperature: self.temperature,
            max_tokens: self.max_tokens,
        }
    }

    /// Executes each tool call (a malformed one is answered with an error
    /// the model can read) and appends the answers.
    async fn answer_tool_calls(
        &self,
        calls: ToolCalls<'_, '_>,
        messages: &mut Vec<Value>,
        entry: &mut Round,
        record: &mut Recorder,
    ) -> Result<(), HandlerError> {
        for (i, call) in calls.calls.iter().enumerate() {
            let span = tool_span(&call.name, &call.id, &call.arguments);
            let answer = if i >= MAX_TOOL_CALLS_PER_ROUND {
                tool_error("too_many_calls", &format!("at most {MAX_TOOL_CALLS_PER_ROUND} tool calls a round"))
            } else if self.offered.is_none() {
                tool_error("no_tools", "no tools are offered; answer with the final JSON object")
            } else {
                match parse_arguments(&call.arguments) {
                    Ok(args) => {
                        let key = json!({"name": call.name, "arguments": args});
                        let ask = |_key| async { Ok(self.tools.call_json(&call.name, args.clone()).await) };
                        let name = format!("tool-{}-{i}", calls.round);
                        step(calls.journal, &name, &key, ask).instrument(span.clone()).await?
                    }
                    Err(answer) => answer,
                }
            };
            let text = clip(&answer.to_string(), MAX_TOOL_ANSWER_CHARS);
            span.record("gen_ai.tool.call.result", clip(&text, 2_000).as_str());
            if answer.get("error").is_some() {
                span.record("error.type", "tool_error");
                span.record("otel.status_code", "ERROR");
            }
            entry.tool_calls.push(ToolRecord::of(call, &text, record));
            messages.push(json!({"role": "tool", "tool_call_id": call.id, "content": text}));
        }
        Ok(())
    }

    /// The final answer, decoded and checked against the schema; or what is
    /// wrong with it, worded for the model.
    fn validate(&self, content: &str) -> Result<Value, String> {
        let text = strip_fence(content);
        if text.is_empty() {
            return Err("the answer is empty".into());
        }
        // Raw control characters inside strings (a newline, say) are not
        // JSON, yet some servers' grammars let them through: escaped, the
        // answer means what the model wrote.
        let answer: Value = serde_json::from_str(text)
            .or_else(|e| escape_controls_in_strings(text).map_or(Err(e), |t| serde_json::from_str(&t)))
            .map_err(|e| format!("the answer is not JSON ({e})"))?;
        let errors: Vec<String> = self
            .validator
            .iter_errors(&answer)
            .take(5)
            .map(|e| format!("at {:?}: {e}", e.instance_path().to_string()))
            .collect();
        if errors.is_empty() { Ok(answer) } else { Err(format!("schema violations: {}", errors.join("; "))) }
    }
}

impl From<Stop> for HandlerError {
    fn from(stop: Stop) -> Self {
        match stop {
            Stop::Permanent(text) => HandlerError::Rejected(text),
            Stop::Transient(text) => HandlerError::Retryable(text),
        }
    }
}

/// One round's tool calls, and the journal they go through.
struct ToolCalls<'c, 'j> {
    round: u32,
    calls: &'c [ToolCall],
    journal: Option<&'c HandlerContext<'j>>,
}

/// Runs `run` as effect step `name` of `journal` (recorded once, replayed
/// on a later run; `args` decide what it does), or directly without one.
/// `run` is given the step's idempotency key when there is a journal.
async fn step<T, F, Fut>(
    journal: Option<&HandlerContext<'_>>,
    name: &str,
    args: &Value,
    run: F,
) -> Result<T, HandlerError>
where
    T: serde::Serialize + serde::de::DeserializeOwned,
    F: FnOnce(Option<String>) -> Fut + Send,
    Fut: Future<Output = Result<T, HandlerError>> + Send,
{
    let Some(ctx) = journal else { return run(None).await };
    let outcome = ctx
        .effect(name, args, |key| async move {
            let value = run(Some(key)).await?;
            serde_json::to_value(value).map_err(|e| HandlerError::Rejected(format!("step {name}: {e}")))
        })
        .await?;
    serde_json::from_value(outcome)
        .map_err(|e| HandlerError::Rejected(format!("step {name}: the journalled outcome does not decode: {e}")))
}

fn call_failure(error: &CallError, round: u32, attempt: u32) -> HandlerError {
    let text = format!("model call of round {round} (attempt {attempt}) failed: {error}");
    if error.is_transient() { Stop::Transient(text) } else { Stop::Permanent(text) }.into()
}

/// The assistant message that asked for `reply`'s tool calls, as the next
/// request must repeat it.
fn assistant_tool_calls(reply: &ChatReply) -> Value {
    let calls: Vec<Value> = reply
        .tool_calls
        .iter()
        .map(|c| json!({"id": c.id, "type": "function", "function": {"name": c.name, "arguments": c.arguments}}))
        .collect();
    json!({"role": "assistant", "content": reply.content, "tool_calls": calls})
}

/// A tool call's arguments: a JSON object (empty text is `{}`), or the
/// error answer to send back.
fn parse_arguments(text: &str) -> Result<Value, Value> {
    if text.trim().is_empty() {
        return Ok(json!({}));
    }
    match serde_json::from_str::<Value>(text) {
        Ok(value @ Value::Object(_)) => Ok(value),
        Ok(other) => Err(tool_error("bad_arguments", &format!("arguments must be a JSON object, not {other}"))),
        Err(e) => Err(tool_error("bad_arguments", &format!("arguments are not valid JSON: {e}"))),
    }
}

fn tool_error(code: &str, message: &str) -> Value {
    json!({"error": {"code": code, "message": message}})
}

/// The model's output of `reply` (content or tool calls), bounded.
pub fn last_output(reply: &ChatReply) -> String {
    let text = match (&reply.content, reply.tool_calls.is_empty()) {
        (Some(content), true) => content.clone(),
        (content, _) => json!({"content": content, "tool_calls": reply.tool_calls}).to_string(),
    };
    clip(&text, MAX_LAST_OUTPUT_CHARS)
}

/// `text` with control characters inside JSON strings written as `\\u` escapes;
/// `None` when there are none.
fn escape_controls_in_strings(text: &str) -> Option<String> {
    let (mut out, mut in_string, mut escaped, mut changed) = (String::with_capacity(text.len()), false, false, false);
    for c in text.chars() {
        if in_string && !escaped && c.is_control() && (c as u32) < 0x20 {
            out.push_str(&format!("\\u{:04x}", c as u32));
            changed = true;
            continue;
        }
        out.push(c);
        match c {
            '"' if !escaped => in_string = !in_string,
            '\\' if in_string => {
                escaped = !escaped;
                continue;
            }
            _ => {}
        }
        escaped = false;
    }
    changed.then_some(out)
}

/// `text` without a surrounding Markdown code fence.
fn strip_fence(text: &str) -> &str {
    let t = text.trim();
    let Some(inner) = t.strip_prefix("```") else { return t };
    let inner = inner.strip_suffix("```").unwrap_or(inner);
    let inner = inner.strip_prefix("json").unwrap_or(inner);
    inner.trim()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arguments_must_be_an_object() {
        assert_eq!(parse_arguments("").unwrap(), json!({}));
        assert_eq!(parse_arguments("{\"a\":1}").unwrap(), json!({"a": 1}));
        assert_eq!(parse_arguments("[1]").unwrap_err()["error"]["code"], "bad_arguments");
        assert_eq!(parse_arguments("{oops").unwrap_err()["error"]["code"], "bad_arguments");
    }

    #[test]
    fn control_characters_in_strings_are_escaped_and_only_there() {
        assert_eq!(escape_controls_in_strings("{\"a\": \"x\ny\"}\n").unwrap(), "{\"a\": \"x\\u000ay\"}\n");
        assert_eq!(escape_controls_in_strings("{\"a\": \"q\\\"\u{1}\"}").unwrap(), "{\"a\": \"q\\\"\\u0001\"}");
        assert_eq!(escape_controls_in_strings("{\n\"a\": 1}"), None);
    }

    #[test]
    fn fences_are_stripped() {
        assert_eq!(strip_fence("```json\n{\"a\":1}\n```"), "{\"a\":1}");
        assert_eq!(strip_fence(" {} "), "{}");
    }
}
