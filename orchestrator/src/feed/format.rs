//! The feed formats ingest speaks (`feed.format`). Each format's module
//! describes itself in one [`Exchange`]: its source name, channels,
//! subscribe messages and frame parser. Adding a format is one variant of
//! [`FeedFormat`], one arm of [`FeedFormat::exchange`] and one module.

use super::protocol::{Exchange, FrameParser, Subscription};
use super::{binance, coinbase, kraken, shoal_sim};

shoal_config::choice! {
    /// `feed.format`: the wire format of the feed.
    pub enum FeedFormat {
        /// The bundled simulator's own protocol.
        ShoalSim = "shoal-sim",
        /// Binance spot public market streams.
        Binance = "binance",
        /// Coinbase Exchange public feed.
        Coinbase = "coinbase",
        /// Kraken WebSocket API v2.
        Kraken = "kraken",
    }
}

impl FeedFormat {
    /// The format's description, from its module.
    pub fn exchange(self) -> &'static Exchange {
        match self {
            Self::ShoalSim => &shoal_sim::EXCHANGE,
            Self::Binance => &binance::EXCHANGE,
            Self::Coinbase => &coinbase::EXCHANGE,
            Self::Kraken => &kraken::EXCHANGE,
        }
    }

    /// Source name written into ticks from this feed.
    pub fn source_name(self) -> &'static str {
        self.exchange().source
    }

    /// Channels the format understands.
    pub fn channels(self) -> &'static [&'static str] {
        self.exchange().channels
    }

    /// Channels subscribed when none are configured.
    pub fn default_channels(self) -> &'static [&'static str] {
        self.exchange().default_channels
    }

    /// Whether `*` (every symbol the feed offers) may be subscribed.
    pub fn accepts_every_symbol(self) -> bool {
        self.exchange().example_symbol.is_none()
    }

    /// Examples of symbols as each exchange names them, e.g. `BTCUSDT
    /// (binance), BTC-USD (coinbase)`.
    pub fn symbol_examples() -> String {
        let examples: Vec<String> = Self::ALL
            .iter()
            .filter_map(|format| format.exchange().example_symbol.map(|symbol| format!("{symbol} ({format})")))
            .collect();
        examples.join(", ")
    }

    /// The messages to send once connected.
    pub fn subscribe_messages(self, subscription: &Subscription<'_>) -> Vec<String> {
        (self.exchange().subscribe)(subscription)
    }

    /// The messages to send on shutdown, before the close handshake.
    pub fn unsubscribe_messages(self, subscription: &Subscription<'_>) -> Vec<String> {
        (self.exchange().unsubscribe)(subscription)
    }

    /// A parser for a new connection.
    pub fn parser(self) -> Box<dyn FrameParser> {
        (self.exchange().parser)()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn subscribe(format: FeedFormat, url: &str) -> Vec<String> {
        let symbols = ["BTCUSDT".to_owned()];
        let channels: Vec<String> = format.default_channels().iter().map(|c| (*c).to_owned()).collect();
        format.subscribe_messages(&Subscription { url, symbols: &symbols, channels: &channels })
    }

    #[test]
    fn subscribe_messages_follow_the_format() {
        assert!(subscribe(FeedFormat::Binance, "ws://x/ws/btcusdt@trade").is_empty());
        assert_eq!(subscribe(FeedFormat::Binance, "ws://x/ws").len(), 1);
        assert_eq!(subscribe(FeedFormat::Kraken, "ws://x/v2").len(), 2, "one per channel");
        let cb = subscribe(FeedFormat::Coinbase, "ws://x");
        assert!(cb[0].contains(r#""channels":["matches","ticker","heartbeat"]"#), "{cb:?}");
        assert_eq!(subscribe(FeedFormat::ShoalSim, "ws://x"), [r#"{"symbols":["BTCUSDT"],"type":"subscribe"}"#]);
    }

    fn unsubscribe(format: FeedFormat, url: &str) -> Vec<String> {
        let symbols = ["BTCUSDT".to_owned()];
        let channels: Vec<String> = format.default_channels().iter().map(|c| (*c).to_owned()).collect();
        format.unsubscribe_messages(&Subscription { url, symbols: &symbols, channels: &channels })
    }

    #[test]
    fn unsubscribe_messages_undo_the_subscription() {
        assert!(unsubscribe(FeedFormat::Binance, "ws://x/ws/btcusdt@trade").is_empty(), "streams named by the URL");
        assert_eq!(
            unsubscribe(FeedFormat::Binance, "ws://x/ws"),
            [r#"{"id":2,"method":"UNSUBSCRIBE","params":["btcusdt@trade","btcusdt@bookTicker"]}"#]
        );
        let kraken = unsubscribe(FeedFormat::Kraken, "ws://x/v2");
        assert_eq!(kraken.len(), 2, "one per channel");
        assert!(kraken[0].contains(r#""method":"unsubscribe""#) && kraken[0].contains(r#""channel":"trade""#));
        let cb = unsubscribe(FeedFormat::Coinbase, "ws://x");
        assert!(
            cb[0].starts_with(
                r#"{"channels":["matches","ticker","heartbeat"],"product_ids":["BTCUSDT"],"type":"unsubscribe""#
            ),
            "{cb:?}"
        );
        assert_eq!(unsubscribe(FeedFormat::ShoalSim, "ws://x"), [r#"{"symbols":["BTCUSDT"],"type":"unsubscribe"}"#]);
    }

    #[test]
    fn each_format_names_its_source_and_channels() {
        let sources: Vec<&str> = FeedFormat::ALL.iter().map(|f| f.source_name()).collect();
        assert_eq!(sources, ["shoal-sim", "binance", "coinbase", "kraken"]);
        assert_eq!(FeedFormat::Binance.default_channels(), ["trade", "bookTicker"]);
        assert_eq!(FeedFormat::Coinbase.default_channels(), ["matches", "ticker", "heartbeat"]);
        assert_eq!(FeedFormat::Kraken.default_channels(), ["trade", "ticker"]);
        assert!(FeedFormat::ShoalSim.channels().is_empty() && FeedFormat::ShoalSim.accepts_every_symbol());
        assert_eq!(FeedFormat::symbol_examples(), "BTCUSDT (binance), BTC-USD (coinbase), BTC/USD (kraken)");
    }
}
