//! The token's `groups` claim counts for RBAC, in addition to the stored memberships: a helper
//! whose admin group comes only from the token may help, a sharer in scope only through the
//! token's groups is in scope, and the reports' role check sees the token's groups too.

mod common;

use assist_client::signal::{SignalClient, SignalEvent};
use assist_identity::claims::Claims;
use base64::Engine;
use common::*;
use serde_json::{json, Value};
use std::time::Duration;

const ADMIN: &[&str] = &[
    "DeviceManagementServiceConfig.ReadWrite.All",
    "User.ReadWrite.All",
    "Group.ReadWrite.All",
    "DeviceManagementRBAC.ReadWrite.All",
];

/// A dev token for `upn` of contoso whose `groups` claim is `groups`.
fn token_with_groups(s: &TestServer, upn: &str, groups: &[&str], roles: &[&str]) -> String {
    let mut r = request("contoso", roles);
    r.user_principal_name = upn.into();
    let t = s.dev.mint(&r).unwrap();
    let payload = t.split('.').nth(1).unwrap();
    let mut c: Claims = serde_json::from_slice(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(payload)
            .unwrap(),
    )
    .unwrap();
    c.groups = groups.iter().map(|g| g.to_string()).collect();
    s.dev.sign(&c).unwrap()
}

async fn expect(c: &mut SignalClient, ty: &str) -> Value {
    loop {
        let ev = tokio::time::timeout(Duration::from_secs(10), c.recv())
            .await
            .expect("a message within 10 s")
            .unwrap();
        match ev {
            SignalEvent::Message(m) if m["type"] == ty || m["type"] == "error" => {
                return m;
            }
            SignalEvent::Message(_) => continue,
            SignalEvent::Closed(code) => panic!("closed ({code:?}) while waiting for {ty}"),
        }
    }
}

async fn post(s: &TestServer, token: &str, path: &str, body: Value) -> Value {
    let (st, b) = send(s.client.post(s.url(path)).bearer_auth(token).json(&body)).await;
    assert!(st == 201 || st == 204, "POST {path}: {st} {b}");
    b
}

/// Asks for view-only on a fresh session between `helper` and `sharer` tokens; returns the
/// type of what the helper or sharer gets (`consentRequested` when allowed, else the error code).
async fn ask(s: &TestServer, helper: &str, sharer: &str) -> String {
    let h = signal_client(s, helper).await;
    ask_on(s, h, sharer).await
}

/// [`ask`] on an open helper connection.
async fn ask_on(s: &TestServer, mut h: SignalClient, sharer: &str) -> String {
    let mut sh = signal_client(s, sharer).await;
    h.send(&json!({"id": "c", "type": "requestCode"}))
        .await
        .unwrap();
    let issued = expect(&mut h, "codeIssued").await;
    assert_eq!(issued["type"], "codeIssued", "{issued}");
    sh.send(&json!({"id": "j", "type": "redeemCode", "code": issued["code"]}))
        .await
        .unwrap();
    assert_eq!(
        expect(&mut h, "sessionJoined").await["type"],
        "sessionJoined"
    );
    let sid = issued["sessionId"].clone();
    h.send(&json!({"id": 1, "type": "requestMode", "sessionId": sid, "mode": "viewOnly", "acknowledgeWarnings": ["deviceUnenrolled"]}))
        .await
        .unwrap();
    let m = expect(&mut h, "modeRequested").await;
    if m["type"] == "error" {
        return m["code"].as_str().unwrap_or_default().to_owned();
    }
    expect(&mut sh, "consentRequested").await["type"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

#[tokio::test]
async fn groups_from_the_token_count_for_members_and_scope() {
    let dir = tempfile::tempdir().unwrap();
    let s = TestServer::start(dir.path()).await;
    let admin = s.token("contoso", ADMIN);
    s.patch(
        SETTINGS,
        &admin,
        &json!({"remoteAssistanceState": "enabled", "allowSessionsToUnenrolledDevices": true}),
    )
    .await;
    let mut ids = std::collections::HashMap::new();
    for upn in ["hank@contoso.com", "sam@contoso.com", "ed@contoso.com"] {
        let u = post(
            &s,
            &admin,
            "/beta/users",
            json!({"userPrincipalName": upn, "displayName": upn}),
        )
        .await;
        ids.insert(upn, u["id"].as_str().unwrap().to_owned());
    }
    // Entra-like groups the directory holds no members for.
    let desk = post(
        &s,
        &admin,
        "/beta/groups",
        json!({"displayName": "Help desk"}),
    )
    .await;
    let desk = desk["id"].as_str().unwrap().to_owned();
    let finance = post(
        &s,
        &admin,
        "/beta/groups",
        json!({"displayName": "Finance"}),
    )
    .await;
    let finance = finance["id"].as_str().unwrap().to_owned();
    post(
        &s,
        &admin,
        "/beta/deviceManagement/roleAssignments",
        json!({"displayName": "desk helps finance", "members": [desk], "scopeType": "resourceScope",
               "resourceScopes": [finance], "roleDefinition@odata.bind": "builtin-help-desk-operator"}),
    )
    .await;

    let sam_in_finance = token_with_groups(&s, "sam@contoso.com", &[&finance], &[]);
    let sam_alone = token_with_groups(&s, "sam@contoso.com", &[], &[]);
    let hank_in_desk = token_with_groups(&s, "hank@contoso.com", &[&desk], &[]);
    let hank_alone = token_with_groups(&s, "hank@contoso.com", &[], &[]);

    assert_eq!(
        ask(&s, &hank_in_desk, &sam_in_finance).await,
        "consentRequested"
    );
    // Without the helper's token group, Hank is in no admin group.
    let denied = ask(&s, &hank_alone, &sam_in_finance).await;
    assert_eq!(denied, "noRoleAssignment");
    // Without the sharer's token group, Sam is out of the assignment's scope.
    assert_eq!(ask(&s, &hank_in_desk, &sam_alone).await, "notInScope");

    // The stored membership still counts, and adds to the token's.
    let ed = &ids["ed@contoso.com"];
    post(
        &s,
        &admin,
        &format!("/beta/groups/{desk}/members/$ref"),
        json!({"@odata.id": ed}),
    )
    .await;
    // A connection's fresh token (authenticate) brings its groups: Hank signs in without the
    // group, then re-authenticates with a token that has it.
    let mut h = signal_client(&s, &hank_alone).await;
    h.send(&json!({"type": "authenticate", "id": "re", "token": hank_in_desk}))
        .await
        .unwrap();
    assert_eq!(expect(&mut h, "ack").await["type"], "ack");
    assert_eq!(ask_on(&s, h, &sam_in_finance).await, "consentRequested");

    let ed_alone = token_with_groups(&s, "ed@contoso.com", &[], &[]);
    assert_eq!(
        ask(&s, &ed_alone, &sam_in_finance).await,
        "consentRequested"
    );
    s.server.shutdown().await;
}
