//! `GET /v1/commands` and `GET /v1/alerts`: lists built from every shard
//! held here (not from peers).

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use serde::{Deserialize, Serialize};
use shoal_state::EntityKind;
use shoal_state::alerts::Alert;
use shoal_state::commands::Lifecycle;
use uuid::Uuid;

use super::answer::Freshness;
use crate::ApiContext;
use crate::error::ApiError;
use crate::hub::merge_docs;
use crate::hub::{EntityDoc, StateView};
use crate::params::Params;

/// The answer of `GET /v1/commands`.
#[derive(Debug, Clone, Serialize)]
pub struct CommandList {
    /// Command states (parts merged), most recently updated first.
    pub commands: Vec<serde_json::Value>,
    /// Whether more matched than listed.
    pub truncated: bool,
    /// Watermarks of every shard held here.
    pub freshness: Freshness,
    /// The instance that answered.
    pub served_by: String,
}

/// What the list reads of a command's state.
#[derive(Debug, Deserialize)]
struct Head {
    id: Uuid,
    key: String,
    status: Lifecycle,
    updated: shoal_state::freshness::Stamp,
}

/// `GET /v1/commands?key=&status=&limit=`.
pub async fn commands(State(ctx): State<ApiContext>, params: Params) -> Result<Json<CommandList>, ApiError> {
    let params = params.only(&["key", "status", "limit"])?;
    let status = params.status()?;
    let limit = params.limit(ctx.settings.max_list)?;
    let key = params.get("key");
    let view = ctx.hub.view();
    let mut found: Vec<(Head, serde_json::Value)> = by_key(&view, EntityKind::Command)
        .into_values()
        .filter_map(|docs| {
            let state = if docs.len() == 1 {
                docs[0].state.clone()
            } else {
                merge_docs(EntityKind::Command, &docs.iter().map(|d| d.state.clone()).collect::<Vec<_>>())
            };
            match Head::deserialize(&state) {
                Ok(head) => Some((head, state)),
                Err(error) => {
                    tracing::debug!(%error, "skipping a command whose state is not a command's");
                    None
                }
            }
        })
        .filter(|(head, _)| key.is_none_or(|k| head.key == k) && status.is_none_or(|s| head.status == s))
        .collect();
    found.sort_by_key(|(head, _)| std::cmp::Reverse((head.updated.at, head.id)));
    let truncated = found.len() > limit;
    found.truncate(limit);
    Ok(Json(CommandList {
        commands: found.into_iter().map(|(_, state)| state).collect(),
        truncated,
        freshness: Freshness::of_view(&view),
        served_by: ctx.instance,
    }))
}

/// The documents of `kind` grouped by key, oldest part first.
pub(super) fn by_key(view: &StateView, kind: EntityKind) -> BTreeMap<&str, Vec<&Arc<EntityDoc>>> {
    let mut groups: BTreeMap<&str, Vec<&Arc<EntityDoc>>> = BTreeMap::new();
    for doc in view.of_kind(kind) {
        groups.entry(doc.key.as_str()).or_default().push(doc);
    }
    for docs in groups.values_mut() {
        docs.sort_by(|a, b| (a.updated_at, &a.provenance).cmp(&(b.updated_at, &b.provenance)));
    }
    groups
}

/// The answer of `GET /v1/alerts`.
#[derive(Debug, Clone, Serialize)]
pub struct AlertList {
    /// Alerts, newest first.
    pub alerts: Vec<Alert>,
    /// Whether more matched than listed.
    pub truncated: bool,
    /// Watermarks of every shard held here.
    pub freshness: Freshness,
    /// The instance that answered.
    pub served_by: String,
}

/// `GET /v1/alerts?since=&severity=&limit=`: the alerts of every alerts
/// entity, flattened.
pub async fn alerts(State(ctx): State<ApiContext>, params: Params) -> Result<Json<AlertList>, ApiError> {
    let params = params.only(&["since", "severity", "limit"])?;
    let since = params.since()?;
    let limit = params.limit(ctx.settings.max_list)?;
    let severity = params.get("severity");
    let view = ctx.hub.view();
    let mut by_id: BTreeMap<Uuid, Alert> = BTreeMap::new();
    for doc in view.of_kind(EntityKind::Alerts) {
        let Some(items) = doc.state.as_array() else { continue };
        for item in items {
            match Alert::deserialize(item) {
                Ok(alert) => {
                    by_id.insert(alert.command_id, alert);
                }
                Err(error) => tracing::debug!(%error, key = %doc.key, "skipping an alert of unexpected shape"),
            }
        }
    }
    let mut found: Vec<Alert> = by_id
        .into_values()
        .filter(|a| since.is_none_or(|s| a.stamp.at >= s) && severity.is_none_or(|s| a.severity == s))
        .collect();
    found.sort_by_key(|a| std::cmp::Reverse((a.stamp.at, a.command_id)));
    let truncated = found.len() > limit;
    found.truncate(limit);
    Ok(Json(AlertList { alerts: found, truncated, freshness: Freshness::of_view(&view), served_by: ctx.instance }))
}
