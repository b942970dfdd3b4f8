//! # assist-live
//!
//! The live state of the Assist broker (pending security codes, the directory of open
//! sessions, which connection holds which user or device) behind an async port, [`LiveStore`],
//! for the IO side. The session machine (`assist-session`) never calls a store: it emits
//! [`LiveOp`]s and [`LiveQuery`]s; the signalling driver carries them out here, in order, and
//! feeds each query's [`LiveAnswer`] back to the machine. Other tasks (the admin API,
//! metrics) read the store directly.
//!
//! - [`InProcessLiveState`]: one process, on concurrent hash maps ([`dashmap`]); every future
//!   it returns is ready at once, so the driver applies it inline.
//! - A networked store (Redis, for cluster mode) implements the same trait.
//! - [`contract`]: the one suite every implementation must pass (codes inserted only if
//!   absent, one winner among concurrent takes, conditional removal, presence sets, the
//!   session directory). This crate runs it against [`InProcessLiveState`].

use std::collections::BTreeSet;
use std::fmt;
use std::future::Future;
use std::pin::Pin;

use assist_session::code::CodeDigest;
use assist_session::{
    ConnId, DeviceRef, LiveAnswer, LiveCode, LiveOp, LiveQuery, LiveSession, SessionId, UserRef,
};
use dashmap::DashMap;

pub mod contract;

/// Why a store could not carry out an operation. A store returns it only when the operation
/// did not happen (or, for a read, returned nothing), so the machine may treat the request it
/// was for as not done.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LiveError(pub String);

impl fmt::Display for LiveError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "live state unavailable: {}", self.0)
    }
}

impl std::error::Error for LiveError {}

/// What a [`LiveStore`] method returns: a boxed future, so the trait can be used as
/// `dyn LiveStore`.
pub type LiveFuture<'a, T> = Pin<Box<dyn Future<Output = Result<T, LiveError>> + Send + 'a>>;

fn ready<'a, T: Send + 'a>(value: T) -> LiveFuture<'a, T> {
    Box::pin(std::future::ready(Ok(value)))
}

/// The live state shared by the brokers of a deployment.
///
/// Ordering: the in-process driver awaits each [`LiveStore::apply`] and [`LiveStore::query`]
/// before the next, in the order the machine emitted them; an implementation may pipeline them
/// as long as their effects keep that order. (In cluster mode the driver sends the machine's
/// ops and queries through its ordered outbox, `assist_live_redis::RedisLive::run_batch`,
/// rather than through this trait.)
pub trait LiveStore: Send + Sync + fmt::Debug {
    /// Applies a write.
    fn apply(&self, op: LiveOp) -> LiveFuture<'_, ()>;
    /// Carries out a query and answers it (never with [`LiveAnswer::Failed`]: that is what the
    /// driver answers the machine when this returns an error).
    fn query(&self, query: LiveQuery) -> LiveFuture<'_, LiveAnswer>;
    /// A session's directory entry.
    fn session<'a>(&'a self, id: &'a SessionId) -> LiveFuture<'a, Option<LiveSession>>;
    /// Every open session of a tenant, ordered by id.
    fn tenant_sessions<'a>(
        &'a self,
        tenant_id: &'a str,
    ) -> LiveFuture<'a, Vec<(SessionId, LiveSession)>>;
    /// How many sessions are listed.
    fn session_count(&self) -> LiveFuture<'_, usize>;
    /// How many codes (pending and remembered-expired) are stored.
    fn code_count(&self) -> LiveFuture<'_, usize>;
    /// The connections of a device, in ascending order.
    fn device_connections<'a>(&'a self, device: &'a DeviceRef) -> LiveFuture<'a, Vec<ConnId>>;
    /// The connections of a user, in ascending order.
    fn user_connections<'a>(&'a self, user: &'a UserRef) -> LiveFuture<'a, Vec<ConnId>>;
}

/// The single-process [`LiveStore`], on concurrent hash maps: the driver task writes it and
/// other tasks read it concurrently. Its synchronous methods are what the trait's (ready)
/// futures run.
#[derive(Debug, Default)]
pub struct InProcessLiveState {
    codes: DashMap<CodeDigest, LiveCode>,
    devices: DashMap<DeviceRef, BTreeSet<ConnId>>,
    users: DashMap<UserRef, BTreeSet<ConnId>>,
    sessions: DashMap<SessionId, LiveSession>,
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

fn listed(
    set: Option<dashmap::mapref::one::Ref<'_, impl std::hash::Hash + Eq, BTreeSet<ConnId>>>,
) -> Vec<ConnId> {
    set.map(|s| s.iter().copied().collect()).unwrap_or_default()
}

impl InProcessLiveState {
    /// An empty state.
    pub fn new() -> Self {
        Self::default()
    }

    /// [`LiveStore::apply`], synchronously.
    pub fn apply_now(&self, op: LiveOp) {
        match op {
            LiveOp::AddConnection { conn, user, device } => {
                if let Some(device) = device {
                    add_to(&self.devices, device, conn);
                }
                if let Some(user) = user {
                    add_to(&self.users, user, conn);
                }
            }
            LiveOp::RemoveConnection { conn, user, device } => {
                if let Some(device) = device {
                    remove_from(&self.devices, &device, conn);
                }
                if let Some(user) = user {
                    remove_from(&self.users, &user, conn);
                }
            }
            LiveOp::PutSession { id, session } => {
                self.sessions.insert(id, session);
            }
            LiveOp::RemoveSession { id } => {
                self.sessions.remove(&id);
            }
            LiveOp::ReplaceCode { digest, code } => {
                self.codes.insert(digest, code);
            }
            LiveOp::RemoveCodeIf { digest, expected } => {
                self.codes.remove_if(&digest, |_, code| *code == expected);
            }
        }
    }

    /// [`LiveStore::query`], synchronously.
    pub fn query_now(&self, query: LiveQuery) -> LiveAnswer {
        match query {
            LiveQuery::InsertCode { digest, code } => match self.codes.entry(digest) {
                dashmap::Entry::Occupied(_) => LiveAnswer::Inserted(false),
                dashmap::Entry::Vacant(v) => {
                    v.insert(code);
                    LiveAnswer::Inserted(true)
                }
            },
            LiveQuery::GetCode { digest } => LiveAnswer::Code(
                self.codes
                    .get(&digest)
                    .map(|e| (e.key().clone(), e.value().clone())),
            ),
            LiveQuery::TakeCodeIf { digest, expected } => LiveAnswer::Taken(
                self.codes
                    .remove_if(&digest, |_, code| *code == expected)
                    .map(|(_, code)| code),
            ),
        }
    }

    /// A session's entry.
    pub fn session_now(&self, id: &SessionId) -> Option<LiveSession> {
        self.sessions.get(id).map(|e| e.value().clone())
    }

    /// Every open session of a tenant, ordered by id.
    pub fn tenant_sessions_now(&self, tenant_id: &str) -> Vec<(SessionId, LiveSession)> {
        let mut out: Vec<_> = self
            .sessions
            .iter()
            .filter(|e| e.value().tenant_id == tenant_id)
            .map(|e| (e.key().clone(), e.value().clone()))
            .collect();
        out.sort_by(|a, b| a.0.cmp(&b.0));
        out
    }

    /// How many users have at least one connection (presence forgets the others).
    pub fn users_present(&self) -> usize {
        self.users.len()
    }

    /// How many devices have at least one connection.
    pub fn devices_present(&self) -> usize {
        self.devices.len()
    }
}

impl LiveStore for InProcessLiveState {
    fn apply(&self, op: LiveOp) -> LiveFuture<'_, ()> {
        self.apply_now(op);
        ready(())
    }

    fn query(&self, query: LiveQuery) -> LiveFuture<'_, LiveAnswer> {
        ready(self.query_now(query))
    }

    fn session<'a>(&'a self, id: &'a SessionId) -> LiveFuture<'a, Option<LiveSession>> {
        ready(self.session_now(id))
    }

    fn tenant_sessions<'a>(
        &'a self,
        tenant_id: &'a str,
    ) -> LiveFuture<'a, Vec<(SessionId, LiveSession)>> {
        ready(self.tenant_sessions_now(tenant_id))
    }

    fn session_count(&self) -> LiveFuture<'_, usize> {
        ready(self.sessions.len())
    }

    fn code_count(&self) -> LiveFuture<'_, usize> {
        ready(self.codes.len())
    }

    fn device_connections<'a>(&'a self, device: &'a DeviceRef) -> LiveFuture<'a, Vec<ConnId>> {
        ready(listed(self.devices.get(device)))
    }

    fn user_connections<'a>(&'a self, user: &'a UserRef) -> LiveFuture<'a, Vec<ConnId>> {
        ready(listed(self.users.get(user)))
    }
}
