//! Cluster mode (issue #13) with real services on loopback: one Redis, one PostgreSQL database
//! and three `assistd` nodes sharing the ticket, code and dev-issuer keys.
//!
//! Relay placement is by load (fewest relay sessions), a tie going to the smallest node id: the
//! nodes are named so that node 3 ("node-a…") sorts first, which places every relay session of
//! an idle cluster on node 3 while the helper is on node 1 and the sharer on node 2.
//!
//! Skipped (with a loud message) when `redis-server` or PostgreSQL's binaries are missing,
//! unless CI requires them.

mod common;

use assist_client::relay::ClientEvent;
use assist_client::signal::{SignalClient, SignalEvent};
use assist_relay_proto::frame::{Channel, Frame, FLAG_KEYFRAME};
use assist_store::StoreUrl;
use assist_testkit::RedisInstance;
use assistd::config::ClusterSettings;
use common::*;
use serde_json::{json, Value};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

const HEARTBEAT: Duration = Duration::from_millis(500);
const KEY_FILES: [&str; 3] = [
    assist_identity::dev_issuer::KEY_FILE,
    assist_relay::ticket::KEY_FILE,
    assistd::signal::CODE_KEY_FILE,
];

/// The shared services, or `None` to skip.
fn services() -> Option<(&'static RedisInstance, String)> {
    let redis = RedisInstance::shared()?;
    let pg = assist_testkit::PostgresInstance::shared()?;
    Some((redis, pg.fresh_database()))
}

/// The data directories of a test's nodes, below a temporary root: keys generated once (in
/// `seed`) and copied into every node's directory.
struct NodeDirs {
    root: tempfile::TempDir,
}

impl NodeDirs {
    fn new() -> NodeDirs {
        let root = tempfile::tempdir().unwrap();
        let seed = root.path().join("seed");
        std::fs::create_dir_all(&seed).unwrap();
        assist_identity::DevIssuer::load_or_create(&seed).unwrap();
        assist_relay::TicketAuthority::load_or_create(&seed, assist_relay::ticket::DEFAULT_TTL)
            .unwrap();
        let mut k = [0u8; 32];
        getrandom::fill(&mut k).unwrap();
        std::fs::write(seed.join(assistd::signal::CODE_KEY_FILE), k).unwrap();
        NodeDirs { root }
    }

    /// Node `name`'s data directory, with the seed's keys.
    fn dir(&self, name: &str) -> std::path::PathBuf {
        let seed = self.root.path().join("seed");
        let dir = self.root.path().join(name);
        std::fs::create_dir_all(&dir).unwrap();
        for f in KEY_FILES {
            std::fs::copy(seed.join(f), dir.join(f)).unwrap();
        }
        dir
    }
}

async fn start_node(dir: &Path, redis_url: &str, pg: &str, node_id: &str) -> TestServer {
    start_node_with_grace(
        dir,
        redis_url,
        pg,
        node_id,
        ClusterSettings::STALE_SESSION_GRACE,
    )
    .await
}

async fn start_node_with_grace(
    dir: &Path,
    redis_url: &str,
    pg: &str,
    node_id: &str,
    stale_session_grace: Duration,
) -> TestServer {
    let mut settings = assistd::Settings::ephemeral(dir);
    settings.store = StoreUrl::Postgres(pg.to_owned());
    settings.cluster = Some(ClusterSettings {
        redis_url: redis_url.to_owned(),
        node_id: node_id.to_owned(),
        heartbeat: HEARTBEAT,
        stale_session_grace,
    });
    TestServer::start_with(settings).await
}

/// Waits until the registry lists `n` nodes alive, then one more heartbeat and a margin (every
/// node reads the registry on its own heartbeat).
async fn wait_alive(redis_url: &str, n: usize) {
    let registry = assist_live_redis::Registry::connect(redis_url, "observer", Default::default())
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let alive = registry
            .nodes()
            .await
            .unwrap()
            .iter()
            .filter(|(_, a)| *a)
            .count();
        if alive == n {
            break;
        }
        assert!(Instant::now() < deadline, "{alive} of {n} nodes alive");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(HEARTBEAT * 2).await;
}

/// The directory id of the user `upn`.
async fn user_id(s: &TestServer, admin: &str, upn: &str) -> String {
    let (st, b) = s.get("/beta/users", Some(admin)).await;
    assert_eq!(st, 200, "{b}");
    b["value"]
        .as_array()
        .and_then(|users| users.iter().find(|u| u["userPrincipalName"] == upn))
        .and_then(|u| u["id"].as_str())
        .unwrap_or_else(|| panic!("no user {upn}: {b}"))
        .to_owned()
}

/// `host:port` → the port.
fn port_of(address: &Value) -> u16 {
    address
        .as_str()
        .and_then(|a| a.rsplit(':').next())
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("not host:port: {address}"))
}

async fn relay_frame_flows(
    relay: &TestServer,
    h_ticket: &str,
    s_ticket: &str,
) -> assist_client::relay::ClientReceiver {
    let ((_htx, mut hrx), (mut stx, _srx)) = wss_legs(relay, h_ticket, s_ticket).await;
    let screen = Frame::new(Channel::Screen, FLAG_KEYFRAME, b"pixels");
    stx.send(&screen).await.unwrap();
    assert_eq!(next_screen(&mut hrx).await.bytes, screen.bytes);
    // The sharer's sender stays open as long as the receiver is held by the caller.
    std::mem::forget(stx);
    hrx
}

/// Polls the shared store until session `sid` satisfies `done`.
async fn session_row(
    pg: &str,
    sid: &str,
    within: Duration,
    done: impl Fn(&assist_store::sessions::SessionRow) -> bool,
) -> assist_store::sessions::SessionRow {
    let store = assist_store::Store::open(&StoreUrl::Postgres(pg.to_owned()))
        .await
        .unwrap();
    let deadline = Instant::now() + within;
    loop {
        let rows = store.sessions("contoso").await.unwrap();
        if let Some(r) = rows.into_iter().find(|r| r.id == sid && done(r)) {
            return r;
        }
        assert!(
            Instant::now() < deadline,
            "session {sid} not as expected within {within:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_share_codes_relays_launches_settings_and_facts() {
    let Some((redis, pg)) = services() else {
        return;
    };
    let redis_url = redis.fresh_url();
    let nodes = NodeDirs::new();
    // Node ids sort node 3 first: the idle cluster places relay sessions there.
    let n1 = start_node(&nodes.dir("1"), &redis_url, &pg, "node-b-t1").await;
    let n2 = start_node(&nodes.dir("2"), &redis_url, &pg, "node-c-t1").await;
    let n3 = start_node(&nodes.dir("3"), &redis_url, &pg, "node-a-t1").await;
    let HelpDeskTenant {
        admin,
        role_assignment_id: assignment,
    } = help_desk_tenant_with(&n1, HelpDeskSetup::default()).await;
    wait_alive(&redis_url, 3).await;

    // A code issued on node 1 is redeemed on node 2.
    let mut h = user_client(&n1, "helen@contoso.com").await;
    let mut sh = user_client(&n2, "sam@contoso.com").await;
    h.send(&json!({"id": 1, "type": "requestCode"}))
        .await
        .unwrap();
    let issued = expect_signal(&mut h, "codeIssued").await;
    let sid = issued["sessionId"].as_str().unwrap().to_owned();
    sh.send(&json!({"id": "r1", "type": "redeemCode", "code": issued["code"]}))
        .await
        .unwrap();
    let joined = expect_signal(&mut sh, "sessionJoined").await;
    assert_eq!(joined["peerProfile"]["displayName"], "Helen Helper");
    expect_signal(&mut h, "sessionJoined").await;

    // Mode granted with the sharer's consent, both tickets name node 3's relay.
    h.send(&json!({"id": 2, "type": "requestMode", "sessionId": sid, "mode": "fullControl", "acknowledgeWarnings": ["deviceUnenrolled"]})).await.unwrap();
    expect_signal(&mut sh, "consentRequested").await;
    sh.send(&json!({"id": "r2", "type": "consent", "sessionId": sid, "allow": true}))
        .await
        .unwrap();
    let h_active = expect_signal(&mut h, "sessionActive").await;
    let s_active = expect_signal(&mut sh, "sessionActive").await;
    for a in [&h_active, &s_active] {
        assert_eq!(
            port_of(&a["relay"]["address"]),
            n3.server.https_addr.port(),
            "placed on node 3: {a}"
        );
    }
    let mut hrx = relay_frame_flows(
        &n3,
        h_active["relay"]["ticket"].as_str().unwrap(),
        s_active["relay"]["ticket"].as_str().unwrap(),
    )
    .await;

    // A blockChat PATCH on node 3 reaches both sides (helper on node 1, sharer on node 2).
    n3.patch(SETTINGS, &admin, &json!({"blockChat": true}))
        .await;
    expect_signal(&mut h, "modeChanged").await;
    expect_signal(&mut sh, "modeChanged").await;
    h.send(&json!({"id": 3, "type": "chat", "sessionId": sid, "text": "hi"}))
        .await
        .unwrap();
    assert_eq!(expect_signal(&mut h, "error").await["code"], "chatBlocked");
    n3.patch(SETTINGS, &admin, &json!({"blockChat": false}))
        .await;

    // The sharer ends it on node 2: the helper hears it, the relay on node 3 closes the legs,
    // and the record is closed with the relay's counters.
    sharer_ends_session(&mut h, &mut sh, &sid, &mut hrx).await;
    let row = session_row(&pg, &sid, Duration::from_secs(10), |r| {
        r.state == "ended" && r.body.get("relayBytesSharerToHelper").is_some()
    })
    .await;
    assert_eq!(row.mode, "fullControl");
    assert_eq!(row.end_reason.as_deref(), Some("ended"));
    assert_eq!(row.body["helperEmail"], "helen@contoso.com");
    assert_eq!(row.body["sharerEmail"], "sam@contoso.com");

    // A launch from node 1's admin API reaches the device connected to node 3; the helper's
    // idle connection on node 1 is moved there and hears launchPending.
    let dev = admin_post(&n1, &admin, "/beta/deviceManagement/managedDevices", json!({"azureADDeviceId": "aad-sam", "deviceName": "SAM-PC", "complianceState": "compliant"})).await;
    let dev_id = dev["id"].as_str().unwrap().to_owned();
    let mut d = signal_client(
        &n3,
        &user_token(&n3, "contoso", "sam@contoso.com", Some("aad-sam")),
    )
    .await;
    d.send(&json!({"id": 0, "type": "ping"})).await.unwrap();
    expect_signal(&mut d, "pong").await;
    let mut admin_conn = signal_client(&n1, &admin).await;
    admin_conn
        .send(&json!({"id": 0, "type": "ping"}))
        .await
        .unwrap();
    expect_signal(&mut admin_conn, "pong").await;
    let launch = format!("/beta/deviceManagement/managedDevices/{dev_id}/requestRemoteAssistance");
    let (st, b) = send(n1.client.post(n1.url(&launch)).bearer_auth(&admin)).await;
    assert_eq!(st, 204, "{b}");
    let asked = expect_signal(&mut d, "launchRequested").await;
    let pending = expect_signal(&mut admin_conn, "launchPending").await;
    assert_eq!(asked["sessionId"], pending["sessionId"]);
    d.send(
        &json!({"id": 1, "type": "answerLaunch", "sessionId": asked["sessionId"], "accept": false}),
    )
    .await
    .unwrap();
    expect_signal(&mut admin_conn, "sessionEnded").await;

    // Facts: a role assignment deleted on node 2 is seen by node 1's next decision at once
    // (well within the facts cache's 5 s bound).
    let mut h = user_client(&n1, "helen@contoso.com").await;
    let mut sh = user_client(&n1, "sam@contoso.com").await;
    h.send(&json!({"id": "c", "type": "requestCode"}))
        .await
        .unwrap();
    let issued = expect_signal(&mut h, "codeIssued").await;
    let sid = issued["sessionId"].as_str().unwrap().to_owned();
    sh.send(&json!({"id": "j", "type": "redeemCode", "code": issued["code"]}))
        .await
        .unwrap();
    expect_signal(&mut sh, "sessionJoined").await;
    expect_signal(&mut h, "sessionJoined").await;
    // The first decision loads (and caches) helen's facts on node 1.
    h.send(&json!({"id": 10, "type": "requestMode", "sessionId": sid, "mode": "viewOnly", "acknowledgeWarnings": ["deviceUnenrolled"]})).await.unwrap();
    expect_signal(&mut sh, "consentRequested").await;
    sh.send(&json!({"id": "n", "type": "consent", "sessionId": sid, "allow": true}))
        .await
        .unwrap();
    expect_signal(&mut h, "sessionActive").await;
    let (st, b) = send(
        n2.client
            .delete(n2.url(&format!(
                "/beta/deviceManagement/roleAssignments/{assignment}"
            )))
            .bearer_auth(&admin),
    )
    .await;
    assert_eq!(st, 204, "{b}");
    let changed = Instant::now();
    // The upgrade is decided on fresh facts.
    tokio::time::sleep(Duration::from_millis(200)).await;
    h.send(&json!({"id": 11, "type": "requestMode", "sessionId": sid, "mode": "fullControl", "acknowledgeWarnings": ["deviceUnenrolled"]})).await.unwrap();
    tokio::select! {
        m = expect_signal(&mut h, "error") => assert_eq!(m["code"], "noRoleAssignment", "{m}"),
        m = expect_signal(&mut sh, "consentRequested") => panic!("allowed on stale facts: {m}"),
    }
    assert!(
        changed.elapsed() < Duration::from_secs(3),
        "invalidated at once, not after the 5 s bound: {:?}",
        changed.elapsed()
    );

    // Codes issued on node 1 in a burst, each redeemed on node 2 the moment its helper hears
    // it: every one joins (node 1's directory entry is written before its code is told).
    for round in 0..3 {
        let mut pairs = Vec::new();
        for i in 0..BURST {
            pairs.push(tokio::spawn({
                let (h, sh) = (
                    user_client(&n1, "helen@contoso.com").await,
                    user_client(&n2, "sam@contoso.com").await,
                );
                redeem_at_once(h, sh, format!("{round}-{i}"))
            }));
        }
        for p in pairs {
            p.await.unwrap();
        }
    }

    // Brute force across nodes: mallory gets five guesses in all, not five per node. Two
    // wrong codes on node 1 and two on node 2; once heard, the fifth (on node 3) locks her.
    let mallory = user_token(&n1, "contoso", "mallory@contoso.com", None);
    let mut on = [
        signal_client(&n1, &mallory).await,
        signal_client(&n2, &mallory).await,
        signal_client(&n3, &mallory).await,
    ];
    let mut guess = 0;
    for node in [0, 0, 1, 1, 2] {
        guess += 1;
        if node == 2 {
            // The failures are broadcast; give them a moment to arrive (loopback).
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        on[node]
            .send(&json!({"id": guess, "type": "redeemCode", "code": "AAAAAAAA"}))
            .await
            .unwrap();
        let e = expect_signal(&mut on[node], "error").await;
        assert_eq!(
            e["code"],
            "invalidCode",
            "guess {guess} on node {}: {e}",
            node + 1
        );
    }
    // Node 3 saw one failure itself: only its peers' four make this a lock.
    let mut h2 = user_client(&n1, "helen@contoso.com").await;
    h2.send(&json!({"id": 12, "type": "requestCode"}))
        .await
        .unwrap();
    let fresh = expect_signal(&mut h2, "codeIssued").await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    for node in [2, 0, 1] {
        guess += 1;
        on[node]
            .send(&json!({"id": guess, "type": "redeemCode", "code": fresh["code"]}))
            .await
            .unwrap();
        let e = expect_signal(&mut on[node], "error").await;
        assert_eq!(e["code"], "rateLimited", "node {}: {e}", node + 1);
    }

    n1.server.shutdown().await;
    n2.server.shutdown().await;
    n3.server.shutdown().await;
}

/// `assistd serve` as a child process in cluster mode (so the test can kill -9 it); returns
/// once it serves, with its HTTPS address.
fn spawn_node(
    dir: &Path,
    redis_url: &str,
    pg: &str,
    node_id: &str,
) -> (std::process::Child, std::net::SocketAddr) {
    let https = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let config = dir.join("assist.toml");
    std::fs::write(&config, "[cluster]\nheartbeat_secs = 1\n").unwrap();
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_assistd"))
        .args(["serve", "--listen", &https.to_string()])
        .args([
            "--quic-listen",
            "127.0.0.1:0",
            "--metrics-listen",
            "127.0.0.1:0",
        ])
        .arg("--config")
        .arg(&config)
        .arg("--data-dir")
        .arg(dir)
        .env("ASSIST_STORE_URL", pg)
        .env("ASSIST_CLUSTER_REDIS_URL", redis_url)
        .env("ASSIST_CLUSTER_NODE_ID", node_id)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    until_serving(&mut child);
    (child, https)
}

/// The dead node's heartbeat TTL (3 × its 1 s heartbeat) plus one survivor heartbeat: the
/// documented bound for a survivor to notice and close a dead node's sessions, plus slack for
/// this loaded test machine.
const DEAD_NODE_BOUND: Duration = Duration::from_millis(3_000 + 500 + 3_000);

/// Pairs `h` (helper) with `sh` (sharer) by code, grants viewOnly with the sharer's consent and
/// starts the relay session on `relay` (frames flow); returns the session id and the helper's
/// relay receiver.
async fn active_through(
    h: &mut SignalClient,
    sh: &mut SignalClient,
    relay: &TestServer,
) -> (String, assist_client::relay::ClientReceiver) {
    let (sid, h_active, s_active) = active_session(h, sh).await;
    assert_eq!(
        port_of(&h_active["relay"]["address"]),
        relay.server.https_addr.port(),
        "placed on the relay node: {h_active}"
    );
    let hrx = relay_frame_flows(
        relay,
        h_active["relay"]["ticket"].as_str().unwrap(),
        s_active["relay"]["ticket"].as_str().unwrap(),
    )
    .await;
    (sid, hrx)
}

/// A signalling client of a node run as a child process (its certificate in `dir`).
async fn connect_child(dir: &Path, addr: std::net::SocketAddr, token: &str) -> SignalClient {
    let tls = assist_client::tls::client_config(&dir.join("tls/cert.pem")).unwrap();
    SignalClient::connect(addr, "localhost", tls, Some(token))
        .await
        .unwrap()
}

/// Reads `hrx` until the relay closes the leg (or it goes quiet for 10 s).
async fn relay_closes(hrx: &mut assist_client::relay::ClientReceiver) {
    loop {
        match tokio::time::timeout(Duration::from_secs(10), hrx.recv()).await {
            Ok(Ok(ClientEvent::Closed(_))) | Ok(Err(_)) => return,
            Ok(Ok(ClientEvent::Frame(_))) => continue,
            Err(_) => panic!("the relay did not close the leg within 10 s"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_killed_mid_session_ends_it_for_the_survivor_and_its_record_is_closed() {
    let Some((redis, pg)) = services() else {
        return;
    };
    let redis_url = redis.fresh_url();
    let nodes = NodeDirs::new();
    // Node 1 (the helper's, which owns the session) is a child process.
    let d1 = nodes.dir("1");
    let (mut child, n1_addr) = spawn_node(&d1, &redis_url, &pg, "node-b-t2");
    let n2 = start_node(&nodes.dir("2"), &redis_url, &pg, "node-c-t2").await;
    let n3 = start_node(&nodes.dir("3"), &redis_url, &pg, "node-a-t2").await;
    help_desk_tenant(&n2).await;
    wait_alive(&redis_url, 3).await;

    let mut h = connect_child(
        &d1,
        n1_addr,
        &user_token(&n2, "contoso", "helen@contoso.com", None),
    )
    .await;
    let mut sh = user_client(&n2, "sam@contoso.com").await;
    let (sid, mut hrx) = active_through(&mut h, &mut sh, &n3).await;
    session_row(&pg, &sid, Duration::from_secs(10), |r| r.state == "active").await;

    // kill -9 the session's owner.
    let killed = Instant::now();
    child.kill().unwrap();
    child.wait().unwrap();

    // The sharer (its socket on node 2) hears that the session is gone, and is closed 1001.
    let err = expect_signal(&mut sh, "error").await;
    assert_eq!(err["code"], "unavailable", "{err}");
    match tokio::time::timeout(Duration::from_secs(10), sh.recv())
        .await
        .unwrap()
        .unwrap()
    {
        SignalEvent::Closed(code) => assert_eq!(code, Some(1001)),
        SignalEvent::Message(m) => panic!("expected the close, got {m}"),
    }
    // A survivor closes the record (nodeLost) and ends the relay session on node 3.
    let row = session_row(&pg, &sid, DEAD_NODE_BOUND, |r| r.state == "ended").await;
    assert_eq!(row.end_reason.as_deref(), Some("nodeLost"));
    assert!(killed.elapsed() < DEAD_NODE_BOUND, "{:?}", killed.elapsed());
    relay_closes(&mut hrx).await;
    n2.server.shutdown().await;
    n3.server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sharers_home_node_killed_ends_the_session_on_the_owner_and_closes_its_record() {
    let Some((redis, pg)) = services() else {
        return;
    };
    let redis_url = redis.fresh_url();
    let nodes = NodeDirs::new();
    // Node 2 (the sharer's socket; the session moves it to node 1, the owner) is a child.
    let n1 = start_node(&nodes.dir("1"), &redis_url, &pg, "node-b-t4").await;
    let d2 = nodes.dir("2");
    let (mut child, n2_addr) = spawn_node(&d2, &redis_url, &pg, "node-c-t4");
    let n3 = start_node(&nodes.dir("3"), &redis_url, &pg, "node-a-t4").await;
    help_desk_tenant(&n1).await;
    wait_alive(&redis_url, 3).await;

    let mut h = user_client(&n1, "helen@contoso.com").await;
    let mut sh = connect_child(
        &d2,
        n2_addr,
        &user_token(&n1, "contoso", "sam@contoso.com", None),
    )
    .await;
    let (sid, mut hrx) = active_through(&mut h, &mut sh, &n3).await;
    session_row(&pg, &sid, Duration::from_secs(10), |r| r.state == "active").await;

    // kill -9 the node holding the sharer's socket; the owner (node 1) survives.
    let killed = Instant::now();
    child.kill().unwrap();
    child.wait().unwrap();

    // The owner's broker drops the remote connection homed there: the helper hears the end.
    let ended = tokio::time::timeout(DEAD_NODE_BOUND, expect_signal(&mut h, "sessionEnded"))
        .await
        .expect("sessionEnded within the dead-node bound");
    assert_eq!(ended["sessionId"], sid.as_str(), "{ended}");
    assert_eq!(ended["reason"], "disconnected", "{ended}");
    assert!(killed.elapsed() < DEAD_NODE_BOUND, "{:?}", killed.elapsed());
    // The owner closes the record, and ends the relay session on node 3.
    let row = session_row(&pg, &sid, DEAD_NODE_BOUND, |r| r.state == "ended").await;
    assert_eq!(row.end_reason.as_deref(), Some("disconnected"));
    relay_closes(&mut hrx).await;
    // The helper's connection is still good for a new session.
    h.send(&json!({"id": 9, "type": "ping"})).await.unwrap();
    expect_signal(&mut h, "pong").await;
    n1.server.shutdown().await;
    n3.server.shutdown().await;
}

/// How many pairings [`redeem_at_once`] runs together.
const BURST: usize = 16;

/// The helper asks for a code; the sharer redeems it as soon as it arrives, sends two `ping`s
/// right behind it, and joins. The pings reach the sharer's node while the redemption is still
/// being routed (its session's node looked up in Redis): they wait, then follow it, in order
/// (the redemption's answer waits for a policy decision, so a pong may come before it).
async fn redeem_at_once(mut h: SignalClient, mut sh: SignalClient, tag: String) {
    h.send(&json!({"id": tag, "type": "requestCode"}))
        .await
        .unwrap();
    let issued = expect_signal(&mut h, "codeIssued").await;
    sh.send(&json!({"id": tag, "type": "redeemCode", "code": issued["code"]}))
        .await
        .unwrap();
    for n in 1..=2 {
        sh.send(&json!({"id": format!("{tag}-ping{n}"), "type": "ping"}))
            .await
            .unwrap();
    }
    let (mut joined, mut pongs) = (false, Vec::new());
    while !joined || pongs.len() < 2 {
        let m = expect_one_of(&mut sh, &["sessionJoined", "error", "pong"]).await;
        match m["type"].as_str() {
            Some("sessionJoined") => joined = true,
            Some("pong") => pongs.push(m["id"].clone()),
            _ => panic!("pairing {tag}: {m}"),
        }
    }
    assert_eq!(
        pongs,
        [json!(format!("{tag}-ping1")), json!(format!("{tag}-ping2"))],
        "pairing {tag}"
    );
    expect_signal(&mut h, "sessionJoined").await;
}

/// Pairs helen on `a` with sam on `b` by code; `None` if a step answered an error (Redis down
/// or not yet re-asserted).
async fn try_pair(a: &TestServer, b: &TestServer) -> Option<()> {
    let mut h = user_client(a, "helen@contoso.com").await;
    let mut sh = user_client(b, "sam@contoso.com").await;
    h.send(&json!({"id": 1, "type": "requestCode"}))
        .await
        .ok()?;
    let m = expect_one_of(&mut h, &["codeIssued", "error"]).await;
    if m["type"] != "codeIssued" {
        return None;
    }
    sh.send(&json!({"id": 2, "type": "redeemCode", "code": m["code"]}))
        .await
        .ok()?;
    let m = expect_one_of(&mut sh, &["sessionJoined", "error"]).await;
    (m["type"] == "sessionJoined").then_some(())
}

async fn expect_one_of(c: &mut SignalClient, types: &[&str]) -> Value {
    loop {
        let ev = tokio::time::timeout(Duration::from_secs(15), c.recv())
            .await
            .expect("an answer within 15 s")
            .unwrap();
        match ev {
            SignalEvent::Message(m) if types.iter().any(|t| m["type"] == *t) => return m,
            SignalEvent::Message(_) => continue,
            SignalEvent::Closed(code) => panic!("closed ({code:?})"),
        }
    }
}

/// How long a request may take to be answered while Redis is down: a behaviour bound (the
/// breaker fails live-state operations at once; without it each waited up to the 3 s operation
/// timeout, behind each other), generous for a loaded machine.
const ANSWER_WITHOUT_REDIS: Duration = Duration::from_secs(2);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_restart_leaves_relay_sessions_running_and_pairing_comes_back() {
    if !RedisInstance::available() {
        return;
    }
    let Some(pg) = assist_testkit::PostgresInstance::shared() else {
        return;
    };
    let pg = pg.fresh_database();
    let redis = RedisInstance::start().unwrap();
    let redis_url = redis.url();
    let nodes = NodeDirs::new();
    let n1 = start_node(&nodes.dir("1"), &redis_url, &pg, "node-b-t3").await;
    let n2 = start_node(&nodes.dir("2"), &redis_url, &pg, "node-c-t3").await;
    let n3 = start_node(&nodes.dir("3"), &redis_url, &pg, "node-a-t3").await;
    let admin = help_desk_tenant(&n1).await;
    wait_alive(&redis_url, 3).await;

    // A relay session in progress on node 3.
    let mut h = user_client(&n1, "helen@contoso.com").await;
    let mut sh = user_client(&n2, "sam@contoso.com").await;
    let (sid, h_active, s_active) = active_session(&mut h, &mut sh).await;
    let ((_htx, mut hrx), (mut stx, _srx)) = wss_legs(
        &n3,
        h_active["relay"]["ticket"].as_str().unwrap(),
        s_active["relay"]["ticket"].as_str().unwrap(),
    )
    .await;
    let screen = |n: u8| Frame::new(Channel::Screen, FLAG_KEYFRAME, &[n; 16]);
    stx.send(&screen(1)).await.unwrap();
    assert_eq!(next_screen(&mut hrx).await.bytes, screen(1).bytes);

    // Redis stops: the relay session carries on; new pairings fail cleanly and at once.
    redis.stop();
    stx.send(&screen(2)).await.unwrap();
    assert_eq!(next_screen(&mut hrx).await.bytes, screen(2).bytes);
    for round in 0..3 {
        let mut h2 = user_client(&n1, "helen@contoso.com").await;
        let asked = Instant::now();
        h2.send(&json!({"id": 1, "type": "requestCode"}))
            .await
            .unwrap();
        let m = expect_one_of(&mut h2, &["codeIssued", "error"]).await;
        assert_eq!(m["code"], "unavailable", "round {round}: {m}");
        assert!(
            asked.elapsed() < ANSWER_WITHOUT_REDIS,
            "round {round}: requestCode answered after {:?}",
            asked.elapsed()
        );
        // A redemption on another node (looked up before its broker, then by it).
        let mut s2 = user_client(&n2, "sam@contoso.com").await;
        let asked = Instant::now();
        s2.send(&json!({"id": 2, "type": "redeemCode", "code": "ABCDEFGH"}))
            .await
            .unwrap();
        let m = expect_one_of(&mut s2, &["sessionJoined", "error"]).await;
        assert_eq!(m["code"], "unavailable", "round {round}: {m}");
        assert!(
            asked.elapsed() < ANSWER_WITHOUT_REDIS,
            "round {round}: redeemCode answered after {:?}",
            asked.elapsed()
        );
    }
    assert!(
        try_pair(&n1, &n2).await.is_none(),
        "no pairing without Redis"
    );
    // The session in progress is still held by both brokers.
    h.send(&json!({"id": 3, "type": "ping"})).await.unwrap();
    expect_signal(&mut h, "pong").await;

    // Redis comes back (empty): nodes re-assert their state; pairing across nodes works again.
    redis.restart().unwrap();
    stx.send(&screen(3)).await.unwrap();
    assert_eq!(next_screen(&mut hrx).await.bytes, screen(3).bytes);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if try_pair(&n1, &n2).await.is_some() {
            break;
        }
        assert!(Instant::now() < deadline, "pairing did not come back");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    // Node 1 re-asserted what it owns: the session's directory entry and helen's presence.
    let observer =
        assist_live_redis::RedisLive::connect(&redis_url, "observer", Default::default())
            .await
            .unwrap();
    let session_id = assist_session::SessionId(sid.clone());
    let helen = assist_session::UserRef {
        tenant_id: "contoso".into(),
        user_id: user_id(&n1, &admin, "helen@contoso.com").await,
    };
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let owner = observer.session_owner(&session_id).await.unwrap();
        let nodes = observer.user_nodes(&helen).await.unwrap();
        if owner.as_deref() == Some("node-b-t3") && nodes.iter().any(|n| n == "node-b-t3") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "node 1 did not re-assert its session and presence: owner {owner:?}, helen on {nodes:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // The session in progress is still there for both sides.
    h.send(&json!({"id": 4, "type": "chat", "sessionId": sid, "text": "still here"}))
        .await
        .unwrap();
    assert_eq!(expect_signal(&mut sh, "chat").await["text"], "still here");
    n1.server.shutdown().await;
    n2.server.shutdown().await;
    n3.server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_postgres_restart_answers_503_on_every_node_and_keeps_the_session_record() {
    let Some(redis) = RedisInstance::shared() else {
        return;
    };
    if assist_testkit::postgres_bin_dir().is_none() {
        assert!(
            !assist_testkit::postgres_required(),
            "PostgreSQL is required here"
        );
        eprintln!("SKIPPING: no PostgreSQL server binaries");
        return;
    }
    // A PostgreSQL of this test's own: it is stopped and started again.
    let pg_server = Arc::new(assist_testkit::PostgresInstance::start().expect("PostgreSQL starts"));
    let pg = pg_server.fresh_database();
    let redis_url = redis.fresh_url();
    let nodes = NodeDirs::new();
    let n1 = start_node(&nodes.dir("1"), &redis_url, &pg, "node-b-t5").await;
    let n2 = start_node(&nodes.dir("2"), &redis_url, &pg, "node-a-t5").await;
    let admin = help_desk_tenant(&n1).await;
    wait_alive(&redis_url, 2).await;

    // An active session across the nodes (helper on node 1, sharer on node 2), recorded.
    let mut h = user_client(&n1, "helen@contoso.com").await;
    let mut sh = user_client(&n2, "sam@contoso.com").await;
    let (sid, _hrx) = active_through(&mut h, &mut sh, &n2).await;
    session_row(&pg, &sid, Duration::from_secs(10), |r| r.state == "active").await;

    let p = pg_server.clone();
    tokio::task::spawn_blocking(move || p.stop())
        .await
        .unwrap()
        .expect("PostgreSQL stops");

    // Admin writes answer 503 on every node; so does a new signalling connection (its caller's
    // directory record cannot be loaded).
    for n in [&n1, &n2] {
        let resp = patch_block_chat(n, &admin).await;
        assert_unavailable("an admin write", resp).await;
        let resp = n
            .client
            .get(n.url("/v1/signal"))
            .bearer_auth(user_token(n, "contoso", "helen@contoso.com", None))
            .header("connection", "upgrade")
            .header("upgrade", "websocket")
            .header("sec-websocket-version", "13")
            .header("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ==")
            .send()
            .await
            .unwrap();
        assert_unavailable("a signalling connection", resp).await;
    }

    // The session ends while the database is down; both sides hear it at once.
    sh.send(&json!({"id": "r3", "type": "endSession", "sessionId": sid}))
        .await
        .unwrap();
    assert_eq!(
        expect_signal(&mut h, "sessionEnded").await["reason"],
        "ended"
    );

    // PostgreSQL comes back: the owner's held end is written; admin writes work again.
    let p = pg_server.clone();
    tokio::task::spawn_blocking(move || p.start_again())
        .await
        .unwrap()
        .expect("PostgreSQL starts again");
    let row = session_row(&pg, &sid, Duration::from_secs(30), |r| r.state == "ended").await;
    assert_eq!(row.end_reason.as_deref(), Some("ended"));
    assert_eq!(row.ended_by.as_deref(), Some("sharer"));
    let deadline = Instant::now() + Duration::from_secs(30);
    for n in [&n1, &n2] {
        loop {
            let (st, b) = n
                .patch(SETTINGS, &admin, &json!({"blockChat": false}))
                .await;
            if st == 200 {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "admin writes did not come back: {st} {b}"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    n1.server.shutdown().await;
    n2.server.shutdown().await;
}

/// The stale-session sweep: an open record that no node keeps alive (no heartbeat within the
/// grace, not in the live directory: what a node that died while Redis was away leaves behind)
/// is closed with `nodeLost` at its last known time; a running session, whose record is just
/// as silent (heartbeats are a minute apart) but which is in the directory, stays open.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sweep_closes_records_no_node_keeps_alive_and_leaves_running_sessions() {
    let Some((redis, pg)) = services() else {
        return;
    };
    let redis_url = redis.fresh_url();
    let nodes = NodeDirs::new();
    let grace = Duration::from_secs(2);
    let n1 = start_node_with_grace(&nodes.dir("1"), &redis_url, &pg, "node-a-t7", grace).await;
    help_desk_tenant(&n1).await;
    wait_alive(&redis_url, 1).await;

    let mut h = user_client(&n1, "helen@contoso.com").await;
    let mut sh = user_client(&n1, "sam@contoso.com").await;
    let (sid, _, _) = active_session(&mut h, &mut sh).await;
    session_row(&pg, &sid, Duration::from_secs(10), |r| r.state == "active").await;
    // The record of a session whose node is gone without trace: open, silent for an hour.
    let store = assist_store::Store::open(&StoreUrl::Postgres(pg.clone()))
        .await
        .unwrap();
    let silent_since = "2026-01-01T10:00:00Z";
    store
        .session_started(
            "contoso",
            "orphan",
            silent_since,
            "viewOnly",
            &json!({}),
            None,
        )
        .await
        .unwrap();

    let closed = session_row(&pg, "orphan", Duration::from_secs(15), |r| {
        r.state == "ended"
    })
    .await;
    assert_eq!(closed.end_reason.as_deref(), Some("nodeLost"));
    assert_eq!(closed.ended_by.as_deref(), Some("broker"));
    assert_eq!(closed.end_time.as_deref(), Some(silent_since));
    // Two more graces (several sweeps) later the running session is still open: it is in the
    // directory, however long its record has been silent.
    tokio::time::sleep(grace * 2).await;
    let rows = store.sessions("contoso").await.unwrap();
    let running = rows
        .iter()
        .find(|r| r.id == sid)
        .expect("the running session's row");
    assert_eq!(running.state, "active", "{running:?}");
    h.send(&json!({"id": 9, "type": "endSession", "sessionId": sid}))
        .await
        .unwrap();
    let ended = session_row(&pg, &sid, Duration::from_secs(10), |r| r.state == "ended").await;
    assert_ne!(ended.end_reason.as_deref(), Some("nodeLost"), "{ended:?}");
    n1.server.shutdown().await;
}
