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
                write_private(path, pem.as_bytes()).map_err(io)?;
                pem
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

fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    let mut f = opts.open(path)?;
    f.write_all(bytes)?;
    f.sync_all()
}
