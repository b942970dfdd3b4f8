//! Live state as a port: what the brokers of a cluster must share about what is happening
//! *now* (pending security codes, the directory of open sessions, which connection holds which
//! user or device), described as operations the machine emits and never carries out itself.
//!
//! The machine does no IO, so it never calls a store. It emits:
//! - [`Output::Live`](crate::Output::Live) with a [`LiveOp`]: a write the driver applies, in
//!   order, without answering (presence, directory entries, replacing or conditionally
//!   removing a code);
//! - [`Output::LiveQuery`](crate::Output::LiveQuery) with a [`LiveQuery`] and a
//!   [`LiveToken`]: an operation whose answer the machine needs (insert a code if absent, look
//!   a code up, take a code atomically). The driver answers it with
//!   [`Broker::handle_live_answer`](crate::Broker::handle_live_answer); until then the machine
//!   keeps what it needs, refuses a second such request on the same connection, and undoes
//!   what the answer would leave behind if the connection closed or the session ended
//!   meanwhile.
//!
//! The store behind the port (in process, or shared by a cluster) lives in `assist-live`,
//! together with the contract every implementation must keep:
//! - [`LiveQuery::InsertCode`] inserts only if the digest is absent (codes are unique across
//!   the cluster), and [`LiveQuery::TakeCodeIf`] / [`LiveOp::RemoveCodeIf`] remove atomically
//!   and only an entry equal to the expected one, so of racing redemptions one wins.
//! - Connection sets are sets: adding a connection twice keeps one, removing the last one
//!   forgets the user or device.
//! - The driver carries out ops and queries in the order the machine emitted them.
//! - Connection ids are node-local numbers. A shared implementation qualifies them with the
//!   node that holds them; the in-process one has one node.
//!
//! The state that only makes sense on the node holding a connection (request buckets, abuse
//! strikes, the session's stage and deadlines) stays inside the machine.

use assist_policy::Mode;

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

/// A device as presence knows it: its tenant and its id.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct DeviceRef {
    /// The tenant.
    pub tenant_id: String,
    /// The device id.
    pub device_id: String,
}

/// A write to the live state. The driver applies these in the order the machine emitted them
/// (interleaved with [`LiveQuery`]s, in that same order); nothing is answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LiveOp {
    /// A connection opened for `user` and/or `device`.
    AddConnection {
        /// The connection.
        conn: ConnId,
        /// Its signed-in user.
        user: Option<UserRef>,
        /// Its device.
        device: Option<DeviceRef>,
    },
    /// The connection closed; the same `user` and `device` as when it was added.
    RemoveConnection {
        /// The connection.
        conn: ConnId,
        /// Its signed-in user.
        user: Option<UserRef>,
        /// Its device.
        device: Option<DeviceRef>,
    },
    /// Creates or replaces a session's directory entry.
    PutSession {
        /// The session.
        id: SessionId,
        /// Its entry.
        session: LiveSession,
    },
    /// Removes a session's entry (it ended).
    RemoveSession {
        /// The session.
        id: SessionId,
    },
    /// Stores `code` under `digest`, replacing what was there.
    ReplaceCode {
        /// The digest.
        digest: CodeDigest,
        /// The entry.
        code: LiveCode,
    },
    /// Removes the entry under `digest` if it equals `expected`, atomically (a session that
    /// ended withdraws its own pending code; an expired code is forgotten at its `forget_at`).
    RemoveCodeIf {
        /// The digest.
        digest: CodeDigest,
        /// The entry to remove; any other entry is left alone.
        expected: LiveCode,
    },
}

/// Names one [`LiveQuery`] so its answer can be matched (`handle_live_answer`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct LiveToken(pub u64);

/// A live-state operation whose answer the machine needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LiveQuery {
    /// Stores `code` under `digest` unless the digest is already taken. Answer:
    /// [`LiveAnswer::Inserted`].
    InsertCode {
        /// The digest.
        digest: CodeDigest,
        /// The entry.
        code: LiveCode,
    },
    /// The stored digest (for the constant-time comparison) and entry, if any. Answer:
    /// [`LiveAnswer::Code`].
    GetCode {
        /// The digest looked up.
        digest: CodeDigest,
    },
    /// Removes the entry under `digest` if it equals `expected`, atomically. Answer:
    /// [`LiveAnswer::Taken`].
    TakeCodeIf {
        /// The digest.
        digest: CodeDigest,
        /// The entry to take.
        expected: LiveCode,
    },
}

/// The answer to a [`LiveQuery`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LiveAnswer {
    /// [`LiveQuery::InsertCode`]: whether the code was stored.
    Inserted(bool),
    /// [`LiveQuery::GetCode`]: the stored digest and entry, if any.
    Code(Option<(CodeDigest, LiveCode)>),
    /// [`LiveQuery::TakeCodeIf`]: the entry removed, if it matched.
    Taken(Option<LiveCode>),
    /// The store could not answer (a networked store that is down). The request it was for is
    /// answered `unavailable`.
    Failed,
}
