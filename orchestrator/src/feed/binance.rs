//! Binance spot public market streams: `<symbol>@trade`, `<symbol>@aggTrade`
//! and `<symbol>@bookTicker`, on raw (`/ws/<stream>`) or combined
//! (`/stream?streams=a/b`, events wrapped as `{"stream":..,"data":..}`)
//! URLs, or subscribed with the `SUBSCRIBE` method.
//!
//! Prices and quantities are decimal strings; `T` is the trade time in Unix
//! milliseconds; `m` says whether the buyer was the maker, so the taker
//! (Shoal's `side`) sold when it is true. Trade ids (`t`) and aggregate trade
//! ids (`a`) are consecutive per symbol, each in its own number space.

use chrono::{DateTime, Utc};
use serde::Deserialize;
use serde_json::value::RawValue;
use shoal_protocol::messages::Side;

use super::protocol::{Exchange, FrameError, Origin, Parsed, Stateless, Subscription, from_millis, level};

/// Source name written into ticks from this feed.
pub const SOURCE: &str = "binance";

/// Channels (stream types) this adapter understands.
pub const CHANNELS: [&str; 3] = ["trade", "aggTrade", "bookTicker"];

/// The Binance format.
pub(crate) const EXCHANGE: Exchange = Exchange {
    source: SOURCE,
    channels: &CHANNELS,
    default_channels: &["trade", "bookTicker"],
    example_symbol: Some("BTCUSDT"),
    subscribe,
    unsubscribe,
    parser: || Box::new(Stateless(parse)),
};

/// No request when the URL names its streams, else one `SUBSCRIBE`.
fn subscribe(to: &Subscription<'_>) -> Vec<String> {
    match url::Url::parse(to.url) {
        Ok(url) if url_names_streams(&url) => Vec::new(),
        _ => vec![subscribe_request(to.symbols, to.channels)],
    }
}

/// One `UNSUBSCRIBE` of what [`subscribe`] asked for; nothing when the URL
/// names its streams (those end with the connection).
fn unsubscribe(to: &Subscription<'_>) -> Vec<String> {
    subscribe(to).into_iter().map(|_| request("UNSUBSCRIBE", to.symbols, to.channels, 2)).collect()
}

/// Whether `url` already names its streams (`/ws/<stream>` or
/// `/stream?streams=...`), so no `SUBSCRIBE` is needed.
pub fn url_names_streams(url: &url::Url) -> bool {
    let path = url.path().trim_end_matches('/');
    let raw = path.rsplit_once("/ws/").is_some_and(|(_, rest)| !rest.is_empty());
    let combined = url.query_pairs().any(|(k, v)| k == "streams" && !v.is_empty());
    raw || combined
}

/// The `SUBSCRIBE` request for `symbols` × `channels` (stream names are lower
/// case).
pub fn subscribe_request(symbols: &[String], channels: &[String]) -> String {
    request("SUBSCRIBE", symbols, channels, 1)
}

fn request(method: &str, symbols: &[String], channels: &[String], id: u64) -> String {
    let params: Vec<String> =
        symbols.iter().flat_map(|s| channels.iter().map(move |c| format!("{}@{c}", s.to_ascii_lowercase()))).collect();
    serde_json::json!({"method": method, "params": params, "id": id}).to_string()
}

#[derive(Deserialize)]
struct Probe<'a> {
    #[serde(borrow)]
    data: Option<&'a RawValue>,
    e: Option<String>,
    u: Option<u64>,
    id: Option<serde_json::Value>,
    code: Option<i64>,
    msg: Option<String>,
}

/// A `trade` or an `aggTrade` event: the id is `t` (trade id) in the first
/// and `a` (aggregate trade id) in the second; each is read only where it
/// is the id (older `trade` events also carry an order id in `a`).
#[derive(Deserialize)]
struct Trade<'a> {
    s: String,
    #[serde(borrow)]
    t: Option<&'a RawValue>,
    #[serde(borrow)]
    a: Option<&'a RawValue>,
    p: String,
    q: String,
    #[serde(rename = "T")]
    trade_time: i64,
    m: bool,
}

#[derive(Deserialize)]
struct BookTicker {
    u: u64,
    s: String,
    b: String,
    #[serde(rename = "B")]
    bid_qty: String,
    a: String,
    #[serde(rename = "A")]
    ask_qty: String,
}

fn taker_side(buyer_is_maker: bool) -> Side {
    if buyer_is_maker { Side::Sell } else { Side::Buy }
}

/// The trade event in `text` from `channel` (`trade` or `aggTrade`).
fn trade(text: &str, channel: &str, origin: &Origin) -> Result<Parsed, FrameError> {
    let t: Trade<'_> = serde_json::from_str(text)?;
    let (id, field) = if channel == "trade" { (t.t, "t") } else { (t.a, "a") };
    let id = id
        .and_then(|raw| raw.get().parse::<u64>().ok())
        .ok_or_else(|| FrameError::Malformed(format!("missing or invalid field `{field}`")))?;
    let level = level(&t.p, &t.q)?;
    let tick = origin.trade(channel, t.s, id, level, taker_side(t.m), from_millis(t.trade_time)?);
    Ok(Parsed::Trade { tick, continuity: true })
}

/// Parses one text frame (raw or combined).
pub fn parse(text: &str, received_at: DateTime<Utc>, out: &mut Vec<Parsed>) -> Result<(), FrameError> {
    let origin = Origin { source: SOURCE, received_at };
    // Fast path for the commonest frame: one parse instead of two.
    if text.starts_with(r#"{"e":"trade","#) {
        out.push(trade(text, "trade", &origin)?);
        return Ok(());
    }
    let probe: Probe<'_> = serde_json::from_str(text)?;
    if let Some(data) = probe.data {
        // Combined stream: the event is inside `data`.
        return parse(data.get(), received_at, out);
    }
    if let Some(code) = probe.code {
        out.push(Parsed::ExchangeError(format!("code {code}: {}", probe.msg.unwrap_or_default())));
        return Ok(());
    }
    match probe.e.as_deref() {
        Some(channel @ ("trade" | "aggTrade")) => out.push(trade(text, channel, &origin)?),
        Some(other) => return Err(FrameError::UnknownType(other.to_owned())),
        None if probe.u.is_some() => {
            let b: BookTicker = serde_json::from_str(text)?;
            let (bid, ask) = (level(&b.b, &b.bid_qty)?, level(&b.a, &b.ask_qty)?);
            out.push(Parsed::Book(origin.book(b.s, bid, ask, Some(b.u), None)));
        }
        None if probe.id.is_some() => out.push(Parsed::Subscribed(format!("request {} answered", text.trim()))),
        None => return Err(FrameError::UnknownType("message without \"e\"".into())),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one(text: &str) -> Parsed {
        let mut out = Vec::new();
        parse(text, DateTime::UNIX_EPOCH, &mut out).expect("parses");
        assert_eq!(out.len(), 1);
        out.remove(0)
    }

    #[test]
    fn trade_from_the_documented_payload() {
        // The payload of Binance's "Trade Streams" documentation.
        let parsed = one(
            r#"{"e":"trade","E":1672515782136,"s":"BNBBTC","t":12345,"p":"0.001","q":"100","b":88,"a":50,"T":1672515782136,"m":true,"M":true}"#,
        );
        let Parsed::Trade { tick, continuity } = parsed else { panic!("{parsed:?}") };
        assert!(continuity);
        assert_eq!(tick.symbol, "BNBBTC");
        assert_eq!(tick.price.to_string(), "0.001");
        assert_eq!(tick.size.to_string(), "100");
        assert_eq!(tick.trade_id.as_deref(), Some("12345"));
        assert_eq!(tick.side, Some(Side::Sell), "the buyer was the maker, so the taker sold");
        assert_eq!(tick.exchange_ts.to_rfc3339(), "2022-12-31T19:43:02.136+00:00");
        assert_eq!(tick.channel.as_deref(), Some("trade"));
    }

    #[test]
    fn agg_trade_combined_and_book_ticker() {
        let parsed = one(
            r#"{"stream":"bnbbtc@aggTrade","data":{"e":"aggTrade","E":1672515782136,"s":"BNBBTC","a":12345,"p":"0.001","q":"100","f":100,"l":105,"T":1672515782136,"m":false,"M":true}}"#,
        );
        let Parsed::Trade { tick, .. } = parsed else { panic!("{parsed:?}") };
        assert_eq!(
            (tick.trade_id.as_deref(), tick.side, tick.channel.as_deref()),
            (Some("12345"), Some(Side::Buy), Some("aggTrade"))
        );
        // The payload of Binance's "Individual Symbol Book Ticker Streams".
        let parsed = one(
            r#"{"u":400900217,"s":"BNBUSDT","b":"25.35190000","B":"31.21000000","a":"25.36520000","A":"40.66000000"}"#,
        );
        let Parsed::Book(top) = parsed else { panic!("{parsed:?}") };
        assert_eq!(top.bid_price.to_string(), "25.35190000");
        assert_eq!(top.ask_size.to_string(), "40.66000000");
        assert_eq!(top.sequence, Some(400_900_217));
    }

    #[test]
    fn responses_errors_and_garbage() {
        assert!(matches!(one(r#"{"result":null,"id":1}"#), Parsed::Subscribed(_)));
        assert!(matches!(one(r#"{"code":2,"msg":"Invalid request","id":1}"#), Parsed::ExchangeError(_)));
        let mut out = Vec::new();
        assert!(matches!(parse(r#"{"e":"sim_fault"}"#, Utc::now(), &mut out), Err(FrameError::UnknownType(_))));
        assert!(
            parse(r#"{"e":"trade","E":1,"s":"X","t":1,"p":"abc","q":"1","T":1,"m":true}"#, Utc::now(), &mut out)
                .is_err()
        );
        assert!(parse(r#"{"e":"trade","s":"#, Utc::now(), &mut out).is_err());
    }

    #[test]
    fn subscribe_and_urls() {
        assert_eq!(
            subscribe_request(&["BTCUSDT".into()], &["trade".into(), "bookTicker".into()]),
            r#"{"id":1,"method":"SUBSCRIBE","params":["btcusdt@trade","btcusdt@bookTicker"]}"#
        );
        let url = |s: &str| url::Url::parse(s).expect("url");
        assert!(url_names_streams(&url("wss://stream.binance.com:9443/ws/bnbbtc@trade")));
        assert!(url_names_streams(&url("wss://stream.binance.com:9443/stream?streams=a@trade/b@trade")));
        assert!(!url_names_streams(&url("wss://stream.binance.com:9443/ws")));
        assert!(!url_names_streams(&url("ws://127.0.0.1:9001/binance/ws")));
    }
}
