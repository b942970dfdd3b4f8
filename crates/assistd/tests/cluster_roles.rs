//! Cluster mode with nodes of different roles, on real services on loopback (one Redis, one
//! PostgreSQL database): two brokers (`--role broker`) and a relay-only node carrying a session
//! to its report row; a node whose keys differ from the cluster's refused at start; a node
//! draining while its session carries on and new sessions go elsewhere.
//!
//! Every node reads the shared keys from `[keys]` files (the way a deployment gives them), and
//! the tests mint tokens with the shared dev issuer key. Skipped (with a loud message) when
//! `redis-server` or PostgreSQL's binaries are missing, unless CI requires them.

mod common;

use assist_client::relay::{ClientEvent, ClientReceiver, ClientSender};
use assist_client::signal::SignalClient;
use assist_live_redis::{NodeRecord, Registry};
use assist_relay_proto::frame::{Channel, Frame, FLAG_KEYFRAME};
use assist_store::StoreUrl;
use assistd::config::{ClusterSettings, KeyFiles, Role};
use common::*;
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

const REPORT: &str = "/beta/deviceManagement/reports/getRemoteAssistanceSessionsReport";

/// Redis's URL (a fresh database) and a fresh PostgreSQL database, or `None` to skip.
fn redis_and_postgres() -> Option<(String, String)> {
    let redis = assist_testkit::RedisInstance::shared()?;
    let pg = assist_testkit::PostgresInstance::shared()?;
    Some((redis.fresh_url(), pg.fresh_database()))
}

/// A set of the keys a cluster shares, made in `dir`, given to nodes as `[keys]` files.
fn make_keys(dir: &Path) -> KeyFiles {
    std::fs::create_dir_all(dir).unwrap();
    assist_identity::DevIssuer::load_or_create(dir).unwrap();
    assist_relay::TicketAuthority::load_or_create(dir, assist_relay::ticket::DEFAULT_TTL).unwrap();
    let mut code = [0u8; 32];
    getrandom::fill(&mut code).unwrap();
    std::fs::write(dir.join(assistd::signal::CODE_KEY_FILE), code).unwrap();
    KeyFiles {
        relay_ticket: Some(dir.join(assist_relay::ticket::KEY_FILE)),
        signal_code: Some(dir.join(assistd::signal::CODE_KEY_FILE)),
        dev_issuer: Some(dir.join(assist_identity::dev_issuer::KEY_FILE)),
    }
}

/// One node's settings: its own data directory under `root`, the cluster's Redis and
/// PostgreSQL, `keys`, and heartbeats every `heartbeat`.
struct Cluster {
    root: PathBuf,
    redis: String,
    pg: String,
    keys: KeyFiles,
    heartbeat: Duration,
}

impl Cluster {
    /// A cluster below `root` with keys of its own, on `redis` and `pg`.
    fn new(root: &Path, redis: String, pg: String, heartbeat: Duration) -> Cluster {
        Cluster {
            root: root.to_path_buf(),
            redis,
            pg,
            keys: make_keys(&root.join("keys")),
            heartbeat,
        }
    }

    fn settings(&self, node: &str, role: Role) -> assistd::Settings {
        let mut s = assistd::Settings::ephemeral(&self.root.join(node));
        s.role = role;
        s.store = StoreUrl::Postgres(self.pg.clone());
        s.keys = self.keys.clone();
        s.cluster = Some(ClusterSettings {
            redis_url: self.redis.clone(),
            node_id: node.to_owned(),
            heartbeat: self.heartbeat,
            stale_session_grace: ClusterSettings::STALE_SESSION_GRACE,
        });
        s
    }

    /// Starts node `node`; its test handle mints tokens with the cluster's dev issuer key.
    async fn start(&self, node: &str, role: Role) -> TestServer {
        self.start_with(self.settings(node, role)).await
    }

    async fn start_with(&self, settings: assistd::Settings) -> TestServer {
        let mut t = TestServer::start_with(settings).await;
        if let Some(dev) = &self.keys.dev_issuer {
            t.dev = assist_identity::DevIssuer::load(dev).unwrap();
        }
        t
    }

    async fn registry(&self) -> Registry {
        Registry::connect(&self.redis, "test-observer", Default::default())
            .await
            .unwrap()
    }

    /// Polls the registry until `done` holds for the nodes alive (records by id).
    async fn wait_registry(&self, what: &str, done: impl Fn(&[NodeRecord]) -> bool) {
        let registry = self.registry().await;
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let alive: Vec<NodeRecord> = registry
                .nodes()
                .await
                .unwrap()
                .into_iter()
                .filter_map(|(r, alive)| alive.then_some(r))
                .collect();
            if done(&alive) {
                return;
            }
            assert!(Instant::now() < deadline, "{what}: registry {alive:?}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Waits until `n` nodes are alive, then two heartbeats (each node reads the registry on
    /// its own heartbeat).
    async fn wait_alive(&self, n: usize) {
        self.wait_registry(&format!("{n} nodes alive"), |r| r.len() == n)
            .await;
        tokio::time::sleep(self.heartbeat * 2).await;
    }
}

fn relay_port(active: &Value) -> u16 {
    active["relay"]["address"]
        .as_str()
        .and_then(|a| a.rsplit(':').next())
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("no relay address in {active}"))
}

/// helen on `hs` issues a code, sam on `ss` redeems it, helen asks for full control and sam
/// consents: returns both connections, the session id and both `sessionActive` messages.
async fn active_session(
    hs: &TestServer,
    ss: &TestServer,
) -> (SignalClient, SignalClient, String, Value, Value) {
    let mut h = user_client(hs, "helen@contoso.com").await;
    let mut sh = user_client(ss, "sam@contoso.com").await;
    let sid = pair_and_consent_to(&mut h, &mut sh, "fullControl").await;
    let h_active = expect_signal(&mut h, "sessionActive").await;
    let s_active = expect_signal(&mut sh, "sessionActive").await;
    (h, sh, sid, h_active, s_active)
}

/// Both legs on `relay` with the tickets of `sessionActive`; returns (helper, sharer) legs.
async fn legs(
    relay: &TestServer,
    h_active: &Value,
    s_active: &Value,
) -> (
    (ClientSender, ClientReceiver),
    (ClientSender, ClientReceiver),
) {
    wss_legs(
        relay,
        h_active["relay"]["ticket"].as_str().unwrap(),
        s_active["relay"]["ticket"].as_str().unwrap(),
    )
    .await
}

/// Sends `frame` on `tx` and waits until `rx` receives it.
async fn flows(tx: &mut ClientSender, rx: &mut ClientReceiver, frame: &Frame) {
    tx.send(frame).await.unwrap();
    loop {
        match tokio::time::timeout(Duration::from_secs(10), rx.recv())
            .await
            .expect("a frame within 10 s")
            .unwrap()
        {
            ClientEvent::Frame(f) if f.header.channel == frame.header.channel => {
                assert_eq!(f.bytes, frame.bytes);
                return;
            }
            ClientEvent::Frame(_) => continue,
            ClientEvent::Closed(c) => panic!("the relay closed the leg ({c:?})"),
        }
    }
}

/// Reads `rx` until the leg closes; returns the close code.
async fn closed(rx: &mut ClientReceiver, within: Duration) -> Option<u16> {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        match tokio::time::timeout_at(deadline, rx.recv())
            .await
            .expect("the leg closes in time")
        {
            Ok(ClientEvent::Closed(code)) => return code,
            Ok(ClientEvent::Frame(_)) => continue,
            Err(_) => return None,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_brokers_and_a_relay_node_carry_a_session_to_its_report_row() {
    let Some((redis, pg)) = redis_and_postgres() else {
        return;
    };
    let root = tempfile::tempdir().unwrap();
    let cluster = Cluster::new(root.path(), redis, pg, Duration::from_millis(500));
    let b1 = cluster.start("broker-1", Role::Broker).await;
    let b2 = cluster.start("broker-2", Role::Broker).await;
    let relay = cluster.start("relay-1", Role::Relay).await;
    assert!(relay.server.keys_fingerprint.is_none(), "no broker keys");
    cluster.wait_alive(3).await;

    // The relay node's record: a relay only, reached at its listeners.
    let records = cluster.registry().await.nodes().await.unwrap();
    let r = &records
        .iter()
        .find(|(r, _)| r.node_id == "relay-1")
        .expect("the relay node is registered")
        .0;
    assert!(r.roles.relay && !r.roles.broker, "{r:?}");
    let ad = r.relay.as_ref().expect("a relay advertisement");
    let identity = relay.server.relay.as_ref().unwrap().identity();
    assert_eq!((&ad.name, &ad.inst), (&identity.name, &identity.instance));
    assert_eq!(
        ad.address,
        format!("localhost:{}", relay.server.https_addr.port())
    );
    let quic = relay.server.quic_addr.expect("a QUIC socket").port();
    assert_eq!(ad.quic_addr, Some(format!("localhost:{quic}")));
    for b in ["broker-1", "broker-2"] {
        let (rec, _) = records.iter().find(|(r, _)| r.node_id == b).unwrap();
        assert!(rec.roles.broker && !rec.roles.relay && rec.relay.is_none());
    }

    let admin = help_desk_tenant(&b1).await;
    // Helper on broker 1 (the owner), sharer on broker 2, relay on the relay node.
    let (mut h, mut sh, sid, h_active, s_active) = active_session(&b1, &b2).await;
    for a in [&h_active, &s_active] {
        assert_eq!(relay_port(a), relay.server.https_addr.port(), "{a}");
        assert_eq!(a["relay"]["quicAddr"], format!("localhost:{quic}"), "{a}");
    }
    let ((mut htx, mut hrx), (mut stx, mut srx)) = legs(&relay, &h_active, &s_active).await;
    let screen = Frame::new(Channel::Screen, FLAG_KEYFRAME, &[7u8; 3000]);
    flows(&mut stx, &mut hrx, &screen).await;
    flows(&mut htx, &mut srx, &Frame::new(Channel::Input, 0, b"click")).await;
    // The relay's load reaches the registry.
    cluster
        .wait_registry("the relay session in the load", |r| {
            r.iter()
                .any(|n| n.node_id == "relay-1" && n.load.relay_sessions == 1)
        })
        .await;
    // A downgrade on the owner (relaySetMode to the relay node); the session carries on.
    h.send(&json!({"id": 3, "type": "requestMode", "sessionId": sid, "mode": "viewOnly"}))
        .await
        .unwrap();
    expect_signal(&mut h, "modeChanged").await;
    flows(&mut stx, &mut hrx, &screen).await;

    // The sharer ends it on broker 2: the owner tells the relay node, the legs close, and the
    // relay node's counters reach the record through the owner.
    sh.send(&json!({"id": 3, "type": "endSession", "sessionId": sid}))
        .await
        .unwrap();
    let ended = expect_signal(&mut h, "sessionEnded").await;
    assert_eq!(ended["reason"], "ended", "{ended}");
    assert_eq!(closed(&mut hrx, Duration::from_secs(10)).await, Some(4000));
    // An Intune Administrator (`wids`) may read reports with no role assignment.
    let mut reader = request("contoso", &["DeviceManagementServiceConfig.Read.All"]);
    reader.directory_roles = vec![assist_identity::INTUNE_ADMINISTRATOR.to_owned()];
    let token = b2.dev.mint(&reader).unwrap();
    let columns = [
        "id",
        "relayBytesSharerToHelper",
        "relayBytesHelperToSharer",
        "endReason",
    ];
    let deadline = Instant::now() + Duration::from_secs(10);
    let row = loop {
        let (st, b) = send(
            b2.client
                .post(b2.url(REPORT))
                .bearer_auth(&token)
                .json(&json!({"select": columns})),
        )
        .await;
        assert_eq!(st, 200, "{b}");
        let row = b["Values"]
            .as_array()
            .and_then(|rows| rows.iter().find(|r| r[0] == sid.as_str()))
            .cloned();
        if let Some(row) = row.filter(|r| r[1].is_number()) {
            break row;
        }
        assert!(Instant::now() < deadline, "no relay counters in {b}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let n = |i: usize| row[i].as_u64().unwrap_or(0);
    assert!(n(1) >= 3000, "screen bytes sharer → helper: {row}");
    assert!(n(2) >= 5, "input bytes helper → sharer: {row}");
    assert_eq!(row[3], "ended", "{row}");

    // A leg that leaves the relay node ends the session on its owner (`legLeft`).
    let (mut h, mut sh, _sid, h_active, s_active) = active_session(&b1, &b2).await;
    let ((mut htx, mut hrx), (mut stx, _srx)) = legs(&relay, &h_active, &s_active).await;
    flows(&mut stx, &mut hrx, &screen).await;
    htx.close().await;
    drop((htx, hrx));
    for c in [&mut h, &mut sh] {
        expect_ended(c, "disconnected", "helper").await;
    }
    drop(admin);
    relay.server.shutdown().await;
    b2.server.shutdown().await;
    b1.server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_whose_keys_differ_from_the_clusters_is_refused_and_the_first_keys_win() {
    let Some((redis, pg)) = redis_and_postgres() else {
        return;
    };
    let root = tempfile::tempdir().unwrap();
    let cluster = Cluster::new(root.path(), redis, pg, Duration::from_millis(500));
    let other = make_keys(&root.path().join("other-keys"));
    let first = cluster.start("broker-1", Role::Broker).await;

    let refused = |mut settings: assistd::Settings, keys: KeyFiles| async move {
        settings.keys = keys;
        let e = assistd::start(settings)
            .await
            .err()
            .expect("the node is refused");
        assert!(
            e.downcast_ref::<assistd::keys::KeysDiffer>().is_some(),
            "{e:#}"
        );
        format!("{e:#}")
    };
    // A relay node with another ticket key.
    let e = refused(cluster.settings("relay-x", Role::Relay), other.clone()).await;
    assert!(
        e.contains("this node's relay-ticket key differs from the cluster's")
            && e.contains("give every node the same [keys] files")
            && e.contains("keys.relay_ticket_file"),
        "{e}"
    );
    // A broker with the cluster's ticket key but another code key.
    let e = refused(
        cluster.settings("broker-x", Role::Broker),
        KeyFiles {
            signal_code: other.signal_code.clone(),
            ..cluster.keys.clone()
        },
    )
    .await;
    assert!(e.contains("signal-code key"), "{e}");
    // And a broker with the dev issuer off, where the cluster has it on.
    let mut no_dev = cluster.settings("broker-y", Role::Broker);
    no_dev.auth.dev_issuer = false;
    refused(no_dev, cluster.keys.clone()).await;

    // The refused nodes never joined; nodes with the first node's keys do.
    let relay = cluster.start("relay-1", Role::Relay).await;
    let second = cluster.start("broker-2", Role::Broker).await;
    assert_eq!(
        second.server.keys_fingerprint, first.server.keys_fingerprint,
        "the same keys"
    );
    cluster.wait_alive(3).await;
    let ids: Vec<String> = cluster
        .registry()
        .await
        .nodes()
        .await
        .unwrap()
        .into_iter()
        .map(|(r, _)| r.node_id)
        .collect();
    assert_eq!(ids, ["broker-1", "broker-2", "relay-1"]);
    relay.server.shutdown().await;
    second.server.shutdown().await;
    first.server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_draining_node_keeps_its_session_until_the_grace_ends_and_gets_no_new_one() {
    let Some((redis, pg)) = redis_and_postgres() else {
        return;
    };
    let root = tempfile::tempdir().unwrap();
    // Heartbeats 2 s apart: the drain must reach the registry well before the next one.
    let cluster = Cluster::new(root.path(), redis, pg, Duration::from_secs(2));
    // Placement ties go to the smallest id: node 3 ("node-a") gets every relay session of
    // the idle cluster.
    let n1 = cluster.start("node-b", Role::All).await;
    let n2 = cluster.start("node-c", Role::All).await;
    let grace = Duration::from_secs(6);
    let mut s3 = cluster.settings("node-a", Role::All);
    s3.shutdown_grace = grace;
    let n3 = cluster.start_with(s3).await;
    let admin = help_desk_tenant(&n1).await;
    cluster.wait_alive(3).await;

    // A session on node 3 with its relay there.
    let (mut h, mut sh, _sid, h_active, s_active) = active_session(&n3, &n3).await;
    assert_eq!(relay_port(&h_active), n3.server.https_addr.port());
    let ((_htx, mut hrx), (mut stx, _srx)) = legs(&n3, &h_active, &s_active).await;
    let screen = Frame::new(Channel::Screen, FLAG_KEYFRAME, b"pixels");
    flows(&mut stx, &mut hrx, &screen).await;

    // Node 3 drains (what SIGTERM does), with a long grace.
    let metrics = n3.server.metrics_addr;
    let n3_port = n3.server.https_addr.port();
    let began = Instant::now();
    let draining = tokio::spawn(n3.server.shutdown());
    cluster
        .wait_registry("node 3 draining", |r| {
            r.iter().any(|n| n.node_id == "node-a" && n.draining)
        })
        .await;
    assert!(
        began.elapsed() < Duration::from_secs(1),
        "the registry heard of the drain at once, not at the next heartbeat: {:?}",
        began.elapsed()
    );
    let ready = reqwest::get(format!("http://{metrics}/readyz"))
        .await
        .unwrap();
    assert_eq!(ready.status(), 503);
    // The session on node 3 carries on.
    flows(&mut stx, &mut hrx, &screen).await;
    // A new session (on node 1) is placed on another node's relay.
    let (mut h1, sh1, _sid1, h1_active, s1_active) = active_session(&n1, &n1).await;
    for a in [&h1_active, &s1_active] {
        assert_ne!(relay_port(a), n3_port, "not on the draining node: {a}");
        assert!(
            [n1.server.https_addr.port(), n2.server.https_addr.port()].contains(&relay_port(a)),
            "{a}"
        );
    }
    let relay_node = if relay_port(&h1_active) == n1.server.https_addr.port() {
        &n1
    } else {
        &n2
    };
    let ((_h1tx, mut h1rx), (mut s1tx, _s1rx)) = legs(relay_node, &h1_active, &s1_active).await;
    flows(&mut s1tx, &mut h1rx, &screen).await;

    // At the grace's end node 3's session ends: shuttingDown on both sides, relay legs 4011.
    for c in [&mut h, &mut sh] {
        expect_ended(c, "shuttingDown", "broker").await;
    }
    assert!(
        began.elapsed() >= grace - Duration::from_millis(500),
        "the session had the grace period: {:?}",
        began.elapsed()
    );
    assert_eq!(closed(&mut hrx, Duration::from_secs(5)).await, Some(4011));
    draining.await.unwrap();
    // Node 1's session is untouched.
    flows(&mut s1tx, &mut h1rx, &screen).await;
    h1.send(&json!({"id": 9, "type": "ping"})).await.unwrap();
    expect_signal(&mut h1, "pong").await;
    drop((admin, sh1));
    n2.server.shutdown().await;
    n1.server.shutdown().await;
}
