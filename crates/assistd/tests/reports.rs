//! Session reports and recovery over real HTTPS. Sessions are written through the store as the
//! broker writes them (the signalling service that drives this in production is separate).

mod common;

use common::*;
use serde_json::{json, Value};

const REPORT: &str = "/beta/deviceManagement/reports/getRemoteAssistanceSessionsReport";
const ADMIN: &[&str] = &[
    "DeviceManagementServiceConfig.Read.All",
    "User.ReadWrite.All",
    "Group.ReadWrite.All",
    "DeviceManagementRBAC.ReadWrite.All",
];

async fn post(s: &TestServer, token: &str, path: &str, body: Value) -> (u16, Value) {
    send(s.client.post(s.url(path)).bearer_auth(token).json(&body)).await
}

/// Makes the token's user a member of a group assigned a role with ViewReports.
async fn grant_view_reports(s: &TestServer, token: &str) {
    let me = s
        .get(
            "/beta/users?$filter=userPrincipalName eq 'admin@contoso.example'",
            Some(token),
        )
        .await
        .1["value"][0]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let g = post(
        s,
        token,
        "/beta/groups",
        json!({"displayName": "Report readers"}),
    )
    .await
    .1["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let (st, _) = post(
        s,
        token,
        &format!("/beta/groups/{g}/members/$ref"),
        json!({"@odata.id": me}),
    )
    .await;
    assert_eq!(st, 204);
    let role = post(
        s,
        token,
        "/beta/deviceManagement/roleDefinitions",
        json!({"displayName": "Reports", "rolePermissions": [{"resourceActions": [{"allowedResourceActions": ["Microsoft.Intune_RemoteAssistance_ViewReports"]}]}]}),
    )
    .await
    .1["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let (st, b) = post(
        s,
        token,
        "/beta/deviceManagement/roleAssignments",
        json!({"displayName": "Readers", "members": [g], "scopeType": "allLicensedUsers", "roleDefinition@odata.bind": role}),
    )
    .await;
    assert_eq!(st, 201, "{b}");
}

#[tokio::test]
async fn sessions_report_filters_orders_pages_and_needs_view_reports() {
    let dir = tempfile::tempdir().unwrap();
    let s = TestServer::start_keeping_history(dir.path()).await;
    let token = s.token("contoso", ADMIN);
    let store = assist_store::Store::open(&s.store_url).await.unwrap();
    for (i, (helper, mode, start)) in [
        ("hana@contoso.com", "viewOnly", "2026-11-01T10:00:00Z"),
        ("hugo@contoso.com", "fullControl", "2026-11-02T10:00:00Z"),
        ("hana@contoso.com", "elevation", "2026-11-03T10:00:00Z"),
    ]
    .iter()
    .enumerate()
    {
        let body = json!({"helperEmail": helper, "helperTenantId": "contoso", "sharerEmail": "sam@contoso.com", "sharerDeviceName": "SAM-PC", "sharerEnrollmentState": "enrolled"});
        store
            .session_started("contoso", &format!("s{i}"), start, mode, &body, None)
            .await
            .unwrap();
    }
    store
        .session_ended(
            "contoso",
            "s0",
            "2026-11-01T10:30:00Z",
            "helperEnded",
            "helper",
            None,
        )
        .await
        .unwrap();
    store
        .session_started(
            "fabrikam",
            "x",
            "2026-11-01T10:00:00Z",
            "viewOnly",
            &json!({}),
            None,
        )
        .await
        .unwrap();

    // The Graph scope alone is not enough: the RBAC action is needed too.
    let (st, b) = post(&s, &token, REPORT, json!({})).await;
    assert_eq!(st, 403, "{b}");
    assert_graph_error(&b, "Forbidden");
    grant_view_reports(&s, &token).await;

    let (st, b) = post(&s, &token, REPORT, json!({"name": "RemoteAssistanceSessions", "select": ["id", "helperEmail", "remoteAssistanceSessionType", "endReason"], "orderBy": ["startDateTime desc"], "skip": 0, "top": 50})).await;
    assert_eq!(st, 200, "{b}");
    assert_eq!(b["TotalRowCount"], 3, "only this tenant's sessions");
    assert_eq!(
        b["Schema"][0],
        json!({"Column": "id", "PropertyType": "String"})
    );
    assert_eq!(
        b["Values"][0],
        json!(["s2", "hana@contoso.com", "elevation", null])
    );
    assert_eq!(
        b["Values"][2],
        json!(["s0", "hana@contoso.com", "viewOnly", "helperEnded"])
    );

    let (_, b) = post(
        &s,
        &token,
        REPORT,
        json!({"filter": "helperEmail eq 'hugo@contoso.com'", "select": ["id"]}),
    )
    .await;
    assert_eq!(b["Values"], json!([["s1"]]));
    let (_, b) = post(&s, &token, REPORT, json!({"filter": "startDateTime ge 2026-11-02T00:00:00Z", "select": ["id"], "orderBy": ["id asc"], "top": 1, "skip": 1})).await;
    assert_eq!(b["TotalRowCount"], 2);
    assert_eq!(b["Values"], json!([["s2"]]));
    let (_, b) = post(
        &s,
        &token,
        REPORT,
        json!({"search": "HUGO", "select": ["id"]}),
    )
    .await;
    assert_eq!(b["Values"], json!([["s1"]]));
    for bad in [
        json!({"select": ["nope"]}),
        json!({"filter": "nope eq 1"}),
        json!({"orderBy": ["id sideways"]}),
        json!({"name": "Other"}),
        json!({"colour": 1}),
    ] {
        let (st, b) = post(&s, &token, REPORT, bad.clone()).await;
        assert_eq!(st, 400, "{bad}: {b}");
    }

    let (st, b) = s
        .get(
            "/assist/v1/reports/sessionSummary?from=2026-11-01T00:00:00Z&to=2026-12-01T00:00:00Z",
            Some(&token),
        )
        .await;
    assert_eq!(st, 200, "{b}");
    assert_eq!(b["activeSessions"], 2);
    assert_eq!(b["waitingSessions"], 0);
    assert_eq!(b["totalSessions"], 3);
    assert_eq!(b["averageSessionSeconds"], 1800.0);
    // What HTTP clients send: percent-encoded, and the same instants with an offset.
    for period in [
        "from=2026-11-01T00%3A00%3A00Z&to=2026-12-01T00%3A00%3A00Z",
        "from=2026-11-01T01%3A00%3A00%2B01%3A00&to=2026-11-30T23:00:00-01:00",
    ] {
        let (st, b) = s
            .get(
                &format!("/assist/v1/reports/sessionSummary?{period}"),
                Some(&token),
            )
            .await;
        assert_eq!((st, &b["totalSessions"]), (200, &json!(3)), "{period}: {b}");
    }
    let (_, b) = s
        .get(
            "/assist/v1/reports/sessionSummary?from=2026-11-02T00%3A00%3A00Z",
            Some(&token),
        )
        .await;
    assert_eq!(b["totalSessions"], 2, "{b}");
    assert_eq!(b["from"], "2026-11-02T00:00:00Z");
    for bad in [
        "from=garbage",
        "to=2026-13-01T00:00:00Z",
        "from=%ZZ",
        "colour=red",
    ] {
        let (st, b) = s
            .get(
                &format!("/assist/v1/reports/sessionSummary?{bad}"),
                Some(&token),
            )
            .await;
        assert_eq!(st, 400, "{bad}: {b}");
        assert_graph_error(&b, "BadRequest");
    }

    // A code out is a waiting session, read live from the broker, until it is withdrawn.
    let tls = assist_client::tls::client_config(&s.server.cert_path).unwrap();
    let mut helper = assist_client::signal::SignalClient::connect(
        s.server.https_addr,
        "localhost",
        tls,
        Some(&token),
    )
    .await
    .unwrap();
    helper
        .send(&json!({"id": 1, "type": "requestCode"}))
        .await
        .unwrap();
    let issued = match helper.recv().await.unwrap() {
        assist_client::signal::SignalEvent::Message(m) => m,
        other => panic!("expected codeIssued, got {other:?}"),
    };
    assert_eq!(issued["type"], "codeIssued", "{issued}");
    let summary = "/assist/v1/reports/sessionSummary";
    assert_eq!(s.get(summary, Some(&token)).await.1["waitingSessions"], 1);
    helper
        .send(&json!({"id": 2, "type": "endSession", "sessionId": issued["sessionId"]}))
        .await
        .unwrap();
    let mut waiting = 1;
    for _ in 0..50 {
        waiting = s.get(summary, Some(&token)).await.1["waitingSessions"]
            .as_i64()
            .unwrap_or(-1);
        if waiting == 0 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert_eq!(waiting, 0);
    s.server.shutdown().await;
}

#[tokio::test]
async fn a_restart_closes_sessions_left_open() {
    let dir = tempfile::tempdir().unwrap();
    let s = TestServer::start_keeping_history(dir.path()).await;
    let token = s.token("contoso", ADMIN);
    grant_view_reports(&s, &token).await;
    let store = assist_store::Store::open(&s.store_url).await.unwrap();
    store
        .session_started(
            "contoso",
            "live",
            "2026-11-05T10:00:00Z",
            "fullControl",
            &json!({}),
            None,
        )
        .await
        .unwrap();
    store
        .session_seen("contoso", "live", "2026-11-05T10:07:00Z", None)
        .await
        .unwrap();
    store.close().await;
    // The broker dies (here: stops) with the session open, and starts again.
    s.server.shutdown().await;
    let s = TestServer::start_keeping_history(dir.path()).await;
    let (st, b) = post(
        &s,
        &token,
        REPORT,
        json!({"select": ["id", "state", "endDateTime", "endReason", "endedBy"]}),
    )
    .await;
    assert_eq!(st, 200, "{b}");
    assert_eq!(
        b["Values"],
        json!([[
            "live",
            "ended",
            "2026-11-05T10:07:00Z",
            "brokerRestart",
            "broker"
        ]])
    );
    s.server.shutdown().await;
}

/// A real relay session (a slow WSS helper, a QUIC sharer flooding screen frames) lands its
/// quality figures in the session record and the report's Assist columns: bytes per direction,
/// screen frames dropped, keyframe requests, round-trip time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relay_quality_figures_reach_the_sessions_report() {
    use assist_client::relay::{connect_quic, connect_wss, quic_endpoint, ClientEvent};
    use assist_relay::Role;
    use assist_relay_proto::frame::{Channel, Frame};
    use std::time::Duration;

    let dir = tempfile::tempdir().unwrap();
    let mut settings = assistd::Settings::ephemeral(dir.path());
    settings.retention_days = 3650;
    settings.relay.queue.max_frames = 8;
    settings.relay.queue.max_bytes = 512 * 1024;
    let s = TestServer::start_with(settings).await;
    let token = s.token("contoso", ADMIN);
    grant_view_reports(&s, &token).await;
    let store = s.open_store().await;
    let sid = "q1";
    store
        .session_started(
            "contoso",
            sid,
            "2026-11-05T10:00:00Z",
            "fullControl",
            &json!({"helperEmail": "hana@contoso.com"}),
            None,
        )
        .await
        .unwrap();

    let relay = s.server.relay.as_ref().expect("a relay").identity().clone();
    let tls = (*assist_client::tls::client_config(&s.server.cert_path).unwrap()).clone();
    let ht = s.server.tickets.mint(
        sid,
        Role::Helper,
        assist_policy::Mode::FullControl,
        true,
        &relay,
    );
    let st = s.server.tickets.mint(
        sid,
        Role::Sharer,
        assist_policy::Mode::FullControl,
        true,
        &relay,
    );
    let (mut h_tx, mut h_rx) = connect_wss(
        s.server.https_addr,
        "localhost",
        std::sync::Arc::new(tls.clone()),
        &ht,
    )
    .await
    .unwrap();
    let ep = quic_endpoint(tls).unwrap();
    let (mut s_tx, _s_rx) = connect_quic(
        &ep,
        s.server.quic_addr.expect("a QUIC socket"),
        "localhost",
        &st,
    )
    .await
    .unwrap();
    // The helper does not read while the sharer floods: the relay drops stale screen frames.
    let frame = Frame::new(Channel::Screen, 0, &vec![7u8; 64 * 1024]);
    for _ in 0..300 {
        s_tx.send(&frame).await.unwrap();
    }
    h_tx.send(&Frame::new(Channel::Input, 0, b"click"))
        .await
        .unwrap();
    // Long enough for the QUIC leg's path statistics to be sampled (once a second).
    tokio::time::sleep(Duration::from_millis(2500)).await;
    s.server
        .relay
        .as_ref()
        .expect("a relay")
        .end_session(sid, "helperEnded");
    loop {
        match tokio::time::timeout(Duration::from_secs(10), h_rx.recv())
            .await
            .unwrap()
            .unwrap()
        {
            ClientEvent::Closed(_) => break,
            ClientEvent::Frame(_) => {}
        }
    }
    let columns = [
        "id",
        "relayBytesHelperToSharer",
        "relayBytesSharerToHelper",
        "relayScreenFramesDropped",
        "relayKeyframeRequests",
        "relayHelperRttMs",
        "relaySharerRttMs",
    ];
    let mut row = Value::Null;
    for _ in 0..100 {
        let (st, b) = post(&s, &token, REPORT, json!({"select": columns})).await;
        assert_eq!(st, 200, "{b}");
        row = b["Values"][0].clone();
        if row[1].is_number() {
            assert_eq!(
                b["Schema"][3],
                json!({"Column": "relayScreenFramesDropped", "PropertyType": "Int64"})
            );
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(row[0], sid, "{row}");
    let n = |i: usize| row[i].as_f64().unwrap_or(0.0);
    assert!(n(1) >= 11.0, "input bytes helper → sharer: {row}");
    assert!(n(2) > 64.0 * 1024.0, "screen bytes sharer → helper: {row}");
    assert!(n(3) > 0.0, "screen frames dropped: {row}");
    assert!(n(4) > 0.0, "keyframe requests: {row}");
    assert!(n(6) > 0.0, "the QUIC sharer's round-trip time: {row}");
    // The metrics have the round-trip samples too.
    let text = metrics_text(&s).await;
    assert!(
        text.lines().any(|l| l
            .starts_with(r#"assist_relay_leg_rtt_seconds_count{transport="quic"}"#)
            && !l.ends_with(" 0")),
        "{text}"
    );
    s.server.shutdown().await;
}

/// The report on a large table (5,000 sessions): paging with `skip`/`top` returns every row
/// exactly once, in order, each page no larger than asked, with or without a filter; the
/// aggregates count them all.
#[tokio::test]
async fn a_large_report_pages_through_every_row_once_in_order() {
    use assist_store::sessions::SessionWrite;
    let dir = tempfile::tempdir().unwrap();
    let s = TestServer::start_keeping_history(dir.path()).await;
    let token = s.token("contoso", ADMIN);
    grant_view_reports(&s, &token).await;
    let store = assist_store::Store::open(&s.store_url).await.unwrap();
    let n = 5000;
    let start = |i: usize| {
        format!(
            "2026-11-01T{:02}:{:02}:{:02}Z",
            i / 3600,
            i / 60 % 60,
            i % 60
        )
    };
    let email = |i: usize| format!("h{}@contoso.com", i % 17);
    let mut writes: Vec<SessionWrite> = (0..n)
        .map(|i| SessionWrite::Started {
            tenant_id: "contoso".into(),
            id: format!("s{i:05}"),
            start_time: start(i),
            mode: ["viewOnly", "fullControl"][i % 2].into(),
            body: json!({"helperEmail": email(i), "sharerDeviceName": format!("PC-{i}")}),
        })
        .collect();
    // Another tenant's sessions are never counted.
    writes.extend((0..50).map(|i| SessionWrite::Started {
        tenant_id: "fabrikam".into(),
        id: format!("f{i}"),
        start_time: start(i),
        mode: "viewOnly".into(),
        body: json!({"helperEmail": email(i)}),
    }));
    for chunk in writes.chunks(500) {
        store.write_session_batch(chunk).await.unwrap();
    }
    // helperEmail ascending, then newest first.
    let mut want: Vec<usize> = (0..n).collect();
    want.sort_by(|&a, &b| email(a).cmp(&email(b)).then(b.cmp(&a)));
    let want: Vec<String> = want.iter().map(|i| format!("s{i:05}")).collect();

    let page_through = |filter: Option<&'static str>, top: usize| {
        let s = &s;
        let token = &token;
        async move {
            let mut got: Vec<String> = Vec::new();
            loop {
                let mut req = json!({"select": ["id"], "orderBy": ["helperEmail"], "skip": got.len(), "top": top});
                if let Some(f) = filter {
                    req["filter"] = json!(f);
                }
                let (st, b) = post(s, token, REPORT, req).await;
                assert_eq!(st, 200, "{b}");
                let values = b["Values"].as_array().unwrap();
                assert!(values.len() <= top);
                let total = b["TotalRowCount"].as_u64().unwrap() as usize;
                if values.is_empty() {
                    assert_eq!(got.len(), total);
                    return got;
                }
                got.extend(values.iter().map(|v| v[0].as_str().unwrap().to_owned()));
            }
        }
    };
    assert_eq!(page_through(None, 1000).await, want);
    let h3: Vec<String> = want
        .iter()
        .filter(|id| id[1..].parse::<usize>().unwrap() % 17 == 3)
        .cloned()
        .collect();
    assert_eq!(h3.len(), 294);
    assert_eq!(
        page_through(Some("helperEmail eq 'H3@contoso.com'"), 100).await,
        h3
    );
    // A search reads the rows one at a time too: the page is the right slice of the matches.
    let (st, b) = post(
        &s,
        &token,
        REPORT,
        json!({"select": ["id", "sharerDeviceName"], "search": "pc-49", "orderBy": ["startDateTime desc"], "skip": 2, "top": 3}),
    )
    .await;
    assert_eq!(st, 200, "{b}");
    // PC-49, PC-490..499, PC-4900..4999: 111 matches, newest first.
    assert_eq!(b["TotalRowCount"], 111, "{b}");
    assert_eq!(
        b["Values"],
        json!([
            ["s04997", "PC-4997"],
            ["s04996", "PC-4996"],
            ["s04995", "PC-4995"]
        ])
    );
    let (st, b) = s
        .get("/assist/v1/reports/sessionSummary", Some(&token))
        .await;
    assert_eq!(st, 200, "{b}");
    assert_eq!(
        (&b["totalSessions"], &b["activeSessions"]),
        (&json!(n), &json!(n))
    );
    let (st, b) = s
        .get(
            "/assist/v1/reports/sessionsPerDay?from=2026-11-01T00:00:00Z&to=2026-11-02T00:00:00Z",
            Some(&token),
        )
        .await;
    assert_eq!(st, 200, "{b}");
    assert_eq!(
        b["value"],
        json!([{"date": "2026-11-01", "viewOnly": n / 2, "fullControl": n / 2, "elevation": 0, "unattended": 0, "total": n}])
    );
    s.server.shutdown().await;
}
