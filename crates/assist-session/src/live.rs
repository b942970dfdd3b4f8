//! Live state: what the brokers of a cluster must share about what is happening *now*:
//! pending security codes, the directory of open sessions, and which connection holds which
//! user or device.
//!
//! The [`Broker`](crate::Broker) keeps this state behind the [`LiveState`] trait, not in maps
//! of its own, so cluster mode can put it in Redis and route messages between nodes. The
//! state that only makes sense on the node holding a connection (request buckets, abuse
//! strikes, the session's stage and deadlines) stays inside the broker.
//!
//! [`InProcessLiveState`] is the single-process implementation, on [`dashmap`]: the driver
//! task writes it and other tasks (the admin API, metrics) may read it concurrently without
//! going through the driver.
//!
//! Semantics every implementation must keep (the broker relies on them, and
//! `tests` below checks them for the in-process one):
//! - [`LiveState::insert_code`] inserts only if the digest is absent (codes are unique across
//!   the cluster), and [`LiveState::take_code_if`] removes atomically, so one redemption wins.
//! - Connection sets are sets: adding a connection twice keeps one, removing the last one
//!   forgets the user or device.
//! - Connection ids are node-local numbers. A shared implementation qualifies them with the
//!   node that holds them; the in-process one has one node.

use std::collections::BTreeSet;
use std::fmt;

use assist_policy::Mode;
use dashmap::DashMap;

use crate::code::CodeDigest;
use crate::message::SessionId;
use crate::output::ConnId;
use crate::party::UserRef;
use crate::time::Timestamp;

/// A security code as the live state keeps it, under its digest (never the code itself).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LiveCode {
    /// Waiting for a sharer to redeem it; the session it opens.
    Pending(SessionId),
    /// It expired unredeemed; remembered until `forget_at` so redeeming it says "expired".
    Expired {
        /// When to forget it.
        forget_at: Timestamp,
    },
}

/// Where a session stands, as coarse as a directory needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LiveStage {
    /// A code or a launch is out; no sharer yet.
    Pending,
    /// The sharer joined; no mode granted yet (a request or consent may be in flight).
    Joined,
    /// A mode was granted; the relay carries the session.
    Active,
}

/// A session's entry in the live directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LiveSession {
    /// The tenant.
    pub tenant_id: String,
    /// Coarse stage.
    pub stage: LiveStage,
    /// The mode in force, once active.
    pub mode: Option<Mode>,
    /// Whether chat is allowed now.
    pub chat: bool,
    /// The helper (an admin launch may name one with no connection yet).
    pub helper: Option<UserRef>,
    /// The helper's connection, when attached.
    pub helper_conn: Option<ConnId>,
    /// The sharer's user; `None` before joining and for a device token.
    pub sharer: Option<UserRef>,
    /// The sharer's connection, once joined.
    pub sharer_conn: Option<ConnId>,
    /// The device of a launch, or of the sharer's connection.
    pub device_id: Option<String>,
}

/// The live state shared by the brokers of a deployment. All methods are synchronous and
/// short; a networked implementation keeps a local replica for reads and writes through.
pub trait LiveState: Send + Sync + fmt::Debug {
    /// Stores `code` under `digest` unless the digest is already taken; `true` if stored.
    fn insert_code(&self, digest: &CodeDigest, code: LiveCode) -> bool;
    /// Stores `code` under `digest`, replacing what was there.
    fn replace_code(&self, digest: &CodeDigest, code: LiveCode);
    /// The stored digest (for the constant-time comparison) and entry, if any.
    fn code(&self, digest: &CodeDigest) -> Option<(CodeDigest, LiveCode)>;
    /// Removes the entry under `digest` if `keep` says so, atomically; returns what was removed.
    fn take_code_if(
        &self,
        digest: &CodeDigest,
        take: &dyn Fn(&LiveCode) -> bool,
    ) -> Option<LiveCode>;
    /// How many codes (pending and remembered-expired) are stored.
    fn code_count(&self) -> usize;

    /// A connection opened for `user` and/or `device` (tenant, device id).
    fn add_connection(&self, conn: ConnId, user: Option<&UserRef>, device: Option<(&str, &str)>);
    /// The connection closed; the same `user` and `device` as when it was added.
    fn remove_connection(&self, conn: ConnId, user: Option<&UserRef>, device: Option<(&str, &str)>);
    /// The connections of a device in a tenant, in ascending order.
    fn device_connections(&self, tenant_id: &str, device_id: &str) -> Vec<ConnId>;
    /// The connections of a user, in ascending order.
    fn user_connections(&self, user: &UserRef) -> Vec<ConnId>;

    /// Creates or replaces a session's directory entry.
    fn put_session(&self, id: &SessionId, session: LiveSession);
    /// Removes a session's entry (it ended).
    fn remove_session(&self, id: &SessionId);
    /// A session's entry.
    fn session(&self, id: &SessionId) -> Option<LiveSession>;
    /// Every open session of a tenant, ordered by id.
    fn tenant_sessions(&self, tenant_id: &str) -> Vec<(SessionId, LiveSession)>;
    /// How many sessions are open.
    fn session_count(&self) -> usize;
}

/// The single-process [`LiveState`], on concurrent hash maps.
#[derive(Debug, Default)]
pub struct InProcessLiveState {
    codes: DashMap<CodeDigest, LiveCode>,
    devices: DashMap<(String, String), BTreeSet<ConnId>>,
    users: DashMap<UserRef, BTreeSet<ConnId>>,
    sessions: DashMap<SessionId, LiveSession>,
}

impl InProcessLiveState {
    /// An empty state.
    pub fn new() -> Self {
        Self::default()
    }
}

fn add_to<K: std::hash::Hash + Eq>(map: &DashMap<K, BTreeSet<ConnId>>, key: K, conn: ConnId) {
    map.entry(key).or_default().insert(conn);
}

fn remove_from<K: std::hash::Hash + Eq>(map: &DashMap<K, BTreeSet<ConnId>>, key: &K, conn: ConnId) {
    // The entry guard is dropped before `remove_if` takes the shard lock again.
    if let Some(mut set) = map.get_mut(key) {
        set.remove(&conn);
    }
    map.remove_if(key, |_, set| set.is_empty());
}

impl LiveState for InProcessLiveState {
    fn insert_code(&self, digest: &CodeDigest, code: LiveCode) -> bool {
        match self.codes.entry(digest.clone()) {
            dashmap::Entry::Occupied(_) => false,
            dashmap::Entry::Vacant(v) => {
                v.insert(code);
                true
            }
        }
    }

    fn replace_code(&self, digest: &CodeDigest, code: LiveCode) {
        self.codes.insert(digest.clone(), code);
    }

    fn code(&self, digest: &CodeDigest) -> Option<(CodeDigest, LiveCode)> {
        self.codes
            .get(digest)
            .map(|e| (e.key().clone(), e.value().clone()))
    }

    fn take_code_if(
        &self,
        digest: &CodeDigest,
        take: &dyn Fn(&LiveCode) -> bool,
    ) -> Option<LiveCode> {
        self.codes
            .remove_if(digest, |_, code| take(code))
            .map(|(_, code)| code)
    }

    fn code_count(&self) -> usize {
        self.codes.len()
    }

    fn add_connection(&self, conn: ConnId, user: Option<&UserRef>, device: Option<(&str, &str)>) {
        if let Some((tenant, device)) = device {
            add_to(&self.devices, (tenant.to_owned(), device.to_owned()), conn);
        }
        if let Some(user) = user {
            add_to(&self.users, user.clone(), conn);
        }
    }

    fn remove_connection(
        &self,
        conn: ConnId,
        user: Option<&UserRef>,
        device: Option<(&str, &str)>,
    ) {
        if let Some((tenant, device)) = device {
            remove_from(&self.devices, &(tenant.to_owned(), device.to_owned()), conn);
        }
        if let Some(user) = user {
            remove_from(&self.users, user, conn);
        }
    }

    fn device_connections(&self, tenant_id: &str, device_id: &str) -> Vec<ConnId> {
        self.devices
            .get(&(tenant_id.to_owned(), device_id.to_owned()))
            .map(|set| set.iter().copied().collect())
            .unwrap_or_default()
    }

    fn user_connections(&self, user: &UserRef) -> Vec<ConnId> {
        self.users
            .get(user)
            .map(|set| set.iter().copied().collect())
            .unwrap_or_default()
    }

    fn put_session(&self, id: &SessionId, session: LiveSession) {
        self.sessions.insert(id.clone(), session);
    }

    fn remove_session(&self, id: &SessionId) {
        self.sessions.remove(id);
    }

    fn session(&self, id: &SessionId) -> Option<LiveSession> {
        self.sessions.get(id).map(|e| e.value().clone())
    }

    fn tenant_sessions(&self, tenant_id: &str) -> Vec<(SessionId, LiveSession)> {
        let mut out: Vec<_> = self
            .sessions
            .iter()
            .filter(|e| e.value().tenant_id == tenant_id)
            .map(|e| (e.key().clone(), e.value().clone()))
            .collect();
        out.sort_by(|a, b| a.0.cmp(&b.0));
        out
    }

    fn session_count(&self) -> usize {
        self.sessions.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::BTreeMap;

    fn digest(n: u8) -> CodeDigest {
        CodeDigest([n; 32])
    }

    fn sid(n: u8) -> SessionId {
        SessionId(format!("{n:032x}"))
    }

    fn user(n: u8) -> UserRef {
        UserRef {
            tenant_id: "t".into(),
            user_id: format!("u{n}"),
        }
    }

    #[test]
    fn a_code_digest_is_taken_once() {
        let live = InProcessLiveState::new();
        assert!(live.insert_code(&digest(1), LiveCode::Pending(sid(1))));
        assert!(!live.insert_code(&digest(1), LiveCode::Pending(sid(2))));
        assert_eq!(
            live.code(&digest(1)),
            Some((digest(1), LiveCode::Pending(sid(1))))
        );
        assert_eq!(live.code_count(), 1);
    }

    #[test]
    fn take_code_if_removes_only_when_the_predicate_holds() {
        let live = InProcessLiveState::new();
        live.replace_code(
            &digest(1),
            LiveCode::Expired {
                forget_at: Timestamp::from_millis(10),
            },
        );
        let due = |now: u64| move |c: &LiveCode| matches!(c, LiveCode::Expired { forget_at } if forget_at.as_millis() <= now);
        assert_eq!(live.take_code_if(&digest(1), &due(5)), None);
        assert!(live.code(&digest(1)).is_some());
        assert!(live.take_code_if(&digest(1), &due(10)).is_some());
        assert_eq!(live.code(&digest(1)), None);
        assert_eq!(live.take_code_if(&digest(1), &|_| true), None);
    }

    #[test]
    fn concurrent_redemptions_of_one_code_have_one_winner() {
        let live = std::sync::Arc::new(InProcessLiveState::new());
        live.insert_code(&digest(7), LiveCode::Pending(sid(7)));
        let winners: usize = (0..8)
            .map(|_| {
                let live = live.clone();
                std::thread::spawn(move || {
                    usize::from(
                        live.take_code_if(&digest(7), &|c| matches!(c, LiveCode::Pending(_)))
                            .is_some(),
                    )
                })
            })
            .collect::<Vec<_>>()
            .into_iter()
            .map(|h| h.join().unwrap_or(0))
            .sum();
        assert_eq!(winners, 1);
    }

    #[test]
    fn the_session_directory_lists_a_tenants_sessions_in_order() {
        let live = InProcessLiveState::new();
        let entry = |tenant: &str| LiveSession {
            tenant_id: tenant.into(),
            stage: LiveStage::Pending,
            mode: None,
            chat: true,
            helper: Some(user(1)),
            helper_conn: Some(ConnId(1)),
            sharer: None,
            sharer_conn: None,
            device_id: None,
        };
        live.put_session(&sid(3), entry("a"));
        live.put_session(&sid(1), entry("a"));
        live.put_session(&sid(2), entry("b"));
        let ids: Vec<_> = live
            .tenant_sessions("a")
            .into_iter()
            .map(|(id, _)| id)
            .collect();
        assert_eq!(ids, vec![sid(1), sid(3)]);
        live.remove_session(&sid(1));
        assert_eq!(live.session_count(), 2);
        assert_eq!(live.session(&sid(1)), None);
        assert_eq!(live.session(&sid(2)).map(|s| s.tenant_id), Some("b".into()));
    }

    #[derive(Debug, Clone)]
    enum Op {
        Add(u8, Option<u8>, Option<u8>),
        Remove(u8),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            (
                0u8..6,
                proptest::option::of(0u8..3),
                proptest::option::of(0u8..3)
            )
                .prop_map(|(c, u, d)| Op::Add(c, u, d)),
            (0u8..6).prop_map(Op::Remove),
        ]
    }

    proptest! {
        /// Presence matches a plain model after any sequence of opens and closes, and forgets
        /// users and devices whose last connection closed.
        #[test]
        fn presence_matches_a_model(ops in proptest::collection::vec(op(), 0..60)) {
            let live = InProcessLiveState::new();
            // conn -> (user, device) for open connections, as the broker would remember them.
            let mut open: BTreeMap<u8, (Option<u8>, Option<u8>)> = BTreeMap::new();
            for op in ops {
                match op {
                    Op::Add(c, u, d) => {
                        if open.contains_key(&c) { continue; }
                        let device = d.map(|d| format!("d{d}"));
                        live.add_connection(ConnId(c.into()), u.map(user).as_ref(), device.as_deref().map(|d| ("t", d)));
                        open.insert(c, (u, d));
                    }
                    Op::Remove(c) => {
                        let Some((u, d)) = open.remove(&c) else { continue };
                        let device = d.map(|d| format!("d{d}"));
                        live.remove_connection(ConnId(c.into()), u.map(user).as_ref(), device.as_deref().map(|d| ("t", d)));
                    }
                }
            }
            for n in 0..3u8 {
                let by_user: Vec<ConnId> = open.iter().filter(|(_, (u, _))| *u == Some(n)).map(|(c, _)| ConnId((*c).into())).collect();
                prop_assert_eq!(live.user_connections(&user(n)), by_user);
                let by_device: Vec<ConnId> = open.iter().filter(|(_, (_, d))| *d == Some(n)).map(|(c, _)| ConnId((*c).into())).collect();
                prop_assert_eq!(live.device_connections("t", &format!("d{n}")), by_device);
            }
            prop_assert_eq!(live.users.len(), open.values().filter_map(|(u, _)| *u).collect::<BTreeSet<_>>().len());
            prop_assert_eq!(live.devices.len(), open.values().filter_map(|(_, d)| *d).collect::<BTreeSet<_>>().len());
        }
    }
}
