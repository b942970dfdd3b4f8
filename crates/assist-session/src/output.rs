//! What the machine asks the IO layer to do: [`Output`], drained with
//! [`crate::Broker::poll_output`].

use assist_policy::{DenyReason, Mode};
use serde::{Deserialize, Serialize};

use crate::live::{LiveOp, LiveQuery, LiveToken};
use crate::message::{CloseCode, EndReason, EndedBy, ServerEvent, SessionId};
use crate::party::{DeviceInfo, Party, UserRef};
use crate::time::Timestamp;

/// A connection, named by the IO layer (unique among open connections).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct ConnId(pub u64);

/// Names one `Evaluate` so its decision can be matched (`handle_decision`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct EvalId(pub u64);

/// One thing for the IO layer to do, in order.
// Outputs live briefly in one queue and are moved once; boxing would cost an allocation
// per output for no gain.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Eq)]
// Deliberately exhaustive: the drivers in this workspace match every variant, so a new output
// breaks their build instead of being dropped silently.
pub enum Output {
    /// Send `event` as a text message on connection `conn`.
    Send {
        /// The connection.
        conn: ConnId,
        /// The message.
        event: ServerEvent,
    },
    /// Close connection `conn` with `code`. The machine has already forgotten it; a later
    /// `handle_disconnect` for it is harmless.
    Close {
        /// The connection.
        conn: ConnId,
        /// The close code.
        code: CloseCode,
    },
    /// Load the facts (tenant policy of the helper's tenant, both users' groups, the device)
    /// and run `assist_policy::decide`, then call `handle_decision(eval, decision, now)`.
    Evaluate(EvaluateRequest),
    /// Mint one relay ticket per side (session, role, `mode`, `chat`, relay address, expiry),
    /// then call `handle_tickets` (or `handle_tickets_failed`). The machine then sends
    /// `sessionActive` to each side with its own ticket.
    IssueTickets {
        /// The session.
        session_id: SessionId,
        /// The granted mode.
        mode: Mode,
        /// Whether chat is allowed.
        chat: bool,
    },
    /// Tell the relay the session's mode or chat permission changed.
    RelaySetMode {
        /// The session.
        session_id: SessionId,
        /// The mode now in force.
        mode: Mode,
        /// Whether chat is allowed now.
        chat: bool,
    },
    /// Tell the relay the session ended (it closes both legs).
    RelayEnd {
        /// The session.
        session_id: SessionId,
        /// Why.
        reason: EndReason,
    },
    /// Write to the durable session report.
    Record(RecordEvent),
    /// Write an audit event.
    Audit(AuditEvent),
    /// A code redemption by `user` failed here (a wrong, used, expired or refused code). A
    /// single node has nothing to do; in a cluster, tell every other broker
    /// ([`crate::Broker::handle_peer_redemption_failure`]) so the brute-force locks hold
    /// cluster-wide: a user gets five guesses in all, not five per node.
    RedemptionFailed {
        /// Who failed (the tenant limit counts it too).
        user: UserRef,
    },
    /// Apply a write to the live state, in order with the other live outputs; nothing is
    /// answered.
    Live(LiveOp),
    /// Carry out a live-state operation in order with the other live outputs and call
    /// `handle_live_answer(token, answer, now)` with its answer.
    LiveQuery {
        /// Quote this in `handle_live_answer`.
        token: LiveToken,
        /// The operation.
        query: LiveQuery,
    },
}

/// A policy evaluation the machine needs. `helper`'s tenant is the tenant evaluated in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EvaluateRequest {
    /// Quote this in `handle_decision`.
    pub eval: EvalId,
    /// The session it is for.
    pub session_id: SessionId,
    /// The helper.
    pub helper: UserRef,
    /// The sharer's user; `None` when no user is signed in on the sharer's side (device token).
    pub sharer: Option<UserRef>,
    /// The sharer's tenant (always known, also without a user).
    pub sharer_tenant_id: String,
    /// The sharer's device, when the sharer's connection runs on a known device.
    pub device_id: Option<String>,
    /// The mode requested.
    pub mode: Mode,
}

/// One side of a session as the report shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ReportParty {
    /// Tenant id.
    pub tenant_id: String,
    /// User object id (`None` for a device without a signed-in user).
    pub user_id: Option<String>,
    /// Email / UPN.
    pub user_principal_name: Option<String>,
    /// First name.
    pub given_name: Option<String>,
    /// Last name.
    pub family_name: Option<String>,
    /// Display name.
    pub display_name: String,
}

impl From<&Party> for ReportParty {
    fn from(p: &Party) -> Self {
        ReportParty {
            tenant_id: p.tenant_id.clone(),
            user_id: p.user_id.clone(),
            user_principal_name: p.user_principal_name.clone(),
            given_name: p.given_name.clone(),
            family_name: p.family_name.clone(),
            display_name: p.profile.display_name.clone(),
        }
    }
}

/// A durable session-report write. A session is recorded when it becomes active
/// (`Started`) and closed exactly once (`Ended`); sessions that never became active have no
/// record (their history is in the audit events).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(
    tag = "event",
    rename_all = "camelCase",
    rename_all_fields = "camelCase"
)]
// Exhaustive, like `Output`: the record writer matches every variant.
#[allow(clippy::large_enum_variant)] // see `Output`
pub enum RecordEvent {
    /// Insert the session row.
    Started {
        /// The session.
        session_id: SessionId,
        /// The tenant.
        tenant_id: String,
        /// When it became active.
        started_at: Timestamp,
        /// When the session was created: the code issued, or the launch sent (pairing latency
        /// is `started_at - requested_at`).
        requested_at: Timestamp,
        /// When the sharer joined (redeemed the code or accepted the launch).
        joined_at: Timestamp,
        /// The first granted mode.
        mode: Mode,
        /// Whether chat was allowed at start.
        chat: bool,
        /// The helper.
        helper: ReportParty,
        /// The sharer.
        sharer: ReportParty,
        /// The sharer's device, if known.
        device: Option<DeviceInfo>,
    },
    /// Raise the row's highest mode.
    ModeRaised {
        /// The session.
        session_id: SessionId,
        /// The tenant.
        tenant_id: String,
        /// The new mode (higher than any before).
        mode: Mode,
        /// When.
        at: Timestamp,
    },
    /// The session is still running at `at`: keep the row's last-seen time current, so a
    /// session that crash recovery closes reports a real end time. Every
    /// [`crate::BrokerConfig::seen_interval`] while active.
    Seen {
        /// The session.
        session_id: SessionId,
        /// The tenant.
        tenant_id: String,
        /// When.
        at: Timestamp,
    },
    /// Close the row.
    Ended {
        /// The session.
        session_id: SessionId,
        /// The tenant.
        tenant_id: String,
        /// When.
        ended_at: Timestamp,
        /// The highest mode used.
        highest_mode: Mode,
        /// Why.
        reason: EndReason,
        /// Who.
        by: EndedBy,
    },
}

/// An audit event. Never carries a code or a token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AuditEvent {
    /// When.
    pub at: Timestamp,
    /// The tenant it belongs to.
    pub tenant_id: String,
    /// The session, if any.
    pub session_id: Option<SessionId>,
    /// The user who acted, if a user did.
    pub actor: Option<UserRef>,
    /// The acting user's principal name (`upn`), when the broker knows it.
    pub actor_name: Option<String>,
    /// What happened.
    pub kind: AuditKind,
}

/// What an [`AuditEvent`] records.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(
    tag = "kind",
    rename_all = "camelCase",
    rename_all_fields = "camelCase"
)]
#[non_exhaustive]
pub enum AuditKind {
    /// A helper was issued a code.
    CodeIssued,
    /// A sharer joined a session (code redeemed or launch accepted).
    Joined,
    /// A code redemption failed (`invalidCode`, `codeExpired`, `crossTenant`, `rateLimited`).
    RedemptionFailed {
        /// The error code answered.
        code: String,
        /// Whether this failure started a lock (user or tenant).
        locked: bool,
    },
    /// A launch was requested for a device (by a helper, or an admin through the API).
    LaunchRequested {
        /// The device.
        device_id: String,
        /// The device connections notified.
        notified: usize,
    },
    /// A helper asked for a mode (policy evaluation started).
    Requested {
        /// The mode.
        mode: Mode,
    },
    /// The policy denied a mode request.
    Denied {
        /// The mode.
        mode: Mode,
        /// The reason.
        reason: DenyReason,
    },
    /// The sharer declined, or did not answer, a mode request.
    ConsentRefused {
        /// The mode.
        mode: Mode,
        /// `true` if it timed out rather than being declined.
        timed_out: bool,
    },
    /// The session became active.
    Started {
        /// The mode.
        mode: Mode,
    },
    /// The mode or the chat permission changed.
    ModeChanged {
        /// Before.
        from: Mode,
        /// After.
        to: Mode,
        /// Chat allowed after.
        chat: bool,
    },
    /// A chat line was refused because the tenant blocks chat.
    ChatBlocked,
    /// The session ended.
    Ended {
        /// Why.
        reason: EndReason,
        /// Who.
        by: EndedBy,
    },
}
