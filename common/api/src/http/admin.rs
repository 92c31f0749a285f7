//! `GET /v1/admin/shards` and `GET /v1/admin/members` (admin role).

use std::collections::BTreeMap;

use axum::Json;
use axum::extract::State;
use serde::Serialize;
use shoal_state::EntityKind;

use crate::ApiContext;
use crate::error::ApiError;
use crate::hub::{ShardId, Watermark};
use crate::params::Params;

/// One shard held here.
#[derive(Debug, Clone, Serialize)]
pub struct ShardInfo {
    /// Input topic.
    pub topic: String,
    /// Partition.
    pub partition: i32,
    /// How far its input has been applied.
    pub watermark: Watermark,
    /// Entities it holds, per kind (every kind listed).
    pub entities: BTreeMap<&'static str, usize>,
}

/// The answer of `GET /v1/admin/shards`.
#[derive(Debug, Clone, Serialize)]
pub struct Shards {
    /// Shards by topic and partition.
    pub shards: Vec<ShardInfo>,
    /// Version of the view they come from (grows with every publication).
    pub view_version: u64,
    /// The instance that answered.
    pub served_by: String,
}

/// `GET /v1/admin/shards`.
pub async fn shards(State(ctx): State<ApiContext>, params: Params) -> Result<Json<Shards>, ApiError> {
    params.only(&[])?;
    let view = ctx.hub.view();
    let shards = view
        .shards
        .values()
        .map(|s| {
            let entities = EntityKind::ALL
                .iter()
                .map(|kind| {
                    let n = s.entities.range((*kind, String::new())..).take_while(|((k, _), _)| k == kind).count();
                    (kind.as_str(), n)
                })
                .collect();
            ShardInfo { topic: s.id.topic.clone(), partition: s.id.partition, watermark: s.watermark.clone(), entities }
        })
        .collect();
    Ok(Json(Shards { shards, view_version: view.version, served_by: ctx.instance }))
}

/// One member as listed.
#[derive(Debug, Clone, Serialize)]
pub struct MemberInfo {
    /// Instance id.
    pub instance: String,
    /// Base URL of its API.
    pub api_url: String,
    /// Shards it owns.
    pub shards: Vec<ShardId>,
    /// Whether it is the instance that answered.
    pub local: bool,
}

/// The answer of `GET /v1/admin/members`.
#[derive(Debug, Clone, Serialize)]
pub struct Members {
    /// This instance first, then its peers by id.
    pub members: Vec<MemberInfo>,
    /// The instance that answered.
    pub served_by: String,
}

/// `GET /v1/admin/members`.
pub async fn members(State(ctx): State<ApiContext>, params: Params) -> Result<Json<Members>, ApiError> {
    params.only(&[])?;
    let view = ctx.hub.view();
    let mut members = vec![MemberInfo {
        instance: ctx.instance.clone(),
        api_url: ctx.settings.advertised_url(),
        shards: view.shards.keys().cloned().collect(),
        local: true,
    }];
    let mut peers = ctx.directory.peers();
    peers.sort_by(|a, b| a.instance.cmp(&b.instance));
    members.extend(peers.into_iter().map(|m| MemberInfo {
        instance: m.instance,
        api_url: m.api_url,
        shards: m.shards,
        local: false,
    }));
    Ok(Json(Members { members, served_by: ctx.instance }))
}
