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

    // ----------------------------------------------------------------- connections

    /// A signalling connection opened and authenticated as `party`.
    pub fn handle_connect(
        &mut self,
        conn: ConnId,
        party: Party,
        now: Timestamp,
    ) -> Result<(), InputError> {
        self.advance(now);
        if self.conns.contains_key(&conn) {
            return Err(InputError::DuplicateConnection(conn));
        }
        let user = party.user_ref();
        self.live.add_connection(
            conn,
            user.as_ref(),
            party
                .device
                .as_ref()
                .map(|d| (party.tenant_id.as_str(), d.id.as_str())),
        );
        self.conns.insert(
            conn,
            Conn {
                party,
                session: None,
                offers: BTreeSet::new(),
                bucket: RequestBucket::full(self.config.request_rate, now),
                strikes: Strikes::default(),
            },
        );
        if let Some(user) = user {
            self.attach_helper(conn, &user);
        }
        Ok(())
    }

    /// Gives an admin-launched session waiting for its helper to the helper's new connection.
    fn attach_helper(&mut self, conn: ConnId, user: &UserRef) {
        let found = self.unattached.iter().find(|id| {
            self.sessions
                .get(*id)
                .is_some_and(|s| s.helper.party.user_ref().as_ref() == Some(user))
        });
        let Some(id) = found.cloned() else { return };
        self.unattached.remove(&id);
        let Some(session) = self.sessions.get_mut(&id) else {
            return;
        };
        session.helper.conn = Some(conn);
        let event = match &session.stage {
            Stage::AwaitingSharer { device_id, .. } => ServerEvent::LaunchPending {
                id: None,
                session_id: id.clone(),
                device_id: device_id.clone(),
                expires_at: session.deadline.unwrap_or_default(),
            },
            _ => ServerEvent::SessionJoined {
                id: None,
                session_id: id.clone(),
                role: Role::Helper,
                peer_profile: session
                    .sharer
                    .as_ref()
                    .map(|s| s.party.profile.clone())
                    .unwrap_or_default(),
            },
        };
        if let Some(c) = self.conns.get_mut(&conn) {
            c.session = Some(id.clone());
        }
        self.publish(&id);
        self.send(conn, event);
    }

    /// A connection closed (or the IO layer closed it after [`Output::Close`]). Its session
    /// ends with `disconnected`. Idempotent.
    pub fn handle_disconnect(&mut self, conn: ConnId, now: Timestamp) {
        self.advance(now);
        self.drop_conn(conn, now);
    }

    fn drop_conn(&mut self, conn: ConnId, now: Timestamp) {
        let Some(c) = self.conns.remove(&conn) else {
            return;
        };
        self.live.remove_connection(
            conn,
            c.party.user_ref().as_ref(),
            c.party
                .device
                .as_ref()
                .map(|d| (c.party.tenant_id.as_str(), d.id.as_str())),
        );
        for id in &c.offers {
            let emptied = match self.sessions.get_mut(id).map(|s| &mut s.stage) {
                Some(Stage::AwaitingSharer { offered, .. }) => {
                    offered.remove(&conn);
                    offered.is_empty()
                }
                _ => false,
            };
            if emptied {
                self.end_session(id, EndReason::LaunchDeclined, EndedBy::Sharer, now);
            }
        }
        if let Some(id) = c.session {
            let by = match self.sessions.get(&id) {
                Some(s) if s.helper.conn == Some(conn) => EndedBy::Helper,
                Some(_) => EndedBy::Sharer,
                None => return,
            };
            self.end_session(&id, EndReason::Disconnected, by, now);
        }
    }

    fn close_for_abuse(&mut self, conn: ConnId, now: Timestamp) {
        self.outputs.push_back(Output::Close {
            conn,
            code: CloseCode::Abuse,
        });
        self.drop_conn(conn, now);
    }

    /// Counts an abuse strike; closes the connection when the limit is reached.
    fn strike(&mut self, conn: ConnId, now: Timestamp) {
        let (max, window) = (self.config.abuse_strikes, self.config.abuse_window);
        let reached = self
            .conns
            .get_mut(&conn)
            .is_some_and(|c| c.strikes.strike(max, window, now));
        if reached {
            self.close_for_abuse(conn, now);
        }
    }

    /// Takes a request token; on an empty bucket answers `rateLimited` and strikes.
    fn admit(
        &mut self,
        conn: ConnId,
        id: Option<RequestId>,
        now: Timestamp,
    ) -> Result<bool, InputError> {
        let rate = self.config.request_rate;
        let c = self
            .conns
            .get_mut(&conn)
            .ok_or(InputError::UnknownConnection(conn))?;
        if c.bucket.take(rate, now) {
            return Ok(true);
        }
        self.send_error(
            conn,
            id,
            ErrorCode::RateLimited,
            "too many requests".into(),
            None,
        );
        self.strike(conn, now);
        Ok(false)
    }

    /// A text message arrived on `conn`: parse it and handle it. Malformed, unknown and
    /// oversized messages are answered with `error` and count as abuse strikes.
    pub fn handle_text(
        &mut self,
        conn: ConnId,
        text: &str,
        now: Timestamp,
    ) -> Result<(), InputError> {
        self.advance(now);
        match ClientMessage::parse(text) {
            Ok(message) => self.handle_message_inner(conn, message, now),
            Err(e) => {
                if !self.admit(conn, e.id().cloned(), now)? {
                    return Ok(());
                }
                self.send_error(conn, e.id().cloned(), e.code(), e.to_string(), None);
                self.strike(conn, now);
                Ok(())
            }
        }
    }

    /// A parsed request arrived on `conn`.
    pub fn handle_message(
        &mut self,
        conn: ConnId,
        message: ClientMessage,
        now: Timestamp,
    ) -> Result<(), InputError> {
        self.advance(now);
        self.handle_message_inner(conn, message, now)
    }

    fn handle_message_inner(
        &mut self,
        conn: ConnId,
        message: ClientMessage,
        now: Timestamp,
    ) -> Result<(), InputError> {
        let ClientMessage { id, request } = message;
        if !self.admit(conn, Some(id.clone()), now)? {
            return Ok(());
        }
        let about = match &request {
            ClientRequest::AnswerLaunch { session_id, .. }
            | ClientRequest::RequestMode { session_id, .. }
            | ClientRequest::Consent { session_id, .. }
            | ClientRequest::Chat { session_id, .. }
            | ClientRequest::EndSession { session_id } => Some(session_id.clone()),
            _ => None,
        };
        let result = match request {
            ClientRequest::Ping => {
                self.send(conn, ServerEvent::Pong { id: id.clone() });
                Ok(())
            }
            ClientRequest::RequestCode => self.request_code(conn, &id, now),
            ClientRequest::RedeemCode { code } => self.redeem_code(conn, &id, &code, now),
            ClientRequest::RequestSession {
                device_id,
                mode,
                acknowledge_warnings,
            } => self.request_session(conn, &id, device_id, mode, acknowledge_warnings, now),
            ClientRequest::AnswerLaunch { session_id, accept } => {
                self.answer_launch(conn, &id, &session_id, accept, now)
            }
            ClientRequest::RequestMode {
                session_id,
                mode,
                acknowledge_warnings,
            } => self.request_mode(conn, &id, &session_id, mode, acknowledge_warnings, now),
            ClientRequest::Consent { session_id, allow } => {
                self.consent(conn, &id, &session_id, allow, now)
            }
            ClientRequest::Chat { session_id, text } => {
                self.chat(conn, &id, &session_id, text, now)
            }
            ClientRequest::EndSession { session_id } => {
                self.end_request(conn, &id, &session_id, now)
            }
        };
        if let Err((code, message)) = result {
            self.send_error(conn, Some(id), code, message, about);
        }
        Ok(())
    }

    fn conn(&self, conn: ConnId) -> Result<&Conn, (ErrorCode, String)> {
        match self.conns.get(&conn) {
            Some(c) => Ok(c),
            None => refuse(ErrorCode::NotAllowed, "connection closed"),
        }
    }

    /// The caller's user, if it is a signed-in user with no session.
    fn idle_user(&self, conn: ConnId) -> Result<UserRef, (ErrorCode, String)> {
        let c = self.conn(conn)?;
        if c.session.is_some() {
            return refuse(
                ErrorCode::NotAllowed,
                "this connection is already in a session",
            );
        }
        match c.party.user_ref() {
            Some(user) => Ok(user),
            None => refuse(ErrorCode::NotAllowed, "a signed-in user is required"),
        }
    }

    fn role_in(&self, conn: ConnId, id: &SessionId) -> Result<Role, (ErrorCode, String)> {
        match self.sessions.get(id).and_then(|s| s.role_of(conn)) {
            Some(role) => Ok(role),
            None => refuse(ErrorCode::NotFound, "no such session"),
        }
    }

    fn fresh_session_id(&mut self) -> Option<SessionId> {
        for _ in 0..FRESH_ATTEMPTS {
            let mut bytes = [0u8; 16];
            self.crypto.fill_random(&mut bytes);
            let mut hex = String::with_capacity(32);
            for b in bytes {
                let _ = write!(hex, "{b:02x}");
            }
            let id = SessionId(hex);
            if !self.sessions.contains_key(&id) {
                return Some(id);
            }
        }
        None
    }

    fn new_session(&mut self, id: &SessionId, helper: Seat, stage: Stage) {
        let tenant_id = helper.party.tenant_id.clone();
        let chat = !self.chat_blocked.get(&tenant_id).copied().unwrap_or(false);
        self.sessions.insert(
            id.clone(),
            Session {
                tenant_id,
                helper,
                sharer: None,
                stage,
                mode: None,
                highest: None,
                chat,
                join_deadline: None,
                deadline: None,
            },
        );
        self.publish(id);
    }

    /// Writes a session's directory entry to the live state.
    fn publish(&self, id: &SessionId) {
        let Some(s) = self.sessions.get(id) else {
            return;
        };
        let stage = match (&s.stage, s.mode) {
            (_, Some(_)) => LiveStage::Active,
            (Stage::AwaitingRedemption { .. } | Stage::AwaitingSharer { .. }, None) => {
                LiveStage::Pending
            }
            (_, None) => LiveStage::Joined,
        };
        let device_id = match &s.stage {
            Stage::AwaitingSharer { device_id, .. } => Some(device_id.clone()),
            _ => s
                .sharer
                .as_ref()
                .and_then(|seat| seat.party.device.as_ref())
                .map(|d| d.id.clone()),
        };
        self.live.put_session(
            id,
            LiveSession {
                tenant_id: s.tenant_id.clone(),
                stage,
                mode: s.mode,
                chat: s.chat,
                helper: s.helper.party.user_ref(),
                helper_conn: s.helper.conn,
                sharer: s.sharer.as_ref().and_then(|seat| seat.party.user_ref()),
                sharer_conn: s.sharer.as_ref().and_then(|seat| seat.conn),
                device_id,
            },
        );
    }

    // ----------------------------------------------------------------- code flow

    fn request_code(&mut self, conn: ConnId, id: &RequestId, now: Timestamp) -> Reply {
        let user = self.idle_user(conn)?;
        let party = self.conn(conn)?.party.clone();
        let Some(session_id) = self.fresh_session_id() else {
            return refuse(
                ErrorCode::Unavailable,
                "no fresh session id available; retry",
            );
        };
        let mut fresh = None;
        for _ in 0..FRESH_ATTEMPTS {
            let mut bytes = [0u8; CODE_LEN];
            self.crypto.fill_random(&mut bytes);
            let code = code_from_bytes(bytes);
            let digest = self.crypto.code_digest(&code);
            // Insert-if-absent: a code is unique among every pending and remembered one.
            if self
                .live
                .insert_code(&digest, LiveCode::Pending(session_id.clone()))
            {
                fresh = Some((code, digest));
                break;
            }
        }
        let Some((code, digest)) = fresh else {
            return refuse(ErrorCode::Unavailable, "no fresh code available; retry");
        };
        let tenant = party.tenant_id.clone();
        let expires_at = now.saturating_add(self.config.code_ttl);
        self.new_session(
            &session_id,
            Seat {
                conn: Some(conn),
                party,
            },
            Stage::AwaitingRedemption { digest },
        );
        self.set_deadline(&session_id, Some(expires_at));
        if let Some(c) = self.conns.get_mut(&conn) {
            c.session = Some(session_id.clone());
        }
        self.send(
            conn,
            ServerEvent::CodeIssued {
                id: id.clone(),
                session_id: session_id.clone(),
                code,
                expires_at,
            },
        );
        self.audit(
            now,
            &tenant,
            Some(&session_id),
            Some(user),
            AuditKind::CodeIssued,
        );
        Ok(())
    }

    fn redeem_code(&mut self, conn: ConnId, id: &RequestId, typed: &str, now: Timestamp) -> Reply {
        let user = self.idle_user(conn)?;
        let tenant = user.tenant_id.clone();
        if self.user_failures.is_locked(&user, now) || self.tenant_failures.is_locked(&tenant, now)
        {
            self.audit(
                now,
                &tenant,
                None,
                Some(user),
                AuditKind::RedemptionFailed {
                    code: ErrorCode::RateLimited.as_str().into(),
                    locked: false,
                },
            );
            return refuse(
                ErrorCode::RateLimited,
                "too many failed attempts; try again later",
            );
        }
        match self.lookup_code(typed) {
            Ok((digest, session_id)) => {
                let helper_tenant = self.sessions.get(&session_id).map(|s| s.tenant_id.clone());
                if helper_tenant.as_deref() != Some(tenant.as_str()) {
                    return self.redemption_failed(
                        user,
                        ErrorCode::Policy(DenyReason::CrossTenant),
                        now,
                    );
                }
                if self.is_own_session(&session_id, &user) {
                    // Not a guess: the code stays valid for its real sharer and is not counted
                    // as a failed redemption.
                    self.audit(
                        now,
                        &tenant,
                        Some(&session_id),
                        Some(user),
                        AuditKind::RedemptionFailed {
                            code: ErrorCode::OwnSession.as_str().into(),
                            locked: false,
                        },
                    );
                    return refuse(
                        ErrorCode::OwnSession,
                        "this is your own code: the person you help must enter it",
                    );
                }
                // Atomic: of two redemptions racing for one code (on two nodes), one wins.
                let pending = LiveCode::Pending(session_id.clone());
                if self
                    .live
                    .take_code_if(&digest, &|code| *code == pending)
                    .is_none()
                {
                    return self.redemption_failed(user, ErrorCode::InvalidCode, now);
                }
                self.join(&session_id, conn, Some(id.clone()), now);
                Ok(())
            }
            Err(code) => self.redemption_failed(user, code, now),
        }
    }

    /// Whether `user` is the helper of session `id` (nobody assists themselves).
    fn is_own_session(&self, id: &SessionId, user: &UserRef) -> bool {
        self.sessions
            .get(id)
            .is_some_and(|s| s.helper.party.user_ref().as_ref() == Some(user))
    }

    /// Finds a pending code. A wrong code, a used one and a malformed one all give
    /// `invalidCode`; only an expired one (still remembered) says so.
    fn lookup_code(&self, typed: &str) -> Result<(CodeDigest, SessionId), ErrorCode> {
        let code = normalize_code(typed).ok_or(ErrorCode::InvalidCode)?;
        let digest = self.crypto.code_digest(&code);
        // The map lookup compares digests of the guess, which reveals nothing about stored
        // codes; the constant-time comparison is the check that decides.
        let (stored, entry) = self.live.code(&digest).ok_or(ErrorCode::InvalidCode)?;
        if !self.crypto.digests_equal(&stored, &digest) {
            return Err(ErrorCode::InvalidCode);
        }
        match entry {
            LiveCode::Pending(session_id) => Ok((digest, session_id)),
            LiveCode::Expired { .. } => Err(ErrorCode::CodeExpired),
        }
    }

    fn redemption_failed(&mut self, user: UserRef, code: ErrorCode, now: Timestamp) -> Reply {
        let tenant = user.tenant_id.clone();
        let user_locked = self.user_failures.fail(&user, now);
        let tenant_locked = self.tenant_failures.fail(&tenant, now);
        self.audit(
            now,
            &tenant,
            None,
            Some(user),
            AuditKind::RedemptionFailed {
                code: code.as_str().into(),
                locked: user_locked || tenant_locked,
            },
        );
        let message = match code {
            ErrorCode::CodeExpired => "the code has expired; ask for a new one",
            ErrorCode::Policy(DenyReason::CrossTenant) => {
                "the helper belongs to another organisation; sessions across tenants are not allowed"
            }
            _ => "the code is not valid",
        };
        refuse(code, message)
    }

    /// The sharer on `conn` joins session `id` (code redeemed or launch accepted).
    fn join(&mut self, id: &SessionId, conn: ConnId, request: Option<RequestId>, now: Timestamp) {
        let Some(party) = self.conns.get(&conn).map(|c| c.party.clone()) else {
            return;
        };
        let join_deadline = now.saturating_add(self.config.join_timeout);
        let Some(session) = self.sessions.get_mut(id) else {
            return;
        };
        session.sharer = Some(Seat {
            conn: Some(conn),
            party: party.clone(),
        });
        session.stage = Stage::Joined;
        session.join_deadline = Some(join_deadline);
        let helper_conn = session.helper.conn;
        let helper_profile = session.helper.party.profile.clone();
        let tenant = session.tenant_id.clone();
        if let Some(c) = self.conns.get_mut(&conn) {
            c.session = Some(id.clone());
            c.offers.remove(id);
        }
        self.set_deadline(id, Some(join_deadline));
        self.publish(id);
        self.send(
            conn,
            ServerEvent::SessionJoined {
                id: request,
                session_id: id.clone(),
                role: Role::Sharer,
                peer_profile: helper_profile,
            },
        );
        self.send_to(
            helper_conn,
            ServerEvent::SessionJoined {
                id: None,
                session_id: id.clone(),
                role: Role::Helper,
                peer_profile: party.profile.clone(),
            },
        );
        self.audit(now, &tenant, Some(id), party.user_ref(), AuditKind::Joined);
    }

    // ----------------------------------------------------------------- launch flow

    fn request_session(
        &mut self,
        conn: ConnId,
        id: &RequestId,
        device_id: String,
        mode: Option<Mode>,
        acknowledged: Vec<Warning>,
        now: Timestamp,
    ) -> Reply {
        self.idle_user(conn)?;
        let party = self.conn(conn)?.party.clone();
        let (session_id, expires_at) = self
            .launch(
                Seat {
                    conn: Some(conn),
                    party,
                },
                &device_id,
                mode,
                acknowledged,
                now,
            )
            .map_err(|e| (e.code(), e.to_string()))?;
        if let Some(c) = self.conns.get_mut(&conn) {
            c.session = Some(session_id.clone());
        }
        self.send(
            conn,
            ServerEvent::LaunchPending {
                id: Some(id.clone()),
                session_id,
                device_id,
                expires_at,
            },
        );
        Ok(())
    }

    /// An admin asked for a session with a device (`requestRemoteAssistance`); `requested_by`
    /// is the helper. The admin API checks the caller's Graph permission; the policy runs when
    /// the helper asks for a mode. The helper's signalling connection (an idle one now, or
    /// the next one the user opens) gets `launchPending`.
    pub fn handle_admin_launch(
        &mut self,
        requested_by: Party,
        device_id: &str,
        now: Timestamp,
    ) -> Result<SessionId, LaunchError> {
        self.advance(now);
        let user = requested_by.user_ref().ok_or(LaunchError::NotAUser)?;
        let helper_conn = self
            .live
            .user_connections(&user)
            .into_iter()
            .find(|c| self.conns.get(c).is_some_and(|c| c.session.is_none()));
        let (session_id, expires_at) = self.launch(
            Seat {
                conn: helper_conn,
                party: requested_by,
            },
            device_id,
            None,
            Vec::new(),
            now,
        )?;
        match helper_conn {
            Some(conn) => {
                if let Some(c) = self.conns.get_mut(&conn) {
                    c.session = Some(session_id.clone());
                }
                self.send(
                    conn,
                    ServerEvent::LaunchPending {
                        id: None,
                        session_id: session_id.clone(),
                        device_id: device_id.to_owned(),
                        expires_at,
                    },
                );
            }
            None => {
                self.unattached.insert(session_id.clone());
            }
        }
        Ok(session_id)
    }

    fn launch(
        &mut self,
        helper: Seat,
        device_id: &str,
        mode: Option<Mode>,
        acknowledged: Vec<Warning>,
        now: Timestamp,
    ) -> Result<(SessionId, Timestamp), LaunchError> {
        let tenant = helper.party.tenant_id.clone();
        let device_conns: Vec<ConnId> = self
            .live
            .device_connections(&tenant, device_id)
            .into_iter()
            .filter(|c| Some(*c) != helper.conn)
            .collect();
        if device_conns.is_empty() {
            return Err(LaunchError::DeviceOffline);
        }
        let offered: BTreeSet<ConnId> = device_conns
            .into_iter()
            .filter(|c| self.conns.get(c).is_some_and(|c| c.session.is_none()))
            .collect();
        if offered.is_empty() {
            return Err(LaunchError::DeviceBusy);
        }
        let session_id = self.fresh_session_id().ok_or(LaunchError::Unavailable)?;
        let expires_at = now.saturating_add(self.config.launch_timeout);
        let helper_profile = helper.party.profile.clone();
        let actor = helper.party.user_ref();
        self.new_session(
            &session_id,
            helper,
            Stage::AwaitingSharer {
                device_id: device_id.to_owned(),
                offered: offered.clone(),
                mode,
                acknowledged,
            },
        );
        self.set_deadline(&session_id, Some(expires_at));
        for conn in &offered {
            if let Some(c) = self.conns.get_mut(conn) {
                c.offers.insert(session_id.clone());
            }
            self.send(
                *conn,
                ServerEvent::LaunchRequested {
                    session_id: session_id.clone(),
                    helper_profile: helper_profile.clone(),
                    mode,
                    expires_at,
                },
            );
        }
        self.audit(
            now,
            &tenant,
            Some(&session_id),
            actor,
            AuditKind::LaunchRequested {
                device_id: device_id.to_owned(),
                notified: offered.len(),
            },
        );
        Ok((session_id, expires_at))
    }

    fn answer_launch(
        &mut self,
        conn: ConnId,
        id: &RequestId,
        session_id: &SessionId,
        accept: bool,
        now: Timestamp,
    ) -> Reply {
        let offered_here = matches!(
            self.sessions.get(session_id).map(|s| &s.stage),
            Some(Stage::AwaitingSharer { offered, .. }) if offered.contains(&conn)
        );
        if !offered_here {
            return refuse(ErrorCode::NotFound, "no such launch request");
        }
        if accept && self.conn(conn)?.session.is_some() {
            return refuse(
                ErrorCode::NotAllowed,
                "this connection is already in a session",
            );
        }
        if accept {
            if let Some(user) = self.conn(conn)?.party.user_ref() {
                if self.is_own_session(session_id, &user) {
                    return refuse(
                        ErrorCode::OwnSession,
                        "you cannot accept your own launch request; decline it",
                    );
                }
            }
        }
        let Some(Stage::AwaitingSharer {
            offered,
            mode,
            acknowledged,
            ..
        }) = self.sessions.get_mut(session_id).map(|s| &mut s.stage)
        else {
            return refuse(ErrorCode::NotFound, "no such launch request");
        };
        offered.remove(&conn);
        if let Some(c) = self.conns.get_mut(&conn) {
            c.offers.remove(session_id);
        }
        if !accept {
            let emptied = offered.is_empty();
            self.send(conn, ServerEvent::Ack { id: id.clone() });
            if emptied {
                self.end_session(session_id, EndReason::LaunchDeclined, EndedBy::Sharer, now);
            }
            return Ok(());
        }
        let others = std::mem::take(offered);
        let pending = mode.take().map(|m| (m, std::mem::take(acknowledged)));
        for other in others {
            if let Some(c) = self.conns.get_mut(&other) {
                c.offers.remove(session_id);
            }
            self.send(
                other,
                ServerEvent::LaunchWithdrawn {
                    session_id: session_id.clone(),
                    reason: WithdrawReason::AnsweredElsewhere,
                },
            );
        }
        self.join(session_id, conn, Some(id.clone()), now);
        let helper_present = self
            .sessions
            .get(session_id)
            .is_some_and(|s| s.helper.conn.is_some());
        if let (Some((mode, acknowledged)), true) = (pending, helper_present) {
            self.begin_mode_request(session_id, mode, acknowledged, None, now);
        }
        Ok(())
    }

    // ----------------------------------------------------------------- modes and consent

    fn request_mode(
        &mut self,
        conn: ConnId,
        id: &RequestId,
        session_id: &SessionId,
        mode: Mode,
        acknowledged: Vec<Warning>,
        now: Timestamp,
    ) -> Reply {
        if self.role_in(conn, session_id)? != Role::Helper {
            return refuse(ErrorCode::NotAllowed, "only the helper asks for a mode");
        }
        let Some(session) = self.sessions.get(session_id) else {
            return refuse(ErrorCode::NotFound, "no such session");
        };
        if !matches!(session.stage, Stage::Joined | Stage::Active) {
            return refuse(ErrorCode::NotAllowed, "the session cannot change mode now");
        }
        if let Some(current) = session.mode {
            if mode == current {
                return refuse(ErrorCode::NotAllowed, "the session is already in this mode");
            }
            if mode < current {
                // Downgrades need neither the policy nor consent.
                let chat = session.chat;
                self.send(
                    conn,
                    ServerEvent::ModeRequested {
                        id: Some(id.clone()),
                        session_id: session_id.clone(),
                        mode,
                        consent: ConsentKind::None,
                        expires_at: None,
                    },
                );
                self.apply_mode(session_id, mode, chat, now);
                return Ok(());
            }
        }
        self.begin_mode_request(session_id, mode, acknowledged, Some(id.clone()), now);
        Ok(())
    }

    fn begin_mode_request(
        &mut self,
        session_id: &SessionId,
        mode: Mode,
        acknowledged: Vec<Warning>,
        request: Option<RequestId>,
        now: Timestamp,
    ) {
        self.next_eval = self.next_eval.wrapping_add(1);
        let eval = EvalId(self.next_eval);
        let Some(session) = self.sessions.get_mut(session_id) else {
            return;
        };
        let (Some(helper), Some(sharer)) =
            (session.helper.party.user_ref(), session.sharer.as_ref())
        else {
            return;
        };
        let request_out = EvaluateRequest {
            eval,
            session_id: session_id.clone(),
            helper: helper.clone(),
            sharer: sharer.party.user_ref(),
            sharer_tenant_id: sharer.party.tenant_id.clone(),
            device_id: sharer.party.device.as_ref().map(|d| d.id.clone()),
            mode,
        };
        session.stage = Stage::AwaitingDecision {
            eval,
            mode,
            acknowledged,
            request,
        };
        let tenant = session.tenant_id.clone();
        self.evals.insert(eval, session_id.clone());
        let deadline = now.saturating_add(self.config.decision_timeout);
        self.set_deadline(session_id, Some(deadline));
        self.outputs.push_back(Output::Evaluate(request_out));
        self.audit(
            now,
            &tenant,
            Some(session_id),
            Some(helper),
            AuditKind::Requested { mode },
        );
    }

    /// Puts a session whose mode request is over back to waiting for the next one.
    fn settle(&mut self, session_id: &SessionId) {
        let Some(session) = self.sessions.get_mut(session_id) else {
            return;
        };
        let deadline = if session.mode.is_some() {
            session.stage = Stage::Active;
            None
        } else {
            session.stage = Stage::Joined;
            session.join_deadline
        };
        self.set_deadline(session_id, deadline);
    }

    /// The policy decision for `eval` (from [`Output::Evaluate`]).
    pub fn handle_decision(
        &mut self,
        eval: EvalId,
        decision: Decision,
        now: Timestamp,
    ) -> Result<(), InputError> {
        self.advance(now);
        let session_id = self
            .evals
            .remove(&eval)
            .ok_or(InputError::UnknownEvaluation(eval))?;
        let Some(session) = self.sessions.get_mut(&session_id) else {
            return Err(InputError::UnknownEvaluation(eval));
        };
        let (mode, acknowledged, request) = match &mut session.stage {
            Stage::AwaitingDecision {
                eval: waiting,
                mode,
                acknowledged,
                request,
            } if *waiting == eval => (*mode, std::mem::take(acknowledged), request.take()),
            _ => return Err(InputError::UnknownEvaluation(eval)),
        };
        let tenant = session.tenant_id.clone();
        let helper_conn = session.helper.conn;
        let helper_user = session.helper.party.user_ref();
        let helper_profile = session.helper.party.profile.clone();
        let sharer_conn = session.conn_of(Role::Sharer);
        let sharer_present = session
            .sharer
            .as_ref()
            .is_some_and(|s| s.conn.is_some() && s.party.user_id.is_some());
        let blocked = self.chat_blocked.get(&tenant).copied().unwrap_or(false);
        let denial = match &decision {
            Decision::Deny { reason } => Some(*reason),
            Decision::Allow { granted, .. } if !granted.contains(&mode) => {
                Some(DenyReason::PermissionMissing)
            }
            Decision::Allow { .. } => None,
        };
        if let Some(reason) = denial {
            self.settle(&session_id);
            self.audit(
                now,
                &tenant,
                Some(&session_id),
                helper_user,
                AuditKind::Denied { mode, reason },
            );
            if let Some(conn) = helper_conn {
                self.send_error(
                    conn,
                    request,
                    ErrorCode::Policy(reason),
                    format!("denied by policy: {reason}"),
                    Some(session_id),
                );
            }
            return Ok(());
        }
        let warnings = decision.warnings().to_vec();
        if warnings.iter().any(|w| !acknowledged.contains(w)) {
            self.settle(&session_id);
            if let Some(conn) = helper_conn {
                self.send(
                    conn,
                    ServerEvent::Warnings {
                        session_id: session_id.clone(),
                        mode,
                        warnings,
                    },
                );
                self.send_error(
                    conn,
                    request,
                    ErrorCode::WarningNotAcknowledged,
                    "acknowledge the warnings and ask again".into(),
                    Some(session_id),
                );
            }
            return Ok(());
        }
        let chat = decision.chat_allowed() && !blocked;
        let answer = |consent, expires_at| ServerEvent::ModeRequested {
            id: request.clone(),
            session_id: session_id.clone(),
            mode,
            consent,
            expires_at,
        };
        if mode == Mode::Unattended && !sharer_present {
            self.send_to(helper_conn, answer(ConsentKind::None, None));
            self.grant(&session_id, mode, chat, now);
        } else if mode == Mode::Unattended {
            let starts_at = now.saturating_add(self.config.unattended_decline_window);
            if let Some(s) = self.sessions.get_mut(&session_id) {
                s.stage = Stage::AwaitingDeclineWindow { mode, chat };
            }
            self.set_deadline(&session_id, Some(starts_at));
            self.send_to(
                helper_conn,
                answer(ConsentKind::DeclineWindow, Some(starts_at)),
            );
            self.send_to(
                sharer_conn,
                ServerEvent::UnattendedStarting {
                    session_id: session_id.clone(),
                    helper_profile,
                    starts_at,
                },
            );
        } else {
            let expires_at = now.saturating_add(self.config.consent_timeout);
            if let Some(s) = self.sessions.get_mut(&session_id) {
                s.stage = Stage::AwaitingConsent { mode, chat };
            }
            self.set_deadline(&session_id, Some(expires_at));
            self.send_to(helper_conn, answer(ConsentKind::Required, Some(expires_at)));
            self.send_to(
                sharer_conn,
                ServerEvent::ConsentRequested {
                    session_id: session_id.clone(),
                    mode,
                    helper_profile,
                    expires_at,
                },
            );
        }
        Ok(())
    }

    fn consent(
        &mut self,
        conn: ConnId,
        id: &RequestId,
        session_id: &SessionId,
        allow: bool,
        now: Timestamp,
    ) -> Reply {
        if self.role_in(conn, session_id)? != Role::Sharer {
            return refuse(ErrorCode::NotAllowed, "only the sharer consents");
        }
        let Some(session) = self.sessions.get(session_id) else {
            return refuse(ErrorCode::NotFound, "no such session");
        };
        let (mode, chat) = match session.stage {
            Stage::AwaitingConsent { mode, chat } | Stage::AwaitingDeclineWindow { mode, chat } => {
                (mode, chat)
            }
            _ => return refuse(ErrorCode::NotAllowed, "nothing to consent to"),
        };
        let upgrade = session.mode.is_some();
        let tenant = session.tenant_id.clone();
        let actor = session.sharer.as_ref().and_then(|s| s.party.user_ref());
        self.send(conn, ServerEvent::Ack { id: id.clone() });
        if allow {
            self.grant(session_id, mode, chat, now);
            return Ok(());
        }
        self.audit(
            now,
            &tenant,
            Some(session_id),
            actor,
            AuditKind::ConsentRefused {
                mode,
                timed_out: false,
            },
        );
        if upgrade {
            self.settle(session_id);
            let event = ServerEvent::ConsentDeclined {
                session_id: session_id.clone(),
                mode,
            };
            self.broadcast(session_id, &event);
        } else {
            self.end_session(session_id, EndReason::Declined, EndedBy::Sharer, now);
        }
        Ok(())
    }

    fn broadcast(&mut self, session_id: &SessionId, event: &ServerEvent) {
        let conns: Vec<ConnId> = self
            .sessions
            .get(session_id)
            .map(|s| s.conns().collect())
            .unwrap_or_default();
        for conn in conns {
            self.send(conn, event.clone());
        }
    }

    /// The mode is granted (consent given, window over, or no consent needed).
    fn grant(&mut self, session_id: &SessionId, mode: Mode, chat: bool, now: Timestamp) {
        let Some(session) = self.sessions.get_mut(session_id) else {
            return;
        };
        if session.mode.is_some() {
            self.settle(session_id);
            self.apply_mode(session_id, mode, chat, now);
        } else {
            session.stage = Stage::AwaitingTickets { mode, chat };
            let deadline = now.saturating_add(self.config.ticket_timeout);
            self.set_deadline(session_id, Some(deadline));
            self.outputs.push_back(Output::IssueTickets {
                session_id: session_id.clone(),
                mode,
                chat,
            });
        }
    }

    /// Changes the mode (and chat) of an active session and tells everyone.
    fn apply_mode(&mut self, session_id: &SessionId, mode: Mode, chat: bool, now: Timestamp) {
        let Some(session) = self.sessions.get_mut(session_id) else {
            return;
        };
        let Some(from) = session.mode else { return };
        session.mode = Some(mode);
        session.chat = chat;
        let raised = session.highest.is_none_or(|h| mode > h);
        if raised {
            session.highest = Some(mode);
        }
        let tenant = session.tenant_id.clone();
        let actor = session.helper.party.user_ref();
        self.publish(session_id);
        self.outputs.push_back(Output::RelaySetMode {
            session_id: session_id.clone(),
            mode,
            chat,
        });
        let event = ServerEvent::ModeChanged {
            session_id: session_id.clone(),
            mode,
            chat,
        };
        self.broadcast(session_id, &event);
        if raised {
            self.outputs
                .push_back(Output::Record(RecordEvent::ModeRaised {
                    session_id: session_id.clone(),
                    tenant_id: tenant.clone(),
                    mode,
                    at: now,
                }));
        }
        self.audit(
            now,
            &tenant,
            Some(session_id),
            actor,
            AuditKind::ModeChanged {
                from,
                to: mode,
                chat,
            },
        );
    }

    /// Relay tickets for a session that [`Output::IssueTickets`] asked for: the session
    /// becomes active and each side gets `sessionActive` with its own ticket.
    pub fn handle_tickets(
        &mut self,
        session_id: &SessionId,
        helper: RelayAccess,
        sharer: RelayAccess,
        now: Timestamp,
    ) -> Result<(), InputError> {
        self.advance(now);
        let not_awaiting = || InputError::NotAwaitingTickets(session_id.clone());
        let session = self.sessions.get_mut(session_id).ok_or_else(not_awaiting)?;
        let Stage::AwaitingTickets { mode, chat } = session.stage else {
            return Err(not_awaiting());
        };
        let Some(sharer_seat) = session.sharer.as_ref() else {
            return Err(not_awaiting());
        };
        session.stage = Stage::Active;
        session.mode = Some(mode);
        session.highest = Some(mode);
        session.chat = chat;
        let record = RecordEvent::Started {
            session_id: session_id.clone(),
            tenant_id: session.tenant_id.clone(),
            started_at: now,
            mode,
            chat,
            helper: ReportParty::from(&session.helper.party),
            sharer: ReportParty::from(&sharer_seat.party),
            device: sharer_seat.party.device.clone(),
        };
        let tenant = session.tenant_id.clone();
        let actor = session.helper.party.user_ref();
        let (helper_conn, sharer_conn) =
            (session.conn_of(Role::Helper), session.conn_of(Role::Sharer));
        self.set_deadline(session_id, None);
        self.publish(session_id);
        for (conn, relay) in [(helper_conn, helper), (sharer_conn, sharer)] {
            self.send_to(
                conn,
                ServerEvent::SessionActive {
                    session_id: session_id.clone(),
                    mode,
                    chat,
                    relay,
                },
            );
        }
        self.outputs.push_back(Output::Record(record));
        self.schedule(
            now.saturating_add(self.config.seen_interval),
            Timer::Seen(session_id.clone()),
        );
        self.audit(
            now,
            &tenant,
            Some(session_id),
            actor,
            AuditKind::Started { mode },
        );
        Ok(())
    }

    /// Tickets could not be issued (no relay available): the session ends with
    /// `relayUnavailable`.
    pub fn handle_tickets_failed(
        &mut self,
        session_id: &SessionId,
        now: Timestamp,
    ) -> Result<(), InputError> {
        self.advance(now);
        match self.sessions.get(session_id).map(|s| &s.stage) {
            Some(Stage::AwaitingTickets { .. }) => {
                self.end_session(
                    session_id,
                    EndReason::RelayUnavailable,
                    EndedBy::Broker,
                    now,
                );
                Ok(())
            }
            _ => Err(InputError::NotAwaitingTickets(session_id.clone())),
        }
    }

    /// The relay says `role`'s leg of an active session dropped (closed, failed or stopped
    /// reading) after pairing. The session ends for both sides with `disconnected`, by that
    /// side, so both apps may start a new one. A session that is not active (already ended,
    /// or never granted) is left alone.
    pub fn handle_relay_leg_left(&mut self, session_id: &SessionId, role: Role, now: Timestamp) {
        self.advance(now);
        if self.sessions.get(session_id).and_then(|s| s.mode).is_none() {
            return;
        }
        let by = match role {
            Role::Helper => EndedBy::Helper,
            Role::Sharer => EndedBy::Sharer,
        };
        self.end_session(session_id, EndReason::Disconnected, by, now);
    }

    // ----------------------------------------------------------------- chat and end

    fn chat(
        &mut self,
        conn: ConnId,
        id: &RequestId,
        session_id: &SessionId,
        text: String,
        now: Timestamp,
    ) -> Reply {
        let role = self.role_in(conn, session_id)?;
        let Some(session) = self.sessions.get(session_id) else {
            return refuse(ErrorCode::NotFound, "no such session");
        };
        if session.mode.is_none() {
            return refuse(
                ErrorCode::NotAllowed,
                "chat starts when the session is active",
            );
        }
        if text.chars().count() > MAX_CHAT_CHARS {
            return refuse(
                ErrorCode::TooLarge,
                format!("chat text over {MAX_CHAT_CHARS} characters"),
            );
        }
        if !session.chat {
            let tenant = session.tenant_id.clone();
            let actor = self.conn(conn)?.party.user_ref();
            self.audit(
                now,
                &tenant,
                Some(session_id),
                actor,
                AuditKind::ChatBlocked,
            );
            return refuse(
                ErrorCode::ChatBlocked,
                "chat is disabled by your organisation",
            );
        }
        let peer = session.conn_of(match role {
            Role::Helper => Role::Sharer,
            Role::Sharer => Role::Helper,
        });
        self.send_to(
            peer,
            ServerEvent::Chat {
                session_id: session_id.clone(),
                from: role,
                text,
                at: now,
            },
        );
        self.send(conn, ServerEvent::Ack { id: id.clone() });
        Ok(())
    }

    fn end_request(
        &mut self,
        conn: ConnId,
        id: &RequestId,
        session_id: &SessionId,
        now: Timestamp,
    ) -> Reply {
        let role = self.role_in(conn, session_id)?;
        self.send(conn, ServerEvent::Ack { id: id.clone() });
        self.end_session(session_id, EndReason::Ended, role.into(), now);
        Ok(())
    }

    /// Ends a session: tells both sides, the relay, the report and the audit log, and
    /// forgets it.
    fn end_session(
        &mut self,
        session_id: &SessionId,
        reason: EndReason,
        by: EndedBy,
        now: Timestamp,
    ) {
        let Some(session) = self.sessions.remove(session_id) else {
            return;
        };
        self.live.remove_session(session_id);
        self.unattached.remove(session_id);
        let relay_knows =
            session.mode.is_some() || matches!(session.stage, Stage::AwaitingTickets { .. });
        let participants = [session.conn_of(Role::Helper), session.conn_of(Role::Sharer)];
        match session.stage {
            Stage::AwaitingRedemption { digest } => {
                if reason == EndReason::CodeExpired {
                    let forget_at = now.saturating_add(self.config.expired_code_memory);
                    self.live
                        .replace_code(&digest, LiveCode::Expired { forget_at });
                    self.schedule(forget_at, Timer::ForgetCode(digest));
                } else {
                    self.live.take_code_if(&digest, &|_| true);
                }
            }
            Stage::AwaitingSharer { offered, .. } => {
                for conn in offered {
                    if let Some(c) = self.conns.get_mut(&conn) {
                        c.offers.remove(session_id);
                    }
                    self.send(
                        conn,
                        ServerEvent::LaunchWithdrawn {
                            session_id: session_id.clone(),
                            reason: WithdrawReason::Cancelled,
                        },
                    );
                }
            }
            Stage::AwaitingDecision { eval, .. } => {
                self.evals.remove(&eval);
            }
            _ => {}
        }
        let ended = ServerEvent::SessionEnded {
            session_id: session_id.clone(),
            reason,
            by,
        };
        for conn in participants.into_iter().flatten() {
            if let Some(c) = self.conns.get_mut(&conn) {
                if c.session.as_ref() == Some(session_id) {
                    c.session = None;
                }
            }
            self.send(conn, ended.clone());
        }
        if relay_knows {
            self.outputs.push_back(Output::RelayEnd {
                session_id: session_id.clone(),
                reason,
            });
        }
        if let Some(highest_mode) = session.highest {
            self.outputs.push_back(Output::Record(RecordEvent::Ended {
                session_id: session_id.clone(),
                tenant_id: session.tenant_id.clone(),
                ended_at: now,
                highest_mode,
                reason,
                by,
            }));
        }
        // The session is already gone from the map: name the actor from its seats here.
        let actor = match by {
            EndedBy::Helper => Some(&session.helper.party),
            EndedBy::Sharer => session.sharer.as_ref().map(|s| &s.party),
            EndedBy::Broker | EndedBy::Admin => None,
        };
        self.audit_named(
            now,
            &session.tenant_id,
            Some(session_id),
            actor.and_then(Party::user_ref),
            actor.and_then(|p| p.user_principal_name.clone()),
            AuditKind::Ended { reason, by },
        );
    }

    fn on_deadline(&mut self, session_id: &SessionId, at: Timestamp, now: Timestamp) {
        let Some(session) = self.sessions.get_mut(session_id) else {
            return;
        };
        if session.deadline != Some(at) {
            return; // superseded
        }
        session.deadline = None;
        let upgrade = session.mode.is_some();
        let tenant = session.tenant_id.clone();
        match &mut session.stage {
            Stage::AwaitingRedemption { .. } => {
                self.end_session(session_id, EndReason::CodeExpired, EndedBy::Broker, now);
            }
            Stage::AwaitingSharer { .. } => {
                self.end_session(session_id, EndReason::LaunchTimedOut, EndedBy::Broker, now);
            }
            Stage::Joined => {
                self.end_session(session_id, EndReason::JoinTimedOut, EndedBy::Broker, now)
            }
            Stage::AwaitingDecision { eval, request, .. } => {
                let (eval, request) = (*eval, request.take());
                let helper_conn = session.helper.conn;
                self.evals.remove(&eval);
                self.settle(session_id);
                if let Some(conn) = helper_conn {
                    self.send_error(
                        conn,
                        request,
                        ErrorCode::Unavailable,
                        "the policy could not be evaluated in time; retry".into(),
                        Some(session_id.clone()),
                    );
                }
            }
            Stage::AwaitingConsent { mode, .. } => {
                let mode = *mode;
                let event = ServerEvent::ConsentTimedOut {
                    session_id: session_id.clone(),
                    mode,
                };
                self.broadcast(session_id, &event);
                self.audit(
                    now,
                    &tenant,
                    Some(session_id),
                    None,
                    AuditKind::ConsentRefused {
                        mode,
                        timed_out: true,
                    },
                );
                if upgrade {
                    self.settle(session_id);
                } else {
                    self.end_session(session_id, EndReason::ConsentTimedOut, EndedBy::Broker, now);
                }
            }
            Stage::AwaitingDeclineWindow { mode, chat } => {
                let (mode, chat) = (*mode, *chat);
                self.grant(session_id, mode, chat, now);
            }
            Stage::AwaitingTickets { .. } => {
                self.end_session(
                    session_id,
                    EndReason::RelayUnavailable,
                    EndedBy::Broker,
                    now,
                );
            }
            Stage::Active => {}
        }
    }

    // ----------------------------------------------------------------- admin

    /// An admin changed the tenant's Remote Help settings (PATCH). `blockChat` applies to
    /// running sessions at once (the relay and both sides are told); disabling Remote Help
    /// ends every session of the tenant, pending codes and launches included.
    pub fn handle_settings_changed(
        &mut self,
        tenant_id: &str,
        block_chat: bool,
        remote_help_enabled: bool,
        now: Timestamp,
    ) {
        self.advance(now);
        self.chat_blocked.insert(tenant_id.to_owned(), block_chat);
        let mut ids: Vec<SessionId> = self
            .sessions
            .iter()
            .filter(|(_, s)| s.tenant_id == tenant_id)
            .map(|(id, _)| id.clone())
            .collect();
        ids.sort();
        for id in ids {
            if !remote_help_enabled {
                self.end_session(&id, EndReason::RemoteHelpDisabled, EndedBy::Admin, now);
                continue;
            }
            let Some(session) = self.sessions.get_mut(&id) else {
                continue;
            };
            let allowed = !block_chat;
            if let Stage::AwaitingConsent { chat, .. }
            | Stage::AwaitingDeclineWindow { chat, .. }
            | Stage::AwaitingTickets { chat, .. } = &mut session.stage
            {
                *chat = *chat && allowed;
            }
            match session.mode {
                Some(mode) if session.chat != allowed => self.apply_mode(&id, mode, allowed, now),
                Some(_) => {}
                None => {
                    session.chat = allowed;
                    self.publish(&id);
                }
            }
        }
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
