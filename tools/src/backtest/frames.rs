//! Raw WebSocket frame recordings: a feed's text frames as they arrived,
//! with their receive times, replayed through the same frame parser ingest
//! uses. A frame recording keeps what a ticks recording loses (quotes,
//! heartbeats, the exchange's own framing), so a parser change can be
//! replayed against real frames.
//!
//! The file is JSON lines: a header `{"shoal_frames": 1, "format", "url",
//! "symbols", "channels", "recorded_at"}`, then one
//! `{"received_at", "text"}` per frame, in arrival order.

use std::collections::HashSet;
use std::io::{BufRead as _, Write as _};
use std::path::Path;
use std::time::Duration;

use chrono::{DateTime, Utc};
use futures::{SinkExt as _, StreamExt as _};
use serde::{Deserialize, Serialize};
use shoal_orchestrator::feed::protocol::{Parsed, Subscription};
use shoal_orchestrator::feed::{FeedFormat, FeedSettings};
use shoal_protocol::messages::MarketTick;
use tokio_tungstenite::tungstenite::Message;

/// The version written in (and required of) a frame recording's header.
pub const FRAMES_VERSION: u32 = 1;

/// A frame recording's first line.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FramesHeader {
    /// [`FRAMES_VERSION`].
    pub shoal_frames: u32,
    /// The feed's wire format: which parser replays the frames.
    pub format: FeedFormat,
    /// Where the frames came from.
    pub url: String,
    /// The symbols subscribed.
    pub symbols: Vec<String>,
    /// The channels subscribed.
    pub channels: Vec<String>,
    /// When the recording started.
    pub recorded_at: DateTime<Utc>,
}

/// One frame as it arrived.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FrameLine {
    /// When ingest would have received it (the parser's `received_at`).
    pub received_at: DateTime<Utc>,
    /// The frame's text.
    pub text: String,
}

/// Why frames could not be recorded or read.
#[derive(Debug, thiserror::Error)]
pub enum FramesError {
    /// Reading or writing the file.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// What failed.
        source: std::io::Error,
    },
    /// A line that is not what the format says.
    #[error("{path}:{line}: {message}")]
    Line {
        /// The file.
        path: String,
        /// 1-based line number.
        line: usize,
        /// What was wrong.
        message: String,
    },
    /// The feed could not be reached or dropped the connection.
    #[error("feed {url}: {message}")]
    Feed {
        /// The feed's URL.
        url: String,
        /// What happened.
        message: String,
    },
}

/// What a recording run did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FramesRecorded {
    /// Text frames written.
    pub frames: usize,
    /// Binary frames skipped (no exchange sends them for market data).
    pub binary_skipped: usize,
}

/// Connects to the feed `feed` names, subscribes as ingest does, and writes
/// its text frames to `out` until `max_frames` were written or `duration`
/// passed, whichever comes first; then unsubscribes and closes cleanly.
pub async fn record(
    feed: &FeedSettings,
    duration: Duration,
    max_frames: usize,
    out: &Path,
) -> Result<FramesRecorded, FramesError> {
    let shown = out.display().to_string();
    let io = |source| FramesError::Io { path: shown.clone(), source };
    let failed = |message: String| FramesError::Feed { url: feed.url.clone(), message };
    let mut ws = shoal_orchestrator::feed::connect(feed).await.map_err(|e| failed(e.to_string()))?;
    let channels = if feed.channels.is_empty() {
        feed.format.default_channels().iter().map(|c| (*c).to_string()).collect()
    } else {
        feed.channels.clone()
    };
    let subscription = Subscription { url: &feed.url, symbols: &feed.symbols, channels: &channels };
    for request in feed.format.subscribe_messages(&subscription) {
        ws.send(Message::text(request)).await.map_err(|e| failed(format!("subscribe failed: {e}")))?;
    }
    let mut file = std::io::BufWriter::new(std::fs::File::create(out).map_err(io)?);
    let header = FramesHeader {
        shoal_frames: FRAMES_VERSION,
        format: feed.format,
        url: feed.url.clone(),
        symbols: feed.symbols.clone(),
        channels: channels.clone(),
        recorded_at: Utc::now(),
    };
    writeln!(file, "{}", json_line(&header)).map_err(io)?;
    let mut done = FramesRecorded { frames: 0, binary_skipped: 0 };
    let deadline = tokio::time::Instant::now() + duration;
    while done.frames < max_frames {
        let next = match tokio::time::timeout_at(deadline, ws.next()).await {
            Err(_) => break,
            Ok(None) => return Err(failed(format!("closed by the server after {} frames", done.frames))),
            Ok(Some(Err(e))) => return Err(failed(format!("read failed after {} frames: {e}", done.frames))),
            Ok(Some(Ok(message))) => message,
        };
        match next {
            Message::Text(text) => {
                let line = FrameLine { received_at: Utc::now(), text: text.to_string() };
                writeln!(file, "{}", json_line(&line)).map_err(io)?;
                done.frames += 1;
            }
            Message::Binary(_) => done.binary_skipped += 1,
            Message::Close(_) => return Err(failed(format!("closed by the server after {} frames", done.frames))),
            Message::Ping(_) | Message::Pong(_) | Message::Frame(_) => {}
        }
    }
    file.flush().map_err(io)?;
    for request in feed.format.unsubscribe_messages(&subscription) {
        // Best effort: the recording is complete either way.
        let _ = ws.send(Message::text(request)).await;
    }
    let _ = tokio::time::timeout(Duration::from_secs(5), ws.close(None)).await;
    Ok(done)
}

fn json_line<T: Serialize>(value: &T) -> String {
    // Plain structs of strings, numbers and times serialise infallibly.
    serde_json::to_string(value).unwrap_or_default()
}

/// Whether `path` is a frame recording (its first line is a header).
pub fn is_frames(path: &Path) -> bool {
    let Ok(file) = std::fs::File::open(path) else { return false };
    let mut first = String::new();
    if std::io::BufReader::new(file).read_line(&mut first).is_err() {
        return false;
    }
    serde_json::from_str::<serde_json::Value>(&first).is_ok_and(|v| v.get("shoal_frames").is_some())
}

/// What replaying a frame recording gave.
#[derive(Debug, Clone, PartialEq)]
pub struct Replayed {
    /// The recording's header.
    pub header: FramesHeader,
    /// The trades, in frame order, each once.
    pub ticks: Vec<MarketTick>,
    /// Frames read.
    pub frames: usize,
    /// Frames the parser rejected (counted, as ingest counts them).
    pub undecodable: usize,
    /// Trades seen again (same source, symbol and trade id) and dropped.
    pub duplicates: usize,
}

/// Parses a frame recording with its format's parser, as ingest does on
/// one connection: the trades, in frame order, duplicates dropped.
pub fn replay(path: &Path) -> Result<Replayed, FramesError> {
    let shown = path.display().to_string();
    let io = |source| FramesError::Io { path: shown.clone(), source };
    let bad = |line: usize, message: String| FramesError::Line { path: shown.clone(), line, message };
    let file = std::fs::File::open(path).map_err(io)?;
    let mut lines = std::io::BufReader::new(file).lines().enumerate();
    let header: FramesHeader = match lines.next() {
        Some((_, line)) => {
            serde_json::from_str(&line.map_err(io)?).map_err(|e| bad(1, format!("not a header: {e}")))?
        }
        None => return Err(bad(1, "empty file: no header".into())),
    };
    if header.shoal_frames != FRAMES_VERSION {
        return Err(bad(
            1,
            format!("frame recording version {} (this build reads {FRAMES_VERSION})", header.shoal_frames),
        ));
    }
    let mut parser = header.format.parser();
    let mut out = Replayed { header, ticks: Vec::new(), frames: 0, undecodable: 0, duplicates: 0 };
    let mut seen = HashSet::new();
    let mut parsed = Vec::new();
    for (n, line) in lines {
        let line = line.map_err(io)?;
        if line.trim().is_empty() {
            continue;
        }
        let frame: FrameLine = serde_json::from_str(&line).map_err(|e| bad(n + 1, format!("not a frame: {e}")))?;
        out.frames += 1;
        parsed.clear();
        if parser.parse(&frame.text, frame.received_at, &mut parsed).is_err() {
            out.undecodable += 1;
            continue;
        }
        for item in parsed.drain(..) {
            let Parsed::Trade { tick, .. } = item else { continue };
            let id = tick.trade_id.clone().map(|t| (tick.source.clone(), tick.symbol.clone(), t));
            if let Some(id) = id
                && !seen.insert(id)
            {
                out.duplicates += 1;
                continue;
            }
            out.ticks.push(tick);
        }
    }
    Ok(out)
}
