//! Shoal's state query API: what the state holds, served to other tools.
//!
//! - [`hub`]: the read side. Owners of state shards publish immutable views;
//!   readers take them without blocking the writer.
//! - [`settings`]: the `[api]` section (listener, tokens, limits).
//! - [`auth`]: bearer tokens with a read and an admin role.
//! - [`http`]: the axum router (`/v1/...`), its errors and the OpenAPI
//!   document at `/v1/openapi.json`.
//! - [`stream`]: `GET /v1/stream`, a WebSocket of entity changes, coalesced
//!   per entity for slow subscribers.
//! - [`console`]: `GET /console`, the operator console (a page, its script
//!   and style, compiled in).
//! - [`members`]: which instance owns which shard, so a query for a key
//!   another instance owns is answered by forwarding it there.

#![cfg_attr(test, allow(clippy::unwrap_used))]

pub mod auth;
pub mod console;
pub mod error;
pub mod http;
pub mod hub;
pub mod members;
pub mod openapi;
pub mod params;
pub mod settings;
pub mod stream;
pub mod summary;

use std::sync::Arc;
use std::sync::atomic::AtomicUsize;

pub use crate::hub::{Change, ChangeBatch, EntityDoc, Hub, ShardId, ShardView, StateView, Watermark};
pub use crate::members::{Directory, Member, NoPeers};
pub use crate::settings::ApiSettings;

/// What every handler shares.
#[derive(Clone)]
pub struct ApiContext {
    /// The state's read side.
    pub hub: Arc<Hub>,
    /// The `[api]` section.
    pub settings: Arc<ApiSettings>,
    /// The tokens accepted (loaded once at start).
    pub tokens: Arc<auth::Tokens>,
    /// Which instance owns which shard.
    pub directory: Arc<dyn Directory>,
    /// This instance's id (answers say which instance served them).
    pub instance: String,
    /// WebSocket subscriptions open now.
    pub subscriptions: Arc<AtomicUsize>,
}

impl std::fmt::Debug for ApiContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiContext").field("instance", &self.instance).finish_non_exhaustive()
    }
}
