//! Security-code hashing and randomness for the machine: HMAC-SHA-256 under a per-deployment
//! key kept in the data directory, compared in constant time; randomness from the OS.

use assist_session::Crypto;
use hmac::{Hmac, Mac};
use sha2::Sha256;

/// The HMAC key for security-code digests, in the data directory.
pub const CODE_KEY_FILE: &str = "signal-code-key";

/// Codes are stored as HMAC-SHA-256 digests under a per-deployment key and compared in
/// constant time; randomness comes from the OS.
pub(super) struct HmacCrypto {
    pub(super) key: [u8; 32],
}

impl Crypto for HmacCrypto {
    fn fill_random(&mut self, dest: &mut [u8]) {
        if getrandom::fill(dest).is_err() {
            // No OS randomness means no safe codes: fail loudly rather than hand out guessable ones.
            tracing::error!("the OS random generator failed");
            std::process::abort();
        }
    }

    fn code_digest(&self, code: &str) -> assist_session::code::CodeDigest {
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(&self.key).unwrap_or_else(|_| {
            // HMAC accepts keys of any length; this branch cannot be taken.
            <Hmac<Sha256> as Mac>::new_from_slice(&[0u8; 32]).expect("fixed-size key")
        });
        mac.update(code.as_bytes());
        assist_session::code::CodeDigest(mac.finalize().into_bytes().into())
    }

    fn digests_equal(
        &self,
        a: &assist_session::code::CodeDigest,
        b: &assist_session::code::CodeDigest,
    ) -> bool {
        use subtle::ConstantTimeEq;
        a.0.ct_eq(&b.0).into()
    }
}

fn key_of(path: &std::path::Path, bytes: &[u8]) -> anyhow::Result<[u8; 32]> {
    <[u8; 32]>::try_from(bytes).map_err(|_| {
        anyhow::anyhow!(
            "{} must hold exactly 32 bytes (it holds {})",
            path.display(),
            bytes.len()
        )
    })
}

/// Loads the 32-byte key at `path` (`keys.signal_code_file`), which must exist: it is never
/// created, so every node of a cluster hashes codes alike.
pub(crate) fn load_key(path: &std::path::Path) -> anyhow::Result<[u8; 32]> {
    let bytes =
        std::fs::read(path).map_err(|e| anyhow::anyhow!("reading {}: {e}", path.display()))?;
    key_of(path, &bytes)
}

/// Loads the data directory's key, creating it (mode 0600) on first start.
pub(crate) fn load_or_create_key(dir: &std::path::Path) -> anyhow::Result<[u8; 32]> {
    let path = dir.join(CODE_KEY_FILE);
    match std::fs::read(&path) {
        Ok(b) => key_of(&path, &b),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let mut k = [0u8; 32];
            getrandom::fill(&mut k).map_err(|e| anyhow::anyhow!("OS randomness: {e}"))?;
            if assist_identity::keys::write_private_once(&path, &k)? {
                Ok(k)
            } else {
                // Another process on the same data directory made it first: use theirs.
                key_of(&path, &std::fs::read(&path)?)
            }
        }
        Err(e) => Err(e.into()),
    }
}
