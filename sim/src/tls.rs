//! The simulator's `wss://` endpoint ([`SimConfig::tls`](crate::SimConfig::tls)),
//! served with a [`TlsIdentity`](crate::TlsIdentity) from `shoal-tls`.

#[cfg(test)]
mod tests {
    use std::path::{Path, PathBuf};
    use std::sync::Arc;

    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;

    use crate::TlsIdentity;

    /// A throwaway directory under the system's temporary directory.
    fn scratch(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("shoal-sim-tls-{name}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temporary directory");
        dir
    }

    fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
        let path = dir.join(name);
        std::fs::write(&path, text).expect("write");
        path
    }

    /// A CA and a server certificate for 127.0.0.1 it signed: the CA's PEM,
    /// and the files of the server's chain and key.
    fn pki(dir: &Path, name: &str) -> (String, PathBuf, PathBuf) {
        let mut ca = rcgen::CertificateParams::new(Vec::<String>::new()).expect("CA parameters");
        ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        ca.distinguished_name.push(rcgen::DnType::CommonName, format!("{name} CA"));
        let ca = rcgen::CertifiedIssuer::self_signed(ca, rcgen::KeyPair::generate().expect("key")).expect("CA");
        let key = rcgen::KeyPair::generate().expect("key");
        let server = rcgen::CertificateParams::new(vec!["127.0.0.1".to_owned()]).expect("server parameters");
        let server = server.signed_by(&key, &ca).expect("server certificate");
        let cert = write(dir, &format!("{name}.pem"), &server.pem());
        let key = write(dir, &format!("{name}-key.pem"), &key.serialize_pem());
        (ca.pem(), cert, key)
    }

    fn trusting(ca_pem: &str) -> tokio_tungstenite::Connector {
        let mut roots = rustls::RootCertStore::empty();
        for certificate in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
            roots.add(certificate.expect("CA PEM")).expect("CA certificate");
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("protocol versions")
            .with_root_certificates(roots)
            .with_no_client_auth();
        tokio_tungstenite::Connector::Rustls(Arc::new(config))
    }

    async fn next_text<S>(ws: &mut tokio_tungstenite::WebSocketStream<S>) -> serde_json::Value
    where
        S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
    {
        use futures::StreamExt;
        loop {
            let message = tokio::time::timeout(std::time::Duration::from_secs(5), ws.next())
                .await
                .expect("a frame in time")
                .expect("open")
                .expect("readable");
            if let tokio_tungstenite::tungstenite::Message::Text(text) = message {
                return serde_json::from_str(text.as_str()).expect("JSON");
            }
        }
    }

    #[tokio::test]
    async fn serves_wss_to_clients_that_trust_the_certificate_and_counts_those_that_do_not() {
        use futures::SinkExt;
        use tokio_tungstenite::tungstenite::Message;
        let dir = scratch("serve");
        let (ca, cert, key) = pki(&dir, "server");
        let (other_ca, _, _) = pki(&dir, "other");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let url = format!("wss://{}", listener.local_addr().expect("address"));
        let config = crate::SimConfig {
            symbols: vec!["TLS-A".into()],
            rate_per_symbol: 50.0,
            tls: Some(TlsIdentity::load(&cert, &key).expect("identity")),
            ..crate::SimConfig::default()
        };
        let shutdown = tokio_util::sync::CancellationToken::new();
        let server = tokio::spawn(crate::serve(listener, config, shutdown.clone()));

        let connect = |connector| tokio_tungstenite::connect_async_tls_with_config(url.clone(), None, false, connector);
        let (mut ws, _) = connect(Some(trusting(&ca))).await.expect("a client trusting the CA connects");
        assert_eq!(next_text(&mut ws).await["type"], "hello");
        ws.send(Message::text(r#"{"type":"subscribe","symbols":["*"]}"#)).await.expect("subscribe");
        assert_eq!(next_text(&mut ws).await["type"], "subscribed");
        assert_eq!(next_text(&mut ws).await["type"], "trade");

        let refused = connect(Some(trusting(&other_ca))).await.expect_err("another CA's client refuses");
        assert!(refused.to_string().contains("UnknownIssuer"), "{refused}");
        let plain = tokio_tungstenite::connect_async(url.replacen("wss://", "ws://", 1)).await;
        assert!(plain.is_err(), "a plain client gets no WebSocket");

        let control_url = format!("{url}{}", crate::CONTROL_PATH);
        let (mut control, _) =
            tokio_tungstenite::connect_async_tls_with_config(control_url, None, false, Some(trusting(&ca)))
                .await
                .expect("the control endpoint is served over wss too");
        // The server counts a failure once it has dropped the connection:
        // poll (bounded) rather than race the client's error.
        let mut stats = serde_json::Value::Null;
        for _ in 0..100 {
            control.send(Message::text(r#"{"cmd":"stats"}"#)).await.expect("stats");
            stats = next_text(&mut control).await;
            if stats["tls_handshake_failures"] == 2 {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await; // poll interval
        }
        assert_eq!(stats["tls_handshake_failures"], 2, "the refusal and the plain client: {stats}");
        // Closed clients let the server stop without its shutdown grace.
        let _ = ws.close(None).await;
        let _ = control.close(None).await;
        shutdown.cancel();
        server.await.expect("server task").expect("served");
        let _ = std::fs::remove_dir_all(dir);
    }
}
