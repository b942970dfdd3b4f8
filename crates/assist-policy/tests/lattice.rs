//! The mode implication lattice and `notAllowed`, exhaustively.

mod common;

use std::collections::BTreeSet;

use assist_policy::*;
use common::*;

use ResourceAction as A;

fn modes(ms: &[Mode]) -> BTreeSet<Mode> {
    ms.iter().copied().collect()
}

#[test]
fn mode_implication_table() {
    // implies[row][col]: does holding row grant col?
    let expected = [
        // viewOnly fullControl elevation unattended
        [true, false, false, false], // viewOnly
        [true, true, false, false],  // fullControl
        [true, true, true, false],   // elevation
        [true, true, true, true],    // unattended
    ];
    for (i, held) in Mode::ALL.into_iter().enumerate() {
        for (j, wanted) in Mode::ALL.into_iter().enumerate() {
            assert_eq!(held.implies(wanted), expected[i][j], "{held} ⇒ {wanted}");
        }
        let implied: BTreeSet<Mode> = Mode::ALL
            .into_iter()
            .enumerate()
            .filter(|(j, _)| expected[i][*j])
            .map(|(_, m)| m)
            .collect();
        assert_eq!(held.with_implied(), implied);
    }
}

#[test]
fn mode_actions_and_names() {
    let table = [
        (Mode::ViewOnly, A::ViewScreen, "viewOnly"),
        (Mode::FullControl, A::TakeFullControl, "fullControl"),
        (Mode::Elevation, A::Elevation, "elevation"),
        (Mode::Unattended, A::Unattended, "unattended"),
    ];
    for (mode, action, name) in table {
        assert_eq!(mode.action(), action);
        assert_eq!(action.mode(), Some(mode));
        assert_eq!(mode.as_str(), name);
    }
    for a in [
        A::RequestRemoteAssistance,
        A::Read,
        A::Update,
        A::ViewReports,
    ] {
        assert_eq!(a.mode(), None, "{a}");
    }
}

/// Every requested mode against a role holding Offer + Read + exactly one other
/// action, through the full evaluator.
#[test]
fn every_mode_against_every_single_granted_action() {
    // expected[action][mode]
    let table: [(ResourceAction, [bool; 4]); 8] = [
        (A::RequestRemoteAssistance, [false, false, false, false]),
        (A::Read, [false, false, false, false]),
        (A::Update, [false, false, false, false]),
        (A::ViewReports, [false, false, false, false]),
        (A::ViewScreen, [true, false, false, false]),
        (A::TakeFullControl, [true, true, false, false]),
        (A::Elevation, [true, true, true, false]),
        (A::Unattended, [true, true, true, true]),
    ];
    for (action, row) in table {
        let p = policy_with_role(&[A::RequestRemoteAssistance, A::Read, action], &[]);
        for (mode, allowed) in Mode::ALL.into_iter().zip(row) {
            let d = decide(&p, &request(mode));
            if allowed {
                assert!(d.is_allowed(), "{action} / {mode}: {d:?}");
                assert_eq!(d.granted_modes(), mode.with_implied());
            } else {
                assert_eq!(d, deny(DenyReason::PermissionMissing), "{action} / {mode}");
            }
        }
    }
}

/// Every mode against every single action *without* Offer + Read: never allowed.
#[test]
fn no_mode_without_offer_and_read() {
    for action in ResourceAction::ALL {
        for extra in [vec![], vec![A::RequestRemoteAssistance], vec![A::Read]] {
            let mut allowed = extra.clone();
            allowed.push(action);
            if allowed.contains(&A::RequestRemoteAssistance) && allowed.contains(&A::Read) {
                continue;
            }
            let p = policy_with_role(&allowed, &[]);
            for mode in Mode::ALL {
                assert_eq!(
                    reason(&p, &request(mode)),
                    Some(DenyReason::PermissionMissing),
                    "{allowed:?} / {mode}"
                );
            }
        }
    }
}

fn perms(allowed: &[ResourceAction], not_allowed: &[ResourceAction]) -> EffectivePermissions {
    RoleDefinition::custom("r", "r", allowed.to_vec())
        .with_not_allowed(not_allowed.to_vec())
        .effective_permissions()
}

#[test]
fn not_allowed_of_a_mode_blocks_it_and_every_higher_mode() {
    let p = perms(&[A::Unattended], &[A::Elevation]);
    assert_eq!(p.modes, modes(&[Mode::ViewOnly, Mode::FullControl]));
    let p = perms(&[A::Unattended], &[A::ViewScreen]);
    assert_eq!(p.modes, modes(&[]));
    let p = perms(&[A::Elevation], &[A::TakeFullControl]);
    assert_eq!(p.modes, modes(&[Mode::ViewOnly]));
}

#[test]
fn not_allowed_of_a_mode_keeps_what_an_allowed_higher_action_implies_below_it() {
    let p = perms(&[A::Unattended], &[A::Unattended]);
    assert_eq!(
        p.modes,
        modes(&[Mode::ViewOnly, Mode::FullControl, Mode::Elevation])
    );
    let p = perms(&[A::ViewScreen], &[A::Unattended]);
    assert_eq!(p.modes, modes(&[Mode::ViewOnly]));
}

#[test]
fn not_allowed_of_offer_or_read_removes_them() {
    let all = [A::RequestRemoteAssistance, A::Read, A::ViewScreen];
    let p = perms(&all, &[A::Read]);
    assert!(p.can_offer && !p.can_read);
    assert!(!p.allows_session(Mode::ViewOnly));
    let p = perms(&all, &[A::RequestRemoteAssistance]);
    assert!(!p.can_offer && p.can_read);
    assert!(!p.allows_session(Mode::ViewOnly));
    let p = perms(&all, &[]);
    assert!(p.allows_session(Mode::ViewOnly));
}

#[test]
fn not_allowed_in_another_permission_entry_applies_to_the_whole_role() {
    let mut role = RoleDefinition::help_desk_operator();
    role.role_permissions.push(RolePermission {
        resource_actions: vec![ResourceActionSet {
            allowed_resource_actions: vec![],
            not_allowed_resource_actions: vec![A::Elevation],
        }],
    });
    assert_eq!(
        role.effective_permissions().modes,
        modes(&[Mode::ViewOnly, Mode::FullControl])
    );
    let mut p = policy();
    p.role_definitions[0] = role;
    assert!(decide(&p, &request(Mode::FullControl)).is_allowed());
    assert_eq!(
        reason(&p, &request(Mode::Elevation)),
        Some(DenyReason::PermissionMissing)
    );
    assert_eq!(
        reason(&p, &request(Mode::Unattended)),
        Some(DenyReason::PermissionMissing)
    );
}

fn rank(a: ResourceAction) -> Option<u8> {
    match a {
        A::ViewScreen => Some(0),
        A::TakeFullControl => Some(1),
        A::Elevation => Some(2),
        A::Unattended => Some(3),
        _ => None,
    }
}

fn subset(mask: u32) -> Vec<ResourceAction> {
    ResourceAction::ALL
        .into_iter()
        .enumerate()
        .filter(|(i, _)| mask & (1 << i) != 0)
        .map(|(_, a)| a)
        .collect()
}

/// All 256 × 256 allowed / notAllowed combinations against the documented rule:
/// mode of rank k is granted iff the highest allowed mode has rank ≥ k and the
/// lowest not-allowed mode (if any) has rank > k; other actions iff allowed and
/// not not-allowed.
#[test]
fn every_allowed_and_not_allowed_combination_follows_the_documented_rule() {
    for allowed_mask in 0..256u32 {
        let allowed = subset(allowed_mask);
        let top = allowed.iter().filter_map(|a| rank(*a)).max();
        for blocked_mask in 0..256u32 {
            let blocked = subset(blocked_mask);
            let floor = blocked.iter().filter_map(|a| rank(*a)).min();
            let p = perms(&allowed, &blocked);
            for action in ResourceAction::ALL {
                let expected = match rank(action) {
                    Some(k) => top.is_some_and(|t| t >= k) && floor.is_none_or(|f| f > k),
                    None => allowed.contains(&action) && !blocked.contains(&action),
                };
                assert_eq!(
                    p.actions.contains(&action),
                    expected,
                    "{action} with allowed {allowed:?} notAllowed {blocked:?}"
                );
            }
            let expected_modes: BTreeSet<Mode> =
                p.actions.iter().filter_map(|a| a.mode()).collect();
            assert_eq!(p.modes, expected_modes);
            // Granted modes are downward closed.
            for m in &p.modes {
                assert!(m.with_implied().is_subset(&p.modes));
            }
            assert_eq!(p.can_offer, p.actions.contains(&A::RequestRemoteAssistance));
            assert_eq!(p.can_read, p.actions.contains(&A::Read));
        }
    }
}

#[test]
fn update_and_view_reports_grant_no_session() {
    let p = policy_with_role(&[A::Update, A::ViewReports], &[]);
    for mode in Mode::ALL {
        assert_eq!(
            reason(&p, &request(mode)),
            Some(DenyReason::PermissionMissing)
        );
    }
    let perms = perms(&[A::Update, A::ViewReports], &[]);
    assert!(perms.modes.is_empty());
    assert_eq!(
        perms.actions,
        [A::Update, A::ViewReports].into_iter().collect()
    );
}
