//! [`Registry`]: the nodes of a cluster, their heartbeat and load, the cleanup claim for a dead
//! node, and the cluster's shared-keys fingerprint.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::{check_node_id, connect_manager, keys, Conn, LiveError, RedisOptions};

/// What a node serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Roles {
    /// Signalling (codes, sessions, the admin API).
    pub broker: bool,
    /// The relay.
    pub relay: bool,
}

/// How clients reach a node's relay (what a ticket names).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RelayAd {
    /// The relay's name.
    pub name: String,
    /// Its per-start instance.
    pub inst: String,
    /// `host:port` of its WSS endpoint.
    pub address: String,
    /// `host:port` of its QUIC endpoint, if it has one.
    #[serde(default)]
    pub quic_addr: Option<String>,
}

/// A node's load, as placement reads it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Load {
    /// Open signalling connections.
    pub connections: u64,
    /// Open sessions it owns.
    pub sessions: u64,
    /// Relay sessions it carries.
    pub relay_sessions: u64,
}

/// A node's entry in the registry (hash `assist:nodes`, JSON).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeRecord {
    /// The node id.
    pub node_id: String,
    /// What it serves.
    pub roles: Roles,
    /// Its relay, when it runs one.
    #[serde(default)]
    pub relay: Option<RelayAd>,
    /// Its load at the last heartbeat.
    #[serde(default)]
    pub load: Load,
    /// Whether it is draining (no new sessions placed on it).
    #[serde(default)]
    pub draining: bool,
    /// When it started (ms since the Unix epoch).
    pub started_at_ms: u64,
    /// When it wrote this record (ms since the Unix epoch).
    pub heartbeat_at_ms: u64,
}

/// What [`Registry::claim_keys`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeysCheck {
    /// The cluster's fingerprint is this node's.
    Matches,
    /// There was none: this node's is now the cluster's.
    Claimed,
    /// The cluster has another: this node must not join.
    Differs {
        /// The cluster's fingerprint.
        existing: String,
    },
}

/// The node registry. Cheap to clone.
#[derive(Clone)]
pub struct Registry {
    conn: Conn,
    node: Arc<str>,
}

impl fmt::Debug for Registry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Registry")
            .field("node", &self.node)
            .finish_non_exhaustive()
    }
}

fn ms(d: Duration) -> u64 {
    (d.as_millis() as u64).max(1)
}

impl Registry {
    pub(crate) fn new(conn: Conn, node: &str) -> Self {
        Registry {
            conn,
            node: node.into(),
        }
    }

    /// Connects as node `node_id` (a [`crate::RedisLive`] gives one on its connection:
    /// [`crate::RedisLive::registry`]).
    pub async fn connect(
        url: &str,
        node_id: &str,
        opts: RedisOptions,
    ) -> Result<Registry, LiveError> {
        check_node_id(node_id)?;
        let conn = connect_manager(url, &opts).await?;
        Ok(Registry::new(conn, node_id))
    }

    /// Writes `record` and renews its node's alive key for `ttl` (give 3 × the heartbeat
    /// interval), in one transaction.
    pub async fn heartbeat(&self, record: &NodeRecord, ttl: Duration) -> Result<(), LiveError> {
        check_node_id(&record.node_id)?;
        let json = serde_json::to_vec(record)
            .map_err(|e| LiveError(format!("encoding a node record: {e}")))?;
        let mut p = redis::pipe();
        p.atomic()
            .hset(keys::NODES, &record.node_id, json)
            .ignore()
            .cmd("SET")
            .arg(keys::alive(&record.node_id))
            .arg(record.heartbeat_at_ms)
            .arg("PX")
            .arg(ms(ttl))
            .ignore();
        self.conn.exec("heartbeat", &p).await
    }

    /// Every registered node with whether its alive key is still there, by node id. A record
    /// that does not decode (a newer or broken writer) is left out, with a warning.
    pub async fn nodes(&self) -> Result<Vec<(NodeRecord, bool)>, LiveError> {
        let mut cmd = redis::cmd("HGETALL");
        cmd.arg(keys::NODES);
        let all: Vec<(String, Vec<u8>)> = self.conn.cmd("nodes", &cmd).await?;
        let mut records = Vec::with_capacity(all.len());
        for (id, bytes) in all {
            match serde_json::from_slice::<NodeRecord>(&bytes) {
                Ok(r) if r.node_id == id => records.push(r),
                Ok(r) => tracing::warn!(
                    node = %id,
                    record = %r.node_id,
                    "registry: a node record under another node's id; skipped"
                ),
                Err(e) => {
                    tracing::warn!(node = %id, error = %e, "registry: a node record does not decode; skipped")
                }
            }
        }
        if records.is_empty() {
            return Ok(Vec::new());
        }
        let mut p = redis::pipe();
        for r in &records {
            p.exists(keys::alive(&r.node_id));
        }
        let alive: Vec<bool> = self.conn.pipe("nodes", &p).await?;
        let mut out: Vec<(NodeRecord, bool)> = records.into_iter().zip(alive).collect();
        out.sort_by(|a, b| a.0.node_id.cmp(&b.0.node_id));
        Ok(out)
    }

    /// Removes a node's record and alive key (a node leaving, or a survivor done with a dead
    /// node's cleanup).
    pub async fn remove(&self, node_id: &str) -> Result<(), LiveError> {
        let mut p = redis::pipe();
        p.atomic()
            .hdel(keys::NODES, node_id)
            .ignore()
            .del(keys::alive(node_id))
            .ignore();
        self.conn.exec("remove node", &p).await
    }

    /// Claims the cleanup of dead node `dead_node` for `ttl` (SET NX with a TTL): of the
    /// survivors racing for it, exactly one gets `true` until the claim expires.
    pub async fn claim_cleanup(&self, dead_node: &str, ttl: Duration) -> Result<bool, LiveError> {
        self.claim("claim cleanup", &keys::cleanup(dead_node), ttl)
            .await
    }

    /// Claims the cluster's sweep of stale session records for `ttl` (one node sweeps per
    /// period: key `assist:sweep`, holding the claimant's id). Whether this node won it.
    pub async fn claim_sweep(&self, ttl: Duration) -> Result<bool, LiveError> {
        self.claim("claim sweep", keys::SWEEP, ttl).await
    }

    /// Sets `key` to this node's id for `ttl` if no one holds it (SET NX PX): whether it did.
    async fn claim(&self, what: &str, key: &str, ttl: Duration) -> Result<bool, LiveError> {
        let mut cmd = redis::cmd("SET");
        cmd.arg(key)
            .arg(&*self.node)
            .arg("NX")
            .arg("PX")
            .arg(ms(ttl));
        let set: Option<String> = self.conn.cmd(what, &cmd).await?;
        Ok(set.is_some())
    }

    /// Compares this node's shared-keys fingerprint with the cluster's (key
    /// `assist:cluster:keys`), claiming it for the cluster if there is none yet.
    pub async fn claim_keys(&self, fingerprint: &str) -> Result<KeysCheck, LiveError> {
        self.claim_fingerprint(keys::CLUSTER_KEYS, fingerprint)
            .await
    }

    /// As [`Registry::claim_keys`] for the fingerprint of the relay-ticket key alone (key
    /// `assist:cluster:ticket-key`): the one key relay-only nodes hold, which every node
    /// (brokers too) must share.
    pub async fn claim_ticket_key(&self, fingerprint: &str) -> Result<KeysCheck, LiveError> {
        self.claim_fingerprint(keys::CLUSTER_TICKET_KEY, fingerprint)
            .await
    }

    async fn claim_fingerprint(
        &self,
        key: &str,
        fingerprint: &str,
    ) -> Result<KeysCheck, LiveError> {
        // SET NX, then read what is there (nothing deletes the key, so a failed SET NX is
        // followed by a value; a second round covers an operator deleting it in between).
        for _ in 0..2 {
            let mut set = redis::cmd("SET");
            set.arg(key).arg(fingerprint).arg("NX");
            let claimed: Option<String> = self.conn.cmd("claim keys", &set).await?;
            if claimed.is_some() {
                return Ok(KeysCheck::Claimed);
            }
            let mut get = redis::cmd("GET");
            get.arg(key);
            let existing: Option<String> = self.conn.cmd("claim keys", &get).await?;
            match existing {
                Some(e) if e == fingerprint => return Ok(KeysCheck::Matches),
                Some(existing) => return Ok(KeysCheck::Differs { existing }),
                None => continue,
            }
        }
        Err(LiveError(
            "redis claim keys: the cluster's key fingerprint keeps disappearing".into(),
        ))
    }
}
