//! Shoal's TLS, one stack for every part: rustls with the *ring* crypto
//! provider (what tokio-tungstenite's `wss://` clients use), TLS 1.2 and
//! 1.3.
//!
//! - [`TlsIdentity`]: a server's certificate chain and key from PEM files
//!   (the simulator's `wss://`, the state API's and the observability
//!   port's HTTPS), checked at load so that a bad file fails at start,
//!   naming it;
//! - [`TlsListener`]: an [`axum::serve::Listener`] that accepts TCP
//!   connections and hands on those whose TLS handshake succeeds;
//! - [`ca_roots`], [`platform_roots`], [`client_config`]: trust for the
//!   clients (feeds, peer forwarding, `shoal-mcp`);
//! - [`HttpClient`]: HTTP and HTTPS requests with such a configuration.

mod client;
mod identity;
mod listener;
mod roots;

pub use client::{HttpClient, HttpError};
pub use identity::{TlsError, TlsIdentity, TlsPart};
pub use listener::{HANDSHAKE_TIMEOUT, TlsListener};
pub use roots::{ca_roots, client_config, platform_roots};
