//! A PostgreSQL restart under a running assistd (issue #13, "Failures"): while the database is
//! down, admin reads and writes answer 503 in Graph's shape with `Retry-After` and `/readyz`
//! answers 503; a session that ends meanwhile keeps its record and audit events in the records
//! writer, which writes them once the database is back, none lost; admin writes work again.
//!
//! Always PostgreSQL, on an instance of this test's own (it is stopped and started again),
//! whatever `ASSIST_TEST_STORE` says.

mod common;

use assist_client::signal::{SignalClient, SignalEvent};
use assist_store::StoreUrl;
use assist_testkit::{postgres_bin_dir, postgres_required, PostgresInstance};
use common::*;
use serde_json::{json, Value};
use std::sync::Arc;
use std::time::{Duration, Instant};

const ADMIN: &[&str] = &[
    "DeviceManagementServiceConfig.ReadWrite.All",
    "User.ReadWrite.All",
    "Group.ReadWrite.All",
    "DeviceManagementRBAC.ReadWrite.All",
    "Domain.ReadWrite.All",
];

fn user_token(s: &TestServer, upn: &str) -> String {
    let mut r = request("contoso", &[]);
    r.user_principal_name = upn.into();
    s.dev.mint(&r).unwrap()
}

async fn connect(s: &TestServer, token: &str) -> SignalClient {
    let tls = assist_client::tls::client_config(&s.server.cert_path).unwrap();
    SignalClient::connect(s.server.https_addr, "localhost", tls, Some(token))
        .await
        .unwrap()
}

/// The next message of `type` (others are skipped; a close fails the test).
async fn expect(c: &mut SignalClient, ty: &str) -> Value {
    loop {
        let ev = tokio::time::timeout(Duration::from_secs(10), c.recv())
            .await
            .expect("a message within 10 s")
            .unwrap();
        match ev {
            SignalEvent::Message(m) if m["type"] == ty => return m,
            SignalEvent::Message(_) => continue,
            SignalEvent::Closed(code) => panic!("closed ({code:?}) while waiting for {ty}"),
        }
    }
}

async fn admin_post(s: &TestServer, token: &str, path: &str, body: Value) -> Value {
    let (st, b) = send(s.client.post(s.url(path)).bearer_auth(token).json(&body)).await;
    assert!(st == 201 || st == 204, "POST {path}: {st} {b}");
    b
}

/// A tenant where helen (Help desk, Help Desk Operator over all users) may help sam.
async fn tenant(s: &TestServer) -> String {
    let admin = s.token("contoso", ADMIN);
    let (st, b) = s
        .patch(
            SETTINGS,
            &admin,
            &json!({"remoteAssistanceState": "enabled", "allowSessionsToUnenrolledDevices": true}),
        )
        .await;
    assert_eq!(st, 200, "{b}");
    let helen = admin_post(
        s,
        &admin,
        "/beta/users",
        json!({"userPrincipalName": "helen@contoso.com", "displayName": "Helen Helper"}),
    )
    .await;
    admin_post(
        s,
        &admin,
        "/beta/users",
        json!({"userPrincipalName": "sam@contoso.com", "displayName": "Sam Sharer"}),
    )
    .await;
    let g = admin_post(
        s,
        &admin,
        "/beta/groups",
        json!({"displayName": "Help desk"}),
    )
    .await;
    let gid = g["id"].as_str().unwrap();
    admin_post(
        s,
        &admin,
        &format!("/beta/groups/{gid}/members/$ref"),
        json!({"@odata.id": helen["id"]}),
    )
    .await;
    admin_post(
        s,
        &admin,
        "/beta/deviceManagement/roleAssignments",
        json!({"displayName": "HDO", "members": [gid], "scopeType": "allLicensedUsers", "roleDefinition@odata.bind": "builtin-help-desk-operator"}),
    )
    .await;
    admin
}

/// The activities of the tenant's audit events about session `sid`.
async fn session_activities(store: &assist_store::Store, sid: &str) -> Vec<String> {
    store
        .audit_events("contoso")
        .await
        .unwrap()
        .iter()
        .filter(|e| e["resources"][0]["resourceId"] == sid)
        .filter_map(|e| e["activity"].as_str().map(str::to_owned))
        .collect()
}

async fn metrics(s: &TestServer) -> String {
    reqwest::get(format!("http://{}/metrics", s.server.metrics_addr))
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

/// The value of a metric line beginning with `series` (0 if absent).
fn metric_value(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.trim().parse().ok())
        .unwrap_or(0.0)
}

async fn readyz(s: &TestServer) -> u16 {
    reqwest::get(format!("http://{}/readyz", s.server.metrics_addr))
        .await
        .unwrap()
        .status()
        .as_u16()
}

/// Polls `check` every 200 ms until it holds, for at most `within`.
async fn eventually<F, Fut>(within: Duration, what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + within;
    while !check().await {
        assert!(Instant::now() < deadline, "not within {within:?}: {what}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_postgres_restart_answers_503_meanwhile_and_loses_no_session_record() {
    if postgres_bin_dir().is_none() {
        assert!(!postgres_required(), "PostgreSQL is required here");
        eprintln!("SKIPPING store_outage: no PostgreSQL server binaries");
        return;
    }
    let pg = Arc::new(PostgresInstance::start().expect("a private PostgreSQL starts"));
    let url = pg.fresh_database();
    let dir = tempfile::tempdir().unwrap();
    let mut settings = assistd::Settings::ephemeral(dir.path());
    settings.store = StoreUrl::Postgres(url.clone());
    let s = TestServer::start_with(settings).await;
    let admin = tenant(&s).await;

    // A session becomes active while the database is up.
    let mut h = connect(&s, &user_token(&s, "helen@contoso.com")).await;
    let mut sh = connect(&s, &user_token(&s, "sam@contoso.com")).await;
    h.send(&json!({"id": 1, "type": "requestCode"}))
        .await
        .unwrap();
    let issued = expect(&mut h, "codeIssued").await;
    let sid = issued["sessionId"].as_str().unwrap().to_owned();
    sh.send(&json!({"id": "r1", "type": "redeemCode", "code": issued["code"]}))
        .await
        .unwrap();
    expect(&mut sh, "sessionJoined").await;
    expect(&mut h, "sessionJoined").await;
    h.send(&json!({"id": 2, "type": "requestMode", "sessionId": sid, "mode": "viewOnly", "acknowledgeWarnings": ["deviceUnenrolled"]})).await.unwrap();
    expect(&mut sh, "consentRequested").await;
    sh.send(&json!({"id": "r2", "type": "consent", "sessionId": sid, "allow": true}))
        .await
        .unwrap();
    expect(&mut h, "sessionActive").await;
    expect(&mut sh, "sessionActive").await;

    // Its start is written before the database goes away.
    let store = s.open_store().await;
    eventually(Duration::from_secs(10), "the start is recorded", || {
        let (store, sid) = (&store, &sid);
        async move {
            store
                .sessions("contoso")
                .await
                .unwrap()
                .iter()
                .any(|r| &r.id == sid && r.state == "active")
                && session_activities(store, sid)
                    .await
                    .contains(&"Remote Help session: started".to_owned())
        }
    })
    .await;
    let before = session_activities(&store, &sid).await;
    store.close().await;

    // PostgreSQL stops.
    let p = pg.clone();
    tokio::task::spawn_blocking(move || p.stop())
        .await
        .unwrap()
        .expect("PostgreSQL stops");

    // Admin writes and reads answer 503 in Graph's shape, with Retry-After; /readyz 503.
    let resp = s
        .client
        .patch(s.url(SETTINGS))
        .bearer_auth(&admin)
        .json(&json!({"blockChat": true}))
        .send()
        .await
        .unwrap();
    assert_unavailable("an admin write", resp).await;
    let (st, body) = s.get(SETTINGS, Some(&admin)).await;
    assert_eq!(st, 503, "{body}");
    assert_graph_error(&body, "ServiceUnavailable");
    assert_eq!(readyz(&s).await, 503);

    // The session ends while the database is down: both sides hear it at once.
    sh.send(&json!({"id": "r3", "type": "endSession", "sessionId": sid}))
        .await
        .unwrap();
    let ended = expect(&mut h, "sessionEnded").await;
    assert_eq!(ended["reason"], "ended");
    // The writer has tried the end's batch and holds it.
    eventually(
        Duration::from_secs(30),
        "the records writer retries",
        || async {
            metric_value(
                &metrics(&s).await,
                r#"assist_store_write_batches_total{result="retry"}"#,
            ) >= 1.0
        },
    )
    .await;

    // PostgreSQL comes back on the same port and data.
    let p = pg.clone();
    tokio::task::spawn_blocking(move || p.start_again())
        .await
        .unwrap()
        .expect("PostgreSQL starts again");

    // The held end and its audit event are written: the row is closed, nothing lost.
    let store = assist_store::Store::open(&StoreUrl::Postgres(url))
        .await
        .unwrap();
    eventually(Duration::from_secs(30), "the end is written", || {
        let (store, sid) = (&store, &sid);
        async move {
            store
                .sessions("contoso")
                .await
                .unwrap()
                .iter()
                .any(|r| &r.id == sid && r.state == "ended")
        }
    })
    .await;
    let row = store
        .sessions("contoso")
        .await
        .unwrap()
        .into_iter()
        .find(|r| r.id == sid)
        .unwrap();
    assert_eq!(row.end_reason.as_deref(), Some("ended"));
    assert_eq!(row.ended_by.as_deref(), Some("sharer"));
    eventually(Duration::from_secs(10), "the end's audit event", || {
        let (store, sid) = (&store, &sid);
        async move {
            session_activities(store, sid)
                .await
                .contains(&"Remote Help session: ended".to_owned())
        }
    })
    .await;
    let after = session_activities(&store, &sid).await;
    assert!(
        before.iter().all(|a| after.contains(a)),
        "{before:?} ⊆ {after:?}"
    );
    let text = metrics(&s).await;
    assert_eq!(
        metric_value(&text, "assist_store_write_queue_depth"),
        0.0,
        "{text}"
    );
    let dropped: f64 = text
        .lines()
        .filter(|l| l.starts_with("assist_store_writes_dropped_total{"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum();
    assert_eq!(dropped, 0.0, "nothing dropped: {text}");

    // Admin writes work again, with their audit event; /readyz is ready.
    let (st, body) = s.patch(SETTINGS, &admin, &json!({"blockChat": true})).await;
    assert_eq!(st, 200, "{body}");
    assert_eq!(body["blockChat"], true);
    assert!(store
        .audit_events("contoso")
        .await
        .unwrap()
        .iter()
        .any(|e| e["activity"] == "Patch remoteAssistanceSettings"
            && e["resources"][0]["modifiedProperties"][0]["newValue"] == "true"));
    eventually(Duration::from_secs(10), "/readyz answers 200", || async {
        readyz(&s).await == 200
    })
    .await;
    store.close().await;
    s.server.shutdown().await;
}
