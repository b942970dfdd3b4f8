//! One leg's transport, poll-based: reading relay frames from, and writing them to, a WebSocket (over TLS,
//! after the HTTP upgrade) or a QUIC connection. The session's task polls both legs of a pair itself, so a
//! frame read from one leg is written to the other in the same pass (docs/architecture.md, "Relay").
//!
//! The WebSocket path is purpose-built: client frames are unmasked in place and handed on as `Bytes` slices of
//! the read buffer, and each batch of outgoing frames is one vectored write of small headers and the frames'
//! own bytes, with no allocation per batch (the header and frame vectors are reused). A WebSocket leg holds
//! no read buffer while it waits for data: small reads land in a per-thread scratch buffer and are copied out
//! at their exact size; only a large frame being received is read in place ([`DIRECT_READ`]). That halved
//! the relay's memory per session at 1000 sessions (docs/benchmarks.md).

use assist_relay_proto::close::CloseCode;
use assist_relay_proto::frame::{Frame, FrameError};
use assist_relay_proto::quic::StreamFrameDecoder;
use assist_ws::{self as ws, Opcode, ServerDecoder, WsError, WsEvent};
use bytes::{Bytes, BytesMut};
use futures_util::task::AtomicWaker;
use std::collections::VecDeque;
use std::io::IoSlice;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::sync::{mpsc, Semaphore};
use tokio_util::sync::PollSemaphore;

/// How much the read buffer grows by when it needs room (QUIC control stream). Small on purpose: a large
/// buffer costs memory per leg (see `../shared/notes/relay-performance.md`).
const READ_CHUNK: usize = 16 * 1024;

/// A WebSocket leg reads straight into its own buffer only when the frame it is receiving still needs at
/// least this much; smaller reads go through the thread's scratch buffer and are copied out at their exact
/// size, so a leg waiting for data holds no read buffer at all (memory per idle-but-open session).
const DIRECT_READ: usize = 8 * 1024;

/// The most a WebSocket leg reserves ahead of the bytes it has: a peer's frame header alone must not make
/// the relay allocate the whole announced frame.
const MAX_RESERVE: usize = 64 * 1024;

/// Size of the per-thread scratch buffer small reads land in, and so the most one such read takes: a TLS
/// record's worth (16 KiB), so that when the read turns out to start a large frame at most that much of it
/// is copied before the rest is read in place.
const SCRATCH_LEN: usize = 16 * 1024;

thread_local! {
    /// The scratch buffer of this worker thread (see [`DIRECT_READ`]).
    static SCRATCH: std::cell::RefCell<Box<[u8]>> = std::cell::RefCell::new(vec![0u8; SCRATCH_LEN].into_boxed_slice());
}

/// Most slices one vectored write carries.
const MAX_SLICES: usize = 64;

/// What a leg delivered.
#[derive(Debug)]
pub enum Incoming {
    /// A relay frame.
    Frame(Frame),
    /// A WebSocket ping to answer.
    Ping(Bytes),
    /// A WebSocket pong (answer to the relay's ping).
    Pong,
    /// The peer closed (with its close code, if any) or the connection ended.
    Closed(Option<u16>),
}

/// Why reading a leg failed; decides its close code.
#[derive(Debug, thiserror::Error)]
pub enum LegError {
    /// Transport failure.
    #[error("transport: {0}")]
    Io(#[from] std::io::Error),
    /// A malformed relay frame.
    #[error("frame: {0}")]
    Frame(#[from] FrameError),
    /// A malformed WebSocket frame.
    #[error("websocket: {0}")]
    Ws(#[from] WsError),
    /// A text message (the relay speaks binary only).
    #[error("text messages are not allowed")]
    Text,
    /// QUIC connection failure.
    #[error("quic: {0}")]
    Quic(String),
}

impl LegError {
    /// The close code for the leg that caused the error.
    pub fn close_code(&self) -> CloseCode {
        match self {
            LegError::Frame(e) => e.close_code(),
            LegError::Ws(e) if e.close_code() == 1009 => CloseCode::FrameTooLarge,
            LegError::Ws(_) | LegError::Text => CloseCode::ProtocolError,
            LegError::Io(_) | LegError::Quic(_) => CloseCode::Normal,
        }
    }
}

/// A boxed byte stream (TLS over TCP taken back from hyper, or hyper's upgraded connection).
pub trait Stream: AsyncRead + AsyncWrite + Send + Unpin + 'static {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin + 'static> Stream for T {}

/// One leg: a WebSocket or QUIC connection, read and written by polling.
pub struct Leg {
    io: LegIo,
    /// Bytes were written since the caller last cleared this (the slow-consumer deadline's input).
    pub(crate) progressed: bool,
    /// Something was read since the caller last cleared this (idle buffer release).
    pub(crate) read_any: bool,
}

enum LegIo {
    Ws(Box<WsLeg>),
    Quic(Box<QuicLeg>),
}

/// A WebSocket leg over `stream`.
pub fn websocket(stream: Box<dyn Stream>, max_payload: usize) -> Leg {
    websocket_with(stream, Bytes::new(), max_payload)
}

/// A WebSocket leg over `stream`, with `leftover` bytes already read from it (what hyper read past the
/// upgrade request).
pub fn websocket_with(stream: Box<dyn Stream>, leftover: Bytes, max_payload: usize) -> Leg {
    Leg {
        io: LegIo::Ws(Box::new(WsLeg {
            io: stream,
            buf: BytesMut::from(&leftover[..]),
            decoder: ServerDecoder::new(max_payload + assist_relay_proto::frame::HEADER_LEN),
            max_payload,
            raw: Vec::new(),
            raw_off: 0,
            frames: Vec::new(),
            heads: Vec::new(),
            part: 0,
            offset: 0,
            need_flush: false,
        })),
        progressed: false,
        read_any: false,
    }
}

struct WsLeg {
    io: Box<dyn Stream>,
    buf: BytesMut,
    decoder: ServerDecoder,
    max_payload: usize,
    /// Ping and pong frames, written before the batch.
    raw: Vec<u8>,
    raw_off: usize,
    /// The batch being written: header, frame, header, frame, …
    frames: Vec<Frame>,
    heads: Vec<([u8; 10], usize)>,
    /// Next part (2 per frame: header, bytes) and the offset in it.
    part: usize,
    offset: usize,
    need_flush: bool,
}

/// Part `k` of a batch: header, frame, header, frame, …
fn part<'a>(heads: &'a [([u8; 10], usize)], frames: &'a [Frame], k: usize) -> &'a [u8] {
    if k.is_multiple_of(2) {
        let (h, n) = &heads[k / 2];
        &h[..*n]
    } else {
        &frames[k / 2].bytes
    }
}

impl WsLeg {
    fn poll_next(&mut self, cx: &mut Context<'_>) -> Poll<Result<Incoming, LegError>> {
        loop {
            if let Some(ev) = self.decoder.decode(&mut self.buf)? {
                match ev {
                    WsEvent::Binary(b) => {
                        return Poll::Ready(Ok(Incoming::Frame(Frame::from_client_bytes(
                            b,
                            self.max_payload,
                        )?)))
                    }
                    WsEvent::Text(_) => return Poll::Ready(Err(LegError::Text)),
                    WsEvent::Ping(p) => return Poll::Ready(Ok(Incoming::Ping(p))),
                    WsEvent::Pong(_) => return Poll::Ready(Ok(Incoming::Pong)),
                    WsEvent::Close { code, .. } => return Poll::Ready(Ok(Incoming::Closed(code))),
                }
            }
            // Nothing left over: let go of the buffer (frames split off it keep their own bytes alive).
            if self.buf.is_empty() && self.buf.capacity() > 0 {
                self.buf = BytesMut::new();
            }
            let still_needed = self
                .decoder
                .pending_frame_len(&self.buf)
                .map(|len| len.saturating_sub(self.buf.len()));
            let n = match still_needed {
                Some(want) if want >= DIRECT_READ => {
                    // A large frame: read it in place (no copy), reserving at most MAX_RESERVE ahead.
                    if self.buf.capacity() - self.buf.len() < DIRECT_READ {
                        self.buf.reserve(want.min(MAX_RESERVE));
                    }
                    ready!(tokio_util::io::poll_read_buf(
                        Pin::new(&mut self.io),
                        cx,
                        &mut self.buf
                    ))?
                }
                _ => ready!(self.poll_read_small(cx))?,
            };
            if n == 0 {
                return Poll::Ready(Ok(Incoming::Closed(None)));
            }
        }
    }

    /// Reads into the thread's scratch buffer and appends what came to `buf`, allocated for the frame that
    /// starts there (up to [`MAX_RESERVE`]) so a large frame's later reads can go in place.
    fn poll_read_small(&mut self, cx: &mut Context<'_>) -> Poll<std::io::Result<usize>> {
        SCRATCH.with(|scratch| {
            let Ok(mut scratch) = scratch.try_borrow_mut() else {
                // Not reachable (nothing else on this thread holds it across a poll); read in place.
                self.buf.reserve(READ_CHUNK);
                return tokio_util::io::poll_read_buf(Pin::new(&mut self.io), cx, &mut self.buf);
            };
            let mut rb = tokio::io::ReadBuf::new(&mut scratch[..]);
            ready!(Pin::new(&mut self.io).poll_read(cx, &mut rb))?;
            let data = rb.filled();
            if !data.is_empty() {
                let frame = if self.buf.is_empty() {
                    self.decoder.pending_frame_len(data).unwrap_or(0)
                } else {
                    0
                };
                self.buf.reserve(data.len().max(frame.min(MAX_RESERVE)));
                self.buf.extend_from_slice(data);
            }
            Poll::Ready(Ok(data.len()))
        })
    }

    fn is_idle(&self) -> bool {
        self.raw.is_empty() && self.frames.is_empty() && !self.need_flush
    }

    fn load(&mut self, pong: Option<Bytes>, ping: bool, frames: &mut Vec<Frame>) {
        if let Some(p) = pong {
            self.raw
                .extend_from_slice(&ws::server_frame(Opcode::Pong, &p));
        }
        if ping {
            self.raw
                .extend_from_slice(&ws::server_frame(Opcode::Ping, b""));
        }
        std::mem::swap(&mut self.frames, frames);
        frames.clear();
        self.heads.clear();
        for f in &self.frames {
            let mut h = [0u8; 10];
            let n = ws::encode_server_header(Opcode::Binary, f.bytes.len(), &mut h);
            self.heads.push((h, n));
        }
        self.part = 0;
        self.offset = 0;
    }

    fn poll_send(
        &mut self,
        cx: &mut Context<'_>,
        progressed: &mut bool,
    ) -> Poll<std::io::Result<()>> {
        loop {
            if self.raw_off < self.raw.len() {
                let n = ready!(Pin::new(&mut self.io).poll_write(cx, &self.raw[self.raw_off..]))?;
                if n == 0 {
                    return Poll::Ready(Err(std::io::ErrorKind::WriteZero.into()));
                }
                *progressed = true;
                self.raw_off += n;
                self.need_flush = true;
                continue;
            }
            let parts = self.frames.len() * 2;
            if self.part < parts {
                let mut slices = [IoSlice::new(&[]); MAX_SLICES];
                let mut count = 0;
                for k in self.part..parts.min(self.part + MAX_SLICES) {
                    let p = part(&self.heads, &self.frames, k);
                    slices[count] =
                        IoSlice::new(if k == self.part { &p[self.offset..] } else { p });
                    count += 1;
                }
                let mut written =
                    ready!(Pin::new(&mut self.io).poll_write_vectored(cx, &slices[..count]))?;
                if written == 0 {
                    return Poll::Ready(Err(std::io::ErrorKind::WriteZero.into()));
                }
                *progressed = true;
                self.need_flush = true;
                while written > 0 && self.part < parts {
                    let left = part(&self.heads, &self.frames, self.part).len() - self.offset;
                    if written >= left {
                        written -= left;
                        self.part += 1;
                        self.offset = 0;
                    } else {
                        self.offset += written;
                        written = 0;
                    }
                }
                // Skip empty parts (a zero-length frame cannot exist, but stay safe).
                while self.part < parts && part(&self.heads, &self.frames, self.part).is_empty() {
                    self.part += 1;
                }
                continue;
            }
            self.frames.clear();
            self.heads.clear();
            self.part = 0;
            self.offset = 0;
            self.raw.clear();
            self.raw_off = 0;
            if self.need_flush {
                ready!(Pin::new(&mut self.io).poll_flush(cx))?;
                self.need_flush = false;
            }
            return Poll::Ready(Ok(()));
        }
    }

    async fn close(&mut self, code: CloseCode, reason: &str) {
        let _ = self
            .io
            .write_all(&ws::server_close_frame(code.code(), reason))
            .await;
        let _ = self.io.flush().await;
        let _ = self.io.shutdown().await;
    }
}

/// Screen frames a QUIC leg may have in flight (sent, not yet acknowledged by the peer): 4, or up to 16 while
/// they fit the path's congestion window (`assist_relay_proto::quic::may_send_screen`). When no more may go,
/// the leg takes no more frames from the session: frames stay in the session's queue, whose policy drops the
/// stale ones and asks for a keyframe, as over WSS. Without this bound quinn would buffer every frame and
/// latency would grow with the backlog.
pub const QUIC_SCREEN_FRAMES_IN_FLIGHT: usize =
    assist_relay_proto::quic::SCREEN_FRAMES_IN_FLIGHT_MAX;

/// A QUIC leg's screen frames in flight: their bytes, and the leg's task to wake when one is acknowledged
/// (it may be waiting for room in the congestion window rather than for a permit).
#[derive(Default)]
struct InFlight {
    bytes: AtomicU64,
    waker: AtomicWaker,
}

/// How long a closing QUIC leg waits for the peer to acknowledge its last stream data (`ended`).
pub const QUIC_FINISH_TIMEOUT: Duration = Duration::from_secs(2);

struct QuicLeg {
    conn: quinn::Connection,
    send: quinn::SendStream,
    recv: quinn::RecvStream,
    buf: BytesMut,
    decoder: StreamFrameDecoder,
    screens: mpsc::Receiver<Result<Frame, LegError>>,
    acceptor: tokio::task::JoinHandle<()>,
    permits: PollSemaphore,
    in_flight: Arc<InFlight>,
    /// Loaded frames not yet handed to quinn, and the one being written on the control stream.
    frames: VecDeque<Frame>,
    current: Option<(Bytes, usize)>,
}

impl Drop for QuicLeg {
    fn drop(&mut self) {
        self.acceptor.abort();
    }
}

/// Builds a QUIC leg from an established connection and its first bidirectional stream.
/// `leftover` holds bytes read past the ticket prelude.
pub fn quic(
    conn: quinn::Connection,
    send: quinn::SendStream,
    recv: quinn::RecvStream,
    leftover: BytesMut,
    max_payload: usize,
) -> Leg {
    let (tx, rx) = mpsc::channel(16);
    let acceptor_conn = conn.clone();
    let acceptor = tokio::spawn(async move {
        loop {
            let mut uni = match acceptor_conn.accept_uni().await {
                Ok(s) => s,
                Err(_) => return,
            };
            let tx = tx.clone();
            tokio::spawn(async move {
                let r = match uni
                    .read_to_end(max_payload + assist_relay_proto::frame::HEADER_LEN)
                    .await
                {
                    Ok(data) => Frame::from_client_bytes(Bytes::from(data), max_payload)
                        .map_err(LegError::from),
                    Err(quinn::ReadToEndError::TooLong) => {
                        Err(LegError::Frame(FrameError::TooLarge {
                            len: max_payload + 1,
                            max: max_payload,
                        }))
                    }
                    Err(e) => Err(LegError::Quic(e.to_string())),
                };
                let _ = tx.send(r).await;
            });
        }
    });
    Leg {
        io: LegIo::Quic(Box::new(QuicLeg {
            conn,
            send,
            recv,
            buf: leftover,
            decoder: StreamFrameDecoder::new(max_payload),
            screens: rx,
            acceptor,
            permits: PollSemaphore::new(Arc::new(Semaphore::new(QUIC_SCREEN_FRAMES_IN_FLIGHT))),
            in_flight: Arc::default(),
            frames: VecDeque::new(),
            current: None,
        })),
        progressed: false,
        read_any: false,
    }
}

fn closed_code(e: &quinn::ConnectionError) -> Option<u16> {
    match e {
        quinn::ConnectionError::ApplicationClosed(c) => {
            u16::try_from(c.error_code.into_inner()).ok()
        }
        _ => None,
    }
}

impl QuicLeg {
    fn poll_next(&mut self, cx: &mut Context<'_>) -> Poll<Result<Incoming, LegError>> {
        loop {
            if let Some(f) = self.decoder.decode(&mut self.buf, true)? {
                return Poll::Ready(Ok(Incoming::Frame(f)));
            }
            if let Poll::Ready(screen) = self.screens.poll_recv(cx) {
                return Poll::Ready(match screen {
                    Some(r) => r.map(Incoming::Frame),
                    None => Ok(Incoming::Closed(None)),
                });
            }
            if self.buf.capacity() - self.buf.len() < 1024 {
                self.buf.reserve(READ_CHUNK);
            }
            match ready!(tokio_util::io::poll_read_buf(
                Pin::new(&mut self.recv),
                cx,
                &mut self.buf
            )) {
                Ok(0) => return Poll::Ready(Ok(Incoming::Closed(None))),
                Ok(_) => {}
                Err(e) => {
                    let inner = e
                        .get_ref()
                        .and_then(|i| i.downcast_ref::<quinn::ReadError>());
                    if let Some(quinn::ReadError::ConnectionLost(c)) = inner {
                        if let Some(code) = closed_code(c) {
                            return Poll::Ready(Ok(Incoming::Closed(Some(code))));
                        }
                    }
                    return Poll::Ready(Err(LegError::Quic(e.to_string())));
                }
            }
        }
    }

    fn is_idle(&self) -> bool {
        self.frames.is_empty() && self.current.is_none()
    }

    fn poll_send(
        &mut self,
        cx: &mut Context<'_>,
        progressed: &mut bool,
    ) -> Poll<std::io::Result<()>> {
        loop {
            if let Some((bytes, off)) = &mut self.current {
                let n = ready!(Pin::new(&mut self.send).poll_write(cx, &bytes[*off..]))?;
                if n == 0 {
                    return Poll::Ready(Err(std::io::ErrorKind::WriteZero.into()));
                }
                *progressed = true;
                *off += n;
                if *off >= bytes.len() {
                    self.current = None;
                }
                continue;
            }
            let Some(front) = self.frames.front() else {
                return Poll::Ready(Ok(()));
            };
            if front.is_screen() {
                let len = front.bytes.len() as u64;
                let frames = QUIC_SCREEN_FRAMES_IN_FLIGHT - self.permits.available_permits();
                if frames >= assist_relay_proto::quic::SCREEN_FRAMES_IN_FLIGHT {
                    // Past the first 4, the frames in flight must fit the congestion window; registered
                    // first, so an acknowledgement after the check still wakes this task.
                    self.in_flight.waker.register(cx.waker());
                    let bytes = self.in_flight.bytes.load(Ordering::Acquire);
                    let cwnd = self.conn.stats().path.cwnd;
                    if !assist_relay_proto::quic::may_send_screen(frames, bytes, len, cwnd) {
                        return Poll::Pending;
                    }
                }
                let Some(permit) = ready!(self.permits.poll_acquire(cx)) else {
                    return Poll::Ready(Err(std::io::ErrorKind::BrokenPipe.into()));
                };
                let Some(frame) = self.frames.pop_front() else {
                    continue;
                };
                *progressed = true;
                let conn = self.conn.clone();
                let in_flight = self.in_flight.clone();
                in_flight.bytes.fetch_add(len, Ordering::AcqRel);
                // One unidirectional stream per screen frame; the permit and the bytes return once the peer
                // has acknowledged the whole frame (or the stream or connection is gone).
                tokio::spawn(async move {
                    if let Ok(mut uni) = conn.open_uni().await {
                        if uni.write_chunk(frame.bytes).await.is_ok() {
                            let _ = uni.finish();
                            let _ = uni.stopped().await;
                        }
                    }
                    in_flight.bytes.fetch_sub(len, Ordering::AcqRel);
                    drop(permit);
                    in_flight.waker.wake();
                });
            } else if let Some(frame) = self.frames.pop_front() {
                self.current = Some((frame.bytes, 0));
            }
        }
    }

    async fn close(&mut self, code: CloseCode, reason: &str) {
        // Deliver what was written (the `ended` frame) before the connection closes: finish the stream and
        // wait, bounded, for the peer to acknowledge it; closing at once would discard it.
        if self.send.finish().is_ok() {
            let _ = tokio::time::timeout(QUIC_FINISH_TIMEOUT, self.send.stopped()).await;
        }
        self.conn.close(
            quinn::VarInt::from_u32(u32::from(code.code())),
            reason.as_bytes(),
        );
    }
}

impl Leg {
    /// The next thing the leg delivered; `Pending` registers the task for more.
    pub fn poll_next(&mut self, cx: &mut Context<'_>) -> Poll<Result<Incoming, LegError>> {
        let r = match &mut self.io {
            LegIo::Ws(w) => w.poll_next(cx),
            LegIo::Quic(q) => q.poll_next(cx),
        };
        if r.is_ready() {
            self.read_any = true;
        }
        r
    }

    /// Whether everything loaded has been written (and flushed).
    pub fn is_idle(&self) -> bool {
        match &self.io {
            LegIo::Ws(w) => w.is_idle(),
            LegIo::Quic(q) => q.is_idle(),
        }
    }

    /// Whether the leg takes one forwarded frame at a time (QUIC: a screen frame needs an in-flight permit,
    /// and frames waiting for one must stay in the session's queue, where stale ones can be dropped).
    pub fn one_frame_at_a_time(&self) -> bool {
        matches!(self.io, LegIo::Quic(_))
    }

    /// Loads the next output: a pong and a ping (WebSocket only), then `frames` (taken; `frames` is left
    /// empty, with the leg's previous buffer, so batches allocate nothing). Call only when idle.
    pub fn load(&mut self, pong: Option<Bytes>, ping: bool, frames: &mut Vec<Frame>) {
        match &mut self.io {
            LegIo::Ws(w) => w.load(pong, ping, frames),
            LegIo::Quic(q) => q.frames.extend(frames.drain(..)),
        }
    }

    /// Writes what is loaded; `Ready(Ok)` once all of it is written and flushed.
    pub fn poll_send(&mut self, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        let mut progressed = false;
        let r = match &mut self.io {
            LegIo::Ws(w) => w.poll_send(cx, &mut progressed),
            LegIo::Quic(q) => q.poll_send(cx, &mut progressed),
        };
        self.progressed |= progressed;
        r
    }

    /// Writes `frames` and closes the leg with `code`: the closing handshake of the transport (a WebSocket
    /// close frame; on QUIC the stream is finished and acknowledged before the connection closes). The caller
    /// bounds the time.
    pub async fn finish(&mut self, mut frames: Vec<Frame>, code: CloseCode, reason: &str) {
        let ok = std::future::poll_fn(|cx| self.poll_send(cx)).await.is_ok();
        if ok && !frames.is_empty() {
            self.load(None, false, &mut frames);
            let _ = std::future::poll_fn(|cx| self.poll_send(cx)).await;
        }
        match &mut self.io {
            LegIo::Ws(w) => w.close(code, reason).await,
            LegIo::Quic(q) => q.close(code, reason).await,
        }
    }

    /// Closes the leg with `code` without writing anything first.
    pub async fn close(&mut self, code: CloseCode, reason: &str) {
        self.finish(Vec::new(), code, reason).await
    }

    /// Drops a QUIC leg's read buffer if it holds nothing (the leg read nothing for a while); the next read
    /// allocates. A WebSocket leg needs no such call: it lets go of its buffer whenever it is empty.
    pub fn release_idle_buffer(&mut self) {
        if let LegIo::Quic(q) = &mut self.io {
            if q.buf.is_empty() && q.buf.capacity() > 0 {
                q.buf = BytesMut::new();
            }
        }
    }

    /// The transport's current round-trip estimate (QUIC path statistics); `None` on WebSocket legs, whose
    /// round trips are measured with pings.
    pub fn transport_rtt(&self) -> Option<Duration> {
        match &self.io {
            LegIo::Ws(_) => None,
            LegIo::Quic(q) => Some(q.conn.rtt()),
        }
    }

    /// Whether the relay should ping this leg (WebSocket; QUIC has its own keep-alive).
    pub fn wants_pings(&self) -> bool {
        matches!(self.io, LegIo::Ws(_))
    }

    /// "wss" or "quic".
    pub fn transport(&self) -> &'static str {
        match self.io {
            LegIo::Ws(_) => "wss",
            LegIo::Quic(_) => "quic",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use assist_relay_proto::frame::Channel;

    fn client_frame(payload_len: usize) -> (Frame, BytesMut) {
        let frame = Frame::new(Channel::Screen, 0, &vec![7u8; payload_len]);
        let mut wire = BytesMut::new();
        ws::encode_client_frame(Opcode::Binary, &frame.bytes, [1, 2, 3, 4], &mut wire);
        (frame, wire)
    }

    fn read_capacity(leg: &Leg) -> usize {
        match &leg.io {
            LegIo::Ws(w) => w.buf.capacity(),
            LegIo::Quic(q) => q.buf.capacity(),
        }
    }

    /// Polls once: `Some` if the leg delivered something, `None` if it is waiting for bytes.
    fn poll_once(leg: &mut Leg) -> Option<Result<Incoming, LegError>> {
        let waker = std::task::Waker::noop();
        match leg.poll_next(&mut Context::from_waker(waker)) {
            Poll::Ready(r) => Some(r),
            Poll::Pending => None,
        }
    }

    #[tokio::test]
    async fn a_leg_waiting_for_data_holds_no_read_buffer() {
        let (server, mut client) = tokio::io::duplex(1 << 20);
        let mut leg = websocket(Box::new(server), 1 << 20);
        for len in [10, 4096, 100_000] {
            let (frame, wire) = client_frame(len);
            client.write_all(&wire).await.unwrap();
            let got = loop {
                if let Some(r) = poll_once(&mut leg) {
                    break r;
                }
                tokio::task::yield_now().await;
            };
            match got {
                Ok(Incoming::Frame(f)) => assert_eq!(f, frame, "payload {len}"),
                other => panic!("payload {len}: {other:?}"),
            }
            // Nothing more to read: the leg lets go of its buffer while it waits.
            assert!(poll_once(&mut leg).is_none());
            assert_eq!(read_capacity(&leg), 0, "payload {len}");
        }
    }

    #[tokio::test]
    async fn a_large_frame_in_pieces_arrives_whole_and_a_bare_header_reserves_little() {
        let (server, mut client) = tokio::io::duplex(1 << 20);
        let max = 4 << 20;
        let mut leg = websocket(Box::new(server), max);
        let (frame, wire) = client_frame(300_000);
        let mut sent = 0;
        for piece in wire.chunks(7_777) {
            client.write_all(piece).await.unwrap();
            sent += piece.len();
            tokio::task::yield_now().await;
            if let Some(r) = poll_once(&mut leg) {
                match r {
                    Ok(Incoming::Frame(f)) => {
                        assert_eq!(f, frame);
                        break;
                    }
                    other => panic!("{other:?}"),
                }
            }
            // Memory follows what arrived (amortised growth), never what the header announced.
            assert!(
                read_capacity(&leg) <= 2 * sent + MAX_RESERVE,
                "{sent}: {}",
                read_capacity(&leg)
            );
        }
        // A header announcing a 4 MiB frame and nothing after it: the leg reserves at most MAX_RESERVE.
        let (_, wire) = client_frame(max - 6);
        client.write_all(&wire[..14]).await.unwrap();
        tokio::task::yield_now().await;
        assert!(poll_once(&mut leg).is_none());
        assert!(
            read_capacity(&leg) <= MAX_RESERVE + 14,
            "{}",
            read_capacity(&leg)
        );
    }
}
