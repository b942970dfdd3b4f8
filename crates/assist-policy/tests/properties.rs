//! Property tests over small random tenants.

use std::collections::BTreeSet;

use assist_policy::*;
use proptest::prelude::*;
use proptest::strategy::ValueTree;
use proptest::test_runner::TestRunner;

const TENANT: &str = "t0";
const GROUPS: [&str; 6] = ["g0", "g1", "g2", "g3", "g4", "g5"];
const ROLE_IDS: [&str; 5] = [
    "r0",
    "r1",
    "r-missing",
    HELP_DESK_OPERATOR_ROLE_ID,
    SCHOOL_ADMINISTRATOR_ROLE_ID,
];

fn tenant() -> impl Strategy<Value = String> {
    prop_oneof![6 => Just(TENANT.to_owned()), 1 => Just("t1".to_owned())]
}

fn group_set() -> impl Strategy<Value = BTreeSet<String>> {
    proptest::sample::subsequence(GROUPS.to_vec(), 0..=GROUPS.len())
        .prop_map(|gs| gs.into_iter().map(str::to_owned).collect())
}

fn mode() -> impl Strategy<Value = Mode> {
    proptest::sample::select(Mode::ALL.to_vec())
}

fn action() -> impl Strategy<Value = ResourceAction> {
    proptest::sample::select(ResourceAction::ALL.to_vec())
}

fn settings() -> impl Strategy<Value = TenantSettings> {
    (
        prop_oneof![9 => Just(TENANT.to_owned()), 1 => Just("t1".to_owned())],
        prop_oneof![
            6 => Just(RemoteAssistanceState::Enabled),
            1 => Just(RemoteAssistanceState::Disabled)
        ],
        any::<bool>(),
        any::<bool>(),
    )
        .prop_map(|(tenant_id, state, allow, block)| TenantSettings {
            tenant_id,
            remote_assistance_state: state,
            allow_sessions_to_unenrolled_devices: allow,
            block_chat: block,
        })
}

fn device() -> impl Strategy<Value = Option<Device>> {
    proptest::option::weighted(
        0.8,
        (
            tenant(),
            proptest::bool::weighted(0.75),
            proptest::sample::select(vec![
                ComplianceState::Compliant,
                ComplianceState::NonCompliant,
                ComplianceState::Unknown,
            ]),
            group_set(),
        )
            .prop_map(|(tenant_id, enrolled, compliance, group_ids)| Device {
                id: "dev".into(),
                tenant_id,
                enrolled,
                compliance,
                primary_user_id: None,
                group_ids,
            }),
    )
}

fn role_definition(id: &'static str) -> impl Strategy<Value = RoleDefinition> {
    (
        proptest::sample::subsequence(ResourceAction::ALL.to_vec(), 0..=8),
        proptest::bool::weighted(0.7),
        prop_oneof![
            3 => Just(vec![]),
            1 => proptest::sample::subsequence(ResourceAction::ALL.to_vec(), 1..=2)
        ],
    )
        .prop_map(move |(mut allowed, offer_read, not_allowed)| {
            if offer_read {
                allowed.extend([
                    ResourceAction::RequestRemoteAssistance,
                    ResourceAction::Read,
                ]);
            }
            RoleDefinition::custom(id, id, allowed).with_not_allowed(not_allowed)
        })
}

fn assignments() -> impl Strategy<Value = Vec<RoleAssignment>> {
    proptest::collection::vec(
        (
            proptest::sample::select(ROLE_IDS.to_vec()),
            group_set(),
            proptest::sample::select(vec![
                ScopeType::ResourceScope,
                ScopeType::ResourceScope,
                ScopeType::AllDevices,
                ScopeType::AllLicensedUsers,
                ScopeType::AllDevicesAndLicensedUsers,
            ]),
            group_set(),
        ),
        0..5,
    )
    .prop_map(|raw| {
        raw.into_iter()
            .enumerate()
            .map(|(i, (role, members, scope_type, scope))| RoleAssignment {
                id: format!("a{i}"),
                display_name: String::new(),
                role_definition_id: role.to_owned(),
                member_group_ids: members,
                scope_type,
                scope_group_ids: scope,
            })
            .collect()
    })
}

/// A random tenant's facts and a request: biased so that allows are common.
fn facts() -> impl Strategy<Value = (TenantPolicy, SessionRequest)> {
    (
        settings(),
        role_definition("r0"),
        role_definition("r1"),
        assignments(),
        (tenant(), group_set()),
        (tenant(), group_set()),
        device(),
        mode(),
    )
        .prop_map(
            |(settings, r0, r1, role_assignments, helper, sharer, device, mode)| {
                let mut role_definitions = RoleDefinition::built_ins();
                role_definitions.extend([r0, r1]);
                (
                    TenantPolicy {
                        settings,
                        role_definitions,
                        role_assignments,
                    },
                    SessionRequest {
                        helper: Helper {
                            tenant_id: helper.0,
                            user_id: "helper".into(),
                            group_ids: helper.1,
                        },
                        sharer: Sharer {
                            tenant_id: sharer.0,
                            user_id: "sharer".into(),
                            group_ids: sharer.1,
                        },
                        device,
                        mode,
                    },
                )
            },
        )
}

/// `after` is at least as permissive as `before`.
fn assert_no_less_permissive(before: &Decision, after: &Decision) -> Result<(), TestCaseError> {
    if let Decision::Allow {
        granted,
        matched_assignment_ids,
        ..
    } = before
    {
        prop_assert!(after.is_allowed(), "allow became {:?}", after);
        prop_assert!(granted.is_subset(&after.granted_modes()));
        if let Decision::Allow {
            matched_assignment_ids: after_ids,
            ..
        } = after
        {
            prop_assert!(matched_assignment_ids.is_subset(after_ids));
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn a_deny_grants_nothing_and_an_allow_is_consistent((policy, request) in facts()) {
        let decision = decide(&policy, &request);
        let explanation = explain(&policy, &request);
        prop_assert_eq!(&explanation.decision, &decision);
        let trace_matched: BTreeSet<String> = explanation
            .assignments
            .iter()
            .filter(|a| a.matched)
            .map(|a| a.assignment_id.clone())
            .collect();
        match &decision {
            Decision::Deny { reason } => {
                prop_assert!(decision.granted_modes().is_empty());
                prop_assert!(decision.warnings().is_empty());
                prop_assert!(!decision.chat_allowed());
                // The deny carries the first failing rule's reason.
                let first = explanation.rules.iter().find(|r| r.outcome == RuleOutcome::Failed);
                prop_assert_eq!(first.map(|r| r.rule), explanation.decided_by);
                prop_assert_eq!(first.and_then(|r| r.deny_reason), Some(*reason));
            }
            Decision::Allow { granted, chat_allowed, matched_assignment_ids, .. } => {
                prop_assert_eq!(granted, &request.mode.with_implied());
                prop_assert_eq!(*chat_allowed, !policy.settings.block_chat);
                prop_assert!(!matched_assignment_ids.is_empty());
                prop_assert_eq!(matched_assignment_ids, &trace_matched);
                prop_assert_eq!(explanation.decided_by, None);
                prop_assert!(explanation.rules.iter().all(|r| r.outcome != RuleOutcome::Failed));
                // Everything an allow needs actually holds.
                prop_assert_eq!(policy.settings.remote_assistance_state, RemoteAssistanceState::Enabled);
                prop_assert_eq!(&request.helper.tenant_id, &policy.settings.tenant_id);
                prop_assert_eq!(&request.sharer.tenant_id, &policy.settings.tenant_id);
                for id in matched_assignment_ids {
                    let a = policy.role_assignments.iter().find(|a| &a.id == id);
                    prop_assert!(a.is_some_and(|a| !a.member_group_ids.is_disjoint(&request.helper.group_ids)));
                }
            }
        }
    }

    #[test]
    fn adding_a_permission_to_a_role_never_makes_it_less_permissive(
        (policy, request) in facts(),
        role in 0usize..4,
        added in action(),
    ) {
        let before = decide(&policy, &request);
        let mut wider = policy.clone();
        wider.role_definitions[role].role_permissions[0].resource_actions[0]
            .allowed_resource_actions
            .push(added);
        assert_no_less_permissive(&before, &decide(&wider, &request))?;
    }

    #[test]
    fn adding_the_helper_to_more_groups_never_makes_it_less_permissive(
        (policy, request) in facts(),
        extra in group_set(),
    ) {
        let before = decide(&policy, &request);
        let mut more = request.clone();
        more.helper.group_ids.extend(extra);
        assert_no_less_permissive(&before, &decide(&policy, &more))?;
    }

    #[test]
    fn widening_a_scope_or_adding_an_assignment_never_makes_it_less_permissive(
        (policy, request) in facts(),
        index in 0usize..5,
        extra in group_set(),
        new_role in proptest::sample::select(ROLE_IDS.to_vec()),
        new_members in group_set(),
    ) {
        let before = decide(&policy, &request);
        let mut wider = policy.clone();
        if let Some(a) = wider.role_assignments.get_mut(index) {
            a.scope_group_ids.extend(extra.clone());
        }
        assert_no_less_permissive(&before, &decide(&wider, &request))?;
        wider.role_assignments.push(RoleAssignment {
            id: "a-new".into(),
            display_name: String::new(),
            role_definition_id: new_role.to_owned(),
            member_group_ids: new_members,
            scope_type: ScopeType::ResourceScope,
            scope_group_ids: extra,
        });
        assert_no_less_permissive(&before, &decide(&wider, &request))?;
    }

    #[test]
    fn a_cross_tenant_pair_is_denied_whatever_else_holds(
        (policy, request) in facts(),
        who in 0usize..3,
        enabled in any::<bool>(),
    ) {
        let mut policy = policy;
        let mut request = request;
        policy.settings.remote_assistance_state = if enabled {
            RemoteAssistanceState::Enabled
        } else {
            RemoteAssistanceState::Disabled
        };
        let stranger = "t-stranger".to_owned();
        match who {
            0 => request.helper.tenant_id = stranger,
            1 => request.sharer.tenant_id = stranger,
            _ => {
                let device = request.device.get_or_insert_with(|| Device {
                    id: "dev".into(),
                    tenant_id: String::new(),
                    enrolled: true,
                    compliance: ComplianceState::Compliant,
                    primary_user_id: None,
                    group_ids: BTreeSet::new(),
                });
                device.tenant_id = stranger;
            }
        }
        let expected = if enabled { DenyReason::CrossTenant } else { DenyReason::RemoteHelpDisabled };
        prop_assert_eq!(decide(&policy, &request), Decision::Deny { reason: expected });
    }

    #[test]
    fn disabling_remote_help_denies_everything((policy, request) in facts()) {
        let mut policy = policy;
        policy.settings.remote_assistance_state = RemoteAssistanceState::Disabled;
        prop_assert_eq!(
            decide(&policy, &request),
            Decision::Deny { reason: DenyReason::RemoteHelpDisabled }
        );
    }

    #[test]
    fn allowing_unenrolled_devices_never_makes_it_less_permissive((policy, request) in facts()) {
        let before = decide(&policy, &request);
        let mut relaxed = policy.clone();
        relaxed.settings.allow_sessions_to_unenrolled_devices = true;
        assert_no_less_permissive(&before, &decide(&relaxed, &request))?;
    }

    #[test]
    fn decision_is_deterministic_and_independent_of_order(
        (policy, request, shuffled_assignments, shuffled_definitions) in facts().prop_flat_map(|(p, r)| {
            let a = p.role_assignments.clone();
            let d = p.role_definitions.clone();
            (Just(p), Just(r), Just(a).prop_shuffle(), Just(d).prop_shuffle())
        }),
    ) {
        let decision = decide(&policy, &request);
        prop_assert_eq!(&decide(&policy, &request), &decision);
        let explanation = explain(&policy, &request);
        prop_assert_eq!(&explain(&policy, &request), &explanation);
        let mut reordered = policy.clone();
        reordered.role_assignments = shuffled_assignments;
        reordered.role_definitions = shuffled_definitions;
        prop_assert_eq!(&decide(&reordered, &request), &decision);
        // Ids are unique here, so the whole explanation is order-independent too.
        prop_assert_eq!(&explain(&reordered, &request), &explanation);
    }

    #[test]
    fn parse_accepts_exactly_the_known_actions(s in "[A-Za-z._]{0,60}") {
        match ResourceAction::parse(&s) {
            Ok(a) => prop_assert!(a.as_str().eq_ignore_ascii_case(&s)),
            Err(e) => {
                prop_assert_eq!(e.action(), s.as_str());
                prop_assert!(ResourceAction::ALL.iter().all(|a| !a.as_str().eq_ignore_ascii_case(&s)));
            }
        }
    }
}

/// The generator is not vacuous: the monotonicity properties above only bite
/// on allows, so allows (and every deny reason) must actually be generated.
#[test]
fn generator_produces_allows_and_every_deny_reason() {
    let mut runner = TestRunner::deterministic();
    let strategy = facts();
    let mut allows = 0;
    let mut reasons = BTreeSet::new();
    let samples = 2000;
    for _ in 0..samples {
        let (policy, request) = strategy
            .new_tree(&mut runner)
            .expect("strategy generates")
            .current();
        match decide(&policy, &request) {
            Decision::Allow { .. } => allows += 1,
            Decision::Deny { reason } => {
                reasons.insert(reason);
            }
        }
    }
    assert!(allows * 10 >= samples, "only {allows} allows in {samples}");
    assert_eq!(reasons, DenyReason::ALL.into_iter().collect());
}
