//! The development token issuer: an ES256 key pair created on first start in the data
//! directory, so that a laptop install has working identities without an identity provider.
//!
//! Tokens it signs look like Entra ID access tokens (`tid`, `oid`, `upn`, `roles`, …). It is
//! meant for development, demos and tests; production deployments trust an OIDC issuer instead.

use jsonwebtoken::jwk::JwkSet;

use sha2::{Digest, Sha256};
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::claims::Claims;
use crate::keys::{EcKey, KeyError};

/// The `iss` the dev issuer writes.
pub const DEV_ISSUER: &str = "urn:assist:dev-issuer";
/// The file in the data directory that holds the dev issuer's private key (PKCS#8 PEM).
pub const KEY_FILE: &str = "dev-issuer-key.pem";

/// Errors of the dev issuer.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DevIssuerError {
    /// Its key could not be loaded or created.
    #[error(transparent)]
    Key(#[from] KeyError),
    /// Signing failed (a bug).
    #[error("signing a token failed: {0}")]
    Sign(String),
}

/// What a dev token says about its subject.
#[derive(Debug, Clone, Default)]
pub struct TokenRequest {
    /// Tenant id (`tid`).
    pub tenant_id: String,
    /// User principal name (`upn`).
    pub user_principal_name: String,
    /// Object id (`oid`); derived from tenant and UPN when `None`.
    pub object_id: Option<String>,
    /// Display name; derived from the UPN when `None`.
    pub display_name: Option<String>,
    /// First name.
    pub given_name: Option<String>,
    /// Last name.
    pub family_name: Option<String>,
    /// Application permissions (Graph names).
    pub roles: Vec<String>,
    /// Delegated permissions.
    pub scopes: Vec<String>,
    /// Device id.
    pub device_id: Option<String>,
    /// Entra directory roles put in `wids` (role template ids such as
    /// [`crate::claims::GLOBAL_ADMINISTRATOR`]).
    pub directory_roles: Vec<String>,
    /// Lifetime.
    pub ttl: Duration,
    /// Audience.
    pub audience: String,
}

/// The dev issuer: signs tokens and publishes its public key as a JWKS.
pub struct DevIssuer {
    key: EcKey,
}

impl std::fmt::Debug for DevIssuer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DevIssuer")
            .field("kid", &self.key.kid)
            .finish_non_exhaustive()
    }
}

/// A stable UUID-shaped id derived from some text (used for default object ids).
pub fn derived_id(parts: &[&str]) -> String {
    let mut h = Sha256::new();
    for p in parts {
        h.update(p.as_bytes());
        h.update([0u8]);
    }
    let d = h.finalize();
    let x: String = d[..16].iter().map(|b| format!("{b:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &x[0..8],
        &x[8..12],
        &x[12..16],
        &x[16..20],
        &x[20..32]
    )
}

impl DevIssuer {
    /// Loads the key from `dir`, creating a new one (file mode 0600) if there is none.
    pub fn load_or_create(dir: &Path) -> Result<Self, DevIssuerError> {
        let key = EcKey::load_or_create(&dir.join(KEY_FILE))?;
        Ok(Self { key })
    }

    /// Loads the key from `path` (`keys.dev_issuer_file`), which must exist: it is never
    /// created, so every node of a cluster signs and trusts the same key.
    pub fn load(path: &Path) -> Result<Self, DevIssuerError> {
        Ok(Self {
            key: EcKey::load(path)?,
        })
    }

    /// The public keys, as a JWKS.
    pub fn jwks(&self) -> &JwkSet {
        &self.key.jwks
    }

    /// The key id tokens are signed with.
    pub fn kid(&self) -> &str {
        &self.key.kid
    }

    /// Signs a token for `req`, valid from now for `req.ttl`.
    pub fn mint(&self, req: &TokenRequest) -> Result<String, DevIssuerError> {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs();
        self.mint_at(req, now)
    }

    /// Signs a token as if the time were `now` (seconds since the epoch); tests use it for
    /// expired and not-yet-valid tokens.
    pub fn mint_at(&self, req: &TokenRequest, now: u64) -> Result<String, DevIssuerError> {
        let upn = req.user_principal_name.clone();
        let default_name = match (upn.split('@').next(), &req.device_id) {
            (Some(local), _) if !local.is_empty() => local.to_owned(),
            (_, Some(d)) => d.clone(),
            _ => upn.clone(),
        };
        let claims = Claims {
            iss: Some(DEV_ISSUER.to_owned()),
            aud: Some(serde_json::Value::String(req.audience.clone())),
            exp: Some(now + req.ttl.as_secs()),
            nbf: Some(now),
            iat: Some(now),
            tid: Some(req.tenant_id.clone()),
            oid: Some(req.object_id.clone().unwrap_or_else(|| {
                derived_id(&[&req.tenant_id, &upn, req.device_id.as_deref().unwrap_or("")])
            })),
            // An empty user makes a device token (with `device_id` set).
            upn: (!upn.is_empty()).then_some(upn),
            preferred_username: None,
            name: Some(req.display_name.clone().unwrap_or(default_name)),
            given_name: req.given_name.clone(),
            family_name: req.family_name.clone(),
            roles: req.roles.clone(),
            scp: (!req.scopes.is_empty()).then(|| req.scopes.join(" ")),
            deviceid: req.device_id.clone(),
            wids: req.directory_roles.clone(),
            groups: Vec::new(),
        };
        self.sign(&claims)
    }

    /// Signs any serialisable claims with the dev key (the OIDC provider's ID tokens and the
    /// access tokens with claims [`Claims`] does not have, such as `wids`).
    pub fn sign_json<T: serde::Serialize>(&self, claims: &T) -> Result<String, DevIssuerError> {
        self.key.sign_jwt(claims).map_err(DevIssuerError::Sign)
    }

    /// Signs arbitrary claims with the dev key (tests use it to craft malformed tokens).
    pub fn sign(&self, claims: &Claims) -> Result<String, DevIssuerError> {
        self.key.sign_jwt(claims).map_err(DevIssuerError::Sign)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_is_created_once_and_reused() {
        let dir = tempfile::tempdir().unwrap();
        let a = DevIssuer::load_or_create(dir.path()).unwrap();
        let b = DevIssuer::load_or_create(dir.path()).unwrap();
        assert_eq!(a.kid(), b.kid());
        assert_eq!(a.jwks().keys.len(), 1);
        let other = tempfile::tempdir().unwrap();
        let c = DevIssuer::load_or_create(other.path()).unwrap();
        assert_ne!(a.kid(), c.kid());
    }

    #[test]
    fn garbage_key_file_is_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(KEY_FILE), "not a key").unwrap();
        let e = DevIssuer::load_or_create(dir.path()).unwrap_err();
        assert!(
            matches!(e, DevIssuerError::Key(KeyError::BadKey { .. })),
            "{e}"
        );
    }

    #[test]
    fn derived_ids_are_stable_and_distinct() {
        assert_eq!(derived_id(&["t", "a"]), derived_id(&["t", "a"]));
        assert_ne!(derived_id(&["t", "a"]), derived_id(&["ta", ""]));
        assert_eq!(derived_id(&["x"]).len(), 36);
    }
}
