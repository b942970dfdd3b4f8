//! The Redis key space, every key under the prefix `assist:` (see `docs/architecture.md`,
//! "Cluster: the Redis key space"). Parts that come from outside (tenant, user and device ids)
//! are length-prefixed where two of them meet, so no two different names map to one key.

use assist_session::code::CodeDigest;
use assist_session::{DeviceRef, UserRef};

/// Every key starts with this.
pub const PREFIX: &str = "assist:";
/// Hash: session id → encoded `{node, tenant, entry}`.
pub const SESSIONS: &str = "assist:sessions";
/// Prefix of a tenant's session index (sorted set, score 0, members session ids in byte
/// order): `assist:tenant-sessions:<tenant>`.
pub const TENANT_SESSIONS: &str = "assist:tenant-sessions:";
/// Prefix of a node's session index (set of session ids): `assist:node-sessions:<node>`.
pub const NODE_SESSIONS: &str = "assist:node-sessions:";
/// Prefix of a node's presence index (set of `"<member>\n<presence key>"`):
/// `assist:node-presence:<node>`.
pub const NODE_PRESENCE: &str = "assist:node-presence:";
/// Hash: node id → encoded [`crate::NodeRecord`].
pub const NODES: &str = "assist:nodes";
/// The shared-keys fingerprint of the cluster (a string, no TTL).
pub const CLUSTER_KEYS: &str = "assist:cluster:keys";
/// The fingerprint of the cluster's relay-ticket key alone (a string, no TTL).
pub const CLUSTER_TICKET_KEY: &str = "assist:cluster:ticket-key";
/// The broadcast channel.
pub const BROADCAST: &str = "assist:all";

fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(DIGITS[usize::from(b >> 4)] as char);
        s.push(DIGITS[usize::from(b & 0xf)] as char);
    }
    s
}

/// A code's key: `assist:code:<hex digest>` (a keyed digest, never the code).
pub fn code(digest: &CodeDigest) -> String {
    format!("assist:code:{}", hex(&digest.0))
}

/// The pattern matching every code key.
pub const CODE_PATTERN: &str = "assist:code:*";

/// A tenant's session index.
pub fn tenant_sessions(tenant_id: &str) -> String {
    format!("{TENANT_SESSIONS}{tenant_id}")
}

/// A node's session index.
pub fn node_sessions(node_id: &str) -> String {
    format!("{NODE_SESSIONS}{node_id}")
}

/// A node's presence index.
pub fn node_presence(node_id: &str) -> String {
    format!("{NODE_PRESENCE}{node_id}")
}

/// A device's presence set (members `"<node>/<conn>"`):
/// `assist:device:<tenant length>:<tenant>:<device>`.
pub fn device(device: &DeviceRef) -> String {
    format!(
        "assist:device:{}:{}:{}",
        device.tenant_id.len(),
        device.tenant_id,
        device.device_id
    )
}

/// A user's presence set (members `"<node>/<conn>"`):
/// `assist:user:<tenant length>:<tenant>:<user>`.
pub fn user(user: &UserRef) -> String {
    format!(
        "assist:user:{}:{}:{}",
        user.tenant_id.len(),
        user.tenant_id,
        user.user_id
    )
}

/// A node's alive key (its heartbeat time, with a TTL): `assist:alive:<node>`.
pub fn alive(node_id: &str) -> String {
    format!("assist:alive:{node_id}")
}

/// The claim on the sweep of stale session records: `assist:sweep`.
pub const SWEEP: &str = "assist:sweep";

/// The lock a survivor takes to clean up after a dead node: `assist:cleanup:<node>`.
pub fn cleanup(node_id: &str) -> String {
    format!("assist:cleanup:{node_id}")
}

/// A node's own channel: `assist:to:<node>`.
pub fn to_node(node_id: &str) -> String {
    format!("assist:to:{node_id}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_unambiguous_and_prefixed() {
        let d = |t: &str, i: &str| {
            device(&DeviceRef {
                tenant_id: t.into(),
                device_id: i.into(),
            })
        };
        assert_ne!(d("a:b", "c"), d("a", "b:c"));
        assert_eq!(d("t1", "dev"), "assist:device:2:t1:dev");
        let u = user(&UserRef {
            tenant_id: "t1".into(),
            user_id: "u".into(),
        });
        assert_eq!(u, "assist:user:2:t1:u");
        assert_eq!(
            code(&CodeDigest([0xab; 32])),
            format!("assist:code:{}", "ab".repeat(32))
        );
        for k in [
            SESSIONS,
            TENANT_SESSIONS,
            NODE_SESSIONS,
            NODE_PRESENCE,
            NODES,
            CLUSTER_KEYS,
            CLUSTER_TICKET_KEY,
            BROADCAST,
            &alive("n"),
            &cleanup("n"),
            &to_node("n"),
        ] {
            assert!(k.starts_with(PREFIX), "{k}");
        }
    }
}
