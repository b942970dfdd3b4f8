//! The relay node: admits legs by ticket, pairs the two legs of a session, forwards frames
//! between them with the session's mode enforced, and ends sessions (on the broker's word, a
//! leg leaving, a timeout, or a limit).
//!
//! Per paired session there are four tasks: each leg has a reader (its frames → the other
//! leg's queue) and a writer (its queue → the wire, in batches). The queue policy (what to
//! drop under congestion, when to ask for a keyframe) is `assist_relay_proto::queue`.

use assist_policy::Mode;
use assist_relay_proto::close::CloseCode;
use assist_relay_proto::control::RelayControl;
use assist_relay_proto::frame::{Channel, Frame};
use assist_relay_proto::queue::DirectionQueue;
use bytes::Bytes;
use dashmap::DashMap;
use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::RelayConfig;
use crate::leg::{Incoming, LegReader, LegWriter};
use crate::metrics::{DropReason, RelayMetrics};
use crate::ticket::{Role, TicketAuthority, TicketClaims, TicketError};

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
}

impl AdmitError {
    /// The close code for this refusal.
    pub fn close_code(&self) -> CloseCode {
        match self {
            AdmitError::BadTicket(_) => CloseCode::BadTicket,
            AdmitError::TicketUsed => CloseCode::TicketUsed,
            AdmitError::NodeFull => CloseCode::NodeFull,
            AdmitError::ShuttingDown => CloseCode::ShuttingDown,
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
    /// How long the session was paired.
    pub paired_for: Duration,
    /// Why it ended (close code name).
    pub end: &'static str,
    /// The side whose leg dropped (closed, failed or stopped reading) after the two legs were
    /// paired; `None` when the relay or the broker ended the session, or the legs never paired.
    /// The broker ends its own session when it hears this (`disconnected`, by that side).
    pub left: Option<Role>,
}

/// A leg admitted by ticket, ready to run.
#[derive(Debug)]
pub struct Admission {
    /// The verified ticket.
    pub claims: TicketClaims,
    session: Arc<Session>,
}

struct Direction {
    queue: Mutex<DirectionQueue>,
    /// The queue's writer waits on this for frames.
    frames_ready: Notify,
    /// A paused reader waits on this for room.
    room: Notify,
    /// When the queue last went from empty to non-empty (for the latency histogram).
    oldest: Mutex<Option<Instant>>,
}

struct Outbox {
    /// Relay-originated control frames for this leg (never dropped; written before queued frames).
    control: Mutex<VecDeque<Frame>>,
    pong: Mutex<Option<Bytes>>,
}

struct Session {
    sid: String,
    joined: Mutex<[bool; 2]>,
    paired: CancellationToken,
    end: CancellationToken,
    /// Close codes per role, set once when the session ends.
    end_codes: Mutex<Option<([CloseCode; 2], String)>>,
    mode: AtomicU8,
    chat: AtomicBool,
    /// `dirs[i]` carries frames *to* role i.
    dirs: [Direction; 2],
    outbox: [Outbox; 2],
    frames: [AtomicU64; 2],
    bytes: [AtomicU64; 2],
    dropped: AtomicU64,
    last_activity_ms: AtomicU64,
    window_bytes: AtomicU64,
    created: Instant,
    paired_at: Mutex<Option<Instant>>,
    last_keyframe_request: Mutex<Option<Instant>>,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field("sid", &self.sid)
            .finish_non_exhaustive()
    }
}

fn mode_to_u8(m: Mode) -> u8 {
    match m {
        Mode::ViewOnly => 0,
        Mode::FullControl => 1,
        Mode::Elevation => 2,
        Mode::Unattended => 3,
    }
}

fn mode_from_u8(v: u8) -> Mode {
    match v {
        1 => Mode::FullControl,
        2 => Mode::Elevation,
        3 => Mode::Unattended,
        _ => Mode::ViewOnly,
    }
}

impl Session {
    fn new(sid: &str, mode: Mode, chat: bool, cfg: &RelayConfig) -> Self {
        let dir = || Direction {
            queue: Mutex::new(DirectionQueue::new(cfg.queue)),
            frames_ready: Notify::new(),
            room: Notify::new(),
            oldest: Mutex::new(None),
        };
        let outbox = || Outbox {
            control: Mutex::new(VecDeque::new()),
            pong: Mutex::new(None),
        };
        Self {
            sid: sid.to_owned(),
            joined: Mutex::new([false; 2]),
            paired: CancellationToken::new(),
            end: CancellationToken::new(),
            end_codes: Mutex::new(None),
            mode: AtomicU8::new(mode_to_u8(mode)),
            chat: AtomicBool::new(chat),
            dirs: [dir(), dir()],
            outbox: [outbox(), outbox()],
            frames: [AtomicU64::new(0), AtomicU64::new(0)],
            bytes: [AtomicU64::new(0), AtomicU64::new(0)],
            dropped: AtomicU64::new(0),
            last_activity_ms: AtomicU64::new(0),
            window_bytes: AtomicU64::new(0),
            created: Instant::now(),
            paired_at: Mutex::new(None),
            last_keyframe_request: Mutex::new(None),
        }
    }

    fn mode(&self) -> Mode {
        mode_from_u8(self.mode.load(Ordering::Relaxed))
    }

    fn touch(&self) {
        self.last_activity_ms
            .store(self.created.elapsed().as_millis() as u64, Ordering::Relaxed);
    }

    /// Ends the session once: `codes[i]` is what role i's leg is closed with.
    fn finish(&self, codes: [CloseCode; 2], reason: &str) -> bool {
        let mut slot = lock(&self.end_codes);
        if slot.is_some() {
            return false;
        }
        *slot = Some((codes, reason.to_owned()));
        drop(slot);
        self.end.cancel();
        true
    }

    fn code_for(&self, role: Role) -> (CloseCode, String) {
        lock(&self.end_codes)
            .as_ref()
            .map(|(c, r)| (c[role.index()], r.clone()))
            .unwrap_or((CloseCode::Ended, "ended".into()))
    }

    fn send_control(&self, to: Role, msg: &RelayControl) {
        lock(&self.outbox[to.index()].control).push_back(Frame::relay_control(msg));
        self.dirs[to.index()].frames_ready.notify_one();
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
    tickets: Arc<TicketAuthority>,
    sessions: DashMap<String, Arc<Session>>,
    used_tickets: Mutex<HashMap<String, u64>>,
    ended: Mutex<HashMap<String, u64>>,
    metrics: RelayMetrics,
    shutdown: CancellationToken,
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
        Self {
            inner: Arc::new(Inner {
                config,
                tickets,
                sessions: DashMap::new(),
                used_tickets: Mutex::new(HashMap::new()),
                ended: Mutex::new(HashMap::new()),
                metrics,
                shutdown: CancellationToken::new(),
                tracker: TaskTracker::new(),
                reports,
            }),
        }
    }

    /// The configuration.
    pub fn config(&self) -> &RelayConfig {
        &self.inner.config
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
        let claims = inner
            .tickets
            .verify(ticket, inner.config.public_addr.as_deref())?;
        let now = now_secs();
        {
            let mut ended = lock(&inner.ended);
            ended.retain(|_, until| *until > now);
            if ended.contains_key(&claims.sid) {
                return Err(AdmitError::TicketUsed);
            }
        }
        {
            let mut used = lock(&inner.used_tickets);
            if used.len() > 4096 {
                used.retain(|_, exp| *exp + 10 > now);
            }
            if used.contains_key(&claims.jti) {
                return Err(AdmitError::TicketUsed);
            }
            if !inner.sessions.contains_key(&claims.sid)
                && inner.sessions.len() >= inner.config.max_sessions
            {
                return Err(AdmitError::NodeFull);
            }
            let session = inner
                .sessions
                .entry(claims.sid.clone())
                .or_insert_with(|| {
                    inner.metrics.sessions_active.inc();
                    Arc::new(Session::new(
                        &claims.sid,
                        claims.mode,
                        claims.chat,
                        &inner.config,
                    ))
                })
                .clone();
            let mut joined = lock(&session.joined);
            if joined[claims.role.index()] || session.end.is_cancelled() {
                return Err(AdmitError::TicketUsed);
            }
            joined[claims.role.index()] = true;
            used.insert(claims.jti.clone(), claims.exp);
            drop(joined);
            Ok(Admission { claims, session })
        }
    }

    /// Releases an admission whose connection never came up (e.g. a failed upgrade).
    pub fn abandon(&self, admission: Admission) {
        let s = admission.session;
        s.finish([CloseCode::PeerLeft; 2], "the other leg failed to connect");
        self.retire(&s);
    }

    /// Ends a session on the broker's word: both legs get `ended` and close code 4000.
    pub fn end_session(&self, sid: &str, reason: &str) -> bool {
        match self.inner.sessions.get(sid).map(|s| s.clone()) {
            Some(s) => s.finish([CloseCode::Ended; 2], reason),
            None => false,
        }
    }

    /// Changes a live session's mode and chat permission; applies from the next frame.
    pub fn set_mode(&self, sid: &str, mode: Mode, chat: bool) -> bool {
        let Some(s) = self.inner.sessions.get(sid).map(|s| s.clone()) else {
            return false;
        };
        s.mode.store(mode_to_u8(mode), Ordering::Relaxed);
        s.chat.store(chat, Ordering::Relaxed);
        let msg = RelayControl::ModeChanged {
            mode: mode.as_str().to_owned(),
            chat,
        };
        s.send_control(Role::Helper, &msg);
        s.send_control(Role::Sharer, &msg);
        true
    }

    /// Stops admitting, ends every session with 4011, and waits up to `grace` for legs to close.
    pub async fn shutdown(&self, grace: Duration) {
        self.inner.shutdown.cancel();
        for s in self.inner.sessions.iter() {
            s.finish([CloseCode::ShuttingDown; 2], "the relay is shutting down");
        }
        self.inner.tracker.close();
        let _ = tokio::time::timeout(grace, self.inner.tracker.wait()).await;
    }

    fn retire(&self, s: &Arc<Session>) {
        if self.inner.sessions.remove(&s.sid).is_some() {
            self.inner.metrics.sessions_active.dec();
            lock(&self.inner.ended).insert(
                s.sid.clone(),
                now_secs() + self.inner.config.pair_timeout.as_secs() + 120,
            );
            let queued: usize = s.dirs.iter().map(|d| lock(&d.queue).len()).sum();
            self.inner.metrics.queued_frames.sub(queued as i64);
            let paired_at = *lock(&s.paired_at);
            let paired_for = paired_at.map(|t| t.elapsed()).unwrap_or_default();
            let left = match (
                paired_at,
                s.code_for(Role::Helper).0,
                s.code_for(Role::Sharer).0,
            ) {
                (None, _, _) => None,
                (Some(_), h, CloseCode::PeerLeft) if h != CloseCode::PeerLeft => Some(Role::Helper),
                (Some(_), CloseCode::PeerLeft, sh) if sh != CloseCode::PeerLeft => {
                    Some(Role::Sharer)
                }
                _ => None,
            };
            let report = SessionReport {
                sid: s.sid.clone(),
                frames: [
                    s.frames[0].load(Ordering::Relaxed),
                    s.frames[1].load(Ordering::Relaxed),
                ],
                bytes: [
                    s.bytes[0].load(Ordering::Relaxed),
                    s.bytes[1].load(Ordering::Relaxed),
                ],
                dropped: s.dropped.load(Ordering::Relaxed),
                paired_for,
                end: s.code_for(Role::Helper).0.name(),
                left,
            };
            tracing::info!(
                frames_h2s = report.frames[0],
                frames_s2h = report.frames[1],
                bytes_h2s = report.bytes[0],
                bytes_s2h = report.bytes[1],
                dropped = report.dropped,
                paired_ms = report.paired_for.as_millis() as u64,
                end = report.end,
                "relay session ended"
            );
            if let Some(tx) = &self.inner.reports {
                let _ = tx.send(report);
            }
        }
    }

    /// Runs an admitted leg to completion. Spawned onto the relay's task tracker by the caller
    /// (or awaited directly); returns when the leg is closed.
    pub async fn run_leg(&self, admission: Admission, reader: LegReader, mut writer: LegWriter) {
        let Admission { claims, session } = admission;
        let role = claims.role;
        let transport = writer.transport();
        let metrics = self.inner.metrics.clone();
        metrics.leg(transport, 1);

        // Tell the leg it is in, then pair (or wait for the peer).
        let joined = Frame::relay_control(&RelayControl::Joined {
            role: role.as_str().to_owned(),
            sid: session.sid.clone(),
        });
        let _ = writer.write_frames(std::slice::from_ref(&joined)).await;
        let both = {
            let j = lock(&session.joined);
            j[0] && j[1]
        };
        if both {
            *lock(&session.paired_at) = Some(Instant::now());
            session.touch();
            session.paired.cancel();
            self.spawn_watchdog(session.clone());
        }
        let paired = tokio::select! {
            _ = session.paired.cancelled() => true,
            _ = session.end.cancelled() => false,
            _ = tokio::time::sleep(self.inner.config.pair_timeout) => {
                let mut codes = [CloseCode::PeerTimeout; 2];
                codes[role.peer().index()] = CloseCode::PeerLeft;
                session.finish(codes, "the other leg did not arrive in time");
                false
            }
        };
        if paired {
            let msg = RelayControl::Paired {
                mode: session.mode().as_str().to_owned(),
                chat: session.chat.load(Ordering::Relaxed),
            };
            lock(&session.outbox[role.index()].control).push_back(Frame::relay_control(&msg));
            let reader_task = {
                let relay = self.clone();
                let session = session.clone();
                tokio::spawn(async move { relay.read_loop(role, session, reader).await })
            };
            self.write_loop(role, &session, &mut writer).await;
            reader_task.abort();
        }
        let (code, reason) = session.code_for(role);
        if code != CloseCode::Normal {
            // A code, not prose: the broker's end reason when the broker ended the session,
            // else the name of the close code that follows (docs/protocol.md lists both).
            let wire_reason = match code {
                CloseCode::Ended => reason.clone(),
                other => other.name().to_owned(),
            };
            let ended = Frame::relay_control(&RelayControl::Ended {
                reason: wire_reason,
            });
            let _ = tokio::time::timeout(
                Duration::from_secs(2),
                writer.write_frames(std::slice::from_ref(&ended)),
            )
            .await;
        }
        let _ = tokio::time::timeout(Duration::from_secs(2), writer.close(code, &reason)).await;
        metrics.closed(code);
        metrics.leg(transport, -1);
        tracing::debug!(role = role.as_str(), code = code.name(), "relay leg closed");
        // The last leg out retires the session.
        let mut j = lock(&session.joined);
        j[role.index()] = false;
        let last = !j[0] && !j[1];
        drop(j);
        if last || !paired {
            self.retire(&session);
        }
    }

    fn spawn_watchdog(&self, session: Arc<Session>) {
        let cfg = self.inner.config.clone();
        self.inner.tracker.spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let mut over_cap = 0u32;
            loop {
                tokio::select! {
                    _ = session.end.cancelled() => return,
                    _ = tick.tick() => {}
                }
                let idle_ms = session.created.elapsed().as_millis() as u64
                    - session.last_activity_ms.load(Ordering::Relaxed);
                if idle_ms >= cfg.idle_timeout.as_millis() as u64 {
                    session.finish([CloseCode::Idle; 2], "no frames for too long");
                    return;
                }
                let bytes = session.window_bytes.swap(0, Ordering::Relaxed);
                if bytes > cfg.max_session_bytes_per_sec {
                    over_cap += 1;
                    if over_cap >= 5 {
                        session.finish(
                            [CloseCode::BandwidthExceeded; 2],
                            "the session exceeded its bandwidth cap",
                        );
                        return;
                    }
                } else {
                    over_cap = 0;
                }
            }
        });
    }

    /// Reads `role`'s leg and queues its frames for the peer.
    async fn read_loop(&self, role: Role, session: Arc<Session>, mut reader: LegReader) {
        let peer = role.peer();
        let dir = &session.dirs[peer.index()];
        let metrics = &self.inner.metrics;
        loop {
            let incoming = tokio::select! {
                biased;
                _ = session.end.cancelled() => return,
                r = reader.next() => r,
            };
            let frame = match incoming {
                Ok(Incoming::Frame(f)) => f,
                Ok(Incoming::Ping(p)) => {
                    *lock(&session.outbox[role.index()].pong) = Some(p);
                    session.dirs[role.index()].frames_ready.notify_one();
                    continue;
                }
                Ok(Incoming::Closed(_)) => {
                    let mut codes = [CloseCode::PeerLeft; 2];
                    codes[role.index()] = CloseCode::Normal;
                    session.finish(codes, "the other leg left");
                    return;
                }
                Err(e) => {
                    let mut codes = [CloseCode::PeerLeft; 2];
                    codes[role.index()] = e.close_code();
                    tracing::debug!(role = role.as_str(), error = %e, "leg read failed");
                    session.finish(codes, &e.to_string());
                    return;
                }
            };
            session.touch();
            let channel = frame.header.channel;
            let verdict = match (role, channel) {
                (Role::Helper, Channel::Screen) | (Role::Sharer, Channel::Input) => {
                    Some(DropReason::Direction)
                }
                (Role::Helper, Channel::Input | Channel::Control)
                    if session.mode() == Mode::ViewOnly =>
                {
                    Some(DropReason::Mode)
                }
                (_, Channel::Chat) if !session.chat.load(Ordering::Relaxed) => {
                    Some(DropReason::ChatBlocked)
                }
                _ => None,
            };
            if let Some(reason) = verdict {
                metrics.dropped(reason, 1);
                session.dropped.fetch_add(1, Ordering::Relaxed);
                continue;
            }
            let len = frame.len();
            session
                .window_bytes
                .fetch_add(len as u64, Ordering::Relaxed);
            let mut pending = frame;
            loop {
                let pushed = {
                    let mut q = lock(&dir.queue);
                    let was_empty = q.is_empty();
                    let r = q.push(pending);
                    if r.is_ok() && was_empty {
                        *lock(&dir.oldest) = Some(Instant::now());
                    }
                    r
                };
                match pushed {
                    Ok(outcome) => {
                        if outcome.queued {
                            metrics.queued_frames.inc();
                        }
                        if outcome.dropped_frames > 0 {
                            let n = outcome.dropped_frames as u64;
                            metrics.dropped(DropReason::Congestion, n);
                            // A dropped *new* frame was never counted as queued.
                            metrics
                                .queued_frames
                                .sub(n as i64 - i64::from(!outcome.queued));
                            session.dropped.fetch_add(n, Ordering::Relaxed);
                        }
                        if outcome.dropped_frames > 0 {
                            self.request_keyframe(&session);
                        }
                        dir.frames_ready.notify_one();
                        break;
                    }
                    Err(back) => {
                        // No room for a frame that must not be dropped: stop reading until the
                        // writer makes room (backpressure reaches the sender through TCP/QUIC).
                        pending = back;
                        dir.frames_ready.notify_one();
                        tokio::select! {
                            _ = session.end.cancelled() => return,
                            _ = dir.room.notified() => {}
                        }
                    }
                }
            }
        }
    }

    fn request_keyframe(&self, session: &Session) {
        let now = Instant::now();
        let mut last = lock(&session.last_keyframe_request);
        if last.is_some_and(|t| {
            now.duration_since(t) < self.inner.config.queue.keyframe_request_interval
        }) {
            return;
        }
        *last = Some(now);
        drop(last);
        self.inner.metrics.keyframe_requests.inc();
        session.send_control(
            Role::Sharer,
            &RelayControl::KeyframeRequest {
                reason: "congestion".into(),
            },
        );
    }

    /// Writes what is queued for `role` until the session ends.
    async fn write_loop(&self, role: Role, session: &Session, writer: &mut LegWriter) {
        let dir = &session.dirs[role.index()];
        let outbox = &session.outbox[role.index()];
        let metrics = &self.inner.metrics;
        let mut batch: Vec<Frame> = Vec::with_capacity(64);
        let timeout = self.inner.config.slow_consumer_timeout;
        let ping_every = self.inner.config.ping_interval;
        let mut last_write = Instant::now();
        loop {
            let pong = lock(&outbox.pong).take();
            if let Some(p) = pong {
                if tokio::time::timeout(timeout, writer.write_pong(p))
                    .await
                    .is_err()
                {
                    self.slow(session, role);
                    return;
                }
            }
            batch.clear();
            {
                let mut control = lock(&outbox.control);
                batch.extend(control.drain(..));
            }
            let queued_before = batch.len();
            let oldest = {
                let mut q = lock(&dir.queue);
                q.pop_batch(self.inner.config.write_batch_bytes, &mut batch);
                let oldest = lock(&dir.oldest).take();
                if !q.is_empty() {
                    *lock(&dir.oldest) = Some(Instant::now());
                }
                oldest
            };
            let from_queue = batch.len() - queued_before;
            let direction = role.peer().index(); // frames to `role` were sent by its peer
            for f in &batch[queued_before..] {
                metrics.forwarded(f.header.channel, direction, f.len());
                session.frames[direction].fetch_add(1, Ordering::Relaxed);
                session.bytes[direction].fetch_add(f.len() as u64, Ordering::Relaxed);
            }
            if from_queue > 0 {
                metrics.queued_frames.sub(from_queue as i64);
                dir.room.notify_one();
                if let Some(t) = oldest {
                    metrics.forward_latency.observe(t.elapsed().as_secs_f64());
                }
            }
            if batch.is_empty() {
                if session.end.is_cancelled() {
                    return;
                }
                tokio::select! {
                    _ = session.end.cancelled() => {
                        // Flush what is left (e.g. a final modeChanged), then stop.
                        continue;
                    }
                    _ = dir.frames_ready.notified() => continue,
                    _ = tokio::time::sleep_until((last_write + ping_every).into()) => {
                        last_write = Instant::now();
                        if tokio::time::timeout(timeout, writer.write_ping()).await.map(|r| r.is_err()).unwrap_or(true) {
                            self.slow(session, role);
                            return;
                        }
                        continue;
                    }
                }
            }
            match tokio::time::timeout(timeout, writer.write_frames(&batch)).await {
                Ok(Ok(())) => last_write = Instant::now(),
                Ok(Err(e)) => {
                    tracing::debug!(role = role.as_str(), error = %e, "leg write failed");
                    let mut codes = [CloseCode::PeerLeft; 2];
                    codes[role.index()] = CloseCode::Normal;
                    session.finish(codes, "the other leg left");
                    return;
                }
                Err(_) => {
                    self.slow(session, role);
                    return;
                }
            }
        }
    }

    fn slow(&self, session: &Session, role: Role) {
        let mut codes = [CloseCode::PeerLeft; 2];
        codes[role.index()] = CloseCode::SlowConsumer;
        session.finish(codes, "the leg stopped reading");
    }

    /// The task tracker legs should be spawned on (so shutdown can wait for them).
    pub fn tracker(&self) -> &TaskTracker {
        &self.inner.tracker
    }
}
