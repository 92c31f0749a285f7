//! `GET /v1/stream`: a WebSocket of entity changes, coalesced per entity
//! for slow subscribers. Authentication is applied in front of the route
//! (see [`crate::http`]): an `Authorization: Bearer` header, or, from a
//! browser, the subprotocols `shoal.stream` and `bearer.<token as hex>`
//! (the server selects `shoal.stream`).
//!
//! # Protocol
//!
//! JSON text frames. The client sends:
//!
//! - `{"op": "subscribe", "entities": [{"kind": "symbol", "key": "SIM-A"}, {"kind": "device"}, ...]}`:
//!   an entry without `key` (or with `"key": null`) subscribes to every
//!   entity of the kind, present and future;
//! - `{"op": "unsubscribe", "entities": [...]}`: the same entries; removing
//!   a kind-wide entry leaves the keys subscribed one by one (and the other
//!   way round); unsubscribing what is not subscribed is not an error;
//! - `{"op": "ping"}`: answered with `{"type": "pong"}`.
//!
//! An entity instance is a kind, a key and the shard holding it (a kind fed
//! by several partitions, such as commands, can have one document per
//! shard): `seq`, coalescing and frames are per instance, and every entity
//! frame names its `shard` (`{"topic", "partition"}`). The server sends:
//!
//! - `{"type": "snapshot", "kind", "key", "shard", "seq": 0, "doc", "watermark"}`
//!   on subscribe, for every entity instance the new entries match that
//!   exists now and that no earlier entry matched; `doc` is the
//!   [`EntityDoc`](crate::EntityDoc) and `watermark` its shard's. A key
//!   that exists nowhere gets one snapshot with `shard`, `doc` and
//!   `watermark` `null`.
//! - `{"type": "update", "kind", "key", "shard", "seq", "doc", "missed", "watermark"}`
//!   for changes, in order per entity instance; `{"type": "removed", ...}`
//!   (same fields, `doc` `null`) when it is removed (evicted, or its shard
//!   moved to another instance). `watermark` is the shard's after the
//!   change.
//! - `{"type": "error", "code", "message"}` for a message that cannot be
//!   served; the socket stays open. Codes: `malformed_json`,
//!   `bad_message` (not an object, missing or unknown fields, wrong types),
//!   `unknown_op`, `unknown_kind`, `binary_message`, `too_many_entities`
//!   (more than [`MAX_ENTITIES`] subscription entries, keys and kinds,
//!   on one connection: the whole subscribe is refused).
//! - `{"type": "overflow", "dropped": n}`: see below.
//!
//! # `seq` and `missed`
//!
//! `seq` counts, per subscriber and entity instance, every change applied
//! to it since subscribing (the snapshot is `seq` 0), including changes
//! coalesced away; `missed` on an update is how many changes were coalesced
//! into it: the gap since the previous frame of that instance. So, without
//! a lag, the `seq` of the last frame of an instance is the number of
//! changes it had, and the sum of `missed + 1` over its updates too. After
//! a `removed` frame the instance is forgotten: if it appears again, its
//! `seq` starts again at 1.
//!
//! # Slow subscribers
//!
//! Publishing never waits for a subscriber: each connection receives the
//! hub's change batches through a broadcast channel of
//! [`CHANGE_BUFFER`](crate::hub::CHANGE_BUFFER) batches, and its task keeps
//! receiving while a frame is being written. Per connection:
//!
//! - a change to an instance that already has a change waiting replaces it
//!   (latest document wins, `missed` grows);
//! - instances with a waiting change are sent oldest first; at most
//!   `api.stream_buffer` distinct instances wait. A change to another
//!   instance when that many wait *overflows*: from then on, changes to
//!   instances not waiting are counted but not queued, while those already
//!   waiting are still sent (with their latest change). When everything
//!   queued has been written, the server sends
//!   `{"type": "overflow", "dropped": n}` (`n` changes counted but not
//!   queued) followed by an update (or `removed`) for every instance whose
//!   changes were not queued, read from the current view, with exact `seq`
//!   and `missed`;
//! - when the broadcast receiver lags (the task could not keep up with
//!   [`CHANGE_BUFFER`](crate::hub::CHANGE_BUFFER) batches), the waiting
//!   changes are dropped and, once everything queued has been written,
//!   every subscribed instance is resent from the current view as an update
//!   (or `removed` for an instance gone from it) with `"missed": null` and
//!   `"lagged": n` (the change batches lost across all shards). Its `seq`
//!   then goes up by one: it keeps increasing but no longer counts changes.
//!
//! Memory per connection is bounded: at most `api.stream_buffer` waiting
//! changes, the snapshot or resync frames of the instances subscribed
//! (references to the view's documents), and a few frames being written.
//! A client that does not read its answers (errors, pongs) is not read
//! either once 64 are waiting.
//!
//! A document read from the view can be newer than a change batch the
//! connection receives just after (both are published by the shard's owner
//! a moment apart); the newer document follows with the next change.
//!
//! # Limits and shutdown
//!
//! At most `api.max_subscriptions` connections are open at once: past
//! that, the upgrade is refused with `429` and
//! `{"error": {"code": "too_many_subscriptions", "message"}}`. Messages are
//! at most 1 MiB. A connection ends when the client leaves, when the
//! [`Hub`](crate::Hub) is dropped (it holds only a weak reference), or when
//! the [`Shutdown`] token the router carries, if any, is cancelled: the
//! server then sends a `1001 going away` close frame. Axum's graceful
//! shutdown does not wait for upgraded connections, so give the router a
//! [`Shutdown`] extension to close them with the server.

mod connection;
mod protocol;
mod subscriber;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use axum::extract::State;
use axum::extract::ws::WebSocketUpgrade;
use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Extension, Json, Router};
use tokio_util::sync::CancellationToken;

use crate::ApiContext;
use crate::error::{ErrorBody, ErrorDetail};
use crate::params::Params;
use connection::Connection;
pub use subscriber::MAX_ENTITIES;

/// The subprotocol the server selects when a client offers it: browsers
/// offer it with their token as `bearer.<hex>` (see
/// [`crate::auth::WEBSOCKET_BEARER_PREFIX`]), since they cannot set
/// `Authorization` on a WebSocket.
pub const PROTOCOL: &str = "shoal.stream";

/// Largest client message (and frame), in bytes.
pub const MAX_MESSAGE: usize = 1 << 20;

/// Cancelled when the server shuts down: open streams then close. Add it to
/// the router as an [`Extension`]; without it, streams close when the
/// client leaves or the hub is dropped.
#[derive(Debug, Clone, Default)]
pub struct Shutdown(pub CancellationToken);

/// `GET /v1/stream`.
pub fn routes() -> Router<ApiContext> {
    Router::new().route("/v1/stream", get(stream))
}

async fn stream(
    State(ctx): State<ApiContext>,
    shutdown: Option<Extension<Shutdown>>,
    params: Params,
    upgrade: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Response {
    if let Err(e) = params.only(&[]) {
        return e.into_response();
    }
    let upgrade = match upgrade {
        Ok(upgrade) => upgrade,
        Err(rejection) => return error(rejection.status(), "websocket_upgrade_required", rejection.body_text()),
    };
    let limit = ctx.settings.max_subscriptions;
    let Some(guard) = SubscriptionGuard::acquire(&ctx.subscriptions, limit) else {
        let message = format!("too many stream subscriptions open (limit {limit}); retry later");
        let mut response = error(StatusCode::TOO_MANY_REQUESTS, "too_many_subscriptions", message);
        response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        return response;
    };
    let shutdown = shutdown.map(|Extension(Shutdown(token))| token).unwrap_or_default();
    let connection = Connection::new(&ctx.hub, ctx.settings.stream_buffer, shutdown, guard);
    upgrade
        .protocols([PROTOCOL])
        .max_message_size(MAX_MESSAGE)
        .max_frame_size(MAX_MESSAGE)
        .on_failed_upgrade(|e| tracing::debug!(error = %e, "stream upgrade failed"))
        .on_upgrade(move |socket| connection.run(socket))
}

fn error(status: StatusCode, code: &str, message: String) -> Response {
    let body = ErrorBody { error: ErrorDetail { code: code.into(), message, parameter: None } };
    (status, Json(body)).into_response()
}

/// Counts one open stream in [`ApiContext::subscriptions`] while it lives.
#[derive(Debug)]
struct SubscriptionGuard(Arc<AtomicUsize>);

impl SubscriptionGuard {
    /// Counts one more, unless `limit` are open.
    fn acquire(open: &Arc<AtomicUsize>, limit: usize) -> Option<Self> {
        open.fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| (n < limit).then_some(n + 1)).ok()?;
        Some(Self(open.clone()))
    }
}

impl Drop for SubscriptionGuard {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}
