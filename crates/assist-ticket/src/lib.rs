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
    /// The relay the ticket is for: its [`RelayIdentity::name`].
    pub relay: String,
    /// The run of that relay the ticket is for: its [`RelayIdentity::instance`], new at every
    /// start, so a ticket (used or not) is worthless once the relay restarts.
    #[serde(default)]
    pub inst: String,
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
    /// Issued for an earlier run of this relay (it has restarted since).
    #[error("the relay ticket is for an earlier run of this relay")]
    OtherInstance,
}

/// Who a relay is, as tickets name it: `name` is its configured public address
/// (`relay.public_addr`) or, when none is configured, the HTTPS address it listens on as
/// advertised to clients (`host:port`; a loopback listener is `localhost:PORT`); `instance` is
/// random, new at every start. A broker mints tickets for a relay's current identity: in
/// single-node mode it is in the same process ([`crate::Relay::identity`]); other processes read
/// the identity the relay publishes in its data directory ([`RelayIdentity::FILE`]), and a
/// cluster registry can carry the same pair.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RelayIdentity {
    /// The address tickets name in `relay`.
    pub name: String,
    /// This run's id, tickets' `inst`.
    pub instance: String,
}

impl RelayIdentity {
    /// The file in the data directory holding the running relay's identity (JSON).
    pub const FILE: &'static str = "relay-identity.json";

    /// `name` with a fresh random instance id.
    pub fn new(name: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            instance: uuid::Uuid::new_v4().simple().to_string(),
        }
    }

    /// Writes the identity to `data_dir/`[`RelayIdentity::FILE`] (replacing it atomically).
    pub fn publish(&self, data_dir: &Path) -> std::io::Result<()> {
        let tmp = data_dir.join(format!("{}.tmp", Self::FILE));
        let json = serde_json::to_vec(self).map_err(std::io::Error::other)?;
        std::fs::write(&tmp, json)?;
        std::fs::rename(&tmp, data_dir.join(Self::FILE))
    }

    /// Reads the identity a relay published in `data_dir`.
    pub fn read_published(data_dir: &Path) -> std::io::Result<Self> {
        let bytes = std::fs::read(data_dir.join(Self::FILE))?;
        serde_json::from_slice(&bytes).map_err(std::io::Error::other)
    }
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

    /// Loads the key from `path` (`keys.relay_ticket_file`), which must exist: it is never
    /// created, so every node of a cluster mints and verifies with the same key. A missing or
    /// garbled file is an error naming the path.
    pub fn load(path: &Path, ttl: Duration) -> Result<Self, KeyError> {
        Ok(Self {
            key: EcKey::load(path)?,
            ttl,
        })
    }

    /// The key's id: the RFC 7638 thumbprint of its public key (equal ids, equal keys).
    pub fn key_id(&self) -> &str {
        &self.key.kid
    }

    /// Mints a ticket for one leg, for the relay `relay` (its current run).
    pub fn mint(
        &self,
        sid: &str,
        role: Role,
        mode: Mode,
        chat: bool,
        relay: &RelayIdentity,
    ) -> String {
        let now = now_secs();
        self.sign(&TicketClaims {
            iss: ISSUER.into(),
            aud: AUDIENCE.into(),
            sid: sid.into(),
            role,
            mode,
            chat,
            relay: relay.name.clone(),
            inst: relay.instance.clone(),
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

    /// Verifies a ticket for `relay`: signature, issuer, audience, expiry, then the ticket's
    /// `relay` must be the relay's name and its `inst` the relay's current instance.
    pub fn verify(&self, ticket: &str, relay: &RelayIdentity) -> Result<TicketClaims, TicketError> {
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
        if data.claims.relay != relay.name {
            return Err(TicketError::WrongRelay);
        }
        if data.claims.inst != relay.instance {
            return Err(TicketError::OtherInstance);
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
        let r1 = RelayIdentity::new("r:1");
        let t = a.mint("s1", Role::Helper, Mode::FullControl, true, &r1);
        let c = a.verify(&t, &r1).unwrap();
        assert_eq!(
            (c.sid.as_str(), c.role, c.mode, c.chat),
            ("s1", Role::Helper, Mode::FullControl, true)
        );
        assert_eq!(
            a.verify(&t, &RelayIdentity::new("r:2")).unwrap_err(),
            TicketError::WrongRelay
        );
        // The same relay restarted: a new instance, the old tickets are worthless.
        assert_eq!(
            a.verify(&t, &RelayIdentity::new("r:1")).unwrap_err(),
            TicketError::OtherInstance
        );
        let mut no_inst = c.clone();
        no_inst.inst = String::new();
        assert_eq!(
            a.verify(&a.sign(&no_inst), &r1).unwrap_err(),
            TicketError::OtherInstance
        );
        let dir2 = tempfile::tempdir().unwrap();
        r1.publish(dir2.path()).unwrap();
        assert_eq!(RelayIdentity::read_published(dir2.path()).unwrap(), r1);
        assert!(RelayIdentity::read_published(dir.path()).is_err());
        let mut expired = c.clone();
        expired.exp = now_secs() - 60;
        assert_eq!(
            a.verify(&a.sign(&expired), &r1).unwrap_err(),
            TicketError::Expired
        );
        let other = tempfile::tempdir().unwrap();
        let b = TicketAuthority::load_or_create(other.path(), DEFAULT_TTL).unwrap();
        assert_eq!(b.verify(&t, &r1).unwrap_err(), TicketError::Invalid);
        assert_eq!(a.verify("garbage", &r1).unwrap_err(), TicketError::Invalid);
    }

    #[test]
    fn load_uses_a_given_key_file_and_never_creates_one() {
        let dir = tempfile::tempdir().unwrap();
        let a = TicketAuthority::load_or_create(dir.path(), DEFAULT_TTL).unwrap();
        // The same file given as a path: the same key, so its tickets verify.
        let b = TicketAuthority::load(&dir.path().join(KEY_FILE), DEFAULT_TTL).unwrap();
        assert_eq!(a.key_id(), b.key_id());
        let r = RelayIdentity::new("r:1");
        let t = a.mint("s1", Role::Sharer, Mode::ViewOnly, false, &r);
        assert_eq!(b.verify(&t, &r).unwrap().sid, "s1");
        // Missing: an error naming the path, and no file made.
        let missing = dir.path().join("nope.pem");
        let e = TicketAuthority::load(&missing, DEFAULT_TTL).unwrap_err();
        assert!(e.to_string().contains("nope.pem"), "{e}");
        assert!(!missing.exists());
        // Short or garbled: an error naming the path.
        let pem = std::fs::read_to_string(dir.path().join(KEY_FILE)).unwrap();
        for (name, text) in [("short.pem", &pem[..pem.len() / 2]), ("junk.pem", "junk")] {
            let p = dir.path().join(name);
            std::fs::write(&p, text).unwrap();
            let e = TicketAuthority::load(&p, DEFAULT_TTL).unwrap_err();
            assert!(matches!(e, KeyError::BadKey { .. }), "{name}: {e}");
            assert!(e.to_string().contains(name), "{e}");
        }
        let other = tempfile::tempdir().unwrap();
        let c = TicketAuthority::load_or_create(other.path(), DEFAULT_TTL).unwrap();
        assert_ne!(a.key_id(), c.key_id(), "another key, another id");
    }
}
