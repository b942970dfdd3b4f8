//! Draining a real server (what SIGTERM does, through `RunningServer::shutdown`): `/readyz`
//! answers 503 `draining` at once; new relay legs and new signalling sessions are refused with
//! their documented reasons; a running session carries on until the grace period ends and is
//! then ended with `shuttingDown` on both channels (signalling `sessionEnded`, relay `ended` and
//! close 4011) and in its record; and the drain ends early once every session has ended.
//! Real sockets on loopback, real TLS, the real store.

mod common;

use assist_client::relay::{connect_wss, ClientError, ClientEvent, ClientReceiver};
use assist_client::signal::SignalClient;
use assist_policy::Mode;
use assist_relay::Role;
use assist_relay_proto::control::RelayControl;
use assist_relay_proto::frame::{Channel, Frame, FLAG_KEYFRAME};
use assistd::Settings;
use common::*;
use serde_json::json;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

/// Reads a relay leg until it closes: (the `ended` reason, the close code).
async fn until_closed(rx: &mut ClientReceiver, within: Duration) -> (Option<String>, Option<u16>) {
    let mut ended = None;
    loop {
        let ev = tokio::time::timeout(within, rx.recv())
            .await
            .expect("the leg closes in time")
            .expect("no client error");
        if let Some(RelayControl::Ended { reason }) = relay_control(&ev) {
            ended = Some(reason);
        }
        if let ClientEvent::Closed(code) = ev {
            return (ended, code);
        }
    }
}

async fn readyz(metrics: std::net::SocketAddr) -> (u16, String) {
    let resp = reqwest::get(format!("http://{metrics}/readyz"))
        .await
        .unwrap();
    (resp.status().as_u16(), resp.text().await.unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_running_session_survives_the_drain_and_ends_with_shutting_down() {
    const GRACE: Duration = Duration::from_secs(3);
    let dir = tempfile::tempdir().unwrap();
    let mut settings = Settings::ephemeral(dir.path());
    settings.shutdown_grace = GRACE;
    let s = TestServer::start_with(settings).await;
    help_desk_tenant(&s).await;
    let (mut h, mut sh, sid) = granted_session(&s).await;
    let h_active = expect_signal(&mut h, "sessionActive").await;
    let s_active = expect_signal(&mut sh, "sessionActive").await;
    let addr = s.server.https_addr;
    let tls = client_tls(&s);
    let ticket = |v: &serde_json::Value| v["relay"]["ticket"].as_str().unwrap().to_owned();
    let (_htx, mut hrx) = connect_wss(addr, "localhost", tls.clone(), &ticket(&h_active))
        .await
        .unwrap();
    let (mut stx, mut srx) = connect_wss(addr, "localhost", tls.clone(), &ticket(&s_active))
        .await
        .unwrap();
    let screen = Frame::new(Channel::Screen, FLAG_KEYFRAME, b"before");
    stx.send(&screen).await.unwrap();
    assert_eq!(next_screen(&mut hrx).await.bytes, screen.bytes);
    assert_eq!(readyz(s.server.metrics_addr).await, (200, "ready\n".into()));
    // What the test needs once the server has moved into its drain.
    let metrics = s.server.metrics_addr;
    let relay = s.server.relay.clone().expect("a relay");
    let tickets = s.server.tickets.clone();
    let draining = s.server.draining.clone();
    let store_url = s.store_url.clone();
    let helen = user_token(&s, "contoso", "helen@contoso.com", None);
    let TestServer { server, .. } = s;

    let began = Instant::now();
    let stopped = tokio::spawn(server.shutdown());
    // Draining at once: the flag others read, and /readyz.
    let mut ready = readyz(metrics).await;
    for _ in 0..100 {
        if ready.0 == 503 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
        ready = readyz(metrics).await;
    }
    assert_eq!(ready, (503, "draining\n".into()));
    assert!(draining.load(Ordering::SeqCst));

    // A new signalling session is refused: `unavailable`, saying the node drains.
    let mut other = SignalClient::connect(addr, "localhost", tls.clone(), Some(&helen))
        .await
        .expect("the listener still accepts during the drain");
    other
        .send(&json!({"id": 1, "type": "requestCode"}))
        .await
        .unwrap();
    let err = expect_signal(&mut other, "error").await;
    assert_eq!(err["code"], "unavailable", "{err}");
    assert!(
        err["message"].as_str().unwrap().contains("draining"),
        "{err}"
    );
    // A new relay session is refused before the upgrade: 503, saying the relay drains.
    let fresh = tickets.mint(
        "fresh",
        Role::Helper,
        Mode::ViewOnly,
        true,
        relay.identity(),
    );
    match connect_wss(addr, "localhost", tls.clone(), &fresh).await {
        Err(ClientError::Rejected { status, body }) => {
            assert_eq!(status, 503, "{body}");
            assert!(body.contains("draining"), "{body}");
        }
        other => panic!(
            "a new relay leg joined during the drain: {:?}",
            other.is_ok()
        ),
    }

    // The running session carries on: frames flow, chat works.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let screen = Frame::new(Channel::Screen, FLAG_KEYFRAME, b"during");
    stx.send(&screen).await.unwrap();
    assert_eq!(next_screen(&mut hrx).await.bytes, screen.bytes);
    h.send(&json!({"id": 9, "type": "chat", "sessionId": sid, "text": "still here"}))
        .await
        .unwrap();
    assert_eq!(expect_signal(&mut sh, "chat").await["text"], "still here");

    // At the grace's end: shuttingDown everywhere.
    for c in [&mut h, &mut sh] {
        expect_ended(c, "shuttingDown", "broker").await;
    }
    let waited = began.elapsed();
    assert!(
        waited >= GRACE - Duration::from_millis(200),
        "the session was ended after {waited:?}, before the grace of {GRACE:?}"
    );
    for rx in [&mut hrx, &mut srx] {
        assert_eq!(
            until_closed(rx, Duration::from_secs(10)).await,
            (Some("shuttingDown".into()), Some(4011))
        );
    }
    tokio::time::timeout(Duration::from_secs(10), stopped)
        .await
        .expect("the server stops after the grace")
        .unwrap();
    // The record says so.
    let store = assist_store::Store::open(&store_url).await.unwrap();
    let row = session_record(&store, &sid).await;
    assert_eq!(row.end_reason.as_deref(), Some("shuttingDown"));
    assert_eq!(row.ended_by.as_deref(), Some("broker"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_drain_ends_as_soon_as_every_session_has_ended() {
    let dir = tempfile::tempdir().unwrap();
    let mut settings = Settings::ephemeral(dir.path());
    settings.shutdown_grace = Duration::from_secs(60);
    let s = TestServer::start_with(settings).await;
    let relay = s.server.relay.clone().expect("a relay");
    let mint = |role| {
        s.server
            .tickets
            .mint("early", role, Mode::FullControl, true, relay.identity())
    };
    let addr = s.server.https_addr;
    let tls = client_tls(&s);
    let (mut htx, mut hrx) = connect_wss(addr, "localhost", tls.clone(), &mint(Role::Helper))
        .await
        .unwrap();
    // The second leg of a session the relay already holds still joins during the drain.
    let sharer_ticket = mint(Role::Sharer);
    let metrics = s.server.metrics_addr;
    let TestServer { server, .. } = s;
    let began = Instant::now();
    let stopped = tokio::spawn(server.shutdown());
    while readyz(metrics).await.0 != 503 {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let (_stx, mut srx) = connect_wss(addr, "localhost", tls, &sharer_ticket)
        .await
        .expect("the waiting session's second leg joins");
    loop {
        let ev = tokio::time::timeout(Duration::from_secs(10), hrx.recv())
            .await
            .unwrap()
            .unwrap();
        if matches!(relay_control(&ev), Some(RelayControl::Paired { .. })) {
            break;
        }
    }
    // The helper leaves: no session is left, so the server stops without waiting the grace.
    htx.close().await;
    assert_eq!(
        until_closed(&mut srx, Duration::from_secs(10)).await.1,
        Some(4004)
    );
    tokio::time::timeout(Duration::from_secs(20), stopped)
        .await
        .expect("the drain ends once every session has ended")
        .unwrap();
    assert!(began.elapsed() < Duration::from_secs(20));
}
