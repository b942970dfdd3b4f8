//! remoteAssistanceSettings over real HTTPS with real tokens: authentication, permissions,
//! validation, tenancy, persistence and audit.

mod common;

use assist_identity::claims::Claims;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use common::*;
use serde_json::json;
use std::time::{SystemTime, UNIX_EPOCH};

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

#[tokio::test]
async fn unconfigured_tenant_reads_disabled() {
    let dir = tempfile::tempdir().unwrap();
    let s = TestServer::start(dir.path()).await;
    let (status, body) = s.get(SETTINGS, Some(&s.token("t1", &[READ]))).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body,
        json!({
            "@odata.type": "#microsoft.graph.remoteAssistanceSettings",
            "id": "t1",
            "remoteAssistanceState": "disabled",
            "allowSessionsToUnenrolledDevices": false,
            "blockChat": false
        })
    );
    s.server.shutdown().await;
}

#[tokio::test]
async fn every_bad_token_is_401_in_graph_shape() {
    let dir = tempfile::tempdir().unwrap();
    let s = TestServer::start(dir.path()).await;
    let r = request("t1", &[READ]);

    let expired = s.dev.mint_at(&r, now() - 7200).unwrap();
    let future = s.dev.mint_at(&r, now() + 3600).unwrap();
    let mut wrong_aud = r.clone();
    wrong_aud.audience = "api://someone-else".into();
    let wrong_aud = s.dev.mint(&wrong_aud).unwrap();
    let wrong_iss = s
        .dev
        .sign(&Claims {
            iss: Some("https://login.evil.example/".into()),
            aud: Some("api://assist".into()),
            exp: Some(now() + 600),
            tid: Some("t1".into()),
            oid: Some("o".into()),
            upn: Some("a@b".into()),
            roles: vec![READ.into()],
            ..Default::default()
        })
        .unwrap();
    let good = s.dev.mint(&r).unwrap();
    let parts: Vec<&str> = good.split('.').collect();
    let mut payload: serde_json::Value =
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[1]).unwrap()).unwrap();
    payload["roles"] = json!([WRITE]);
    let tampered = format!(
        "{}.{}.{}",
        parts[0],
        URL_SAFE_NO_PAD.encode(payload.to_string()),
        parts[2]
    );
    let alg_none = format!(
        "{}.{}.",
        URL_SAFE_NO_PAD.encode(r#"{"alg":"none","typ":"JWT"}"#),
        parts[1]
    );
    let other_dir = tempfile::tempdir().unwrap();
    let stranger = assist_identity::DevIssuer::load_or_create(other_dir.path()).unwrap();
    let unknown_kid = stranger.mint(&r).unwrap();

    for (name, token, needle) in [
        ("expired", expired.as_str(), "expired"),
        ("not yet valid", future.as_str(), "not valid yet"),
        ("wrong audience", wrong_aud.as_str(), "audience"),
        ("wrong issuer", wrong_iss.as_str(), "issuer"),
        ("tampered", tampered.as_str(), "signature"),
        ("alg none", alg_none.as_str(), "algorithm"),
        ("unknown kid", unknown_kid.as_str(), "unknown key"),
        ("garbage", "not-a-jwt", "malformed"),
    ] {
        let (status, body) = s.get(SETTINGS, Some(token)).await;
        assert_eq!(status, 401, "{name}: {body}");
        let msg = assert_graph_error(&body, "InvalidAuthenticationToken");
        assert!(
            msg.contains(needle),
            "{name}: message '{msg}' should mention '{needle}'"
        );
    }
    let (status, body) = s.get(SETTINGS, None).await;
    assert_eq!(status, 401);
    assert_graph_error(&body, "InvalidAuthenticationToken");
    // The genuine token still works.
    assert_eq!(s.get(SETTINGS, Some(&good)).await.0, 200);
    s.server.shutdown().await;
}

#[tokio::test]
async fn permissions_are_checked() {
    let dir = tempfile::tempdir().unwrap();
    let s = TestServer::start(dir.path()).await;
    let none = s.token("t1", &[]);
    let (status, body) = s.get(SETTINGS, Some(&none)).await;
    assert_eq!(status, 403);
    assert_graph_error(&body, "Forbidden");

    let reader = s.token("t1", &[READ]);
    let (status, body) = s
        .patch(SETTINGS, &reader, &json!({"blockChat": true}))
        .await;
    assert_eq!(status, 403, "{body}");
    assert_graph_error(&body, "Forbidden");

    // The DeviceManagementConfiguration pair works too, and delegated scopes count like roles.
    let cfg = s.token("t1", &["DeviceManagementConfiguration.ReadWrite.All"]);
    assert_eq!(
        s.patch(SETTINGS, &cfg, &json!({"blockChat": true})).await.0,
        200
    );
    let mut delegated = request("t1", &[]);
    delegated.scopes = vec!["DeviceManagementConfiguration.Read.All".into()];
    let delegated = s.dev.mint(&delegated).unwrap();
    let (status, body) = s.get(SETTINGS, Some(&delegated)).await;
    assert_eq!(status, 200);
    assert_eq!(body["blockChat"], true);
    s.server.shutdown().await;
}

#[tokio::test]
async fn patch_applies_exactly_what_is_sent_and_select_works() {
    let dir = tempfile::tempdir().unwrap();
    let s = TestServer::start(dir.path()).await;
    let admin = s.token("t1", &[WRITE]);
    // The seed page's example.
    let (status, body) = s
        .patch(
            SETTINGS,
            &admin,
            &json!({
                "@odata.type": "#microsoft.graph.remoteAssistanceSettings",
                "remoteAssistanceState": "enabled",
                "allowSessionsToUnenrolledDevices": true,
                "blockChat": true
            }),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["remoteAssistanceState"], "enabled");
    assert_eq!(body["allowSessionsToUnenrolledDevices"], true);
    assert_eq!(body["blockChat"], true);
    assert_eq!(body["id"], "t1");

    let (status, body) = s
        .patch(SETTINGS, &admin, &json!({"blockChat": false}))
        .await;
    assert_eq!(status, 200);
    assert_eq!(body["blockChat"], false);
    assert_eq!(
        body["allowSessionsToUnenrolledDevices"], true,
        "untouched property kept"
    );
    assert_eq!(body["remoteAssistanceState"], "enabled");

    let (status, body) = s
        .get(
            &format!("{SETTINGS}?$select=blockChat,remoteAssistanceState"),
            Some(&admin),
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(
        body,
        json!({"@odata.type": "#microsoft.graph.remoteAssistanceSettings", "blockChat": false, "remoteAssistanceState": "enabled"})
    );
    let (status, body) = s
        .get(&format!("{SETTINGS}?%24select=nothere"), Some(&admin))
        .await;
    assert_eq!(status, 400);
    assert_graph_error(&body, "BadRequest");
    s.server.shutdown().await;
}

#[tokio::test]
async fn bad_input_is_refused_and_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let s = TestServer::start(dir.path()).await;
    let admin = s.token("t1", &[WRITE]);
    let (_, before) = s
        .patch(
            SETTINGS,
            &admin,
            &json!({"remoteAssistanceState": "enabled"}),
        )
        .await;

    for (name, body) in [
        ("invalid enum", json!({"remoteAssistanceState": "on"})),
        ("wrong type", json!({"blockChat": "yes"})),
        (
            "unknown property",
            json!({"blockChat": true, "colour": "red"}),
        ),
        ("read-only id", json!({"id": "other", "blockChat": true})),
        ("not an object", json!([1, 2])),
    ] {
        let (status, resp) = s.patch(SETTINGS, &admin, &body).await;
        assert_eq!(status, 400, "{name}: {resp}");
        assert_graph_error(&resp, "BadRequest");
    }
    let (status, resp) = send(
        s.client
            .patch(s.url(SETTINGS))
            .bearer_auth(&admin)
            .header("content-type", "application/json")
            .body("{\"blockChat\": tru"),
    )
    .await;
    assert_eq!(status, 400);
    assert_graph_error(&resp, "BadRequest");

    let big = format!(
        "{{\"blockChat\": true, \"pad\": \"{}\"}}",
        "x".repeat(4 * 1024 * 1024 + 10)
    );
    let (status, resp) = send(
        s.client
            .patch(s.url(SETTINGS))
            .bearer_auth(&admin)
            .header("content-type", "application/json")
            .body(big),
    )
    .await;
    assert_eq!(status, 413);
    assert_graph_error(&resp, "RequestEntityTooLarge");

    let (_, after) = s.get(SETTINGS, Some(&admin)).await;
    assert_eq!(before, after, "rejected requests changed nothing");

    let (status, resp) = s
        .get("/beta/deviceManagement/nothingHere", Some(&admin))
        .await;
    assert_eq!(status, 404);
    assert_graph_error(&resp, "ResourceNotFound");
    let (status, resp) = send(s.client.delete(s.url(SETTINGS)).bearer_auth(&admin)).await;
    assert_eq!(status, 405);
    assert_graph_error(&resp, "MethodNotAllowed");
    s.server.shutdown().await;

    // Exactly one audit event: the one successful PATCH.
    let store = assist_store::Store::open(&s.store_url).await.unwrap();
    let events = store.audit_events("t1").await.unwrap();
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(events[0]["activityResult"], "Success");
    assert_eq!(events[0]["actor"]["userPrincipalName"], "admin@t1.example");
    let modified = &events[0]["resources"][0]["modifiedProperties"][0];
    assert_eq!(modified["displayName"], "remoteAssistanceState");
    assert_eq!(modified["oldValue"], "\"disabled\"");
    assert_eq!(modified["newValue"], "\"enabled\"");
}

#[tokio::test]
async fn tenants_are_isolated() {
    let dir = tempfile::tempdir().unwrap();
    let s = TestServer::start(dir.path()).await;
    let a = s.token("tenant-a", &[WRITE]);
    let b = s.token("tenant-b", &[WRITE]);
    s.patch(
        SETTINGS,
        &a,
        &json!({"remoteAssistanceState": "enabled", "blockChat": true}),
    )
    .await;
    let (_, body_b) = s.get(SETTINGS, Some(&b)).await;
    assert_eq!(body_b["remoteAssistanceState"], "disabled");
    assert_eq!(body_b["blockChat"], false);
    assert_eq!(body_b["id"], "tenant-b");
    let (_, body_a) = s.get(SETTINGS, Some(&a)).await;
    assert_eq!(body_a["remoteAssistanceState"], "enabled");
    s.server.shutdown().await;
}

#[tokio::test]
async fn settings_survive_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let s = TestServer::start(dir.path()).await;
    let admin = s.token("t1", &[WRITE]);
    s.patch(
        SETTINGS,
        &admin,
        &json!({"remoteAssistanceState": "enabled", "allowSessionsToUnenrolledDevices": true}),
    )
    .await;
    let cert_before = std::fs::read(&s.server.cert_path).unwrap();
    s.server.shutdown().await;

    let s = TestServer::start(dir.path()).await;
    // Same certificate and same dev issuer key after the restart: old tokens still validate.
    assert_eq!(std::fs::read(&s.server.cert_path).unwrap(), cert_before);
    let (status, body) = s.get(SETTINGS, Some(&admin)).await;
    assert_eq!(status, 200);
    assert_eq!(body["remoteAssistanceState"], "enabled");
    assert_eq!(body["allowSessionsToUnenrolledDevices"], true);
    assert_eq!(body["blockChat"], false);
    s.server.shutdown().await;
}

#[tokio::test]
async fn health_readiness_and_metrics() {
    let dir = tempfile::tempdir().unwrap();
    let s = TestServer::start(dir.path()).await;
    let ops = format!("http://{}", s.server.metrics_addr);
    let plain = reqwest::Client::new();
    assert_eq!(
        plain
            .get(format!("{ops}/healthz"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    assert_eq!(
        plain
            .get(format!("{ops}/readyz"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    s.get(SETTINGS, Some(&s.token("t1", &[READ]))).await;
    s.get(SETTINGS, None).await;
    let text = plain
        .get(format!("{ops}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        text.contains(r#"assist_http_requests_total{method="GET",route="/beta/deviceManagement/remoteAssistanceSettings",status="200"} 1"#),
        "{text}"
    );
    assert!(text.contains(r#"status="401"} 1"#), "{text}");
    assert!(text.contains("assist_http_request_duration_seconds_bucket"));
    assert!(text.contains("process_resident_memory_bytes"));
    assert!(
        text.lines()
            .any(|l| l.starts_with("assist_runtime_alive_tasks ")
                && l.split_whitespace()
                    .nth(1)
                    .and_then(|v| v.parse::<u64>().ok())
                    .is_some_and(|v| v > 0)),
        "the runtime task gauge is exported and counts the server's own tasks: {text}"
    );
    s.server.shutdown().await;
}

/// A database busy past its busy timeout (another writer holding SQLite's write lock: in the
/// soak, retention's delete) answers a write with 503 `ServiceUnavailable` and `Retry-After`,
/// not a 500, and changes nothing; once the lock is released the same write succeeds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_to_a_busy_database_is_503_with_retry_after_and_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let mut settings = assistd::Settings::ephemeral(dir.path());
    // Always SQLite (its write lock is what this test holds), whatever ASSIST_TEST_STORE says.
    settings.store = assist_store::StoreUrl::Sqlite(dir.path().join("busy.db"));
    let s = TestServer::start_with(settings).await;
    let admin = s.token("t1", &[WRITE]);
    let (status, body) = s
        .patch(
            SETTINGS,
            &admin,
            &json!({"remoteAssistanceState": "enabled"}),
        )
        .await;
    assert_eq!(status, 200, "{body}");

    let other = s.open_store().await;
    let lock = other.hold_write_lock_for_tests().await.unwrap();
    let started = std::time::Instant::now();
    let resp = s
        .client
        .patch(s.url(SETTINGS))
        .bearer_auth(&admin)
        .json(&json!({"blockChat": true}))
        .send()
        .await
        .unwrap();
    assert_unavailable("PATCH while another writer holds the lock", resp).await;
    // It waited for the lock (the store's busy timeout, 5 s) before giving up.
    assert!(started.elapsed() >= std::time::Duration::from_secs(4));
    lock.release().await.unwrap();

    let (status, body) = s.get(SETTINGS, Some(&admin)).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body["blockChat"], false,
        "the refused write changed nothing: {body}"
    );
    let (status, body) = s.patch(SETTINGS, &admin, &json!({"blockChat": true})).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["blockChat"], true, "{body}");
    other.close().await;
    s.server.shutdown().await;
}
