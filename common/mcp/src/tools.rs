//! The MCP tools: each a question to the state API, described for a model.
//!
//! Every answer is the API's own JSON, which carries where each value came
//! from (`provenance`: topic, partition, offset) and how fresh it is
//! (`updated_at`, and `freshness`: the watermark of each shard it was read
//! from), so a model can tell a stale value from a current one.

use std::sync::Arc;

use std::time::Duration;

use rmcp::handler::server::router::tool::ToolRouter;
use rmcp::handler::server::wrapper::Parameters;
use rmcp::model::{
    CallToolResult, ContentBlock, Implementation, JsonObject, ListResourceTemplatesResult, ListResourcesResult,
    PaginatedRequestParams, ReadResourceRequestParams, ReadResourceResponse, ServerCapabilities, ServerConfig,
    SubscriptionFilter,
};
use rmcp::service::{RequestContext, SubscriptionContext};
use rmcp::{ErrorData as McpError, RoleServer, ServerHandler, schemars, tool, tool_handler, tool_router};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::client::{Caller, StateClient};
use crate::resources;

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
    /// Held until a person approves it (see list_approvals).
    PendingApproval,
    /// Approved, not issued yet.
    Approved,
    /// Rejected by a person: never issued.
    Rejected,
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

/// A command kind that may be requested.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum RequestableKind {
    /// Re-evaluate a trading strategy: payload {symbol, window_secs, prices: [decimal strings], change_bps}.
    EvaluateStrategy,
    /// Raise an alert: payload {symbol, level, previous_price, price} (decimal strings).
    RaiseAlert,
    /// Score a transaction for fraud: payload {event_id (UUID), account, amount (decimal string), currency,
    /// country, card_present?, merchant_category?}.
    ScoreTransaction,
}

/// `issue_command`'s input.
#[derive(Debug, Deserialize, schemars::JsonSchema)]
pub struct IssueCommand {
    /// The command kind.
    pub kind: RequestableKind,
    /// The entity the command is about (a symbol, account or device): its commands keep their order.
    pub key: String,
    /// The kind's payload, as described under `kind`; checked before anything is issued.
    pub payload: JsonObject,
    /// Why: recorded with the request.
    pub reason: Option<String>,
}

/// A tool's question to the state API: a path and its query.
trait Question {
    fn path(&self) -> String;
    fn query(&self) -> Vec<(&'static str, Option<String>)> {
        Vec::new()
    }
}

impl Question for ListEntities {
    fn path(&self) -> String {
        "v1/entities".into()
    }
    fn query(&self) -> Vec<(&'static str, Option<String>)> {
        vec![("kind", Some(name(self.kind))), ("limit", self.limit.map(|l| l.to_string()))]
    }
}

impl Question for GetState {
    fn path(&self) -> String {
        format!("v1/state/{}/{}", name(self.kind), encode(&self.key))
    }
}

impl Question for RecentAlerts {
    fn path(&self) -> String {
        "v1/alerts".into()
    }
    fn query(&self) -> Vec<(&'static str, Option<String>)> {
        vec![
            ("since", self.since.clone()),
            ("severity", self.severity.clone()),
            ("limit", self.limit.map(|l| l.to_string())),
        ]
    }
}

impl Question for GetCommand {
    fn path(&self) -> String {
        format!("v1/commands/{}", encode(&self.id))
    }
}

impl Question for FindCommands {
    fn path(&self) -> String {
        "v1/commands".into()
    }
    fn query(&self) -> Vec<(&'static str, Option<String>)> {
        vec![("key", self.key.clone()), ("status", self.status.map(name)), ("limit", self.limit.map(|l| l.to_string()))]
    }
}

impl Question for Summarize {
    fn path(&self) -> String {
        "v1/summary".into()
    }
    fn query(&self) -> Vec<(&'static str, Option<String>)> {
        vec![
            ("kind", self.kind.map(name)),
            ("keys", self.keys.as_ref().map(|k| k.join(","))),
            ("max_tokens", self.max_tokens.map(|t| t.to_string())),
            ("format", self.format.map(name)),
        ]
    }
}

/// What the model is told about the server when it connects.
pub const INSTRUCTIONS: &str = "Shoal's live state: market symbols, accounts and devices derived from Kafka topics, \
the commands Shoal's agents issued and their results, and recent alerts. Start with `summarize` for an overview \
within a token budget, then ask for exactly what you need. Every answer says where each value came from \
(`provenance`: topic, partition, offset) and how fresh it is (`updated_at`; `freshness` holds the watermark of \
each shard read): prefer recent values and say when one is stale. Entities are also resources \
(shoal://state/{kind}/{key}) you can subscribe to. `issue_command` acts: it needs an admin token and is off \
unless the operator enabled it.";

/// The server: the state API's read questions as MCP tools.
#[derive(Debug, Clone)]
pub struct ShoalTools {
    client: Arc<StateClient>,
    tool_router: ToolRouter<Self>,
    /// How often subscribed resources are checked for changes.
    poll: Duration,
}

#[tool_router]
impl ShoalTools {
    /// Tools answering from the API `client` reads.
    pub fn new(client: StateClient) -> Self {
        let tool_router = Self::tool_router() + Self::approval_router();
        Self { client: Arc::new(client), tool_router, poll: resources::DEFAULT_POLL }
    }

    /// The API client.
    pub(crate) fn client(&self) -> &StateClient {
        &self.client
    }

    /// The same, checking subscribed resources every `poll`.
    pub fn with_poll(mut self, poll: Duration) -> Self {
        self.poll = poll;
        self
    }

    /// The API's answer to `question` for `caller`, or its error as a tool
    /// error the model can read (the parameter at fault and the expected
    /// form).
    async fn ask(&self, question: &impl Question, caller: &Caller) -> Result<CallToolResult, McpError> {
        let path = question.path();
        match self.client.get(&path, &question.query(), caller).await {
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
    async fn list_entities(
        &self,
        Parameters(p): Parameters<ListEntities>,
        ctx: RequestContext<RoleServer>,
    ) -> Result<CallToolResult, McpError> {
        self.ask(&p, &Caller::of(&ctx)).await
    }

    #[tool(
        description = "Get the current state of one entity: for a symbol its last trade, bars, rolling VWAP and volatility and feed status; for a command its payload, result and lifecycle. The answer carries `updated_at`, the `provenance` of the last record applied, and `freshness` (watermarks).",
        output_schema = crate::schemas::entity()
    )]
    async fn get_state(
        &self,
        Parameters(p): Parameters<GetState>,
        ctx: RequestContext<RoleServer>,
    ) -> Result<CallToolResult, McpError> {
        self.ask(&p, &Caller::of(&ctx)).await
    }

    #[tool(
        description = "Get recent alerts raised by Shoal's agents (price levels crossed, anomalies), newest first, optionally since a time and of one severity.",
        output_schema = crate::schemas::listing()
    )]
    async fn get_recent_alerts(
        &self,
        Parameters(p): Parameters<RecentAlerts>,
        ctx: RequestContext<RoleServer>,
    ) -> Result<CallToolResult, McpError> {
        self.ask(&p, &Caller::of(&ctx)).await
    }

    #[tool(
        description = "Get one command by id: what was decided and why (payload), when, its sequence number for its key, its result or dead letter, and its lifecycle status.",
        output_schema = crate::schemas::entity()
    )]
    async fn get_command(
        &self,
        Parameters(p): Parameters<GetCommand>,
        ctx: RequestContext<RoleServer>,
    ) -> Result<CallToolResult, McpError> {
        self.ask(&p, &Caller::of(&ctx)).await
    }

    #[tool(
        description = "Find commands by key and/or lifecycle status (issued, succeeded, failed, expired, unsupported, dead_lettered, pending_approval, approved, rejected), for example the failing or still pending commands of one symbol.",
        output_schema = crate::schemas::listing()
    )]
    async fn find_commands(
        &self,
        Parameters(p): Parameters<FindCommands>,
        ctx: RequestContext<RoleServer>,
    ) -> Result<CallToolResult, McpError> {
        self.ask(&p, &Caller::of(&ctx)).await
    }

    #[tool(
        description = "Summarize Shoal's live state within a token budget: the most salient items first (failing or pending commands, active alerts, stale entities, largest moves), cut whole, with a header saying what was left out and the time the state is as of. Scope it to one kind or to some entities.",
        output_schema = crate::schemas::summary()
    )]
    async fn summarize(
        &self,
        Parameters(p): Parameters<Summarize>,
        ctx: RequestContext<RoleServer>,
    ) -> Result<CallToolResult, McpError> {
        let mut result = self.ask(&p, &Caller::of(&ctx)).await?;
        // The digest itself is what the model reads; the structured answer
        // keeps the counts, the budget and the freshness.
        if result.is_error != Some(true)
            && let Some(Value::String(summary)) = result.structured_content.as_ref().and_then(|a| a.get("summary"))
        {
            result.content = vec![ContentBlock::text(summary.clone())];
        }
        Ok(result)
    }

    #[tool(
        description = "Ask Shoal to issue a command (act, not just read): an alert, a strategy evaluation, a fraud score. Needs an admin token and is off unless the operator enabled it (api.issue_commands); rate-limited. The payload is checked against the kind before anything is issued; the request is recorded on Kafka with who asked, and the command is issued with the key's next sequence number. Answers the request's id; find the command with find_commands(key).",
        output_schema = crate::schemas::request()
    )]
    async fn issue_command(
        &self,
        Parameters(p): Parameters<IssueCommand>,
        ctx: RequestContext<RoleServer>,
    ) -> Result<CallToolResult, McpError> {
        let body = serde_json::json!({"kind": name(p.kind), "key": p.key, "payload": p.payload, "reason": p.reason});
        match self.client.post("v1/command-requests", &body, &Caller::of(&ctx)).await {
            Ok(answer) => Ok(CallToolResult::structured(answer)),
            Err(error) => {
                tracing::warn!(%error, key = %p.key, "issue_command refused");
                Ok(CallToolResult::structured_error(error.to_json()))
            }
        }
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
        fn args<T: serde::de::DeserializeOwned>(arguments: Value) -> Result<T, Value> {
            serde_json::from_value(arguments)
                .map_err(|e| serde_json::json!({"error": {"code": "bad_arguments", "message": e.to_string()}}))
        }
        let me = Caller::default();
        let answer = match name {
            "list_entities" => match args::<ListEntities>(arguments) {
                Ok(p) => self.ask(&p, &me).await,
                Err(e) => return e,
            },
            "get_state" => match args::<GetState>(arguments) {
                Ok(p) => self.ask(&p, &me).await,
                Err(e) => return e,
            },
            "get_recent_alerts" => match args::<RecentAlerts>(arguments) {
                Ok(p) => self.ask(&p, &me).await,
                Err(e) => return e,
            },
            "get_command" => match args::<GetCommand>(arguments) {
                Ok(p) => self.ask(&p, &me).await,
                Err(e) => return e,
            },
            "find_commands" => match args::<FindCommands>(arguments) {
                Ok(p) => self.ask(&p, &me).await,
                Err(e) => return e,
            },
            "summarize" => match args::<Summarize>(arguments) {
                Ok(p) => self.ask(&p, &me).await,
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
    async fn list_resources(
        &self,
        _request: Option<PaginatedRequestParams>,
        ctx: RequestContext<RoleServer>,
    ) -> Result<ListResourcesResult, McpError> {
        resources::list(&self.client, &Caller::of(&ctx)).await
    }

    async fn list_resource_templates(
        &self,
        _request: Option<PaginatedRequestParams>,
        _ctx: RequestContext<RoleServer>,
    ) -> Result<ListResourceTemplatesResult, McpError> {
        Ok(resources::templates())
    }

    async fn read_resource(
        &self,
        request: ReadResourceRequestParams,
        ctx: RequestContext<RoleServer>,
    ) -> Result<ReadResourceResponse, McpError> {
        resources::read(&self.client, &request.uri, &Caller::of(&ctx)).await.map(Into::into)
    }

    fn accepted_subscription_filter(&self, requested: &SubscriptionFilter) -> Option<SubscriptionFilter> {
        Some(resources::accepted(requested))
    }

    async fn listen(&self, ctx: SubscriptionContext) -> Result<(), McpError> {
        resources::watch(self.client.clone(), ctx, self.poll).await
    }

    fn get_info(&self) -> ServerConfig {
        ServerConfig::new(
            ServerCapabilities::builder().enable_tools().enable_resources().enable_resources_subscribe().build(),
        )
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
pub(crate) fn encode(segment: &str) -> String {
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
