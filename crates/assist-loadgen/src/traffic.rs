//! Legs (a sending half and a receiving half over WSS, a raw TLS stream or QUIC), the throttled and
//! unthrottled senders, the receivers, and the run that drives them all.

use crate::parse::{Event, Parser, STAMP_LEN};
use crate::stats::{self, instant_at, now_ns, Local, RunInfo, Shared, Timeline, INPUT, SCREEN};
use assist_relay_proto::control::RelayControl;
use assist_relay_proto::frame::HEADER_LEN;
use bytes::Bytes;
use std::io::IoSlice;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// A boxed write half.
pub type BoxWrite = Box<dyn AsyncWrite + Unpin + Send>;
/// A boxed read half.
pub type BoxRead = Box<dyn AsyncRead + Unpin + Send>;

/// How a leg sends.
pub enum Tx {
    /// A byte stream: WebSocket client frames (`ws`) or raw relay frames.
    Stream {
        /// The write half.
        io: BoxWrite,
        /// WebSocket framing (masked client frames).
        ws: bool,
    },
    /// QUIC: screen frames on their own unidirectional streams, the rest on the first stream.
    Quic {
        /// The connection.
        conn: quinn::Connection,
        /// The first bidirectional stream's send side.
        send: quinn::SendStream,
    },
}

/// How a leg receives.
pub enum Rx {
    /// A byte stream and its parser.
    Stream(BoxRead, Parser),
    /// QUIC: the first stream's receive side with its parser (raw relay frames), plus the
    /// connection whose unidirectional streams carry screen frames.
    Quic {
        /// The connection.
        conn: quinn::Connection,
        /// The first bidirectional stream's receive side.
        recv: quinn::RecvStream,
        /// Parser (raw relay frames).
        parser: Parser,
    },
}

/// One end of a pair.
pub struct Leg {
    /// Sending half.
    pub tx: Tx,
    /// Receiving half.
    pub rx: Rx,
}

/// The WebSocket masking key of every generator frame. Masks exist for proxies' sake
/// (RFC 6455 §10.3); one fixed key lets every sharer share one pre-masked frame body.
const MASK: [u8; 4] = [0x5a, 0xc3, 0x3c, 0xa5];

/// A frame template: a small per-sender head (WebSocket header, relay header, timestamp and
/// sequence) patched for each send, and a body shared by every sender of the same shape.
pub struct Template {
    head: Vec<u8>,
    stamp_at: usize,
    masked: bool,
    body: Bytes,
}

/// Builds the shared parts of a frame of `channel` with `payload` bytes (at least [`STAMP_LEN`]).
pub fn template(channel: u8, payload: usize, ws: bool) -> Template {
    let mut frame = Vec::with_capacity(HEADER_LEN + payload);
    frame.push(channel);
    frame.push(0);
    frame.extend_from_slice(&(payload as u32).to_be_bytes());
    frame.extend((0..payload).map(|i| (i * 31 + 7) as u8));
    let mut head = Vec::new();
    if ws {
        let len = frame.len();
        head.push(0x82);
        if len < 126 {
            head.push(0x80 | len as u8);
        } else if len <= u16::MAX as usize {
            head.push(0x80 | 126);
            head.extend_from_slice(&(len as u16).to_be_bytes());
        } else {
            head.push(0x80 | 127);
            head.extend_from_slice(&(len as u64).to_be_bytes());
        }
        head.extend_from_slice(&MASK);
        for (i, b) in frame.iter_mut().enumerate() {
            *b ^= MASK[i & 3];
        }
    }
    let split = HEADER_LEN + STAMP_LEN;
    let stamp_at = head.len() + HEADER_LEN;
    head.extend_from_slice(&frame[..split]);
    Template {
        head,
        stamp_at,
        masked: ws,
        body: Bytes::from(frame).slice(split..),
    }
}

impl Template {
    fn for_sender(&self) -> Template {
        Template {
            head: self.head.clone(),
            stamp_at: self.stamp_at,
            masked: self.masked,
            body: self.body.clone(),
        }
    }

    fn stamp(&mut self, ts: u64, seq: u64) {
        let mut plain = [0u8; STAMP_LEN];
        plain[..8].copy_from_slice(&ts.to_be_bytes());
        plain[8..].copy_from_slice(&seq.to_be_bytes());
        for (k, p) in plain.iter().enumerate() {
            self.head[self.stamp_at + k] = if self.masked {
                p ^ MASK[(HEADER_LEN + k) & 3]
            } else {
                *p
            };
        }
    }
}

async fn write_all_vectored(io: &mut BoxWrite, head: &[u8], body: &[u8]) -> std::io::Result<()> {
    let mut bufs = [IoSlice::new(head), IoSlice::new(body)];
    let mut slices: &mut [IoSlice<'_>] = &mut bufs;
    while !slices.is_empty() {
        let n = io.write_vectored(slices).await?;
        if n == 0 {
            return Err(std::io::ErrorKind::WriteZero.into());
        }
        IoSlice::advance_slices(&mut slices, n);
    }
    Ok(())
}

impl Tx {
    async fn send(&mut self, channel: u8, t: &Template) -> Result<(), String> {
        match self {
            Tx::Stream { io, .. } => {
                write_all_vectored(io, &t.head, &t.body)
                    .await
                    .map_err(|e| format!("write failed: {e}"))?;
                io.flush().await.map_err(|e| format!("flush failed: {e}"))
            }
            Tx::Quic { conn, send } => {
                let mut chunks = [Bytes::copy_from_slice(&t.head), t.body.clone()];
                if channel == SCREEN {
                    let mut uni = conn
                        .open_uni()
                        .await
                        .map_err(|e| format!("QUIC open_uni failed: {e}"))?;
                    uni.write_all_chunks(&mut chunks)
                        .await
                        .map_err(|e| format!("QUIC screen stream write failed: {e}"))?;
                    let _ = uni.finish();
                    Ok(())
                } else {
                    send.write_all_chunks(&mut chunks)
                        .await
                        .map_err(|e| format!("QUIC stream write failed: {e}"))
                }
            }
        }
    }
}

/// A measured run over established pairs.
pub struct Run {
    /// The schedule.
    pub tl: Timeline,
    /// Counters.
    pub shared: Shared,
}

/// The traffic of a run.
#[derive(Debug, Clone)]
pub struct Traffic {
    /// Screen payload bytes.
    pub frame_bytes: usize,
    /// Frames per second per sharer; `None` = unthrottled.
    pub fps: Option<f64>,
    /// Inputs per second per helper (0 = none).
    pub input_hz: f64,
    /// Warm-up.
    pub warmup: Duration,
    /// Measured window.
    pub duration: Duration,
}

/// Low-discrepancy phase in [0, 1) for pair `i`, so pairs do not fire in lockstep.
fn phase(i: usize) -> f64 {
    (i as f64 * 0.618_033_988_749_895).fract()
}

#[allow(clippy::too_many_arguments)]
async fn send_loop(
    mut tx: Tx,
    channel: u8,
    mut t: Template,
    period_ns: Option<u64>,
    phase_ns: u64,
    run: Arc<Run>,
    label: &'static str,
) {
    let tl = run.tl;
    let mut seq = 0u64;
    let mut next = tl.t0 + phase_ns;
    let (mut sent, mut skipped) = (0u64, 0u64);
    loop {
        if let Some(_p) = period_ns {
            if next >= tl.meas_end {
                break;
            }
            if next > now_ns() {
                tokio::time::sleep_until(instant_at(next).into()).await;
            }
        } else if seq % 16 == 15 {
            tokio::task::yield_now().await;
        }
        let ts = now_ns();
        if ts >= tl.meas_end {
            break;
        }
        t.stamp(ts, seq);
        if let Err(e) = tx.send(channel, &t).await {
            run.shared.event(format!("{label}: {e}"));
            break;
        }
        seq += 1;
        if tl.in_window(ts) {
            sent += 1;
        }
        if let Some(p) = period_ns {
            next += p;
            let now = now_ns();
            if now > next + p {
                // Late by whole periods: skip those ticks instead of bursting to catch up.
                let k = (now - next) / p;
                if tl.in_window(next) {
                    skipped += k;
                }
                next += k * p;
            }
        }
    }
    let s = &run.shared;
    if channel == SCREEN {
        s.frames_sent.fetch_add(sent, Relaxed);
        s.frames_skipped.fetch_add(skipped, Relaxed);
    } else {
        s.inputs_sent.fetch_add(sent, Relaxed);
        s.inputs_skipped.fetch_add(skipped, Relaxed);
    }
    // Keep a QUIC connection's first stream open until the run ends (finishing it would end the leg).
    if let Tx::Quic { .. } = tx {
        tokio::time::sleep_until(instant_at(tl.drain_end + 5_000_000_000).into()).await;
    }
}

/// Handles one parsed event; false when the leg is over.
fn on_event(ev: Event, run: &Run, local: &mut Local, now: u64, label: &'static str) -> bool {
    match ev {
        Event::Data { channel, ts, bytes } => local.data(&run.tl, channel, ts, bytes, now),
        Event::Control(Some(RelayControl::KeyframeRequest { .. })) => {
            run.shared.keyframe_requests.fetch_add(1, Relaxed);
        }
        Event::Control(Some(RelayControl::Ended { reason })) => {
            run.shared
                .event(format!("{label}: relay sent `ended`: {reason}"));
        }
        Event::Close(code) => {
            run.shared.event(format!(
                "{label}: closed by the relay with code {}",
                code.map(|c| c.to_string()).unwrap_or_else(|| "none".into())
            ));
            return false;
        }
        Event::Ping => {
            run.shared.pings.fetch_add(1, Relaxed);
        }
        Event::Control(_) | Event::Other => {}
    }
    true
}

async fn recv_stream(mut io: BoxRead, mut parser: Parser, run: Arc<Run>, label: &'static str) {
    let mut local = Local::default();
    loop {
        let n = match io.read(parser.space()).await {
            Ok(0) => {
                if now_ns() < run.tl.drain_end {
                    run.shared
                        .event(format!("{label}: connection closed (EOF)"));
                }
                return;
            }
            Ok(n) => n,
            Err(e) => {
                if now_ns() < run.tl.drain_end {
                    run.shared.event(format!("{label}: read failed: {e}"));
                }
                return;
            }
        };
        parser.filled(n);
        let now = now_ns();
        loop {
            match parser.next_event() {
                Ok(Some(ev)) => {
                    if !on_event(ev, &run, &mut local, now, label) {
                        local.flush(&run.shared);
                        return;
                    }
                }
                Ok(None) => break,
                Err(e) => {
                    run.shared.event(format!("{label}: {e}"));
                    local.flush(&run.shared);
                    return;
                }
            }
        }
        local.flush(&run.shared);
    }
}

/// Copies `bytes` into the parser and handles what it yields; false when the leg is over.
pub fn feed(
    parser: &mut Parser,
    mut bytes: &[u8],
    mut on: impl FnMut(Event) -> bool,
) -> Result<bool, String> {
    while !bytes.is_empty() {
        let space = parser.space();
        let n = space.len().min(bytes.len());
        space[..n].copy_from_slice(&bytes[..n]);
        parser.filled(n);
        bytes = &bytes[n..];
        while let Some(ev) = parser.next_event()? {
            if !on(ev) {
                return Ok(false);
            }
        }
    }
    Ok(true)
}

async fn recv_quic_stream(
    mut recv: quinn::RecvStream,
    mut parser: Parser,
    run: Arc<Run>,
    label: &'static str,
) {
    let mut local = Local::default();
    loop {
        match recv.read_chunk(64 * 1024, true).await {
            Ok(Some(c)) => {
                let now = now_ns();
                let r = feed(&mut parser, &c.bytes, |ev| {
                    on_event(ev, &run, &mut local, now, label)
                });
                local.flush(&run.shared);
                match r {
                    Ok(true) => {}
                    Ok(false) => return,
                    Err(e) => {
                        run.shared.event(format!("{label}: {e}"));
                        return;
                    }
                }
            }
            Ok(None) => {
                if now_ns() < run.tl.drain_end {
                    run.shared.event(format!("{label}: QUIC stream finished"));
                }
                return;
            }
            Err(e) => {
                if now_ns() < run.tl.drain_end {
                    run.shared.event(format!("{label}: QUIC read failed: {e}"));
                }
                return;
            }
        }
    }
}

async fn recv_quic_screens(conn: quinn::Connection, run: Arc<Run>, label: &'static str) {
    // The connection's path as the window closes: its MTU, losses and black holes (the report's
    // "quic" object).
    let (c, r) = (conn.clone(), run.clone());
    tokio::spawn(async move {
        tokio::time::sleep_until(instant_at(r.tl.meas_end).into()).await;
        if c.close_reason().is_none() {
            r.shared.quic_path(&c.stats().path);
        }
    });
    while let Ok(mut uni) = conn.accept_uni().await {
        let run = run.clone();
        tokio::spawn(async move {
            let mut head = [0u8; HEADER_LEN + 8];
            let mut have = 0usize;
            let mut total = 0u64;
            loop {
                match uni.read_chunk(usize::MAX, true).await {
                    Ok(Some(c)) => {
                        let n = (head.len() - have).min(c.bytes.len());
                        head[have..have + n].copy_from_slice(&c.bytes[..n]);
                        have += n;
                        total += c.bytes.len() as u64;
                    }
                    Ok(None) => break,
                    Err(quinn::ReadError::Reset(_)) => {
                        if now_ns() < run.tl.drain_end {
                            run.shared.event(format!(
                                "{label}: screen stream reset by the relay (stale frame dropped)"
                            ));
                        }
                        return;
                    }
                    Err(e) => {
                        if now_ns() < run.tl.drain_end {
                            run.shared
                                .event(format!("{label}: screen stream read failed: {e}"));
                        }
                        return;
                    }
                }
            }
            let now = now_ns();
            if have < head.len() {
                run.shared
                    .event(format!("{label}: screen stream of {total} bytes"));
                return;
            }
            let ts = u64::from_be_bytes(head[HEADER_LEN..].try_into().unwrap_or([0; 8]));
            let mut local = Local::default();
            local.data(&run.tl, head[0], ts, total, now);
            local.flush(&run.shared);
        });
    }
}

fn spawn_rx(rx: Rx, run: &Arc<Run>, label: &'static str) {
    match rx {
        Rx::Stream(io, parser) => {
            tokio::spawn(recv_stream(io, parser, run.clone(), label));
        }
        Rx::Quic { conn, recv, parser } => {
            tokio::spawn(recv_quic_stream(recv, parser, run.clone(), label));
            tokio::spawn(recv_quic_screens(conn, run.clone(), label));
        }
    }
}

fn is_ws(tx: &Tx) -> Option<bool> {
    match tx {
        Tx::Stream { ws, .. } => Some(*ws),
        Tx::Quic { .. } => None,
    }
}

/// Runs the traffic over `pairs` (sharer, helper), waits out the window and the drain, and
/// returns the result object. `quic` holds connections to close at the end.
pub async fn run(
    pairs: Vec<(Leg, Leg)>,
    traffic: &Traffic,
    relay_pid: Option<u32>,
    info: RunInfo,
) -> serde_json::Value {
    let start = now_ns() + 50_000_000;
    let warm_end = start + traffic.warmup.as_nanos() as u64;
    let meas_end = warm_end + traffic.duration.as_nanos() as u64;
    let tl = Timeline {
        t0: start,
        warm_end,
        meas_end,
        drain_end: meas_end + 1_500_000_000,
    };
    let run = Arc::new(Run {
        tl,
        shared: Shared::new(),
    });
    // One template per framing (WebSocket masked, raw); every sender clones the shared body.
    let screen = [
        template(SCREEN, traffic.frame_bytes, false),
        template(SCREEN, traffic.frame_bytes, true),
    ];
    let input = [template(INPUT, 32, false), template(INPUT, 32, true)];
    let frame_period = traffic.fps.map(|f| (1e9 / f) as u64);
    let input_period = (traffic.input_hz > 0.0).then(|| (1e9 / traffic.input_hz) as u64);
    for (i, (sharer, helper)) in pairs.into_iter().enumerate() {
        let ph = phase(i);
        let s_ws = usize::from(is_ws(&sharer.tx).unwrap_or(false));
        let h_ws = usize::from(is_ws(&helper.tx).unwrap_or(false));
        spawn_rx(sharer.rx, &run, "sharer");
        spawn_rx(helper.rx, &run, "helper");
        let frame_phase = frame_period.map(|p| (ph * p as f64) as u64).unwrap_or(0);
        tokio::spawn(send_loop(
            sharer.tx,
            SCREEN,
            screen[s_ws].for_sender(),
            frame_period,
            frame_phase,
            run.clone(),
            "sharer",
        ));
        if let Some(p) = input_period {
            tokio::spawn(send_loop(
                helper.tx,
                INPUT,
                input[h_ws].for_sender(),
                Some(p),
                ((ph + 0.5).fract() * p as f64) as u64,
                run.clone(),
                "helper",
            ));
        } else {
            // Keep the helper's sending half (and with QUIC its stream) alive.
            tokio::spawn(async move {
                let _keep = helper.tx;
                tokio::time::sleep_until(instant_at(tl.drain_end + 5_000_000_000).into()).await;
            });
        }
    }
    let sampler = stats::spawn_sampler(tl, relay_pid);
    tokio::time::sleep_until(instant_at(tl.drain_end).into()).await;
    let samples = tokio::task::spawn_blocking(move || sampler.join().unwrap_or_default())
        .await
        .unwrap_or_default();
    stats::result_json(&info, &run.shared, &samples)
}
