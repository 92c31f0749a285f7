//! Trust roots for Shoal's TLS clients: the certificates of a PEM file (a
//! private CA), or the platform's root certificates.

use std::sync::Arc;

use rustls::RootCertStore;
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;

/// The certificates of the PEM file at `path` as trust roots; at least one,
/// each a parsable X.509 certificate. Errors name the file.
pub fn ca_roots(path: &str) -> Result<RootCertStore, String> {
    let bytes = std::fs::read(path).map_err(|error| format!("cannot read {path}: {error}"))?;
    let mut roots = RootCertStore::empty();
    for (index, item) in CertificateDer::pem_slice_iter(&bytes).enumerate() {
        let certificate = item.map_err(|error| format!("{path} is not valid PEM: {error}"))?;
        roots.add(certificate).map_err(|error| {
            format!("certificate {} in {path} is not a usable X.509 certificate: {error}", index + 1)
        })?;
    }
    if roots.is_empty() {
        return Err(format!("{path} holds no PEM certificate (-----BEGIN CERTIFICATE-----)"));
    }
    Ok(roots)
}

/// The platform's root certificates (`SSL_CERT_FILE` / `SSL_CERT_DIR`
/// override where they are read from). `ca_setting` names the setting that
/// gives a CA file instead, for the error when none is found.
pub fn platform_roots(ca_setting: &str) -> Result<RootCertStore, String> {
    let found = rustls_native_certs::load_native_certs();
    let mut roots = RootCertStore::empty();
    let (added, ignored) = roots.add_parsable_certificates(found.certs);
    if !found.errors.is_empty() || ignored > 0 {
        tracing::debug!(added, ignored, errors = ?found.errors, "some platform root certificates were not loaded");
    }
    if roots.is_empty() {
        return Err(format!(
            "no platform root certificates found (errors: {:?}); install the CA bundle or set {ca_setting}",
            found.errors
        ));
    }
    Ok(roots)
}

/// A TLS client configuration (rustls with *ring*, TLS 1.2 and 1.3, no
/// client certificate) trusting `roots`.
pub fn client_config(roots: RootCertStore) -> Result<rustls::ClientConfig, String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    Ok(rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|error| format!("no TLS protocol version available: {error}"))?
        .with_root_certificates(roots)
        .with_no_client_auth())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_ca_file_must_hold_certificates() {
        let dir = std::env::temp_dir().join(format!("shoal-tls-roots-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temporary directory");
        let ca = rcgen::generate_simple_self_signed(vec!["ca.test".to_owned()]).expect("certificate");
        let good = dir.join("ca.pem");
        std::fs::write(&good, ca.cert.pem()).expect("write");
        let empty = dir.join("empty.pem");
        std::fs::write(&empty, "nothing here\n").expect("write");
        let good = good.to_string_lossy().into_owned();
        assert_eq!(ca_roots(&good).expect("one root").len(), 1);
        assert!(client_config(ca_roots(&good).expect("roots")).is_ok());
        let empty = empty.to_string_lossy().into_owned();
        assert!(ca_roots(&empty).expect_err("no certificate").contains("holds no PEM certificate"));
        let missing = dir.join("missing.pem").to_string_lossy().into_owned();
        assert!(ca_roots(&missing).expect_err("missing").starts_with("cannot read"));
        let _ = std::fs::remove_dir_all(dir);
    }
}
