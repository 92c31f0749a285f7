//! The console's routes and the stream's browser authentication, on a real
//! server: the page is public with a strict content policy, the data is
//! not, and a WebSocket client offering its token as the `bearer.<hex>`
//! subprotocol (as the page does) is let in and answered with
//! `shoal.stream`.

#![allow(clippy::unwrap_used)]

use std::sync::Arc;
use std::sync::atomic::AtomicUsize;

use futures::{SinkExt as _, StreamExt as _};
use shoal_api::auth::Tokens;
use shoal_api::{ApiContext, ApiSettings, Hub, NoPeers};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;
use tokio_util::sync::CancellationToken;

const READ: &str = "read-token-for-console-01";

async fn start() -> (std::net::SocketAddr, CancellationToken) {
    let ctx = ApiContext {
        hub: Arc::new(Hub::new()),
        settings: Arc::new(ApiSettings::default()),
        tokens: Arc::new(Tokens::parse(&format!("read:{READ}\n"), "test").unwrap()),
        directory: Arc::new(NoPeers),
        instance: "console-test".into(),
        subscriptions: Arc::new(AtomicUsize::new(0)),
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let shutdown = CancellationToken::new();
    tokio::spawn(shoal_api::http::serve(ctx, listener, shutdown.clone()));
    (addr, shutdown)
}

fn hex(text: &str) -> String {
    text.bytes().map(|b| format!("{b:02x}")).collect()
}

#[tokio::test]
async fn the_page_is_public_and_the_data_is_not() {
    let (addr, shutdown) = start().await;
    let client = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap();
    for (path, kind) in
        [("/console", "text/html"), ("/console/console.js", "text/javascript"), ("/console/console.css", "text/css")]
    {
        let response = client.get(format!("http://{addr}{path}")).send().await.unwrap();
        assert_eq!(response.status(), 200, "{path}");
        let headers = response.headers();
        assert!(headers["content-type"].to_str().unwrap().starts_with(kind), "{path}");
        assert_eq!(headers["content-security-policy"], shoal_api::console::CONTENT_SECURITY_POLICY);
        assert_eq!(headers["x-content-type-options"], "nosniff");
    }
    let response = client.get(format!("http://{addr}/console/")).send().await.unwrap();
    assert_eq!((response.status().as_u16(), response.headers()["location"].to_str().unwrap()), (308, "../console"));
    let response = client.get(format!("http://{addr}/v1/alerts")).send().await.unwrap();
    assert_eq!(response.status(), 401);
    shutdown.cancel();
}

async fn upgrade(addr: std::net::SocketAddr, protocols: &str) -> Result<(String, Option<String>), u16> {
    let mut request = format!("ws://{addr}/v1/stream").into_client_request().unwrap();
    request.headers_mut().insert("sec-websocket-protocol", protocols.parse().unwrap());
    match tokio_tungstenite::connect_async(request).await {
        Ok((mut ws, response)) => {
            let selected = response.headers().get("sec-websocket-protocol").map(|v| v.to_str().unwrap().to_string());
            ws.send(Message::text(r#"{"op":"ping"}"#)).await.unwrap();
            let Some(Ok(Message::Text(pong))) = ws.next().await else { panic!("no pong") };
            Ok((pong.to_string(), selected))
        }
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => Err(response.status().as_u16()),
        Err(e) => panic!("{e}"),
    }
}

#[tokio::test]
async fn the_stream_takes_the_token_as_a_subprotocol() {
    let (addr, shutdown) = start().await;
    let (pong, selected) = upgrade(addr, &format!("shoal.stream, bearer.{}", hex(READ))).await.unwrap();
    assert_eq!(pong, r#"{"type":"pong"}"#);
    assert_eq!(selected.as_deref(), Some("shoal.stream"), "the token's subprotocol is never echoed");
    assert_eq!(upgrade(addr, &format!("shoal.stream, bearer.{}", hex("wrong-token-0123456789"))).await, Err(401));
    assert_eq!(upgrade(addr, "shoal.stream, bearer.not-hex").await, Err(401));
    assert_eq!(upgrade(addr, "shoal.stream").await, Err(401));
    shutdown.cancel();
}
