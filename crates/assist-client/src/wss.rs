//! The client side of a WebSocket over TLS: the opening handshake (RFC 6455 §4.1) and masks.

use crate::ClientError;
use base64::Engine;
use bytes::BytesMut;
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;

/// The next WebSocket mask from `rng` (xorshift64; seed it with [`mask_seed`]).
pub fn next_mask(rng: &mut u64) -> [u8; 4] {
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
    let expected = assist_ws::accept_key(&key);
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

/// A seed for WebSocket masks (never 0, which xorshift would keep at 0).
pub fn mask_seed() -> u64 {
    u64::from_le_bytes(
        uuid::Uuid::new_v4().as_bytes()[..8]
            .try_into()
            .unwrap_or([7; 8]),
    ) | 1
}
