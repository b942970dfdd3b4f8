//! One relay session's decisions, sans-IO (docs/protocol.md, "Relay"; docs/architecture.md, "Relay").
//!
//! Two types hold everything the relay decides about a session; the IO crate only reads sockets, writes sockets
//! and calls them:
//!
//! - [`Membership`]: join and end bookkeeping, shared by the admission path and the session's task (each role
//!   joins once; the session ends once, with a close code per leg; the side that left).
//! - [`SessionCore`]: the paired session, owned by the one task that drives both legs. The forwarding verdict
//!   (direction, mode, chat: [`verdict`]), the per-direction queues ([`DirectionQueue`]) and the relay's own
//!   control frames, the keyframe-request throttle (the only one), the oldest-frame age, the idle and bandwidth
//!   watchdog, the slow-consumer deadline of each leg, WebSocket ping scheduling and round-trip samples, and the
//!   report [`Counters`].
//!
//! Time is passed in as [`Instant`]; nothing here reads a clock, so tests drive it on virtual time.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use assist_policy::Mode;
use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::close::CloseCode;
use crate::control::RelayControl;
use crate::frame::{Channel, Frame};
use crate::queue::{DirectionQueue, QueueLimits};

/// Which side of the session a leg is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Role {
    /// The help-desk person: receives the screen, sends input.
    Helper,
    /// The person sharing a screen: sends the screen, receives input.
    Sharer,
}

impl Role {
    /// Both roles, by [`Role::index`].
    pub const ALL: [Role; 2] = [Role::Helper, Role::Sharer];

    /// Wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Helper => "helper",
            Self::Sharer => "sharer",
        }
    }

    /// The other side.
    pub fn peer(self) -> Role {
        match self {
            Self::Helper => Self::Sharer,
            Self::Sharer => Self::Helper,
        }
    }

    /// 0 for helper, 1 for sharer (array index; also the index of the direction this role *sends*).
    pub fn index(self) -> usize {
        match self {
            Self::Helper => 0,
            Self::Sharer => 1,
        }
    }
}

/// Why a frame was not forwarded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DropReason {
    /// Input or control from a helper whose mode does not grant control.
    Mode,
    /// Chat while chat is blocked.
    ChatBlocked,
    /// A channel that does not flow this way (screen from the helper, input from the sharer).
    Direction,
    /// A stale screen frame dropped under congestion.
    Congestion,
}

impl DropReason {
    /// Every reason.
    pub const ALL: [DropReason; 4] = [
        Self::Mode,
        Self::ChatBlocked,
        Self::Direction,
        Self::Congestion,
    ];

    /// The metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Mode => "mode",
            Self::ChatBlocked => "chatBlocked",
            Self::Direction => "direction",
            Self::Congestion => "congestion",
        }
    }
}

/// The forwarding verdict for a frame `from` a role on `channel` under `mode` and `chat`: `Ok` to forward, or
/// why not. Screen flows sharer → helper only, input helper → sharer only; a view-only helper's input and
/// control are dropped; chat is dropped both ways while blocked. Control from the sharer always flows.
pub fn verdict(from: Role, channel: Channel, mode: Mode, chat: bool) -> Result<(), DropReason> {
    match (from, channel) {
        (Role::Helper, Channel::Screen) | (Role::Sharer, Channel::Input) => {
            Err(DropReason::Direction)
        }
        (Role::Helper, Channel::Input | Channel::Control) if mode == Mode::ViewOnly => {
            Err(DropReason::Mode)
        }
        (_, Channel::Chat) if !chat => Err(DropReason::ChatBlocked),
        _ => Ok(()),
    }
}

/// How a session ended: the close code each leg gets, and the reason.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ended {
    /// `codes[role.index()]` closes that role's leg.
    pub codes: [CloseCode; 2],
    /// Why (the broker's end reason, or prose for the log).
    pub reason: String,
}

impl Ended {
    /// Both legs closed with `code`.
    pub fn both(code: CloseCode, reason: &str) -> Ended {
        Ended {
            codes: [code; 2],
            reason: reason.to_owned(),
        }
    }

    /// `role`'s leg caused the end with `code`; the other leg gets 4004 `peerLeft`.
    pub fn by(role: Role, code: CloseCode, reason: &str) -> Ended {
        let mut codes = [CloseCode::PeerLeft; 2];
        codes[role.index()] = code;
        Ended {
            codes,
            reason: reason.to_owned(),
        }
    }

    /// The same end with `role`'s leg closed with `code` instead.
    pub fn with_code(mut self, role: Role, code: CloseCode) -> Ended {
        self.codes[role.index()] = code;
        self
    }

    /// The `ended` control frame for `role`'s leg (none for a leg closed with 1000, which closed itself or
    /// failed): the broker's end reason when the broker ended the session (4000), else the close code's name.
    pub fn frame_for(&self, role: Role) -> Option<Frame> {
        let code = self.codes[role.index()];
        let reason = match code {
            CloseCode::Normal => return None,
            CloseCode::Ended => self.reason.clone(),
            other => other.name().to_owned(),
        };
        Some(Frame::relay_control(&RelayControl::Ended { reason }))
    }

    /// The side whose leg dropped (closed, failed or stopped reading): exactly one leg got `peerLeft`.
    pub fn left(&self) -> Option<Role> {
        match self.codes {
            [h, CloseCode::PeerLeft] if h != CloseCode::PeerLeft => Some(Role::Helper),
            [CloseCode::PeerLeft, s] if s != CloseCode::PeerLeft => Some(Role::Sharer),
            _ => None,
        }
    }
}

/// Why a leg may not join.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JoinRefused {
    /// That role already joined this session (a second ticket for it, or a rejoin).
    RoleTaken,
    /// The session has ended.
    Ended,
}

/// Join and end bookkeeping of one session: each role joins once, the session ends once.
#[derive(Debug, Default, Clone)]
pub struct Membership {
    joined: [bool; 2],
    present: [bool; 2],
    end: Option<Ended>,
}

impl Membership {
    /// A session nobody has joined.
    pub fn new() -> Membership {
        Membership::default()
    }

    /// `role` joins. `Ok(true)` when both roles have now joined (pair them).
    pub fn join(&mut self, role: Role) -> Result<bool, JoinRefused> {
        if self.end.is_some() {
            return Err(JoinRefused::Ended);
        }
        if self.joined[role.index()] {
            return Err(JoinRefused::RoleTaken);
        }
        self.joined[role.index()] = true;
        self.present[role.index()] = true;
        Ok(self.joined[0] && self.joined[1])
    }

    /// Whether both roles joined.
    pub fn paired(&self) -> bool {
        self.joined[0] && self.joined[1]
    }

    /// Ends the session once; `false` if it had already ended (the first end wins).
    pub fn finish(&mut self, end: Ended) -> bool {
        if self.end.is_some() {
            return false;
        }
        self.end = Some(end);
        true
    }

    /// How the session ended, if it has.
    pub fn ended(&self) -> Option<&Ended> {
        self.end.as_ref()
    }

    /// `role`'s leg is closed. `true` when no leg is left (retire the session).
    pub fn leave(&mut self, role: Role) -> bool {
        self.present[role.index()] = false;
        !self.present[0] && !self.present[1]
    }

    /// The close code and reason for `role`'s leg: the end's, or 4000 `ended` if the session has not ended.
    pub fn code_for(&self, role: Role) -> (CloseCode, String) {
        self.end
            .as_ref()
            .map(|e| (e.codes[role.index()], e.reason.clone()))
            .unwrap_or((CloseCode::Ended, "ended".into()))
    }
}

/// The limits a session runs under.
#[derive(Debug, Clone, Copy)]
pub struct SessionLimits {
    /// Per-direction queue bounds and the keyframe request interval.
    pub queue: QueueLimits,
    /// No frame in either direction this long ends the session with 4008.
    pub idle_timeout: Duration,
    /// Bytes per second the session may forward, both directions together.
    pub max_bytes_per_sec: u64,
    /// Consecutive watchdog windows (about a second each) over the cap before 4009.
    pub bandwidth_windows: u32,
    /// A leg that accepts no bytes this long while output waits is closed with 4007.
    pub slow_consumer_timeout: Duration,
    /// A WebSocket ping goes to each leg this often (liveness and round-trip samples).
    pub ping_interval: Duration,
}

impl Default for SessionLimits {
    /// The relay's documented defaults.
    fn default() -> Self {
        SessionLimits {
            queue: QueueLimits::default(),
            idle_timeout: Duration::from_secs(300),
            max_bytes_per_sec: 100 * 1024 * 1024,
            bandwidth_windows: 5,
            slow_consumer_timeout: Duration::from_secs(10),
            ping_interval: Duration::from_secs(15),
        }
    }
}

/// Round-trip samples of one leg.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct RttStats {
    /// Number of samples.
    pub samples: u64,
    /// Sum of the samples, microseconds.
    pub sum_us: u64,
    /// Smallest sample, microseconds (0 without samples).
    pub min_us: u64,
    /// Largest sample, microseconds.
    pub max_us: u64,
}

impl RttStats {
    /// Adds a sample.
    pub fn add(&mut self, rtt: Duration) {
        let us = u64::try_from(rtt.as_micros()).unwrap_or(u64::MAX);
        self.min_us = if self.samples == 0 {
            us
        } else {
            self.min_us.min(us)
        };
        self.max_us = self.max_us.max(us);
        self.sum_us = self.sum_us.saturating_add(us);
        self.samples += 1;
    }

    /// The mean, if there is a sample.
    pub fn mean(&self) -> Option<Duration> {
        (self.samples > 0).then(|| Duration::from_micros(self.sum_us / self.samples))
    }
}

/// What a session did, by direction: index 0 is helper → sharer, 1 is sharer → helper (the sender's
/// [`Role::index`]).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Counters {
    /// Frames read from the sending leg (every frame, forwarded or not).
    pub received: [u64; 2],
    /// Frames handed to the receiving leg's writer.
    pub frames: [u64; 2],
    /// Bytes of those frames (relay header included).
    pub bytes: [u64; 2],
    /// Frames refused by the verdict (direction, mode, chat).
    pub policy_dropped: [u64; 2],
    /// Screen frames dropped under congestion.
    pub screen_dropped: [u64; 2],
    /// Keyframe requests sent to the sharer.
    pub keyframe_requests: u64,
    /// Round-trip samples per leg, by [`Role::index`].
    pub rtt: [RttStats; 2],
}

impl Counters {
    /// Frames not forwarded, any reason.
    pub fn dropped(&self) -> u64 {
        self.policy_dropped.iter().chain(&self.screen_dropped).sum()
    }
}

/// What [`SessionCore::on_frame`] decided about one frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Received {
    /// Queued for the peer (written at once if its leg accepts bytes). `congestion_drops` stale screen frames
    /// were dropped to make room (the new one included when it was itself dropped); `keyframe_request` says a
    /// `keyframeRequest` was queued for the sharer.
    Forwarded {
        /// Screen frames dropped by this frame's arrival.
        congestion_drops: u32,
        /// Whether a keyframe request went out.
        keyframe_request: bool,
    },
    /// Refused by the verdict.
    Dropped(DropReason),
    /// The peer's queue has no room for this frame, which must not be dropped: the core holds it and the
    /// caller stops reading this leg until [`SessionCore::can_read`] says otherwise (backpressure reaches the
    /// sender through TCP/QUIC flow control).
    Paused,
    /// The session has ended; the frame was discarded.
    Ended,
}

/// What one batch taken by [`SessionCore::poll_transmit`] holds.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Transmit {
    /// Relay-originated control frames at the head of the batch.
    pub control: usize,
    /// Forwarded frames after them.
    pub forwarded: usize,
    /// How long the oldest forwarded frame of the batch waited, at most (time since the queue last went from
    /// empty to non-empty); `None` when the batch forwards nothing.
    pub waited: Option<Duration>,
    /// Screen frames dropped when the frame held back by backpressure was queued again.
    pub congestion_drops: u32,
    /// Whether that drop sent a keyframe request.
    pub keyframe_request: bool,
}

/// What the watchdog found on a tick.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Tick {
    /// Send a WebSocket ping to that role's leg now (then call [`SessionCore::on_ping_sent`]).
    pub ping: [bool; 2],
    /// The session ended on this tick (idle, bandwidth, slow consumer).
    pub ended: bool,
}

/// A paired session's state, owned by the task that drives both legs.
#[derive(Debug)]
pub struct SessionCore {
    limits: SessionLimits,
    mode: Mode,
    chat: bool,
    /// `queues[i]` holds frames *to* role i.
    queues: [DirectionQueue; 2],
    /// Relay-originated control frames to role i: never dropped, written before queued frames.
    control: [VecDeque<Frame>; 2],
    pong: [Option<Bytes>; 2],
    /// A non-droppable frame *from* role i that did not fit the peer's queue.
    held: [Option<Frame>; 2],
    /// When `queues[i]` last went from empty to non-empty.
    oldest: [Option<Instant>; 2],
    /// Since when output for role i has waited without the leg accepting a byte.
    blocked_since: [Option<Instant>; 2],
    last_ping: [Instant; 2],
    ping_sent: [Option<Instant>; 2],
    last_keyframe_request: Option<Instant>,
    last_activity: Instant,
    window_start: Instant,
    window_bytes: u64,
    over_cap: u32,
    paired_at: Instant,
    counters: Counters,
    end: Option<Ended>,
}

impl SessionCore {
    /// A session paired at `now` with `mode` and `chat`; `paired` goes to both legs first.
    pub fn new(mode: Mode, chat: bool, limits: SessionLimits, now: Instant) -> SessionCore {
        let paired = Frame::relay_control(&RelayControl::Paired {
            mode: mode.as_str().to_owned(),
            chat,
        });
        SessionCore {
            limits,
            mode,
            chat,
            queues: [
                DirectionQueue::new(limits.queue),
                DirectionQueue::new(limits.queue),
            ],
            control: [VecDeque::from([paired.clone()]), VecDeque::from([paired])],
            pong: [None, None],
            held: [None, None],
            oldest: [None, None],
            blocked_since: [None, None],
            last_ping: [now; 2],
            ping_sent: [None, None],
            last_keyframe_request: None,
            last_activity: now,
            window_start: now,
            window_bytes: 0,
            over_cap: 0,
            paired_at: now,
            counters: Counters::default(),
            end: None,
        }
    }

    /// The mode in force.
    pub fn mode(&self) -> Mode {
        self.mode
    }

    /// Whether chat is allowed.
    pub fn chat(&self) -> bool {
        self.chat
    }

    /// When the session was paired.
    pub fn paired_at(&self) -> Instant {
        self.paired_at
    }

    /// The counters so far.
    pub fn counters(&self) -> &Counters {
        &self.counters
    }

    /// How the session ended, if it has.
    pub fn ended(&self) -> Option<&Ended> {
        self.end.as_ref()
    }

    /// Ends the session (first end wins); `true` if this call ended it. Held frames are discarded; what is
    /// queued stays for [`SessionCore::poll_transmit`] until the caller closes the legs.
    pub fn end(&mut self, end: Ended) -> bool {
        if self.end.is_some() {
            return false;
        }
        self.end = Some(end);
        self.held = [None, None];
        true
    }

    /// Changes the mode and chat permission from the next frame on; both legs get `modeChanged`.
    pub fn set_mode(&mut self, mode: Mode, chat: bool) {
        self.mode = mode;
        self.chat = chat;
        let msg = Frame::relay_control(&RelayControl::ModeChanged {
            mode: mode.as_str().to_owned(),
            chat,
        });
        self.control[0].push_back(msg.clone());
        self.control[1].push_back(msg);
    }

    /// Whether the caller should read `from`'s leg: the session is live and no frame of that leg is held.
    pub fn can_read(&self, from: Role) -> bool {
        self.end.is_none() && self.held[from.index()].is_none()
    }

    /// A frame read from `from`'s leg at `now`. Call it only while [`SessionCore::can_read`] is true for
    /// `from` (a second frame while one is held is held behind it, never lost, but the leg should be paused).
    pub fn on_frame(&mut self, from: Role, frame: Frame, now: Instant) -> Received {
        if self.end.is_some() {
            return Received::Ended;
        }
        let d = from.index();
        debug_assert!(self.held[d].is_none(), "read from a paused leg");
        self.counters.received[d] += 1;
        self.last_activity = now;
        if let Err(reason) = verdict(from, frame.header.channel, self.mode, self.chat) {
            self.counters.policy_dropped[d] += 1;
            return Received::Dropped(reason);
        }
        self.window_bytes = self.window_bytes.saturating_add(frame.len() as u64);
        self.enqueue(from, frame, now)
    }

    fn enqueue(&mut self, from: Role, frame: Frame, now: Instant) -> Received {
        let to = from.peer().index();
        let was_empty = self.queues[to].is_empty();
        match self.queues[to].push(frame) {
            Ok(o) => {
                if o.queued && was_empty {
                    self.oldest[to] = Some(now);
                }
                let mut keyframe_request = false;
                if o.dropped_frames > 0 {
                    self.counters.screen_dropped[from.index()] += u64::from(o.dropped_frames);
                    keyframe_request = self.request_keyframe(now);
                }
                Received::Forwarded {
                    congestion_drops: o.dropped_frames,
                    keyframe_request,
                }
            }
            Err(back) => {
                self.held[from.index()] = Some(back);
                Received::Paused
            }
        }
    }

    /// The keyframe-request throttle: at most one request per `keyframe_request_interval`.
    fn request_keyframe(&mut self, now: Instant) -> bool {
        let due = self.last_keyframe_request.is_none_or(|last| {
            now.saturating_duration_since(last) >= self.limits.queue.keyframe_request_interval
        });
        if due {
            self.last_keyframe_request = Some(now);
            self.counters.keyframe_requests += 1;
            self.control[Role::Sharer.index()].push_back(Frame::relay_control(
                &RelayControl::KeyframeRequest {
                    reason: "congestion".into(),
                },
            ));
        }
        due
    }

    /// A WebSocket ping from `from`'s leg: the next output to that leg answers it (the latest ping wins).
    pub fn on_ping(&mut self, from: Role, payload: Bytes) {
        self.pong[from.index()] = Some(payload);
    }

    /// The pong to write to `to`'s leg, if one is owed.
    pub fn take_pong(&mut self, to: Role) -> Option<Bytes> {
        self.pong[to.index()].take()
    }

    /// A ping went to `to`'s leg at `now`.
    pub fn on_ping_sent(&mut self, to: Role, now: Instant) {
        self.last_ping[to.index()] = now;
        if self.ping_sent[to.index()].is_none() {
            self.ping_sent[to.index()] = Some(now);
        }
    }

    /// A WebSocket pong from `from`'s leg at `now`: a round-trip sample if a ping was outstanding.
    pub fn on_pong(&mut self, from: Role, now: Instant) {
        if let Some(sent) = self.ping_sent[from.index()].take() {
            self.counters.rtt[from.index()].add(now.saturating_duration_since(sent));
        }
    }

    /// A round-trip sample measured by the transport (QUIC path statistics).
    pub fn add_rtt_sample(&mut self, of: Role, rtt: Duration) {
        self.counters.rtt[of.index()].add(rtt);
    }

    /// Whether anything waits for `to`'s leg (control, a pong, queued frames).
    pub fn has_output(&self, to: Role) -> bool {
        let i = to.index();
        !self.control[i].is_empty() || self.pong[i].is_some() || !self.queues[i].is_empty()
    }

    /// Frames queued for `to`'s leg (not counting control frames).
    pub fn queued(&self, to: Role) -> usize {
        self.queues[to.index()].len()
    }

    /// Takes the next batch for `to`'s leg into `out` (appended): relay control frames first, then queued frames
    /// up to `max_bytes` (at least one). Forwarded frames are counted here, as they go to the writer; a frame
    /// held back by backpressure is queued again once there is room.
    pub fn poll_transmit(
        &mut self,
        to: Role,
        max_bytes: usize,
        now: Instant,
        out: &mut Vec<Frame>,
    ) -> Transmit {
        let i = to.index();
        let start = out.len();
        out.extend(self.control[i].drain(..));
        let control = out.len() - start;
        self.queues[i].pop_batch(max_bytes, out);
        let forwarded = out.len() - start - control;
        let from = to.peer();
        let d = from.index();
        for f in &out[start + control..] {
            self.counters.frames[d] += 1;
            self.counters.bytes[d] += f.len() as u64;
        }
        let waited = if forwarded > 0 {
            let w = self.oldest[i].map(|t| now.saturating_duration_since(t));
            self.oldest[i] = (!self.queues[i].is_empty()).then_some(now);
            w
        } else {
            None
        };
        let mut t = Transmit {
            control,
            forwarded,
            waited,
            ..Transmit::default()
        };
        if forwarded > 0 {
            if let Some(f) = self.held[d].take() {
                // There is room now, or the frame is held again.
                if let Received::Forwarded {
                    congestion_drops,
                    keyframe_request,
                } = self.enqueue(from, f, now)
                {
                    t.congestion_drops = congestion_drops;
                    t.keyframe_request = keyframe_request;
                }
            }
        }
        t
    }

    /// `to`'s leg accepted bytes at `now` (or has nothing left to write): its slow-consumer deadline is off.
    pub fn on_write_progress(&mut self, to: Role) {
        self.blocked_since[to.index()] = None;
    }

    /// `to`'s leg would not take bytes at `now` while output waits: its slow-consumer deadline starts (once).
    pub fn on_write_blocked(&mut self, to: Role, now: Instant) {
        self.blocked_since[to.index()].get_or_insert(now);
    }

    /// The watchdog, about once a second: idle timeout, bandwidth cap, slow consumers, pings due.
    pub fn on_tick(&mut self, now: Instant) -> Tick {
        let mut tick = Tick::default();
        if self.end.is_some() {
            return tick;
        }
        if now.saturating_duration_since(self.last_activity) >= self.limits.idle_timeout {
            self.end(Ended::both(CloseCode::Idle, "no frames for too long"));
            tick.ended = true;
            return tick;
        }
        let window = now.saturating_duration_since(self.window_start);
        if window >= Duration::from_millis(500) {
            let allowed = (self.limits.max_bytes_per_sec as f64 * window.as_secs_f64()) as u64;
            if self.window_bytes > allowed {
                self.over_cap += 1;
            } else {
                self.over_cap = 0;
            }
            self.window_bytes = 0;
            self.window_start = now;
            if self.over_cap >= self.limits.bandwidth_windows.max(1) {
                self.end(Ended::both(
                    CloseCode::BandwidthExceeded,
                    "the session exceeded its bandwidth cap",
                ));
                tick.ended = true;
                return tick;
            }
        }
        for role in Role::ALL {
            if let Some(t) = self.blocked_since[role.index()] {
                if now.saturating_duration_since(t) >= self.limits.slow_consumer_timeout {
                    self.end(Ended::by(
                        role,
                        CloseCode::SlowConsumer,
                        "the leg stopped reading",
                    ));
                    tick.ended = true;
                    return tick;
                }
            }
        }
        for role in Role::ALL {
            let i = role.index();
            tick.ping[i] =
                now.saturating_duration_since(self.last_ping[i]) >= self.limits.ping_interval;
        }
        tick
    }

    /// The `ended` control frame for `role`'s leg (none for a leg closed with 1000, which closed itself or
    /// failed): the broker's end reason when the broker ended the session, else the close code's name.
    pub fn ended_frame(&self, role: Role) -> Option<Frame> {
        self.end.as_ref()?.frame_for(role)
    }

    /// Discards what is queued (the session is over), returning the number of frames discarded.
    pub fn clear(&mut self) -> usize {
        let n = self.queues[0].clear().0 + self.queues[1].clear().0;
        self.held = [None, None];
        self.control[0].clear();
        self.control[1].clear();
        n
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frame::FLAG_FROM_RELAY;

    fn limits() -> SessionLimits {
        SessionLimits {
            queue: QueueLimits {
                max_frames: 4,
                max_bytes: 10_000,
                keyframe_request_interval: Duration::from_millis(250),
            },
            idle_timeout: Duration::from_secs(300),
            max_bytes_per_sec: 1000,
            bandwidth_windows: 5,
            slow_consumer_timeout: Duration::from_secs(10),
            ping_interval: Duration::from_secs(15),
        }
    }

    fn f(channel: Channel) -> Frame {
        Frame::new(channel, 0, &[1, 2, 3, 4])
    }

    fn controls(frames: &[Frame]) -> Vec<RelayControl> {
        frames
            .iter()
            .filter(|f| {
                f.header.channel == Channel::Control && f.header.flags & FLAG_FROM_RELAY != 0
            })
            .map(|f| RelayControl::from_json(&f.payload()).unwrap())
            .collect()
    }

    fn drain(c: &mut SessionCore, to: Role, now: Instant) -> Vec<Frame> {
        let mut out = Vec::new();
        while c.has_output(to) {
            let _ = c.take_pong(to);
            c.poll_transmit(to, usize::MAX, now, &mut out);
        }
        out
    }

    #[test]
    fn every_verdict() {
        use Channel::*;
        for mode in Mode::ALL {
            for chat in [false, true] {
                for (from, ch, want) in [
                    (Role::Helper, Screen, Err(DropReason::Direction)),
                    (Role::Sharer, Input, Err(DropReason::Direction)),
                    (Role::Sharer, Screen, Ok(())),
                    (Role::Sharer, Control, Ok(())),
                    (
                        Role::Helper,
                        Input,
                        if mode == Mode::ViewOnly {
                            Err(DropReason::Mode)
                        } else {
                            Ok(())
                        },
                    ),
                    (
                        Role::Helper,
                        Control,
                        if mode == Mode::ViewOnly {
                            Err(DropReason::Mode)
                        } else {
                            Ok(())
                        },
                    ),
                    (
                        Role::Helper,
                        Chat,
                        if chat {
                            Ok(())
                        } else {
                            Err(DropReason::ChatBlocked)
                        },
                    ),
                    (
                        Role::Sharer,
                        Chat,
                        if chat {
                            Ok(())
                        } else {
                            Err(DropReason::ChatBlocked)
                        },
                    ),
                ] {
                    assert_eq!(
                        verdict(from, ch, mode, chat),
                        want,
                        "{from:?} {ch:?} {mode:?} {chat}"
                    );
                }
            }
        }
        assert_eq!(
            DropReason::ALL.map(DropReason::as_str),
            ["mode", "chatBlocked", "direction", "congestion"]
        );
    }

    #[test]
    fn membership_joins_once_ends_once() {
        let mut m = Membership::new();
        assert_eq!(m.join(Role::Helper), Ok(false));
        assert_eq!(m.join(Role::Helper), Err(JoinRefused::RoleTaken));
        assert!(!m.paired());
        assert_eq!(m.join(Role::Sharer), Ok(true));
        assert!(m.paired());
        assert_eq!(m.code_for(Role::Helper).0, CloseCode::Ended);
        assert!(m.finish(Ended::by(Role::Sharer, CloseCode::Normal, "left")));
        assert!(
            !m.finish(Ended::both(CloseCode::Idle, "idle")),
            "the first end wins"
        );
        assert_eq!(
            m.code_for(Role::Helper),
            (CloseCode::PeerLeft, "left".into())
        );
        assert_eq!(m.code_for(Role::Sharer).0, CloseCode::Normal);
        assert_eq!(m.ended().and_then(Ended::left), Some(Role::Sharer));
        assert!(!m.leave(Role::Helper));
        assert!(m.leave(Role::Sharer));
        // A role that left cannot come back; nobody joins an ended session.
        let mut m = Membership::new();
        m.join(Role::Sharer).unwrap();
        m.leave(Role::Sharer);
        assert_eq!(m.join(Role::Sharer), Err(JoinRefused::RoleTaken));
        m.finish(Ended::both(CloseCode::ShuttingDown, "bye"));
        assert_eq!(m.join(Role::Helper), Err(JoinRefused::Ended));
    }

    #[test]
    fn who_left() {
        assert_eq!(
            Ended::by(Role::Helper, CloseCode::Normal, "").left(),
            Some(Role::Helper)
        );
        assert_eq!(
            Ended::by(Role::Sharer, CloseCode::SlowConsumer, "").left(),
            Some(Role::Sharer)
        );
        assert_eq!(Ended::both(CloseCode::PeerLeft, "").left(), None);
        assert_eq!(Ended::both(CloseCode::Ended, "").left(), None);
        assert_eq!(Ended::both(CloseCode::ShuttingDown, "").left(), None);
    }

    #[test]
    fn paired_first_then_forwarding_with_counters() {
        let t0 = Instant::now();
        let mut c = SessionCore::new(Mode::FullControl, true, limits(), t0);
        assert!(c.has_output(Role::Helper) && c.has_output(Role::Sharer));
        let got = drain(&mut c, Role::Helper, t0);
        assert_eq!(
            controls(&got),
            [RelayControl::Paired {
                mode: "fullControl".into(),
                chat: true
            }]
        );
        drain(&mut c, Role::Sharer, t0);
        assert_eq!(
            c.on_frame(Role::Sharer, f(Channel::Screen), t0),
            Received::Forwarded {
                congestion_drops: 0,
                keyframe_request: false
            }
        );
        assert_eq!(
            c.on_frame(Role::Helper, f(Channel::Screen), t0),
            Received::Dropped(DropReason::Direction)
        );
        c.on_frame(Role::Helper, f(Channel::Input), t0);
        let to_helper = drain(&mut c, Role::Helper, t0);
        let to_sharer = drain(&mut c, Role::Sharer, t0);
        assert_eq!(to_helper, [f(Channel::Screen)]);
        assert_eq!(to_sharer, [f(Channel::Input)]);
        let k = *c.counters();
        assert_eq!(k.received, [2, 1]);
        assert_eq!(k.frames, [1, 1]);
        assert_eq!(k.bytes, [10, 10]);
        assert_eq!(k.policy_dropped, [1, 0]);
        assert_eq!(k.dropped(), 1);
    }

    #[test]
    fn mode_change_applies_from_the_next_frame_and_is_announced() {
        let t0 = Instant::now();
        let mut c = SessionCore::new(Mode::ViewOnly, false, limits(), t0);
        drain(&mut c, Role::Helper, t0);
        drain(&mut c, Role::Sharer, t0);
        assert_eq!(
            c.on_frame(Role::Helper, f(Channel::Input), t0),
            Received::Dropped(DropReason::Mode)
        );
        assert_eq!(
            c.on_frame(Role::Helper, f(Channel::Chat), t0),
            Received::Dropped(DropReason::ChatBlocked)
        );
        c.set_mode(Mode::FullControl, true);
        assert_eq!((c.mode(), c.chat()), (Mode::FullControl, true));
        assert!(matches!(
            c.on_frame(Role::Helper, f(Channel::Input), t0),
            Received::Forwarded { .. }
        ));
        assert!(matches!(
            c.on_frame(Role::Helper, f(Channel::Chat), t0),
            Received::Forwarded { .. }
        ));
        let changed = RelayControl::ModeChanged {
            mode: "fullControl".into(),
            chat: true,
        };
        let to_sharer = drain(&mut c, Role::Sharer, t0);
        assert_eq!(controls(&to_sharer), std::slice::from_ref(&changed));
        assert_eq!(
            to_sharer.len(),
            3,
            "modeChanged first, then the input and the chat"
        );
        assert_eq!(controls(&drain(&mut c, Role::Helper, t0)), [changed]);
    }

    #[test]
    fn congestion_drops_screens_and_throttles_keyframe_requests() {
        let t0 = Instant::now();
        let mut c = SessionCore::new(Mode::FullControl, true, limits(), t0);
        drain(&mut c, Role::Helper, t0);
        drain(&mut c, Role::Sharer, t0);
        let at = |ms| t0 + Duration::from_millis(ms);
        // The helper reads nothing: its queue (4 frames) fills; over half full, stale screens go.
        for _ in 0..3 {
            c.on_frame(Role::Sharer, f(Channel::Screen), at(0));
        }
        assert_eq!(
            c.on_frame(Role::Sharer, f(Channel::Screen), at(0)),
            Received::Forwarded {
                congestion_drops: 3,
                keyframe_request: true
            }
        );
        for _ in 0..2 {
            c.on_frame(Role::Sharer, f(Channel::Screen), at(100));
        }
        assert_eq!(
            c.on_frame(Role::Sharer, f(Channel::Screen), at(249)),
            Received::Forwarded {
                congestion_drops: 3,
                keyframe_request: false
            },
            "within 250 ms of the last request"
        );
        for _ in 0..2 {
            c.on_frame(Role::Sharer, f(Channel::Screen), at(250));
        }
        assert_eq!(
            c.on_frame(Role::Sharer, f(Channel::Screen), at(250)),
            Received::Forwarded {
                congestion_drops: 3,
                keyframe_request: true
            }
        );
        assert_eq!(c.counters().keyframe_requests, 2);
        assert_eq!(c.counters().screen_dropped, [0, 9]);
        let requests = controls(&drain(&mut c, Role::Sharer, at(300)));
        assert_eq!(
            requests,
            vec![
                RelayControl::KeyframeRequest {
                    reason: "congestion".into()
                };
                2
            ]
        );
        // A clock going backwards never triggers a request.
        for _ in 0..4 {
            c.on_frame(Role::Sharer, f(Channel::Screen), at(10));
        }
        assert_eq!(c.counters().keyframe_requests, 2);
        let k = *c.counters();
        drain(&mut c, Role::Helper, at(300));
        let k2 = *c.counters();
        assert_eq!(k2.received[1], k2.frames[1] + k2.screen_dropped[1]);
        assert_eq!(k.keyframe_requests, k2.keyframe_requests);
    }

    #[test]
    fn backpressure_holds_a_frame_and_resumes_after_the_peer_drains() {
        let t0 = Instant::now();
        let mut c = SessionCore::new(Mode::FullControl, true, limits(), t0);
        drain(&mut c, Role::Sharer, t0);
        for _ in 0..4 {
            assert!(matches!(
                c.on_frame(Role::Helper, f(Channel::Input), t0),
                Received::Forwarded { .. }
            ));
        }
        assert!(c.can_read(Role::Helper));
        assert_eq!(
            c.on_frame(Role::Helper, f(Channel::Input), t0),
            Received::Paused
        );
        assert!(!c.can_read(Role::Helper), "stop reading the helper");
        assert!(c.can_read(Role::Sharer));
        let mut out = Vec::new();
        let t = c.poll_transmit(Role::Sharer, 7, t0 + Duration::from_millis(5), &mut out);
        assert_eq!(
            t,
            Transmit {
                control: 0,
                forwarded: 1,
                waited: Some(Duration::from_millis(5)),
                ..Transmit::default()
            }
        );
        assert!(c.can_read(Role::Helper), "the held frame is queued again");
        assert_eq!(c.queued(Role::Sharer), 4);
        assert_eq!(drain(&mut c, Role::Sharer, t0).len(), 4);
        assert_eq!(c.counters().frames[0], 5);
    }

    #[test]
    fn oldest_frame_age() {
        let t0 = Instant::now();
        let mut c = SessionCore::new(Mode::FullControl, true, limits(), t0);
        drain(&mut c, Role::Helper, t0);
        let mut out = Vec::new();
        assert_eq!(
            c.poll_transmit(Role::Helper, 100, t0, &mut out).waited,
            None
        );
        c.on_frame(Role::Sharer, f(Channel::Screen), t0);
        c.on_frame(
            Role::Sharer,
            f(Channel::Chat),
            t0 + Duration::from_millis(3),
        );
        let t = c.poll_transmit(Role::Helper, 10, t0 + Duration::from_millis(7), &mut out);
        assert_eq!((t.forwarded, t.waited), (1, Some(Duration::from_millis(7))));
        // The rest counts from when the last batch left.
        let t = c.poll_transmit(Role::Helper, 10, t0 + Duration::from_millis(9), &mut out);
        assert_eq!((t.forwarded, t.waited), (1, Some(Duration::from_millis(2))));
    }

    #[test]
    fn idle_timeout() {
        let t0 = Instant::now();
        let mut c = SessionCore::new(Mode::FullControl, true, limits(), t0);
        assert!(!c.on_tick(t0 + Duration::from_secs(299)).ended);
        c.on_frame(
            Role::Sharer,
            f(Channel::Screen),
            t0 + Duration::from_secs(299),
        );
        assert!(!c.on_tick(t0 + Duration::from_secs(598)).ended);
        let t = c.on_tick(t0 + Duration::from_secs(599));
        assert!(t.ended);
        assert_eq!(
            c.ended(),
            Some(&Ended::both(CloseCode::Idle, "no frames for too long"))
        );
        assert!(!c.can_read(Role::Helper));
        assert_eq!(
            c.on_frame(Role::Sharer, f(Channel::Screen), t0),
            Received::Ended
        );
        assert!(!c.on_tick(t0 + Duration::from_secs(600)).ended, "ends once");
        assert_eq!(
            controls(&[c.ended_frame(Role::Helper).unwrap()]),
            [RelayControl::Ended {
                reason: "idle".into()
            }]
        );
    }

    #[test]
    fn bandwidth_cap_needs_five_windows_running() {
        let t0 = Instant::now();
        let mut c = SessionCore::new(Mode::FullControl, true, limits(), t0);
        let big = Frame::new(Channel::Screen, 0, &[0; 1000]); // 1006 bytes > 1000/s
        let sec = |s| t0 + Duration::from_secs(s);
        for s in 0..4 {
            c.on_frame(Role::Sharer, big.clone(), sec(s));
            drain(&mut c, Role::Helper, sec(s));
            assert!(!c.on_tick(sec(s + 1)).ended, "window {s}");
        }
        // A window under the cap resets the count.
        c.on_frame(Role::Sharer, f(Channel::Screen), sec(4));
        assert!(!c.on_tick(sec(5)).ended);
        for s in 5..9 {
            c.on_frame(Role::Sharer, big.clone(), sec(s));
            drain(&mut c, Role::Helper, sec(s));
            assert!(!c.on_tick(sec(s + 1)).ended);
        }
        c.on_frame(Role::Sharer, big.clone(), sec(9));
        assert!(c.on_tick(sec(10)).ended);
        assert_eq!(c.ended().unwrap().codes, [CloseCode::BandwidthExceeded; 2]);
        // A tick sooner than half a second after the last window does not close a window.
        let mut c = SessionCore::new(Mode::FullControl, true, limits(), t0);
        for ms in 0..20u64 {
            c.on_frame(Role::Sharer, big.clone(), t0);
            assert!(!c.on_tick(t0 + Duration::from_millis(ms * 10)).ended);
        }
        // Policy-dropped frames do not count against the cap.
        let mut c = SessionCore::new(Mode::ViewOnly, false, limits(), t0);
        for s in 0..10 {
            c.on_frame(
                Role::Helper,
                Frame::new(Channel::Chat, 0, &[0; 2000]),
                sec(s),
            );
            assert!(!c.on_tick(sec(s + 1)).ended);
        }
    }

    #[test]
    fn slow_consumer_deadline_per_leg() {
        let t0 = Instant::now();
        let mut c = SessionCore::new(Mode::FullControl, true, limits(), t0);
        let sec = |s| t0 + Duration::from_secs(s);
        c.on_write_blocked(Role::Helper, sec(1));
        c.on_write_blocked(Role::Helper, sec(5)); // the deadline starts once
        assert!(!c.on_tick(sec(10)).ended);
        c.on_write_progress(Role::Helper);
        c.on_write_blocked(Role::Helper, sec(10));
        assert!(!c.on_tick(sec(19)).ended);
        c.on_frame(Role::Sharer, f(Channel::Screen), sec(19));
        assert!(c.on_tick(sec(20)).ended);
        let e = c.ended().unwrap();
        assert_eq!(e.codes, [CloseCode::SlowConsumer, CloseCode::PeerLeft]);
        assert_eq!(e.left(), Some(Role::Helper));
        assert_eq!(
            controls(&[c.ended_frame(Role::Sharer).unwrap()]),
            [RelayControl::Ended {
                reason: "peerLeft".into()
            }]
        );
    }

    #[test]
    fn pings_rtt_and_pongs() {
        let t0 = Instant::now();
        let mut c = SessionCore::new(Mode::FullControl, true, limits(), t0);
        let sec = |s| t0 + Duration::from_secs(s);
        assert_eq!(c.on_tick(sec(14)).ping, [false, false]);
        assert_eq!(c.on_tick(sec(15)).ping, [true, true]);
        c.on_ping_sent(Role::Helper, sec(15));
        assert_eq!(c.on_tick(sec(16)).ping, [false, true]);
        c.on_pong(Role::Helper, sec(15) + Duration::from_millis(20));
        c.on_pong(Role::Helper, sec(16)); // no ping outstanding: no sample
        c.add_rtt_sample(Role::Sharer, Duration::from_millis(4));
        c.add_rtt_sample(Role::Sharer, Duration::from_millis(8));
        let rtt = c.counters().rtt;
        assert_eq!(
            (rtt[0].samples, rtt[0].mean()),
            (1, Some(Duration::from_millis(20)))
        );
        assert_eq!(
            (rtt[1].min_us, rtt[1].max_us, rtt[1].mean()),
            (4000, 8000, Some(Duration::from_millis(6)))
        );
        assert_eq!(RttStats::default().mean(), None);
        // A ping from a leg is answered on that leg; the latest wins.
        drain(&mut c, Role::Helper, t0);
        c.on_ping(Role::Helper, Bytes::from_static(b"a"));
        c.on_ping(Role::Helper, Bytes::from_static(b"b"));
        assert!(c.has_output(Role::Helper));
        assert_eq!(c.take_pong(Role::Helper), Some(Bytes::from_static(b"b")));
        assert_eq!(c.take_pong(Role::Helper), None);
    }

    #[test]
    fn ended_frames_by_code() {
        let t0 = Instant::now();
        let mut c = SessionCore::new(Mode::FullControl, true, limits(), t0);
        assert_eq!(c.ended_frame(Role::Helper), None);
        assert!(c.end(Ended::by(Role::Helper, CloseCode::Normal, "left")));
        assert!(!c.end(Ended::both(CloseCode::Idle, "")));
        assert_eq!(
            c.ended_frame(Role::Helper),
            None,
            "a leg that closed itself gets no ended"
        );
        let mut c = SessionCore::new(Mode::FullControl, true, limits(), t0);
        c.end(Ended::both(CloseCode::Ended, "helperEnded"));
        assert_eq!(
            controls(&[c.ended_frame(Role::Sharer).unwrap()]),
            [RelayControl::Ended {
                reason: "helperEnded".into()
            }]
        );
        let mut c = SessionCore::new(Mode::FullControl, true, limits(), t0);
        c.on_frame(Role::Sharer, f(Channel::Screen), t0);
        c.end(Ended::both(CloseCode::ShuttingDown, "bye"));
        assert_eq!(
            controls(&[c.ended_frame(Role::Helper).unwrap()]),
            [RelayControl::Ended {
                reason: "shuttingDown".into()
            }]
        );
        assert_eq!(c.clear(), 1);
        assert!(!c.has_output(Role::Helper));
    }
}
