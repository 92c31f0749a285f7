//! [`TlsListener`]: HTTPS for the axum servers (`axum::serve` accepts any
//! [`Listener`]).

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use axum::serve::Listener;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, mpsc};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;
use tokio_util::sync::{CancellationToken, DropGuard};

use crate::TlsIdentity;

/// How long a client has to complete its TLS handshake.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Handshakes in progress at once, at most; further connections wait in
/// the kernel's accept queue.
const MAX_HANDSHAKES: usize = 256;

/// Accepts TCP connections on a [`TcpListener`] and yields those whose TLS
/// handshake (with the [`TlsIdentity`]) completes within
/// [`HANDSHAKE_TIMEOUT`]. Handshakes run in tasks of their own, so a slow
/// or silent client holds up no one else. A failed handshake (a plain-HTTP
/// client, an untrusted certificate on the client's side, a timeout) is
/// logged at debug level and counted ([`TlsListener::handshake_failures`]).
/// Dropping the listener stops accepting.
pub struct TlsListener {
    local: SocketAddr,
    ready: mpsc::Receiver<(TlsStream<TcpStream>, SocketAddr)>,
    failures: Arc<AtomicU64>,
    _stop: DropGuard,
}

impl TlsListener {
    /// Serves TLS with `identity` on `listener`. Call inside a Tokio
    /// runtime (it spawns the accepting task).
    pub fn new(listener: TcpListener, identity: &TlsIdentity) -> io::Result<Self> {
        let local = listener.local_addr()?;
        let (sender, ready) = mpsc::channel(64);
        let failures = Arc::new(AtomicU64::new(0));
        let stop = CancellationToken::new();
        tokio::spawn(accept_loop(listener, identity.acceptor().clone(), sender, failures.clone(), stop.clone()));
        Ok(Self { local, ready, failures, _stop: stop.drop_guard() })
    }

    /// Handshakes that failed or timed out so far.
    pub fn handshake_failures(&self) -> Arc<AtomicU64> {
        self.failures.clone()
    }
}

async fn accept_loop(
    listener: TcpListener,
    acceptor: TlsAcceptor,
    sender: mpsc::Sender<(TlsStream<TcpStream>, SocketAddr)>,
    failures: Arc<AtomicU64>,
    stop: CancellationToken,
) {
    let handshakes = Arc::new(Semaphore::new(MAX_HANDSHAKES));
    loop {
        let Ok(permit) = handshakes.clone().acquire_owned().await else { return };
        let accepted = tokio::select! {
            () = stop.cancelled() => return,
            accepted = listener.accept() => accepted,
        };
        let (tcp, peer) = match accepted {
            Ok(connection) => connection,
            Err(error) => {
                // As axum's own TCP listener: out of file descriptors and
                // the like pass; back off a little.
                tracing::warn!(%error, "accepting a connection failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let (acceptor, sender, failures, stop) = (acceptor.clone(), sender.clone(), failures.clone(), stop.clone());
        tokio::spawn(async move {
            let _permit = permit;
            let handshake = tokio::select! {
                () = stop.cancelled() => return,
                handshake = tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)) => handshake,
            };
            match handshake {
                Ok(Ok(stream)) => {
                    let _closed = sender.send((stream, peer)).await;
                }
                Ok(Err(error)) => {
                    failures.fetch_add(1, Ordering::Relaxed);
                    tracing::debug!(%peer, %error, "TLS handshake failed");
                }
                Err(_) => {
                    failures.fetch_add(1, Ordering::Relaxed);
                    tracing::debug!(%peer, timeout = ?HANDSHAKE_TIMEOUT, "TLS handshake timed out");
                }
            }
        });
    }
}

impl std::fmt::Debug for TlsListener {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsListener").field("local", &self.local).finish_non_exhaustive()
    }
}

impl Listener for TlsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.ready.recv().await {
            Some(connection) => connection,
            // The accepting task ended (only when the listener is being
            // dropped): no more connections.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        Ok(self.local)
    }
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;
    use crate::{ca_roots, client_config};

    /// A CA, and a certificate for 127.0.0.1 it signed: the CA's file and
    /// the server's identity.
    fn pki(dir: &std::path::Path) -> (PathBuf, TlsIdentity) {
        let mut ca = rcgen::CertificateParams::new(Vec::<String>::new()).expect("CA parameters");
        ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let ca = rcgen::CertifiedIssuer::self_signed(ca, rcgen::KeyPair::generate().expect("key")).expect("CA");
        let key = rcgen::KeyPair::generate().expect("key");
        let server = rcgen::CertificateParams::new(vec!["127.0.0.1".to_owned()]).expect("server parameters");
        let server = server.signed_by(&key, &ca).expect("server certificate");
        let write = |name: &str, text: String| {
            let path = dir.join(name);
            std::fs::write(&path, text).expect("write");
            path
        };
        let (ca_file, cert, key) =
            (write("ca.pem", ca.pem()), write("cert.pem", server.pem()), write("key.pem", key.serialize_pem()));
        (ca_file, TlsIdentity::load(&cert, &key).expect("identity"))
    }

    #[tokio::test]
    async fn hands_on_verified_connections_and_counts_failed_handshakes() {
        let dir = std::env::temp_dir().join(format!("shoal-tls-listener-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temporary directory");
        let (ca_file, identity) = pki(&dir);
        let mut listener =
            TlsListener::new(TcpListener::bind("127.0.0.1:0").await.expect("bind"), &identity).expect("listener");
        let address = listener.local_addr().expect("address");
        let failures = listener.handshake_failures();

        // A plain client that sends HTTP: its handshake fails, and it does
        // not hold up the TLS client after it.
        let mut plain = TcpStream::connect(address).await.expect("connect");
        plain.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").await.expect("write");

        let roots = ca_roots(&ca_file.to_string_lossy()).expect("roots");
        let connector = tokio_rustls::TlsConnector::from(Arc::new(client_config(roots).expect("client config")));
        let name = rustls::pki_types::ServerName::try_from("127.0.0.1").expect("name");
        let client = tokio::spawn(async move {
            let tcp = TcpStream::connect(address).await.expect("connect");
            let mut tls = connector.connect(name, tcp).await.expect("handshake");
            tls.write_all(b"ping").await.expect("write");
            tls.flush().await.expect("flush");
            tls
        });
        let (mut served, _peer) =
            tokio::time::timeout(Duration::from_secs(10), listener.accept()).await.expect("accepted in time");
        let mut buffer = [0u8; 4];
        served.read_exact(&mut buffer).await.expect("read");
        assert_eq!(&buffer, b"ping");
        drop(client.await.expect("client"));

        let mut rest = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(5), plain.read_to_end(&mut rest)).await;
        for _ in 0..100 {
            if failures.load(Ordering::Relaxed) == 1 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await; // poll interval
        }
        assert_eq!(failures.load(Ordering::Relaxed), 1, "the plain client's handshake failed");
        let _ = std::fs::remove_dir_all(dir);
    }
}
