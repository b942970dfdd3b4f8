//! Signalling over real WSS against the real server: a whole session from code to report, the
//! relay joined with the tickets it hands out, policy denials, cross-tenant redemption, chat
//! blocked by a PATCH mid-session, the launch flow from the admin API, and authentication.

mod common;

use assist_client::signal::{SignalClient, SignalEvent};
use assist_relay_proto::frame::{Channel, Frame, FLAG_KEYFRAME};
use common::*;
use serde_json::json;
use std::time::Duration;

/// A tenant where helen (Help desk, Help Desk Operator over all users) may help sam.
async fn tenant(s: &TestServer) -> String {
    help_desk_tenant_with(
        s,
        HelpDeskSetup {
            helen: json!({"userPrincipalName": "helen@contoso.com", "displayName": "Helen Helper", "jobTitle": "Service desk"}),
            domain: Some("contoso.com"),
            ..Default::default()
        },
    )
    .await
    .admin
}

#[tokio::test]
async fn a_whole_session_from_code_to_report_through_the_relay() {
    let dir = tempfile::tempdir().unwrap();
    let s = TestServer::start(dir.path()).await;
    let admin = tenant(&s).await;
    let mut h = user_client(&s, "helen@contoso.com").await;
    let mut sh = user_client(&s, "sam@contoso.com").await;

    h.send(&json!({"id": 1, "type": "requestCode"}))
        .await
        .unwrap();
    let issued = expect_signal(&mut h, "codeIssued").await;
    let code = issued["code"].as_str().unwrap().to_owned();
    assert_eq!(code.len(), 8);
    let sid = issued["sessionId"].as_str().unwrap().to_owned();

    sh.send(&json!({"id": "r1", "type": "redeemCode", "code": code}))
        .await
        .unwrap();
    let joined = expect_signal(&mut sh, "sessionJoined").await;
    assert_eq!(
        joined["peerProfile"],
        json!({"displayName": "Helen Helper", "jobTitle": "Service desk", "verifiedDomain": "contoso.com"})
    );
    let joined = expect_signal(&mut h, "sessionJoined").await;
    assert_eq!(joined["peerProfile"]["displayName"], "Sam Sharer");

    h.send(&json!({"id": 2, "type": "requestMode", "sessionId": sid, "mode": "fullControl", "acknowledgeWarnings": ["deviceUnenrolled"]})).await.unwrap();
    let asked = expect_signal(&mut sh, "consentRequested").await;
    assert_eq!(asked["mode"], "fullControl");
    sh.send(&json!({"id": "r2", "type": "consent", "sessionId": sid, "allow": true}))
        .await
        .unwrap();
    let h_active = expect_signal(&mut h, "sessionActive").await;
    let s_active = expect_signal(&mut sh, "sessionActive").await;
    assert_ne!(
        h_active["relay"]["ticket"], s_active["relay"]["ticket"],
        "each side gets its own ticket"
    );

    // Both join the relay with those tickets and a screen frame flows.
    let ((_htx, mut hrx), (mut stx, _srx)) = wss_legs(
        &s,
        h_active["relay"]["ticket"].as_str().unwrap(),
        s_active["relay"]["ticket"].as_str().unwrap(),
    )
    .await;
    let screen = Frame::new(Channel::Screen, FLAG_KEYFRAME, b"pixels");
    stx.send(&screen).await.unwrap();
    assert_eq!(next_screen(&mut hrx).await.bytes, screen.bytes);

    // Chat, then a PATCH blocks chat mid-session: the next line is refused.
    h.send(&json!({"id": 3, "type": "chat", "sessionId": sid, "text": "Can you open Settings?"}))
        .await
        .unwrap();
    assert_eq!(
        expect_signal(&mut sh, "chat").await["text"],
        "Can you open Settings?"
    );
    // The driver handled the chat, so it published the gauges after the start before it.
    let text = metrics_text(&s).await;
    for line in [
        r#"assist_signal_sessions_by_state{state="active"} 1"#,
        r#"assist_signal_sessions_by_state{state="pending"} 0"#,
        r#"assist_signal_active_sessions{mode="fullControl"} 1"#,
        r#"assist_signal_active_sessions{mode="viewOnly"} 0"#,
        "assist_signal_pairing_seconds_count 1",
        "assist_signal_join_to_active_seconds_count 1",
    ] {
        assert!(text.contains(line), "{line} missing in {text}");
    }
    s.patch(SETTINGS, &admin, &json!({"blockChat": true})).await;
    expect_signal(&mut h, "modeChanged").await;
    h.send(&json!({"id": 4, "type": "chat", "sessionId": sid, "text": "still there?"}))
        .await
        .unwrap();
    let err = expect_signal(&mut h, "error").await;
    assert_eq!(err["code"], "chatBlocked");

    // The sharer ends it; the relay legs close and the report has the session.
    sharer_ends_session(&mut h, &mut sh, &sid, &mut hrx).await;
    // The store writes asynchronously: poll the database for the closed record.
    let store = assist_store::Store::open_sqlite(&dir.path().join("assist.db"))
        .await
        .unwrap();
    let mut row = None;
    for _ in 0..100 {
        let rows = store.sessions("contoso").await.unwrap();
        if let Some(r) = rows.into_iter().find(|r| {
            r.id == sid && r.state == "ended" && r.body.get("relayBytesSharerToHelper").is_some()
        }) {
            row = Some(r);
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let row = row.expect("the session was recorded, closed and given the relay's counters");
    assert_eq!(row.mode, "fullControl");
    assert_eq!(row.end_reason.as_deref(), Some("ended"));
    assert_eq!(row.ended_by.as_deref(), Some("sharer"));
    assert_eq!(row.body["helperEmail"], "helen@contoso.com");
    assert_eq!(row.body["sharerEmail"], "sam@contoso.com");
    assert!(row.body["relayBytesSharerToHelper"].as_u64().unwrap() >= 12);
    // Metrics count the decision, the start and the end (never by user or session).
    let text = metrics_text(&s).await;
    assert!(
        text.contains(r#"assist_signal_decisions_total{result="allow"} 1"#),
        "{text}"
    );
    assert!(
        text.contains(r#"assist_signal_sessions_started_total{mode="fullControl"} 1"#),
        "{text}"
    );
    assert!(
        text.contains(r#"assist_signal_sessions_ended_total{reason="ended"} 1"#),
        "{text}"
    );
    assert!(
        text.contains(r#"assist_signal_sessions_by_state{state="active"} 0"#),
        "{text}"
    );
    // Session events are audited.
    let events = store.audit_events("contoso").await.unwrap();
    assert!(events.iter().any(|e| e["activity"]
        .as_str()
        .is_some_and(|a| a.starts_with("Remote Help session"))));
    s.server.shutdown().await;
}

#[tokio::test]
async fn denials_cross_tenant_codes_and_authentication() {
    let dir = tempfile::tempdir().unwrap();
    let s = TestServer::start(dir.path()).await;
    tenant(&s).await;
    // Sam has no role: asking for a mode as helper is denied with the policy's reason.
    let mut sam = user_client(&s, "sam@contoso.com").await;
    let mut helen = user_client(&s, "helen@contoso.com").await;
    sam.send(&json!({"id": 1, "type": "requestCode"}))
        .await
        .unwrap();
    let code = expect_signal(&mut sam, "codeIssued").await;
    helen
        .send(&json!({"id": 1, "type": "redeemCode", "code": code["code"]}))
        .await
        .unwrap();
    expect_signal(&mut helen, "sessionJoined").await;
    let sid = code["sessionId"].as_str().unwrap();
    sam.send(&json!({"id": 2, "type": "requestMode", "sessionId": sid, "mode": "viewOnly", "acknowledgeWarnings": ["deviceUnenrolled"]})).await.unwrap();
    assert_eq!(
        expect_signal(&mut sam, "error").await["code"],
        "noRoleAssignment"
    );

    // A code of contoso cannot be redeemed from fabrikam.
    let mut helper2 = user_client(&s, "helen@contoso.com").await;
    helper2
        .send(&json!({"id": 1, "type": "requestCode"}))
        .await
        .unwrap();
    let code2 = expect_signal(&mut helper2, "codeIssued").await;
    let mut outsider =
        signal_client(&s, &user_token(&s, "fabrikam", "eve@fabrikam.com", None)).await;
    outsider
        .send(&json!({"id": 1, "type": "redeemCode", "code": code2["code"]}))
        .await
        .unwrap();
    assert_eq!(
        expect_signal(&mut outsider, "error").await["code"],
        "crossTenant"
    );
    // A wrong code reveals nothing.
    outsider
        .send(&json!({"id": 2, "type": "redeemCode", "code": "ZZZZZZZZ"}))
        .await
        .unwrap();
    assert_eq!(
        expect_signal(&mut outsider, "error").await["code"],
        "invalidCode"
    );

    // A bad header token is refused before the upgrade; no token and no authenticate → 4401.
    let bad = SignalClient::connect(
        s.server.https_addr,
        "localhost",
        client_tls(&s),
        Some("not-a-token"),
    )
    .await;
    assert!(matches!(
        bad,
        Err(assist_client::relay::ClientError::Rejected { status: 401, .. })
    ));
    let mut anon = SignalClient::connect(s.server.https_addr, "localhost", client_tls(&s), None)
        .await
        .unwrap();
    anon.send(&json!({"type": "authenticate", "token": "garbage"}))
        .await
        .unwrap();
    match tokio::time::timeout(Duration::from_secs(10), anon.recv())
        .await
        .unwrap()
        .unwrap()
    {
        SignalEvent::Closed(code) => assert_eq!(code, Some(4401)),
        SignalEvent::Message(m) => panic!("unexpected {m}"),
    }
    // The first-message form works with a good token.
    let mut browser = SignalClient::connect(s.server.https_addr, "localhost", client_tls(&s), None)
        .await
        .unwrap();
    browser.send(&json!({"type": "authenticate", "token": user_token(&s, "contoso", "sam@contoso.com", None)})).await.unwrap();
    browser
        .send(&json!({"id": 9, "type": "ping"}))
        .await
        .unwrap();
    assert_eq!(expect_signal(&mut browser, "pong").await["id"], 9);
    s.server.shutdown().await;
}

#[tokio::test]
async fn the_admin_api_launches_a_session_on_a_device() {
    let dir = tempfile::tempdir().unwrap();
    let s = TestServer::start(dir.path()).await;
    let admin = tenant(&s).await;
    let dev = admin_post(&s, &admin, "/beta/deviceManagement/managedDevices", json!({"azureADDeviceId": "aad-sam", "deviceName": "SAM-PC", "complianceState": "compliant"})).await;
    let dev_id = dev["id"].as_str().unwrap().to_owned();
    let launch = format!("/beta/deviceManagement/managedDevices/{dev_id}/requestRemoteAssistance");
    // Offline device: a clear error.
    let (st, b) = send(s.client.post(s.url(&launch)).bearer_auth(&admin)).await;
    assert_eq!(st, 409, "{b}");
    assert!(
        b["error"]["message"]
            .as_str()
            .unwrap()
            .contains("no Remote Help connection"),
        "{b}"
    );
    // Two connections of the device: both are notified; the first answer wins.
    let sam_dev = user_token(&s, "contoso", "sam@contoso.com", Some("aad-sam"));
    let mut d1 = signal_client(&s, &sam_dev).await;
    let mut d2 = signal_client(&s, &sam_dev).await;
    d1.send(&json!({"id": 0, "type": "ping"})).await.unwrap();
    expect_signal(&mut d1, "pong").await;
    d2.send(&json!({"id": 0, "type": "ping"})).await.unwrap();
    expect_signal(&mut d2, "pong").await;
    let (st, b) = send(s.client.post(s.url(&launch)).bearer_auth(&admin)).await;
    assert_eq!(st, 204, "{b}");
    let req1 = expect_signal(&mut d1, "launchRequested").await;
    let req2 = expect_signal(&mut d2, "launchRequested").await;
    assert_eq!(req1["sessionId"], req2["sessionId"]);
    d2.send(
        &json!({"id": 1, "type": "answerLaunch", "sessionId": req2["sessionId"], "accept": true}),
    )
    .await
    .unwrap();
    expect_signal(&mut d2, "sessionJoined").await;
    assert_eq!(
        expect_signal(&mut d1, "launchWithdrawn").await["reason"],
        "answeredElsewhere"
    );
    s.server.shutdown().await;
}

/// Joins helen (helper) and sam (sharer) by code; returns the session id.
async fn join(h: &mut SignalClient, sh: &mut SignalClient) -> String {
    h.send(&json!({"id": "c", "type": "requestCode"}))
        .await
        .unwrap();
    let issued = expect_signal(h, "codeIssued").await;
    sh.send(&json!({"id": "j", "type": "redeemCode", "code": issued["code"]}))
        .await
        .unwrap();
    expect_signal(sh, "sessionJoined").await;
    expect_signal(h, "sessionJoined").await;
    issued["sessionId"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn warnings_consent_declines_upgrades_and_downgrades() {
    let dir = tempfile::tempdir().unwrap();
    let s = TestServer::start(dir.path()).await;
    tenant(&s).await;
    let mut h = user_client(&s, "helen@contoso.com").await;
    let mut sh = user_client(&s, "sam@contoso.com").await;

    // An unacknowledged warning (no device: unenrolled) stops the request until acknowledged.
    let sid = join(&mut h, &mut sh).await;
    h.send(&json!({"id": 1, "type": "requestMode", "sessionId": sid, "mode": "viewOnly", "acknowledgeWarnings": []})).await.unwrap();
    let w = expect_signal(&mut h, "warnings").await;
    assert_eq!(w["warnings"], json!(["deviceUnenrolled"]));
    assert_eq!(
        expect_signal(&mut h, "error").await["code"],
        "warningNotAcknowledged"
    );
    // Declining the first mode ends the session.
    h.send(&json!({"id": 2, "type": "requestMode", "sessionId": sid, "mode": "viewOnly", "acknowledgeWarnings": ["deviceUnenrolled"]})).await.unwrap();
    expect_signal(&mut sh, "consentRequested").await;
    sh.send(&json!({"id": 1, "type": "consent", "sessionId": sid, "allow": false}))
        .await
        .unwrap();
    expect_ended(&mut h, "declined", "sharer").await;

    // A new session: view only allowed, an upgrade declined (the session goes on), then an
    // upgrade allowed, then a downgrade that needs no consent.
    let sid = join(&mut h, &mut sh).await;
    h.send(&json!({"id": 3, "type": "requestMode", "sessionId": sid, "mode": "viewOnly", "acknowledgeWarnings": ["deviceUnenrolled"]})).await.unwrap();
    expect_signal(&mut sh, "consentRequested").await;
    sh.send(&json!({"id": 2, "type": "consent", "sessionId": sid, "allow": true}))
        .await
        .unwrap();
    assert_eq!(
        expect_signal(&mut h, "sessionActive").await["mode"],
        "viewOnly"
    );
    h.send(&json!({"id": 4, "type": "requestMode", "sessionId": sid, "mode": "fullControl", "acknowledgeWarnings": ["deviceUnenrolled"]})).await.unwrap();
    assert_eq!(
        expect_signal(&mut sh, "consentRequested").await["mode"],
        "fullControl"
    );
    sh.send(&json!({"id": 3, "type": "consent", "sessionId": sid, "allow": false}))
        .await
        .unwrap();
    assert_eq!(
        expect_signal(&mut h, "consentDeclined").await["mode"],
        "fullControl"
    );
    h.send(&json!({"id": 5, "type": "requestMode", "sessionId": sid, "mode": "fullControl", "acknowledgeWarnings": ["deviceUnenrolled"]})).await.unwrap();
    expect_signal(&mut sh, "consentRequested").await;
    sh.send(&json!({"id": 4, "type": "consent", "sessionId": sid, "allow": true}))
        .await
        .unwrap();
    assert_eq!(
        expect_signal(&mut h, "modeChanged").await["mode"],
        "fullControl"
    );
    assert_eq!(
        expect_signal(&mut sh, "modeChanged").await["mode"],
        "fullControl"
    );
    h.send(&json!({"id": 6, "type": "requestMode", "sessionId": sid, "mode": "viewOnly", "acknowledgeWarnings": []})).await.unwrap();
    assert_eq!(
        expect_signal(&mut h, "modeRequested").await["consent"],
        "none"
    );
    assert_eq!(
        expect_signal(&mut sh, "modeChanged").await["mode"],
        "viewOnly"
    );
    s.server.shutdown().await;
}

#[tokio::test]
async fn codes_are_single_use_and_guessing_locks_the_guesser() {
    let dir = tempfile::tempdir().unwrap();
    let s = TestServer::start(dir.path()).await;
    tenant(&s).await;
    let mut h = user_client(&s, "helen@contoso.com").await;
    let mut sh = user_client(&s, "sam@contoso.com").await;
    h.send(&json!({"id": 1, "type": "requestCode"}))
        .await
        .unwrap();
    let code = expect_signal(&mut h, "codeIssued").await["code"]
        .as_str()
        .unwrap()
        .to_owned();
    sh.send(&json!({"id": 1, "type": "redeemCode", "code": code}))
        .await
        .unwrap();
    expect_signal(&mut sh, "sessionJoined").await;
    // Reused by someone else: refused, exactly like a wrong code.
    let mut eve = user_client(&s, "eve@contoso.com").await;
    eve.send(&json!({"id": 1, "type": "redeemCode", "code": code}))
        .await
        .unwrap();
    assert_eq!(
        expect_signal(&mut eve, "error").await["code"],
        "invalidCode"
    );
    // Guessing: the 5th failure within a minute locks Eve out, even for a good code.
    for i in 2..=5 {
        eve.send(&json!({"id": i, "type": "redeemCode", "code": "ZZZZZZZZ"}))
            .await
            .unwrap();
        let code = expect_signal(&mut eve, "error").await["code"]
            .as_str()
            .unwrap()
            .to_owned();
        assert!(code == "invalidCode" || code == "rateLimited", "{code}");
    }
    let mut h2 = user_client(&s, "helen@contoso.com").await;
    h2.send(&json!({"id": 1, "type": "requestCode"}))
        .await
        .unwrap();
    let good = expect_signal(&mut h2, "codeIssued").await["code"]
        .as_str()
        .unwrap()
        .to_owned();
    eve.send(&json!({"id": 9, "type": "redeemCode", "code": good}))
        .await
        .unwrap();
    assert_eq!(
        expect_signal(&mut eve, "error").await["code"],
        "rateLimited"
    );
    s.server.shutdown().await;
}

#[tokio::test]
async fn unattended_with_a_present_sharer_can_be_declined() {
    let dir = tempfile::tempdir().unwrap();
    let s = TestServer::start(dir.path()).await;
    let admin = tenant(&s).await;
    admin_post(&s, &admin, "/beta/deviceManagement/managedDevices", json!({"azureADDeviceId": "aad-kiosk", "deviceName": "KIOSK", "complianceState": "compliant"})).await;
    let mut h = user_client(&s, "helen@contoso.com").await;
    let mut dev = signal_client(
        &s,
        &user_token(&s, "contoso", "sam@contoso.com", Some("aad-kiosk")),
    )
    .await;
    dev.send(&json!({"id": 0, "type": "ping"})).await.unwrap();
    expect_signal(&mut dev, "pong").await;
    h.send(
        &json!({"id": 1, "type": "requestSession", "deviceId": "aad-kiosk", "mode": "unattended"}),
    )
    .await
    .unwrap();
    expect_signal(&mut h, "launchPending").await;
    let req = expect_signal(&mut dev, "launchRequested").await;
    assert_eq!(req["mode"], "unattended");
    let sid = req["sessionId"].as_str().unwrap().to_owned();
    dev.send(&json!({"id": 1, "type": "answerLaunch", "sessionId": sid, "accept": true}))
        .await
        .unwrap();
    // Sam is present: no consent, but a window to decline.
    expect_signal(&mut dev, "unattendedStarting").await;
    assert_eq!(
        expect_signal(&mut h, "modeRequested").await["consent"],
        "declineWindow"
    );
    dev.send(&json!({"id": 2, "type": "consent", "sessionId": sid, "allow": false}))
        .await
        .unwrap();
    let ended = expect_signal(&mut h, "sessionEnded").await;
    assert_eq!(ended["reason"], "declined");
    s.server.shutdown().await;
}

#[tokio::test]
async fn a_killed_broker_closes_the_open_session_on_restart() {
    let dir = tempfile::tempdir().unwrap();
    let s = TestServer::start(dir.path()).await;
    tenant(&s).await;
    let mut h = user_client(&s, "helen@contoso.com").await;
    let mut sh = user_client(&s, "sam@contoso.com").await;
    let sid = join(&mut h, &mut sh).await;
    h.send(&json!({"id": 1, "type": "requestMode", "sessionId": sid, "mode": "viewOnly", "acknowledgeWarnings": ["deviceUnenrolled"]})).await.unwrap();
    expect_signal(&mut sh, "consentRequested").await;
    sh.send(&json!({"id": 1, "type": "consent", "sessionId": sid, "allow": true}))
        .await
        .unwrap();
    expect_signal(&mut h, "sessionActive").await;
    let store = assist_store::Store::open_sqlite(&dir.path().join("assist.db"))
        .await
        .unwrap();
    for _ in 0..100 {
        if store
            .sessions("contoso")
            .await
            .unwrap()
            .iter()
            .any(|r| r.id == sid)
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    store.close().await;
    // The broker goes away with the session open (stopped without a drain, its driver stops
    // without closing records: what a kill leaves), then starts again on the same data.
    s.server.stop_now().await;
    let s = TestServer::start(dir.path()).await;
    let store = assist_store::Store::open_sqlite(&dir.path().join("assist.db"))
        .await
        .unwrap();
    let row = session_record(&store, &sid).await;
    assert_eq!(row.state, "ended");
    assert_eq!(row.end_reason.as_deref(), Some("brokerRestart"));
    s.server.shutdown().await;
}

#[tokio::test]
async fn consent_and_code_time_out() {
    let dir = tempfile::tempdir().unwrap();
    let mut settings = assistd::Settings::ephemeral(dir.path());
    settings.signal.consent_timeout = Duration::from_millis(400);
    settings.signal.code_ttl = Duration::from_millis(400);
    let s = TestServer::start_with(settings).await;
    tenant(&s).await;
    let mut h = user_client(&s, "helen@contoso.com").await;
    let mut sh = user_client(&s, "sam@contoso.com").await;
    // The sharer never answers: the first mode times out and the session ends.
    let sid = join(&mut h, &mut sh).await;
    h.send(&json!({"id": 1, "type": "requestMode", "sessionId": sid, "mode": "viewOnly", "acknowledgeWarnings": ["deviceUnenrolled"]})).await.unwrap();
    expect_signal(&mut sh, "consentRequested").await;
    assert_eq!(
        expect_signal(&mut h, "consentTimedOut").await["mode"],
        "viewOnly"
    );
    expect_ended(&mut h, "consentTimedOut", "broker").await;
    // A code nobody redeems in time expires; redeeming it afterwards says so.
    h.send(&json!({"id": 2, "type": "requestCode"}))
        .await
        .unwrap();
    let code = expect_signal(&mut h, "codeIssued").await["code"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(
        expect_signal(&mut h, "sessionEnded").await["reason"],
        "codeExpired"
    );
    sh.send(&json!({"id": 9, "type": "redeemCode", "code": code}))
        .await
        .unwrap();
    assert_eq!(expect_signal(&mut sh, "error").await["code"], "codeExpired");
    s.server.shutdown().await;
}

#[tokio::test]
async fn every_policy_denial_reaches_the_helper_at_request_time() {
    let dir = tempfile::tempdir().unwrap();
    let s = TestServer::start(dir.path()).await;
    let admin = tenant(&s).await;
    let mut h = user_client(&s, "helen@contoso.com").await;
    let mut sh = user_client(&s, "sam@contoso.com").await;
    let ask = |mode: &'static str| json!({"id": 1, "type": "requestMode", "mode": mode, "acknowledgeWarnings": ["deviceUnenrolled", "deviceNotCompliant"]});
    // unattendedRequiresEnrolledDevice: Sam has no enrolled device.
    let sid = join(&mut h, &mut sh).await;
    let mut m = ask("unattended");
    m["sessionId"] = json!(sid);
    h.send(&m).await.unwrap();
    assert_eq!(
        expect_signal(&mut h, "error").await["code"],
        "unattendedRequiresEnrolledDevice"
    );
    // unenrolledDeviceNotAllowed, then remoteHelpDisabled (which also ends the session).
    s.patch(
        SETTINGS,
        &admin,
        &json!({"allowSessionsToUnenrolledDevices": false}),
    )
    .await;
    let mut m = ask("viewOnly");
    m["sessionId"] = json!(sid);
    h.send(&m).await.unwrap();
    assert_eq!(
        expect_signal(&mut h, "error").await["code"],
        "unenrolledDeviceNotAllowed"
    );
    s.patch(
        SETTINGS,
        &admin,
        &json!({"allowSessionsToUnenrolledDevices": true}),
    )
    .await;

    // notInScope: Vic's assignment reaches only an empty group.
    let vic = admin_post(
        &s,
        &admin,
        "/beta/users",
        json!({"userPrincipalName": "vic@contoso.com", "displayName": "Vic"}),
    )
    .await;
    let narrow = admin_post(&s, &admin, "/beta/groups", json!({"displayName": "Narrow"})).await;
    let empty = admin_post(&s, &admin, "/beta/groups", json!({"displayName": "Nobody"})).await;
    admin_post(
        &s,
        &admin,
        &format!(
            "/beta/groups/{}/members/$ref",
            narrow["id"].as_str().unwrap()
        ),
        json!({"@odata.id": vic["id"]}),
    )
    .await;
    admin_post(
        &s,
        &admin,
        "/beta/deviceManagement/roleAssignments",
        json!({"displayName": "narrow", "members": [narrow["id"]], "resourceScopes": [empty["id"]], "roleDefinition@odata.bind": "builtin-help-desk-operator"}),
    )
    .await;
    // permissionMissing: Pat's role reaches everyone but lacks Offer and Read.
    let pat = admin_post(
        &s,
        &admin,
        "/beta/users",
        json!({"userPrincipalName": "pat@contoso.com", "displayName": "Pat"}),
    )
    .await;
    let viewers = admin_post(
        &s,
        &admin,
        "/beta/groups",
        json!({"displayName": "Viewers"}),
    )
    .await;
    admin_post(
        &s,
        &admin,
        &format!(
            "/beta/groups/{}/members/$ref",
            viewers["id"].as_str().unwrap()
        ),
        json!({"@odata.id": pat["id"]}),
    )
    .await;
    let role = admin_post(
        &s,
        &admin,
        "/beta/deviceManagement/roleDefinitions",
        json!({"displayName": "View only", "rolePermissions": [{"resourceActions": [{"allowedResourceActions": ["Microsoft.Intune_RemoteAssistanceApp_ViewScreen"]}]}]}),
    )
    .await;
    admin_post(
        &s,
        &admin,
        "/beta/deviceManagement/roleAssignments",
        json!({"displayName": "viewers", "members": [viewers["id"]], "scopeType": "allLicensedUsers", "roleDefinition@odata.bind": role["id"]}),
    )
    .await;
    for (upn, reason) in [
        ("vic@contoso.com", "notInScope"),
        ("pat@contoso.com", "permissionMissing"),
    ] {
        let mut helper = signal_client(&s, &user_token(&s, "contoso", upn, None)).await;
        let mut sharer = user_client(&s, "sam@contoso.com").await;
        let sid = join(&mut helper, &mut sharer).await;
        let mut m = ask("viewOnly");
        m["sessionId"] = json!(sid);
        helper.send(&m).await.unwrap();
        assert_eq!(
            expect_signal(&mut helper, "error").await["code"],
            reason,
            "{upn}"
        );
    }

    // remoteHelpDisabled ends the tenant's sessions.
    s.patch(
        SETTINGS,
        &admin,
        &json!({"remoteAssistanceState": "disabled"}),
    )
    .await;
    assert_eq!(
        expect_signal(&mut h, "sessionEnded").await["reason"],
        "remoteHelpDisabled"
    );
    s.server.shutdown().await;
}

#[tokio::test]
async fn unattended_without_a_present_sharer_starts_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let s = TestServer::start(dir.path()).await;
    let admin = tenant(&s).await;
    admin_post(&s, &admin, "/beta/deviceManagement/managedDevices", json!({"azureADDeviceId": "aad-kiosk", "deviceName": "KIOSK", "complianceState": "compliant", "userPrincipalName": "sam@contoso.com"})).await;
    // A device token: the device, nobody signed in.
    let mut r = request("contoso", &[]);
    r.user_principal_name = String::new();
    r.device_id = Some("aad-kiosk".into());
    let device_token = s.dev.mint(&r).unwrap();
    let mut dev = signal_client(&s, &device_token).await;
    dev.send(&json!({"id": 0, "type": "ping"})).await.unwrap();
    expect_signal(&mut dev, "pong").await;
    let mut h = user_client(&s, "helen@contoso.com").await;
    h.send(
        &json!({"id": 1, "type": "requestSession", "deviceId": "aad-kiosk", "mode": "unattended"}),
    )
    .await
    .unwrap();
    let req = expect_signal(&mut dev, "launchRequested").await;
    dev.send(
        &json!({"id": 1, "type": "answerLaunch", "sessionId": req["sessionId"], "accept": true}),
    )
    .await
    .unwrap();
    assert_eq!(
        expect_signal(&mut h, "modeRequested").await["consent"],
        "none"
    );
    assert_eq!(
        expect_signal(&mut h, "sessionActive").await["mode"],
        "unattended"
    );
    assert_eq!(
        expect_signal(&mut dev, "sessionActive").await["mode"],
        "unattended"
    );
    // A device token has no admin rights.
    let (st, _) = s.get(SETTINGS, Some(&device_token)).await;
    assert_eq!(st, 403);
    s.server.shutdown().await;
}
