//! The control endpoint: a WebSocket taking JSON commands that inject
//! faults into every open feed connection, burst trades, or report stats.

use std::sync::atomic::Ordering;
use std::time::Duration;

use futures::{SinkExt, StreamExt};
use serde::Deserialize;
use serde_json::json;
use tokio::sync::{mpsc, oneshot};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_util::sync::CancellationToken;

use super::generator::BurstRequest;
use super::handshake::ClientStream;
use super::{MAX_BURST, SHUTDOWN_GRACE, Shared};

/// How long a burst command waits for every connection's report.
const BURST_REPORT_TIMEOUT: Duration = Duration::from_secs(60);

/// A fault injected through the control endpoint into every feed
/// connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Fault {
    /// Drop the TCP connection without a close handshake.
    Disconnect,
    /// Neither read nor write for this long.
    Stall(Duration),
    /// Skip (do not send) the next n data frames; they still consume their
    /// sequence numbers and trade ids.
    Gap(u64),
    /// Replace the next n data frames with malformed ones.
    Malformed(u64),
}

#[derive(Deserialize)]
struct ControlRequest {
    fault: Option<String>,
    cmd: Option<String>,
    ms: Option<u64>,
    count: Option<u64>,
}

/// The control endpoint: one JSON command per text message, one JSON reply.
pub(super) async fn control(mut ws: WebSocketStream<ClientStream>, shared: &Shared, shutdown: &CancellationToken) {
    loop {
        let message = tokio::select! {
            () = shutdown.cancelled() => {
                let _ = tokio::time::timeout(SHUTDOWN_GRACE, ws.close(None)).await;
                return;
            }
            message = ws.next() => message,
        };
        let text = match message {
            Some(Ok(Message::Text(text))) => text,
            Some(Ok(Message::Close(_))) | None | Some(Err(_)) => return,
            Some(Ok(_)) => continue,
        };
        let reply = control_command(text.as_str(), shared).await;
        if ws.send(Message::text(reply.to_string())).await.is_err() {
            return;
        }
    }
}

async fn control_command(text: &str, shared: &Shared) -> serde_json::Value {
    let request: ControlRequest = match serde_json::from_str(text) {
        Ok(r) => r,
        Err(error) => return json!({"ok": false, "error": format!("invalid command: {error}")}),
    };
    if request.cmd.as_deref() == Some("stats") {
        let s = &shared.stats;
        return json!({
            "ok": true,
            "accepted": s.accepted.load(Ordering::Relaxed),
            "open": s.open.load(Ordering::Relaxed),
            "subscribes": s.subscribes.load(Ordering::Relaxed),
            "unsubscribes": s.unsubscribes.load(Ordering::Relaxed),
            "client_closes": s.client_closes.load(Ordering::Relaxed),
            "rejected_handshakes": s.rejected_handshakes.load(Ordering::Relaxed),
            "tls_handshake_failures": s.tls_handshake_failures.load(Ordering::Relaxed),
        });
    }
    let Some(name) = request.fault.as_deref() else {
        return json!({"ok": false, "error": "expected {\"fault\": ...} or {\"cmd\": \"stats\"}"});
    };
    let count = request.count.unwrap_or(1);
    let fault = match name {
        "disconnect" => Fault::Disconnect,
        "stall" => Fault::Stall(Duration::from_millis(request.ms.unwrap_or(5_000))),
        "gap" => Fault::Gap(count),
        "malformed" => Fault::Malformed(count),
        "burst" => return burst(shared, count.min(MAX_BURST)).await,
        other => {
            return json!({
                "ok": false,
                "error": format!("unknown fault {other:?} (disconnect, stall, gap, malformed, burst)")
            });
        }
    };
    let connections = shared.faults.send(fault).unwrap_or(0);
    tracing::info!(?fault, connections, "fault injected");
    json!({"ok": true, "fault": name, "connections": connections})
}

async fn burst(shared: &Shared, count: u64) -> serde_json::Value {
    let (reports_tx, mut reports) = mpsc::channel(64);
    let (receivers_tx, receivers) = oneshot::channel();
    let request = BurstRequest { count, reports: reports_tx, receivers: receivers_tx };
    if shared.bursts.send(request).await.is_err() {
        return json!({"ok": false, "error": "the generator has stopped"});
    }
    let Ok(expected) = receivers.await else {
        return json!({"ok": false, "error": "the generator has stopped"});
    };
    let mut sent = Vec::new();
    let deadline = tokio::time::sleep(BURST_REPORT_TIMEOUT);
    tokio::pin!(deadline);
    while sent.len() < expected {
        tokio::select! {
            () = &mut deadline => break,
            report = reports.recv() => match report {
                Some(report) => sent.push(report),
                None => break,
            },
        }
    }
    let reports: Vec<serde_json::Value> = sent
        .iter()
        .map(|r| {
            let secs = r.elapsed.as_secs_f64().max(1e-9);
            json!({
                "frames": r.frames,
                "elapsed_us": u64::try_from(r.elapsed.as_micros()).unwrap_or(u64::MAX),
                "per_second": (r.frames as f64 / secs).round(),
            })
        })
        .collect();
    tracing::info!(count, connections = expected, ?reports, "burst sent");
    json!({"ok": true, "fault": "burst", "trades": count, "connections": expected, "reports": reports})
}
