//! The OpenAPI 3.0.3 document served at `/v1/openapi.json`, written by
//! hand: every route, its parameters, and the schema of every answer it
//! can give (errors included).

mod approvals;

use serde_json::{Value, json};

use crate::params::{kind_names, status_names};
use crate::settings::ApiSettings;

/// The document, for the limits of `settings`.
pub fn document(settings: &ApiSettings) -> Value {
    json!({
        "openapi": "3.0.3",
        "info": {
            "title": "Shoal state API",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "The state derived from Shoal's topics, as held by the orchestrator instances. Every \
                answer says which instance served it and how fresh it is (the watermarks of the shards it came \
                from). A query for an entity another instance holds is forwarded to it (at most once: the \
                forwarded request carries `x-shoal-forwarded`). Errors are JSON: {\"error\": {\"code\", \
                \"message\", \"parameter\"?}}; an unknown query parameter is a 400.",
        },
        "tags": [
            {"name": "health", "description": "Open: no token needed."},
            {"name": "state", "description": "Read role."},
            {"name": "admin", "description": "Admin role."},
        ],
        "security": [{"bearer": []}],
        "paths": paths(settings),
        "components": {
            "securitySchemes": {
                "bearer": {"type": "http", "scheme": "bearer", "description": "`read:` or `admin:` token"},
            },
            "responses": responses(),
            "schemas": schemas(),
        },
    })
}

fn paths(settings: &ApiSettings) -> Value {
    let max_list = settings.max_list;
    let mut all = serde_json::Map::new();
    let summary = summary_paths(settings.summary_max_tokens);
    for part in [open_paths(), entity_paths(max_list), list_paths(max_list), summary, approvals::paths(max_list)] {
        if let Value::Object(map) = part {
            all.extend(map);
        }
    }
    Value::Object(all)
}

fn open_paths() -> Value {
    let ready = "Readiness: always ready while serving (an instance holding no shard forwards).";
    let admin = |summary: &str, schema: &str| op(summary, "admin", vec![], schema, &["400", "401", "403"]);
    json!({
        "/healthz": {"get": open_op("Liveness: the process serves.", "Health")},
        "/readyz": {"get": open_op(ready, "Ready")},
        "/v1/openapi.json": {"get": {
            "summary": "This document.", "tags": ["health"], "security": [],
            "responses": {
                "200": {"description": "The OpenAPI document.", "content": json_content(json!({"type": "object"}))},
                "400": {"$ref": "#/components/responses/BadParameter"},
            },
        }},
        "/v1/admin/shards": {"get": admin("Shards held here: watermarks and entity counts.", "Shards")},
        "/v1/admin/members": {"get": admin("This instance and its known peers.", "Members")},
        "/v1/stream": {"get": stream_op()},
        "/v1/command-requests": {"post": request_op()},
    })
}

/// `POST /v1/command-requests`.
fn request_op() -> Value {
    let error = |description: &str| json!({"description": description, "content": json_content(schema_ref("Error"))});
    let kinds = shoal_protocol::payloads::REQUESTABLE;
    json!({
        "summary": "Ask the orchestrator to issue a command (off unless api.issue_commands; rate-limited).",
        "description": "The request is checked against the kind's payload type and written to the events topic as a \
            `command_requested` event naming who asked (a fingerprint of the token); the decisions stage issues \
            the command with the key's next seq.",
        "tags": ["admin"],
        "requestBody": {"required": true, "content": json_content(json!({
            "type": "object", "required": ["kind", "key", "payload"], "additionalProperties": false,
            "properties": {
                "kind": {"type": "string", "enum": kinds},
                "key": {"type": "string", "minLength": 1, "maxLength": shoal_protocol::payloads::MAX_KEY},
                "payload": {"type": "object", "description": "The kind's payload (see the protocol's payload types)."},
                "reason": {"type": "string", "maxLength": shoal_protocol::payloads::MAX_REASON},
            },
        }))},
        "responses": {
            "202": {"description": "Written to Kafka.", "content": json_content(json!({
                "type": "object", "required": ["request_id", "status", "kind", "key", "requested_by"],
                "properties": {
                    "request_id": {"type": "string", "format": "uuid"},
                    "status": {"type": "string", "enum": ["requested"]},
                    "kind": {"type": "string"}, "key": {"type": "string"},
                    "requested_by": {"type": "object"}, "next": {"type": "string"},
                },
            }))},
            "400": {"$ref": "#/components/responses/BadParameter"},
            "401": {"$ref": "#/components/responses/Unauthorized"},
            "403": error("Not an admin token, or issuing commands is off on this instance."),
            "429": error("Over api.issue_rate_per_minute."),
            "503": error("The request could not be written to Kafka."),
        },
    })
}

/// The `limit` query parameter.
fn limit(max_list: usize) -> Value {
    json!({
        "name": "limit", "in": "query", "required": false,
        "description": format!("Most items to return (default and most: {max_list})."),
        "schema": {"type": "integer", "minimum": 1, "maximum": max_list},
    })
}

fn param(name: &str, located: &str, required: bool, schema: Value, description: &str) -> Value {
    json!({"name": name, "in": located, "required": required, "schema": schema, "description": description})
}

fn entity_paths(max_list: usize) -> Value {
    let key = param("key", "path", true, json!({"type": "string", "minLength": 1}), "Entity key.");
    let id = param("id", "path", true, json!({"type": "string", "format": "uuid"}), "Command id.");
    json!({
        "/v1/entities": {"get": op(
            "The keys of one kind held by this instance, by key.",
            "state",
            vec![param("kind", "query", true, kind_schema(), "Entity kind."), limit(max_list)],
            "EntityList",
            &["400", "401"],
        )},
        "/v1/state/{kind}/{key}": {"get": op(
            "One entity, its parts merged (forwarded to the instance holding it when not held here).",
            "state",
            vec![param("kind", "path", true, kind_schema(), "Entity kind."), key],
            "EntityAnswer",
            &["400", "401", "404"],
        )},
        "/v1/commands/{id}": {"get": op(
            "One command's lifecycle (forwarded to the instances holding its parts when not all are here).",
            "state",
            vec![id],
            "EntityAnswer",
            &["400", "401", "404"],
        )},
    })
}

fn list_paths(max_list: usize) -> Value {
    let status = json!({"type": "string", "enum": status_names()});
    let since = json!({"type": "string", "format": "date-time"});
    json!({
        "/v1/commands": {"get": op(
            "Commands held by this instance, most recently updated first.",
            "state",
            vec![
                param("key", "query", false, json!({"type": "string"}), "Only commands of this key."),
                param("status", "query", false, status, "Only commands in this status."),
                limit(max_list),
            ],
            "CommandList",
            &["400", "401"],
        )},
        "/v1/alerts": {"get": op(
            "Alerts held by this instance, newest first.",
            "state",
            vec![
                param("since", "query", false, since, "Only alerts at or after this time (RFC 3339)."),
                param("severity", "query", false, json!({"type": "string"}), "Only alerts of this severity."),
                limit(max_list),
            ],
            "AlertList",
            &["400", "401"],
        )},
    })
}

fn summary_paths(max_tokens: usize) -> Value {
    let budget = json!({
        "type": "integer", "minimum": crate::summary::MIN_TOKENS, "maximum": max_tokens,
        "default": crate::summary::DEFAULT_MAX_TOKENS.min(max_tokens),
    });
    json!({
        "/v1/summary": {"get": op(
            "A digest of the state held by this instance for a language model's context: one item per entity, \
             most salient first (failing and pending commands, alerts, feed-quality events, large moves), each \
             with its event time, age and source record, never more than max_tokens tokens as \
             api.summary_encoding counts them; items are whole, and the header says what was left out.",
            "state",
            vec![
                param("kind", "query", false, kind_schema(), "Only entities of this kind (with keys: only those keys of this kind)."),
                param("keys", "query", false, json!({"type": "string", "pattern": "[^,\\s]"}), "Only these keys, comma-separated (of any kind, or of `kind` when given)."),
                param("max_tokens", "query", false, budget, "The budget, in tokens."),
                param("format", "query", false, json!({"type": "string", "enum": ["text", "json"], "default": "text"}), "The digest's form."),
            ],
            "SummaryAnswer",
            &["400", "401"],
        )},
    })
}

fn kind_schema() -> Value {
    json!({"type": "string", "enum": kind_names()})
}

fn json_content(schema: Value) -> Value {
    json!({"application/json": {"schema": schema}})
}

fn schema_ref(name: &str) -> Value {
    json!({"$ref": format!("#/components/schemas/{name}")})
}

/// An open GET (no token) answering `schema`.
fn open_op(summary: &str, schema: &str) -> Value {
    json!({
        "summary": summary, "tags": ["health"], "security": [],
        "responses": {"200": {"description": "OK.", "content": json_content(schema_ref(schema))}},
    })
}

/// A GET needing a token, answering `schema` or the `errors` listed.
fn op(summary: &str, tag: &str, parameters: Vec<Value>, schema: &str, errors: &[&str]) -> Value {
    let mut responses = serde_json::Map::new();
    responses.insert("200".into(), json!({"description": "OK.", "content": json_content(schema_ref(schema))}));
    for status in errors {
        let name = match *status {
            "400" => "BadParameter",
            "401" => "Unauthorized",
            "403" => "Forbidden",
            _ => "NotFound",
        };
        responses.insert((*status).into(), json!({"$ref": format!("#/components/responses/{name}")}));
    }
    json!({"summary": summary, "tags": [tag], "parameters": parameters, "responses": responses})
}

fn stream_op() -> Value {
    json!({
        "summary": "WebSocket of entity changes (coalesced per entity for slow subscribers).",
        "description": "Upgrade to a WebSocket (`Connection: Upgrade`, `Upgrade: websocket`). Without the upgrade \
            headers the request is refused. A browser, which cannot set `Authorization` on a WebSocket, offers its \
            token as the subprotocol `bearer.<token as lowercase hex>` beside `shoal.stream`, which the server selects.",
        "tags": ["state"],
        "responses": {
            "101": {"description": "Switching protocols: the WebSocket is open."},
            "400": {"description": "Not a WebSocket upgrade request, or a bad parameter."},
            "401": {"$ref": "#/components/responses/Unauthorized"},
            "405": {"description": "Not a GET."},
            "426": {"description": "Upgrade required: the connection cannot be upgraded."},
            "429": {"description": "Too many subscriptions open.", "content": json_content(schema_ref("Error"))},
            "503": {"description": "Cannot subscribe now.", "content": json_content(schema_ref("Error"))},
        },
    })
}

fn responses() -> Value {
    let error = |description: &str| json!({"description": description, "content": json_content(schema_ref("Error"))});
    let mut unauthorized = error("No token, a malformed `Authorization` header, or an unknown token.");
    unauthorized["headers"] = json!({
        "WWW-Authenticate": {"description": "`Bearer realm=\"shoal\"`", "schema": {"type": "string"}},
    });
    json!({
        "BadParameter": error(
            "A parameter is missing, unknown, repeated or not of the expected form (named in `parameter`)."
        ),
        "Unauthorized": unauthorized,
        "Forbidden": error("The token's role does not allow this route (admin routes need an admin token)."),
        "NotFound": error("No such entity here nor at any peer."),
    })
}

fn schemas() -> Value {
    let mut all = serde_json::Map::new();
    for part in [common_schemas(), answer_schemas(), list_schemas(), admin_schemas(), approvals::schemas()] {
        if let Value::Object(map) = part {
            all.extend(map);
        }
    }
    Value::Object(all)
}

fn date_time(nullable: bool) -> Value {
    if nullable {
        json!({"type": "string", "format": "date-time", "nullable": true})
    } else {
        json!({"type": "string", "format": "date-time"})
    }
}

fn common_schemas() -> Value {
    json!({
        "Error": {
            "type": "object", "required": ["error"],
            "properties": {"error": {
                "type": "object", "required": ["code", "message"],
                "properties": {
                    "code": {"type": "string", "description": "bad_parameter, unauthorized, forbidden, not_found, ..."},
                    "message": {"type": "string"},
                    "parameter": {"type": "string", "description": "The parameter at fault (bad_parameter only)."},
                },
            }},
        },
        "Health": {
            "type": "object", "required": ["status"],
            "properties": {"status": {"type": "string", "enum": ["ok"]}},
        },
        "Ready": {
            "type": "object", "required": ["status", "shards", "view_version"],
            "properties": {
                "status": {"type": "string", "enum": ["ok"]},
                "shards": {"type": "integer", "minimum": 0},
                "view_version": {"type": "integer", "minimum": 0},
            },
        },
        "ShardId": {
            "type": "object", "required": ["topic", "partition"],
            "properties": {"topic": {"type": "string"}, "partition": {"type": "integer", "format": "int32"}},
        },
        "Provenance": {
            "type": "object", "required": ["topic", "partition", "offset"],
            "properties": {
                "topic": {"type": "string"},
                "partition": {"type": "integer", "format": "int32"},
                "offset": {"type": "integer", "format": "int64"},
            },
        },
        "Stamp": {
            "type": "object", "required": ["at", "provenance"],
            "properties": {"at": date_time(false), "provenance": schema_ref("Provenance")},
        },
        "Watermark": {
            "type": "object", "required": ["topic", "partition", "offset", "event_time"],
            "properties": {
                "topic": {"type": "string"},
                "partition": {"type": "integer", "format": "int32"},
                "offset": {"type": "integer", "format": "int64", "description": "Last input applied (-1 for none)."},
                "event_time": date_time(true),
            },
        },
        "Freshness": {
            "type": "object", "required": ["event_time", "watermarks"],
            "properties": {
                "event_time": date_time(true),
                "watermarks": {"type": "array", "items": schema_ref("Watermark")},
            },
        },
    })
}

fn answer_schemas() -> Value {
    json!({
        "Part": {
            "type": "object", "required": ["shard", "provenance", "updated_at", "served_by"],
            "properties": {
                "shard": schema_ref("ShardId"),
                "provenance": schema_ref("Provenance"),
                "updated_at": date_time(false),
                "served_by": {"type": "string"},
            },
        },
        "EntityAnswer": {
            "type": "object",
            "required": ["kind", "key", "updated_at", "provenance", "state", "parts", "freshness", "served_by"],
            "properties": {
                "kind": kind_schema(),
                "key": {"type": "string"},
                "updated_at": date_time(false),
                "provenance": schema_ref("Provenance"),
                "state": {"description": "The entity's state: an object (a list of alerts for kind `alerts`)."},
                "parts": {"type": "array", "items": schema_ref("Part"), "minItems": 1},
                "freshness": schema_ref("Freshness"),
                "served_by": {"type": "string"},
            },
        },
        "Listed": {
            "type": "object", "required": ["key", "updated_at", "shard"],
            "properties": {"key": {"type": "string"}, "updated_at": date_time(false), "shard": schema_ref("ShardId")},
        },
        "EntityList": {
            "type": "object", "required": ["kind", "entities", "truncated", "freshness", "served_by"],
            "properties": {
                "kind": kind_schema(),
                "entities": {"type": "array", "items": schema_ref("Listed")},
                "truncated": {"type": "boolean"},
                "freshness": schema_ref("Freshness"),
                "served_by": {"type": "string"},
            },
        },
    })
}

fn list_schemas() -> Value {
    let nullable_object = json!({"type": "object", "nullable": true});
    let nullable_string = json!({"type": "string", "nullable": true});
    json!({
        "Command": {
            "type": "object", "required": ["id", "key", "status", "updated"],
            "properties": {
                "id": {"type": "string", "format": "uuid"},
                "kind": nullable_string,
                "key": {"type": "string"},
                "seq": {"type": "integer", "minimum": 0, "nullable": true},
                "status": {"type": "string", "enum": status_names()},
                "issued": nullable_object,
                "result": nullable_object,
                "dead_letter": nullable_object,
                "timings": {"type": "object"},
                "duplicates": {"type": "integer", "minimum": 0},
                "approval": {
                    "type": "object", "nullable": true,
                    "description": "Present when the kind needs a human's approval (docs/approval.md).",
                },
                "updated": schema_ref("Stamp"),
            },
        },
        "CommandList": {
            "type": "object", "required": ["commands", "truncated", "freshness", "served_by"],
            "properties": {
                "commands": {"type": "array", "items": schema_ref("Command")},
                "truncated": {"type": "boolean"},
                "freshness": schema_ref("Freshness"),
                "served_by": {"type": "string"},
            },
        },
        "Alert": {
            "type": "object",
            "required": ["command_id", "entity", "subject", "severity", "message", "at", "provenance"],
            "properties": {
                "command_id": {"type": "string", "format": "uuid"},
                "entity": {"type": "string"},
                "subject": nullable_string,
                "severity": {"type": "string"},
                "message": nullable_string,
                "at": date_time(false),
                "provenance": schema_ref("Provenance"),
            },
        },
        "SummaryAnswer": {
            "type": "object",
            "required": ["summary", "format", "tokens", "max_tokens", "encoding", "included", "omitted", "as_of", "freshness", "served_by"],
            "properties": {
                "summary": {"type": "string", "description": "The digest: text, or a JSON document as a string."},
                "format": {"type": "string", "enum": ["text", "json"]},
                "tokens": {"type": "integer", "minimum": 0},
                "max_tokens": {"type": "integer"},
                "encoding": {"type": "string", "enum": ["o200k_base", "cl100k_base"]},
                "included": {"type": "integer", "minimum": 0},
                "omitted": {"type": "object", "additionalProperties": {"type": "integer"}},
                "as_of": date_time(true),
                "freshness": schema_ref("Freshness"),
                "served_by": {"type": "string"},
            },
        },
        "AlertList": {
            "type": "object", "required": ["alerts", "truncated", "freshness", "served_by"],
            "properties": {
                "alerts": {"type": "array", "items": schema_ref("Alert")},
                "truncated": {"type": "boolean"},
                "freshness": schema_ref("Freshness"),
                "served_by": {"type": "string"},
            },
        },
    })
}

fn admin_schemas() -> Value {
    let counts: serde_json::Map<String, Value> =
        kind_names().into_iter().map(|k| (k.to_string(), json!({"type": "integer", "minimum": 0}))).collect();
    json!({
        "ShardInfo": {
            "type": "object", "required": ["topic", "partition", "watermark", "entities"],
            "properties": {
                "topic": {"type": "string"},
                "partition": {"type": "integer", "format": "int32"},
                "watermark": schema_ref("Watermark"),
                "entities": {"type": "object", "required": kind_names(), "properties": counts},
            },
        },
        "Shards": {
            "type": "object", "required": ["shards", "view_version", "served_by"],
            "properties": {
                "shards": {"type": "array", "items": schema_ref("ShardInfo")},
                "view_version": {"type": "integer", "minimum": 0},
                "served_by": {"type": "string"},
            },
        },
        "Member": {
            "type": "object", "required": ["instance", "api_url", "shards", "local"],
            "properties": {
                "instance": {"type": "string"},
                "api_url": {"type": "string"},
                "shards": {"type": "array", "items": schema_ref("ShardId")},
                "local": {"type": "boolean"},
            },
        },
        "Members": {
            "type": "object", "required": ["members", "served_by"],
            "properties": {
                "members": {"type": "array", "items": schema_ref("Member")},
                "served_by": {"type": "string"},
            },
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every `$ref` points at something defined.
    fn refs(value: &Value, out: &mut Vec<String>) {
        match value {
            Value::Object(map) => {
                if let Some(Value::String(r)) = map.get("$ref") {
                    out.push(r.clone());
                }
                map.values().for_each(|v| refs(v, out));
            }
            Value::Array(items) => items.iter().for_each(|v| refs(v, out)),
            _ => {}
        }
    }

    #[test]
    fn references_resolve_and_open_routes_are_unsecured() {
        let doc = document(&ApiSettings::default());
        let mut found = Vec::new();
        refs(&doc, &mut found);
        assert!(!found.is_empty());
        for r in found {
            let pointer = r.trim_start_matches('#');
            assert!(doc.pointer(pointer).is_some(), "{r} is not defined");
        }
        for open in ["/healthz", "/readyz", "/v1/openapi.json"] {
            assert_eq!(doc["paths"][open]["get"]["security"], json!([]), "{open}");
        }
        assert_eq!(doc["paths"]["/v1/entities"]["get"]["parameters"][1]["schema"]["maximum"], 1000);
    }
}
