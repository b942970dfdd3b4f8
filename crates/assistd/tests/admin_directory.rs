//! The directory, RBAC, audit and what-if over real HTTPS: a tenant is built through the admin
//! API, and the what-if answer is checked for every reason and warning.

mod common;

use common::*;
use serde_json::{json, Value};

const ALL_ADMIN: &[&str] = &[
    "DeviceManagementServiceConfig.ReadWrite.All",
    "User.ReadWrite.All",
    "Group.ReadWrite.All",
    "DeviceManagementManagedDevices.ReadWrite.All",
    "DeviceManagementRBAC.ReadWrite.All",
    "DeviceManagementApps.Read.All",
    "Domain.ReadWrite.All",
];

struct Admin<'a> {
    s: &'a TestServer,
    token: String,
}

impl Admin<'_> {
    async fn post(&self, path: &str, body: Value) -> (u16, Value) {
        send(
            self.s
                .client
                .post(self.s.url(path))
                .bearer_auth(&self.token)
                .json(&body),
        )
        .await
    }
    async fn create(&self, path: &str, body: Value) -> String {
        let (status, resp) = self.post(path, body).await;
        assert_eq!(status, 201, "POST {path}: {resp}");
        resp["id"].as_str().unwrap().to_owned()
    }
    async fn get(&self, path: &str) -> (u16, Value) {
        self.s.get(path, Some(&self.token)).await
    }
    async fn add_member(&self, group: &str, member: &str) {
        let (status, body) = self
            .post(
                &format!("/beta/groups/{group}/members/$ref"),
                json!({"@odata.id": format!("https://x/beta/directoryObjects/{member}")}),
            )
            .await;
        assert_eq!(status, 204, "{body}");
    }
    async fn what_if(&self, body: Value) -> Value {
        let (status, resp) = self.post("/assist/v1/policy/evaluate", body).await;
        assert_eq!(status, 200, "{resp}");
        resp
    }
    async fn audit_count(&self) -> usize {
        let (_, body) = self
            .get("/beta/deviceManagement/auditEvents?$count=true&$top=1")
            .await;
        body["@odata.count"].as_u64().unwrap() as usize
    }
}

fn reason(v: &Value) -> &str {
    v["decision"]["reason"].as_str().unwrap_or("")
}

#[tokio::test]
async fn a_tenant_built_through_the_api_yields_every_reason_and_warning() {
    let dir = tempfile::tempdir().unwrap();
    let s = TestServer::start(dir.path()).await;
    let a = Admin {
        s: &s,
        token: s.token("contoso", ALL_ADMIN),
    };

    let helper = a.create("/beta/users", json!({"userPrincipalName": "helen@contoso.com", "displayName": "Helen Helper", "jobTitle": "Help desk"})).await;
    let outsider = a
        .create(
            "/beta/users",
            json!({"userPrincipalName": "olly@contoso.com", "displayName": "Olly Outsider"}),
        )
        .await;
    let sharer = a
        .create(
            "/beta/users",
            json!({"userPrincipalName": "sam@contoso.com", "displayName": "Sam Sharer"}),
        )
        .await;
    let far = a
        .create(
            "/beta/users",
            json!({"userPrincipalName": "fay@contoso.com", "displayName": "Fay Faraway"}),
        )
        .await;
    let helpdesk = a
        .create("/beta/groups", json!({"displayName": "Help desk"}))
        .await;
    let finance = a
        .create("/beta/groups", json!({"displayName": "Finance"}))
        .await;
    let viewers = a
        .create("/beta/groups", json!({"displayName": "Viewers"}))
        .await;
    a.add_member(&helpdesk, &helper).await;
    a.add_member(&finance, &sharer).await;
    a.add_member(&viewers, &outsider).await;

    let compliant = a
        .create("/beta/deviceManagement/managedDevices", json!({"azureADDeviceId": "aad-1", "deviceName": "SAM-PC", "operatingSystem": "Windows", "complianceState": "compliant", "userId": sharer}))
        .await;
    let noncompliant = a
        .create("/beta/deviceManagement/managedDevices", json!({"azureADDeviceId": "aad-2", "deviceName": "SAM-OLD", "complianceState": "noncompliant"}))
        .await;
    a.add_member(&finance, &noncompliant).await;

    // A custom role that can only view, assigned over Finance to Help desk; and a viewer role
    // without the Read action for the Viewers group.
    let (status, body) = a
        .post(
            "/beta/deviceManagement/roleDefinitions",
            json!({"displayName": "Viewer", "rolePermissions": [{"resourceActions": [{"allowedResourceActions": [
                "Microsoft.Intune_RemoteTasks_RequestRemoteAssistance", "Microsoft.Intune_RemoteAssistance_Read",
                "Microsoft.Intune_RemoteAssistanceApp_ViewScreen"]}]}]}),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["isBuiltIn"], false);
    let viewer_role = body["id"].as_str().unwrap().to_owned();
    let no_read_role = a
        .create(
            "/beta/deviceManagement/roleDefinitions",
            json!({"displayName": "No read", "rolePermissions": [{"resourceActions": [{"allowedResourceActions": [
                "Microsoft.Intune_RemoteTasks_RequestRemoteAssistance", "Microsoft.Intune_RemoteAssistanceApp_TakeFullControl"]}]}]}),
        )
        .await;
    a.create(
        "/beta/deviceManagement/roleAssignments",
        json!({"displayName": "Help desk views Finance", "members": [helpdesk], "resourceScopes": [finance], "scopeType": "resourceScope",
               "roleDefinition@odata.bind": format!("https://graph.microsoft.com/beta/deviceManagement/roleDefinitions/{viewer_role}")}),
    )
    .await;
    a.create(
        "/beta/deviceManagement/roleAssignments",
        json!({"displayName": "Viewers everywhere", "members": [viewers], "scopeType": "allLicensedUsers", "roleDefinition@odata.bind": no_read_role}),
    )
    .await;

    let ask = |sharer: &str, device: Option<&str>, mode: &str| {
        let mut b = json!({"helper": "helen@contoso.com", "sharer": sharer, "mode": mode});
        if let Some(d) = device {
            b["device"] = json!(d);
        }
        b
    };

    // Rule 2: Remote Help is disabled until configured.
    let r = a
        .what_if(ask("sam@contoso.com", Some("aad-1"), "viewOnly"))
        .await;
    assert_eq!(reason(&r), "remoteHelpDisabled", "{r}");
    s.patch(
        SETTINGS,
        &a.token,
        &json!({"remoteAssistanceState": "enabled"}),
    )
    .await;

    // Allowed: enrolled compliant device in scope, view only. Chat allowed.
    let r = a
        .what_if(ask("sam@contoso.com", Some("aad-1"), "viewOnly"))
        .await;
    assert_eq!(r["decision"]["outcome"], "allow", "{r}");
    assert_eq!(r["decision"]["warnings"], json!([]));
    assert_eq!(r["decision"]["chatAllowed"], true);

    // permissionMissing: in scope but the role cannot take control.
    let r = a
        .what_if(ask("sam@contoso.com", Some("aad-1"), "fullControl"))
        .await;
    assert_eq!(reason(&r), "permissionMissing", "{r}");

    // notInScope: Fay is in no scope group and has no device there.
    let r = a.what_if(ask("fay@contoso.com", None, "viewOnly")).await;
    assert_eq!(
        reason(&r),
        "unenrolledDeviceNotAllowed",
        "no device counts as unenrolled: {r}"
    );
    s.patch(
        SETTINGS,
        &a.token,
        &json!({"allowSessionsToUnenrolledDevices": true}),
    )
    .await;
    let r = a.what_if(ask("fay@contoso.com", None, "viewOnly")).await;
    assert_eq!(reason(&r), "notInScope", "{r}");
    let _ = far;

    // Warnings: an unenrolled device (now allowed) and a non-compliant one.
    let r = a
        .what_if(ask("sam@contoso.com", Some("unknown-device"), "viewOnly"))
        .await;
    assert_eq!(r["decision"]["outcome"], "allow", "{r}");
    assert_eq!(r["decision"]["warnings"], json!(["deviceUnenrolled"]));
    let r = a
        .what_if(ask("sam@contoso.com", Some("aad-2"), "viewOnly"))
        .await;
    assert_eq!(
        r["decision"]["warnings"],
        json!(["deviceNotCompliant"]),
        "{r}"
    );

    // noRoleAssignment: a helper in no assignment's member groups.
    let r = a
        .what_if(json!({"helper": sharer, "sharer": "helen@contoso.com", "mode": "viewOnly"}))
        .await;
    assert_eq!(reason(&r), "noRoleAssignment", "{r}");
    // Olly's role reaches every user but lacks Read: permissionMissing.
    let r = a.what_if(json!({"helper": "olly@contoso.com", "sharer": "sam@contoso.com", "mode": "fullControl"})).await;
    assert_eq!(reason(&r), "permissionMissing", "{r}");

    // crossTenant: a sharer of another tenant.
    let r = a.what_if(json!({"helper": helper, "sharer": "x@fabrikam.com", "sharerTenantId": "fabrikam", "mode": "viewOnly"})).await;
    assert_eq!(reason(&r), "crossTenant", "{r}");

    // unattended needs an enrolled device.
    let r = a
        .what_if(ask("sam@contoso.com", Some("unknown-device"), "unattended"))
        .await;
    assert_eq!(reason(&r), "unattendedRequiresEnrolledDevice", "{r}");

    // Re-disallow unenrolled devices: unenrolledDeviceNotAllowed.
    s.patch(
        SETTINGS,
        &a.token,
        &json!({"allowSessionsToUnenrolledDevices": false}),
    )
    .await;
    let r = a
        .what_if(ask("sam@contoso.com", Some("unknown-device"), "viewOnly"))
        .await;
    assert_eq!(reason(&r), "unenrolledDeviceNotAllowed", "{r}");

    // blockChat shows in the decision.
    s.patch(SETTINGS, &a.token, &json!({"blockChat": true}))
        .await;
    let r = a
        .what_if(ask("sam@contoso.com", Some("aad-1"), "viewOnly"))
        .await;
    assert_eq!(r["decision"]["chatAllowed"], false, "{r}");
    // The trace names the assignment that matched.
    let matched: Vec<&Value> = r["assignments"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|t| t["matched"] == true)
        .collect();
    assert_eq!(matched.len(), 1, "{r}");
    assert_eq!(matched[0]["displayName"], "Help desk views Finance");

    // The built-in Help Desk Operator over all devices grants full control on the enrolled device.
    let (_, roles) = a
        .get("/beta/deviceManagement/roleDefinitions?$filter=isBuiltIn eq true")
        .await;
    let hdo = roles["value"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["displayName"] == "Help Desk Operator")
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    a.create("/beta/deviceManagement/roleAssignments", json!({"displayName": "HDO all devices", "members": [helpdesk], "scopeType": "allDevices", "roleDefinition@odata.bind": hdo})).await;
    let r = a
        .what_if(ask("fay@contoso.com", Some("aad-1"), "fullControl"))
        .await;
    assert_eq!(r["decision"]["outcome"], "allow", "{r}");
    let _ = compliant;

    // Several enrollment states: a device pending reset is not enrolled (unenrolled devices are
    // not allowed at this point), and one whose management is retiring is not either.
    a.create("/beta/deviceManagement/managedDevices", json!({"azureADDeviceId": "aad-3", "deviceName": "RESETTING", "enrollmentState": "pendingReset", "complianceState": "compliant"})).await;
    a.create("/beta/deviceManagement/managedDevices", json!({"azureADDeviceId": "aad-4", "deviceName": "RETIRING", "managementState": "retirePending"})).await;
    for d in ["aad-3", "aad-4"] {
        let r = a.what_if(ask("sam@contoso.com", Some(d), "viewOnly")).await;
        assert_eq!(reason(&r), "unenrolledDeviceNotAllowed", "{d}: {r}");
    }

    // allDevicesAndLicensedUsers with the built-in School Administrator: Olly may now take
    // control of Sam, but not run unattended sessions (that role lacks Unattended).
    let seniors = a
        .create("/beta/groups", json!({"displayName": "Seniors"}))
        .await;
    a.add_member(&seniors, &outsider).await;
    a.create(
        "/beta/deviceManagement/roleAssignments",
        json!({"displayName": "Seniors everywhere", "members": [seniors], "scopeType": "allDevicesAndLicensedUsers", "roleDefinition@odata.bind": "builtin-school-administrator"}),
    )
    .await;
    let r = a.what_if(json!({"helper": "olly@contoso.com", "sharer": "sam@contoso.com", "device": "aad-1", "mode": "elevation"})).await;
    assert_eq!(r["decision"]["outcome"], "allow", "{r}");
    assert_eq!(
        r["decision"]["granted"],
        json!(["viewOnly", "fullControl", "elevation"])
    );
    let r = a.what_if(json!({"helper": "olly@contoso.com", "sharer": "sam@contoso.com", "device": "aad-1", "mode": "unattended"})).await;
    assert_eq!(reason(&r), "permissionMissing", "{r}");
    s.server.shutdown().await;
}

#[tokio::test]
async fn invalid_rbac_input_is_refused_and_unaudited() {
    let dir = tempfile::tempdir().unwrap();
    let s = TestServer::start(dir.path()).await;
    let a = Admin {
        s: &s,
        token: s.token("contoso", ALL_ADMIN),
    };
    let group = a.create("/beta/groups", json!({"displayName": "G"})).await;
    let before = a.audit_count().await;

    for (path, body) in [
        (
            "/beta/deviceManagement/roleDefinitions",
            json!({"displayName": "Bad", "rolePermissions": [{"resourceActions": [{"allowedResourceActions": ["Microsoft.Intune_Bogus"]}]}]}),
        ),
        (
            "/beta/deviceManagement/roleDefinitions",
            json!({"displayName": "x".repeat(200), "rolePermissions": []}),
        ),
        (
            "/beta/deviceManagement/roleAssignments",
            json!({"displayName": "No role", "members": [group], "roleDefinition@odata.bind": "missing-role"}),
        ),
        (
            "/beta/deviceManagement/roleAssignments",
            json!({"displayName": "No group", "members": ["missing-group"], "roleDefinition@odata.bind": "builtin-help-desk-operator"}),
        ),
        (
            "/beta/deviceManagement/roleAssignments",
            json!({"displayName": "Mixed", "members": [group], "scopeType": "allDevices", "resourceScopes": [group], "roleDefinition@odata.bind": "builtin-help-desk-operator"}),
        ),
        (
            "/beta/deviceManagement/roleAssignments",
            json!({"displayName": "No bind", "members": [group]}),
        ),
        (
            "/beta/users",
            json!({"userPrincipalName": "not-a-upn", "displayName": "X"}),
        ),
        (
            "/beta/deviceManagement/managedDevices",
            json!({"azureADDeviceId": "d", "deviceName": "D", "complianceState": "great"}),
        ),
        ("/beta/domains", json!({"id": "not a domain"})),
    ] {
        let (status, resp) = a.post(path, body.clone()).await;
        assert_eq!(status, 400, "{path} {body}: {resp}");
        assert_graph_error(&resp, "BadRequest");
    }
    // Built-in roles are read-only.
    let (status, resp) = send(
        s.client
            .patch(s.url("/beta/deviceManagement/roleDefinitions/builtin-help-desk-operator"))
            .bearer_auth(&a.token)
            .json(&json!({"displayName": "Mine now"})),
    )
    .await;
    assert_eq!(status, 403, "{resp}");
    let (status, _) = send(
        s.client
            .delete(s.url("/beta/deviceManagement/roleDefinitions/builtin-school-administrator"))
            .bearer_auth(&a.token),
    )
    .await;
    assert_eq!(status, 403);
    // Duplicate UPN → 409; duplicate membership → 400.
    let u = a
        .create(
            "/beta/users",
            json!({"userPrincipalName": "dup@contoso.com", "displayName": "Dup"}),
        )
        .await;
    let (status, resp) = a
        .post(
            "/beta/users",
            json!({"userPrincipalName": "DUP@contoso.com", "displayName": "Dup 2"}),
        )
        .await;
    assert_eq!(status, 409, "{resp}");
    a.add_member(&group, &u).await;
    let (status, _) = a
        .post(
            &format!("/beta/groups/{group}/members/$ref"),
            json!({"@odata.id": u}),
        )
        .await;
    assert_eq!(status, 400);
    // Exactly two more events: the user and the membership; the refused writes wrote none.
    assert_eq!(a.audit_count().await, before + 2);

    // Audit events cannot be changed or deleted.
    let (_, events) = a.get("/beta/deviceManagement/auditEvents").await;
    let id = events["value"][0]["id"].as_str().unwrap().to_owned();
    let (status, _) = send(
        s.client
            .delete(s.url(&format!("/beta/deviceManagement/auditEvents/{id}")))
            .bearer_auth(&a.token),
    )
    .await;
    assert_eq!(status, 405);
    let (status, _) = send(
        s.client
            .patch(s.url(&format!("/beta/deviceManagement/auditEvents/{id}")))
            .bearer_auth(&a.token)
            .json(&json!({"activity": "x"})),
    )
    .await;
    assert_eq!(status, 405);
    let (status, one) = a
        .get(&format!("/beta/deviceManagement/auditEvents/{id}"))
        .await;
    assert_eq!(status, 200);
    assert_eq!(one["id"], id.as_str());
    s.server.shutdown().await;
}

#[tokio::test]
async fn every_write_is_audited_once_with_filters_on_time_and_category() {
    let dir = tempfile::tempdir().unwrap();
    let s = TestServer::start(dir.path()).await;
    let a = Admin {
        s: &s,
        token: s.token("contoso", ALL_ADMIN),
    };
    let u = a
        .create(
            "/beta/users",
            json!({"userPrincipalName": "u@contoso.com", "displayName": "U"}),
        )
        .await;
    let g = a.create("/beta/groups", json!({"displayName": "G"})).await;
    a.add_member(&g, &u).await;
    let (status, _) = send(
        s.client
            .patch(s.url(&format!("/beta/users/{u}")))
            .bearer_auth(&a.token)
            .json(&json!({"jobTitle": "Boss"})),
    )
    .await;
    assert_eq!(status, 200);
    let (status, _) = send(
        s.client
            .delete(s.url(&format!("/beta/groups/{g}/members/{u}/$ref")))
            .bearer_auth(&a.token),
    )
    .await;
    assert_eq!(status, 204);
    let r = a
        .create(
            "/beta/deviceManagement/roleDefinitions",
            json!({"displayName": "R", "rolePermissions": []}),
        )
        .await;
    a.create("/beta/domains", json!({"id": "Contoso.com"}))
        .await;
    let (status, _) = send(
        s.client
            .delete(s.url(&format!("/beta/deviceManagement/roleDefinitions/{r}")))
            .bearer_auth(&a.token),
    )
    .await;
    assert_eq!(status, 204);
    s.patch(SETTINGS, &a.token, &json!({"blockChat": true}))
        .await;

    let (_, all) = a
        .get("/beta/deviceManagement/auditEvents?$count=true")
        .await;
    let activities: Vec<&str> = all["value"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["activity"].as_str().unwrap())
        .collect();
    assert_eq!(
        activities,
        vec![
            "Create user",
            "Create group",
            "Add member to group",
            "Patch user",
            "Remove member from group",
            "Create roleDefinition",
            "Create domain",
            "Delete roleDefinition",
            "Patch remoteAssistanceSettings"
        ]
    );
    let patch_user = &all["value"][3];
    assert_eq!(
        patch_user["actor"]["userPrincipalName"],
        "admin@contoso.example"
    );
    assert_eq!(
        patch_user["resources"][0]["modifiedProperties"][0]["displayName"],
        "jobTitle"
    );
    assert_eq!(
        patch_user["resources"][0]["modifiedProperties"][0]["newValue"],
        "\"Boss\""
    );

    let (_, roles) = a
        .get("/beta/deviceManagement/auditEvents?$filter=category eq 'Role'")
        .await;
    assert_eq!(roles["value"].as_array().unwrap().len(), 2);
    let first_time = all["value"][0]["activityDateTime"].as_str().unwrap();
    let (_, none) = a
        .get(&format!(
            "/beta/deviceManagement/auditEvents?$filter=activityDateTime lt {first_time}"
        ))
        .await;
    assert_eq!(none["value"].as_array().unwrap().len(), 0);
    let (_, since) = a.get(&format!("/beta/deviceManagement/auditEvents?$filter=activityDateTime ge {first_time} and category eq 'Directory'")).await;
    assert_eq!(since["value"].as_array().unwrap().len(), 6);
    // The domain was normalised to lower case.
    let (status, d) = a.get("/beta/domains/contoso.com").await;
    assert_eq!(status, 200, "{d}");
    s.server.shutdown().await;
}

#[tokio::test]
async fn tenants_are_invisible_to_each_other_and_paging_is_exact() {
    let dir = tempfile::tempdir().unwrap();
    let s = TestServer::start(dir.path()).await;
    let a = Admin {
        s: &s,
        token: s.token("contoso", ALL_ADMIN),
    };
    let b = Admin {
        s: &s,
        token: s.token("fabrikam", ALL_ADMIN),
    };
    let mut ids = Vec::new();
    for i in 0..23 {
        ids.push(a.create("/beta/users", json!({"userPrincipalName": format!("user{i}@contoso.com"), "displayName": format!("User {i}")})).await);
    }
    let g = a
        .create("/beta/groups", json!({"displayName": "Only contoso"}))
        .await;

    // Page through with $top=5: every user exactly once (the admin was added just in time too).
    let mut seen = Vec::new();
    let mut url = s.url("/beta/users?$top=5&$count=true&$select=id,userPrincipalName");
    loop {
        let (status, page) = send(s.client.get(&url).bearer_auth(&a.token)).await;
        assert_eq!(status, 200, "{page}");
        assert_eq!(page["@odata.count"], 24);
        for u in page["value"].as_array().unwrap() {
            assert!(u.get("displayName").is_none(), "$select applies: {u}");
            seen.push(u["id"].as_str().unwrap().to_owned());
        }
        match page["@odata.nextLink"].as_str() {
            Some(next) => {
                assert!(
                    next.starts_with("https://127.0.0.1:"),
                    "absolute nextLink: {next}"
                );
                url = next.to_owned();
            }
            None => break,
        }
    }
    assert_eq!(seen.len(), 24);
    let mut unique = seen.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), 24);
    for id in &ids {
        assert!(seen.contains(id));
    }
    let (_, filtered) = a
        .get("/beta/users?$filter=userPrincipalName eq 'USER7@contoso.com'")
        .await;
    assert_eq!(filtered["value"].as_array().unwrap().len(), 1);

    // fabrikam sees none of it.
    let (_, b_users) = b.get("/beta/users").await;
    let b_upns: Vec<&str> = b_users["value"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u["userPrincipalName"].as_str().unwrap())
        .collect();
    assert_eq!(
        b_upns,
        vec!["admin@fabrikam.example"],
        "only fabrikam's own just-in-time admin"
    );
    assert_eq!(b.get(&format!("/beta/users/{}", ids[0])).await.0, 404);
    assert_eq!(b.get(&format!("/beta/groups/{g}")).await.0, 404);
    let (status, _) = b
        .post(
            &format!("/beta/groups/{g}/members/$ref"),
            json!({"@odata.id": ids[0]}),
        )
        .await;
    assert_eq!(status, 404);
    let (_, b_audit) = b
        .get("/beta/deviceManagement/auditEvents?$count=true")
        .await;
    assert_eq!(b_audit["@odata.count"], 0);
    s.server.shutdown().await;
}

#[tokio::test]
async fn directory_permissions_are_per_endpoint() {
    let dir = tempfile::tempdir().unwrap();
    let s = TestServer::start(dir.path()).await;
    let reader = s.token(
        "contoso",
        &["User.Read.All", "DeviceManagementRBAC.Read.All"],
    );
    assert_eq!(s.get("/beta/users", Some(&reader)).await.0, 200);
    assert_eq!(
        s.get("/beta/deviceManagement/roleDefinitions", Some(&reader))
            .await
            .0,
        200
    );
    assert_eq!(s.get("/beta/groups", Some(&reader)).await.0, 403);
    assert_eq!(
        s.get("/beta/deviceManagement/managedDevices", Some(&reader))
            .await
            .0,
        403
    );
    assert_eq!(
        s.get("/beta/deviceManagement/auditEvents", Some(&reader))
            .await
            .0,
        403
    );
    let (status, body) = send(
        s.client
            .post(s.url("/beta/users"))
            .bearer_auth(&reader)
            .json(&json!({"userPrincipalName": "a@b.com", "displayName": "A"})),
    )
    .await;
    assert_eq!(status, 403);
    assert_graph_error(&body, "Forbidden");
    s.server.shutdown().await;
}

/// A large audit trail (5,000 events): following `@odata.nextLink` returns every event exactly
/// once, oldest first, each page no larger than `$top`, with a filter too; the count is right.
#[tokio::test]
async fn a_large_audit_trail_pages_through_next_links_once_in_order() {
    use assist_store::sessions::SessionWrite;
    let dir = tempfile::tempdir().unwrap();
    let s = TestServer::start_keeping_history(dir.path()).await;
    let a = Admin {
        s: &s,
        token: s.token("contoso", ALL_ADMIN),
    };
    let store = assist_store::Store::open(&s.store_url).await.unwrap();
    let writes: Vec<SessionWrite> = (0..5000)
        .map(|i| SessionWrite::Audit {
            tenant_id: "contoso".into(),
            event: assist_store::AuditEvent::new(
                &format!("event {i}"),
                "Action",
                if i % 3 == 0 { "Session" } else { "Other" },
            ),
        })
        .collect();
    for chunk in writes.chunks(500) {
        store.write_session_batch(chunk).await.unwrap();
    }
    let all: Vec<Value> = store.audit_events("contoso").await.unwrap();
    assert!(all.len() >= 5000);
    let follow = |first: String, top: usize| {
        let a = &a;
        async move {
            let mut ids: Vec<String> = Vec::new();
            let mut next = Some(first);
            let mut count = None;
            while let Some(path) = next {
                let (st, page) = a.get(&path).await;
                assert_eq!(st, 200, "{path}: {page}");
                let value = page["value"].as_array().unwrap();
                assert!(value.len() <= top);
                count = count.or(page["@odata.count"].as_u64());
                ids.extend(value.iter().map(|e| e["id"].as_str().unwrap().to_owned()));
                next = page["@odata.nextLink"].as_str().map(|l| {
                    let at = l
                        .find("/beta/")
                        .expect("an absolute link to the collection");
                    l[at..].to_owned()
                });
            }
            (ids, count)
        }
    };
    let want: Vec<String> = all
        .iter()
        .map(|e| e["id"].as_str().unwrap().to_owned())
        .collect();
    let (ids, count) = follow(
        "/beta/deviceManagement/auditEvents?$count=true&$top=999&$select=id".into(),
        999,
    )
    .await;
    assert_eq!(ids, want);
    assert_eq!(count, Some(want.len() as u64));
    let sessions: Vec<String> = all
        .iter()
        .filter(|e| e["category"] == "Session")
        .map(|e| e["id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(sessions.len(), 1667);
    let (ids, count) = follow(
        "/beta/deviceManagement/auditEvents?$filter=category eq 'Session'&$count=true".into(),
        100,
    )
    .await;
    assert_eq!(ids, sessions);
    assert_eq!(count, Some(1667));
    // One event by id.
    let (st, one) = a
        .get(&format!(
            "/beta/deviceManagement/auditEvents/{}",
            want[4321]
        ))
        .await;
    assert_eq!((st, &one), (200, &all[4321]));
    s.server.shutdown().await;
}
