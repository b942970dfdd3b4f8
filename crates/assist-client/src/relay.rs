//! The relay client: one leg of a session over WSS (`/v1/relay`) or QUIC (ALPN
//! `assist-relay/1`), for the sharer agent, the load generator and tests. It speaks
//! `docs/protocol.md` ("Relay") and nothing else: a client in another language does the same.
//!
//! A leg is a [`ClientSender`] and a [`ClientReceiver`], so one task can send while another
//! receives. Join with the ticket the broker gave in `sessionActive`: [`connect_wss`], or
//! [`quic_endpoint`] once and then [`connect_quic`] per leg.

pub use crate::ClientError;

use crate::wss::{mask_seed, next_mask, websocket_handshake};
use assist_relay_proto::frame::{Channel, Frame, FrameError};
use assist_relay_proto::quic::{encode_ticket_prelude, StreamFrameDecoder, ALPN, MAX_UDP_PAYLOAD};
use assist_ws::{self as ws, ClientDecoder, Opcode, WsEvent};
use bytes::{Bytes, BytesMut};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt, ReadHalf, WriteHalf};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio_rustls::client::TlsStream;

/// What the relay sent.
#[derive(Debug)]
pub enum ClientEvent {
    /// A relay frame (from the peer, or from the relay with the `FROM_RELAY` flag).
    Frame(Frame),
    /// The leg was closed, with the close code when there was one.
    Closed(Option<u16>),
}

/// Sends frames on a leg.
pub enum ClientSender {
    /// WebSocket.
    Ws {
        /// TLS write half, shared with the receiver, which answers the relay's pings on it.
        io: SharedWrite,
        /// Mask generator state.
        rng: u64,
        /// Reused output buffer.
        out: BytesMut,
    },
    /// QUIC.
    Quic {
        /// The connection (screen frames go on their own streams).
        conn: quinn::Connection,
        /// The control/input/chat stream.
        send: quinn::SendStream,
    },
}

/// Receives frames on a leg.
pub enum ClientReceiver {
    /// WebSocket.
    Ws {
        /// TLS read half.
        io: ReadHalf<TlsStream<TcpStream>>,
        /// Read buffer.
        buf: BytesMut,
        /// Decoder.
        decoder: ClientDecoder,
        /// The write half, for pongs.
        pong: SharedWrite,
        /// The payload of a ping not answered yet (the sender held the write half).
        ping: Option<Bytes>,
        /// Mask generator state for pongs.
        rng: u64,
    },
    /// QUIC.
    Quic {
        /// The control/input/chat stream.
        recv: quinn::RecvStream,
        /// Read buffer.
        buf: BytesMut,
        /// Decoder.
        decoder: StreamFrameDecoder,
        /// Screen frames from unidirectional streams.
        screens: mpsc::Receiver<Bytes>,
        /// The connection (for its close code).
        conn: quinn::Connection,
    },
}

/// A WSS leg's write half: the sender writes frames on it, the receiver pongs.
pub type SharedWrite = Arc<tokio::sync::Mutex<WriteHalf<TlsStream<TcpStream>>>>;

/// Joins a relay over WSS. `host` is the TLS server name and `Host` header.
pub async fn connect_wss(
    addr: SocketAddr,
    host: &str,
    tls: Arc<rustls::ClientConfig>,
    ticket: &str,
) -> Result<(ClientSender, ClientReceiver), ClientError> {
    let (stream, buf) = websocket_handshake(addr, host, tls, "/v1/relay", Some(ticket)).await?;
    let (r, w) = tokio::io::split(stream);
    let w = Arc::new(tokio::sync::Mutex::new(w));
    Ok((
        ClientSender::Ws {
            io: w.clone(),
            rng: mask_seed(),
            out: BytesMut::new(),
        },
        ClientReceiver::Ws {
            io: r,
            buf,
            decoder: ClientDecoder::new(64 * 1024 * 1024),
            pong: w,
            ping: None,
            rng: mask_seed(),
        },
    ))
}

/// The client's QUIC transport settings, the same as the relay's own (`assist-relay`'s
/// `quic::transport_config`): at most 16 screen streams and 4 bidirectional streams open towards
/// this client, a 30 s idle timeout and a keep-alive every 10 s, so an idle leg stays open behind
/// NATs, and path MTU discovery up to [`MAX_UDP_PAYLOAD`].
pub fn transport_config() -> quinn::TransportConfig {
    let mut t = quinn::TransportConfig::default();
    t.max_concurrent_uni_streams(16u32.into());
    t.max_concurrent_bidi_streams(4u32.into());
    t.max_idle_timeout(Some(quinn::IdleTimeout::from(quinn::VarInt::from_u32(
        30_000,
    ))));
    t.keep_alive_interval(Some(Duration::from_secs(10)));
    let mut mtu = quinn::MtuDiscoveryConfig::default();
    mtu.upper_bound(MAX_UDP_PAYLOAD);
    t.mtu_discovery_config(Some(mtu));
    t
}

/// A client endpoint's settings: datagrams of up to [`MAX_UDP_PAYLOAD`] bytes accepted, so the
/// relay's MTU discovery towards this client may go as high as the path allows.
pub fn endpoint_config() -> quinn::EndpointConfig {
    let mut cfg = quinn::EndpointConfig::default();
    // In range by construction (1200..=65527); the default stays if quinn ever refuses it.
    let _ = cfg.max_udp_payload_size(MAX_UDP_PAYLOAD);
    cfg
}

/// A QUIC client endpoint trusting `tls`'s roots, with the relay's ALPN.
pub fn quic_endpoint(mut tls: rustls::ClientConfig) -> Result<quinn::Endpoint, ClientError> {
    tls.alpn_protocols = vec![ALPN.to_vec()];
    let crypto = quinn::crypto::rustls::QuicClientConfig::try_from(tls)
        .map_err(|e| ClientError::Quic(e.to_string()))?;
    let mut cfg = quinn::ClientConfig::new(Arc::new(crypto));
    cfg.transport_config(Arc::new(transport_config()));
    let socket = std::net::UdpSocket::bind(SocketAddr::from(([127, 0, 0, 1], 0)))?;
    let runtime =
        quinn::default_runtime().ok_or_else(|| ClientError::Quic("no async runtime".into()))?;
    let mut ep = quinn::Endpoint::new(endpoint_config(), None, socket, runtime)?;
    ep.set_default_client_config(cfg);
    Ok(ep)
}

/// Joins a relay over QUIC.
pub async fn connect_quic(
    endpoint: &quinn::Endpoint,
    addr: SocketAddr,
    host: &str,
    ticket: &str,
) -> Result<(ClientSender, ClientReceiver), ClientError> {
    let conn = endpoint
        .connect(addr, host)
        .map_err(|e| ClientError::Quic(e.to_string()))?
        .await
        .map_err(|e| ClientError::Quic(e.to_string()))?;
    let (mut send, recv) = conn
        .open_bi()
        .await
        .map_err(|e| ClientError::Quic(e.to_string()))?;
    send.write_chunk(encode_ticket_prelude(ticket))
        .await
        .map_err(|e| ClientError::Quic(e.to_string()))?;
    let (tx, rx) = mpsc::channel(64);
    let c2 = conn.clone();
    tokio::spawn(async move {
        while let Ok(mut uni) = c2.accept_uni().await {
            let tx = tx.clone();
            tokio::spawn(async move {
                if let Ok(data) = uni.read_to_end(64 * 1024 * 1024).await {
                    let _ = tx.send(Bytes::from(data)).await;
                }
            });
        }
    });
    Ok((
        ClientSender::Quic {
            conn: conn.clone(),
            send,
        },
        ClientReceiver::Quic {
            recv,
            buf: BytesMut::new(),
            decoder: StreamFrameDecoder::new(64 * 1024 * 1024),
            screens: rx,
            conn,
        },
    ))
}

impl ClientSender {
    /// Sends one frame.
    pub async fn send(&mut self, frame: &Frame) -> Result<(), ClientError> {
        self.send_batch(std::slice::from_ref(frame)).await
    }

    /// A QUIC leg's connection statistics (its path's MTU, round-trip time, losses, datagrams
    /// sent and received); `None` on a WSS leg.
    pub fn quic_stats(&self) -> Option<quinn::ConnectionStats> {
        match self {
            ClientSender::Quic { conn, .. } => Some(conn.stats()),
            ClientSender::Ws { .. } => None,
        }
    }

    /// Sends frames, flushing once at the end.
    pub async fn send_batch(&mut self, frames: &[Frame]) -> Result<(), ClientError> {
        match self {
            ClientSender::Ws { io, rng, out } => {
                out.clear();
                for f in frames {
                    let mask = next_mask(rng);
                    ws::encode_client_frame(Opcode::Binary, &f.bytes, mask, out);
                }
                let mut io = io.lock().await;
                io.write_all(out).await?;
                io.flush().await?;
            }
            ClientSender::Quic { conn, send } => {
                for f in frames {
                    if f.header.channel == Channel::Screen {
                        let mut uni = conn
                            .open_uni()
                            .await
                            .map_err(|e| ClientError::Quic(e.to_string()))?;
                        uni.write_chunk(f.bytes.clone())
                            .await
                            .map_err(|e| ClientError::Quic(e.to_string()))?;
                        let _ = uni.finish();
                    } else {
                        send.write_chunk(f.bytes.clone())
                            .await
                            .map_err(|e| ClientError::Quic(e.to_string()))?;
                    }
                }
            }
        }
        Ok(())
    }

    /// Sends a WebSocket text message (a protocol error for the relay; tests use it).
    pub async fn send_text(&mut self, text: &str) -> Result<(), ClientError> {
        if let ClientSender::Ws { io, rng, out } = self {
            out.clear();
            let mask = next_mask(rng);
            ws::encode_client_frame(Opcode::Text, text.as_bytes(), mask, out);
            let mut io = io.lock().await;
            io.write_all(out).await?;
            io.flush().await?;
        }
        Ok(())
    }

    /// Closes the leg normally.
    pub async fn close(&mut self) {
        match self {
            ClientSender::Ws { io, rng, out } => {
                out.clear();
                let mask = next_mask(rng);
                ws::encode_client_frame(Opcode::Close, &1000u16.to_be_bytes(), mask, out);
                let mut io = io.lock().await;
                let _ = io.write_all(out).await;
                let _ = io.flush().await;
            }
            ClientSender::Quic { conn, send } => {
                let _ = send.finish();
                conn.close(quinn::VarInt::from_u32(1000), b"bye");
            }
        }
    }
}

impl ClientReceiver {
    /// The next frame or the close.
    pub async fn recv(&mut self) -> Result<ClientEvent, ClientError> {
        match self {
            ClientReceiver::Ws {
                io,
                buf,
                decoder,
                pong,
                ping,
                rng,
            } => loop {
                // Answer the latest ping (RFC 6455: a pong may answer only the most recent), so
                // the relay measures this leg's round trip. Never wait for the sender: if it
                // holds the write half, try again after the next read.
                if let Some(p) = ping.take() {
                    match pong.try_lock() {
                        Ok(mut w) => {
                            let mut out = BytesMut::with_capacity(p.len() + 8);
                            ws::encode_client_frame(Opcode::Pong, &p, next_mask(rng), &mut out);
                            w.write_all(&out).await?;
                            w.flush().await?;
                        }
                        Err(_) => *ping = Some(p),
                    }
                }
                if let Some(ev) = decoder.decode(buf)? {
                    match ev {
                        WsEvent::Binary(b) => {
                            let header = assist_relay_proto::frame::FrameHeader::parse(&b)?
                                .ok_or(FrameError::Truncated)?;
                            return Ok(ClientEvent::Frame(Frame { header, bytes: b }));
                        }
                        WsEvent::Close { code, .. } => return Ok(ClientEvent::Closed(code)),
                        WsEvent::Ping(p) => {
                            *ping = Some(p);
                            continue;
                        }
                        WsEvent::Pong(_) | WsEvent::Text(_) => continue,
                    }
                }
                buf.reserve(16 * 1024);
                if io.read_buf(buf).await? == 0 {
                    return Ok(ClientEvent::Closed(None));
                }
            },
            ClientReceiver::Quic {
                recv,
                buf,
                decoder,
                screens,
                conn,
            } => loop {
                if let Some(f) = decoder.decode(buf, false)? {
                    return Ok(ClientEvent::Frame(f));
                }
                tokio::select! {
                    s = screens.recv() => match s {
                        Some(b) => {
                            let header = assist_relay_proto::frame::FrameHeader::parse(&b)?.ok_or(FrameError::Truncated)?;
                            return Ok(ClientEvent::Frame(Frame { header, bytes: b }));
                        }
                        None => return Ok(ClientEvent::Closed(quic_code(conn))),
                    },
                    c = recv.read_chunk(64 * 1024, true) => match c {
                        Ok(Some(c)) => buf.extend_from_slice(&c.bytes),
                        Ok(None) | Err(_) => {
                            // Give the close frame a moment to arrive so its code is known.
                            let _ = tokio::time::timeout(Duration::from_secs(2), conn.closed()).await;
                            return Ok(ClientEvent::Closed(quic_code(conn)));
                        }
                    },
                }
            },
        }
    }
}

fn quic_code(conn: &quinn::Connection) -> Option<u16> {
    match conn.close_reason() {
        Some(quinn::ConnectionError::ApplicationClosed(c)) => {
            u16::try_from(c.error_code.into_inner()).ok()
        }
        _ => None,
    }
}
