//! One WebSocket connection: a single task that owns its [`Subscriber`],
//! reads the client's messages and the hub's changes, and writes one frame
//! at a time. The frame being written owns the socket's sending half and
//! hands it back when done, so a slow client only delays its own frames:
//! changes keep being received (and coalesced) meanwhile.

use std::pin::Pin;
use std::sync::{Arc, Weak};
use std::time::Duration;

use axum::extract::ws::{CloseFrame, Message, WebSocket, close_code};
use futures::stream::SplitSink;
use futures::{SinkExt, StreamExt};
use tokio::sync::broadcast;
use tokio::sync::broadcast::error::{RecvError, TryRecvError};
use tokio_util::sync::CancellationToken;

use super::SubscriptionGuard;
use super::protocol::{Refusal, Request};
use super::subscriber::Subscriber;
use crate::hub::{CHANGE_BUFFER, ChangeBatch, Hub, StateView};

/// How long closing a socket may take (a stalled client cannot hold the
/// task longer).
const CLOSE_TIMEOUT: Duration = Duration::from_secs(1);

type Sink = SplitSink<WebSocket, Message>;
type Sending = Pin<Box<dyn Future<Output = (Sink, Result<(), axum::Error>)> + Send>>;

/// The sending half: idle, or owned by the frame being written.
enum Writer {
    Idle(Sink),
    Busy(Sending),
    Gone,
}

impl Writer {
    fn is_idle(&self) -> bool {
        matches!(self, Self::Idle(_))
    }

    fn start(&mut self, message: Message) {
        if let Self::Idle(mut sink) = std::mem::replace(self, Self::Gone) {
            *self = Self::Busy(Box::pin(async move {
                let sent = sink.send(message).await;
                (sink, sent)
            }));
        }
    }

    /// Resolves when the frame being written is written (never when idle).
    async fn sent(&mut self) -> Result<(), axum::Error> {
        let Self::Busy(sending) = self else { return std::future::pending().await };
        let (sink, sent) = sending.await;
        *self = Self::Idle(sink);
        sent
    }

    async fn into_sink(self) -> Option<Sink> {
        match self {
            Self::Idle(sink) => Some(sink),
            Self::Busy(sending) => {
                let (sink, sent) = sending.await;
                sent.ok().map(|()| sink)
            }
            Self::Gone => None,
        }
    }
}

/// Why a connection ends.
#[derive(Debug)]
enum End {
    /// The client closed it or went away.
    Client,
    /// Reading or writing failed.
    Failed(axum::Error),
    /// The hub is gone: the process is stopping.
    HubGone,
    /// The server is shutting down.
    Shutdown,
}

/// One connection's state, owned by its task.
#[derive(Debug)]
pub(super) struct Connection {
    /// Weak, so that an open subscription does not keep the hub (and its
    /// broadcast sender) alive: when the rest of the process drops it, the
    /// connection closes.
    hub: Weak<Hub>,
    changes: broadcast::Receiver<Arc<ChangeBatch>>,
    subscriber: Subscriber,
    shutdown: CancellationToken,
    /// Counts the connection among the open subscriptions while it lives.
    _guard: SubscriptionGuard,
}

impl Connection {
    pub(super) fn new(hub: &Arc<Hub>, buffer: usize, shutdown: CancellationToken, guard: SubscriptionGuard) -> Self {
        let changes = hub.subscribe();
        let subscriber = Subscriber::new(buffer);
        Self { hub: Arc::downgrade(hub), changes, subscriber, shutdown, _guard: guard }
    }

    /// Serves the connection until the client leaves, the hub is dropped or
    /// the server shuts down, then closes the socket.
    pub(super) async fn run(mut self, socket: WebSocket) {
        let (sink, mut incoming) = socket.split();
        let mut writer = Writer::Idle(sink);
        let shutdown = self.shutdown.clone();
        let end = loop {
            if writer.is_idle()
                && let Some(frame) = self.next_frame()
            {
                writer.start(Message::text(frame));
            }
            tokio::select! {
                biased;
                () = shutdown.cancelled() => break End::Shutdown,
                sent = writer.sent() => if let Err(e) = sent { break End::Failed(e) },
                message = incoming.next(), if self.subscriber.accepts_input() => match message {
                    Some(Ok(message)) => if !self.on_message(message) { break End::Client },
                    Some(Err(e)) => break End::Failed(e),
                    None => break End::Client,
                },
                batch = self.changes.recv() => match batch {
                    Ok(batch) => self.subscriber.apply(&batch),
                    Err(RecvError::Lagged(n)) => self.subscriber.lagged(n),
                    Err(RecvError::Closed) => break End::HubGone,
                },
            }
        };
        match &end {
            End::Failed(error) => tracing::debug!(%error, "stream subscriber's socket failed"),
            other => tracing::debug!(end = ?other, "stream subscriber disconnected"),
        }
        close(writer, &end).await;
    }

    /// Handles a client message; `false` when the client closed.
    fn on_message(&mut self, message: Message) -> bool {
        match message {
            Message::Text(text) => self.on_text(text.as_str()),
            Message::Binary(_) => self.subscriber.refuse(&Refusal::new(
                "binary_message",
                "binary messages are not read: send JSON text such as {\"op\": \"ping\"}",
            )),
            Message::Ping(_) | Message::Pong(_) => {}
            Message::Close(_) => return false,
        }
        true
    }

    fn on_text(&mut self, text: &str) {
        match Request::parse(text) {
            Ok(Request::Ping) => self.subscriber.ping(),
            Ok(Request::Subscribe(specs)) => {
                // Changes already published are in the view read next.
                self.drain();
                let view = self.hub.upgrade().map(|hub| hub.view()).unwrap_or_default();
                self.subscriber.subscribe(specs, &view);
            }
            Ok(Request::Unsubscribe(specs)) => self.subscriber.unsubscribe(&specs),
            Err(refusal) => self.subscriber.refuse(&refusal),
        }
    }

    /// The next frame; when the subscriber is due a resync, reads the view.
    fn next_frame(&mut self) -> Option<String> {
        if let Some(frame) = self.subscriber.next_frame() {
            return Some(frame);
        }
        if !self.subscriber.wants_resync() {
            return None;
        }
        self.drain();
        let view: Arc<StateView> = self.hub.upgrade()?.view();
        self.subscriber.resync(&view);
        self.subscriber.next_frame()
    }

    /// Applies the change batches received already (at most a channel's
    /// worth, so a busy hub cannot hold the task here).
    fn drain(&mut self) {
        for _ in 0..CHANGE_BUFFER {
            match self.changes.try_recv() {
                Ok(batch) => self.subscriber.apply(&batch),
                Err(TryRecvError::Lagged(n)) => self.subscriber.lagged(n),
                Err(TryRecvError::Empty | TryRecvError::Closed) => break,
            }
        }
    }
}

/// Closes the socket: with `1001 going away` when the server stops; else
/// completes the client's close handshake. Gives up after
/// [`CLOSE_TIMEOUT`].
async fn close(writer: Writer, end: &End) {
    let frame = match end {
        End::Shutdown | End::HubGone => {
            Some(CloseFrame { code: close_code::AWAY, reason: "the server is shutting down".into() })
        }
        End::Client | End::Failed(_) => None,
    };
    let closing = async move {
        let Some(mut sink) = writer.into_sink().await else { return };
        if let Some(frame) = frame {
            let _ = sink.send(Message::Close(Some(frame))).await;
        }
        let _ = sink.close().await;
    };
    if tokio::time::timeout(CLOSE_TIMEOUT, closing).await.is_err() {
        tracing::debug!("closing a stream subscriber's socket timed out");
    }
}
