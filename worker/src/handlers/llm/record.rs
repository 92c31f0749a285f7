//! What the skill keeps of a run: the result's record (prompts, rounds,
//! tool calls, usage), bounded in size, and the OpenTelemetry GenAI spans
//! (`chat {model}`, `execute_tool {name}`) inside the command's trace.

use serde::Serialize;
use serde_json::{Value, json};
use tracing::field::Empty;

use super::client::{CallError, ChatReply, ChatRequest, ToolCall, Usage, clip};

/// Characters the whole record may hold (prompts, outputs, tool calls and
/// answers); past it, texts are recorded empty with a marker.
pub const MAX_RECORD_CHARS: usize = 200_000;
/// Characters of one prompt kept in the record.
const PROMPT_CHARS: usize = 16_000;
/// Characters of one output, tool arguments or tool answer kept.
const ITEM_CHARS: usize = 2_000;
/// Characters of a span attribute holding messages.
const SPAN_CHARS: usize = 8_000;

/// One tool call in the record.
#[derive(Debug, Serialize)]
pub struct ToolRecord {
    id: String,
    name: String,
    arguments: String,
    answer: String,
}

impl ToolRecord {
    /// `call` and its answer, clipped.
    pub fn of(call: &ToolCall, answer: &str, record: &mut Recorder) -> Self {
        Self {
            id: clip(&call.id, 100),
            name: clip(&call.name, 100),
            arguments: record.keep(&call.arguments, ITEM_CHARS),
            answer: record.keep(answer, ITEM_CHARS),
        }
    }
}

/// One round in the record.
#[derive(Debug, Serialize)]
pub struct Round {
    round: u32,
    response_model: Option<String>,
    finish_reason: Option<String>,
    usage: Usage,
    content: Option<String>,
    /// The tool calls asked for and their answers.
    pub tool_calls: Vec<ToolRecord>,
    /// Why the round's final answer was refused.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub problem: Option<String>,
}

impl Round {
    /// `reply` as round `round`.
    pub fn of(round: u32, reply: &ChatReply, record: &mut Recorder) -> Self {
        Self {
            round,
            response_model: reply.model.clone(),
            finish_reason: reply.finish_reason.clone(),
            usage: reply.usage,
            content: reply.content.as_deref().map(|c| record.keep(c, ITEM_CHARS)),
            tool_calls: Vec::new(),
            problem: None,
        }
    }
}

/// The record being built.
#[derive(Debug)]
pub struct Recorder {
    left: usize,
    prompts: Vec<Value>,
    rounds: Vec<Round>,
}

impl Recorder {
    /// A record starting with the two prompts.
    pub fn new(system: &str, user: &str) -> Self {
        let mut r = Self { left: MAX_RECORD_CHARS, prompts: Vec::new(), rounds: Vec::new() };
        let system = r.keep(system, PROMPT_CHARS);
        let user = r.keep(user, PROMPT_CHARS);
        r.prompts = vec![json!({"role": "system", "content": system}), json!({"role": "user", "content": user})];
        r
    }

    /// `text` clipped to `max` characters and to what the record has left.
    pub fn keep(&mut self, text: &str, max: usize) -> String {
        let kept = clip(text, max.min(self.left));
        self.left = self.left.saturating_sub(kept.chars().count());
        kept
    }

    /// Adds a round.
    pub fn push(&mut self, round: Round) {
        self.rounds.push(round);
    }

    /// The last round's output as recorded.
    pub fn last_output(&self) -> String {
        self.rounds
            .last()
            .map(|r| json!({"content": r.content, "tool_calls": r.tool_calls}).to_string())
            .unwrap_or_default()
    }

    /// The result's output: the validated answer and how it was reached.
    pub fn finish(self, answer: Value, model: &str, provider: &str, last: &ChatReply, usage: Usage) -> Value {
        json!({
            "answer": answer,
            "model": model,
            "provider": provider,
            "response_model": last.model,
            "finish_reason": last.finish_reason,
            "rounds": self.rounds.len(),
            "usage": {
                "input_tokens": usage.input_tokens,
                "output_tokens": usage.output_tokens,
                "total_tokens": usage.total(),
            },
            "prompts": self.prompts,
            "transcript": self.rounds,
        })
    }
}

/// The span of one model call, `chat {model}`, with the request's GenAI
/// attributes and the messages added since the previous call.
pub fn chat_span(
    provider: &str,
    model: &str,
    request: &ChatRequest,
    new_messages: &[Value],
    round: u32,
) -> tracing::Span {
    let input = clip(&Value::Array(new_messages.to_vec()).to_string(), SPAN_CHARS);
    tracing::info_span!(
        "chat",
        otel.name = %format!("chat {model}"),
        otel.kind = "client",
        otel.status_code = Empty,
        gen_ai.operation.name = "chat",
        gen_ai.provider.name = %provider,
        gen_ai.request.model = %model,
        gen_ai.request.temperature = request.temperature,
        gen_ai.request.max_tokens = request.max_tokens,
        gen_ai.input.messages = %input,
        gen_ai.output.messages = Empty,
        gen_ai.response.id = Empty,
        gen_ai.response.model = Empty,
        gen_ai.response.finish_reasons = Empty,
        gen_ai.usage.input_tokens = Empty,
        gen_ai.usage.output_tokens = Empty,
        error.type = Empty,
        shoal.llm.round = round,
    )
}

/// Records the answer (or the failure) of a call on its span.
pub fn finish_chat_span(span: &tracing::Span, reply: Option<&ChatReply>, error: Option<&CallError>) {
    if let Some(reply) = reply {
        if let Some(id) = &reply.id {
            span.record("gen_ai.response.id", id.as_str());
        }
        if let Some(model) = &reply.model {
            span.record("gen_ai.response.model", model.as_str());
        }
        let reasons: Vec<&str> = reply.finish_reason.as_deref().into_iter().collect();
        span.record("gen_ai.response.finish_reasons", json!(reasons).to_string().as_str());
        span.record("gen_ai.usage.input_tokens", reply.usage.input_tokens);
        span.record("gen_ai.usage.output_tokens", reply.usage.output_tokens);
        let output = json!([{"role": "assistant", "content": reply.content, "tool_calls": reply.tool_calls}]);
        span.record("gen_ai.output.messages", clip(&output.to_string(), SPAN_CHARS).as_str());
    }
    if let Some(error) = error {
        let kind = match error {
            CallError::Timeout(_) => "timeout",
            CallError::Status { status, .. } => &status.to_string(),
            _ => "call_failed",
        };
        span.record("error.type", kind);
        span.record("otel.status_code", "ERROR");
    }
}

/// The span of one tool execution, `execute_tool {name}`.
pub fn tool_span(name: &str, call_id: &str, arguments: &str) -> tracing::Span {
    let name = clip(name, 100);
    tracing::info_span!(
        "execute_tool",
        otel.name = %format!("execute_tool {name}"),
        otel.kind = "internal",
        otel.status_code = Empty,
        gen_ai.operation.name = "execute_tool",
        gen_ai.tool.name = %name,
        gen_ai.tool.type = "function",
        gen_ai.tool.call.id = %clip(call_id, 100),
        gen_ai.tool.call.arguments = %clip(arguments, ITEM_CHARS),
        gen_ai.tool.call.result = Empty,
        error.type = Empty,
    )
}
