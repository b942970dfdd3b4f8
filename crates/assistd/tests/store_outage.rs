//! A PostgreSQL restart under a running assistd (issue #13, "Failures"): while the database is
//! down, admin reads and writes answer 503 in Graph's shape with `Retry-After` and `/readyz`
//! answers 503; a session that ends meanwhile keeps its record and audit events in the records
//! writer, which writes them once the database is back, none lost; admin writes work again.
//!
//! Always PostgreSQL, on an instance of this test's own (it is stopped and started again),
//! whatever `ASSIST_TEST_STORE` says.

mod common;

use assist_store::StoreUrl;
use assist_testkit::{postgres_bin_dir, postgres_required, PostgresInstance};
use common::*;
use serde_json::json;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Whether the tenant's session `sid` is recorded in `state`.
async fn session_in_state(store: &assist_store::Store, sid: &str, state: &str) -> bool {
    store
        .sessions("contoso")
        .await
        .unwrap()
        .iter()
        .any(|r| r.id == sid && r.state == state)
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
    let admin = help_desk_tenant_as(&s, ADMIN_BUT_DEVICES).await;

    // A session becomes active while the database is up.
    let mut h = user_client(&s, "helen@contoso.com").await;
    let mut sh = user_client(&s, "sam@contoso.com").await;
    let (sid, _, _) = active_session(&mut h, &mut sh).await;

    // Its start is written before the database goes away.
    let store = s.open_store().await;
    eventually(Duration::from_secs(10), "the start is recorded", || {
        let (store, sid) = (&store, &sid);
        async move {
            session_in_state(store, sid, "active").await
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
    let resp = patch_block_chat(&s, &admin).await;
    assert_unavailable("an admin write", resp).await;
    let (st, body) = s.get(SETTINGS, Some(&admin)).await;
    assert_eq!(st, 503, "{body}");
    assert_graph_error(&body, "ServiceUnavailable");
    assert_eq!(readyz(&s).await, 503);

    // The session ends while the database is down: both sides hear it at once.
    sh.send(&json!({"id": "r3", "type": "endSession", "sessionId": sid}))
        .await
        .unwrap();
    let ended = expect_signal(&mut h, "sessionEnded").await;
    assert_eq!(ended["reason"], "ended");
    // The writer has tried the end's batch and holds it.
    eventually(
        Duration::from_secs(30),
        "the records writer retries",
        || async {
            metric_value(
                &metrics_text(&s).await,
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
        async move { session_in_state(store, sid, "ended").await }
    })
    .await;
    let row = session_record(&store, &sid).await;
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
    let text = metrics_text(&s).await;
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
