//! The relay as a real `assistd` process: a used ticket stays useless after the relay restarts
//! (kill -9 and SIGTERM), and on SIGTERM every leg, WSS or QUIC, whatever its peer's transport,
//! gets `ended` (`shuttingDown`) and close code 4011 once the drain's grace period (1 s here,
//! `ASSIST_SHUTDOWN_GRACE_SECS`) is over. Real sockets on loopback, real TLS.

mod common;

use assist_client::relay::{
    connect_quic, connect_wss, quic_endpoint, ClientError, ClientEvent, ClientReceiver,
    ClientSender,
};
use assist_policy::Mode;
use assist_relay::{RelayIdentity, Role, TicketAuthority};
use assist_relay_proto::control::RelayControl;
use common::{relay_control, until_serving};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

type Leg = (ClientSender, ClientReceiver);

fn free_ports() -> (SocketAddr, SocketAddr) {
    let tcp = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let udp = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    (tcp.local_addr().unwrap(), udp.local_addr().unwrap())
}

/// `assistd serve` on `https`/`quic`; returns once it serves.
fn start(dir: &Path, https: SocketAddr, quic: SocketAddr) -> Child {
    let mut child = Command::new(env!("CARGO_BIN_EXE_assistd"))
        .args([
            "serve",
            "--listen",
            &https.to_string(),
            "--quic-listen",
            &quic.to_string(),
        ])
        .args(["--metrics-listen", "127.0.0.1:0", "--data-dir"])
        .arg(dir)
        // SIGTERM drains: running sessions carry on until the grace is over (tests/drain.rs).
        .env("ASSIST_SHUTDOWN_GRACE_SECS", "1")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    until_serving(&mut child);
    child
}

fn signal(child: &Child, sig: &str) {
    let ok = Command::new("kill")
        .args([sig, &child.id().to_string()])
        .status()
        .unwrap()
        .success();
    assert!(ok);
}

fn wait_exit(child: &mut Child) -> std::process::ExitStatus {
    let end = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(s) = child.try_wait().unwrap() {
            return s;
        }
        if Instant::now() > end {
            let _ = child.kill();
            panic!("assistd did not exit");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

struct Client {
    https: SocketAddr,
    quic_addr: SocketAddr,
    tls: Arc<rustls::ClientConfig>,
    quic: quinn::Endpoint,
    tickets: TicketAuthority,
}

impl Client {
    fn new(dir: &Path, https: SocketAddr, quic_addr: SocketAddr) -> Client {
        let tls = (*assist_client::tls::client_config(&dir.join("tls/cert.pem")).unwrap()).clone();
        Client {
            https,
            quic_addr,
            quic: quic_endpoint(tls.clone()).unwrap(),
            tls: Arc::new(tls),
            tickets: TicketAuthority::load_or_create(dir, Duration::from_secs(60)).unwrap(),
        }
    }
    async fn join(&self, ticket: &str, quic: bool) -> Result<Leg, ClientError> {
        if quic {
            connect_quic(&self.quic, self.quic_addr, "localhost", ticket).await
        } else {
            connect_wss(self.https, "localhost", self.tls.clone(), ticket).await
        }
    }
}

async fn expect(rx: &mut ClientReceiver, kind: &str) {
    loop {
        let ev = tokio::time::timeout(Duration::from_secs(10), rx.recv())
            .await
            .expect("an event in time")
            .expect("no client error");
        if let Some(c) = relay_control(&ev) {
            if serde_json::to_value(&c).unwrap()["type"] == kind {
                return;
            }
        }
        if let ClientEvent::Closed(c) = ev {
            panic!("closed ({c:?}) while waiting for {kind}");
        }
    }
}

/// Joins a pair for `relay` and waits until both legs are paired.
async fn pair(
    c: &Client,
    relay: &RelayIdentity,
    sid: &str,
    hq: bool,
    sq: bool,
) -> (Leg, Leg, [String; 2]) {
    let ht = c
        .tickets
        .mint(sid, Role::Helper, Mode::FullControl, true, relay);
    let st = c
        .tickets
        .mint(sid, Role::Sharer, Mode::FullControl, true, relay);
    let mut h = c.join(&ht, hq).await.unwrap();
    expect(&mut h.1, "joined").await;
    let mut s = c.join(&st, sq).await.unwrap();
    expect(&mut s.1, "paired").await;
    expect(&mut h.1, "paired").await;
    (h, s, [ht, st])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_used_ticket_is_useless_after_the_relay_restarts() {
    for sig in ["-KILL", "-TERM"] {
        let dir = tempfile::tempdir().unwrap();
        let (https, quic) = free_ports();
        let mut child = start(dir.path(), https, quic);
        let first = RelayIdentity::read_published(dir.path()).unwrap();
        let c = Client::new(dir.path(), https, quic);
        let (_h, _s, [ht, st]) = pair(&c, &first, "used", false, true).await;
        signal(&child, sig);
        wait_exit(&mut child);
        let mut child = start(dir.path(), https, quic);
        let second = RelayIdentity::read_published(dir.path()).unwrap();
        assert_eq!(first.name, second.name, "same address, same name");
        assert_ne!(first.instance, second.instance, "a new run, a new instance");
        // Both used tickets, replayed within their life, over either transport: refused.
        for t in [&ht, &st] {
            match c.join(t, false).await {
                Err(ClientError::Rejected { status, .. }) => assert_eq!(status, 401, "after {sig}"),
                x => panic!("a used ticket joined again after {sig}: {:?}", x.is_ok()),
            }
            let (_tx, mut rx) = c.join(t, true).await.unwrap();
            let code = loop {
                match tokio::time::timeout(Duration::from_secs(10), rx.recv())
                    .await
                    .unwrap()
                {
                    Ok(ClientEvent::Closed(code)) => break code,
                    Ok(ev) => assert!(
                        relay_control(&ev).is_none(),
                        "after {sig}: {:?}",
                        relay_control(&ev)
                    ),
                    Err(e) => panic!("{e}"),
                }
            };
            assert_eq!(code, Some(4001), "after {sig}");
        }
        // The restarted relay works: tickets for its new identity pair.
        let _ = pair(&c, &second, "fresh", true, false).await;
        signal(&child, "-TERM");
        assert!(wait_exit(&mut child).success());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_gives_every_leg_shutting_down() {
    let dir = tempfile::tempdir().unwrap();
    let (https, quic) = free_ports();
    for round in 0..3 {
        let mut child = start(dir.path(), https, quic);
        let relay = RelayIdentity::read_published(dir.path()).unwrap();
        let c = Client::new(dir.path(), https, quic);
        let mut legs = Vec::new();
        for (i, (hq, sq)) in [(false, false), (true, false), (false, true), (true, true)]
            .into_iter()
            .cycle()
            .take(8)
            .enumerate()
        {
            let (h, s, _) = pair(&c, &relay, &format!("r{round}-{i}"), hq, sq).await;
            legs.push((format!("pair {i} helper (quic {hq}, peer quic {sq})"), h));
            legs.push((format!("pair {i} sharer (quic {sq}, peer quic {hq})"), s));
        }
        let watchers: Vec<_> = legs
            .into_iter()
            .map(|(name, (tx, mut rx))| {
                tokio::spawn(async move {
                    let _tx = tx;
                    let mut ended = None;
                    loop {
                        match tokio::time::timeout(Duration::from_secs(15), rx.recv()).await {
                            Ok(Ok(ClientEvent::Closed(code))) => return (name, ended, code),
                            Ok(Ok(ev)) => {
                                if let Some(RelayControl::Ended { reason }) = relay_control(&ev) {
                                    ended = Some(reason);
                                }
                            }
                            Ok(Err(e)) => return (format!("{name}: {e}"), ended, None),
                            Err(_) => return (format!("{name}: no close in 15 s"), ended, None),
                        }
                    }
                })
            })
            .collect();
        signal(&child, "-TERM");
        for w in watchers {
            let (name, ended, code) = w.await.unwrap();
            assert_eq!(
                (ended.as_deref(), code),
                (Some("shuttingDown"), Some(4011)),
                "round {round}: {name}"
            );
        }
        assert!(wait_exit(&mut child).success(), "round {round}");
    }
}
