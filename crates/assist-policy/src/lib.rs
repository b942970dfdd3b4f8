//! # assist-policy
//!
//! The session-authorisation policy of Assist, a self-hostable Remote Help
//! service (helpers remotely assist sharers' devices, modelled on Microsoft
//! Intune Remote Help).
//!
//! **What this crate owns:** the broker's decision on whether a helper may
//! start a session with a sharer (and device) in a given mode, and the admin
//! "what-if" explanation of that decision:
//! - the fact types the decision reads ([`TenantSettings`], [`Helper`],
//!   [`Sharer`], [`Device`], [`RoleDefinition`], [`RoleAssignment`],
//!   [`TenantPolicy`], [`SessionRequest`]);
//! - the Intune resource actions ([`ResourceAction`], with
//!   [`ResourceAction::parse`]) and the mode lattice ([`Mode`]);
//! - the built-in roles (Help Desk Operator, School Administrator);
//! - [`decide`] → [`Decision`], and [`explain`] → [`Explanation`].
//!
//! **What it does not own:** token validation (rule 1), storage, loading of
//! group memberships, sessions, clocks, randomness. It does no IO; the broker
//! feeds it facts.
//!
//! ## The decision, in order (the first failing rule wins)
//! 2. Remote Help enabled for the tenant, else `remoteHelpDisabled`.
//! 3. Helper, sharer and device (if any) all in the tenant whose settings are
//!    evaluated, else `crossTenant`. Not configurable.
//! 4. Device enrolled, or the tenant allows unenrolled devices, else
//!    `unenrolledDeviceNotAllowed` (no device at all counts as unenrolled).
//!    Unattended mode to an unenrolled/unknown device is always denied with
//!    `unattendedRequiresEnrolledDevice`, whatever the settings (an admin
//!    seeing `unenrolledDeviceNotAllowed` would flip a setting that cannot help).
//! 5. RBAC, per assignment: the helper is in a member group, the scope
//!    reaches the sharer or the device, and the role grants Offer + Read + the
//!    mode. Permissions never combine across assignments. Reasons:
//!    `noRoleAssignment` if the helper is a member of none; otherwise
//!    `permissionMissing` if some membership assignment is in scope (its role
//!    is what is lacking); otherwise `notInScope`. An assignment whose role
//!    definition does not exist grants nothing.
//! 6. Warnings (never a deny): `deviceUnenrolled` for an unenrolled or unknown
//!    device; `deviceNotCompliant` for an enrolled device whose compliance is
//!    not `compliant` (unknown included).
//! 7. Chat allowed unless `blockChat`.
//!
//! Mode implications and `notAllowed` are documented on
//! [`RoleDefinition::effective_permissions`]; scope rules on [`ScopeType`] and
//! [`ScopeReach`].
#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod action;
mod decision;
mod evaluate;
mod facts;

pub use action::{Mode, ResourceAction, UnknownAction};
pub use decision::{Decision, DenyReason, Warning};
pub use evaluate::{
    decide, explain, AssignmentTrace, Explanation, Rule, RuleOutcome, RuleTrace, ScopeReach,
};
pub use facts::{
    ComplianceState, Device, EffectivePermissions, Helper, RemoteAssistanceState,
    ResourceActionSet, RoleAssignment, RoleDefinition, RolePermission, ScopeType, SessionRequest,
    Sharer, TenantPolicy, TenantSettings, HELP_DESK_OPERATOR_ROLE_ID, SCHOOL_ADMINISTRATOR_ROLE_ID,
};
