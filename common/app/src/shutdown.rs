//! Process lifecycle: one [`CancellationToken`] tree driven by SIGINT/SIGTERM.
//!
//! The first signal cancels the root token so every task stops taking new work
//! and drains; a second signal means the operator has lost patience, so the
//! process exits at once with the conventional `128 + SIGINT` status.

use std::time::Duration;

use tokio_util::sync::CancellationToken;

/// Exit status used when a second signal forces an immediate exit.
pub const FORCED_EXIT_CODE: i32 = 130;

/// Spawns a task that cancels the returned token on the first SIGINT or
/// SIGTERM and exits the process on the second.
///
/// Must be called from within a tokio runtime.
pub fn install_signal_handlers() -> CancellationToken {
    let root = CancellationToken::new();
    let token = root.clone();
    // Registered here, before the task runs: a SIGTERM that arrives while
    // the process is still starting drains it instead of killing it.
    let signals = Signals::register();
    tokio::spawn(async move {
        let mut signals = match signals {
            Ok(signals) => signals,
            Err(error) => {
                tracing::error!(%error, "cannot listen for shutdown signals; Ctrl-C will not stop gracefully");
                return;
            }
        };
        signals.next().await;
        tracing::info!("shutdown requested: draining (send the signal again to exit at once)");
        token.cancel();
        signals.next().await;
        tracing::warn!("second shutdown signal: exiting immediately");
        std::process::exit(FORCED_EXIT_CODE);
    });
    root
}

/// SIGTERM and SIGINT, listened to from the moment they are registered.
#[cfg(unix)]
struct Signals {
    terminate: tokio::signal::unix::Signal,
    interrupt: tokio::signal::unix::Signal,
}

#[cfg(unix)]
impl Signals {
    fn register() -> std::io::Result<Self> {
        use tokio::signal::unix::{SignalKind, signal};
        Ok(Self { terminate: signal(SignalKind::terminate())?, interrupt: signal(SignalKind::interrupt())? })
    }

    async fn next(&mut self) {
        tokio::select! {
            _ = self.terminate.recv() => {}
            _ = self.interrupt.recv() => {}
        }
    }
}

#[cfg(not(unix))]
struct Signals;

#[cfg(not(unix))]
impl Signals {
    fn register() -> std::io::Result<Self> {
        Ok(Self)
    }

    async fn next(&mut self) {
        let _ = tokio::signal::ctrl_c().await;
    }
}

/// Exit status used when a graceful shutdown overruns its bound.
pub const OVERRUN_EXIT_CODE: i32 = 70;

/// Guarantees the process ends within `bound` of `token` being cancelled:
/// every drain step has its own time limit, but a blocking librdkafka call
/// (a commit with the cluster gone, say) could still hold the process. A
/// plain OS thread does the waiting so a starved runtime cannot delay it.
pub fn exit_after_bound(token: &CancellationToken, bound: Duration) {
    let token = token.clone();
    tokio::spawn(async move {
        token.cancelled().await;
        std::thread::spawn(move || {
            std::thread::sleep(bound);
            tracing::error!(?bound, "graceful shutdown overran its bound; exiting now");
            std::process::exit(OVERRUN_EXIT_CODE);
        });
    });
}

/// When `token` was cancelled (shutdown requested), once it has been; for
/// spending what is left of the shutdown bound.
pub fn started_at(token: &CancellationToken) -> std::sync::Arc<std::sync::Mutex<Option<std::time::Instant>>> {
    let at = std::sync::Arc::new(std::sync::Mutex::new(None));
    let (token, slot) = (token.clone(), at.clone());
    tokio::spawn(async move {
        token.cancelled().await;
        *slot.lock().unwrap_or_else(|p| p.into_inner()) = Some(std::time::Instant::now());
    });
    at
}
