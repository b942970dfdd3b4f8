//! P-256 signing keys kept as PKCS#8 PEM files (mode 0600) in the data directory: created on
//! first use, reused after. The dev token issuer and the broker's relay-ticket key use them.

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{EcdsaKeyPair, ECDSA_P256_SHA256_FIXED_SIGNING};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::DecodingKey;
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};

/// Errors loading or creating a key file.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum KeyError {
    /// The file could not be read or written (our environment's fault).
    #[error("key file {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// The file exists but does not hold a P-256 private key (operator's fault).
    #[error("key file {path} is not a valid P-256 PKCS#8 key: {reason}")]
    BadKey {
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// Key generation failed (a bug or a broken platform).
    #[error("generating a key failed: {0}")]
    Generate(String),
}

/// An ES256 key pair with its JWK (kid = RFC 7638 thumbprint).
pub struct EcKey {
    /// The parsed key pair [`EcKey::sign_jwt`] signs with (parsed once, not per signature).
    signer: EcdsaKeyPair,
    /// For verifying.
    pub decoding: DecodingKey,
    /// Key id.
    pub kid: String,
    /// The public key as a one-key JWKS.
    pub jwks: JwkSet,
}

impl std::fmt::Debug for EcKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EcKey")
            .field("kid", &self.kid)
            .finish_non_exhaustive()
    }
}

impl EcKey {
    /// Loads the key at `path`, creating it if the file does not exist.
    pub fn load_or_create(path: &Path) -> Result<Self, KeyError> {
        let io = |source| KeyError::Io {
            path: path.to_path_buf(),
            source,
        };
        let pem = match std::fs::read_to_string(path) {
            Ok(pem) => pem,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let key =
                    rcgen::KeyPair::generate().map_err(|e| KeyError::Generate(e.to_string()))?;
                let pem = key.serialize_pem();
                if write_private_once(path, pem.as_bytes()).map_err(io)? {
                    pem
                } else {
                    // Another process (a second `assistd` on the same data directory) made it first.
                    std::fs::read_to_string(path).map_err(io)?
                }
            }
            Err(e) => return Err(io(e)),
        };
        Self::from_pem(&pem).map_err(|reason| KeyError::BadKey {
            path: path.to_path_buf(),
            reason,
        })
    }

    /// Loads the key at `path`, which must exist: a key file given by the operator (a cluster's
    /// shared key) is never created. A missing file is [`KeyError::Io`] (not found), a garbled
    /// or truncated one [`KeyError::BadKey`]; both name the path.
    pub fn load(path: &Path) -> Result<Self, KeyError> {
        let pem = std::fs::read_to_string(path).map_err(|source| KeyError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        Self::from_pem(&pem).map_err(|reason| KeyError::BadKey {
            path: path.to_path_buf(),
            reason,
        })
    }

    /// Builds the key from a PKCS#8 PEM P-256 private key.
    pub fn from_pem(pem: &str) -> Result<Self, String> {
        let key = rcgen::KeyPair::from_pem(pem).map_err(|e| e.to_string())?;
        if !key.is_compatible(&rcgen::PKCS_ECDSA_P256_SHA256) {
            return Err("not an ECDSA P-256 key".into());
        }
        let raw = key.public_key_raw();
        if raw.len() != 65 || raw[0] != 4 {
            return Err("unexpected public key encoding".into());
        }
        let x = URL_SAFE_NO_PAD.encode(&raw[1..33]);
        let y = URL_SAFE_NO_PAD.encode(&raw[33..65]);
        let thumb_input = format!(r#"{{"crv":"P-256","kty":"EC","x":"{x}","y":"{y}"}}"#);
        let kid = URL_SAFE_NO_PAD.encode(Sha256::digest(thumb_input.as_bytes()));
        let jwks: JwkSet = serde_json::from_value(serde_json::json!({
            "keys": [{"kty":"EC","crv":"P-256","x":x,"y":y,"kid":kid,"alg":"ES256","use":"sig"}]
        }))
        .map_err(|e| e.to_string())?;
        let signer =
            EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &key.serialize_der())
                .map_err(|e| e.to_string())?;
        let decoding = DecodingKey::from_ec_components(&x, &y).map_err(|e| e.to_string())?;
        Ok(Self {
            signer,
            decoding,
            kid,
            jwks,
        })
    }
}

impl EcKey {
    /// Signs `claims` as a compact JWS (JWT): ES256, `typ` JWT, `kid` this key's id.
    pub fn sign_jwt<T: serde::Serialize>(&self, claims: &T) -> Result<String, String> {
        let header = serde_json::json!({"typ": "JWT", "alg": "ES256", "kid": self.kid});
        let mut out = URL_SAFE_NO_PAD.encode(header.to_string());
        out.push('.');
        let claims = serde_json::to_vec(claims).map_err(|e| e.to_string())?;
        out.push_str(&URL_SAFE_NO_PAD.encode(claims));
        let signature = self
            .signer
            .sign(&SystemRandom::new(), out.as_bytes())
            .map_err(|_| "signing failed".to_owned())?;
        out.push('.');
        out.push_str(&URL_SAFE_NO_PAD.encode(signature.as_ref()));
        Ok(out)
    }
}

/// Writes a new private file (mode 0600) at `path` holding `bytes`, unless one is there already:
/// `Ok(true)` if this call wrote it, `Ok(false)` if another writer's file was there first (read
/// that one). The file appears whole or not at all: the bytes go to a temporary file beside it,
/// which is then hard-linked into place (which fails if the name exists), so two processes
/// starting on one data directory agree on one key and neither reads half of it.
pub fn write_private_once(path: &Path, bytes: &[u8]) -> std::io::Result<bool> {
    use std::io::Write;
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => std::path::PathBuf::from("."),
    };
    std::fs::create_dir_all(&dir)?;
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    // Unique per process (its id) and per call within it (a counter).
    static CALLS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let call = CALLS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let tmp = dir.join(format!(".{name}.{}.{call}.tmp", std::process::id()));
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    let written = (|| {
        let mut f = opts.open(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::hard_link(&tmp, path)
    })();
    let _ = std::fs::remove_file(&tmp);
    match written {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(false),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn processes_racing_to_create_a_key_agree_on_one() {
        for _ in 0..20 {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("keys").join("dev-issuer.pem");
            let kids: Vec<String> = std::thread::scope(|s| {
                let handles: Vec<_> = (0..4)
                    .map(|_| s.spawn(|| EcKey::load_or_create(&path).map(|k| k.kid)))
                    .collect();
                handles
                    .into_iter()
                    .map(|h| h.join().unwrap().expect("every racer gets the key"))
                    .collect()
            });
            assert!(kids.iter().all(|k| k == &kids[0]), "{kids:?}");
            // No temporary file is left beside the key.
            let names: Vec<_> = std::fs::read_dir(path.parent().unwrap())
                .unwrap()
                .map(|e| e.unwrap().file_name())
                .collect();
            assert_eq!(names, vec![std::ffi::OsString::from("dev-issuer.pem")]);
        }
    }

    #[test]
    fn a_private_file_is_written_once_and_never_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("k");
        assert!(write_private_once(&path, b"first").unwrap());
        assert!(!write_private_once(&path, b"second").unwrap());
        assert_eq!(std::fs::read(&path).unwrap(), b"first");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
    }
}
