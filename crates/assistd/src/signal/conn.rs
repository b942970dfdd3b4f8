//! One signalling connection's transport: JSON text messages over a WebSocket (after the HTTP
//! upgrade), with the limits of `docs/protocol.md`: message size, message rate, idle timeout
//! with pings, and a bounded outbound queue. Protocol meaning lives in the session crate.

use assist_session::message::CloseCode;
use assist_ws::{self as ws, Opcode, ServerDecoder, WsEvent};
use bytes::BytesMut;
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc;

/// Largest signalling message, bytes.
pub const MAX_MESSAGE: usize = 16 * 1024;
/// Silence after which the server pings; the same again without a reply (90 s in all) closes the
/// connection with [`CloseCode::Idle`].
/// Request rates are limited by the session machine, which sees every message.
pub const IDLE_PING: Duration = Duration::from_secs(45);
/// Outbound messages queued per connection before it is considered stuck and closed.
pub const OUTBOUND_QUEUE: usize = 256;

/// What the connection's task does with what arrives: the endpoint's handler, run on the
/// same task as the socket IO, so a message goes from the socket to the driver with no task in
/// between.
pub trait Inbox: Send {
    /// A text message arrived (JSON, not yet parsed).
    fn text(&mut self, text: String) -> impl std::future::Future<Output = Flow> + Send;
    /// When to close the connection, and with which code, unless it ends before.
    fn deadline(&self) -> Option<(tokio::time::Instant, CloseCode)>;
}

/// What [`Inbox::text`] wants done next.
#[derive(Debug)]
pub enum Flow {
    /// Go on reading.
    Continue,
    /// Write this text message, then go on.
    Reply(String),
    /// Close the connection with this code.
    Close(CloseCode),
}

/// What to send on the connection.
#[derive(Debug)]
pub enum Outbound {
    /// A text message.
    Text(String),
    /// Close with a code and its reason text, then stop.
    Close(CloseCode),
}

/// Queued outgoing messages written together, up to about this many bytes.
const COALESCE_BYTES: usize = 64 * 1024;

/// Runs a connection: hands what it reads to `inbox`, writes what comes from `outbound`.
/// Returns when either side ends (or the inbox's deadline passes).
pub async fn run<S, I>(stream: S, inbox: &mut I, mut outbound: mpsc::Receiver<Outbound>)
where
    S: AsyncRead + AsyncWrite + Send + Unpin + 'static,
    I: Inbox,
{
    let (mut r, mut w) = tokio::io::split(stream);
    let mut buf = BytesMut::with_capacity(4096);
    let mut decoder = ServerDecoder::new(MAX_MESSAGE);
    let mut last_heard = Instant::now();
    let mut pinged = false;
    let close_with = |code: CloseCode| ws::server_close_frame(code.code(), code.as_str());
    loop {
        // Deliver every complete message already buffered.
        loop {
            match decoder.decode(&mut buf) {
                Ok(Some(WsEvent::Text(t))) => {
                    let Ok(text) = String::from_utf8(t.to_vec()) else {
                        let _ = w.write_all(&close_with(CloseCode::InvalidUtf8)).await;
                        return;
                    };
                    match inbox.text(text).await {
                        Flow::Continue => {}
                        Flow::Reply(reply) => {
                            let frame = ws::server_frame(Opcode::Text, reply.as_bytes());
                            if w.write_all(&frame).await.is_err() {
                                return;
                            }
                        }
                        Flow::Close(code) => {
                            let _ = w.write_all(&close_with(code)).await;
                            let _ = w.shutdown().await;
                            return;
                        }
                    }
                }
                Ok(Some(WsEvent::Binary(_))) => {
                    let _ = w.write_all(&close_with(CloseCode::ProtocolError)).await;
                    return;
                }
                Ok(Some(WsEvent::Ping(p))) => {
                    let _ = w.write_all(&ws::server_frame(Opcode::Pong, &p)).await;
                }
                Ok(Some(WsEvent::Pong(_))) => {}
                Ok(Some(WsEvent::Close { .. })) => {
                    let _ = w.write_all(&close_with(CloseCode::Normal)).await;
                    let _ = w.shutdown().await;
                    return;
                }
                Ok(None) => break,
                Err(e) => {
                    let code =
                        CloseCode::from_code(e.close_code()).unwrap_or(CloseCode::ProtocolError);
                    let _ = w.write_all(&close_with(code)).await;
                    return;
                }
            }
        }
        if buf.capacity() - buf.len() < 1024 {
            buf.reserve(4096);
        }
        let deadline = last_heard + IDLE_PING;
        let inbox_deadline = inbox.deadline();
        tokio::select! {
            _ = async {
                match inbox_deadline {
                    Some((at, _)) => tokio::time::sleep_until(at).await,
                    None => std::future::pending().await,
                }
            } => {
                if let Some((_, code)) = inbox_deadline {
                    let _ = w.write_all(&close_with(code)).await;
                    let _ = w.shutdown().await;
                }
                return;
            }
            n = r.read_buf(&mut buf) => match n {
                Ok(0) | Err(_) => {
                    return;
                }
                Ok(_) => {
                    last_heard = Instant::now();
                    pinged = false;
                }
            },
            out = outbound.recv() => match out {
                Some(Outbound::Text(t)) => {
                    // Messages already queued behind this one go out in the same TLS write.
                    let mut frames = BytesMut::new();
                    ws::encode_frame(true, Opcode::Text, t.as_bytes(), None, &mut frames);
                    let mut then = None;
                    while frames.len() < COALESCE_BYTES {
                        match outbound.try_recv() {
                            Ok(Outbound::Text(t)) => {
                                ws::encode_frame(true, Opcode::Text, t.as_bytes(), None, &mut frames)
                            }
                            Ok(other) => {
                                then = Some(other);
                                break;
                            }
                            Err(_) => break,
                        }
                    }
                    if w.write_all(&frames).await.is_err() {
                        return;
                    }
                    if let Some(Outbound::Close(code)) = then {
                        let _ = w.write_all(&close_with(code)).await;
                        let _ = w.shutdown().await;
                        return;
                    }
                }
                Some(Outbound::Close(code)) => {
                    let _ = w.write_all(&close_with(code)).await;
                    let _ = w.shutdown().await;
                    return;
                }
                None => {
                    let _ = w.write_all(&close_with(CloseCode::GoingAway)).await;
                    let _ = w.shutdown().await;
                    return;
                }
            },
            _ = tokio::time::sleep_until(deadline.into()) => {
                if pinged {
                    let _ = w.write_all(&close_with(CloseCode::Idle)).await;
                    return;
                }
                pinged = true;
                last_heard = Instant::now();
                let _ = w.write_all(&ws::server_frame(Opcode::Ping, b"")).await;
            }
        }
    }
}
