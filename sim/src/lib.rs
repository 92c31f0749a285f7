//! `shoal-sim`: a bundled market simulator serving simulated trades over
//! WebSocket, so Shoal's demo and tests need no internet.
//!
//! Run it in-process with [`serve`] or as the `shoal-sim` binary. Prices come
//! from a deterministic, seeded random walk ([`PriceWalk`], [`Market`]); one
//! generator task produces trades for every symbol at the configured rate and
//! broadcasts them through a bounded channel to every connected client. A
//! client that falls too far behind skips the trades it missed (logged at
//! `warn` with the count) rather than growing memory.
//!
//! # Wire protocol ([`Format::Shoal`])
//!
//! All frames are JSON text frames, one object each, with a `"type"` field
//! first. Prices and sizes are JSON strings holding exact decimals.
//!
//! **Server → client on connect:**
//! ```json
//! {"type":"hello","feed":"shoal-sim","version":1,"symbols":["SIM-A","SIM-B"]}
//! ```
//! `symbols` lists every symbol the simulator trades, in configured order.
//!
//! **Client → server:**
//! ```json
//! {"type":"subscribe","symbols":["SIM-A"]}
//! {"type":"subscribe","symbols":["*"]}
//! {"type":"unsubscribe","symbols":["SIM-A"]}
//! ```
//! `"*"` stands for every symbol. Extra fields are ignored.
//!
//! * `subscribe` **replaces** the subscribed set with the known symbols
//!   requested. For each unknown symbol the server first sends
//!   `{"type":"error","message":"unknown symbol: X"}`, then answers
//!   `{"type":"subscribed","symbols":[...]}` listing the resolved, now
//!   subscribed set (configured order, no duplicates; possibly empty). Only
//!   data frames follow a `subscribed` until the client sends another request.
//! * `unsubscribe` removes the known symbols requested (errors for unknown
//!   ones as above), then answers `{"type":"unsubscribed","symbols":[...]}`
//!   listing the resolved known symbols of the request (whether or not they
//!   were subscribed).
//! * Any other text (invalid JSON, unknown `type`, missing `symbols`) is
//!   answered with `{"type":"error","message":"invalid request (...); ..."}`;
//!   a binary frame with `{"type":"error","message":"binary frames are not
//!   supported; send JSON text frames"}`. The connection stays open.
//! * Client messages and frames are limited to 64 KiB
//!   ([`MAX_CLIENT_MESSAGE_BYTES`]); a larger one closes the connection
//!   with code 1009.
//!
//! Nothing is streamed to a client before it subscribes, nor while its
//! subscribed set is empty.
//!
//! **Data frames** (server → subscribed client):
//! ```json
//! {"type":"trade","symbol":"SIM-A","seq":456,"trade_id":123,"price":"101.25","size":"0.500","side":"buy","ts":"2026-11-25T02:04:05.123456Z"}
//! {"type":"heartbeat","seq":457,"ts":"2026-11-25T02:04:05.200000Z"}
//! ```
//! * `seq`: per-connection counter of data frames (trades, heartbeats and
//!   malformed frames) sent to this client: 1 for the first, then exactly +1
//!   per data frame, so a gap means frames were lost. It is not reset by
//!   re-subscribing. Control frames (`hello`, `subscribed`, `unsubscribed`,
//!   `error`) carry no `seq`.
//! * `trade_id`: per symbol, starting at 1 (or `--first-trade-id`) and increasing by 1 per trade of
//!   that symbol; the same trade has the same id for every client. A gap in a
//!   subscribed symbol's `trade_id` means the client lagged and skipped
//!   trades (the server also logs this).
//! * `price`: exact decimal string with 2 decimal places (`"101.25"`),
//!   always ≥ `"0.01"`. `size`: exact decimal string with 3 decimal places
//!   (`"0.500"`), between `"0.001"` and `"5.000"`.
//! * `side`: `"buy"` or `"sell"`, the taker (aggressor) side.
//! * `ts`: RFC 3339 UTC with exactly six fractional digits and a `Z`; for
//!   trades the time the trade was generated (identical for all clients),
//!   for heartbeats the send time.
//! * Heartbeats are sent every second ([`HEARTBEAT_INTERVAL`]) to clients
//!   with a non-empty subscription.
//!
//! **Control:** WebSocket pings are answered with pongs. A client Close gets
//! a Close reply (proper close handshake). On shutdown the server sends
//! Close with code 1001 (going away) and reason `"simulator shutting down"`
//! and waits up to [`SHUTDOWN_GRACE`] for the client's reply.
//!
//! # Faults
//!
//! With [`Faults::malformed_every`] `= Some(n)`, every data frame whose `seq`
//! is a multiple of `n` is replaced by a malformed frame (the trade or
//! heartbeat it replaces is not sent to that client). The replacements cycle
//! through [`MalformedKind::ALL`]:
//!
//! 1. [`InvalidJson`](MalformedKind::InvalidJson): the text
//!    `{"type":"trade","symbol":` (truncated, not JSON);
//! 2. [`InvalidPrice`](MalformedKind::InvalidPrice): a complete trade frame
//!    (with its `seq`) whose `"price"` is `"abc"` (replacing a heartbeat, it
//!    uses the first subscribed symbol and `trade_id` 0);
//! 3. [`UnknownType`](MalformedKind::UnknownType):
//!    `{"type":"sim_fault","seq":N,"ts":"..."}`;
//! 4. [`BinaryGarbage`](MalformedKind::BinaryGarbage): a binary frame of
//!    [`GARBAGE_BYTES`] (not UTF-8, not JSON).
//!
//! A malformed frame consumes its `seq`: the next good frame has the next
//! number, so consumers must not treat the skipped number as a gap caused
//! by the network.
//!
//! # Exchange formats
//!
//! The same market can be served in three exchange look-alike formats,
//! chosen per connection by the URL path (`/binance...`, `/coinbase...`,
//! `/kraken...`, `/shoal...`; any other path uses [`SimConfig::format`]):
//!
//! * **Binance spot** ([`Format::Binance`]): raw streams at
//!   `/ws/<symbol>@trade|@aggTrade|@bookTicker` (symbols lower case), combined
//!   streams at `/stream?streams=a/b` wrapped as `{"stream":..,"data":..}`, and
//!   `{"method":"SUBSCRIBE","params":[..],"id":1}` answered `{"result":null,"id":1}`.
//!   Events carry `e`, `E`, `s`, `t`/`a`, `p`, `q`, `T`, `m` (buyer is maker,
//!   i.e. the taker sold) with 8-decimal strings; `bookTicker` carries `u`, `s`,
//!   `b`, `B`, `a`, `A`. Trade ids and aggregate ids equal the simulator's
//!   per-symbol trade id. The server pings every second.
//! * **Coinbase Exchange** ([`Format::Coinbase`]): `{"type":"subscribe",
//!   "product_ids":[..],"channels":["matches","ticker","heartbeat"]}` answered by a
//!   `subscriptions` message; `matches` starts with a `last_match` (the last
//!   trade, again) then `match` messages whose `side` is the **maker's** side;
//!   `ticker` carries the best bid and ask; `heartbeat` comes every second per
//!   product with `last_trade_id`. `sequence` is per product,
//!   [`COINBASE_SEQUENCE_BASE`] + trade id.
//! * **Kraken v2** ([`Format::Kraken`]): a `status` message on connect;
//!   `{"method":"subscribe","params":{"channel":"trade"|"ticker","symbol":[..]},"req_id":n}`
//!   acknowledged once per symbol; a `snapshot` (the last
//!   [`KRAKEN_SNAPSHOT_TRADES`] trades, or the current ticker) then `update`s;
//!   prices and quantities are JSON numbers; `{"channel":"heartbeat"}` every
//!   second.
//!
//! # Control endpoint and faults on demand
//!
//! A WebSocket at [`CONTROL_PATH`] takes one JSON command per message and
//! answers each with a JSON object (`"ok": true|false`). Faults apply to every
//! feed connection open at the time:
//!
//! * `{"fault":"disconnect"}`: drop the TCP connection without a close frame;
//! * `{"fault":"stall","ms":N}`: neither read nor write for N ms (pings go
//!   unanswered too);
//! * `{"fault":"gap","count":N}`: do not send the next N data frames; they still
//!   consume their sequence numbers and trade ids;
//! * `{"fault":"malformed","count":N}`: replace the next N data frames with
//!   malformed ones (cycling as above);
//! * `{"fault":"burst","count":N}`: generate N trades at once and send each
//!   subscribed connection its share as fast as the socket takes it; the reply
//!   lists each connection's `frames`, `elapsed_us` and `per_second`;
//! * `{"cmd":"stats"}`: `accepted`, `open`, `subscribes`, `unsubscribes`
//!   (requests that removed a subscription), `client_closes` (close
//!   handshakes completed by clients), `rejected_handshakes` and
//!   `tls_handshake_failures`.
//!
//! # TLS
//!
//! With [`SimConfig::tls`] set ([`TlsIdentity::load`]: a PEM certificate
//! chain and its PEM private key) every connection, the control endpoint's
//! too, is TLS first: the simulator serves `wss://`. A failed TLS handshake
//! (for example a client that does not trust the certificate and aborts
//! with an alert) is logged at `info` with the reason and counted in
//! `tls_handshake_failures`; it costs nothing else.

mod exchange;
mod server;
mod tls;
mod walk;
mod wire;

#[cfg(test)]
mod tests;

use std::collections::HashSet;

use rust_decimal::Decimal;

pub use exchange::{COINBASE_SEQUENCE_BASE, KRAKEN_SNAPSHOT_TRADES};
pub use server::{
    CONTROL_PATH, HEARTBEAT_INTERVAL, MAX_BURST, MAX_CLIENT_MESSAGE_BYTES, SHUTDOWN_CLOSE_REASON, SHUTDOWN_GRACE, serve,
};
pub use shoal_tls::{TlsError, TlsIdentity, TlsPart};
pub use walk::{
    MAX_PRICE_TICKS, Market, PRICE_DP, PriceWalk, SIZE_DP, Side, Trade, WalkParams, WalkStep, price_to_ticks,
    ticks_to_price,
};
pub use wire::{
    FEED_NAME, Format, GARBAGE_BYTES, INVALID_JSON_TEXT, MalformedKind, PROTOCOL_VERSION, UNKNOWN_TYPE, WILDCARD,
};

/// Largest accepted [`SimConfig::rate_per_symbol`].
pub const MAX_RATE_PER_SYMBOL: f64 = 1_000_000.0;

/// Simulator settings.
#[derive(Debug, Clone, PartialEq)]
pub struct SimConfig {
    /// Symbols to trade, in the order announced in `hello`. Non-empty,
    /// unique, no whitespace, not `*`.
    pub symbols: Vec<String>,
    /// Trades per second per symbol; finite, > 0, at most
    /// [`MAX_RATE_PER_SYMBOL`].
    pub rate_per_symbol: f64,
    /// Seed of the price walks; the same seed gives the same trades.
    pub seed: u64,
    /// Price every symbol starts at; > 0 with at most 2 decimal places.
    pub start_price: Decimal,
    /// Typical price step (one standard deviation), in basis points.
    pub volatility_bps: u32,
    /// Probability in `[0, 1]` that a trade includes a price jump.
    pub jump_probability: f64,
    /// Size of a price jump, in basis points (at least one tick).
    pub jump_bps: u32,
    /// Trade id of each symbol's first trade (at least 1). A restarted
    /// simulator given a higher one continues every symbol's ids upwards, as
    /// an exchange does, so a consumer that deduplicates by trade id (Shoal's
    /// ingest) does not take the new run's trades for repeats of the last's.
    pub first_trade_id: u64,
    /// Deliberate misbehaviour, for testing consumers.
    pub faults: Faults,
    /// Wire format spoken to clients whose URL path does not name one.
    pub format: Format,
    /// A handshake header every feed connection must carry (name, value);
    /// others are refused with HTTP 401. For rehearsing authenticated feeds.
    pub required_header: Option<(String, String)>,
    /// Serve `wss://` (TLS) with this certificate and key; `None` serves
    /// plain `ws://`. The control endpoint is served the same way.
    pub tls: Option<TlsIdentity>,
}

impl Default for SimConfig {
    /// The `shoal-sim` binary's defaults: four symbols `SIM-AAA`..`SIM-DDD`
    /// at 5 trades/s each, seed 42, starting at 100.00, 10 bps steps and
    /// 150 bps jumps with probability 0.002, no faults.
    fn default() -> Self {
        Self {
            symbols: ["SIM-AAA", "SIM-BBB", "SIM-CCC", "SIM-DDD"].map(String::from).to_vec(),
            rate_per_symbol: 5.0,
            seed: 42,
            start_price: Decimal::new(10_000, 2),
            volatility_bps: 10,
            jump_probability: 0.002,
            jump_bps: 150,
            first_trade_id: 1,
            faults: Faults::default(),
            format: Format::default(),
            required_header: None,
            tls: None,
        }
    }
}

/// Deliberate faults injected into the stream. The default injects none.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Faults {
    /// Every nth data frame sent to a client (every `seq` divisible by n) is
    /// replaced by a malformed frame; `None` disables. Must not be `Some(0)`.
    pub malformed_every: Option<u64>,
}

/// An invalid [`SimConfig`]. Messages name the offending field.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ConfigError {
    /// `symbols` is empty.
    #[error("symbols: at least one symbol is required")]
    NoSymbols,
    /// A symbol is empty, contains whitespace or is the wildcard `*`.
    #[error("symbols: invalid symbol {0:?} (must be non-empty, without whitespace, and not \"*\")")]
    InvalidSymbol(String),
    /// A symbol appears twice.
    #[error("symbols: duplicate symbol {0:?}")]
    DuplicateSymbol(String),
    /// `rate_per_symbol` is not finite, not positive, or too large.
    #[error("rate_per_symbol: must be a finite number > 0 and at most {MAX_RATE_PER_SYMBOL}, got {0}")]
    Rate(f64),
    /// `jump_probability` is outside `[0, 1]`.
    #[error("jump_probability: must be within [0, 1], got {0}")]
    JumpProbability(f64),
    /// `start_price` is not positive, has more than 2 decimal places, or is
    /// too large.
    #[error("start_price: must be > 0 with at most 2 decimal places and at most 10^13, got {0}")]
    StartPrice(Decimal),
    /// `faults.malformed_every` is `Some(0)`.
    #[error("malformed_every: must be at least 1")]
    MalformedEvery,
    /// `first_trade_id` is 0.
    #[error("first_trade_id: must be at least 1")]
    FirstTradeId,
}

/// Why [`serve`] failed.
#[derive(Debug, thiserror::Error)]
pub enum SimError {
    /// The configuration is invalid.
    #[error("invalid simulator configuration: {0}")]
    Config(#[from] ConfigError),
    /// The listener's local address could not be read.
    #[error("cannot read the listener's local address: {0}")]
    LocalAddr(#[source] std::io::Error),
}

impl SimConfig {
    /// Checks every field, returning the first problem found.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.symbols.is_empty() {
            return Err(ConfigError::NoSymbols);
        }
        let mut seen = HashSet::new();
        for symbol in &self.symbols {
            if symbol.is_empty() || symbol == WILDCARD || symbol.chars().any(char::is_whitespace) {
                return Err(ConfigError::InvalidSymbol(symbol.clone()));
            }
            if !seen.insert(symbol.as_str()) {
                return Err(ConfigError::DuplicateSymbol(symbol.clone()));
            }
        }
        let rate = self.rate_per_symbol;
        if !(rate.is_finite() && rate > 0.0 && rate <= MAX_RATE_PER_SYMBOL) {
            return Err(ConfigError::Rate(rate));
        }
        if !(0.0..=1.0).contains(&self.jump_probability) {
            return Err(ConfigError::JumpProbability(self.jump_probability));
        }
        if price_to_ticks(self.start_price).is_none() {
            return Err(ConfigError::StartPrice(self.start_price));
        }
        if self.faults.malformed_every == Some(0) {
            return Err(ConfigError::MalformedEvery);
        }
        if self.first_trade_id == 0 {
            return Err(ConfigError::FirstTradeId);
        }
        Ok(())
    }
}
