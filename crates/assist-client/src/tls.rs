//! Whom a client trusts: exactly the certificates of a PEM file (the development server's
//! self-signed certificate, or a private CA's).

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Why a trust file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// The file could not be read, or held no valid PEM certificate block.
    #[error("reading {}: {source}", path.display())]
    Read {
        /// The PEM file.
        path: PathBuf,
        /// What went wrong.
        source: rustls::pki_types::pem::Error,
    },
    /// A certificate in the file is not one rustls accepts as a root.
    #[error("parsing {}: {source}", path.display())]
    Certificate {
        /// The PEM file.
        path: PathBuf,
        /// What rustls said.
        source: rustls::Error,
    },
    /// The file held no certificate.
    #[error("{} holds no certificate", path.display())]
    Empty {
        /// The PEM file.
        path: PathBuf,
    },
}

/// A rustls client configuration (aws-lc-rs, TLS 1.2 and 1.3) trusting exactly the certificates
/// in the PEM file at `ca`. Both clients take it: [`crate::signal::SignalClient::connect`] and the
/// relay's [`crate::relay::connect_wss`] (and, through [`crate::relay::quic_endpoint`], QUIC).
pub fn client_config(ca: &Path) -> Result<Arc<rustls::ClientConfig>, TlsError> {
    let mut roots = rustls::RootCertStore::empty();
    let read = |source| TlsError::Read {
        path: ca.to_owned(),
        source,
    };
    for c in CertificateDer::pem_file_iter(ca).map_err(read)? {
        roots
            .add(c.map_err(read)?)
            .map_err(|source| TlsError::Certificate {
                path: ca.to_owned(),
                source,
            })?;
    }
    if roots.is_empty() {
        return Err(TlsError::Empty {
            path: ca.to_owned(),
        });
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|source| TlsError::Certificate {
        path: ca.to_owned(),
        source,
    })?
    .with_root_certificates(roots)
    .with_no_client_auth();
    Ok(Arc::new(config))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_a_missing_an_empty_and_a_garbled_file() {
        let dir = std::env::temp_dir().join(format!("assist-client-tls-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let missing = dir.join("missing.pem");
        assert!(matches!(
            client_config(&missing),
            Err(TlsError::Read { .. })
        ));
        let empty = dir.join("empty.pem");
        std::fs::write(&empty, "").unwrap();
        let e = client_config(&empty).unwrap_err();
        assert!(matches!(e, TlsError::Empty { .. }), "{e}");
        assert!(e.to_string().contains("empty.pem"), "{e}");
        let garbled = dir.join("garbled.pem");
        std::fs::write(
            &garbled,
            "-----BEGIN CERTIFICATE-----\nnot base64!\n-----END CERTIFICATE-----\n",
        )
        .unwrap();
        assert!(client_config(&garbled).is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
