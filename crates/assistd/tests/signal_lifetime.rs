//! The signalling fixes of issue #11 against the real server over real WSS: a relay leg that
//! drops ends the broker's session for both sides, a device connection is reachable as soon as
//! its upgrade completes, tokens expire on open connections (unless refreshed with
//! `authenticate`), and a running session's last-seen time stays current for crash recovery.

mod common;

use assist_client::relay::{connect_wss, ClientEvent};
use assist_client::signal::{SignalClient, SignalEvent};
use assist_relay_proto::frame::{Channel, Frame, FLAG_KEYFRAME};
use assistd::Settings;
use common::*;
use serde_json::{json, Value};
use std::time::Duration;

const ADMIN: &[&str] = &[
    "DeviceManagementServiceConfig.ReadWrite.All",
    "User.ReadWrite.All",
    "Group.ReadWrite.All",
    "DeviceManagementRBAC.ReadWrite.All",
];

/// Remote Help on; helen may help everyone (Help Desk Operator over all users).
async fn tenant(s: &TestServer) {
    help_desk_tenant_with(
        s,
        HelpDeskSetup {
            admin_roles: ADMIN,
            with_sam: false,
            ..Default::default()
        },
    )
    .await;
}

const HOUR: Duration = Duration::from_secs(3600);

#[tokio::test]
async fn a_relay_leg_that_drops_ends_the_session_for_both_sides() {
    let dir = tempfile::tempdir().unwrap();
    let s = TestServer::start(dir.path()).await;
    tenant(&s).await;
    let mut h = user_client(&s, "helen@contoso.com").await;
    let mut sh = user_client(&s, "sam@contoso.com").await;
    let (sid, ha, sa) = active_session(&mut h, &mut sh).await;
    let addr = s.server.https_addr;
    let ticket = |v: &Value| v["relay"]["ticket"].as_str().unwrap().to_owned();
    let (_htx, mut hrx) = connect_wss(addr, "localhost", client_tls(&s), &ticket(&ha))
        .await
        .unwrap();
    let (mut stx, srx) = connect_wss(addr, "localhost", client_tls(&s), &ticket(&sa))
        .await
        .unwrap();
    // Paired: a frame gets through.
    stx.send(&Frame::new(Channel::Screen, FLAG_KEYFRAME, b"pixels"))
        .await
        .unwrap();
    loop {
        match tokio::time::timeout(Duration::from_secs(10), hrx.recv())
            .await
            .unwrap()
            .unwrap()
        {
            ClientEvent::Frame(f) if f.header.channel == Channel::Screen => break,
            ClientEvent::Frame(_) => continue,
            ClientEvent::Closed(c) => panic!("relay closed {c:?}"),
        }
    }
    // The sharer's relay leg drops (the app crashed, the network went): both apps hear that
    // the session ended, by the sharer.
    drop((stx, srx));
    for c in [&mut h, &mut sh] {
        let ended = expect_signal(c, "sessionEnded").await;
        assert_eq!(ended["sessionId"], sid.as_str());
        assert_eq!(
            (ended["reason"].as_str(), ended["by"].as_str()),
            (Some("disconnected"), Some("sharer"))
        );
    }
    // The session is gone: chat is refused and the helper may ask for a new code at once.
    h.send(&json!({"id": 9, "type": "chat", "sessionId": sid, "text": "hello?"}))
        .await
        .unwrap();
    assert_eq!(expect_signal(&mut h, "error").await["code"], "notFound");
    h.send(&json!({"id": 10, "type": "requestCode"}))
        .await
        .unwrap();
    expect_signal(&mut h, "codeIssued").await;
    // The audit trail names who ended it, and how.
    let store = assist_store::Store::open_sqlite(&dir.path().join("assist.db"))
        .await
        .unwrap();
    let mut found = None;
    for _ in 0..100 {
        let events = store.audit_events("contoso").await.unwrap();
        found = events
            .into_iter()
            .find(|e| e["activity"] == "Remote Help session: ended");
        if found.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let ev = found.expect("the end was audited");
    assert_eq!(ev["actor"]["userPrincipalName"], "sam@contoso.com", "{ev}");
    assert_eq!(
        ev["activityDetails"],
        json!({"kind": "ended", "reason": "disconnected", "by": "sharer"})
    );
    assert_eq!(ev["resources"][0]["resourceId"], sid.as_str());
    s.server.shutdown().await;
}

#[tokio::test]
async fn a_device_is_reachable_as_soon_as_its_upgrade_completes() {
    let dir = tempfile::tempdir().unwrap();
    let s = TestServer::start(dir.path()).await;
    tenant(&s).await;
    let mut h = user_client(&s, "helen@contoso.com").await;
    for n in 0..5 {
        let device = format!("dev-{n}");
        // No message on the device connection before the launch.
        let mut d = signal_client(
            &s,
            &user_token_lasting(&s, "contoso", "sam@contoso.com", Some(&device), HOUR),
        )
        .await;
        h.send(&json!({"id": n, "type": "requestSession", "deviceId": device}))
            .await
            .unwrap();
        let answer = loop {
            match next_signal(&mut h).await {
                SignalEvent::Message(m) if m["id"] == n => break m,
                SignalEvent::Message(_) => continue,
                SignalEvent::Closed(c) => panic!("closed {c:?}"),
            }
        };
        assert_eq!(answer["type"], "launchPending", "{answer}");
        let asked = expect_signal(&mut d, "launchRequested").await;
        h.send(&json!({"id": "e", "type": "endSession", "sessionId": asked["sessionId"]}))
            .await
            .unwrap();
        expect_signal(&mut h, "ack").await;
    }
    s.server.shutdown().await;
}

/// A server that allows no clock skew, so a token's `exp` is when it expires.
async fn strict_server(dir: &std::path::Path) -> TestServer {
    let mut settings = Settings::ephemeral(dir);
    settings.auth.leeway_secs = 0;
    TestServer::start_with(settings).await
}

#[tokio::test]
async fn an_expired_token_closes_its_connection_with_4401() {
    let dir = tempfile::tempdir().unwrap();
    let s = strict_server(dir.path()).await;
    let mut h = signal_client(
        &s,
        &user_token_lasting(
            &s,
            "contoso",
            "helen@contoso.com",
            None,
            Duration::from_secs(2),
        ),
    )
    .await;
    h.send(&json!({"id": 1, "type": "ping"})).await.unwrap();
    expect_signal(&mut h, "pong").await;
    let started = std::time::Instant::now();
    assert_eq!(expect_signal_close(&mut h).await, Some(4401));
    assert!(started.elapsed() < Duration::from_secs(4));
    s.server.shutdown().await;
}

#[tokio::test]
async fn a_fresh_token_for_the_same_user_keeps_the_connection_and_another_users_closes_it() {
    let dir = tempfile::tempdir().unwrap();
    let s = strict_server(dir.path()).await;
    let short = Duration::from_secs(2);
    // Signed in by the first message, as browsers do; an `id` gets an `ack`.
    let mut h = SignalClient::connect(s.server.https_addr, "localhost", client_tls(&s), None)
        .await
        .unwrap();
    let first = user_token_lasting(&s, "contoso", "helen@contoso.com", None, short);
    h.send(&json!({"type": "authenticate", "id": "a0", "token": first}))
        .await
        .unwrap();
    expect_signal(&mut h, "ack").await;
    let fresh = user_token_lasting(&s, "contoso", "helen@contoso.com", None, HOUR);
    h.send(&json!({"type": "authenticate", "id": "a1", "token": fresh}))
        .await
        .unwrap();
    assert_eq!(expect_signal(&mut h, "ack").await["id"], "a1");
    tokio::time::sleep(Duration::from_secs(3)).await;
    h.send(&json!({"id": 2, "type": "ping"})).await.unwrap();
    expect_signal(&mut h, "pong").await;
    // A valid token, but for someone else: the connection is closed.
    let other = user_token_lasting(&s, "contoso", "sam@contoso.com", None, HOUR);
    h.send(&json!({"type": "authenticate", "token": other}))
        .await
        .unwrap();
    assert_eq!(expect_signal_close(&mut h).await, Some(4401));
    // A header-token connection is refreshed the same way, and an invalid token closes it.
    let mut d = user_client(&s, "sam@contoso.com").await;
    d.send(&json!({"type": "authenticate", "token": "not-a-token"}))
        .await
        .unwrap();
    assert_eq!(expect_signal_close(&mut d).await, Some(4401));
    s.server.shutdown().await;
}

#[tokio::test]
async fn crash_recovery_reports_when_a_session_was_last_seen_running() {
    let dir = tempfile::tempdir().unwrap();
    let mut settings = Settings::ephemeral(dir.path());
    settings.signal.seen_interval = Duration::from_secs(1);
    let s = TestServer::start_with(settings).await;
    tenant(&s).await;
    let mut h = user_client(&s, "helen@contoso.com").await;
    let mut sh = user_client(&s, "sam@contoso.com").await;
    let (sid, _, _) = active_session(&mut h, &mut sh).await;
    // Runs for a while, then the broker goes away with the session open (no drain: what a
    // crash leaves).
    tokio::time::sleep(Duration::from_millis(2500)).await;
    s.server.stop_now().await;
    let s = TestServer::start(dir.path()).await;
    let store = assist_store::Store::open_sqlite(&dir.path().join("assist.db"))
        .await
        .unwrap();
    let row = session_record(&store, &sid).await;
    assert_eq!(row.end_reason.as_deref(), Some("brokerRestart"));
    assert_eq!(row.ended_by.as_deref(), Some("broker"));
    let parse = |t: &str| {
        time::OffsetDateTime::parse(t, &time::format_description::well_known::Rfc3339).unwrap()
    };
    let ran = parse(row.end_time.as_deref().unwrap()) - parse(&row.start_time);
    assert!(
        ran >= time::Duration::seconds(1) && ran < time::Duration::seconds(10),
        "the session ran {ran}"
    );
    s.server.shutdown().await;
}
