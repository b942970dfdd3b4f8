//! A relay client over WSS or QUIC, for tests, the load generator and the reference apps. It
//! speaks `docs/protocol.md` and nothing else: a client in another language does the same.

use assist_relay_proto::frame::{Channel, Frame, FrameError};
use assist_relay_proto::quic::{encode_ticket_prelude, StreamFrameDecoder, ALPN};
use assist_relay_proto::ws::{self, ClientDecoder, Opcode, WsError, WsEvent};
use base64::Engine;
use bytes::{Bytes, BytesMut};
use std::net::SocketAddr;
use std::sync::Arc;
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

/// Client failures.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// Transport failure.
    #[error("io: {0}")]
    Io(#[from] std::io::Error),
    /// The relay refused the join over HTTP (401, 409, 503) with a Graph error body.
    #[error("relay refused the join: HTTP {status}: {body}")]
    Rejected {
        /// HTTP status.
        status: u16,
        /// Response body.
        body: String,
    },
    /// The server's handshake answer was not a valid WebSocket upgrade.
    #[error("bad handshake: {0}")]
    Handshake(String),
    /// A malformed frame from the relay.
    #[error("frame: {0}")]
    Frame(#[from] FrameError),
    /// A malformed WebSocket frame from the relay.
    #[error("websocket: {0}")]
    Ws(#[from] WsError),
    /// QUIC failure.
    #[error("quic: {0}")]
    Quic(String),
}

/// Sends frames on a leg.
pub enum ClientSender {
    /// WebSocket.
    Ws {
        /// TLS write half.
        io: WriteHalf<TlsStream<TcpStream>>,
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

fn next_mask(rng: &mut u64) -> [u8; 4] {
    // xorshift64: masks need not be secret here, only varied (RFC 6455 §10.3 concerns proxies).
    *rng ^= *rng << 13;
    *rng ^= *rng >> 7;
    *rng ^= *rng << 17;
    (*rng as u32).to_be_bytes()
}

/// Opens a TLS connection and performs a WebSocket upgrade of `path`, with an optional bearer
/// token. Returns the stream and any bytes already read past the handshake.
pub async fn websocket_handshake(
    addr: SocketAddr,
    host: &str,
    tls: Arc<rustls::ClientConfig>,
    path: &str,
    bearer: Option<&str>,
) -> Result<(TlsStream<TcpStream>, BytesMut), ClientError> {
    let tcp = TcpStream::connect(addr).await?;
    tcp.set_nodelay(true)?;
    let name = rustls::pki_types::ServerName::try_from(host.to_owned())
        .map_err(|e| ClientError::Handshake(e.to_string()))?;
    let mut stream = tokio_rustls::TlsConnector::from(tls)
        .connect(name, tcp)
        .await?;
    let key = base64::engine::general_purpose::STANDARD.encode(uuid::Uuid::new_v4().as_bytes());
    let auth = bearer
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    let req = format!(
        "GET {path} HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n{auth}\r\n"
    );
    stream.write_all(req.as_bytes()).await?;
    stream.flush().await?;
    let mut buf = BytesMut::with_capacity(16 * 1024);
    let head_end = loop {
        if let Some(p) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break p + 4;
        }
        if buf.len() > 16 * 1024 {
            return Err(ClientError::Handshake("response headers too long".into()));
        }
        if stream.read_buf(&mut buf).await? == 0 {
            return Err(ClientError::Handshake(
                "connection closed during the handshake".into(),
            ));
        }
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
    let status: u16 = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| ClientError::Handshake("no status line".into()))?;
    if status != 101 {
        let len: usize = head
            .lines()
            .find_map(|l| {
                l.to_ascii_lowercase()
                    .strip_prefix("content-length:")
                    .map(|v| v.trim().parse().unwrap_or(0))
            })
            .unwrap_or(0);
        let _ = buf.split_to(head_end);
        while buf.len() < len.min(64 * 1024) {
            if stream.read_buf(&mut buf).await? == 0 {
                break;
            }
        }
        return Err(ClientError::Rejected {
            status,
            body: String::from_utf8_lossy(&buf).to_string(),
        });
    }
    let expected = ws::accept_key(&key);
    let accepted = head.lines().any(|l| {
        l.split_once(':').is_some_and(|(k, v)| {
            k.trim().eq_ignore_ascii_case("sec-websocket-accept") && v.trim() == expected
        })
    });
    if !accepted {
        return Err(ClientError::Handshake(
            "missing or wrong Sec-WebSocket-Accept".into(),
        ));
    }
    let _ = buf.split_to(head_end);
    Ok((stream, buf))
}

/// A seed for WebSocket masks.
pub fn mask_seed() -> u64 {
    u64::from_le_bytes(
        uuid::Uuid::new_v4().as_bytes()[..8]
            .try_into()
            .unwrap_or([7; 8]),
    ) | 1
}

/// The next WebSocket mask from `rng` (xorshift64).
pub fn mask(rng: &mut u64) -> [u8; 4] {
    next_mask(rng)
}

/// Joins a relay over WSS. `host` is the TLS server name and `Host` header.
pub async fn connect_wss(
    addr: SocketAddr,
    host: &str,
    tls: Arc<rustls::ClientConfig>,
    ticket: &str,
) -> Result<(ClientSender, ClientReceiver), ClientError> {
    let (stream, buf) = websocket_handshake(addr, host, tls, "/v1/relay", Some(ticket)).await?;
    let (r, w) = tokio::io::split(stream);
    Ok((
        ClientSender::Ws {
            io: w,
            rng: mask_seed(),
            out: BytesMut::new(),
        },
        ClientReceiver::Ws {
            io: r,
            buf,
            decoder: ClientDecoder::new(64 * 1024 * 1024),
        },
    ))
}

/// A QUIC client endpoint trusting `tls`'s roots, with the relay's ALPN.
pub fn quic_endpoint(mut tls: rustls::ClientConfig) -> Result<quinn::Endpoint, ClientError> {
    tls.alpn_protocols = vec![ALPN.to_vec()];
    let crypto = quinn::crypto::rustls::QuicClientConfig::try_from(tls)
        .map_err(|e| ClientError::Quic(e.to_string()))?;
    let mut cfg = quinn::ClientConfig::new(Arc::new(crypto));
    cfg.transport_config(Arc::new(crate::quic::transport_config()));
    let mut ep = quinn::Endpoint::client(
        "127.0.0.1:0"
            .parse()
            .map_err(|_| ClientError::Quic("address".into()))?,
    )?;
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

    /// Sends frames, flushing once at the end.
    pub async fn send_batch(&mut self, frames: &[Frame]) -> Result<(), ClientError> {
        match self {
            ClientSender::Ws { io, rng, out } => {
                out.clear();
                for f in frames {
                    let mask = next_mask(rng);
                    ws::encode_client_frame(Opcode::Binary, &f.bytes, mask, out);
                }
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
            ClientReceiver::Ws { io, buf, decoder } => loop {
                if let Some(ev) = decoder.decode(buf)? {
                    match ev {
                        WsEvent::Binary(b) => {
                            let header = assist_relay_proto::frame::FrameHeader::parse(&b)?
                                .ok_or(FrameError::Truncated)?;
                            return Ok(ClientEvent::Frame(Frame { header, bytes: b }));
                        }
                        WsEvent::Close { code, .. } => return Ok(ClientEvent::Closed(code)),
                        WsEvent::Ping(_) | WsEvent::Pong(_) | WsEvent::Text(_) => continue,
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
                            let _ = tokio::time::timeout(std::time::Duration::from_secs(2), conn.closed()).await;
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
