//! The approval routes' part of the OpenAPI document (`docs/approval.md`).

use serde_json::{Value, json};

use super::{json_content, limit, op, param, schema_ref};

/// `GET /v1/approvals`, `POST /v1/approvals/{id}/approve` and `/reject`.
pub(super) fn paths(max_list: usize) -> Value {
    let statuses: Vec<&str> = shoal_state::approvals::ApprovalStatus::ALL.iter().map(|s| s.as_str()).collect();
    json!({
        "/v1/approvals": {"get": op(
            "Commands that need (or needed) a human's approval: pending ones first, by deadline; then the \
             others, most recently settled first.",
            "state",
            vec![
                param("status", "query", false, json!({"type": "string", "enum": statuses}), "Only approvals in this status."),
                param("key", "query", false, json!({"type": "string"}), "Only commands of this key."),
                limit(max_list),
            ],
            "ApprovalList",
            &["400", "401"],
        )},
        "/v1/approvals/{id}/approve": {"post": decision_op("Approve")},
        "/v1/approvals/{id}/reject": {"post": decision_op("Reject")},
    })
}

/// A decision route.
fn decision_op(verb: &str) -> Value {
    let error = |description: &str| json!({"description": description, "content": json_content(schema_ref("Error"))});
    json!({
        "summary": format!("{verb} a command waiting for approval (admin role)."),
        "description": "Checks that the command's approval is pending and its deadline not passed, then writes an \
            `approval decided` record naming who decided (a fingerprint of the token) to the approvals topic; \
            the decisions stage settles the approval and, when approved, issues the command with the key's \
            next seq.",
        "tags": ["admin"],
        "parameters": [param("id", "path", true, json!({"type": "string", "format": "uuid"}), "Command id.")],
        "requestBody": {"required": false, "content": json_content(json!({
            "type": "object", "additionalProperties": false,
            "properties": {"reason": {"type": "string", "maxLength": shoal_protocol::payloads::MAX_REASON}},
        }))},
        "responses": {
            "202": {"description": "The decision is written to Kafka.", "content": json_content(json!({
                "type": "object", "required": ["command_id", "decision", "status", "key", "decided_by"],
                "properties": {
                    "command_id": {"type": "string", "format": "uuid"},
                    "decision": {"type": "string", "enum": ["approve", "reject"]},
                    "status": {"type": "string", "enum": ["decided"]},
                    "key": {"type": "string"},
                    "decided_by": {"type": "object"},
                    "reason": {"type": "string", "nullable": true},
                    "next": {"type": "string"},
                },
            }))},
            "400": {"$ref": "#/components/responses/BadParameter"},
            "401": {"$ref": "#/components/responses/Unauthorized"},
            "403": error("Not an admin token, or approvals are off on this instance."),
            "404": error("No such command is known."),
            "409": error("The command needs no approval, or its approval is no longer pending (the message names its status)."),
            "503": error("The decision could not be written to Kafka."),
        },
    })
}

/// `ApprovalList`.
pub(super) fn schemas() -> Value {
    json!({
        "ApprovalList": {
            "type": "object", "required": ["approvals", "truncated", "freshness", "served_by"],
            "properties": {
                "approvals": {"type": "array", "items": schema_ref("Command")},
                "truncated": {"type": "boolean"},
                "freshness": schema_ref("Freshness"),
                "served_by": {"type": "string"},
            },
        },
    })
}
