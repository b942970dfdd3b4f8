//! Establishing pairs: through the relay (tickets, WSS or QUIC, `paired`), or through a TCP proxy
//! to the generator's own TLS backend (the HAProxy baseline and the direct-TLS baseline).

use crate::parse::{Event, Parser};
use crate::traffic::{feed, Leg, Rx, Tx};
use anyhow::{anyhow, bail, Context};
use assist_client::relay::{connect_wss, ClientReceiver, ClientSender};
use assist_policy::Mode;
use assist_relay_proto::control::RelayControl;
use assist_relay_proto::frame::{Channel, Frame};
use assist_relay_proto::quic::encode_ticket_prelude;
use assist_ticket::{Role, TicketAuthority, DEFAULT_TTL};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, Semaphore};
use tokio::time::timeout;

/// Every connect, handshake and pairing step is bounded by this.
pub const STEP_TIMEOUT: Duration = Duration::from_secs(10);

/// The TLS server name the generator uses (the self-signed certificate's SAN).
pub const SERVER_NAME: &str = "localhost";

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

/// A client TLS configuration trusting the certificates in `ca` (PEM).
pub fn client_tls(ca: &Path) -> anyhow::Result<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    for c in
        CertificateDer::pem_file_iter(ca).with_context(|| format!("reading {}", ca.display()))?
    {
        roots.add(c.with_context(|| format!("parsing {}", ca.display()))?)?;
    }
    Ok(rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth())
}

fn server_tls(cert: &Path, key: &Path) -> anyhow::Result<rustls::ServerConfig> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .with_context(|| format!("reading {}", cert.display()))?
        .collect::<Result<_, _>>()
        .with_context(|| format!("parsing {}", cert.display()))?;
    let key = PrivateKeyDer::from_pem_file(key)
        .with_context(|| format!("reading the key {}", key.display()))?;
    Ok(rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(certs, key)?)
}

fn describe<D>(conn: &rustls::ConnectionCommon<D>) -> String {
    format!(
        "{:?} {:?}",
        conn.protocol_version()
            .map(|v| format!("{v:?}"))
            .unwrap_or_default(),
        conn.negotiated_cipher_suite()
            .map(|s| s.suite())
            .map(|s| format!("{s:?}"))
            .unwrap_or_default()
    )
    .replace('"', "")
}

async fn tls_connect(
    addr: SocketAddr,
    tls: Arc<rustls::ClientConfig>,
) -> anyhow::Result<tokio_rustls::client::TlsStream<TcpStream>> {
    let tcp = timeout(STEP_TIMEOUT, TcpStream::connect(addr))
        .await
        .map_err(|_| anyhow!("TCP connect to {addr} timed out"))?
        .with_context(|| format!("TCP connect to {addr}"))?;
    tcp.set_nodelay(true)?;
    let name = ServerName::try_from(SERVER_NAME)?;
    timeout(
        STEP_TIMEOUT,
        tokio_rustls::TlsConnector::from(tls).connect(name, tcp),
    )
    .await
    .map_err(|_| anyhow!("TLS handshake with {addr} timed out"))?
    .with_context(|| format!("TLS handshake with {addr}"))
}

/// UDP socket buffers of the generator's QUIC endpoints. The kernel default (`net.core.rmem_default`,
/// often 208 KiB) overflows at a few hundred Mbit/s of QUIC and the losses would be charged to the relay.
/// Capped by `net.core.rmem_max` / `wmem_max`.
const UDP_BUFFER: usize = 8 * 1024 * 1024;

/// A client endpoint like `assist_client::relay::quic_endpoint` (ALPN, the relay's transport settings),
/// on a socket with [`UDP_BUFFER`]-sized buffers.
fn quic_endpoint(mut tls: rustls::ClientConfig) -> anyhow::Result<quinn::Endpoint> {
    use socket2::{Domain, Protocol, Socket, Type};
    tls.alpn_protocols = vec![assist_relay_proto::quic::ALPN.to_vec()];
    let crypto = quinn::crypto::rustls::QuicClientConfig::try_from(tls)?;
    let mut cfg = quinn::ClientConfig::new(Arc::new(crypto));
    cfg.transport_config(Arc::new(assist_client::relay::transport_config()));
    let sock = Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP))?;
    let _ = sock.set_recv_buffer_size(UDP_BUFFER);
    let _ = sock.set_send_buffer_size(UDP_BUFFER);
    sock.bind(&SocketAddr::from(([127, 0, 0, 1], 0)).into())?;
    let mut ep = quinn::Endpoint::new(
        assist_client::relay::endpoint_config(),
        None,
        sock.into(),
        Arc::new(quinn::TokioRuntime),
    )?;
    ep.set_default_client_config(cfg);
    Ok(ep)
}

/// Which transport each leg of a relay pair uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Transport {
    /// Both legs over WSS.
    Wss,
    /// Both legs over QUIC.
    Quic,
    /// Helper over QUIC, sharer over WSS.
    Mixed,
}

/// Where the relay is and how to reach it.
pub struct RelayTarget {
    /// HTTPS (WSS) address.
    pub addr: SocketAddr,
    /// QUIC address.
    pub quic_addr: SocketAddr,
    /// The data directory holding the relay-ticket key.
    pub data_dir: std::path::PathBuf,
    /// The CA (the relay's certificate).
    pub ca: std::path::PathBuf,
    /// Transport.
    pub transport: Transport,
    /// Pairs connecting at once.
    pub concurrency: usize,
}

/// Read buffer size for a leg receiving frames of `frame_bytes`.
pub fn read_capacity(frame_bytes: usize) -> usize {
    (frame_bytes + 64).clamp(8 * 1024, 64 * 1024)
}

async fn wss_leg(
    addr: SocketAddr,
    tls: Arc<rustls::ClientConfig>,
    ticket: &str,
    cap: usize,
) -> anyhow::Result<Leg> {
    let (tx, rx) = timeout(STEP_TIMEOUT, connect_wss(addr, SERVER_NAME, tls, ticket))
        .await
        .map_err(|_| anyhow!("WSS join at {addr} timed out"))??;
    let (
        ClientSender::Ws { io: w, .. },
        ClientReceiver::Ws {
            io: r, buf, pong, ..
        },
    ) = (tx, rx)
    else {
        bail!("connect_wss returned a non-WebSocket leg");
    };
    // The load generator reads and writes on its own (and leaves pings unanswered).
    drop(pong);
    let Ok(w) = Arc::try_unwrap(w) else {
        bail!("the WSS write half is still shared");
    };
    let w = w.into_inner();
    Ok(Leg {
        tx: Tx::Stream {
            io: Box::new(w),
            ws: true,
        },
        rx: Rx::Stream(Box::new(r), Parser::new(true, cap, &buf)),
    })
}

async fn quic_leg(
    ep: &quinn::Endpoint,
    addr: SocketAddr,
    ticket: &str,
    cap: usize,
) -> anyhow::Result<Leg> {
    let fut = async {
        let conn = ep.connect(addr, SERVER_NAME)?.await?;
        let (mut send, recv) = conn.open_bi().await?;
        send.write_chunk(encode_ticket_prelude(ticket)).await?;
        anyhow::Ok(Leg {
            tx: Tx::Quic {
                conn: conn.clone(),
                send,
            },
            rx: Rx::Quic {
                conn,
                recv,
                parser: Parser::new(false, cap.min(16 * 1024), &[]),
            },
        })
    };
    timeout(STEP_TIMEOUT, fut)
        .await
        .map_err(|_| anyhow!("QUIC join at {addr} timed out"))?
        .with_context(|| format!("QUIC join at {addr}"))
}

/// Reads a leg until `paired` (relay) or any control frame (`hello`, baseline).
async fn wait_control(rx: &mut Rx, want_paired: bool) -> anyhow::Result<()> {
    let done = |ev: &Event| -> anyhow::Result<bool> {
        match ev {
            Event::Control(Some(RelayControl::Paired { .. })) => Ok(true),
            Event::Control(Some(RelayControl::Ended { reason })) => {
                bail!("the relay ended the session before pairing: {reason}")
            }
            Event::Control(_) => Ok(!want_paired),
            Event::Close(code) => bail!("closed before pairing with code {code:?}"),
            _ => Ok(false),
        }
    };
    let fut = async {
        match rx {
            Rx::Stream(io, parser) => loop {
                while let Some(ev) = parser.next_event().map_err(|e| anyhow!(e))? {
                    if done(&ev)? {
                        return Ok(());
                    }
                }
                let n = io.read(parser.space()).await?;
                if n == 0 {
                    bail!("connection closed before pairing");
                }
                parser.filled(n);
            },
            Rx::Quic { recv, parser, .. } => {
                let mut found: anyhow::Result<bool> = Ok(false);
                loop {
                    let chunk = recv
                        .read_chunk(64 * 1024, true)
                        .await
                        .map_err(|e| anyhow!("QUIC stream closed before pairing: {e}"))?
                        .ok_or_else(|| anyhow!("QUIC stream finished before pairing"))?;
                    feed(parser, &chunk.bytes, |ev| {
                        if matches!(found, Ok(false)) {
                            found = done(&ev);
                        }
                        true
                    })
                    .map_err(|e| anyhow!(e))?;
                    match std::mem::replace(&mut found, Ok(false)) {
                        Ok(true) => return Ok(()),
                        Ok(false) => {}
                        Err(e) => return Err(e),
                    }
                }
            }
        }
    };
    timeout(STEP_TIMEOUT, fut)
        .await
        .map_err(|_| anyhow!("no `paired` within {STEP_TIMEOUT:?}"))?
}

/// Probes the relay's HTTPS port once for the negotiated TLS version and suite.
pub async fn probe_tls(addr: SocketAddr, tls: Arc<rustls::ClientConfig>) -> String {
    match tls_connect(addr, tls).await {
        Ok(s) => describe(s.get_ref().1),
        Err(e) => format!("TLS probe failed: {e}"),
    }
}

/// Connects `pairs` relay pairs (sharer, helper) and waits for both `paired`.
pub async fn relay_pairs(
    t: &RelayTarget,
    pairs: usize,
    frame_bytes: usize,
    endpoints: &mut Vec<quinn::Endpoint>,
) -> anyhow::Result<Vec<(Leg, Leg)>> {
    let tls = client_tls(&t.ca)?;
    let authority = Arc::new(
        TicketAuthority::load_or_create(&t.data_dir, DEFAULT_TTL * 10).map_err(|e| {
            anyhow!(
                "loading the relay-ticket key in {}: {e}",
                t.data_dir.display()
            )
        })?,
    );
    // Tickets name the running relay (its address and this run's instance id), which it
    // publishes in its data directory.
    let identity = Arc::new(
        assist_ticket::RelayIdentity::read_published(&t.data_dir).map_err(|e| {
            anyhow!(
                "reading the relay identity in {} (is the relay running?): {e}",
                t.data_dir.display()
            )
        })?,
    );
    let quic_legs = match t.transport {
        Transport::Wss => 0,
        Transport::Quic => 2 * pairs,
        Transport::Mixed => pairs,
    };
    for _ in 0..quic_legs.div_ceil(256) {
        endpoints.push(quic_endpoint(tls.clone())?);
    }
    let tls = Arc::new(tls);
    let run_id = format!(
        "lg{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis())
            .unwrap_or(0)
    );
    let sem = Arc::new(Semaphore::new(t.concurrency.max(1)));
    let cap = read_capacity(frame_bytes);
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..pairs {
        let sem = sem.clone();
        let authority = authority.clone();
        let identity = identity.clone();
        let tls = tls.clone();
        let sid = format!("{run_id}-{i}");
        let (addr, qaddr, transport) = (t.addr, t.quic_addr, t.transport);
        let ep = endpoints
            .get(if endpoints.is_empty() {
                0
            } else {
                i % endpoints.len()
            })
            .cloned();
        tasks.spawn(async move {
            let _permit = sem.acquire().await;
            let st = authority.mint(&sid, Role::Sharer, Mode::FullControl, true, &identity);
            let ht = authority.mint(&sid, Role::Helper, Mode::FullControl, true, &identity);
            let leg = |quic: bool, ticket: String| {
                let tls = tls.clone();
                let ep = ep.clone();
                async move {
                    if quic {
                        let ep = ep.ok_or_else(|| anyhow!("no QUIC endpoint"))?;
                        quic_leg(&ep, qaddr, &ticket, cap).await
                    } else {
                        wss_leg(addr, tls, &ticket, cap).await
                    }
                }
            };
            let (s_quic, h_quic) = match transport {
                Transport::Wss => (false, false),
                Transport::Quic => (true, true),
                Transport::Mixed => (false, true),
            };
            let (s, h) = tokio::join!(leg(s_quic, st), leg(h_quic, ht));
            let mut s = s.context("sharer")?;
            let mut h = h.context("helper")?;
            let (a, b) = tokio::join!(wait_control(&mut s.rx, true), wait_control(&mut h.rx, true));
            a.context("sharer")?;
            b.context("helper")?;
            anyhow::Ok((i, s, h))
        });
    }
    let mut out: Vec<Option<(Leg, Leg)>> = (0..pairs).map(|_| None).collect();
    while let Some(r) = tasks.join_next().await {
        let (i, s, h) = r
            .map_err(|e| anyhow!("pairing task failed: {e}"))?
            .map_err(|e| anyhow!("pairing failed: {e:#}"))?;
        out[i] = Some((s, h));
    }
    Ok(out.into_iter().flatten().collect())
}

/// Where the pass-through baseline connects and listens.
pub struct BaselineTarget {
    /// The proxy's front (or the backend itself, for the direct-TLS baseline).
    pub front: SocketAddr,
    /// Where the generator's TLS backend listens.
    pub backend: SocketAddr,
    /// Backend certificate (also trusted by the sharer side).
    pub cert: std::path::PathBuf,
    /// Backend key.
    pub key: std::path::PathBuf,
    /// Connections opened at once.
    pub concurrency: usize,
}

/// Connects `pairs` sharer connections to the front; each connection the backend accepts is a
/// helper. Returns the pairs and the sharer side's negotiated TLS.
pub async fn baseline_pairs(
    t: &BaselineTarget,
    pairs: usize,
    frame_bytes: usize,
) -> anyhow::Result<(Vec<(Leg, Leg)>, String)> {
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(server_tls(&t.cert, &t.key)?));
    let listener = TcpListener::bind(t.backend)
        .await
        .with_context(|| format!("listening on {}", t.backend))?;
    let cap = read_capacity(frame_bytes);
    let (acc_tx, mut acc_rx) = mpsc::channel::<anyhow::Result<Leg>>(pairs.max(1));
    tokio::spawn(async move {
        for _ in 0..pairs {
            let Ok((tcp, _)) = listener.accept().await else {
                return;
            };
            let acceptor = acceptor.clone();
            let acc_tx = acc_tx.clone();
            tokio::spawn(async move {
                let r = async {
                    tcp.set_nodelay(true)?;
                    let tls = timeout(STEP_TIMEOUT, acceptor.accept(tcp))
                        .await
                        .map_err(|_| anyhow!("backend TLS handshake timed out"))??;
                    let (r, w) = tokio::io::split(tls);
                    let mut leg = Leg {
                        tx: Tx::Stream {
                            io: Box::new(w),
                            ws: false,
                        },
                        rx: Rx::Stream(Box::new(r), Parser::new(false, cap, &[])),
                    };
                    wait_control(&mut leg.rx, false)
                        .await
                        .context("backend waiting for the hello frame")?;
                    Ok(leg)
                }
                .await;
                let _ = acc_tx.send(r).await;
            });
        }
    });
    let tls = Arc::new(client_tls(&t.cert)?);
    let sem = Arc::new(Semaphore::new(t.concurrency.max(1)));
    let hello = Frame::new(Channel::Control, 0, br#"{"type":"hello"}"#);
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..pairs {
        let (sem, tls, hello, front) = (sem.clone(), tls.clone(), hello.clone(), t.front);
        tasks.spawn(async move {
            let _permit = sem.acquire().await;
            let mut s = tls_connect(front, tls).await?;
            let info = describe(s.get_ref().1);
            s.write_all(&hello.bytes).await?;
            s.flush().await?;
            let (r, w) = tokio::io::split(s);
            anyhow::Ok((
                i,
                info,
                Leg {
                    tx: Tx::Stream {
                        io: Box::new(w),
                        ws: false,
                    },
                    rx: Rx::Stream(Box::new(r), Parser::new(false, cap, &[])),
                },
            ))
        });
    }
    let mut sharers = Vec::with_capacity(pairs);
    let mut tls_info = String::new();
    while let Some(r) = tasks.join_next().await {
        let (i, info, leg) = r
            .map_err(|e| anyhow!("connect task failed: {e}"))?
            .map_err(|e| anyhow!("sharer connection failed: {e:#}"))?;
        if i == 0 {
            tls_info = info;
        }
        sharers.push(leg);
    }
    let deadline =
        tokio::time::Instant::now() + STEP_TIMEOUT + Duration::from_millis(pairs as u64 * 10);
    let mut out = Vec::with_capacity(pairs);
    for s in sharers {
        let h = tokio::time::timeout_at(deadline, acc_rx.recv())
            .await
            .map_err(|_| {
                anyhow!("the backend did not get {pairs} connections through the front in time")
            })?
            .ok_or_else(|| anyhow!("the backend listener stopped"))??;
        out.push((s, h));
    }
    Ok((out, tls_info))
}
