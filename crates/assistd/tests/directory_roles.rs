//! Entra directory roles (`wids`) over real HTTPS: a Global or Intune Administrator may make
//! every Remote Help admin call, reports included, with no Graph permission in the token and no
//! role assignment; any other directory role, or a device token, gets nothing from `wids`.
//! And the Monitor chart's `sessionsPerDay` extension.

mod common;

use assist_identity::{GLOBAL_ADMINISTRATOR, INTUNE_ADMINISTRATOR};
use common::*;
use serde_json::{json, Value};

const REPORT: &str = "/beta/deviceManagement/reports/getRemoteAssistanceSessionsReport";
const HELPDESK_ADMINISTRATOR: &str = "729827e3-9c14-49f7-bb1b-9608f156bbb8";

fn token_with_wids(s: &TestServer, upn: &str, wids: &[&str], device: bool) -> String {
    let mut r = request("contoso", &[]);
    r.user_principal_name = if device { String::new() } else { upn.into() };
    if device {
        r.device_id = Some("aad-dev-1".into());
    }
    r.directory_roles = wids.iter().map(|w| w.to_string()).collect();
    s.dev.mint(&r).expect("mint")
}

async fn call(
    s: &TestServer,
    token: &str,
    method: &str,
    path: &str,
    body: Option<Value>,
) -> (u16, Value) {
    let url = s.url(path);
    let req = match method {
        "GET" => s.client.get(url),
        "POST" => s.client.post(url),
        "PATCH" => s.client.patch(url),
        other => panic!("method {other}"),
    };
    let req = req.bearer_auth(token);
    send(match body {
        Some(b) => req.json(&b),
        None => req,
    })
    .await
}

/// Every kind of admin call the console makes, in an order where each can succeed.
async fn admin_calls(s: &TestServer, token: &str) -> Vec<(String, u16, Value)> {
    let mut out = Vec::new();
    let calls: Vec<(&str, &str, Option<Value>)> = vec![
        ("GET", SETTINGS, None),
        (
            "PATCH",
            SETTINGS,
            Some(json!({"remoteAssistanceState": "enabled"})),
        ),
        ("GET", "/beta/users", None),
        (
            "POST",
            "/beta/users",
            Some(json!({"userPrincipalName": "sam@contoso.com", "displayName": "Sam"})),
        ),
        (
            "POST",
            "/beta/groups",
            Some(json!({"displayName": "Helpers"})),
        ),
        ("GET", "/beta/deviceManagement/managedDevices", None),
        ("GET", "/beta/deviceManagement/roleDefinitions", None),
        (
            "POST",
            "/beta/deviceManagement/roleDefinitions",
            Some(
                json!({"displayName": "Viewer", "rolePermissions": [{"resourceActions": [{"allowedResourceActions": ["Microsoft.Intune_RemoteAssistanceApp_ViewScreen"]}]}]}),
            ),
        ),
        ("GET", "/beta/deviceManagement/roleAssignments", None),
        ("GET", "/beta/deviceManagement/auditEvents", None),
        (
            "POST",
            "/assist/v1/policy/evaluate",
            Some(
                json!({"helper": "sam@contoso.com", "sharer": "sam@contoso.com", "mode": "viewOnly"}),
            ),
        ),
        ("POST", REPORT, Some(json!({}))),
        ("GET", "/assist/v1/reports/sessionSummary", None),
        (
            "GET",
            "/assist/v1/reports/sessionsPerDay?from=2026-11-01T00:00:00Z&to=2026-11-08T00:00:00Z",
            None,
        ),
    ];
    for (method, path, body) in calls {
        let (st, b) = call(s, token, method, path, body).await;
        out.push((format!("{method} {path}"), st, b));
    }
    out
}

#[tokio::test]
async fn global_and_intune_administrators_may_make_every_admin_call_reports_included() {
    for (i, admin) in [GLOBAL_ADMINISTRATOR, INTUNE_ADMINISTRATOR]
        .iter()
        .enumerate()
    {
        let dir = tempfile::tempdir().unwrap();
        let s = TestServer::start(dir.path()).await;
        let token = token_with_wids(&s, &format!("boss{i}@contoso.com"), &[admin], false);
        for (what, st, b) in admin_calls(&s, &token).await {
            assert!((200..300).contains(&st), "{admin}: {what} → {st} {b}");
        }
        // The writes were really made, and audited with the admin as actor.
        let (_, b) = s.get(SETTINGS, Some(&token)).await;
        assert_eq!(b["remoteAssistanceState"], "enabled");
        let (_, b) = s
            .get(
                "/beta/deviceManagement/auditEvents?$filter=category eq 'RemoteAssistance'",
                Some(&token),
            )
            .await;
        assert_eq!(
            b["value"][0]["actor"]["userPrincipalName"],
            format!("boss{i}@contoso.com")
        );
    }
}

#[tokio::test]
async fn other_directory_roles_and_device_tokens_get_nothing_from_wids() {
    let dir = tempfile::tempdir().unwrap();
    let s = TestServer::start(dir.path()).await;
    for token in [
        token_with_wids(&s, "helpdesk@contoso.com", &[HELPDESK_ADMINISTRATOR], false),
        token_with_wids(&s, "nobody@contoso.com", &[], false),
        token_with_wids(&s, "", &[GLOBAL_ADMINISTRATOR], true),
    ] {
        for (what, st, b) in admin_calls(&s, &token).await {
            assert_eq!(st, 403, "{what} → {b}");
            assert_graph_error(&b, "Forbidden");
        }
    }
    // Nothing was written by the refused calls.
    let admin = token_with_wids(&s, "boss@contoso.com", &[GLOBAL_ADMINISTRATOR], false);
    let (_, b) = s.get(SETTINGS, Some(&admin)).await;
    assert_eq!(b["remoteAssistanceState"], "disabled");
}

#[tokio::test]
async fn a_graph_scope_without_view_reports_is_still_refused_reports_unless_admin() {
    let dir = tempfile::tempdir().unwrap();
    let s = TestServer::start(dir.path()).await;
    // A Graph scope alone: the report needs the RBAC action too.
    let scoped = s.token("contoso", &[READ]);
    let (st, b) = call(&s, &scoped, "POST", REPORT, Some(json!({}))).await;
    assert_eq!(st, 403, "{b}");
    // The same scope plus Intune Administrator: allowed.
    let mut r = request("contoso", &[READ]);
    r.directory_roles = vec![INTUNE_ADMINISTRATOR.into()];
    let admin = s.dev.mint(&r).unwrap();
    let (st, b) = call(&s, &admin, "POST", REPORT, Some(json!({}))).await;
    assert_eq!(st, 200, "{b}");
}

#[tokio::test]
async fn sessions_per_day_counts_this_tenants_sessions_by_mode_and_validates_its_period() {
    let dir = tempfile::tempdir().unwrap();
    let s = TestServer::start_keeping_history(dir.path()).await;
    let admin = token_with_wids(&s, "boss@contoso.com", &[GLOBAL_ADMINISTRATOR], false);
    let store = assist_store::Store::open(&s.store_url).await.unwrap();
    for (tenant, id, start, mode) in [
        ("contoso", "s1", "2026-11-01T10:00:00Z", "viewOnly"),
        ("contoso", "s2", "2026-11-01T11:00:00Z", "fullControl"),
        ("contoso", "s3", "2026-11-03T09:00:00Z", "fullControl"),
        ("contoso", "s4", "2026-11-04T09:00:00Z", "unattended"),
        ("fabrikam", "x1", "2026-11-01T10:00:00Z", "viewOnly"),
    ] {
        store
            .session_started(tenant, id, start, mode, &json!({}), None)
            .await
            .unwrap();
    }
    let path =
        "/assist/v1/reports/sessionsPerDay?from=2026-11-01T00:00:00Z&to=2026-11-04T00:00:00Z";
    let (st, b) = s.get(path, Some(&admin)).await;
    assert_eq!(st, 200, "{b}");
    assert_eq!(b["from"], "2026-11-01T00:00:00Z");
    assert_eq!(
        b["value"],
        json!([
            {"date": "2026-11-01", "viewOnly": 1, "fullControl": 1, "elevation": 0, "unattended": 0, "total": 2},
            {"date": "2026-11-02", "viewOnly": 0, "fullControl": 0, "elevation": 0, "unattended": 0, "total": 0},
            {"date": "2026-11-03", "viewOnly": 0, "fullControl": 1, "elevation": 0, "unattended": 0, "total": 1},
        ])
    );
    // Percent-encoded bounds are read too.
    let (st, b) = s
        .get("/assist/v1/reports/sessionsPerDay?from=2026-11-04T00%3A00%3A00Z&to=2026-11-05T00%3A00%3A00%2B00%3A00", Some(&admin))
        .await;
    assert_eq!(st, 200, "{b}");
    assert_eq!(b["value"][0]["unattended"], 1);
    // The summary reads percent-encoded bounds too (as a browser sends them).
    let (st, b) = s
        .get(
            "/assist/v1/reports/sessionSummary?from=2026-11-01T00%3A00%3A00Z&to=2026-11-03T10%3A00%3A00Z",
            Some(&admin),
        )
        .await;
    assert_eq!(st, 200, "{b}");
    assert_eq!(b["totalSessions"], 3, "{b}");
    assert_eq!(b["to"], "2026-11-03T10:00:00Z");
    for bad in [
        "",
        "?from=2026-11-01T00:00:00Z",
        "?from=yesterday&to=2026-11-04T00:00:00Z",
        "?from=2026-11-04T00:00:00Z&to=2026-11-01T00:00:00Z",
        "?from=2025-01-01T00:00:00Z&to=2026-11-01T00:00:00Z",
        "?from=2026-11-01T00:00:00Z&to=2026-11-04T00:00:00Z&mode=x",
        "?from=2026-11-01T00:00:00Z&from=2026-11-02T00:00:00Z&to=2026-11-04T00:00:00Z",
    ] {
        let (st, b) = s
            .get(
                &format!("/assist/v1/reports/sessionsPerDay{bad}"),
                Some(&admin),
            )
            .await;
        assert_eq!(st, 400, "{bad}: {b}");
        assert_graph_error(&b, "BadRequest");
    }
}
