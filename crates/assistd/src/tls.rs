//! The server's TLS certificate: operator files, or a self-signed certificate for localhost
//! created in the data directory on first start and reused after.

use anyhow::{anyhow, Context};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::config::TlsSource;

/// The directory of the self-signed pair inside the data directory.
const SELF_SIGNED_DIR: &str = "tls";
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
            let dir = data_dir.join(SELF_SIGNED_DIR);
            std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
            // Processes starting together on one data directory (nodes, a test harness) take
            // turns: the first creates the pair, the others find it. An advisory lock, released
            // when the file closes (or the process dies).
            let lock_path = dir.join(".create.lock");
            let lock = std::fs::OpenOptions::new()
                .create(true)
                .truncate(false)
                .write(true)
                .open(&lock_path)
                .with_context(|| format!("opening {}", lock_path.display()))?;
            lock.lock()
                .with_context(|| format!("locking {}", lock_path.display()))?;
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
            // Each file is written in full under a temporary name, then renamed into place: a
            // crash leaves no half-written file. The certificate goes last (and any old one
            // first), so a reader that sees both files sees one pair.
            let (key_tmp, cert_tmp) = (dir.join(".key.pem.tmp"), dir.join(".cert.pem.tmp"));
            write_file(&key_tmp, ck.signing_key.serialize_pem().as_bytes(), true)?;
            write_file(&cert_tmp, ck.cert.pem().as_bytes(), false)?;
            match std::fs::remove_file(&cert) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(e).with_context(|| format!("removing {}", cert.display())),
            }
            std::fs::rename(&key_tmp, &key)
                .with_context(|| format!("writing {}", key.display()))?;
            std::fs::rename(&cert_tmp, &cert)
                .with_context(|| format!("writing {}", cert.display()))?;
            tracing::info!(cert = %cert.display(), "created a self-signed TLS certificate for localhost");
            drop(lock);
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
        .and_then(|()| f.sync_all())
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

#[cfg(test)]
mod tests {
    use super::*;

    // Nodes started together on one data directory: each must load a matching pair, and all
    // the same one.
    #[test]
    fn processes_creating_the_self_signed_pair_at_once_all_load_one_matching_pair() {
        let dir = tempfile::tempdir().unwrap();
        let pems: Vec<String> = std::thread::scope(|s| {
            let handles: Vec<_> = (0..8)
                .map(|_| {
                    s.spawn(|| {
                        let (cert, key) = ensure_files(&TlsSource::SelfSigned, dir.path()).unwrap();
                        server_config(&cert, &key).expect("a matching pair");
                        std::fs::read_to_string(&cert).unwrap()
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        assert!(pems.iter().all(|p| p == &pems[0]), "one pair for all");
        // Later starts reuse it.
        let (cert, _) = ensure_files(&TlsSource::SelfSigned, dir.path()).unwrap();
        assert_eq!(std::fs::read_to_string(cert).unwrap(), pems[0]);
    }

    // A key left without its certificate (a crash between the two, or a user's deletion) is
    // replaced with a new pair.
    #[test]
    fn a_key_without_its_certificate_is_replaced_by_a_new_pair() {
        let dir = tempfile::tempdir().unwrap();
        let (cert, key) = ensure_files(&TlsSource::SelfSigned, dir.path()).unwrap();
        let old_key = std::fs::read_to_string(&key).unwrap();
        std::fs::remove_file(&cert).unwrap();
        let (cert, key) = ensure_files(&TlsSource::SelfSigned, dir.path()).unwrap();
        assert_ne!(std::fs::read_to_string(&key).unwrap(), old_key);
        server_config(&cert, &key).expect("a matching pair");
    }
}
