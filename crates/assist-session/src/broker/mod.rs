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
//! The [`Broker`] is the *router*: it owns the connections (rate limits, strikes, presence),
//! the codes and their live-state queries, the timers, the failure lockouts, and a map of
//! per-session machines ([`session::SessionMachine`]) it dispatches to. A session machine
//! holds one session's seats, stage, mode, chat and deadlines and knows nothing of other
//! sessions or of connections beyond their ids; what it needs from the router (a timer, a
//! directory update, its own end) it asks for through [`session::Fx`].
//!
//! Files by flow: this one holds the router's state and the timer and output plumbing;
//! [`connection`] opens and closes connections and routes requests; [`pairing`] is the code
//! flow (live-state queries and their answers); [`launch`] the launch flow; [`dispatch`] the
//! inputs that go to one session (decisions, tickets, relay legs, settings) and ending;
//! [`session`] the per-session machine, itself split by flow.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::fmt::Write as _;

use assist_policy::Mode;

use crate::code::{CodeDigest, Crypto};
use crate::config::{BrokerConfig, ConfigError};
use crate::limit::{FailureLimiter, RequestBucket, Strikes};
use crate::live::{DeviceRef, LiveCode, LiveOp, LiveToken};
use crate::message::{ErrorCode, RequestId, ServerEvent, SessionId};
use crate::output::{ConnId, EvalId, Output};
use crate::party::{Party, UserRef};
use crate::time::Timestamp;

mod connection;
mod dispatch;
mod drain;
mod launch;
mod pairing;
mod session;

pub use drain::DRAINING_MESSAGE;
use pairing::PendingLive;
use session::{Fx, SessionMachine};

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
    /// No live-state query is out under this token (already answered).
    #[error("no live-state query {0:?} is out")]
    UnknownLiveQuery(LiveToken),
    /// The answer is not of the query's kind (an IO-layer bug); the request it was for was
    /// answered `unavailable`.
    #[error("the answer to live-state query {0:?} does not fit the query")]
    MismatchedLiveAnswer(LiveToken),
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

/// How many sessions the broker holds, by the directory's stage, and the active ones by mode
/// ([`Broker::session_counts`]).
///
/// The broker keeps these as sessions change (constant work per transition, in the router's
/// one entry point to a session machine and where sessions start and end), so reading them is
/// O(1) and the signalling server can publish them after every input without walking its
/// sessions. `tests/properties.rs` checks after every step that they equal a recount.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SessionCounts {
    /// Waiting for the sharer: a code not yet redeemed, or a launch not yet answered.
    pub pending: usize,
    /// Both sides joined; no mode granted yet (a first request may be in flight).
    pub joined: usize,
    /// Active (a mode granted; an upgrade may be in flight), by the mode in force, in the
    /// order of [`Mode::ALL`].
    pub active: [usize; Mode::ALL.len()],
}

impl SessionCounts {
    /// Active sessions, all modes.
    pub fn active_total(&self) -> usize {
        self.active.iter().sum()
    }

    /// Active sessions whose mode in force is `mode`.
    pub fn active_in(&self, mode: Mode) -> usize {
        self.active[mode_index(mode)]
    }

    /// Every session counted.
    pub fn total(&self) -> usize {
        self.pending + self.joined + self.active_total()
    }

    fn slot(&mut self, bucket: Bucket) -> &mut usize {
        match bucket {
            Bucket::Pending => &mut self.pending,
            Bucket::Joined => &mut self.joined,
            Bucket::Active(mode) => &mut self.active[mode_index(mode)],
        }
    }

    fn add(&mut self, bucket: Bucket) {
        *self.slot(bucket) += 1;
    }

    fn remove(&mut self, bucket: Bucket) {
        let n = self.slot(bucket);
        *n = n.saturating_sub(1);
    }

    fn moved(&mut self, from: Bucket, to: Bucket) {
        if from != to {
            self.remove(from);
            self.add(to);
        }
    }
}

fn mode_index(mode: Mode) -> usize {
    Mode::ALL.iter().position(|m| *m == mode).unwrap_or(0)
}

/// Where a session counts in [`SessionCounts`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Bucket {
    Pending,
    Joined,
    Active(Mode),
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
    /// A live-state query is out for a request of this connection (code issue or redemption).
    busy: Option<LiveToken>,
}

impl Conn {
    fn device(&self) -> Option<DeviceRef> {
        self.party.device.as_ref().map(|d| DeviceRef {
            tenant_id: self.party.tenant_id.clone(),
            device_id: d.id.clone(),
        })
    }

    /// Neither in a session nor waiting for a live-state answer.
    fn is_idle(&self) -> bool {
        self.session.is_none() && self.busy.is_none()
    }
}

/// A scheduled timer's key in [`Broker::timers`]: when it fires, and a sequence number.
type TimerKey = (Timestamp, u64);

/// The keys of a session's pending deadline and `Seen` timers, kept so that replacing one, or
/// ending the session, removes the old timer instead of leaving it to fire for nothing: a
/// pairing's deadlines reach 15 minutes ahead, so at 30 pairings a second the stale ones
/// outnumbered the live sessions a hundred to one.
#[derive(Debug, Default, Clone, Copy)]
struct TimerKeys {
    deadline: Option<TimerKey>,
    seen: Option<TimerKey>,
}

#[derive(Debug, Clone)]
enum Timer {
    Session(SessionId),
    /// Time to write [`crate::RecordEvent::Seen`] for an active session.
    Seen(SessionId),
    /// Forget an expired code remembered until this timer's time.
    ForgetCode(CodeDigest),
}

/// The broker's router and its per-session machines. See the crate docs for the run loop.
pub struct Broker {
    config: BrokerConfig,
    crypto: Box<dyn Crypto + Send>,
    conns: HashMap<ConnId, Conn>,
    /// This node's connections by user and by device (the live state's presence sets are the
    /// shared copy, written through [`LiveOp::AddConnection`]).
    by_user: HashMap<UserRef, BTreeSet<ConnId>>,
    by_device: HashMap<DeviceRef, BTreeSet<ConnId>>,
    sessions: HashMap<SessionId, SessionMachine>,
    /// `sessions` by bucket, kept as they change.
    counts: SessionCounts,
    /// Admin-launched sessions whose helper has no connection yet.
    unattached: BTreeSet<SessionId>,
    evals: HashMap<EvalId, SessionId>,
    next_eval: u64,
    /// Live-state queries out, and what their answers are for.
    pending: HashMap<LiveToken, PendingLive>,
    next_token: u64,
    timers: BTreeMap<(Timestamp, u64), Timer>,
    next_timer: u64,
    user_failures: FailureLimiter<UserRef>,
    tenant_failures: FailureLimiter<String>,
    /// Last `blockChat` heard per tenant (from `handle_settings_changed`).
    chat_blocked: HashMap<String, bool>,
    next_purge: Timestamp,
    /// Set by [`Broker::handle_draining`]: no new sessions.
    draining: bool,
    outputs: VecDeque<Output>,
}

impl std::fmt::Debug for Broker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Broker")
            .field("connections", &self.conns.len())
            .field("sessions", &self.sessions.len())
            .field("live_queries", &self.pending.len())
            .field("pending_outputs", &self.outputs.len())
            .finish_non_exhaustive()
    }
}

type Reply = Result<(), (ErrorCode, String)>;

fn refuse<T>(code: ErrorCode, message: impl Into<String>) -> Result<T, (ErrorCode, String)> {
    Err((code, message.into()))
}

impl Broker {
    /// A broker with `config` (validated) that draws randomness and hashes codes with `crypto`.
    /// Its live state is whatever store the IO layer applies [`Output::Live`] and
    /// [`Output::LiveQuery`] to.
    pub fn new(config: BrokerConfig, crypto: Box<dyn Crypto + Send>) -> Result<Self, ConfigError> {
        config.validate()?;
        Ok(Broker {
            user_failures: FailureLimiter::new(config.user_redeem_limit),
            tenant_failures: FailureLimiter::new(config.tenant_redeem_limit),
            config,
            crypto,
            conns: HashMap::new(),
            by_user: HashMap::new(),
            by_device: HashMap::new(),
            sessions: HashMap::new(),
            counts: SessionCounts::default(),
            unattached: BTreeSet::new(),
            evals: HashMap::new(),
            next_eval: 0,
            pending: HashMap::new(),
            next_token: 0,
            timers: BTreeMap::new(),
            next_timer: 0,
            chat_blocked: HashMap::new(),
            next_purge: Timestamp::ZERO,
            draining: false,
            outputs: VecDeque::new(),
        })
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
                Timer::Session(id) => {
                    self.with_session(&id, now, |s, fx| s.on_deadline(at, fx));
                }
                Timer::Seen(id) => {
                    self.with_session(&id, now, |s, fx| s.on_seen(fx));
                }
                Timer::ForgetCode(digest) => {
                    self.live(LiveOp::RemoveCodeIf {
                        digest,
                        expected: LiveCode::Expired { forget_at: at },
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

    fn schedule(&mut self, at: Timestamp, timer: Timer) -> TimerKey {
        self.next_timer = self.next_timer.wrapping_add(1);
        let key = (at, self.next_timer);
        self.timers.insert(key, timer);
        key
    }

    /// Schedules `timer` for session `id` at `at` in the slot of its keys `slot` picks, and
    /// removes the timer that slot held before, if it has not fired yet.
    fn reschedule(
        &mut self,
        id: &SessionId,
        at: Timestamp,
        timer: Timer,
        slot: fn(&mut TimerKeys) -> &mut Option<TimerKey>,
    ) {
        let key = self.schedule(at, timer);
        let old = self
            .sessions
            .get_mut(id)
            .and_then(|s| slot(&mut s.timer_keys).replace(key));
        self.cancel(old);
    }

    /// Removes the timer `key` names, if it has not fired yet.
    fn cancel(&mut self, key: Option<TimerKey>) {
        if let Some(key) = key {
            self.timers.remove(&key);
        }
    }

    /// Runs `f` on session `id`'s machine, then carries out what it asked of the router
    /// (timers, evaluations, a directory update, its end). `None` if there is no such session.
    fn with_session<R>(
        &mut self,
        id: &SessionId,
        now: Timestamp,
        f: impl FnOnce(&mut SessionMachine, &mut Fx<'_>) -> R,
    ) -> Option<R> {
        let session = self.sessions.get_mut(id)?;
        let before = session.bucket();
        let mut fx = Fx::new(&self.config, now, &mut self.outputs, &mut self.next_eval);
        let result = f(session, &mut fx);
        self.counts.moved(before, session.bucket());
        let asked = fx.finish();
        self.apply_asked(id, asked, now);
        Some(result)
    }

    fn live(&mut self, op: LiveOp) {
        self.outputs.push_back(Output::Live(op));
    }

    fn send(&mut self, conn: ConnId, event: ServerEvent) {
        if self.conns.contains_key(&conn) {
            self.outputs.push_back(Output::Send { conn, event });
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

    // ----------------------------------------------------------------- inspection

    /// A snapshot of a session, if it exists (not ended).
    pub fn session(&self, session_id: &SessionId) -> Option<SessionInfo> {
        self.sessions.get(session_id).map(|s| SessionInfo {
            state: s.state(),
            mode: s.mode(),
            chat: s.chat_allowed(),
            tenant_id: s.tenant_id().to_owned(),
        })
    }

    /// Sessions not yet ended, in every state.
    pub fn session_count(&self) -> usize {
        self.sessions.len()
    }

    /// Sessions by stage and active ones by mode, in O(1) (kept as sessions change).
    pub fn session_counts(&self) -> SessionCounts {
        self.counts
    }

    /// Open connections.
    pub fn connection_count(&self) -> usize {
        self.conns.len()
    }

    /// Timers scheduled and not yet fired: each open session's deadline and `Seen` write, and
    /// the expired codes remembered until they may be forgotten. An ended session leaves none.
    pub fn pending_timers(&self) -> usize {
        self.timers.len()
    }

    /// Live-state queries the machine is waiting for answers to.
    pub fn live_queries_out(&self) -> usize {
        self.pending.len()
    }

    /// Whether `conn` is open and idle: in no session, offered no launch, waiting for no
    /// live-state answer. Only such a connection may be handed to another node (cluster mode
    /// moves a connection to the node that owns the session it asks for).
    pub fn is_idle(&self, conn: ConnId) -> bool {
        self.conns
            .get(&conn)
            .is_some_and(|c| c.is_idle() && c.offers.is_empty())
    }

    /// Whether session `id` is an admin launch still waiting for its helper's connection.
    pub fn is_unattached(&self, id: &SessionId) -> bool {
        self.unattached.contains(id)
    }

    /// The live-state writes that re-create what this broker holds: a presence entry per open
    /// connection, a directory entry per session, and each session's pending code. A cluster
    /// node re-applies them after the shared live state came back empty (Redis restarted).
    /// Ordered: connections by id, then sessions by id.
    pub fn live_snapshot(&self) -> Vec<LiveOp> {
        let mut conns: Vec<(&ConnId, &Conn)> = self.conns.iter().collect();
        conns.sort_by_key(|(id, _)| **id);
        let mut ops: Vec<LiveOp> = conns
            .into_iter()
            .map(|(id, c)| LiveOp::AddConnection {
                conn: *id,
                user: c.party.user_ref(),
                device: c.device(),
            })
            .collect();
        let mut ids: Vec<&SessionId> = self.sessions.keys().collect();
        ids.sort();
        for id in ids {
            let Some(s) = self.sessions.get(id) else {
                continue;
            };
            ops.push(LiveOp::PutSession {
                id: id.clone(),
                session: s.live_entry(),
            });
            if let session::Stage::AwaitingRedemption { digest } = s.stage() {
                ops.push(LiveOp::ReplaceCode {
                    digest: digest.clone(),
                    code: LiveCode::Pending(id.clone()),
                });
            }
        }
        ops
    }
}
