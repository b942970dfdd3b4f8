//! The broker's decision: allow (with modes, warnings, chat) or deny (with a reason).

use std::collections::BTreeSet;
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::action::Mode;

/// Why a session is denied. Serialises as the camelCase code (see [`DenyReason::as_str`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum DenyReason {
    /// Rule 2: Remote Help is not enabled for the tenant.
    RemoteHelpDisabled,
    /// Rule 3: helper, sharer and device are not all in the evaluated tenant.
    CrossTenant,
    /// Rule 4: the device is unenrolled (or unknown) and the tenant does not
    /// allow sessions to unenrolled devices.
    UnenrolledDeviceNotAllowed,
    /// Rule 4: unattended mode was requested for an unenrolled (or unknown)
    /// device, which is never possible, whatever the tenant settings.
    UnattendedRequiresEnrolledDevice,
    /// Rule 5: no role assignment has the helper as a member.
    NoRoleAssignment,
    /// Rule 5: the helper's assignments exist, but none's scope reaches the sharer or device.
    NotInScope,
    /// Rule 5: an in-scope assignment exists for the helper, but none grants
    /// Offer + Read + the requested mode.
    PermissionMissing,
}

impl DenyReason {
    /// Every reason, in rule order.
    pub const ALL: [DenyReason; 7] = [
        DenyReason::RemoteHelpDisabled,
        DenyReason::CrossTenant,
        DenyReason::UnenrolledDeviceNotAllowed,
        DenyReason::UnattendedRequiresEnrolledDevice,
        DenyReason::NoRoleAssignment,
        DenyReason::NotInScope,
        DenyReason::PermissionMissing,
    ];

    /// The camelCase code used on the wire.
    pub const fn as_str(self) -> &'static str {
        match self {
            DenyReason::RemoteHelpDisabled => "remoteHelpDisabled",
            DenyReason::CrossTenant => "crossTenant",
            DenyReason::UnenrolledDeviceNotAllowed => "unenrolledDeviceNotAllowed",
            DenyReason::UnattendedRequiresEnrolledDevice => "unattendedRequiresEnrolledDevice",
            DenyReason::NoRoleAssignment => "noRoleAssignment",
            DenyReason::NotInScope => "notInScope",
            DenyReason::PermissionMissing => "permissionMissing",
        }
    }
}

impl fmt::Display for DenyReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Something the helper must acknowledge before the session starts (rule 6).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Warning {
    /// The enrolled device is not known to be compliant (non-compliant or unknown).
    DeviceNotCompliant,
    /// The device is unenrolled or unknown (the tenant allows this).
    DeviceUnenrolled,
}

impl Warning {
    /// Every warning.
    pub const ALL: [Warning; 2] = [Warning::DeviceNotCompliant, Warning::DeviceUnenrolled];

    /// The camelCase code used on the wire.
    pub const fn as_str(self) -> &'static str {
        match self {
            Warning::DeviceNotCompliant => "deviceNotCompliant",
            Warning::DeviceUnenrolled => "deviceUnenrolled",
        }
    }
}

impl fmt::Display for Warning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The broker's decision on a [`crate::SessionRequest`].
///
/// JSON: `{"outcome":"allow","granted":[..],"warnings":[..],"chatAllowed":true,"matchedAssignmentIds":[..]}`
/// or `{"outcome":"deny","reason":"notInScope"}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(
    tag = "outcome",
    rename_all = "camelCase",
    rename_all_fields = "camelCase"
)]
pub enum Decision {
    /// The session may start.
    Allow {
        /// The requested mode and every mode it implies (all of which the
        /// matching assignment grants). Modes the helper holds above the
        /// requested one are not included: escalation is a new decision.
        granted: BTreeSet<Mode>,
        /// Warnings the helper must acknowledge, in a fixed order.
        warnings: Vec<Warning>,
        /// Whether in-session chat is allowed.
        chat_allowed: bool,
        /// Every assignment that authorises the request (member, in scope, grants the mode).
        matched_assignment_ids: BTreeSet<String>,
    },
    /// The session may not start; nothing is granted.
    Deny {
        /// The first failing rule's reason.
        reason: DenyReason,
    },
}

impl Decision {
    /// Whether the session is allowed.
    pub fn is_allowed(&self) -> bool {
        matches!(self, Decision::Allow { .. })
    }

    /// The granted modes; empty for a deny.
    pub fn granted_modes(&self) -> BTreeSet<Mode> {
        match self {
            Decision::Allow { granted, .. } => granted.clone(),
            Decision::Deny { .. } => BTreeSet::new(),
        }
    }

    /// The deny reason, if denied.
    pub fn deny_reason(&self) -> Option<DenyReason> {
        match self {
            Decision::Allow { .. } => None,
            Decision::Deny { reason } => Some(*reason),
        }
    }

    /// The warnings; empty for a deny.
    pub fn warnings(&self) -> &[Warning] {
        match self {
            Decision::Allow { warnings, .. } => warnings,
            Decision::Deny { .. } => &[],
        }
    }

    /// Whether chat is allowed; false for a deny.
    pub fn chat_allowed(&self) -> bool {
        match self {
            Decision::Allow { chat_allowed, .. } => *chat_allowed,
            Decision::Deny { .. } => false,
        }
    }
}
