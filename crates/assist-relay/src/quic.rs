//! The relay's QUIC endpoint: ALPN `assist-relay/1`, the ticket as a length-prefixed prelude on
//! the first bidirectional stream, then the leg runs like any other (`docs/protocol.md`).

use assist_relay_proto::close::CloseCode;
use assist_relay_proto::quic::{parse_ticket_prelude, ALPN, MAX_UDP_PAYLOAD};
use bytes::{Buf, BytesMut};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

use crate::relay::Relay;

/// How long a new connection may take to open its stream and send the ticket.
const PRELUDE_TIMEOUT: Duration = Duration::from_secs(10);

/// UDP socket buffer size requested for the relay's QUIC endpoint.
pub const UDP_BUFFER_BYTES: usize = 8 * 1024 * 1024;

/// Transport settings shared by the relay's server and clients.
pub fn transport_config() -> quinn::TransportConfig {
    let mut t = quinn::TransportConfig::default();
    // Bounds what a peer may have in flight: 16 screen frames per leg (1 MiB at 64 KiB).
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

/// The endpoint settings of the relay's QUIC endpoint: datagrams of up to [`MAX_UDP_PAYLOAD`]
/// bytes accepted (and so advertised to clients, whose MTU discovery may then go that high).
pub fn endpoint_config() -> quinn::EndpointConfig {
    let mut cfg = quinn::EndpointConfig::default();
    // In range by construction (1200..=65527); the default stays if quinn ever refuses it.
    let _ = cfg.max_udp_payload_size(MAX_UDP_PAYLOAD);
    cfg
}

/// Binds the relay's QUIC endpoint with the server's certificate.
pub fn server_endpoint(
    addr: SocketAddr,
    certs: Vec<rustls::pki_types::CertificateDer<'static>>,
    key: rustls::pki_types::PrivateKeyDer<'static>,
) -> anyhow::Result<quinn::Endpoint> {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut tls = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_no_client_auth()
        .with_single_cert(certs, key)?;
    tls.alpn_protocols = vec![ALPN.to_vec()];
    tls.max_early_data_size = 0;
    let crypto = quinn::crypto::rustls::QuicServerConfig::try_from(tls)
        .map_err(|e| anyhow::anyhow!("QUIC TLS configuration: {e}"))?;
    let mut cfg = quinn::ServerConfig::with_crypto(Arc::new(crypto));
    cfg.transport_config(Arc::new(transport_config()));
    let socket = udp_socket(addr)?;
    let runtime =
        quinn::default_runtime().ok_or_else(|| anyhow::anyhow!("no async runtime for QUIC"))?;
    let socket = runtime.wrap_udp_socket(socket)?;
    // quinn-udp turns on GSO (segmentation offload: one send of up to 64 datagrams) and GRO (one
    // receive of several) when the kernel offers them; log what this socket got.
    tracing::info!(
        %addr,
        gso_segments = socket.max_transmit_segments(),
        gro_segments = socket.max_receive_segments(),
        "QUIC endpoint: UDP segmentation offload"
    );
    Ok(quinn::Endpoint::new_with_abstract_socket(
        endpoint_config(),
        Some(cfg),
        socket,
        runtime,
    )?)
}

/// What the kernel allows a socket buffer to be, from `/proc/sys/net/core/{r,w}mem_max`.
fn kernel_max(name: &str) -> Option<usize> {
    std::fs::read_to_string(format!("/proc/sys/net/core/{name}"))
        .ok()?
        .trim()
        .parse()
        .ok()
}

/// The endpoint's one UDP socket, with receive and send buffers of [`UDP_BUFFER_BYTES`] or, when
/// the kernel caps them lower (`net.core.rmem_max` / `wmem_max`), the cap; logs what was granted.
/// The kernel's default (about 208 KiB) overflows at a few dozen legs of screen frames, and every
/// datagram dropped there costs a retransmission.
pub fn udp_socket(addr: SocketAddr) -> anyhow::Result<std::net::UdpSocket> {
    let socket = socket2::Socket::new(
        socket2::Domain::for_address(addr),
        socket2::Type::DGRAM,
        Some(socket2::Protocol::UDP),
    )?;
    let rmem_max = kernel_max("rmem_max");
    let wmem_max = kernel_max("wmem_max");
    let want_recv = rmem_max.map_or(UDP_BUFFER_BYTES, |m| m.min(UDP_BUFFER_BYTES));
    let want_send = wmem_max.map_or(UDP_BUFFER_BYTES, |m| m.min(UDP_BUFFER_BYTES));
    let _ = socket.set_recv_buffer_size(want_recv);
    let _ = socket.set_send_buffer_size(want_send);
    // Linux reports twice the size asked for (its bookkeeping overhead); anything from the
    // request up is what was asked.
    let got_recv = socket.recv_buffer_size().unwrap_or(0);
    let got_send = socket.send_buffer_size().unwrap_or(0);
    tracing::info!(
        %addr,
        recv_buffer = got_recv,
        send_buffer = got_send,
        rmem_max = rmem_max.unwrap_or(0),
        wmem_max = wmem_max.unwrap_or(0),
        "QUIC endpoint: UDP socket buffers"
    );
    if want_recv < UDP_BUFFER_BYTES {
        tracing::warn!(
            rmem_max = want_recv,
            wanted = UDP_BUFFER_BYTES,
            "net.core.rmem_max caps the QUIC receive buffer; under load datagrams may be dropped \
             (raise it with sysctl -w net.core.rmem_max={UDP_BUFFER_BYTES})"
        );
    }
    if addr.is_ipv6() {
        let _ = socket.set_only_v6(false);
    }
    socket.bind(&addr.into())?;
    Ok(socket.into())
}

/// Accepts QUIC connections until `cancel`, running each as a relay leg.
pub async fn serve(endpoint: quinn::Endpoint, relay: Relay, cancel: CancellationToken) {
    loop {
        let incoming = tokio::select! {
            _ = cancel.cancelled() => break,
            i = endpoint.accept() => match i {
                Some(i) => i,
                None => break,
            },
        };
        let relay2 = relay.clone();
        relay.tracker().spawn(async move {
            let remote = incoming.remote_address();
            if let Err(e) = handle(incoming, relay2).await {
                tracing::debug!(%remote, error = %e, "QUIC relay connection failed");
            }
        });
    }
    // Stop accepting, but let the relay close its QUIC legs itself (each gets `ended` and 4011,
    // delivered before its connection closes) before the endpoint closes whatever is left.
    endpoint.set_server_config(None);
    let _ = tokio::time::timeout(SHUTDOWN_WAIT, async {
        while !relay.is_shutting_down() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        relay.tracker().wait().await;
    })
    .await;
    endpoint.close(
        quinn::VarInt::from_u32(CloseCode::ShuttingDown.code() as u32),
        b"shutting down",
    );
    let _ = tokio::time::timeout(Duration::from_secs(1), endpoint.wait_idle()).await;
}

/// How long the endpoint waits, once told to stop, for the relay to close its legs.
const SHUTDOWN_WAIT: Duration = Duration::from_secs(10);

async fn handle(incoming: quinn::Incoming, relay: Relay) -> Result<(), String> {
    let conn = incoming.await.map_err(|e| e.to_string())?;
    let opened = tokio::time::timeout(PRELUDE_TIMEOUT, async {
        let (send, mut recv) = conn.accept_bi().await.map_err(|e| e.to_string())?;
        let mut buf = BytesMut::new();
        loop {
            match parse_ticket_prelude(&buf) {
                Ok(Some((ticket, used))) => {
                    buf.advance(used);
                    return Ok((send, recv, ticket, buf));
                }
                Ok(None) => {}
                Err(e) => return Err(format!("bad ticket prelude: {e}")),
            }
            match recv.read_chunk(8192, true).await {
                Ok(Some(c)) => buf.extend_from_slice(&c.bytes),
                Ok(None) => return Err("stream ended before the ticket".into()),
                Err(e) => return Err(e.to_string()),
            }
        }
    })
    .await;
    let (send, recv, ticket, leftover) = match opened {
        Ok(Ok(v)) => v,
        Ok(Err(e)) => {
            conn.close(
                quinn::VarInt::from_u32(CloseCode::ProtocolError.code() as u32),
                e.as_bytes(),
            );
            return Err(e);
        }
        Err(_) => {
            conn.close(
                quinn::VarInt::from_u32(CloseCode::ProtocolError.code() as u32),
                b"no ticket in time",
            );
            return Err("no ticket in time".into());
        }
    };
    match relay.admit(&ticket) {
        Ok(admission) => {
            let leg = crate::leg::quic(conn, send, recv, leftover, relay.config().max_frame_bytes);
            relay.run_leg(admission, leg).await;
            Ok(())
        }
        Err(e) => {
            let code = e.close_code();
            conn.close(
                quinn::VarInt::from_u32(code.code() as u32),
                e.to_string().as_bytes(),
            );
            Err(e.to_string())
        }
    }
}
