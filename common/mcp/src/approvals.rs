//! The approval tools (`docs/approval.md`): list the commands waiting for a
//! person's approval, approve one, reject one. Deciding needs an admin
//! token, like `issue_command`; the API checks that the approval is still
//! pending and records who decided.

use rmcp::handler::server::wrapper::Parameters;
use rmcp::model::CallToolResult;
use rmcp::service::RequestContext;
use rmcp::{ErrorData as McpError, RoleServer, schemars, tool, tool_router};
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::client::Caller;
use crate::tools::ShoalTools;

/// An approval's status.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum ApprovalStatus {
    /// Waiting for a decision.
    Pending,
    /// Approved: the command was issued.
    Approved,
    /// Rejected: the command was not issued.
    Rejected,
    /// Its deadline passed first: the command was not issued.
    Expired,
}

/// `list_approvals`' input.
#[derive(Debug, Deserialize, schemars::JsonSchema)]
pub struct ListApprovals {
    /// Only approvals in this status (`pending` for those waiting for a decision).
    pub status: Option<ApprovalStatus>,
    /// Only the commands of this key (a symbol, account or device).
    pub key: Option<String>,
    /// At most this many.
    pub limit: Option<u32>,
}

/// `approve_command`'s and `reject_command`'s input.
#[derive(Debug, Deserialize, schemars::JsonSchema)]
pub struct DecideCommand {
    /// The id of the command waiting for approval (from list_approvals).
    pub id: String,
    /// Why: recorded with the decision.
    pub reason: Option<String>,
}

fn text(choice: impl Serialize) -> Option<String> {
    match serde_json::to_value(choice) {
        Ok(serde_json::Value::String(name)) => Some(name),
        _ => None,
    }
}

#[tool_router(router = approval_router, vis = "pub(crate)")]
impl ShoalTools {
    #[tool(
        description = "List the commands held for a person's approval before Shoal issues them (status pending: waiting, soonest deadline first), or those approved, rejected or expired. Each shows the command (kind, key, payload), its deadline, who asked for it, and who decided.",
        output_schema = crate::schemas::listing()
    )]
    async fn list_approvals(
        &self,
        Parameters(p): Parameters<ListApprovals>,
        ctx: RequestContext<RoleServer>,
    ) -> Result<CallToolResult, McpError> {
        let query =
            [("status", p.status.and_then(text)), ("key", p.key.clone()), ("limit", p.limit.map(|l| l.to_string()))];
        self.answer(self.client().get("v1/approvals", &query, &Caller::of(&ctx)).await, "list_approvals")
    }

    #[tool(
        description = "Approve a command waiting for approval (act, not just read): Shoal then issues it with its key's next sequence number. Needs an admin token. Refused (conflict) if it was already decided or its deadline passed, naming its current status. The decision is recorded on Kafka with who decided and the reason.",
        output_schema = crate::schemas::decision()
    )]
    async fn approve_command(
        &self,
        Parameters(p): Parameters<DecideCommand>,
        ctx: RequestContext<RoleServer>,
    ) -> Result<CallToolResult, McpError> {
        self.decide(&p, "approve", &Caller::of(&ctx)).await
    }

    #[tool(
        description = "Reject a command waiting for approval: Shoal never issues it. Needs an admin token. Refused (conflict) if it was already decided or its deadline passed, naming its current status. The decision is recorded on Kafka with who decided and the reason.",
        output_schema = crate::schemas::decision()
    )]
    async fn reject_command(
        &self,
        Parameters(p): Parameters<DecideCommand>,
        ctx: RequestContext<RoleServer>,
    ) -> Result<CallToolResult, McpError> {
        self.decide(&p, "reject", &Caller::of(&ctx)).await
    }
}

impl ShoalTools {
    async fn decide(&self, p: &DecideCommand, decision: &str, caller: &Caller) -> Result<CallToolResult, McpError> {
        let path = format!("v1/approvals/{}/{decision}", crate::tools::encode(&p.id));
        let body = json!({"reason": p.reason});
        self.answer(self.client().post(&path, &body, caller).await, decision)
    }

    fn answer(
        &self,
        answer: Result<serde_json::Value, crate::client::ClientError>,
        tool: &str,
    ) -> Result<CallToolResult, McpError> {
        match answer {
            Ok(answer) => Ok(CallToolResult::structured(answer)),
            Err(error) => {
                tracing::warn!(%error, tool, "approval tool refused");
                Ok(CallToolResult::structured_error(error.to_json()))
            }
        }
    }
}
