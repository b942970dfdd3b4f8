//! The server's TLS certificate: operator files, or a self-signed certificate for localhost
//! created in the data directory on first start and reused after.

use anyhow::{anyhow, Context};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::config::TlsSource;

/// Where the self-signed certificate lives inside the data directory.
pub const SELF_SIGNED_CERT: &str = "tls/cert.pem";
/// Its private key.
pub const SELF_SIGNED_KEY: &str = "tls/key.pem";

/// Returns (certificate path, key path), creating the self-signed pair if needed.
pub fn ensure_files(source: &TlsSource, data_dir: &Path) -> anyhow::Result<(PathBuf, PathBuf)> {
    match source {
        TlsSource::Files { cert, key } => Ok((cert.clone(), key.clone())),
        TlsSource::SelfSigned => {
            let cert = data_dir.join(SELF_SIGNED_CERT);
            let key = data_dir.join(SELF_SIGNED_KEY);
            if cert.is_file() && key.is_file() {
                return Ok((cert, key));
            }
            let names = vec![
                "localhost".to_owned(),
                "127.0.0.1".to_owned(),
                "::1".to_owned(),
            ];
            let ck = rcgen::generate_simple_self_signed(names)
                .context("generating a self-signed certificate")?;
            if let Some(dir) = cert.parent() {
                std::fs::create_dir_all(dir)
                    .with_context(|| format!("creating {}", dir.display()))?;
            }
            write_file(&key, ck.signing_key.serialize_pem().as_bytes(), true)?;
            write_file(&cert, ck.cert.pem().as_bytes(), false)?;
            tracing::info!(cert = %cert.display(), "created a self-signed TLS certificate for localhost");
            Ok((cert, key))
        }
    }
}

fn write_file(path: &Path, bytes: &[u8], private: bool) -> anyhow::Result<()> {
    use std::io::Write;
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create(true).truncate(true);
    #[cfg(unix)]
    if private {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    #[cfg(not(unix))]
    let _ = private;
    let mut f = opts
        .open(path)
        .with_context(|| format!("writing {}", path.display()))?;
    f.write_all(bytes)
        .with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}

/// Reads the certificate chain and key as DER (for the QUIC endpoint).
pub fn load_pem(
    cert: &Path,
    key: &Path,
) -> anyhow::Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>)> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .with_context(|| format!("reading certificate {}", cert.display()))?
        .collect::<Result<_, _>>()
        .with_context(|| format!("parsing certificate {}", cert.display()))?;
    if certs.is_empty() {
        return Err(anyhow!("{} holds no certificate", cert.display()));
    }
    let key = PrivateKeyDer::from_pem_file(key)
        .with_context(|| format!("reading private key {}", key.display()))?;
    Ok((certs, key))
}

/// Builds the server's rustls configuration (HTTP/1.1 over TLS 1.2/1.3, secret extraction on for relay
/// legs).
pub fn server_config(cert: &Path, key: &Path) -> anyhow::Result<Arc<rustls::ServerConfig>> {
    let (certs, key) = load_pem(cert, key)?;
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut cfg = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .context("TLS protocol versions")?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .context("the certificate and key do not match or are unsupported")?;
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    // The relay takes a WebSocket leg's traffic keys out of rustls after the upgrade and runs its own
    // record layer (assist_relay::tls); the keys never leave the process.
    cfg.enable_secret_extraction = true;
    Ok(Arc::new(cfg))
}
