//! The session lifecycle state machine.
//!
//! ```text
//! requestCode ─► AwaitingRedemption ─redeemCode─┐
//! requestSession / admin launch ─► AwaitingSharer ─answerLaunch─┤
//!                                                               ▼
//!          ┌──────────────────────────────────────────────► Joined ◄──── deny / warnings / unavailable
//!          │                                                   │ requestMode
//!          │                                                   ▼
//!          │                                           AwaitingDecision ──Allow──► AwaitingConsent (attended)
//!          │                                                                 └──► AwaitingDeclineWindow (unattended, sharer present)
//!          │                                                                 └──► (unattended, nobody present) grant
//!          │      consent allow / window over ─► grant: AwaitingTickets ─handle_tickets─► Active
//!          │      (in Active, upgrades go through the same stages and come back to Active;
//!          │       downgrades apply at once)
//!   any stage ──endSession / disconnect / timeout / tenant disabled──► ended (removed)
//! ```
//!
//! Every input first fires the timers that are due at its `now`, so an answer that arrives
//! after its deadline is treated as late, whatever order the IO layer calls things in.
//!
//! Files by flow: this one holds the state (connections, sessions, timers, outputs) and the
//! timer and output plumbing; [`connection`] opens and closes connections and routes requests
//! (rate limits, strikes); [`pairing`] is the code flow; [`launch`] the launch flow; [`mode`]
//! mode requests, consent and tickets; [`ending`] chat, ending and tenant settings.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::fmt::Write as _;
use std::sync::Arc;

use assist_policy::{Decision, DenyReason, Mode, Warning};

use crate::code::{code_from_bytes, normalize_code, CodeDigest, Crypto, CODE_LEN};
use crate::config::{BrokerConfig, ConfigError};
use crate::limit::{FailureLimiter, RequestBucket, Strikes};
use crate::live::{InProcessLiveState, LiveCode, LiveSession, LiveStage, LiveState};
use crate::message::{
    ClientMessage, ClientRequest, CloseCode, ConsentKind, EndReason, EndedBy, ErrorCode,
    RelayAccess, RequestId, Role, ServerEvent, SessionId, WithdrawReason, MAX_CHAT_CHARS,
};
use crate::output::{
    AuditEvent, AuditKind, ConnId, EvalId, EvaluateRequest, Output, RecordEvent, ReportParty,
};
use crate::party::{Party, UserRef};
use crate::time::Timestamp;

mod connection;
mod ending;
mod launch;
mod mode;
mod pairing;

/// How often (at most) idle rate-limit entries are purged.
const PURGE_EVERY_MS: u64 = 60_000;
/// Attempts at drawing a code or session id that is not already in use.
const FRESH_ATTEMPTS: usize = 8;

/// A call the IO layer made that the machine cannot apply. The IO layer's fault, or a benign
/// race (a decision or ticket for a session that has meanwhile ended): log it at debug level.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum InputError {
    /// The connection is not open (never connected, or already closed).
    #[error("unknown connection {0:?}")]
    UnknownConnection(ConnId),
    /// `handle_connect` for a connection id that is already open.
    #[error("connection {0:?} is already open")]
    DuplicateConnection(ConnId),
    /// No evaluation is waiting under this id (answered, timed out, or its session ended).
    #[error("no evaluation {0:?} is waiting")]
    UnknownEvaluation(EvalId),
    /// No session is waiting for tickets under this id.
    #[error("session {0} is not waiting for tickets")]
    NotAwaitingTickets(SessionId),
}

/// Why an admin launch (`requestRemoteAssistance`) could not be started.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum LaunchError {
    /// Peer: the device has no signalling connection in the tenant.
    #[error("the device is offline")]
    DeviceOffline,
    /// Peer: every connection of the device is in a session.
    #[error("the device is busy")]
    DeviceBusy,
    /// Caller: the requester is not a signed-in user.
    #[error("the requester must be a user")]
    NotAUser,
    /// Broker: no fresh session id could be drawn.
    #[error("no session id available")]
    Unavailable,
}

impl LaunchError {
    /// The matching signalling error code.
    pub fn code(self) -> ErrorCode {
        match self {
            LaunchError::DeviceOffline => ErrorCode::DeviceOffline,
            LaunchError::DeviceBusy => ErrorCode::DeviceBusy,
            LaunchError::NotAUser => ErrorCode::NotAllowed,
            LaunchError::Unavailable => ErrorCode::Unavailable,
        }
    }
}

/// Where a session is in its lifecycle (for metrics and tests). Names say what it waits for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum SessionState {
    /// A code was issued; waiting for a sharer to redeem it.
    AwaitingRedemption,
    /// A launch was sent to a device; waiting for one of its connections to answer.
    AwaitingSharer,
    /// Both sides joined; waiting for the helper's first mode request.
    Joined,
    /// Waiting for the policy decision on a mode request.
    AwaitingDecision,
    /// Waiting for the sharer to allow or decline.
    AwaitingConsent,
    /// Unattended: waiting out the window in which a present sharer may decline.
    AwaitingDeclineWindow,
    /// Waiting for relay tickets.
    AwaitingTickets,
    /// Active, no mode change in flight.
    Active,
}

/// A snapshot of one session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionInfo {
    /// The lifecycle state.
    pub state: SessionState,
    /// The mode in force (`None` until active).
    pub mode: Option<Mode>,
    /// Whether chat is allowed now (meaningful once active).
    pub chat: bool,
    /// The tenant.
    pub tenant_id: String,
}

#[derive(Debug)]
struct Conn {
    party: Party,
    session: Option<SessionId>,
    offers: BTreeSet<SessionId>,
    bucket: RequestBucket,
    strikes: Strikes,
}

#[derive(Debug)]
struct Seat {
    conn: Option<ConnId>,
    party: Party,
}

#[derive(Debug)]
enum Stage {
    AwaitingRedemption {
        digest: CodeDigest,
    },
    AwaitingSharer {
        device_id: String,
        offered: BTreeSet<ConnId>,
        mode: Option<Mode>,
        acknowledged: Vec<Warning>,
    },
    Joined,
    AwaitingDecision {
        eval: EvalId,
        mode: Mode,
        acknowledged: Vec<Warning>,
        request: Option<RequestId>,
    },
    AwaitingConsent {
        mode: Mode,
        chat: bool,
    },
    AwaitingDeclineWindow {
        mode: Mode,
        chat: bool,
    },
    AwaitingTickets {
        mode: Mode,
        chat: bool,
    },
    Active,
}

#[derive(Debug)]
struct Session {
    tenant_id: String,
    helper: Seat,
    sharer: Option<Seat>,
    stage: Stage,
    /// The mode in force; `Some` exactly when the session is (or was) active.
    mode: Option<Mode>,
    highest: Option<Mode>,
    chat: bool,
    /// When the first grant must have happened (set on join).
    join_deadline: Option<Timestamp>,
    /// The current stage's deadline.
    deadline: Option<Timestamp>,
}

impl Session {
    fn role_of(&self, conn: ConnId) -> Option<Role> {
        if self.helper.conn == Some(conn) {
            Some(Role::Helper)
        } else if self.sharer.as_ref().and_then(|s| s.conn) == Some(conn) {
            Some(Role::Sharer)
        } else {
            None
        }
    }

    fn conn_of(&self, role: Role) -> Option<ConnId> {
        match role {
            Role::Helper => self.helper.conn,
            Role::Sharer => self.sharer.as_ref().and_then(|s| s.conn),
        }
    }

    fn conns(&self) -> impl Iterator<Item = ConnId> {
        [self.conn_of(Role::Helper), self.conn_of(Role::Sharer)]
            .into_iter()
            .flatten()
    }

    fn state(&self) -> SessionState {
        match self.stage {
            Stage::AwaitingRedemption { .. } => SessionState::AwaitingRedemption,
            Stage::AwaitingSharer { .. } => SessionState::AwaitingSharer,
            Stage::Joined => SessionState::Joined,
            Stage::AwaitingDecision { .. } => SessionState::AwaitingDecision,
            Stage::AwaitingConsent { .. } => SessionState::AwaitingConsent,
            Stage::AwaitingDeclineWindow { .. } => SessionState::AwaitingDeclineWindow,
            Stage::AwaitingTickets { .. } => SessionState::AwaitingTickets,
            Stage::Active => SessionState::Active,
        }
    }
}

#[derive(Debug, Clone)]
enum Timer {
    Session(SessionId),
    /// Time to write [`RecordEvent::Seen`] for an active session.
    Seen(SessionId),
    ForgetCode(CodeDigest),
}

/// The broker's session lifecycle state machine. See the crate docs for the run loop.
pub struct Broker {
    config: BrokerConfig,
    crypto: Box<dyn Crypto + Send>,
    conns: HashMap<ConnId, Conn>,
    /// Codes, the session directory and who is connected: shared with other tasks (and, in
    /// cluster mode, other nodes).
    live: Arc<dyn LiveState>,
    sessions: HashMap<SessionId, Session>,
    /// Admin-launched sessions whose helper has no connection yet.
    unattached: BTreeSet<SessionId>,
    evals: HashMap<EvalId, SessionId>,
    next_eval: u64,
    timers: BTreeMap<(Timestamp, u64), Timer>,
    next_timer: u64,
    user_failures: FailureLimiter<UserRef>,
    tenant_failures: FailureLimiter<String>,
    /// Last `blockChat` heard per tenant (from `handle_settings_changed`).
    chat_blocked: HashMap<String, bool>,
    next_purge: Timestamp,
    outputs: VecDeque<Output>,
}

impl std::fmt::Debug for Broker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Broker")
            .field("connections", &self.conns.len())
            .field("sessions", &self.sessions.len())
            .field("codes", &self.live.code_count())
            .field("pending_outputs", &self.outputs.len())
            .finish_non_exhaustive()
    }
}

type Reply = Result<(), (ErrorCode, String)>;

fn refuse<T>(code: ErrorCode, message: impl Into<String>) -> Result<T, (ErrorCode, String)> {
    Err((code, message.into()))
}

impl Broker {
    /// A broker with `config` (validated) that draws randomness and hashes codes with `crypto`,
    /// keeping its live state in a fresh [`InProcessLiveState`].
    pub fn new(config: BrokerConfig, crypto: Box<dyn Crypto + Send>) -> Result<Self, ConfigError> {
        Self::with_live_state(config, crypto, Arc::new(InProcessLiveState::new()))
    }

    /// A broker that keeps codes, its session directory and connection presence in `live`.
    /// The broker must be the only writer of the sessions and connections it creates.
    pub fn with_live_state(
        config: BrokerConfig,
        crypto: Box<dyn Crypto + Send>,
        live: Arc<dyn LiveState>,
    ) -> Result<Self, ConfigError> {
        config.validate()?;
        Ok(Broker {
            user_failures: FailureLimiter::new(config.user_redeem_limit),
            tenant_failures: FailureLimiter::new(config.tenant_redeem_limit),
            config,
            crypto,
            conns: HashMap::new(),
            live,
            sessions: HashMap::new(),
            unattached: BTreeSet::new(),
            evals: HashMap::new(),
            next_eval: 0,
            timers: BTreeMap::new(),
            next_timer: 0,
            chat_blocked: HashMap::new(),
            next_purge: Timestamp::ZERO,
            outputs: VecDeque::new(),
        })
    }

    /// The live state (codes, session directory, presence) this broker writes.
    pub fn live_state(&self) -> &Arc<dyn LiveState> {
        &self.live
    }

    /// The configuration.
    pub fn config(&self) -> &BrokerConfig {
        &self.config
    }

    // ----------------------------------------------------------------- outputs and timers

    /// The next thing for the IO layer to do, if any. Drain until `None` after every input.
    pub fn poll_output(&mut self) -> Option<Output> {
        self.outputs.pop_front()
    }

    /// When to call [`Broker::handle_timeout`] next, if anything is scheduled. It may be
    /// earlier than needed (a deadline that no longer applies); that is harmless.
    pub fn poll_timeout(&self) -> Option<Timestamp> {
        self.timers.keys().next().map(|(t, _)| *t)
    }

    /// Time has passed: fire every deadline due at `now`.
    pub fn handle_timeout(&mut self, now: Timestamp) {
        self.advance(now);
    }

    fn advance(&mut self, now: Timestamp) {
        while let Some(entry) = self.timers.first_entry() {
            if entry.key().0 > now {
                break;
            }
            let ((at, _), timer) = entry.remove_entry();
            match timer {
                Timer::Session(id) => self.on_deadline(&id, at, now),
                Timer::Seen(id) => self.on_seen(id, now),
                Timer::ForgetCode(digest) => {
                    self.live.take_code_if(&digest, &|code| {
                        matches!(code, LiveCode::Expired { forget_at } if *forget_at <= now)
                    });
                }
            }
        }
        if now >= self.next_purge {
            self.user_failures.purge(now);
            self.tenant_failures.purge(now);
            self.next_purge =
                Timestamp::from_millis(now.as_millis().saturating_add(PURGE_EVERY_MS));
        }
    }

    /// An active session is still running: say so to its record and look again later.
    fn on_seen(&mut self, id: SessionId, now: Timestamp) {
        let Some(s) = self.sessions.get(&id).filter(|s| s.mode.is_some()) else {
            return;
        };
        let tenant_id = s.tenant_id.clone();
        self.outputs.push_back(Output::Record(RecordEvent::Seen {
            session_id: id.clone(),
            tenant_id,
            at: now,
        }));
        self.schedule(
            now.saturating_add(self.config.seen_interval),
            Timer::Seen(id),
        );
    }

    fn schedule(&mut self, at: Timestamp, timer: Timer) {
        self.next_timer = self.next_timer.wrapping_add(1);
        self.timers.insert((at, self.next_timer), timer);
    }

    fn set_deadline(&mut self, id: &SessionId, at: Option<Timestamp>) {
        if let Some(s) = self.sessions.get_mut(id) {
            s.deadline = at;
            if let Some(at) = at {
                self.schedule(at, Timer::Session(id.clone()));
            }
        }
    }

    fn send(&mut self, conn: ConnId, event: ServerEvent) {
        if self.conns.contains_key(&conn) {
            self.outputs.push_back(Output::Send { conn, event });
        }
    }

    fn send_to(&mut self, conn: Option<ConnId>, event: ServerEvent) {
        if let Some(conn) = conn {
            self.send(conn, event);
        }
    }

    fn send_error(
        &mut self,
        conn: ConnId,
        id: Option<RequestId>,
        code: ErrorCode,
        message: String,
        session_id: Option<SessionId>,
    ) {
        self.send(
            conn,
            ServerEvent::Error {
                id,
                code,
                message,
                session_id,
            },
        );
    }

    fn audit(
        &mut self,
        now: Timestamp,
        tenant_id: &str,
        session_id: Option<&SessionId>,
        actor: Option<UserRef>,
        kind: AuditKind,
    ) {
        // The actor's name, from the session's seats or an open connection of theirs.
        let actor_name = actor.as_ref().and_then(|user| {
            let session = session_id.and_then(|id| self.sessions.get(id));
            let seats = session
                .into_iter()
                .flat_map(|s| std::iter::once(&s.helper).chain(s.sharer.as_ref()))
                .map(|seat| &seat.party);
            seats
                .chain(self.conns.values().map(|c| &c.party))
                .find(|p| p.user_ref().as_ref() == Some(user))
                .and_then(|p| p.user_principal_name.clone())
        });
        self.audit_named(now, tenant_id, session_id, actor, actor_name, kind);
    }

    fn audit_named(
        &mut self,
        now: Timestamp,
        tenant_id: &str,
        session_id: Option<&SessionId>,
        actor: Option<UserRef>,
        actor_name: Option<String>,
        kind: AuditKind,
    ) {
        self.outputs.push_back(Output::Audit(AuditEvent {
            at: now,
            tenant_id: tenant_id.to_owned(),
            session_id: session_id.cloned(),
            actor,
            actor_name,
            kind,
        }));
    }

    // ----------------------------------------------------------------- inspection

    /// A snapshot of a session, if it exists (not ended).
    pub fn session(&self, session_id: &SessionId) -> Option<SessionInfo> {
        self.sessions.get(session_id).map(|s| SessionInfo {
            state: s.state(),
            mode: s.mode,
            chat: s.chat,
            tenant_id: s.tenant_id.clone(),
        })
    }

    /// Sessions not yet ended, in every state.
    pub fn session_count(&self) -> usize {
        self.sessions.len()
    }

    /// Open connections.
    pub fn connection_count(&self) -> usize {
        self.conns.len()
    }

    /// Codes remembered (pending, or expired and still answering `codeExpired`).
    pub fn code_count(&self) -> usize {
        self.live.code_count()
    }
}
