//! The signalling client: a WSS connection to `/v1/signal` carrying JSON text messages, for the
//! `assist` CLI, benchmarks and tests. It speaks `docs/protocol.md` ("Signalling") and nothing
//! else: which messages to send and what they mean is the caller's business.

use crate::wss::{mask_seed, next_mask as mask, websocket_handshake};
pub use crate::ClientError;
use assist_ws::{self as ws, ClientDecoder, Opcode, WsEvent};
use bytes::BytesMut;
use serde_json::Value;
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::io::{AsyncReadExt, AsyncWriteExt, ReadHalf, WriteHalf};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;

/// What the server sent.
#[derive(Debug)]
pub enum SignalEvent {
    /// A JSON message.
    Message(Value),
    /// The connection closed (with the close code, if any).
    Closed(Option<u16>),
}

/// A signalling connection.
pub struct SignalClient {
    rd: ReadHalf<TlsStream<TcpStream>>,
    wr: WriteHalf<TlsStream<TcpStream>>,
    buf: BytesMut,
    decoder: ClientDecoder,
    rng: u64,
}

impl SignalClient {
    /// Connects to `/v1/signal`. With `header_token`, the token goes in the `Authorization`
    /// header; without, the caller sends `{"type":"authenticate",…}` first.
    pub async fn connect(
        addr: SocketAddr,
        host: &str,
        tls: Arc<rustls::ClientConfig>,
        header_token: Option<&str>,
    ) -> Result<SignalClient, ClientError> {
        let (stream, buf) =
            websocket_handshake(addr, host, tls, "/v1/signal", header_token).await?;
        let (rd, wr) = tokio::io::split(stream);
        Ok(SignalClient {
            rd,
            wr,
            buf,
            decoder: ClientDecoder::new(1024 * 1024),
            rng: mask_seed(),
        })
    }

    /// Sends one JSON message.
    pub async fn send(&mut self, msg: &Value) -> Result<(), ClientError> {
        self.send_text(&msg.to_string()).await
    }

    /// Sends raw text (tests send malformed messages with it).
    pub async fn send_text(&mut self, text: &str) -> Result<(), ClientError> {
        let mut out = BytesMut::new();
        ws::encode_client_frame(Opcode::Text, text.as_bytes(), mask(&mut self.rng), &mut out);
        self.wr.write_all(&out).await?;
        self.wr.flush().await?;
        Ok(())
    }

    /// The next message or the close.
    pub async fn recv(&mut self) -> Result<SignalEvent, ClientError> {
        loop {
            if let Some(ev) = self.decoder.decode(&mut self.buf)? {
                match ev {
                    WsEvent::Text(t) => {
                        let v = serde_json::from_slice(&t).map_err(|e| {
                            ClientError::Handshake(format!("server sent non-JSON: {e}"))
                        })?;
                        return Ok(SignalEvent::Message(v));
                    }
                    WsEvent::Close { code, .. } => return Ok(SignalEvent::Closed(code)),
                    WsEvent::Ping(p) => {
                        let mut out = BytesMut::new();
                        ws::encode_client_frame(Opcode::Pong, &p, mask(&mut self.rng), &mut out);
                        self.wr.write_all(&out).await?;
                        self.wr.flush().await?;
                    }
                    WsEvent::Pong(_) | WsEvent::Binary(_) => {}
                }
                continue;
            }
            self.buf.reserve(8192);
            if self.rd.read_buf(&mut self.buf).await? == 0 {
                return Ok(SignalEvent::Closed(None));
            }
        }
    }
}
