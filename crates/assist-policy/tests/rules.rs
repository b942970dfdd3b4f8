//! One test (at least) per rule, reason code, warning and scope type.

mod common;

use assist_policy::*;
use common::*;

// ---------- baseline ----------

#[test]
fn baseline_full_control_is_allowed_with_implied_modes_no_warnings_and_chat() {
    assert_eq!(
        decide(&policy(), &request(Mode::FullControl)),
        Decision::Allow {
            granted: [Mode::ViewOnly, Mode::FullControl].into_iter().collect(),
            warnings: vec![],
            chat_allowed: true,
            matched_assignment_ids: ids(&[BASE_ASSIGNMENT]),
        }
    );
}

#[test]
fn granted_is_the_requested_mode_and_what_it_implies_not_everything_held() {
    // Help Desk Operator holds unattended, but a viewOnly request grants viewOnly only.
    let d = decide(&policy(), &request(Mode::ViewOnly));
    assert_eq!(d.granted_modes(), [Mode::ViewOnly].into_iter().collect());
    let d = decide(&policy(), &request(Mode::Unattended));
    assert_eq!(d.granted_modes(), Mode::ALL.into_iter().collect());
}

// ---------- rule 2: remote help enabled ----------

#[test]
fn rule2_disabled_tenant_denies_remote_help_disabled() {
    let mut p = policy();
    p.settings.remote_assistance_state = RemoteAssistanceState::Disabled;
    assert_eq!(
        decide(&p, &request(Mode::ViewOnly)),
        deny(DenyReason::RemoteHelpDisabled)
    );
}

#[test]
fn rule2_unconfigured_tenant_reads_disabled() {
    let mut p = policy();
    p.settings = TenantSettings::unconfigured(TENANT);
    assert_eq!(
        p.settings.remote_assistance_state,
        RemoteAssistanceState::Disabled
    );
    assert_eq!(
        reason(&p, &request(Mode::ViewOnly)),
        Some(DenyReason::RemoteHelpDisabled)
    );
    assert_eq!(
        RemoteAssistanceState::default(),
        RemoteAssistanceState::Disabled
    );
}

#[test]
fn rule2_is_evaluated_before_cross_tenant_and_everything_else() {
    let mut p = policy();
    p.settings.remote_assistance_state = RemoteAssistanceState::Disabled;
    p.role_assignments.clear();
    let mut r = request(Mode::Unattended);
    r.sharer.tenant_id = OTHER_TENANT.into();
    r.device = None;
    assert_eq!(reason(&p, &r), Some(DenyReason::RemoteHelpDisabled));
}

// ---------- rule 3: same tenant ----------

#[test]
fn rule3_sharer_in_other_tenant_denies_cross_tenant() {
    let mut r = request(Mode::ViewOnly);
    r.sharer.tenant_id = OTHER_TENANT.into();
    assert_eq!(decide(&policy(), &r), deny(DenyReason::CrossTenant));
}

#[test]
fn rule3_device_in_other_tenant_denies_cross_tenant() {
    let mut r = request(Mode::ViewOnly);
    dev(&mut r).tenant_id = OTHER_TENANT.into();
    assert_eq!(reason(&policy(), &r), Some(DenyReason::CrossTenant));
}

#[test]
fn rule3_helper_outside_the_evaluated_tenant_denies_cross_tenant() {
    let mut r = request(Mode::ViewOnly);
    r.helper.tenant_id = OTHER_TENANT.into();
    assert_eq!(reason(&policy(), &r), Some(DenyReason::CrossTenant));
}

#[test]
fn rule3_cross_tenant_holds_even_with_the_widest_scope_and_every_setting() {
    let mut p = policy();
    p.settings.allow_sessions_to_unenrolled_devices = true;
    p.role_assignments.push(assignment(
        "asg-everything",
        HELP_DESK_OPERATOR_ROLE_ID,
        &[HELPDESK_GROUP],
        ScopeType::AllDevicesAndLicensedUsers,
        &[],
    ));
    let mut r = request(Mode::ViewOnly);
    r.sharer.tenant_id = OTHER_TENANT.into();
    dev(&mut r).tenant_id = OTHER_TENANT.into();
    assert_eq!(reason(&p, &r), Some(DenyReason::CrossTenant));
}

#[test]
fn rule3_is_evaluated_before_enrollment_and_rbac() {
    let mut p = policy();
    p.role_assignments.clear();
    let mut r = request(Mode::Unattended);
    r.sharer.tenant_id = OTHER_TENANT.into();
    r.device = None;
    assert_eq!(reason(&p, &r), Some(DenyReason::CrossTenant));
}

// ---------- rule 4: enrollment ----------

fn unenrolled(r: &mut SessionRequest) {
    if let Some(d) = r.device.as_mut() {
        d.enrolled = false;
        d.compliance = ComplianceState::Unknown;
    }
}

#[test]
fn rule4_unenrolled_device_denied_when_not_allowed() {
    let mut r = request(Mode::ViewOnly);
    unenrolled(&mut r);
    assert_eq!(
        decide(&policy(), &r),
        deny(DenyReason::UnenrolledDeviceNotAllowed)
    );
}

#[test]
fn rule4_unknown_device_counts_as_unenrolled() {
    let mut r = request(Mode::ViewOnly);
    r.device = None;
    assert_eq!(
        reason(&policy(), &r),
        Some(DenyReason::UnenrolledDeviceNotAllowed)
    );
}

#[test]
fn rule4_unenrolled_device_allowed_with_warning_when_tenant_allows() {
    let mut p = policy();
    p.settings.allow_sessions_to_unenrolled_devices = true;
    let mut r = request(Mode::Elevation);
    unenrolled(&mut r);
    let d = decide(&p, &r);
    assert!(d.is_allowed(), "{d:?}");
    assert_eq!(d.warnings(), &[Warning::DeviceUnenrolled]);
}

#[test]
fn rule4_unknown_device_allowed_with_warning_when_tenant_allows() {
    let mut p = policy();
    p.settings.allow_sessions_to_unenrolled_devices = true;
    let mut r = request(Mode::FullControl);
    r.device = None;
    let d = decide(&p, &r);
    assert!(d.is_allowed(), "{d:?}");
    assert_eq!(d.warnings(), &[Warning::DeviceUnenrolled]);
}

#[test]
fn rule4_unattended_to_unenrolled_device_denied_even_when_allowed() {
    let mut p = policy();
    p.settings.allow_sessions_to_unenrolled_devices = true;
    let mut r = request(Mode::Unattended);
    unenrolled(&mut r);
    assert_eq!(
        decide(&p, &r),
        deny(DenyReason::UnattendedRequiresEnrolledDevice)
    );
    r.device = None;
    assert_eq!(
        reason(&p, &r),
        Some(DenyReason::UnattendedRequiresEnrolledDevice)
    );
}

#[test]
fn rule4_unattended_to_unenrolled_device_when_not_allowed_says_not_allowed() {
    let mut r = request(Mode::Unattended);
    unenrolled(&mut r);
    assert_eq!(
        reason(&policy(), &r),
        Some(DenyReason::UnenrolledDeviceNotAllowed)
    );
}

#[test]
fn rule4_unattended_to_enrolled_device_is_allowed() {
    let d = decide(&policy(), &request(Mode::Unattended));
    assert!(d.is_allowed(), "{d:?}");
}

#[test]
fn rule4_is_evaluated_before_rbac() {
    let mut p = policy();
    p.role_assignments.clear();
    let mut r = request(Mode::ViewOnly);
    unenrolled(&mut r);
    assert_eq!(reason(&p, &r), Some(DenyReason::UnenrolledDeviceNotAllowed));
}

// ---------- rule 5: RBAC ----------

#[test]
fn rule5_no_assignments_denies_no_role_assignment() {
    let mut p = policy();
    p.role_assignments.clear();
    assert_eq!(
        decide(&p, &request(Mode::ViewOnly)),
        deny(DenyReason::NoRoleAssignment)
    );
}

#[test]
fn rule5_assignments_for_other_groups_deny_no_role_assignment() {
    let mut r = request(Mode::ViewOnly);
    r.helper.group_ids = groups(&["grp-marketing"]);
    assert_eq!(reason(&policy(), &r), Some(DenyReason::NoRoleAssignment));
}

#[test]
fn rule5_member_out_of_scope_denies_not_in_scope() {
    let mut r = request(Mode::ViewOnly);
    r.sharer.group_ids = groups(&["grp-finance"]);
    assert_eq!(decide(&policy(), &r), deny(DenyReason::NotInScope));
}

#[test]
fn rule5_in_scope_role_without_the_mode_denies_permission_missing() {
    let mut p = policy();
    p.role_assignments[0].role_definition_id = SCHOOL_ADMINISTRATOR_ROLE_ID.into();
    assert_eq!(
        decide(&p, &request(Mode::Unattended)),
        deny(DenyReason::PermissionMissing)
    );
    assert!(decide(&p, &request(Mode::Elevation)).is_allowed());
}

#[test]
fn rule5_offer_is_required() {
    let p = policy_with_role(&[ResourceAction::Read, ResourceAction::Unattended], &[]);
    assert_eq!(
        reason(&p, &request(Mode::ViewOnly)),
        Some(DenyReason::PermissionMissing)
    );
}

#[test]
fn rule5_read_is_required() {
    let p = policy_with_role(
        &[
            ResourceAction::RequestRemoteAssistance,
            ResourceAction::Unattended,
        ],
        &[],
    );
    assert_eq!(
        reason(&p, &request(Mode::ViewOnly)),
        Some(DenyReason::PermissionMissing)
    );
}

#[test]
fn rule5_offer_read_and_mode_suffice() {
    let p = policy_with_role(
        &[
            ResourceAction::RequestRemoteAssistance,
            ResourceAction::Read,
            ResourceAction::ViewScreen,
        ],
        &[],
    );
    assert!(decide(&p, &request(Mode::ViewOnly)).is_allowed());
    assert_eq!(
        reason(&p, &request(Mode::FullControl)),
        Some(DenyReason::PermissionMissing)
    );
}

#[test]
fn rule5_dangling_role_definition_grants_nothing() {
    let mut p = policy();
    p.role_assignments[0].role_definition_id = "role-deleted".into();
    assert_eq!(
        reason(&p, &request(Mode::ViewOnly)),
        Some(DenyReason::PermissionMissing)
    );
    let e = explain(&p, &request(Mode::ViewOnly));
    assert!(!e.assignments[0].role_definition_found);
    assert_eq!(e.assignments[0].role_display_name, None);
}

#[test]
fn rule5_permission_missing_wins_over_not_in_scope() {
    // a-wide: grants everything but is out of scope; a-narrow: in scope, grants nothing useful.
    let mut p = policy();
    p.role_definitions.push(RoleDefinition::custom(
        "role-reports",
        "Reports",
        [ResourceAction::ViewReports],
    ));
    p.role_assignments = vec![
        assignment(
            "a-wide",
            HELP_DESK_OPERATOR_ROLE_ID,
            &[HELPDESK_GROUP],
            ScopeType::ResourceScope,
            &["grp-finance"],
        ),
        assignment(
            "a-narrow",
            "role-reports",
            &[HELPDESK_GROUP],
            ScopeType::ResourceScope,
            &[STAFF_GROUP],
        ),
    ];
    assert_eq!(
        reason(&p, &request(Mode::ViewOnly)),
        Some(DenyReason::PermissionMissing)
    );
    // Remove the in-scope one: now nothing reaches the sharer.
    p.role_assignments.pop();
    assert_eq!(
        reason(&p, &request(Mode::ViewOnly)),
        Some(DenyReason::NotInScope)
    );
}

#[test]
fn rule5_in_scope_assignment_of_which_the_helper_is_not_member_does_not_count() {
    let mut p = policy();
    p.role_assignments = vec![
        assignment(
            "a-mine",
            HELP_DESK_OPERATOR_ROLE_ID,
            &[HELPDESK_GROUP],
            ScopeType::ResourceScope,
            &["grp-finance"],
        ),
        assignment(
            "a-theirs",
            HELP_DESK_OPERATOR_ROLE_ID,
            &["grp-other-admins"],
            ScopeType::AllLicensedUsers,
            &[],
        ),
    ];
    assert_eq!(
        reason(&p, &request(Mode::ViewOnly)),
        Some(DenyReason::NotInScope)
    );
}

#[test]
fn rule5_permissions_do_not_combine_across_assignments() {
    let mut p = policy();
    p.role_definitions.push(RoleDefinition::custom(
        "role-offer-read",
        "Offer+Read",
        [
            ResourceAction::RequestRemoteAssistance,
            ResourceAction::Read,
        ],
    ));
    p.role_definitions.push(RoleDefinition::custom(
        "role-view",
        "View",
        [ResourceAction::ViewScreen],
    ));
    p.role_assignments = vec![
        assignment(
            "a-1",
            "role-offer-read",
            &[HELPDESK_GROUP],
            ScopeType::AllLicensedUsers,
            &[],
        ),
        assignment(
            "a-2",
            "role-view",
            &[HELPDESK_GROUP],
            ScopeType::AllLicensedUsers,
            &[],
        ),
    ];
    assert_eq!(
        reason(&p, &request(Mode::ViewOnly)),
        Some(DenyReason::PermissionMissing)
    );
}

#[test]
fn rule5_matched_ids_list_every_authorising_assignment_only() {
    let mut p = policy();
    p.role_assignments.push(assignment(
        "asg-all-users",
        SCHOOL_ADMINISTRATOR_ROLE_ID,
        &[HELPDESK_GROUP],
        ScopeType::AllLicensedUsers,
        &[],
    ));
    p.role_assignments.push(assignment(
        "asg-not-mine",
        HELP_DESK_OPERATOR_ROLE_ID,
        &["grp-other"],
        ScopeType::AllLicensedUsers,
        &[],
    ));
    let d = decide(&p, &request(Mode::Elevation));
    assert_eq!(
        d,
        Decision::Allow {
            granted: [Mode::ViewOnly, Mode::FullControl, Mode::Elevation]
                .into_iter()
                .collect(),
            warnings: vec![],
            chat_allowed: true,
            matched_assignment_ids: ids(&[BASE_ASSIGNMENT, "asg-all-users"]),
        }
    );
    // School Administrator does not authorise unattended: only the base assignment matches.
    match decide(&p, &request(Mode::Unattended)) {
        Decision::Allow {
            matched_assignment_ids,
            ..
        } => assert_eq!(matched_assignment_ids, ids(&[BASE_ASSIGNMENT])),
        other => panic!("expected allow, got {other:?}"),
    }
}

#[test]
fn rule5_helper_in_any_member_group_is_a_member() {
    let mut p = policy();
    p.role_assignments[0].member_group_ids = groups(&["grp-a", HELPDESK_GROUP, "grp-z"]);
    assert!(decide(&p, &request(Mode::ViewOnly)).is_allowed());
}

// ---------- scope types ----------

fn single_assignment(scope_type: ScopeType, scope_groups: &[&str]) -> TenantPolicy {
    let mut p = policy();
    p.settings.allow_sessions_to_unenrolled_devices = true;
    p.role_assignments = vec![assignment(
        "a-scope",
        HELP_DESK_OPERATOR_ROLE_ID,
        &[HELPDESK_GROUP],
        scope_type,
        scope_groups,
    )];
    p
}

fn reach(p: &TenantPolicy, r: &SessionRequest) -> Vec<ScopeReach> {
    explain(p, r).assignments[0].scope_reached_via.clone()
}

#[test]
fn scope_resource_scope_reaches_sharer_in_group_whatever_the_device() {
    let p = single_assignment(ScopeType::ResourceScope, &[STAFF_GROUP]);
    let mut r = request(Mode::ViewOnly);
    // The device is in no scope group, and belongs to someone else.
    dev(&mut r).group_ids.clear();
    dev(&mut r).primary_user_id = Some("someone-else".into());
    assert!(decide(&p, &r).is_allowed());
    assert_eq!(
        reach(&p, &r),
        vec![ScopeReach::SharerInScopeGroup {
            group_id: STAFF_GROUP.into()
        }]
    );
}

#[test]
fn scope_resource_scope_reaches_device_in_group() {
    let p = single_assignment(ScopeType::ResourceScope, &[LAPTOPS_GROUP]);
    let r = request(Mode::ViewOnly);
    assert!(decide(&p, &r).is_allowed());
    assert_eq!(
        reach(&p, &r),
        vec![ScopeReach::DeviceInScopeGroup {
            group_id: LAPTOPS_GROUP.into()
        }]
    );
}

#[test]
fn scope_resource_scope_reports_every_way_in() {
    let p = single_assignment(ScopeType::ResourceScope, &[STAFF_GROUP, LAPTOPS_GROUP]);
    assert_eq!(
        reach(&p, &request(Mode::ViewOnly)),
        vec![
            ScopeReach::SharerInScopeGroup {
                group_id: STAFF_GROUP.into()
            },
            ScopeReach::DeviceInScopeGroup {
                group_id: LAPTOPS_GROUP.into()
            },
        ]
    );
}

#[test]
fn scope_resource_scope_device_group_needs_a_device() {
    let p = single_assignment(ScopeType::ResourceScope, &[LAPTOPS_GROUP]);
    let mut r = request(Mode::ViewOnly);
    r.device = None;
    assert_eq!(reason(&p, &r), Some(DenyReason::NotInScope));
}

#[test]
fn scope_resource_scope_without_groups_reaches_nothing() {
    let p = single_assignment(ScopeType::ResourceScope, &[]);
    assert_eq!(
        reason(&p, &request(Mode::ViewOnly)),
        Some(DenyReason::NotInScope)
    );
}

#[test]
fn scope_all_devices_reaches_an_enrolled_device() {
    let p = single_assignment(ScopeType::AllDevices, &[]);
    let mut r = request(Mode::ViewOnly);
    r.sharer.group_ids.clear();
    dev(&mut r).group_ids.clear();
    assert!(decide(&p, &r).is_allowed());
    assert_eq!(reach(&p, &r), vec![ScopeReach::AllDevices]);
}

#[test]
fn scope_all_devices_excludes_unenrolled_and_unknown_devices() {
    let p = single_assignment(ScopeType::AllDevices, &[]);
    let mut r = request(Mode::ViewOnly);
    unenrolled(&mut r);
    assert_eq!(reason(&p, &r), Some(DenyReason::NotInScope));
    r.device = None;
    assert_eq!(reason(&p, &r), Some(DenyReason::NotInScope));
}

#[test]
fn scope_all_devices_ignores_scope_groups() {
    // A scope group listed on an allDevices assignment does not widen it.
    let p = single_assignment(ScopeType::AllDevices, &[STAFF_GROUP]);
    let mut r = request(Mode::ViewOnly);
    r.device = None;
    assert_eq!(reason(&p, &r), Some(DenyReason::NotInScope));
}

#[test]
fn scope_all_licensed_users_reaches_any_tenant_user_whatever_the_device() {
    let p = single_assignment(ScopeType::AllLicensedUsers, &[]);
    let mut r = request(Mode::ViewOnly);
    r.sharer.group_ids.clear();
    r.device = None;
    let d = decide(&p, &r);
    assert!(d.is_allowed(), "{d:?}");
    assert_eq!(reach(&p, &r), vec![ScopeReach::AllLicensedUsers]);
}

#[test]
fn scope_all_devices_and_licensed_users_reaches_both_ways() {
    let p = single_assignment(ScopeType::AllDevicesAndLicensedUsers, &[]);
    let r = request(Mode::ViewOnly);
    assert!(decide(&p, &r).is_allowed());
    assert_eq!(
        reach(&p, &r),
        vec![ScopeReach::AllLicensedUsers, ScopeReach::AllDevices]
    );
    let mut r = request(Mode::ViewOnly);
    r.device = None;
    assert!(decide(&p, &r).is_allowed());
    assert_eq!(reach(&p, &r), vec![ScopeReach::AllLicensedUsers]);
}

#[test]
fn scope_tenant_wide_scopes_do_not_reach_other_tenants() {
    let p = single_assignment(ScopeType::AllDevicesAndLicensedUsers, &[]);
    let mut r = request(Mode::ViewOnly);
    r.sharer.tenant_id = OTHER_TENANT.into();
    dev(&mut r).tenant_id = OTHER_TENANT.into();
    let e = explain(&p, &r);
    assert!(!e.assignments[0].in_scope);
    assert_eq!(e.decision, deny(DenyReason::CrossTenant));
}

// ---------- rule 6: warnings ----------

#[test]
fn rule6_non_compliant_device_warns() {
    let mut r = request(Mode::ViewOnly);
    dev(&mut r).compliance = ComplianceState::NonCompliant;
    let d = decide(&policy(), &r);
    assert!(d.is_allowed());
    assert_eq!(d.warnings(), &[Warning::DeviceNotCompliant]);
}

#[test]
fn rule6_unknown_compliance_on_enrolled_device_warns_not_compliant() {
    let mut r = request(Mode::ViewOnly);
    dev(&mut r).compliance = ComplianceState::Unknown;
    assert_eq!(
        decide(&policy(), &r).warnings(),
        &[Warning::DeviceNotCompliant]
    );
}

#[test]
fn rule6_compliant_enrolled_device_has_no_warning() {
    assert!(decide(&policy(), &request(Mode::ViewOnly))
        .warnings()
        .is_empty());
}

#[test]
fn rule6_unenrolled_device_warns_unenrolled_only_whatever_its_compliance() {
    let mut p = policy();
    p.settings.allow_sessions_to_unenrolled_devices = true;
    let mut r = request(Mode::ViewOnly);
    dev(&mut r).enrolled = false;
    dev(&mut r).compliance = ComplianceState::NonCompliant;
    assert_eq!(decide(&p, &r).warnings(), &[Warning::DeviceUnenrolled]);
}

// ---------- rule 7: chat ----------

#[test]
fn rule7_chat_allowed_by_default() {
    assert!(decide(&policy(), &request(Mode::ViewOnly)).chat_allowed());
}

#[test]
fn rule7_block_chat_disables_chat_but_does_not_deny() {
    let mut p = policy();
    p.settings.block_chat = true;
    let d = decide(&p, &request(Mode::FullControl));
    assert!(d.is_allowed());
    assert!(!d.chat_allowed());
}

// ---------- deny grants nothing ----------

#[test]
fn a_deny_grants_nothing() {
    let mut p = policy();
    p.role_assignments.clear();
    let d = decide(&p, &request(Mode::Unattended));
    assert!(!d.is_allowed());
    assert!(d.granted_modes().is_empty());
    assert!(d.warnings().is_empty());
    assert!(!d.chat_allowed());
}

// ---------- explanation ----------

#[test]
fn explanation_traces_every_rule_in_order() {
    let e = explain(&policy(), &request(Mode::FullControl));
    assert_eq!(e.decision, decide(&policy(), &request(Mode::FullControl)));
    assert_eq!(e.decided_by, None);
    assert_eq!(e.tenant_id, TENANT);
    assert_eq!(e.requested_mode, Mode::FullControl);
    let rules: Vec<_> = e
        .rules
        .iter()
        .map(|r| (r.rule, r.number, r.outcome))
        .collect();
    assert_eq!(
        rules,
        vec![
            (Rule::RemoteHelpEnabled, 2, RuleOutcome::Passed),
            (Rule::SameTenant, 3, RuleOutcome::Passed),
            (Rule::DeviceEnrollment, 4, RuleOutcome::Passed),
            (Rule::RoleBasedAccess, 5, RuleOutcome::Passed),
            (Rule::DeviceHealth, 6, RuleOutcome::Passed),
            (Rule::Chat, 7, RuleOutcome::Passed),
        ]
    );
    assert!(e.rules.iter().all(|r| r.deny_reason.is_none()));
}

#[test]
fn explanation_keeps_evaluating_after_the_first_failure() {
    let mut p = policy();
    p.settings.remote_assistance_state = RemoteAssistanceState::Disabled;
    p.settings.block_chat = true;
    let mut r = request(Mode::ViewOnly);
    r.sharer.tenant_id = OTHER_TENANT.into();
    dev(&mut r).compliance = ComplianceState::NonCompliant;
    let e = explain(&p, &r);
    assert_eq!(e.decision, deny(DenyReason::RemoteHelpDisabled));
    assert_eq!(e.decided_by, Some(Rule::RemoteHelpEnabled));
    let outcomes: Vec<_> = e
        .rules
        .iter()
        .map(|r| (r.outcome, r.deny_reason, r.warnings.clone()))
        .collect();
    assert_eq!(
        outcomes,
        vec![
            (
                RuleOutcome::Failed,
                Some(DenyReason::RemoteHelpDisabled),
                vec![]
            ),
            (RuleOutcome::Failed, Some(DenyReason::CrossTenant), vec![]),
            (RuleOutcome::Passed, None, vec![]),
            // The sharer is no longer a user of the tenant, but is still in the staff group.
            (RuleOutcome::Passed, None, vec![]),
            (RuleOutcome::Warned, None, vec![Warning::DeviceNotCompliant]),
            (RuleOutcome::Restricted, None, vec![]),
        ]
    );
}

#[test]
fn explanation_traces_each_assignment_sorted_by_id() {
    let mut p = policy();
    p.role_assignments.insert(
        0,
        assignment(
            "zz-not-mine",
            SCHOOL_ADMINISTRATOR_ROLE_ID,
            &["grp-other"],
            ScopeType::AllDevices,
            &[],
        ),
    );
    let e = explain(&p, &request(Mode::Unattended));
    assert_eq!(e.assignments.len(), 2);
    let mine = &e.assignments[0];
    assert_eq!(mine.assignment_id, BASE_ASSIGNMENT);
    assert_eq!(
        mine.role_display_name.as_deref(),
        Some("Help Desk Operator")
    );
    assert!(mine.role_definition_found);
    assert!(mine.helper_is_member);
    assert_eq!(mine.matching_member_group_ids, groups(&[HELPDESK_GROUP]));
    assert!(mine.in_scope);
    assert_eq!(mine.permissions.modes, Mode::ALL.into_iter().collect());
    assert!(mine.grants_requested_mode && mine.matched);

    let theirs = &e.assignments[1];
    assert_eq!(theirs.assignment_id, "zz-not-mine");
    assert!(!theirs.helper_is_member);
    assert!(theirs.matching_member_group_ids.is_empty());
    assert_eq!(theirs.scope_reached_via, vec![ScopeReach::AllDevices]);
    assert!(theirs.in_scope);
    assert!(!theirs.grants_requested_mode);
    assert!(!theirs.matched);
    assert!(!theirs.permissions.modes.contains(&Mode::Unattended));
}

#[test]
fn explanation_names_rbac_failure_reason_in_the_rule_trace() {
    let mut r = request(Mode::ViewOnly);
    r.sharer.group_ids.clear();
    let e = explain(&policy(), &r);
    assert_eq!(e.decided_by, Some(Rule::RoleBasedAccess));
    let rbac = &e.rules[3];
    assert_eq!(rbac.rule, Rule::RoleBasedAccess);
    assert_eq!(rbac.deny_reason, Some(DenyReason::NotInScope));
    assert!(rbac.detail.contains(BASE_ASSIGNMENT), "{}", rbac.detail);
}

// ---------- parsing and built-ins ----------

#[test]
fn parse_round_trips_every_action() {
    for a in ResourceAction::ALL {
        assert_eq!(ResourceAction::parse(a.as_str()), Ok(a));
        assert_eq!(a.as_str().parse::<ResourceAction>(), Ok(a));
        assert_eq!(a.to_string(), a.as_str());
    }
}

#[test]
fn parse_knows_the_exact_intune_strings() {
    let expected = [
        "Microsoft.Intune_RemoteTasks_RequestRemoteAssistance",
        "Microsoft.Intune_RemoteAssistance_Read",
        "Microsoft.Intune_RemoteAssistance_Update",
        "Microsoft.Intune_RemoteAssistance_ViewReports",
        "Microsoft.Intune_RemoteAssistanceApp_ViewScreen",
        "Microsoft.Intune_RemoteAssistanceApp_TakeFullControl",
        "Microsoft.Intune_RemoteAssistanceApp_Elevation",
        "Microsoft.Intune_RemoteAssistanceApp_Unattended",
    ];
    let actual: Vec<_> = ResourceAction::ALL.iter().map(|a| a.as_str()).collect();
    assert_eq!(actual, expected);
}

#[test]
fn parse_ignores_ascii_case() {
    assert_eq!(
        ResourceAction::parse("microsoft.intune_remoteassistanceapp_viewscreen"),
        Ok(ResourceAction::ViewScreen)
    );
}

#[test]
fn parse_rejects_unknown_actions() {
    for bad in [
        "",
        "Microsoft.Intune_RemoteAssistanceApp_*",
        " Microsoft.Intune_RemoteAssistance_Read",
        "Microsoft.Intune_RemoteAssistance_Delete",
        "Microsoft.Intune_RemoteTasks_Reboot",
    ] {
        let err = ResourceAction::parse(bad).expect_err(bad);
        assert_eq!(err.action(), bad);
        assert!(err.to_string().contains(bad), "{err}");
    }
}

#[test]
fn built_in_roles_have_stable_ids_and_the_documented_actions() {
    let hdo = RoleDefinition::help_desk_operator();
    assert_eq!(hdo.id, "builtin-help-desk-operator");
    assert_eq!(hdo.id, HELP_DESK_OPERATOR_ROLE_ID);
    assert_eq!(hdo.display_name, "Help Desk Operator");
    assert!(hdo.is_built_in);
    let perms = hdo.effective_permissions();
    assert!(perms.can_offer && perms.can_read);
    assert_eq!(perms.modes, Mode::ALL.into_iter().collect());
    assert!(!perms.actions.contains(&ResourceAction::Update));
    assert!(!perms.actions.contains(&ResourceAction::ViewReports));

    let sa = RoleDefinition::school_administrator();
    assert_eq!(sa.id, "builtin-school-administrator");
    assert_eq!(sa.id, SCHOOL_ADMINISTRATOR_ROLE_ID);
    assert_eq!(sa.display_name, "School Administrator");
    assert!(sa.is_built_in);
    let perms = sa.effective_permissions();
    assert!(perms.can_offer && perms.can_read);
    assert_eq!(
        perms.modes,
        [Mode::ViewOnly, Mode::FullControl, Mode::Elevation]
            .into_iter()
            .collect()
    );
    assert!(!perms.actions.contains(&ResourceAction::Update));
    assert!(!perms.actions.contains(&ResourceAction::ViewReports));
    assert!(!RoleDefinition::custom("x", "x", []).is_built_in);
}

#[test]
fn duplicate_role_definition_ids_are_merged_and_not_allowed_applies() {
    let mut p = policy();
    p.role_definitions.push(
        RoleDefinition::custom(HELP_DESK_OPERATOR_ROLE_ID, "Shadow", [])
            .with_not_allowed([ResourceAction::TakeFullControl]),
    );
    assert!(decide(&p, &request(Mode::ViewOnly)).is_allowed());
    assert_eq!(
        reason(&p, &request(Mode::FullControl)),
        Some(DenyReason::PermissionMissing)
    );
    let before = explain(&p, &request(Mode::FullControl));
    p.role_definitions.reverse();
    assert_eq!(
        reason(&p, &request(Mode::FullControl)),
        Some(DenyReason::PermissionMissing)
    );
    // The merged role's name is chosen independently of order (the smallest).
    let after = explain(&p, &request(Mode::FullControl));
    assert_eq!(after, before);
    assert_eq!(
        after.assignments[0].role_display_name.as_deref(),
        Some("Help Desk Operator")
    );
}

#[test]
fn reason_and_warning_codes_are_the_documented_strings() {
    let codes: Vec<_> = DenyReason::ALL.iter().map(|r| r.as_str()).collect();
    assert_eq!(
        codes,
        [
            "remoteHelpDisabled",
            "crossTenant",
            "unenrolledDeviceNotAllowed",
            "unattendedRequiresEnrolledDevice",
            "noRoleAssignment",
            "notInScope",
            "permissionMissing"
        ]
    );
    let warnings: Vec<_> = Warning::ALL.iter().map(|w| w.to_string()).collect();
    assert_eq!(warnings, ["deviceNotCompliant", "deviceUnenrolled"]);
}
