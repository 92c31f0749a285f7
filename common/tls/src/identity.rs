//! A server's TLS identity: a certificate chain and the private key of its
//! first certificate, loaded from PEM files and checked to fit together.
//!
//! TLS is rustls with the *ring* crypto provider, the stack
//! tokio-tungstenite's `wss://` clients already use; TLS 1.2 and 1.3, no
//! client certificates.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::TlsAcceptor;

/// Which of the two files a [`TlsError`] is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TlsPart {
    /// The certificate chain (the simulator's `--tls-cert`, `api.tls_cert_file`).
    Certificate,
    /// The private key (`--tls-key`, `api.tls_key_file`); also a key that does not belong to
    /// the certificate.
    Key,
}

/// The certificate chain or private key could not be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}: {problem}", path.display())]
pub struct TlsError {
    /// Which file.
    pub part: TlsPart,
    /// The file's path, as given.
    pub path: PathBuf,
    /// What is wrong with it.
    pub problem: String,
}

/// A certificate chain and the private key of its first certificate, ready
/// to accept TLS connections. Compared and shown by the files it was loaded
/// from.
#[derive(Clone)]
pub struct TlsIdentity {
    cert_file: PathBuf,
    key_file: PathBuf,
    acceptor: TlsAcceptor,
}

impl TlsIdentity {
    /// Loads `cert_file` (PEM: the server certificate first, then any
    /// intermediates) and `key_file` (PEM: PKCS#8, PKCS#1 or SEC1) and checks
    /// that the key belongs to the certificate.
    pub fn load(cert_file: &Path, key_file: &Path) -> Result<Self, TlsError> {
        let certificates = read_certificates(cert_file)?;
        let key = read_key(key_file)?;
        let key_error = |problem: String| TlsError { part: TlsPart::Key, path: key_file.to_owned(), problem };
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|error| key_error(format!("no TLS protocol version available: {error}")))?
            .with_no_client_auth()
            .with_single_cert(certificates, key)
            .map_err(|error| key_error(format!("not usable with the certificate chain: {error}")))?;
        Ok(Self {
            cert_file: cert_file.to_owned(),
            key_file: key_file.to_owned(),
            acceptor: TlsAcceptor::from(Arc::new(config)),
        })
    }

    /// Loads the identity of the settings `<section>.tls_cert_file` and
    /// `<section>.tls_key_file` (`cert_file`, `key_file`); `None` when the
    /// certificate setting is empty. The error names the setting at fault
    /// and its file, and says what is expected.
    pub fn from_settings(section: &str, cert_file: &str, key_file: &str) -> Result<Option<Self>, String> {
        if cert_file.is_empty() {
            return Ok(None);
        }
        Self::load(cert_file.as_ref(), key_file.as_ref()).map(Some).map_err(|error| {
            let setting = match error.part {
                TlsPart::Certificate => "tls_cert_file",
                TlsPart::Key => "tls_key_file",
            };
            format!(
                "{section}.{setting}: {error} (expected PEM: a certificate chain, and the private key of its first certificate)"
            )
        })
    }

    /// The certificate chain's file.
    pub fn cert_file(&self) -> &Path {
        &self.cert_file
    }

    /// The private key's file.
    pub fn key_file(&self) -> &Path {
        &self.key_file
    }

    /// The acceptor that performs the server side of handshakes.
    pub fn acceptor(&self) -> &TlsAcceptor {
        &self.acceptor
    }
}

impl fmt::Debug for TlsIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsIdentity").field("cert_file", &self.cert_file).field("key_file", &self.key_file).finish()
    }
}

impl PartialEq for TlsIdentity {
    fn eq(&self, other: &Self) -> bool {
        self.cert_file == other.cert_file && self.key_file == other.key_file
    }
}

fn read(part: TlsPart, path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|error| TlsError {
        part,
        path: path.to_owned(),
        problem: format!("cannot read: {error}"),
    })
}

fn read_certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let error = |problem: String| TlsError { part: TlsPart::Certificate, path: path.to_owned(), problem };
    let bytes = read(TlsPart::Certificate, path)?;
    let certificates = CertificateDer::pem_slice_iter(&bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| error(format!("not a PEM certificate chain: {e}")))?;
    if certificates.is_empty() {
        return Err(error("no PEM certificate (-----BEGIN CERTIFICATE-----) found".into()));
    }
    Ok(certificates)
}

fn read_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    let bytes = read(TlsPart::Key, path)?;
    PrivateKeyDer::from_pem_slice(&bytes).map_err(|e| TlsError {
        part: TlsPart::Key,
        path: path.to_owned(),
        problem: format!("no PEM private key (PRIVATE KEY, RSA PRIVATE KEY or EC PRIVATE KEY) found: {e}"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A throwaway directory under the system's temporary directory.
    fn scratch(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("shoal-tls-{name}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temporary directory");
        dir
    }

    fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
        let path = dir.join(name);
        std::fs::write(&path, text).expect("write");
        path
    }

    #[test]
    fn loads_a_certificate_and_its_key_and_refuses_what_does_not_fit() {
        let dir = scratch("load");
        let one = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_owned()]).expect("certificate");
        let other = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_owned()]).expect("certificate");
        let cert = write(&dir, "cert.pem", &one.cert.pem());
        let key = write(&dir, "key.pem", &one.signing_key.serialize_pem());
        let wrong_key = write(&dir, "other-key.pem", &other.signing_key.serialize_pem());
        let garbage = write(&dir, "garbage.pem", "not PEM at all\n");
        let missing = dir.join("missing.pem");

        let identity = TlsIdentity::load(&cert, &key).expect("a matching pair loads");
        assert_eq!((identity.cert_file(), identity.key_file()), (cert.as_path(), key.as_path()));

        for (cert_file, key_file, part, needle) in [
            (&missing, &key, TlsPart::Certificate, "cannot read"),
            (&garbage, &key, TlsPart::Certificate, "no PEM certificate"),
            (&key, &key, TlsPart::Certificate, "no PEM certificate"),
            (&cert, &missing, TlsPart::Key, "cannot read"),
            (&cert, &cert, TlsPart::Key, "no PEM private key"),
            (&cert, &wrong_key, TlsPart::Key, "not usable with the certificate chain"),
        ] {
            let error = TlsIdentity::load(cert_file, key_file).expect_err("refused");
            assert_eq!(error.part, part, "{error}");
            assert!(error.to_string().contains(needle), "{error}");
        }
        let _ = std::fs::remove_dir_all(dir);
    }
}
