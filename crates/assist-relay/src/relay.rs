//! The relay node: admits legs by ticket, pairs the two legs of a session, forwards frames
//! between them with the session's mode enforced, and ends sessions (on the broker's word, a
//! leg leaving, a timeout, or a limit).
//!
//! Every decision is the pure session core's (`assist_relay_proto::session`); this module holds
//! the tasks and sockets. Per paired session there is **one task**, the first leg's: it polls
//! both legs, and a frame read from one is written to the other in the same pass while that
//! leg's socket accepts bytes; frames wait in the core's queue only under backpressure. No
//! cross-task hand-off, no lock and no timer per message: one watchdog tick per session
//! (about a second) checks the idle, bandwidth and slow-consumer limits and schedules pings.

use assist_policy::Mode;
use assist_relay_proto::close::CloseCode;
use assist_relay_proto::control::RelayControl;
use assist_relay_proto::frame::Frame;
use assist_relay_proto::session::{
    DropReason, Ended, Membership, Received, SessionCore, SessionLimits,
};
use dashmap::DashMap;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::RelayConfig;
use crate::leg::{Incoming, Leg};
use crate::metrics::RelayMetrics;
use crate::ticket::{RelayIdentity, Role, TicketAuthority, TicketClaims, TicketError};

/// Why a join was refused before the leg started.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AdmitError {
    /// The ticket does not verify (401 / 4001).
    #[error(transparent)]
    BadTicket(#[from] TicketError),
    /// Replayed ticket, role already joined, or session already ended (409 / 4002).
    #[error("the relay ticket was already used, or the session has ended")]
    TicketUsed,
    /// The node is at its session limit (503 / 4010).
    #[error("the relay is full")]
    NodeFull,
    /// The node is shutting down (503 / 4011).
    #[error("the relay is shutting down")]
    ShuttingDown,
    /// The node is draining: it starts no new sessions, while the second leg of a session it
    /// already holds still joins (503 / 4011).
    #[error("the relay is draining and starts no new sessions; ask the broker for new tickets")]
    Draining,
}

impl AdmitError {
    /// The close code for this refusal.
    pub fn close_code(&self) -> CloseCode {
        match self {
            AdmitError::BadTicket(_) => CloseCode::BadTicket,
            AdmitError::TicketUsed => CloseCode::TicketUsed,
            AdmitError::NodeFull => CloseCode::NodeFull,
            AdmitError::ShuttingDown | AdmitError::Draining => CloseCode::ShuttingDown,
        }
    }
}

/// What the relay reports about a session when it ends (for the session record).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionReport {
    /// Session id.
    pub sid: String,
    /// Frames forwarded helper → sharer and sharer → helper.
    pub frames: [u64; 2],
    /// Bytes forwarded, same order.
    pub bytes: [u64; 2],
    /// Frames dropped (any reason).
    pub dropped: u64,
    /// Screen frames dropped under congestion.
    pub screen_dropped: u64,
    /// Keyframe requests sent to the sharer.
    pub keyframe_requests: u64,
    /// Mean round-trip time of the helper's and the sharer's leg (WebSocket ping/pong, QUIC
    /// path statistics), if measured.
    pub rtt: [Option<Duration>; 2],
    /// How long the session was paired.
    pub paired_for: Duration,
    /// Why it ended (close code name).
    pub end: &'static str,
    /// The side whose leg dropped (closed, failed or stopped reading) after the two legs were
    /// paired; `None` when the relay or the broker ended the session, or the legs never paired.
    /// The broker ends its own session when it hears this (`disconnected`, by that side).
    pub left: Option<Role>,
}

impl SessionReport {
    /// The fields the session record (and the sessions report's Assist columns) carry:
    /// frames, bytes and drops per direction, screen frames dropped under congestion, keyframe
    /// requests, and each leg's mean round-trip time in milliseconds (`null` if not measured).
    pub fn record_fields(&self) -> serde_json::Value {
        let ms = |d: Option<Duration>| d.map(|d| (d.as_secs_f64() * 1000.0 * 10.0).round() / 10.0);
        serde_json::json!({
            "relayFramesHelperToSharer": self.frames[0],
            "relayFramesSharerToHelper": self.frames[1],
            "relayBytesHelperToSharer": self.bytes[0],
            "relayBytesSharerToHelper": self.bytes[1],
            "relayFramesDropped": self.dropped,
            "relayScreenFramesDropped": self.screen_dropped,
            "relayKeyframeRequests": self.keyframe_requests,
            "relayHelperRttMs": ms(self.rtt[0]),
            "relaySharerRttMs": ms(self.rtt[1]),
        })
    }
}

/// A leg admitted by ticket, ready to run.
#[derive(Debug)]
pub struct Admission {
    /// The verified ticket.
    pub claims: TicketClaims,
    session: Arc<Session>,
}

/// Where the second leg finds the first.
enum Slot {
    /// Nobody is waiting yet.
    Empty,
    /// The first leg's task waits for the second leg.
    Waiting(oneshot::Sender<Leg>),
    /// Paired, or the wait is over.
    Closed,
}

struct Session {
    sid: String,
    mode: Mode,
    chat: bool,
    members: Mutex<Membership>,
    /// Cancelled when the session ends (wakes a leg waiting for its peer).
    end: CancellationToken,
    slot: Mutex<Slot>,
    /// A mode change for the session's task to apply.
    pending_mode: Mutex<Option<(Mode, bool)>>,
    /// Wakes the session's task (a mode change or an end); capacity 1, a pending wake is enough.
    wake: mpsc::Sender<()>,
    wake_rx: Mutex<Option<mpsc::Receiver<()>>>,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field("sid", &self.sid)
            .finish_non_exhaustive()
    }
}

impl Session {
    fn new(sid: &str, mode: Mode, chat: bool) -> Self {
        let (wake, wake_rx) = mpsc::channel(1);
        Self {
            sid: sid.to_owned(),
            mode,
            chat,
            members: Mutex::new(Membership::new()),
            end: CancellationToken::new(),
            slot: Mutex::new(Slot::Empty),
            pending_mode: Mutex::new(None),
            wake,
            wake_rx: Mutex::new(Some(wake_rx)),
        }
    }

    /// Ends the session once (the first end wins).
    fn finish(&self, end: Ended) -> bool {
        let first = lock(&self.members).finish(end);
        if first {
            self.end.cancel();
            let _ = self.wake.try_send(());
        }
        first
    }

    fn ended(&self) -> Option<Ended> {
        lock(&self.members).ended().cloned()
    }

    fn code_for(&self, role: Role) -> (CloseCode, String) {
        lock(&self.members).code_for(role)
    }
}

/// Locks a std mutex, recovering from poisoning (a panicked task must not wedge the relay).
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs()
}

struct Inner {
    config: RelayConfig,
    identity: RelayIdentity,
    tickets: Arc<TicketAuthority>,
    sessions: DashMap<String, Arc<Session>>,
    used_tickets: Mutex<HashMap<String, u64>>,
    ended: Mutex<HashMap<String, u64>>,
    metrics: RelayMetrics,
    shutdown: CancellationToken,
    /// Set by [`Relay::drain`]: no new sessions.
    draining: std::sync::atomic::AtomicBool,
    tracker: TaskTracker,
    reports: Option<tokio::sync::mpsc::UnboundedSender<SessionReport>>,
}

/// A relay node; cheap to clone.
#[derive(Clone)]
pub struct Relay {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Relay {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Relay")
            .field("sessions", &self.inner.sessions.len())
            .finish_non_exhaustive()
    }
}

impl Relay {
    /// A relay with `config`, verifying tickets with `tickets`, reporting ended sessions to `reports`.
    pub fn new(
        config: RelayConfig,
        tickets: Arc<TicketAuthority>,
        metrics: RelayMetrics,
        reports: Option<tokio::sync::mpsc::UnboundedSender<SessionReport>>,
    ) -> Self {
        let name = config
            .public_addr
            .clone()
            .or_else(|| config.listen_addr.clone())
            .unwrap_or_else(|| {
                tracing::warn!("the relay has neither a public nor a listen address; tickets must name \"localhost\"");
                "localhost".into()
            });
        let identity = RelayIdentity::new(name);
        tracing::info!(relay = %identity.name, instance = %identity.instance, "relay identity");
        Self {
            inner: Arc::new(Inner {
                config,
                identity,
                tickets,
                sessions: DashMap::new(),
                used_tickets: Mutex::new(HashMap::new()),
                ended: Mutex::new(HashMap::new()),
                metrics,
                shutdown: CancellationToken::new(),
                draining: std::sync::atomic::AtomicBool::new(false),
                tracker: TaskTracker::new(),
                reports,
            }),
        }
    }

    /// The configuration.
    pub fn config(&self) -> &RelayConfig {
        &self.inner.config
    }

    /// The relay's metrics.
    pub fn metrics(&self) -> &RelayMetrics {
        &self.inner.metrics
    }

    /// Who this relay is (this run): what tickets must name (`relay`, `inst`).
    pub fn identity(&self) -> &RelayIdentity {
        &self.inner.identity
    }

    /// Sessions with at least one leg.
    pub fn active_sessions(&self) -> usize {
        self.inner.sessions.len()
    }

    /// Verifies a ticket and reserves its leg. Refusals are counted by reason.
    pub fn admit(&self, ticket: &str) -> Result<Admission, AdmitError> {
        let r = self.admit_inner(ticket);
        if let Err(e) = &r {
            self.inner.metrics.rejected(e.close_code().name());
        }
        r
    }

    fn admit_inner(&self, ticket: &str) -> Result<Admission, AdmitError> {
        let inner = &self.inner;
        if inner.shutdown.is_cancelled() {
            return Err(AdmitError::ShuttingDown);
        }
        let claims = inner.tickets.verify(ticket, &inner.identity)?;
        let now = now_secs();
        {
            let mut ended = lock(&inner.ended);
            ended.retain(|_, until| *until > now);
            if ended.contains_key(&claims.sid) {
                return Err(AdmitError::TicketUsed);
            }
        }
        let mut used = lock(&inner.used_tickets);
        if used.len() > 4096 {
            used.retain(|_, exp| *exp + 10 > now);
        }
        if used.contains_key(&claims.jti) {
            return Err(AdmitError::TicketUsed);
        }
        if !inner.sessions.contains_key(&claims.sid) {
            if inner.draining.load(std::sync::atomic::Ordering::SeqCst) {
                return Err(AdmitError::Draining);
            }
            if inner.sessions.len() >= inner.config.max_sessions {
                return Err(AdmitError::NodeFull);
            }
        }
        let session = inner
            .sessions
            .entry(claims.sid.clone())
            .or_insert_with(|| {
                inner.metrics.sessions_active.inc();
                Arc::new(Session::new(&claims.sid, claims.mode, claims.chat))
            })
            .clone();
        lock(&session.members)
            .join(claims.role)
            .map_err(|_| AdmitError::TicketUsed)?;
        used.insert(claims.jti.clone(), claims.exp);
        drop(used);
        Ok(Admission { claims, session })
    }

    /// Releases an admission whose connection never came up (e.g. a failed upgrade).
    pub fn abandon(&self, admission: Admission) {
        let s = admission.session;
        s.finish(Ended::both(
            CloseCode::PeerLeft,
            "the other leg failed to connect",
        ));
        self.retire(&s, None);
    }

    /// Ends a session on the broker's word: both legs get `ended` and close code 4000.
    pub fn end_session(&self, sid: &str, reason: &str) -> bool {
        match self.inner.sessions.get(sid).map(|s| s.clone()) {
            Some(s) => s.finish(Ended::both(CloseCode::Ended, reason)),
            None => false,
        }
    }

    /// Changes a live session's mode and chat permission; applies from the next frame.
    pub fn set_mode(&self, sid: &str, mode: Mode, chat: bool) -> bool {
        let Some(s) = self.inner.sessions.get(sid).map(|s| s.clone()) else {
            return false;
        };
        *lock(&s.pending_mode) = Some((mode, chat));
        let _ = s.wake.try_send(());
        true
    }

    /// Starts draining: a leg for a session this relay does not hold yet is refused
    /// ([`AdmitError::Draining`], 4011), while running sessions carry on and the second leg of
    /// a session already waiting still joins. [`Relay::shutdown`] ends what is left.
    pub fn drain(&self) {
        self.inner
            .draining
            .store(true, std::sync::atomic::Ordering::SeqCst);
    }

    /// Whether [`Relay::drain`] (or [`Relay::shutdown`]) was called.
    pub fn is_draining(&self) -> bool {
        self.inner
            .draining
            .load(std::sync::atomic::Ordering::SeqCst)
            || self.is_shutting_down()
    }

    /// Stops admitting, ends every session with 4011, and waits up to `grace` for legs to close.
    pub async fn shutdown(&self, grace: Duration) {
        self.inner.shutdown.cancel();
        for s in self.inner.sessions.iter() {
            s.finish(Ended::both(
                CloseCode::ShuttingDown,
                "the relay is shutting down",
            ));
        }
        self.inner.tracker.close();
        let _ = tokio::time::timeout(grace, self.inner.tracker.wait()).await;
    }

    /// Whether [`Relay::shutdown`] has begun.
    pub fn is_shutting_down(&self) -> bool {
        self.inner.shutdown.is_cancelled()
    }

    fn retire(&self, s: &Arc<Session>, core: Option<&SessionCore>) {
        if self.inner.sessions.remove(&s.sid).is_none() {
            return;
        }
        self.inner.metrics.sessions_active.dec();
        lock(&self.inner.ended).insert(
            s.sid.clone(),
            now_secs() + self.inner.config.pair_timeout.as_secs() + 120,
        );
        let end = s.ended();
        let counters = core.map(|c| *c.counters()).unwrap_or_default();
        let report = SessionReport {
            sid: s.sid.clone(),
            frames: counters.frames,
            bytes: counters.bytes,
            dropped: counters.dropped(),
            screen_dropped: counters.screen_dropped.iter().sum(),
            keyframe_requests: counters.keyframe_requests,
            rtt: counters.rtt.map(|r| r.mean()),
            paired_for: core.map(|c| c.paired_at().elapsed()).unwrap_or_default(),
            end: s.code_for(Role::Helper).0.name(),
            left: if core.is_some() {
                end.as_ref().and_then(Ended::left)
            } else {
                None
            },
        };
        tracing::info!(
            frames_h2s = report.frames[0],
            frames_s2h = report.frames[1],
            bytes_h2s = report.bytes[0],
            bytes_s2h = report.bytes[1],
            dropped = report.dropped,
            screen_dropped = report.screen_dropped,
            keyframe_requests = report.keyframe_requests,
            paired_ms = report.paired_for.as_millis() as u64,
            end = report.end,
            "relay session ended"
        );
        if let Some(tx) = &self.inner.reports {
            let _ = tx.send(report);
        }
    }

    /// Runs an admitted leg. The first leg of a session waits for the second and then drives both
    /// until the session ends; the second leg hands itself to the first and returns at once.
    /// Spawned onto the relay's task tracker by the caller (or awaited directly).
    pub async fn run_leg(&self, admission: Admission, mut leg: Leg) {
        let Admission { claims, session } = admission;
        let role = claims.role;
        let metrics = self.inner.metrics.clone();
        metrics.leg(leg.transport(), 1);
        let timeout = self.inner.config.slow_consumer_timeout;

        // Tell the leg it is in.
        let mut joined = vec![Frame::relay_control(&RelayControl::Joined {
            role: role.as_str().to_owned(),
            sid: session.sid.clone(),
        })];
        leg.load(None, false, &mut joined);
        let sent =
            tokio::time::timeout(timeout, std::future::poll_fn(|cx| leg.poll_send(cx))).await;
        if !matches!(sent, Ok(Ok(()))) {
            session.finish(Ended::by(role, CloseCode::Normal, "the leg failed"));
        }

        // The second leg hands itself over; the first waits for it.
        let rx = {
            let mut slot = lock(&session.slot);
            match std::mem::replace(&mut *slot, Slot::Closed) {
                Slot::Empty if session.ended().is_none() => {
                    let (tx, rx) = oneshot::channel();
                    *slot = Slot::Waiting(tx);
                    Some(rx)
                }
                Slot::Waiting(tx) if session.ended().is_none() => {
                    drop(slot);
                    match tx.send(leg) {
                        Ok(()) => return,
                        Err(back) => {
                            leg = back;
                            None
                        }
                    }
                }
                _ => None,
            }
        };
        let peer = match rx {
            None => None,
            Some(mut rx) => {
                let got = tokio::select! {
                    r = &mut rx => r.ok(),
                    _ = session.end.cancelled() => None,
                    _ = tokio::time::sleep(self.inner.config.pair_timeout) => {
                        session.finish(Ended::by(
                            role.peer(),
                            CloseCode::PeerLeft,
                            "the other leg did not arrive in time",
                        ).with_code(role, CloseCode::PeerTimeout));
                        None
                    }
                };
                // A leg sent while the wait ended is still ours to close.
                *lock(&session.slot) = Slot::Closed;
                got.or_else(|| rx.try_recv().ok())
            }
        };
        match peer {
            Some(peer) if session.ended().is_none() => {
                let mut legs = [leg, peer];
                if role == Role::Sharer {
                    legs.swap(0, 1);
                }
                self.drive(&session, legs).await;
            }
            peer => {
                // Never paired: close what is here.
                let mut legs = vec![(role, leg)];
                if let Some(p) = peer {
                    legs.push((role.peer(), p));
                }
                for (r, mut l) in legs {
                    self.close_leg(&session, r, &mut l, Vec::new()).await;
                }
                self.retire(&session, None);
            }
        }
    }

    /// Drives a paired session: both legs, until it ends; then closes both and retires it.
    async fn drive(&self, session: &Arc<Session>, legs: [Leg; 2]) {
        let Some(wake) = lock(&session.wake_rx).take() else {
            return;
        };
        let cfg = &self.inner.config;
        let limits = SessionLimits {
            queue: cfg.queue,
            idle_timeout: cfg.idle_timeout,
            max_bytes_per_sec: cfg.max_session_bytes_per_sec,
            bandwidth_windows: 5,
            slow_consumer_timeout: cfg.slow_consumer_timeout,
            ping_interval: cfg.ping_interval,
        };
        let mut tick = tokio::time::interval(WATCHDOG_TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut d = Driver {
            core: SessionCore::new(session.mode, session.chat, limits, Instant::now()),
            session: session.clone(),
            legs,
            wake,
            tick,
            batch: Vec::new(),
            ping: [false; 2],
            queued: 0,
            metrics: &self.inner.metrics,
            batch_bytes: cfg.write_batch_bytes,
        };
        std::future::poll_fn(|cx| d.poll(cx)).await;
        if let Some(end) = d.core.ended().cloned() {
            session.finish(end);
        }
        self.inner.metrics.queued_frames.sub(d.queued as i64);
        let Driver { mut core, legs, .. } = d;
        let [mut helper, mut sharer] = legs;
        // Both legs close at once, each bounded; each gets what was left for it, then `ended`.
        let (hf, sf) = {
            let mut take = |role: Role| {
                let mut frames = Vec::new();
                while core.has_output(role) {
                    let _ = core.take_pong(role);
                    core.poll_transmit(role, usize::MAX, Instant::now(), &mut frames);
                }
                frames
            };
            (take(Role::Helper), take(Role::Sharer))
        };
        tokio::join!(
            self.close_leg(session, Role::Helper, &mut helper, hf),
            self.close_leg(session, Role::Sharer, &mut sharer, sf),
        );
        lock(&session.members).leave(Role::Helper);
        lock(&session.members).leave(Role::Sharer);
        self.retire(session, Some(&core));
    }

    /// Writes `frames` (what was left for the leg, then `ended`) and closes the leg with the
    /// session's close code for it, bounded by [`CLOSE_TIMEOUT`].
    async fn close_leg(&self, session: &Session, role: Role, leg: &mut Leg, frames: Vec<Frame>) {
        let (code, reason) = session.code_for(role);
        let mut frames = if code == CloseCode::Normal {
            Vec::new()
        } else {
            frames
        };
        frames.extend(session.ended().and_then(|e| e.frame_for(role)));
        let _ = tokio::time::timeout(CLOSE_TIMEOUT, leg.finish(frames, code, &reason)).await;
        self.inner.metrics.closed(code);
        self.inner.metrics.leg(leg.transport(), -1);
        tracing::debug!(role = role.as_str(), code = code.name(), "relay leg closed");
    }

    /// The task tracker legs should be spawned on (so shutdown can wait for them).
    pub fn tracker(&self) -> &TaskTracker {
        &self.inner.tracker
    }
}

/// How long closing a leg (the rest of its output, `ended`, the close handshake) may take.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(2);

/// The session watchdog's period.
const WATCHDOG_TICK: Duration = Duration::from_secs(1);

/// Frames read from one leg per pass before the other leg's turn (fairness between directions).
const READS_PER_TURN: usize = 16;

/// Passes before the task yields to the runtime even though work remains.
const PASSES_PER_POLL: usize = 32;

/// The session's task state: the pure core and both legs.
struct Driver<'a> {
    core: SessionCore,
    session: Arc<Session>,
    /// By role index.
    legs: [Leg; 2],
    wake: mpsc::Receiver<()>,
    tick: tokio::time::Interval,
    /// Reused for every batch (handed to a leg and swapped back).
    batch: Vec<Frame>,
    /// A ping is due on that leg.
    ping: [bool; 2],
    /// Frames this session has counted in the queued-frames gauge.
    queued: usize,
    metrics: &'a RelayMetrics,
    batch_bytes: usize,
}

impl Driver<'_> {
    /// One or more passes over both legs; `Ready` when the session has ended.
    fn poll(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        // The wake channel and the tick are looked at once per poll, not per pass: each registers the
        // task when it returns `Pending`, so a wake or tick that comes during the passes polls it again.
        let now = Instant::now();
        while let Poll::Ready(Some(())) = self.wake.poll_recv(cx) {
            if let Some((mode, chat)) = lock(&self.session.pending_mode).take() {
                self.core.set_mode(mode, chat);
            }
            if let Some(end) = self.session.ended() {
                self.core.end(end);
            }
        }
        while self.tick.poll_tick(cx).is_ready() {
            self.on_tick(now);
        }
        for pass in 0..PASSES_PER_POLL {
            let now = if pass == 0 { now } else { Instant::now() };
            let mut progress = false;
            if self.core.ended().is_some() {
                return Poll::Ready(());
            }
            for role in Role::ALL {
                progress |= self.read(cx, role, now);
                if self.core.ended().is_some() {
                    return Poll::Ready(());
                }
                // Forward inline: what was just read goes out to the peer now.
                progress |= self.write(cx, role.peer(), now);
                if self.core.ended().is_some() {
                    return Poll::Ready(());
                }
            }
            self.update_gauge();
            if !progress {
                return Poll::Pending;
            }
        }
        // Work remains: let other tasks run, then come back.
        cx.waker().wake_by_ref();
        Poll::Pending
    }

    fn read(&mut self, cx: &mut Context<'_>, role: Role, now: Instant) -> bool {
        let mut progress = false;
        for _ in 0..READS_PER_TURN {
            if !self.core.can_read(role) {
                break;
            }
            let incoming = match self.legs[role.index()].poll_next(cx) {
                Poll::Pending => break,
                Poll::Ready(r) => r,
            };
            progress = true;
            match incoming {
                Ok(Incoming::Frame(f)) => match self.core.on_frame(role, f, now) {
                    Received::Forwarded {
                        congestion_drops,
                        keyframe_request,
                    } => self.count_drops(congestion_drops, keyframe_request),
                    Received::Dropped(reason) => self.metrics.dropped(reason, 1),
                    Received::Paused | Received::Ended => {}
                },
                Ok(Incoming::Ping(p)) => self.core.on_ping(role, p),
                Ok(Incoming::Pong) => {
                    let before = self.core.counters().rtt[role.index()];
                    self.core.on_pong(role, now);
                    let after = self.core.counters().rtt[role.index()];
                    if after.samples > before.samples {
                        let last = Duration::from_micros(after.sum_us - before.sum_us);
                        self.metrics.rtt("wss", last);
                    }
                }
                Ok(Incoming::Closed(_)) => {
                    self.core
                        .end(Ended::by(role, CloseCode::Normal, "the other leg left"));
                    break;
                }
                Err(e) => {
                    tracing::debug!(role = role.as_str(), error = %e, "leg read failed");
                    self.core
                        .end(Ended::by(role, e.close_code(), &e.to_string()));
                    break;
                }
            }
        }
        progress
    }

    fn count_drops(&self, congestion_drops: u32, keyframe_request: bool) {
        if congestion_drops > 0 {
            self.metrics
                .dropped(DropReason::Congestion, u64::from(congestion_drops));
        }
        if keyframe_request {
            self.metrics.keyframe_requests.inc();
        }
    }

    /// Writes what waits for `to`'s leg while it accepts bytes.
    fn write(&mut self, cx: &mut Context<'_>, to: Role, now: Instant) -> bool {
        let i = to.index();
        let mut progress = false;
        loop {
            let leg = &mut self.legs[i];
            match leg.poll_send(cx) {
                Poll::Ready(Ok(())) => {
                    if std::mem::take(&mut leg.progressed) {
                        progress = true;
                    }
                    self.core.on_write_progress(to);
                }
                Poll::Pending => {
                    if std::mem::take(&mut leg.progressed) {
                        progress = true;
                        self.core.on_write_progress(to);
                    }
                    self.core.on_write_blocked(to, now);
                    return progress;
                }
                Poll::Ready(Err(e)) => {
                    tracing::debug!(role = to.as_str(), error = %e, "leg write failed");
                    self.core
                        .end(Ended::by(to, CloseCode::Normal, "the other leg left"));
                    return true;
                }
            }
            let ping = std::mem::take(&mut self.ping[i]);
            if !ping && !self.core.has_output(to) {
                return progress;
            }
            let pong = self.core.take_pong(to);
            let max = if self.legs[i].one_frame_at_a_time() {
                0
            } else {
                self.batch_bytes
            };
            let t = self.core.poll_transmit(to, max, now, &mut self.batch);
            for f in &self.batch[t.control..] {
                self.metrics
                    .forwarded(f.header.channel, to.peer().index(), f.len());
            }
            if let Some(w) = t.waited {
                self.metrics.forward_latency.observe(w.as_secs_f64());
            }
            self.count_drops(t.congestion_drops, t.keyframe_request);
            if ping {
                self.core.on_ping_sent(to, now);
            }
            self.legs[i].load(pong, ping, &mut self.batch);
        }
    }

    fn on_tick(&mut self, now: Instant) {
        for role in Role::ALL {
            let leg = &mut self.legs[role.index()];
            if let Some(rtt) = leg.transport_rtt() {
                self.core.add_rtt_sample(role, rtt);
                self.metrics.rtt(leg.transport(), rtt);
            }
            if !std::mem::take(&mut leg.read_any) {
                leg.release_idle_buffer();
            }
        }
        let t = self.core.on_tick(now);
        for role in Role::ALL {
            // QUIC keeps itself alive and measures its own round trips: no pings there.
            if t.ping[role.index()] && self.legs[role.index()].wants_pings() {
                self.ping[role.index()] = true;
            }
        }
    }

    fn update_gauge(&mut self) {
        let q = self.core.queued(Role::Helper) + self.core.queued(Role::Sharer);
        if q != self.queued {
            self.metrics
                .queued_frames
                .add(q as i64 - self.queued as i64);
            self.queued = q;
        }
    }
}
