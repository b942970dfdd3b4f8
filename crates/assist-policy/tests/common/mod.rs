//! Shared fixtures: a baseline request that is allowed, and helpers to vary it.
#![allow(dead_code)]

use std::collections::BTreeSet;

use assist_policy::*;

pub const TENANT: &str = "contoso";
pub const OTHER_TENANT: &str = "fabrikam";
pub const HELPDESK_GROUP: &str = "grp-helpdesk";
pub const STAFF_GROUP: &str = "grp-staff";
pub const LAPTOPS_GROUP: &str = "grp-laptops";
pub const BASE_ASSIGNMENT: &str = "asg-helpdesk-staff";

pub fn groups(ids: &[&str]) -> BTreeSet<String> {
    ids.iter().map(|s| s.to_string()).collect()
}

pub fn ids(ids: &[&str]) -> BTreeSet<String> {
    groups(ids)
}

pub fn helper() -> Helper {
    Helper {
        tenant_id: TENANT.into(),
        user_id: "helper-1".into(),
        group_ids: groups(&[HELPDESK_GROUP]),
    }
}

pub fn sharer() -> Sharer {
    Sharer {
        tenant_id: TENANT.into(),
        user_id: "sharer-1".into(),
        group_ids: groups(&[STAFF_GROUP]),
    }
}

pub fn device() -> Device {
    Device {
        id: "dev-1".into(),
        tenant_id: TENANT.into(),
        enrolled: true,
        compliance: ComplianceState::Compliant,
        primary_user_id: Some("sharer-1".into()),
        group_ids: groups(&[LAPTOPS_GROUP]),
    }
}

pub fn request(mode: Mode) -> SessionRequest {
    SessionRequest {
        helper: helper(),
        sharer: sharer(),
        device: Some(device()),
        mode,
    }
}

pub fn assignment(
    id: &str,
    role_definition_id: &str,
    members: &[&str],
    scope_type: ScopeType,
    scope_groups: &[&str],
) -> RoleAssignment {
    RoleAssignment {
        id: id.into(),
        display_name: format!("{id} display"),
        role_definition_id: role_definition_id.into(),
        member_group_ids: groups(members),
        scope_type,
        scope_group_ids: groups(scope_groups),
    }
}

/// Enabled tenant, built-in roles, one Help Desk Operator assignment from the
/// helpdesk group over the staff group.
pub fn policy() -> TenantPolicy {
    TenantPolicy {
        settings: TenantSettings::enabled(TENANT),
        role_definitions: RoleDefinition::built_ins(),
        role_assignments: vec![assignment(
            BASE_ASSIGNMENT,
            HELP_DESK_OPERATOR_ROLE_ID,
            &[HELPDESK_GROUP],
            ScopeType::ResourceScope,
            &[STAFF_GROUP],
        )],
    }
}

/// A policy whose only assignment uses a custom role allowing `allowed`.
pub fn policy_with_role(
    allowed: &[ResourceAction],
    not_allowed: &[ResourceAction],
) -> TenantPolicy {
    let mut p = policy();
    p.role_definitions.push(
        RoleDefinition::custom("role-custom", "Custom", allowed.to_vec())
            .with_not_allowed(not_allowed.to_vec()),
    );
    p.role_assignments[0].role_definition_id = "role-custom".into();
    p
}

pub fn deny(reason: DenyReason) -> Decision {
    Decision::Deny { reason }
}

pub fn reason(p: &TenantPolicy, r: &SessionRequest) -> Option<DenyReason> {
    decide(p, r).deny_reason()
}

pub fn dev(r: &mut SessionRequest) -> &mut Device {
    r.device.as_mut().expect("request has a device")
}
