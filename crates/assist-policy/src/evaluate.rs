//! The evaluator: [`decide`] and its admin-facing twin [`explain`].

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::action::Mode;
use crate::decision::{Decision, DenyReason, Warning};
use crate::facts::{
    ComplianceState, Device, EffectivePermissions, RemoteAssistanceState, RoleAssignment,
    RoleDefinition, ScopeType, SessionRequest, Sharer, TenantPolicy,
};

/// A rule of the decision, in evaluation order (rule 1, token validity, is not in this crate).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Rule {
    /// Rule 2: Remote Help is enabled for the tenant.
    RemoteHelpEnabled,
    /// Rule 3: helper, sharer and device are in the evaluated tenant.
    SameTenant,
    /// Rule 4: the device is enrolled, or unenrolled devices are allowed (and the mode is not unattended).
    DeviceEnrollment,
    /// Rule 5: a role assignment authorises the helper for this sharer/device and mode.
    RoleBasedAccess,
    /// Rule 6: device health warnings (never denies).
    DeviceHealth,
    /// Rule 7: chat allowed unless blocked (never denies).
    Chat,
}

impl Rule {
    /// Every rule, in evaluation order.
    pub const ALL: [Rule; 6] = [
        Rule::RemoteHelpEnabled,
        Rule::SameTenant,
        Rule::DeviceEnrollment,
        Rule::RoleBasedAccess,
        Rule::DeviceHealth,
        Rule::Chat,
    ];

    /// The camelCase name used on the wire.
    pub const fn as_str(self) -> &'static str {
        match self {
            Rule::RemoteHelpEnabled => "remoteHelpEnabled",
            Rule::SameTenant => "sameTenant",
            Rule::DeviceEnrollment => "deviceEnrollment",
            Rule::RoleBasedAccess => "roleBasedAccess",
            Rule::DeviceHealth => "deviceHealth",
            Rule::Chat => "chat",
        }
    }

    /// The rule's number in the broker's decision order (2 to 7; 1 is token validity).
    pub const fn number(self) -> u8 {
        match self {
            Rule::RemoteHelpEnabled => 2,
            Rule::SameTenant => 3,
            Rule::DeviceEnrollment => 4,
            Rule::RoleBasedAccess => 5,
            Rule::DeviceHealth => 6,
            Rule::Chat => 7,
        }
    }
}

impl fmt::Display for Rule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How a rule came out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum RuleOutcome {
    /// The rule holds.
    Passed,
    /// The rule fails; the first failing rule decides the deny.
    Failed,
    /// The rule holds but raises warnings (rule 6).
    Warned,
    /// The rule holds but restricts the session (rule 7: chat blocked).
    Restricted,
}

/// One rule's result in an [`Explanation`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RuleTrace {
    /// Which rule.
    pub rule: Rule,
    /// The rule's number in the decision order (2 to 7).
    pub number: u8,
    /// How it came out.
    pub outcome: RuleOutcome,
    /// The reason it would deny with; present exactly when `outcome` is `failed`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deny_reason: Option<DenyReason>,
    /// Warnings raised (rule 6 only).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<Warning>,
    /// A sentence for the admin.
    pub detail: String,
}

impl RuleTrace {
    fn new(rule: Rule, outcome: RuleOutcome, detail: String) -> Self {
        RuleTrace {
            rule,
            number: rule.number(),
            outcome,
            deny_reason: None,
            warnings: Vec::new(),
            detail,
        }
    }

    fn failed(rule: Rule, reason: DenyReason, detail: String) -> Self {
        RuleTrace {
            deny_reason: Some(reason),
            ..RuleTrace::new(rule, RuleOutcome::Failed, detail)
        }
    }
}

/// One way an assignment's scope reaches the request.
///
/// JSON: `{"via":"sharerInScopeGroup","groupId":"g1"}`, `{"via":"allDevices"}`, ...
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(tag = "via", rename_all = "camelCase", rename_all_fields = "camelCase")]
pub enum ScopeReach {
    /// The sharer is in a scope group (a user in scope reaches all of their devices).
    SharerInScopeGroup {
        /// The scope group.
        group_id: String,
    },
    /// The device is in a scope group.
    DeviceInScopeGroup {
        /// The scope group.
        group_id: String,
    },
    /// `allLicensedUsers`: the sharer is a user of the tenant.
    AllLicensedUsers,
    /// `allDevices`: the device is an enrolled device of the tenant.
    AllDevices,
}

/// One role assignment's evaluation in an [`Explanation`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AssignmentTrace {
    /// The assignment id.
    pub assignment_id: String,
    /// The assignment's display name.
    pub display_name: String,
    /// The assigned role definition id.
    pub role_definition_id: String,
    /// Whether that role definition exists (a dangling reference grants nothing).
    pub role_definition_found: bool,
    /// The role definition's display name, when found.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role_display_name: Option<String>,
    /// Whether the helper is in one of the assignment's member groups.
    pub helper_is_member: bool,
    /// The member groups the helper is in.
    pub matching_member_group_ids: BTreeSet<String>,
    /// The assignment's scope type.
    pub scope_type: ScopeType,
    /// Whether the scope reaches the sharer or the device.
    pub in_scope: bool,
    /// Every way the scope reaches them (empty when out of scope).
    pub scope_reached_via: Vec<ScopeReach>,
    /// What the role grants.
    pub permissions: EffectivePermissions,
    /// Whether the role grants Offer, Read and the requested mode.
    pub grants_requested_mode: bool,
    /// Whether this assignment authorises the request (member, in scope, grants the mode).
    pub matched: bool,
}

/// The admin "what-if": the decision plus why.
///
/// Every rule is evaluated and traced, even after the first failure, so an
/// admin sees everything that would still block the request; `decidedBy`
/// names the rule that actually decided a deny.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Explanation {
    /// The decision, identical to [`decide`]'s.
    pub decision: Decision,
    /// The first failing rule (the one whose reason the deny carries); absent on allow.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decided_by: Option<Rule>,
    /// The tenant evaluated.
    pub tenant_id: String,
    /// The requested mode.
    pub requested_mode: Mode,
    /// Rules 2 to 7, in order.
    pub rules: Vec<RuleTrace>,
    /// Every role assignment of the tenant, sorted by id.
    pub assignments: Vec<AssignmentTrace>,
}

/// Decides a session request against the tenant's facts.
///
/// Rules in order, the first failing one wins: remote help enabled → same
/// tenant → device enrollment → RBAC; then warnings and chat. Deterministic,
/// and independent of the order of role definitions and assignments.
pub fn decide(policy: &TenantPolicy, request: &SessionRequest) -> Decision {
    explain(policy, request).decision
}

/// Decides a session request and explains the decision (see [`Explanation`]).
pub fn explain(policy: &TenantPolicy, request: &SessionRequest) -> Explanation {
    let settings = &policy.settings;
    let tenant = settings.tenant_id.as_str();
    let device = request.device.as_ref();
    let enrolled = device.is_some_and(|d| d.enrolled);

    let assignments = trace_assignments(policy, request);
    let rbac = rbac_rule(&assignments, request.mode);
    let warnings = health_warnings(device);

    let rules = vec![
        remote_help_rule(settings.remote_assistance_state, tenant),
        same_tenant_rule(request, tenant),
        enrollment_rule(
            device,
            enrolled,
            settings.allow_sessions_to_unenrolled_devices,
            request.mode,
        ),
        rbac,
        health_rule(device, &warnings),
        chat_rule(settings.block_chat),
    ];

    let first_failure = rules
        .iter()
        .find_map(|r| r.deny_reason.map(|reason| (r.rule, reason)));
    let (decision, decided_by) = match first_failure {
        Some((rule, reason)) => (Decision::Deny { reason }, Some(rule)),
        None => (
            Decision::Allow {
                granted: request.mode.with_implied(),
                warnings,
                chat_allowed: !settings.block_chat,
                matched_assignment_ids: assignments
                    .iter()
                    .filter(|t| t.matched)
                    .map(|t| t.assignment_id.clone())
                    .collect(),
            },
            None,
        ),
    };

    Explanation {
        decision,
        decided_by,
        tenant_id: tenant.to_owned(),
        requested_mode: request.mode,
        rules,
        assignments,
    }
}

fn remote_help_rule(state: RemoteAssistanceState, tenant: &str) -> RuleTrace {
    match state {
        RemoteAssistanceState::Enabled => RuleTrace::new(
            Rule::RemoteHelpEnabled,
            RuleOutcome::Passed,
            format!("Remote Help is enabled for tenant {tenant}."),
        ),
        RemoteAssistanceState::Disabled => RuleTrace::failed(
            Rule::RemoteHelpEnabled,
            DenyReason::RemoteHelpDisabled,
            format!("Remote Help is disabled for tenant {tenant}."),
        ),
    }
}

fn same_tenant_rule(request: &SessionRequest, tenant: &str) -> RuleTrace {
    let mut outsiders = Vec::new();
    if request.helper.tenant_id != tenant {
        outsiders.push(format!(
            "helper {} is in tenant {}",
            request.helper.user_id, request.helper.tenant_id
        ));
    }
    if request.sharer.tenant_id != tenant {
        outsiders.push(format!(
            "sharer {} is in tenant {}",
            request.sharer.user_id, request.sharer.tenant_id
        ));
    }
    if let Some(d) = &request.device {
        if d.tenant_id != tenant {
            outsiders.push(format!("device {} is in tenant {}", d.id, d.tenant_id));
        }
    }
    if outsiders.is_empty() {
        RuleTrace::new(
            Rule::SameTenant,
            RuleOutcome::Passed,
            format!("Helper, sharer and device are all in tenant {tenant}."),
        )
    } else {
        RuleTrace::failed(
            Rule::SameTenant,
            DenyReason::CrossTenant,
            format!(
                "Sessions never cross tenants, but the evaluated tenant is {tenant} and {}.",
                outsiders.join(", ")
            ),
        )
    }
}

fn describe_device(device: Option<&Device>) -> String {
    match device {
        Some(d) => format!("Device {}", d.id),
        None => "The sharer's device is unknown and counts as unenrolled; it".to_owned(),
    }
}

fn enrollment_rule(
    device: Option<&Device>,
    enrolled: bool,
    allow_unenrolled: bool,
    mode: Mode,
) -> RuleTrace {
    let subject = describe_device(device);
    if enrolled {
        RuleTrace::new(
            Rule::DeviceEnrollment,
            RuleOutcome::Passed,
            format!("{subject} is enrolled."),
        )
    } else if !allow_unenrolled {
        RuleTrace::failed(
            Rule::DeviceEnrollment,
            DenyReason::UnenrolledDeviceNotAllowed,
            format!(
                "{subject} is not enrolled, and the tenant does not allow sessions to unenrolled devices."
            ),
        )
    } else if mode == Mode::Unattended {
        RuleTrace::failed(
            Rule::DeviceEnrollment,
            DenyReason::UnattendedRequiresEnrolledDevice,
            format!("{subject} is not enrolled, and unattended mode always requires an enrolled device."),
        )
    } else {
        RuleTrace::new(
            Rule::DeviceEnrollment,
            RuleOutcome::Passed,
            format!("{subject} is not enrolled; the tenant allows sessions to unenrolled devices."),
        )
    }
}

fn health_warnings(device: Option<&Device>) -> Vec<Warning> {
    match device {
        Some(d) if d.enrolled => match d.compliance {
            ComplianceState::Compliant => Vec::new(),
            ComplianceState::NonCompliant | ComplianceState::Unknown => {
                vec![Warning::DeviceNotCompliant]
            }
        },
        _ => vec![Warning::DeviceUnenrolled],
    }
}

fn health_rule(device: Option<&Device>, warnings: &[Warning]) -> RuleTrace {
    let detail = match device {
        Some(d) if d.enrolled => match d.compliance {
            ComplianceState::Compliant => format!("Device {} is compliant.", d.id),
            ComplianceState::NonCompliant => format!(
                "Device {} is not compliant; the helper must acknowledge it.",
                d.id
            ),
            ComplianceState::Unknown => format!(
                "Device {}'s compliance is unknown; the helper must acknowledge it as not compliant.",
                d.id
            ),
        },
        Some(d) => format!(
            "Device {} is not enrolled; the helper must acknowledge it.",
            d.id
        ),
        None => {
            "The sharer's device is unknown and counts as unenrolled; the helper must acknowledge it."
                .to_owned()
        }
    };
    RuleTrace {
        warnings: warnings.to_vec(),
        ..RuleTrace::new(
            Rule::DeviceHealth,
            if warnings.is_empty() {
                RuleOutcome::Passed
            } else {
                RuleOutcome::Warned
            },
            detail,
        )
    }
}

fn chat_rule(block_chat: bool) -> RuleTrace {
    if block_chat {
        RuleTrace::new(
            Rule::Chat,
            RuleOutcome::Restricted,
            "Chat is blocked by the tenant setting blockChat.".to_owned(),
        )
    } else {
        RuleTrace::new(
            Rule::Chat,
            RuleOutcome::Passed,
            "Chat is allowed.".to_owned(),
        )
    }
}

/// Role definitions by id, duplicates merged (documented on [`RoleDefinition`]).
struct MergedRole<'a> {
    display_name: &'a str,
    permissions: EffectivePermissions,
}

fn merge_roles(definitions: &[RoleDefinition]) -> BTreeMap<&str, MergedRole<'_>> {
    let mut pooled: BTreeMap<&str, (&str, BTreeSet<_>, BTreeSet<_>)> = BTreeMap::new();
    for def in definitions {
        let entry = pooled.entry(def.id.as_str()).or_insert((
            def.display_name.as_str(),
            BTreeSet::new(),
            BTreeSet::new(),
        ));
        entry.0 = entry.0.min(def.display_name.as_str());
        entry.1.extend(def.allowed_actions());
        entry.2.extend(def.not_allowed_actions());
    }
    pooled
        .into_iter()
        .map(|(id, (display_name, allowed, not_allowed))| {
            (
                id,
                MergedRole {
                    display_name,
                    permissions: EffectivePermissions::from_actions(&allowed, &not_allowed),
                },
            )
        })
        .collect()
}

fn scope_reach(
    assignment: &RoleAssignment,
    tenant: &str,
    sharer: &Sharer,
    device: Option<&Device>,
) -> Vec<ScopeReach> {
    let mut reach = Vec::new();
    let all_users = |reach: &mut Vec<ScopeReach>| {
        if sharer.tenant_id == tenant {
            reach.push(ScopeReach::AllLicensedUsers);
        }
    };
    let all_devices = |reach: &mut Vec<ScopeReach>| {
        if device.is_some_and(|d| d.enrolled && d.tenant_id == tenant) {
            reach.push(ScopeReach::AllDevices);
        }
    };
    match assignment.scope_type {
        ScopeType::ResourceScope => {
            for group in &assignment.scope_group_ids {
                if sharer.group_ids.contains(group) {
                    reach.push(ScopeReach::SharerInScopeGroup {
                        group_id: group.clone(),
                    });
                }
            }
            for group in &assignment.scope_group_ids {
                if device.is_some_and(|d| d.group_ids.contains(group)) {
                    reach.push(ScopeReach::DeviceInScopeGroup {
                        group_id: group.clone(),
                    });
                }
            }
        }
        ScopeType::AllDevices => all_devices(&mut reach),
        ScopeType::AllLicensedUsers => all_users(&mut reach),
        ScopeType::AllDevicesAndLicensedUsers => {
            all_users(&mut reach);
            all_devices(&mut reach);
        }
    }
    reach
}

fn trace_assignments(policy: &TenantPolicy, request: &SessionRequest) -> Vec<AssignmentTrace> {
    let roles = merge_roles(&policy.role_definitions);
    let tenant = policy.settings.tenant_id.as_str();
    let mut traces: Vec<AssignmentTrace> = policy
        .role_assignments
        .iter()
        .map(|a| {
            let matching_member_group_ids: BTreeSet<String> = a
                .member_group_ids
                .intersection(&request.helper.group_ids)
                .cloned()
                .collect();
            let helper_is_member = !matching_member_group_ids.is_empty();
            let scope_reached_via =
                scope_reach(a, tenant, &request.sharer, request.device.as_ref());
            let in_scope = !scope_reached_via.is_empty();
            let role = roles.get(a.role_definition_id.as_str());
            let permissions = role.map(|r| r.permissions.clone()).unwrap_or_default();
            let grants_requested_mode = permissions.allows_session(request.mode);
            AssignmentTrace {
                assignment_id: a.id.clone(),
                display_name: a.display_name.clone(),
                role_definition_id: a.role_definition_id.clone(),
                role_definition_found: role.is_some(),
                role_display_name: role.map(|r| r.display_name.to_owned()),
                helper_is_member,
                matching_member_group_ids,
                scope_type: a.scope_type,
                in_scope,
                scope_reached_via,
                permissions,
                grants_requested_mode,
                matched: helper_is_member && in_scope && grants_requested_mode,
            }
        })
        .collect();
    traces.sort_by(|x, y| x.assignment_id.cmp(&y.assignment_id));
    traces
}

/// Rule 5's reason precedence: any matching assignment allows; otherwise, no
/// membership → `noRoleAssignment`; membership with some in-scope assignment
/// → `permissionMissing`; membership with nothing in scope → `notInScope`.
fn rbac_rule(assignments: &[AssignmentTrace], mode: Mode) -> RuleTrace {
    let ids = |pred: &dyn Fn(&AssignmentTrace) -> bool| {
        assignments
            .iter()
            .filter(|t| pred(t))
            .map(|t| t.assignment_id.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    };
    if assignments.iter().any(|t| t.matched) {
        RuleTrace::new(
            Rule::RoleBasedAccess,
            RuleOutcome::Passed,
            format!(
                "Assignment(s) {} authorise {mode} sessions for this sharer/device.",
                ids(&|t| t.matched)
            ),
        )
    } else if !assignments.iter().any(|t| t.helper_is_member) {
        RuleTrace::failed(
            Rule::RoleBasedAccess,
            DenyReason::NoRoleAssignment,
            "The helper is a member of no role assignment.".to_owned(),
        )
    } else if assignments.iter().any(|t| t.helper_is_member && t.in_scope) {
        RuleTrace::failed(
            Rule::RoleBasedAccess,
            DenyReason::PermissionMissing,
            format!(
                "Assignment(s) {} reach this sharer/device, but none grants Offer remote assistance, Remote assistance read and {mode}.",
                ids(&|t| t.helper_is_member && t.in_scope)
            ),
        )
    } else {
        RuleTrace::failed(
            Rule::RoleBasedAccess,
            DenyReason::NotInScope,
            format!(
                "The helper is a member of assignment(s) {}, but none's scope reaches this sharer or device.",
                ids(&|t| t.helper_is_member)
            ),
        )
    }
}
