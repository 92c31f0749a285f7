//! `GET /v1/entities`, `GET /v1/state/{kind}/{key}` and
//! `GET /v1/commands/{id}`, forwarding to peers what is not held here.

use std::sync::Arc;

use axum::extract::State;
use axum::http::{HeaderMap, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use chrono::{DateTime, Utc};
use serde::Serialize;
use shoal_state::EntityKind;

use super::answer::{EntityAnswer, Freshness, incomplete_command};
use crate::ApiContext;
use crate::error::ApiError;
use crate::hub::{EntityDoc, ShardId, StateView};
use crate::members::{FORWARDED_HEADER, HttpPeers};
use crate::params::{Params, PathParams, parse_command_id, parse_kind};

/// One entity in a list.
#[derive(Debug, Clone, Serialize)]
pub struct Listed {
    /// Key.
    pub key: String,
    /// Event time of its last change.
    pub updated_at: DateTime<Utc>,
    /// The shard holding it (the newest part's, when several do).
    pub shard: ShardId,
}

/// The answer of `GET /v1/entities`.
#[derive(Debug, Clone, Serialize)]
pub struct EntityList {
    /// Kind.
    pub kind: EntityKind,
    /// Entities by key.
    pub entities: Vec<Listed>,
    /// Whether more were held than listed.
    pub truncated: bool,
    /// Watermarks of every shard held here.
    pub freshness: Freshness,
    /// The instance that answered.
    pub served_by: String,
}

/// `GET /v1/entities?kind=&limit=`: the keys of one kind held here.
pub async fn list(State(ctx): State<ApiContext>, params: Params) -> Result<Json<EntityList>, ApiError> {
    let params = params.only(&["kind", "limit"])?;
    let kind = params.kind()?;
    let limit = params.limit(ctx.settings.max_list)?;
    let view = ctx.hub.view();
    let (entities, truncated) = list_kind(&view, kind, limit);
    Ok(Json(EntityList { kind, entities, truncated, freshness: Freshness::of_view(&view), served_by: ctx.instance }))
}

/// The first `limit` keys of `kind` across shards, by key (a key held by
/// several shards once); whether there were more.
fn list_kind(view: &StateView, kind: EntityKind, limit: usize) -> (Vec<Listed>, bool) {
    let mut heads: Vec<_> = view
        .shards
        .values()
        .map(|s| {
            s.entities
                .range((kind, String::new())..)
                .take_while(move |((k, _), _)| *k == kind)
                .map(|(_, d)| d)
                .peekable()
        })
        .collect();
    let mut out = Vec::new();
    loop {
        let Some(key) = heads.iter_mut().filter_map(|h| h.peek().map(|d| d.key.clone())).min() else {
            return (out, false);
        };
        if out.len() == limit {
            return (out, true);
        }
        let mut newest: Option<&Arc<EntityDoc>> = None;
        for head in &mut heads {
            if let Some(doc) = head.next_if(|d| d.key == key) {
                newest = Some(match newest {
                    Some(n) if (n.updated_at, &n.provenance) >= (doc.updated_at, &doc.provenance) => n,
                    _ => doc,
                });
            }
        }
        if let Some(doc) = newest {
            out.push(Listed { key, updated_at: doc.updated_at, shard: doc.shard.clone() });
        }
    }
}

/// `GET /v1/state/{kind}/{key}`.
pub async fn state(
    State(ctx): State<ApiContext>,
    Extension(peers): Extension<Arc<HttpPeers>>,
    PathParams((kind, key)): PathParams<(String, String)>,
    params: Params,
    headers: HeaderMap,
    uri: Uri,
) -> Result<Response, ApiError> {
    params.only(&[])?;
    let kind = parse_kind(&kind)?;
    answer(&ctx, &peers, kind, &key, &headers, &uri).await
}

/// `GET /v1/commands/{id}`.
pub async fn command(
    State(ctx): State<ApiContext>,
    Extension(peers): Extension<Arc<HttpPeers>>,
    PathParams(id): PathParams<String>,
    params: Params,
    headers: HeaderMap,
    uri: Uri,
) -> Result<Response, ApiError> {
    params.only(&[])?;
    let id = parse_command_id(&id)?;
    answer(&ctx, &peers, EntityKind::Command, &id, &headers, &uri).await
}

/// The entity from here; else (or, for a command missing parts, also)
/// from the peers, unless the request was forwarded already.
async fn answer(
    ctx: &ApiContext,
    peers: &HttpPeers,
    kind: EntityKind,
    key: &str,
    headers: &HeaderMap,
    uri: &Uri,
) -> Result<Response, ApiError> {
    let local = EntityAnswer::local(&ctx.hub.view(), kind, key, &ctx.instance);
    let members = if headers.contains_key(FORWARDED_HEADER) { Vec::new() } else { ctx.directory.peers() };
    let complete = local.as_ref().is_some_and(|a| kind != EntityKind::Command || !incomplete_command(&a.state));
    if complete || members.is_empty() {
        return match local {
            Some(answer) => Ok(Json(answer).into_response()),
            None => Err(ApiError::entity_not_found(kind.as_str(), key, members.len())),
        };
    }
    let path = uri.path_and_query().map_or(uri.path(), |p| p.as_str());
    // Parts of a command may be held by several instances: ask them all.
    let first_only = kind != EntityKind::Command;
    let answers = peers.ask(&members, path, headers.get(header::AUTHORIZATION), &ctx.instance, first_only).await;
    if local.is_none() && answers.len() == 1 {
        return Ok(raw_json(answers.into_iter().next().map(|a| a.body).unwrap_or_default()));
    }
    let mut all: Vec<EntityAnswer> = local.into_iter().collect();
    for peer in answers {
        match serde_json::from_slice::<EntityAnswer>(&peer.body) {
            Ok(answer) if answer.kind == kind && answer.key == key => all.push(answer),
            _ => tracing::debug!(peer = %peer.instance, "ignoring a peer's answer that is not about the entity"),
        }
    }
    match EntityAnswer::merged(all, &ctx.instance) {
        Some(answer) => Ok(Json(answer).into_response()),
        None => Err(ApiError::entity_not_found(kind.as_str(), key, members.len())),
    }
}

/// A peer's JSON answer, passed on as it is.
fn raw_json(body: axum::body::Bytes) -> Response {
    ([(header::CONTENT_TYPE, "application/json")], body).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hub::{ShardView, Watermark};
    use shoal_state::Provenance;

    fn shard(partition: i32, keys: &[(&str, i64)]) -> Arc<ShardView> {
        let id = ShardId { topic: "t".into(), partition };
        let mut entities = crate::hub::Entities::new();
        for (key, secs) in keys {
            let doc = EntityDoc {
                kind: EntityKind::Command,
                key: key.to_string(),
                shard: id.clone(),
                updated_at: DateTime::from_timestamp(*secs, 0).unwrap(),
                provenance: Provenance::new("t", partition, *secs),
                state: serde_json::json!({}),
            };
            entities.insert((EntityKind::Command, key.to_string()), Arc::new(doc));
        }
        let watermark = Watermark { topic: "t".into(), partition, offset: 9, event_time: None };
        Arc::new(ShardView { id, watermark, entities })
    }

    #[test]
    fn lists_merge_shards_by_key_and_truncate() {
        let mut view = StateView::default();
        for s in [shard(0, &[("a", 1), ("c", 5)]), shard(1, &[("b", 2), ("c", 7), ("d", 1)])] {
            view.shards.insert(s.id.clone(), s);
        }
        let (all, truncated) = list_kind(&view, EntityKind::Command, 10);
        let keys: Vec<_> = all.iter().map(|l| (l.key.as_str(), l.shard.partition)).collect();
        assert_eq!(keys, [("a", 0), ("b", 1), ("c", 1), ("d", 1)]);
        assert!(!truncated);
        let (some, truncated) = list_kind(&view, EntityKind::Command, 2);
        assert_eq!((some.len(), truncated), (2, true));
        assert!(!list_kind(&view, EntityKind::Command, 4).1);
        assert!(list_kind(&view, EntityKind::Symbol, 4).0.is_empty());
    }
}
