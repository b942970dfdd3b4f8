//! The keys a cluster's nodes must share (`[keys]`): the relay-ticket key, the security-code
//! key and the dev issuer's key. A path given in `[keys]` is loaded and never created (a
//! missing, short or garbled file stops the start with an error naming the setting and the
//! path); without one, the data directory's own file is used, created on first start.
//!
//! [`keys_fingerprint`] condenses the three into one value nodes can compare (through the
//! cluster's registry) without revealing any key.

use anyhow::Context;
use assist_identity::DevIssuer;
use assist_relay::TicketAuthority;
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};
use std::path::Path;

use crate::config::Settings;

/// The setting and environment variable of each key file, for error messages.
const RELAY_TICKET: &str = "keys.relay_ticket_file (ASSIST_KEYS_RELAY_TICKET_FILE)";
const SIGNAL_CODE: &str = "keys.signal_code_file (ASSIST_KEYS_SIGNAL_CODE_FILE)";
const DEV_ISSUER: &str = "keys.dev_issuer_file (ASSIST_KEYS_DEV_ISSUER_FILE)";

fn given(setting: &str, path: &Path) -> String {
    format!("loading the key file {setting} = {}", path.display())
}

/// The relay-ticket key: `keys.relay_ticket_file`, or the data directory's file.
pub fn ticket_authority(settings: &Settings) -> anyhow::Result<TicketAuthority> {
    let ttl = assist_relay::ticket::DEFAULT_TTL;
    match &settings.keys.relay_ticket {
        Some(path) => TicketAuthority::load(path, ttl).with_context(|| given(RELAY_TICKET, path)),
        None => TicketAuthority::load_or_create(&settings.data_dir, ttl)
            .context("loading the relay ticket key"),
    }
}

/// The security-code key: `keys.signal_code_file`, or the data directory's file.
pub fn code_key(settings: &Settings) -> anyhow::Result<[u8; 32]> {
    match &settings.keys.signal_code {
        Some(path) => crate::signal::load_code_key(path).with_context(|| given(SIGNAL_CODE, path)),
        None => crate::signal::load_or_create_code_key(&settings.data_dir)
            .context("loading the security-code key"),
    }
}

/// The dev issuer's key: `keys.dev_issuer_file`, or the data directory's file. `assistd token`
/// uses this too, so the tokens it mints are the ones the server trusts.
pub fn dev_issuer(settings: &Settings) -> anyhow::Result<DevIssuer> {
    match &settings.keys.dev_issuer {
        Some(path) => DevIssuer::load(path).with_context(|| given(DEV_ISSUER, path)),
        None => DevIssuer::load_or_create(&settings.data_dir).context("loading the dev issuer key"),
    }
}

/// Domain separation of [`keys_fingerprint`]'s input.
const FINGERPRINT_DOMAIN: &[u8] = b"assist keys fingerprint v1";
/// What the security-code key's check value is an HMAC of.
const CODE_KEY_CHECK: &[u8] = b"assist signal-code key check";

/// A fingerprint of the keys a cluster shares, as 64 hex digits: SHA-256 over a
/// domain-separated encoding of, in this order, the relay-ticket key's id (the RFC 7638
/// thumbprint of its public key, [`TicketAuthority::key_id`]), a check value of the
/// security-code key (HMAC-SHA-256 of a fixed label under it; the key itself is not hashed),
/// and the dev issuer's key id or its absence (`None` when the dev issuer is off). Each part is
/// written as a tag byte, a presence byte and a big-endian `u32` length before its bytes, so no
/// two different inputs encode alike. Equal keys give equal fingerprints on every node; the
/// fingerprint reveals none of them.
pub fn keys_fingerprint(
    ticket_key_id: &str,
    code_key: &[u8; 32],
    dev_issuer_key_id: Option<&str>,
) -> String {
    let check = {
        // HMAC takes keys of any length: this cannot fail.
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(code_key)
            .unwrap_or_else(|_| unreachable!("HMAC accepts a 32-byte key"));
        mac.update(CODE_KEY_CHECK);
        mac.finalize().into_bytes()
    };
    let mut h = Sha256::new();
    h.update(FINGERPRINT_DOMAIN);
    let mut part = |tag: u8, value: Option<&[u8]>| {
        h.update([tag, u8::from(value.is_some())]);
        let v = value.unwrap_or_default();
        h.update((v.len() as u32).to_be_bytes());
        h.update(v);
    };
    part(1, Some(ticket_key_id.as_bytes()));
    part(2, Some(check.as_slice()));
    part(3, dev_issuer_key_id.map(str::as_bytes));
    h.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

/// Domain separation of [`ticket_key_fingerprint`]'s input.
const TICKET_FINGERPRINT_DOMAIN: &[u8] = b"assist ticket-key fingerprint v1";

/// The fingerprint of the relay-ticket key alone, as 64 hex digits: SHA-256 over a
/// domain-separated encoding of its key id ([`TicketAuthority::key_id`]). Relay-only nodes
/// hold no other shared key; every node compares this one (key `assist:cluster:ticket-key`).
pub fn ticket_key_fingerprint(ticket_key_id: &str) -> String {
    let mut h = Sha256::new();
    h.update(TICKET_FINGERPRINT_DOMAIN);
    h.update((ticket_key_id.len() as u32).to_be_bytes());
    h.update(ticket_key_id.as_bytes());
    h.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

/// A node whose keys differ from its cluster's: the start is refused (`assistd serve` exits
/// with status 2, as for a configuration error).
#[derive(Debug, thiserror::Error)]
#[error(
    "this node's {what} differs from the cluster's: give every node the same [keys] files \
     ({files})"
)]
pub struct KeysDiffer {
    /// What differs, in words.
    pub what: &'static str,
    /// The settings that name the files.
    pub files: &'static str,
}

/// Cluster mode, before a node serves: compares its keys with the cluster's through the
/// registry (the first node's keys win). Every node checks the relay-ticket key's fingerprint
/// ([`ticket_key_fingerprint`]); a node running the broker also checks `broker`, its
/// [`keys_fingerprint`]. A difference is a [`KeysDiffer`] error.
pub async fn check_cluster_keys(
    registry: &assist_live_redis::Registry,
    ticket_key_id: &str,
    broker: Option<&str>,
) -> anyhow::Result<()> {
    use assist_live_redis::KeysCheck;
    let log = |what: &str, check: &KeysCheck| match check {
        KeysCheck::Claimed => {
            tracing::info!("cluster keys: this node's {what} is now the cluster's (first node)")
        }
        KeysCheck::Matches => {
            tracing::info!("cluster keys: this node's {what} matches the cluster's")
        }
        KeysCheck::Differs { .. } => {}
    };
    let ticket = registry
        .claim_ticket_key(&ticket_key_fingerprint(ticket_key_id))
        .await
        .map_err(|e| anyhow::anyhow!("comparing the relay-ticket key with the cluster's: {e}"))?;
    if let KeysCheck::Differs { .. } = ticket {
        return Err(KeysDiffer {
            what: "relay-ticket key",
            files: RELAY_TICKET,
        }
        .into());
    }
    log("relay-ticket key", &ticket);
    if let Some(fingerprint) = broker {
        let all = registry
            .claim_keys(fingerprint)
            .await
            .map_err(|e| anyhow::anyhow!("comparing the keys with the cluster's: {e}"))?;
        if let KeysCheck::Differs { .. } = all {
            return Err(KeysDiffer {
                what: "signal-code key or dev issuer key (or whether the dev issuer is on)",
                files: "keys.signal_code_file, keys.dev_issuer_file, auth.dev_issuer",
            }
            .into());
        }
        log("signal-code and dev issuer keys", &all);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_fingerprint_changes_with_every_key_and_only_with_them() {
        let code = [7u8; 32];
        let base = keys_fingerprint("ticket-kid", &code, Some("dev-kid"));
        assert_eq!(base.len(), 64);
        assert!(base.bytes().all(|b| b.is_ascii_hexdigit()));
        assert_eq!(base, keys_fingerprint("ticket-kid", &code, Some("dev-kid")));
        let mut other_code = code;
        other_code[31] ^= 1;
        for changed in [
            keys_fingerprint("ticket-kie", &code, Some("dev-kid")),
            keys_fingerprint("ticket-kid", &other_code, Some("dev-kid")),
            keys_fingerprint("ticket-kid", &code, Some("dev-kie")),
            keys_fingerprint("ticket-kid", &code, None),
            keys_fingerprint("ticket-kid", &code, Some("")),
            // The parts are delimited: moving bytes between them changes the result.
            keys_fingerprint("ticket-ki", &code, Some("ddev-kid")),
        ] {
            assert_ne!(base, changed);
        }
        assert_ne!(
            keys_fingerprint("", &code, None),
            keys_fingerprint("", &code, Some(""))
        );
        // A fixed vector: nodes of different versions must agree on the encoding.
        assert_eq!(
            keys_fingerprint("kid", &[0u8; 32], None),
            "7af51039cb164e95c1db23701745764ffc1b32b2fc52d35a3c8c13da287e8f7f"
        );
        // The ticket key's own fingerprint: of the key id only, and never the full one's.
        let t = ticket_key_fingerprint("ticket-kid");
        assert_eq!(t.len(), 64);
        assert_eq!(t, ticket_key_fingerprint("ticket-kid"));
        assert_ne!(t, ticket_key_fingerprint("ticket-kie"));
        assert_ne!(t, base);
    }

    #[test]
    fn given_key_files_are_loaded_never_created_and_bad_ones_name_the_setting() {
        let dir = tempfile::tempdir().unwrap();
        let mut settings = Settings::ephemeral(dir.path());
        // Absent: the data directory's files, created on first use, the same after.
        let t = ticket_authority(&settings).unwrap();
        let c = code_key(&settings).unwrap();
        let d = dev_issuer(&settings).unwrap();
        assert_eq!(ticket_authority(&settings).unwrap().key_id(), t.key_id());
        assert_eq!(code_key(&settings).unwrap(), c);
        assert_eq!(dev_issuer(&settings).unwrap().kid(), d.kid());
        // Given: loaded from the path (here the same files, so the same keys).
        let keys = tempfile::tempdir().unwrap();
        let copy = |name: &str| {
            let to = keys.path().join(name);
            std::fs::copy(dir.path().join(name), &to).unwrap();
            to
        };
        settings.keys.relay_ticket = Some(copy(assist_relay::ticket::KEY_FILE));
        settings.keys.signal_code = Some(copy(crate::signal::CODE_KEY_FILE));
        settings.keys.dev_issuer = Some(copy(assist_identity::dev_issuer::KEY_FILE));
        let empty = tempfile::tempdir().unwrap();
        settings.data_dir = empty.path().to_path_buf();
        assert_eq!(ticket_authority(&settings).unwrap().key_id(), t.key_id());
        assert_eq!(code_key(&settings).unwrap(), c);
        assert_eq!(dev_issuer(&settings).unwrap().kid(), d.kid());
        assert_eq!(
            std::fs::read_dir(&settings.data_dir).unwrap().count(),
            0,
            "nothing was created in the data directory"
        );
        // Missing, short or garbled: an error naming the setting and the path; nothing made.
        let missing = keys.path().join("missing");
        let short = keys.path().join("short");
        std::fs::write(&short, [1u8; 16]).unwrap();
        let garbled = keys.path().join("garbled");
        std::fs::write(&garbled, "-----BEGIN PRIVATE KEY-----\nAAAA\n").unwrap();
        for bad in [&missing, &short, &garbled] {
            let mut s = settings.clone();
            s.keys.relay_ticket = Some(bad.clone());
            s.keys.signal_code = Some(bad.clone());
            s.keys.dev_issuer = Some(bad.clone());
            for (setting, e) in [
                ("keys.relay_ticket_file", ticket_authority(&s).err()),
                ("keys.signal_code_file", code_key(&s).err()),
                ("keys.dev_issuer_file", dev_issuer(&s).err()),
            ] {
                let e = format!("{:#}", e.expect("refused"));
                assert!(e.contains(setting), "{e}");
                assert!(e.contains(&bad.display().to_string()), "{e}");
            }
        }
        assert!(!missing.exists());
    }
}
