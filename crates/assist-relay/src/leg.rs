//! One leg's transport: reading relay frames from, and writing them to, a WebSocket (over TLS,
//! after the HTTP upgrade) or a QUIC connection. The WebSocket path is purpose-built: client
//! frames are unmasked in place and handed on as `Bytes` slices of the read buffer, and each
//! batch of outgoing frames is one vectored write of small headers and the frames' own bytes.

use assist_relay_proto::close::CloseCode;
use assist_relay_proto::frame::{Channel, Frame, FrameError};
use assist_relay_proto::quic::StreamFrameDecoder;
use assist_ws::{self as ws, Opcode, ServerDecoder, WsError, WsEvent};
use bytes::{Bytes, BytesMut};
use std::io::IoSlice;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadHalf, WriteHalf};
use tokio::sync::mpsc;

/// How much the read buffer grows by when it needs room. Small on purpose: a large buffer
/// costs memory per idle leg (see `../shared/notes/relay-performance.md`).
const READ_CHUNK: usize = 16 * 1024;

/// What a leg delivered.
#[derive(Debug)]
pub enum Incoming {
    /// A relay frame.
    Frame(Frame),
    /// A WebSocket ping to answer.
    Ping(Bytes),
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

/// Reading side of a leg.
pub enum LegReader {
    /// WebSocket over any byte stream.
    Ws(WsReader),
    /// QUIC.
    Quic(QuicReader),
}

/// Writing side of a leg.
pub enum LegWriter {
    /// WebSocket over any byte stream.
    Ws(WsWriter),
    /// QUIC.
    Quic(QuicWriter),
}

/// A boxed byte stream (TLS over TCP, or hyper's upgraded connection).
pub trait Stream: AsyncRead + AsyncWrite + Send + Unpin + 'static {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin + 'static> Stream for T {}

/// Splits a WebSocket byte stream into the leg's halves.
pub fn websocket(stream: Box<dyn Stream>, max_payload: usize) -> (LegReader, LegWriter) {
    let (r, w) = tokio::io::split(stream);
    (
        LegReader::Ws(WsReader {
            io: r,
            buf: BytesMut::new(),
            decoder: ServerDecoder::new(max_payload + assist_relay_proto::frame::HEADER_LEN),
            max_payload,
        }),
        LegWriter::Ws(WsWriter {
            io: w,
            headers: Vec::new(),
        }),
    )
}

/// WebSocket reader.
pub struct WsReader {
    io: ReadHalf<Box<dyn Stream>>,
    buf: BytesMut,
    decoder: ServerDecoder,
    max_payload: usize,
}

impl WsReader {
    async fn next(&mut self) -> Result<Incoming, LegError> {
        loop {
            if let Some(ev) = self.decoder.decode(&mut self.buf)? {
                match ev {
                    WsEvent::Binary(b) => {
                        return Ok(Incoming::Frame(Frame::from_client_bytes(
                            b,
                            self.max_payload,
                        )?))
                    }
                    WsEvent::Text(_) => return Err(LegError::Text),
                    WsEvent::Ping(p) => return Ok(Incoming::Ping(p)),
                    WsEvent::Pong(_) => continue,
                    WsEvent::Close { code, .. } => return Ok(Incoming::Closed(code)),
                }
            }
            if self.buf.capacity() - self.buf.len() < 1024 {
                self.buf.reserve(READ_CHUNK);
            }
            if self.io.read_buf(&mut self.buf).await? == 0 {
                return Ok(Incoming::Closed(None));
            }
        }
    }
}

/// WebSocket writer.
pub struct WsWriter {
    io: WriteHalf<Box<dyn Stream>>,
    headers: Vec<([u8; 10], usize)>,
}

impl WsWriter {
    async fn write_frames(&mut self, frames: &[Frame]) -> std::io::Result<()> {
        self.headers.clear();
        for f in frames {
            let mut h = [0u8; 10];
            let n = ws::encode_server_header(Opcode::Binary, f.bytes.len(), &mut h);
            self.headers.push((h, n));
        }
        // One vectored write per batch: header, frame, header, frame, … with partial writes resumed.
        let mut parts: Vec<&[u8]> = Vec::with_capacity(frames.len() * 2);
        for (f, (h, n)) in frames.iter().zip(self.headers.iter()) {
            parts.push(&h[..*n]);
            parts.push(&f.bytes);
        }
        let mut first = 0;
        let mut offset = 0;
        while first < parts.len() {
            let slices: Vec<IoSlice<'_>> = std::iter::once(IoSlice::new(&parts[first][offset..]))
                .chain(parts[first + 1..].iter().take(63).map(|p| IoSlice::new(p)))
                .collect();
            let mut written = self.io.write_vectored(&slices).await?;
            if written == 0 {
                return Err(std::io::ErrorKind::WriteZero.into());
            }
            while written > 0 && first < parts.len() {
                let left = parts[first].len() - offset;
                if written >= left {
                    written -= left;
                    first += 1;
                    offset = 0;
                } else {
                    offset += written;
                    written = 0;
                }
            }
        }
        self.io.flush().await
    }

    async fn write_pong(&mut self, payload: Bytes) -> std::io::Result<()> {
        self.io
            .write_all(&ws::server_frame(Opcode::Pong, &payload))
            .await?;
        self.io.flush().await
    }

    async fn write_ping(&mut self) -> std::io::Result<()> {
        self.io
            .write_all(&ws::server_frame(Opcode::Ping, b""))
            .await?;
        self.io.flush().await
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

/// QUIC reader: the control/input/chat stream, plus one unidirectional stream per screen frame.
pub struct QuicReader {
    recv: quinn::RecvStream,
    buf: BytesMut,
    decoder: StreamFrameDecoder,
    screens: mpsc::Receiver<Result<Frame, LegError>>,
    _acceptor: tokio::task::JoinHandle<()>,
}

/// Screen frames a QUIC leg may have in flight (sent, not yet acknowledged by the peer).
/// When they are all out, the writer waits, frames queue in the relay, and the relay's queue
/// policy drops the stale ones and asks for a keyframe, as over WSS; without this bound quinn
/// would buffer every frame and latency would grow with the backlog.
pub const QUIC_SCREEN_FRAMES_IN_FLIGHT: usize = 4;

/// QUIC writer.
pub struct QuicWriter {
    conn: quinn::Connection,
    send: quinn::SendStream,
    screens_in_flight: std::sync::Arc<tokio::sync::Semaphore>,
}

/// Builds a QUIC leg from an established connection and its first bidirectional stream.
/// `leftover` holds bytes read past the ticket prelude.
pub fn quic(
    conn: quinn::Connection,
    send: quinn::SendStream,
    recv: quinn::RecvStream,
    leftover: BytesMut,
    max_payload: usize,
) -> (LegReader, LegWriter) {
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
    (
        LegReader::Quic(QuicReader {
            recv,
            buf: leftover,
            decoder: StreamFrameDecoder::new(max_payload),
            screens: rx,
            _acceptor: acceptor,
        }),
        LegWriter::Quic(QuicWriter {
            conn,
            send,
            screens_in_flight: std::sync::Arc::new(tokio::sync::Semaphore::new(
                QUIC_SCREEN_FRAMES_IN_FLIGHT,
            )),
        }),
    )
}

impl QuicReader {
    async fn next(&mut self) -> Result<Incoming, LegError> {
        loop {
            if let Some(f) = self.decoder.decode(&mut self.buf, true)? {
                return Ok(Incoming::Frame(f));
            }
            self.buf.reserve(READ_CHUNK);
            tokio::select! {
                screen = self.screens.recv() => match screen {
                    Some(r) => return r.map(Incoming::Frame),
                    None => return Ok(Incoming::Closed(None)),
                },
                chunk = self.recv.read_chunk(64 * 1024, true) => match chunk {
                    Ok(Some(c)) => self.buf.extend_from_slice(&c.bytes),
                    Ok(None) => return Ok(Incoming::Closed(None)),
                    Err(quinn::ReadError::ConnectionLost(quinn::ConnectionError::ApplicationClosed(c))) => {
                        return Ok(Incoming::Closed(u16::try_from(c.error_code.into_inner()).ok()))
                    }
                    Err(e) => return Err(LegError::Quic(e.to_string())),
                },
            }
        }
    }
}

impl QuicWriter {
    async fn write_frames(&mut self, frames: &[Frame]) -> std::io::Result<()> {
        for f in frames {
            if f.header.channel == Channel::Screen {
                let permit = self
                    .screens_in_flight
                    .clone()
                    .acquire_owned()
                    .await
                    .map_err(std::io::Error::other)?;
                let mut uni = self.conn.open_uni().await.map_err(std::io::Error::other)?;
                uni.write_chunk(f.bytes.clone())
                    .await
                    .map_err(std::io::Error::other)?;
                let _ = uni.finish();
                // The permit returns once the peer has acknowledged the whole frame (or the
                // stream or connection is gone).
                tokio::spawn(async move {
                    let _ = uni.stopped().await;
                    drop(permit);
                });
            } else {
                self.send
                    .write_chunk(f.bytes.clone())
                    .await
                    .map_err(std::io::Error::other)?;
            }
        }
        Ok(())
    }

    async fn close(&mut self, code: CloseCode, reason: &str) {
        let _ = self.send.finish();
        self.conn.close(
            quinn::VarInt::from_u32(code.code() as u32),
            reason.as_bytes(),
        );
    }
}

impl LegReader {
    /// The next thing the leg delivered.
    pub async fn next(&mut self) -> Result<Incoming, LegError> {
        match self {
            LegReader::Ws(r) => r.next().await,
            LegReader::Quic(r) => r.next().await,
        }
    }
}

impl LegWriter {
    /// Writes frames in order, as one batch.
    pub async fn write_frames(&mut self, frames: &[Frame]) -> std::io::Result<()> {
        match self {
            LegWriter::Ws(w) => w.write_frames(frames).await,
            LegWriter::Quic(w) => w.write_frames(frames).await,
        }
    }

    /// Answers a WebSocket ping (QUIC has its own keep-alive).
    pub async fn write_pong(&mut self, payload: Bytes) -> std::io::Result<()> {
        match self {
            LegWriter::Ws(w) => w.write_pong(payload).await,
            LegWriter::Quic(_) => Ok(()),
        }
    }

    /// Sends a WebSocket ping (no-op on QUIC).
    pub async fn write_ping(&mut self) -> std::io::Result<()> {
        match self {
            LegWriter::Ws(w) => w.write_ping().await,
            LegWriter::Quic(_) => Ok(()),
        }
    }

    /// Closes the leg with `code`.
    pub async fn close(&mut self, code: CloseCode, reason: &str) {
        match self {
            LegWriter::Ws(w) => w.close(code, reason).await,
            LegWriter::Quic(w) => w.close(code, reason).await,
        }
    }

    /// "wss" or "quic".
    pub fn transport(&self) -> &'static str {
        match self {
            LegWriter::Ws(_) => "wss",
            LegWriter::Quic(_) => "quic",
        }
    }
}
