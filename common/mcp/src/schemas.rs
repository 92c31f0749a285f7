//! The tools' output schemas: the shapes of the state API's answers that a
//! model relies on (the entity's own `state` is described by the API's
//! OpenAPI document, `GET /v1/openapi.json`).

use std::sync::Arc;

use rmcp::model::JsonObject;
use serde_json::{Value, json};

use crate::tools::object;

fn provenance() -> Value {
    json!({
        "type": "object",
        "description": "The Kafka record a value came from.",
        "properties": {
            "topic": {"type": "string"},
            "partition": {"type": "integer"},
            "offset": {"type": "integer"}
        },
        "required": ["topic", "partition", "offset"]
    })
}

fn freshness() -> Value {
    json!({
        "type": "object",
        "description": "How fresh the answer is: every shard it was read from has applied its input up to `event_time`; one watermark per shard.",
        "properties": {
            "event_time": {"type": ["string", "null"], "format": "date-time"},
            "watermarks": {
                "type": "array",
                "items": {
                    "type": "object",
                    "properties": {
                        "topic": {"type": "string"},
                        "partition": {"type": "integer"},
                        "offset": {"type": "integer"},
                        "event_time": {"type": ["string", "null"], "format": "date-time"}
                    },
                    "required": ["topic", "partition", "offset"]
                }
            }
        },
        "required": ["watermarks"]
    })
}

/// One entity (`get_state`, `get_command`).
pub fn entity() -> Arc<JsonObject> {
    object(json!({
        "type": "object",
        "properties": {
            "kind": {"type": "string"},
            "key": {"type": "string"},
            "updated_at": {"type": "string", "format": "date-time", "description": "When the entity last changed."},
            "provenance": provenance(),
            "state": {"type": "object", "description": "The entity's state; each value carries its own provenance where it has one."},
            "parts": {"type": "array", "description": "The shards the entity was merged from."},
            "freshness": freshness(),
            "served_by": {"type": "string", "description": "The orchestrator instance that answered."}
        },
        "required": ["kind", "key", "updated_at", "provenance", "state", "freshness"]
    }))
}

/// A list (`list_entities`, `get_recent_alerts`, `find_commands`).
pub fn listing() -> Arc<JsonObject> {
    object(json!({
        "type": "object",
        "properties": {
            "kind": {"type": "string"},
            "entities": {"type": "array", "items": {"type": "object"}},
            "alerts": {"type": "array", "items": {"type": "object"}},
            "commands": {"type": "array", "items": {"type": "object"}},
            "truncated": {"type": "boolean", "description": "More matched than the limit allowed."},
            "freshness": freshness(),
            "served_by": {"type": "string"}
        },
        "required": ["truncated", "freshness"]
    }))
}

/// A summary (`summarize`).
pub fn summary() -> Arc<JsonObject> {
    object(json!({
        "type": "object",
        "properties": {
            "summary": {"type": "string", "description": "The digest, within max_tokens."},
            "format": {"type": "string", "enum": ["text", "json"]},
            "tokens": {"type": "integer", "description": "Its tokens, counted with `encoding`."},
            "max_tokens": {"type": "integer"},
            "encoding": {"type": "string"},
            "included": {"type": "integer", "description": "Entities in the digest."},
            "omitted": {"type": "object", "description": "Entities in scope left out, by kind."},
            "as_of": {"type": ["string", "null"], "format": "date-time", "description": "The newest event time the state has applied."},
            "freshness": freshness(),
            "served_by": {"type": "string"}
        },
        "required": ["summary", "tokens", "max_tokens", "encoding", "included", "omitted", "freshness"]
    }))
}

/// An approval decision's acknowledgment (`approve_command`, `reject_command`).
pub fn decision() -> Arc<JsonObject> {
    object(json!({
        "type": "object",
        "properties": {
            "command_id": {"type": "string", "format": "uuid"},
            "decision": {"type": "string", "enum": ["approve", "reject"]},
            "status": {"type": "string", "enum": ["decided"]},
            "key": {"type": "string"},
            "decided_by": {"type": "object", "description": "Who decided, as recorded: via, role, a fingerprint of the token, the client."},
            "reason": {"type": ["string", "null"]},
            "next": {"type": "string", "description": "How to follow the command."}
        },
        "required": ["command_id", "decision", "status", "key", "decided_by"]
    }))
}

/// A command request's acknowledgment (`issue_command`).
pub fn request() -> Arc<JsonObject> {
    object(json!({
        "type": "object",
        "properties": {
            "request_id": {"type": "string", "format": "uuid", "description": "The request's id (the command_requested event's)."},
            "status": {"type": "string", "enum": ["requested"]},
            "kind": {"type": "string"},
            "key": {"type": "string"},
            "requested_by": {"type": "object", "description": "Who asked, as recorded: via, role, a fingerprint of the token, the client."},
            "next": {"type": "string", "description": "How to find the command once issued."}
        },
        "required": ["request_id", "status", "kind", "key", "requested_by"]
    }))
}
