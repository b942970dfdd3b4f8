//! The wire shapes: decisions and explanations go straight into admin API
//! responses, facts come from Graph-shaped JSON.

mod common;

use assist_policy::*;
use common::*;
use serde_json::json;

#[test]
fn deny_reasons_and_warnings_serialize_as_their_codes() {
    for r in DenyReason::ALL {
        assert_eq!(serde_json::to_value(r).unwrap(), json!(r.as_str()));
        let back: DenyReason = serde_json::from_value(json!(r.as_str())).unwrap();
        assert_eq!(back, r);
    }
    for w in Warning::ALL {
        assert_eq!(serde_json::to_value(w).unwrap(), json!(w.as_str()));
    }
    for m in Mode::ALL {
        assert_eq!(serde_json::to_value(m).unwrap(), json!(m.as_str()));
    }
    for r in Rule::ALL {
        assert_eq!(serde_json::to_value(r).unwrap(), json!(r.as_str()));
    }
}

#[test]
fn allow_decision_json_shape() {
    let mut p = policy();
    p.settings.block_chat = true;
    let mut r = request(Mode::FullControl);
    dev(&mut r).compliance = ComplianceState::NonCompliant;
    assert_eq!(
        serde_json::to_value(decide(&p, &r)).unwrap(),
        json!({
            "outcome": "allow",
            "granted": ["viewOnly", "fullControl"],
            "warnings": ["deviceNotCompliant"],
            "chatAllowed": false,
            "matchedAssignmentIds": [BASE_ASSIGNMENT],
        })
    );
}

#[test]
fn deny_decision_json_shape_and_round_trip() {
    let d = deny(DenyReason::NotInScope);
    let v = serde_json::to_value(&d).unwrap();
    assert_eq!(v, json!({"outcome": "deny", "reason": "notInScope"}));
    assert_eq!(serde_json::from_value::<Decision>(v).unwrap(), d);
    let allow = decide(&policy(), &request(Mode::Elevation));
    let back: Decision = serde_json::from_value(serde_json::to_value(&allow).unwrap()).unwrap();
    assert_eq!(back, allow);
}

#[test]
fn explanation_json_is_camel_case_and_readable() {
    let mut r = request(Mode::ViewOnly);
    r.sharer.group_ids.clear();
    let v = serde_json::to_value(explain(&policy(), &r)).unwrap();
    assert_eq!(
        v["decision"],
        json!({"outcome": "deny", "reason": "notInScope"})
    );
    assert_eq!(v["decidedBy"], json!("roleBasedAccess"));
    assert_eq!(v["tenantId"], json!(TENANT));
    assert_eq!(v["requestedMode"], json!("viewOnly"));
    assert_eq!(v["rules"][0]["rule"], json!("remoteHelpEnabled"));
    assert_eq!(v["rules"][0]["number"], json!(2));
    assert_eq!(v["rules"][0]["outcome"], json!("passed"));
    assert!(v["rules"][0].get("denyReason").is_none());
    assert_eq!(v["rules"][3]["outcome"], json!("failed"));
    assert_eq!(v["rules"][3]["denyReason"], json!("notInScope"));
    assert!(v["rules"][3]["detail"]
        .as_str()
        .unwrap()
        .contains(BASE_ASSIGNMENT));

    let a = &v["assignments"][0];
    assert_eq!(a["assignmentId"], json!(BASE_ASSIGNMENT));
    assert_eq!(a["roleDefinitionId"], json!(HELP_DESK_OPERATOR_ROLE_ID));
    assert_eq!(a["roleDefinitionFound"], json!(true));
    assert_eq!(a["roleDisplayName"], json!("Help Desk Operator"));
    assert_eq!(a["helperIsMember"], json!(true));
    assert_eq!(a["matchingMemberGroupIds"], json!([HELPDESK_GROUP]));
    assert_eq!(a["scopeType"], json!("resourceScope"));
    assert_eq!(a["inScope"], json!(false));
    assert_eq!(a["scopeReachedVia"], json!([]));
    assert_eq!(a["permissions"]["canOffer"], json!(true));
    assert_eq!(a["permissions"]["canRead"], json!(true));
    assert_eq!(
        a["permissions"]["modes"],
        json!(["viewOnly", "fullControl", "elevation", "unattended"])
    );
    assert_eq!(a["grantsRequestedMode"], json!(true));
    assert_eq!(a["matched"], json!(false));
}

#[test]
fn scope_reach_json_shape() {
    let reaches = vec![
        ScopeReach::SharerInScopeGroup {
            group_id: "g1".into(),
        },
        ScopeReach::DeviceInScopeGroup {
            group_id: "g2".into(),
        },
        ScopeReach::AllLicensedUsers,
        ScopeReach::AllDevices,
    ];
    assert_eq!(
        serde_json::to_value(&reaches).unwrap(),
        json!([
            {"via": "sharerInScopeGroup", "groupId": "g1"},
            {"via": "deviceInScopeGroup", "groupId": "g2"},
            {"via": "allLicensedUsers"},
            {"via": "allDevices"},
        ])
    );
}

#[test]
fn graph_shaped_role_definition_parses() {
    let def: RoleDefinition = serde_json::from_value(json!({
        "id": "role-1",
        "displayName": "Tier 1",
        "isBuiltIn": false,
        "rolePermissions": [{
            "resourceActions": [{
                "allowedResourceActions": [
                    "Microsoft.Intune_RemoteTasks_RequestRemoteAssistance",
                    "Microsoft.Intune_RemoteAssistance_Read",
                    "Microsoft.Intune_RemoteAssistanceApp_Elevation"
                ],
                "notAllowedResourceActions": ["Microsoft.Intune_RemoteAssistanceApp_TakeFullControl"]
            }]
        }]
    }))
    .unwrap();
    let perms = def.effective_permissions();
    assert!(perms.allows_session(Mode::ViewOnly));
    assert!(!perms.allows_session(Mode::FullControl));
    assert_eq!(
        serde_json::to_value(&def).unwrap()["rolePermissions"][0]["resourceActions"][0]
            ["notAllowedResourceActions"],
        json!(["Microsoft.Intune_RemoteAssistanceApp_TakeFullControl"])
    );
}

#[test]
fn unknown_action_in_json_is_rejected() {
    let err = serde_json::from_value::<RoleDefinition>(json!({
        "id": "role-1",
        "displayName": "Bad",
        "rolePermissions": [{"resourceActions": [{
            "allowedResourceActions": ["Microsoft.Intune_RemoteAssistance_Everything"]
        }]}]
    }))
    .unwrap_err();
    assert!(
        err.to_string()
            .contains("unknown resource action `Microsoft.Intune_RemoteAssistance_Everything`"),
        "{err}"
    );
}

#[test]
fn settings_json_defaults_to_disabled() {
    let s: TenantSettings = serde_json::from_value(json!({"tenantId": "t"})).unwrap();
    assert_eq!(s, TenantSettings::unconfigured("t"));
    let s: TenantSettings = serde_json::from_value(json!({
        "tenantId": "t",
        "remoteAssistanceState": "enabled",
        "allowSessionsToUnenrolledDevices": true,
        "blockChat": true
    }))
    .unwrap();
    assert_eq!(s.remote_assistance_state, RemoteAssistanceState::Enabled);
    assert!(s.allow_sessions_to_unenrolled_devices && s.block_chat);
}

#[test]
fn request_and_policy_json_round_trip() {
    let p = policy();
    let r = request(Mode::Unattended);
    let p2: TenantPolicy = serde_json::from_value(serde_json::to_value(&p).unwrap()).unwrap();
    let r2: SessionRequest = serde_json::from_value(serde_json::to_value(&r).unwrap()).unwrap();
    assert_eq!((p2, r2), (p, r));
    let v = serde_json::to_value(assignment(
        "a",
        "r",
        &["m"],
        ScopeType::AllDevicesAndLicensedUsers,
        &[],
    ))
    .unwrap();
    assert_eq!(v["scopeType"], json!("allDevicesAndLicensedUsers"));
    assert_eq!(v["memberGroupIds"], json!(["m"]));
    let v = serde_json::to_value(device()).unwrap();
    assert_eq!(v["compliance"], json!("compliant"));
    assert_eq!(v["primaryUserId"], json!("sharer-1"));
}
