//! The MCP tools: each a question to the state API, described for a model.
//!
//! Every answer is the API's own JSON, which carries where each value came
//! from (`provenance`: topic, partition, offset) and how fresh it is
//! (`updated_at`, and `freshness`: the watermark of each shard it was read
//! from), so a model can tell a stale value from a current one.

use std::sync::Arc;

use rmcp::handler::server::router::tool::ToolRouter;
use rmcp::handler::server::wrapper::Parameters;
use rmcp::model::{CallToolResult, ContentBlock, Implementation, JsonObject, ServerCapabilities, ServerConfig};
use rmcp::{ErrorData as McpError, ServerHandler, schemars, tool, tool_handler, tool_router};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::client::StateClient;

/// A kind of entity in Shoal's state.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    /// A market symbol: last trade, bars, rolling statistics, feed status.
    Symbol,
    /// A business account.
    Account,
    /// A device.
    Device,
    /// A command: what was decided, its result, its lifecycle.
    Command,
    /// The recent outcomes of one key's commands.
    Outcomes,
    /// The recent alerts of one key.
    Alerts,
}

/// `list_entities`' input.
#[derive(Debug, Deserialize, schemars::JsonSchema)]
pub struct ListEntities {
    /// The kind of entity to list.
    pub kind: Kind,
    /// At most this many keys (the server caps it).
    pub limit: Option<u32>,
}

/// `get_state`'s input.
#[derive(Debug, Deserialize, schemars::JsonSchema)]
pub struct GetState {
    /// The entity's kind.
    pub kind: Kind,
    /// The entity's key: a symbol such as "SIM-AAA", an account or device id,
    /// a command id (UUID), or the key whose outcomes or alerts are wanted.
    pub key: String,
}

/// `get_recent_alerts`' input.
#[derive(Debug, Deserialize, schemars::JsonSchema)]
pub struct RecentAlerts {
    /// Only alerts at or after this time (RFC 3339, e.g. 2026-12-05T10:00:00Z).
    pub since: Option<String>,
    /// Only alerts of this severity (for example "info", "warning", "critical").
    pub severity: Option<String>,
    /// At most this many alerts, newest first.
    pub limit: Option<u32>,
}

/// `get_command`'s input.
#[derive(Debug, Deserialize, schemars::JsonSchema)]
pub struct GetCommand {
    /// The command's id (a UUID).
    pub id: String,
}

/// A command's lifecycle status.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// Issued, no result yet.
    Issued,
    /// Its result succeeded.
    Succeeded,
    /// Its result failed.
    Failed,
    /// Its deadline passed before it ran.
    Expired,
    /// No worker skill handles its kind.
    Unsupported,
    /// Dead-lettered without a result.
    DeadLettered,
}

/// `find_commands`' input.
#[derive(Debug, Deserialize, schemars::JsonSchema)]
pub struct FindCommands {
    /// Only the commands of this key (a symbol, account or device).
    pub key: Option<String>,
    /// Only commands in this status.
    pub status: Option<Status>,
    /// At most this many commands.
    pub limit: Option<u32>,
}

/// A summary's form.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Format {
    /// One compact line an item.
    Text,
    /// The same as a JSON document.
    Json,
}

/// `summarize`' input.
#[derive(Debug, Deserialize, schemars::JsonSchema)]
pub struct Summarize {
    /// Only entities of this kind (with `keys`: only those keys of this kind); leave both out for everything.
    pub kind: Option<Kind>,
    /// Only the entities with these keys (e.g. ["SIM-AAA", "A-1"]); a symbol's key also names its outcomes and alerts.
    pub keys: Option<Vec<String>>,
    /// The most tokens the summary may use (default 1000, at least 50).
    pub max_tokens: Option<u32>,
    /// "text" (default) or "json".
    pub format: Option<Format>,
}

/// What the model is told about the server when it connects.
pub const INSTRUCTIONS: &str = "Shoal's live state: market symbols, accounts and devices derived from Kafka topics, \
the commands Shoal's agents issued and their results, and recent alerts. Start with `summarize` for an overview \
within a token budget, then ask for exactly what you need. Every answer says where each value came from \
(`provenance`: topic, partition, offset) and how fresh it is (`updated_at`; `freshness` holds the watermark of \
each shard read): prefer recent values and say when one is stale. Read-only.";

/// The server: the state API's read questions as MCP tools.
#[derive(Debug, Clone)]
pub struct ShoalTools {
    client: Arc<StateClient>,
    tool_router: ToolRouter<Self>,
}

#[tool_router]
impl ShoalTools {
    /// Tools answering from the API `client` reads.
    pub fn new(client: StateClient) -> Self {
        Self { client: Arc::new(client), tool_router: Self::tool_router() }
    }

    /// The API's answer to `path?query`, or its error as a tool error the
    /// model can read (the parameter at fault and the expected form).
    async fn ask(&self, path: &str, query: &[(&str, Option<String>)]) -> Result<CallToolResult, McpError> {
        match self.client.get(path, query).await {
            Ok(answer) => Ok(CallToolResult::structured(answer)),
            Err(error) => {
                tracing::warn!(%error, path, "state API question failed");
                Ok(CallToolResult::structured_error(error.to_json()))
            }
        }
    }

    #[tool(
        description = "List the keys of one kind of entity held in Shoal's live state, with when each was last updated. Use it to discover what exists before asking for one entity.",
        output_schema = crate::schemas::listing()
    )]
    async fn list_entities(&self, Parameters(p): Parameters<ListEntities>) -> Result<CallToolResult, McpError> {
        let query = [("kind", Some(name(p.kind))), ("limit", p.limit.map(|l| l.to_string()))];
        self.ask("v1/entities", &query).await
    }

    #[tool(
        description = "Get the current state of one entity: for a symbol its last trade, bars, rolling VWAP and volatility and feed status; for a command its payload, result and lifecycle. The answer carries `updated_at`, the `provenance` of the last record applied, and `freshness` (watermarks).",
        output_schema = crate::schemas::entity()
    )]
    async fn get_state(&self, Parameters(p): Parameters<GetState>) -> Result<CallToolResult, McpError> {
        let path = format!("v1/state/{}/{}", name(p.kind), encode(&p.key));
        self.ask(&path, &[]).await
    }

    #[tool(
        description = "Get recent alerts raised by Shoal's agents (price levels crossed, anomalies), newest first, optionally since a time and of one severity.",
        output_schema = crate::schemas::listing()
    )]
    async fn get_recent_alerts(&self, Parameters(p): Parameters<RecentAlerts>) -> Result<CallToolResult, McpError> {
        let query = [("since", p.since), ("severity", p.severity), ("limit", p.limit.map(|l| l.to_string()))];
        self.ask("v1/alerts", &query).await
    }

    #[tool(
        description = "Get one command by id: what was decided and why (payload), when, its sequence number for its key, its result or dead letter, and its lifecycle status.",
        output_schema = crate::schemas::entity()
    )]
    async fn get_command(&self, Parameters(p): Parameters<GetCommand>) -> Result<CallToolResult, McpError> {
        let path = format!("v1/commands/{}", encode(&p.id));
        self.ask(&path, &[]).await
    }

    #[tool(
        description = "Find commands by key and/or lifecycle status (issued, succeeded, failed, expired, unsupported, dead_lettered), for example the failing or still pending commands of one symbol.",
        output_schema = crate::schemas::listing()
    )]
    async fn find_commands(&self, Parameters(p): Parameters<FindCommands>) -> Result<CallToolResult, McpError> {
        let query = [("key", p.key), ("status", p.status.map(name)), ("limit", p.limit.map(|l| l.to_string()))];
        self.ask("v1/commands", &query).await
    }

    #[tool(
        description = "Summarize Shoal's live state within a token budget: the most salient items first (failing or pending commands, active alerts, stale entities, largest moves), cut whole, with a header saying what was left out and the time the state is as of. Scope it to one kind or to some entities.",
        output_schema = crate::schemas::summary()
    )]
    async fn summarize(&self, Parameters(p): Parameters<Summarize>) -> Result<CallToolResult, McpError> {
        let query = [
            ("kind", p.kind.map(name)),
            ("keys", p.keys.map(|k| k.join(","))),
            ("max_tokens", p.max_tokens.map(|t| t.to_string())),
            ("format", p.format.map(name)),
        ];
        let mut result = self.ask("v1/summary", &query).await?;
        // The digest itself is what the model reads; the structured answer
        // keeps the counts, the budget and the freshness.
        if result.is_error != Some(true)
            && let Some(Value::String(summary)) = result.structured_content.as_ref().and_then(|a| a.get("summary"))
        {
            result.content = vec![ContentBlock::text(summary.clone())];
        }
        Ok(result)
    }
}

/// The read tools for callers other than MCP clients (the worker's LLM
/// skill offers them to a model as function tools).
impl ShoalTools {
    /// The read tools as OpenAI-style function tools:
    /// `{"type": "function", "function": {"name", "description", "parameters"}}`,
    /// sorted by name, with the same descriptions and input schemas MCP
    /// clients see. `issue_command` is never among them.
    pub fn function_tools() -> Vec<Value> {
        let mut tools = Self::tool_router().list_all();
        tools.retain(|t| READ_TOOLS.contains(&t.name.as_ref()));
        tools.sort_by(|a, b| a.name.cmp(&b.name));
        tools
            .into_iter()
            .map(|t| {
                serde_json::json!({
                    "type": "function",
                    "function": {
                        "name": t.name,
                        "description": t.description,
                        "parameters": Value::Object((*t.input_schema).clone()),
                    }
                })
            })
            .collect()
    }

    /// Calls read tool `name` with JSON `arguments` and returns its answer:
    /// the API's JSON, or `{"error": {...}}` naming what was wrong (an
    /// unknown tool, arguments that do not match the tool's schema, the
    /// API's refusal). Never fails: a model reads the error and can retry.
    pub async fn call_json(&self, name: &str, arguments: Value) -> Value {
        fn args<T: serde::de::DeserializeOwned>(arguments: Value) -> Result<Parameters<T>, Value> {
            serde_json::from_value(arguments)
                .map(Parameters)
                .map_err(|e| serde_json::json!({"error": {"code": "bad_arguments", "message": e.to_string()}}))
        }
        let answer = match name {
            "list_entities" => match args(arguments) {
                Ok(p) => self.list_entities(p).await,
                Err(e) => return e,
            },
            "get_state" => match args(arguments) {
                Ok(p) => self.get_state(p).await,
                Err(e) => return e,
            },
            "get_recent_alerts" => match args(arguments) {
                Ok(p) => self.get_recent_alerts(p).await,
                Err(e) => return e,
            },
            "get_command" => match args(arguments) {
                Ok(p) => self.get_command(p).await,
                Err(e) => return e,
            },
            "find_commands" => match args(arguments) {
                Ok(p) => self.find_commands(p).await,
                Err(e) => return e,
            },
            "summarize" => match args(arguments) {
                Ok(p) => self.summarize(p).await,
                Err(e) => return e,
            },
            other => {
                return serde_json::json!({"error": {
                    "code": "unknown_tool",
                    "message": format!("no tool {other:?}; the tools are {READ_TOOLS:?}"),
                }});
            }
        };
        match answer {
            Ok(result) => result.structured_content.unwrap_or(Value::Null),
            Err(error) => serde_json::json!({"error": {"code": "tool_error", "message": error.message}}),
        }
    }
}

/// The tools that only read.
pub const READ_TOOLS: [&str; 6] =
    ["find_commands", "get_command", "get_recent_alerts", "get_state", "list_entities", "summarize"];

#[tool_handler(router = self.tool_router)]
impl ServerHandler for ShoalTools {
    fn get_info(&self) -> ServerConfig {
        ServerConfig::new(ServerCapabilities::builder().enable_tools().build())
            .with_server_info(Implementation::new("shoal-mcp", env!("CARGO_PKG_VERSION")).with_title("Shoal state"))
            .with_instructions(INSTRUCTIONS)
    }
}

/// The name a choice has on the wire (its serde name), as the API takes it.
fn name(choice: impl Serialize) -> String {
    match serde_json::to_value(choice) {
        Ok(Value::String(name)) => name,
        _ => String::new(),
    }
}

/// A path segment with `/`, `?`, `#` and `%` escaped.
fn encode(segment: &str) -> String {
    let mut out = String::with_capacity(segment.len());
    for c in segment.chars() {
        match c {
            '/' | '?' | '#' | '%' | ' ' => out.push_str(&format!("%{:02X}", c as u32)),
            c => out.push(c),
        }
    }
    out
}

/// An output schema from a JSON object literal.
pub(crate) fn object(value: Value) -> Arc<JsonObject> {
    match value {
        Value::Object(map) => Arc::new(map),
        _ => Arc::new(JsonObject::new()),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn path_segments_are_escaped() {
        assert_eq!(encode("SIM-AAA"), "SIM-AAA");
        assert_eq!(encode("a/b?c#d%e f"), "a%2Fb%3Fc%23d%25e%20f");
    }

    #[test]
    fn inputs_use_the_names_the_api_accepts() {
        let p: FindCommands = serde_json::from_value(json!({"status": "dead_lettered"})).unwrap();
        assert_eq!(p.status.map(name).as_deref(), Some("dead_lettered"));
        let k: ListEntities = serde_json::from_value(json!({"kind": "outcomes"})).unwrap();
        assert_eq!(name(k.kind), "outcomes");
        assert!(serde_json::from_value::<ListEntities>(json!({"kind": "planet"})).is_err());
    }

    #[test]
    fn function_tools_are_the_read_tools_with_their_schemas() {
        let tools = ShoalTools::function_tools();
        let names: Vec<&str> = tools.iter().filter_map(|t| t["function"]["name"].as_str()).collect();
        assert_eq!(names, READ_TOOLS);
        for tool in &tools {
            assert_eq!(tool["type"], "function");
            assert_eq!(tool["function"]["parameters"]["type"], "object", "{tool}");
            assert!(tool["function"]["description"].as_str().is_some_and(|d| d.len() > 40), "{tool}");
        }
    }

    #[tokio::test]
    async fn a_call_with_bad_arguments_or_an_unknown_tool_answers_an_error() {
        let client = StateClient::new("http://127.0.0.1:9", None, std::time::Duration::from_millis(200)).unwrap();
        let tools = ShoalTools::new(client);
        let answer = tools.call_json("get_state", json!({"kind": "planet", "key": "x"})).await;
        assert_eq!(answer["error"]["code"], "bad_arguments", "{answer}");
        let answer = tools.call_json("drop_tables", json!({})).await;
        assert_eq!(answer["error"]["code"], "unknown_tool", "{answer}");
        let answer = tools.call_json("get_state", json!({"kind": "symbol", "key": "SIM-AAA"})).await;
        assert_eq!(answer["error"]["code"], "unavailable", "nothing listens on port 9: {answer}");
    }
}
