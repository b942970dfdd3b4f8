//! Relay tickets: short-lived ES256 JWTs the broker mints for each leg of an active session
//! and the relay verifies (`docs/protocol.md`, "Tickets").

use assist_identity::keys::{EcKey, KeyError};
use assist_policy::Mode;
use jsonwebtoken::{Algorithm, Validation};
use serde::{Deserialize, Serialize};
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// `iss` of every ticket.
pub const ISSUER: &str = "urn:assist:broker";
/// `aud` of every ticket.
pub const AUDIENCE: &str = "urn:assist:relay";
/// The key file in the data directory.
pub const KEY_FILE: &str = "relay-ticket-key.pem";
/// Default ticket lifetime.
pub const DEFAULT_TTL: Duration = Duration::from_secs(60);

pub use assist_relay_proto::session::Role;

/// A ticket's claims.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TicketClaims {
    /// Issuer.
    pub iss: String,
    /// Audience.
    pub aud: String,
    /// Relay session id.
    pub sid: String,
    /// The leg's role.
    pub role: Role,
    /// Granted mode.
    pub mode: Mode,
    /// Chat allowed.
    pub chat: bool,
    /// The relay address the ticket is for.
    pub relay: String,
    /// Unique ticket id.
    pub jti: String,
    /// Issued at.
    pub iat: u64,
    /// Expiry.
    pub exp: u64,
}

/// Why a ticket was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TicketError {
    /// Not a well-formed, correctly signed ticket of this broker.
    #[error("the relay ticket is invalid")]
    Invalid,
    /// Past its expiry.
    #[error("the relay ticket has expired")]
    Expired,
    /// Issued for another relay.
    #[error("the relay ticket is for another relay")]
    WrongRelay,
}

/// Mints and verifies tickets with the broker's relay-ticket key.
pub struct TicketAuthority {
    key: EcKey,
    ttl: Duration,
}

impl std::fmt::Debug for TicketAuthority {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TicketAuthority")
            .field("ttl", &self.ttl)
            .finish_non_exhaustive()
    }
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs()
}

impl TicketAuthority {
    /// Loads (or creates) the key in `data_dir`.
    pub fn load_or_create(data_dir: &Path, ttl: Duration) -> Result<Self, KeyError> {
        Ok(Self {
            key: EcKey::load_or_create(&data_dir.join(KEY_FILE))?,
            ttl,
        })
    }

    /// Mints a ticket for one leg.
    pub fn mint(&self, sid: &str, role: Role, mode: Mode, chat: bool, relay: &str) -> String {
        let now = now_secs();
        self.sign(&TicketClaims {
            iss: ISSUER.into(),
            aud: AUDIENCE.into(),
            sid: sid.into(),
            role,
            mode,
            chat,
            relay: relay.into(),
            jti: uuid::Uuid::new_v4().to_string(),
            iat: now,
            exp: now + self.ttl.as_secs(),
        })
    }

    /// Signs arbitrary claims (tests craft expired tickets with it).
    pub fn sign(&self, claims: &TicketClaims) -> String {
        // Signing with a key we loaded and checked cannot fail for serialisable claims; an
        // empty ticket would simply be refused by the relay.
        self.key.sign_jwt(claims).unwrap_or_default()
    }

    /// Verifies a ticket. `relay_addr`, when given, must equal the ticket's `relay`.
    pub fn verify(
        &self,
        ticket: &str,
        relay_addr: Option<&str>,
    ) -> Result<TicketClaims, TicketError> {
        let _ = jsonwebtoken::crypto::aws_lc::DEFAULT_PROVIDER.install_default();
        if ticket.len() > 4096 {
            return Err(TicketError::Invalid);
        }
        let mut v = Validation::new(Algorithm::ES256);
        v.leeway = 5;
        v.set_issuer(&[ISSUER]);
        v.set_audience(&[AUDIENCE]);
        v.set_required_spec_claims(&["exp", "iss", "aud"]);
        let data =
            jsonwebtoken::decode::<TicketClaims>(ticket, &self.key.decoding, &v).map_err(|e| {
                match e.kind() {
                    jsonwebtoken::errors::ErrorKind::ExpiredSignature => TicketError::Expired,
                    _ => TicketError::Invalid,
                }
            })?;
        if let Some(addr) = relay_addr {
            if data.claims.relay != addr {
                return Err(TicketError::WrongRelay);
            }
        }
        Ok(data.claims)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mint_verify_and_refusals() {
        let dir = tempfile::tempdir().unwrap();
        let a = TicketAuthority::load_or_create(dir.path(), DEFAULT_TTL).unwrap();
        let t = a.mint("s1", Role::Helper, Mode::FullControl, true, "r:1");
        let c = a.verify(&t, Some("r:1")).unwrap();
        assert_eq!(
            (c.sid.as_str(), c.role, c.mode, c.chat),
            ("s1", Role::Helper, Mode::FullControl, true)
        );
        assert_eq!(
            a.verify(&t, Some("r:2")).unwrap_err(),
            TicketError::WrongRelay
        );
        let mut expired = c.clone();
        expired.exp = now_secs() - 60;
        assert_eq!(
            a.verify(&a.sign(&expired), None).unwrap_err(),
            TicketError::Expired
        );
        let other = tempfile::tempdir().unwrap();
        let b = TicketAuthority::load_or_create(other.path(), DEFAULT_TTL).unwrap();
        assert_eq!(b.verify(&t, None).unwrap_err(), TicketError::Invalid);
        assert_eq!(a.verify("garbage", None).unwrap_err(), TicketError::Invalid);
        assert_ne!(
            a.mint("s1", Role::Helper, Mode::ViewOnly, true, "r").len(),
            0
        );
    }
}
