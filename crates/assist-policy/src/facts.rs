//! The facts the broker loads from its store and feeds to the evaluator.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

use crate::action::{Mode, ResourceAction};

/// Whether Remote Help is turned on for a tenant (Intune `remoteAssistanceState`).
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
#[serde(rename_all = "camelCase")]
pub enum RemoteAssistanceState {
    /// Remote Help is off. A tenant that was never configured reads this.
    #[default]
    Disabled,
    /// Remote Help is on.
    Enabled,
}

/// A tenant's Remote Help settings (Intune `remoteAssistanceSettings`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TenantSettings {
    /// The tenant these settings belong to: the tenant a request is evaluated in.
    pub tenant_id: String,
    /// Whether Remote Help is enabled. Missing reads `disabled`.
    #[serde(default)]
    pub remote_assistance_state: RemoteAssistanceState,
    /// `allowSessionsToUnenrolledDevices`: sessions may target devices not enrolled in the tenant.
    #[serde(default)]
    pub allow_sessions_to_unenrolled_devices: bool,
    /// `blockChat`: in-session chat is disabled.
    #[serde(default)]
    pub block_chat: bool,
}

impl TenantSettings {
    /// The settings of a tenant that never configured Remote Help: disabled,
    /// unenrolled devices not allowed, chat not blocked.
    pub fn unconfigured(tenant_id: impl Into<String>) -> Self {
        TenantSettings {
            tenant_id: tenant_id.into(),
            remote_assistance_state: RemoteAssistanceState::Disabled,
            allow_sessions_to_unenrolled_devices: false,
            block_chat: false,
        }
    }

    /// Remote Help enabled, unenrolled devices not allowed, chat not blocked.
    pub fn enabled(tenant_id: impl Into<String>) -> Self {
        TenantSettings {
            remote_assistance_state: RemoteAssistanceState::Enabled,
            ..TenantSettings::unconfigured(tenant_id)
        }
    }
}

/// The helper: the signed-in user offering assistance.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Helper {
    /// The helper's home tenant.
    pub tenant_id: String,
    /// The helper's user id.
    pub user_id: String,
    /// Every group the helper is a (transitive) member of; matched against
    /// role assignments' member (admin) groups.
    #[serde(default)]
    pub group_ids: BTreeSet<String>,
}

/// The sharer: the user being helped.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Sharer {
    /// The sharer's home tenant.
    pub tenant_id: String,
    /// The sharer's user id.
    pub user_id: String,
    /// Every group the sharer is a (transitive) member of; matched against
    /// role assignments' scope groups.
    #[serde(default)]
    pub group_ids: BTreeSet<String>,
}

/// A device's compliance state as last reported by the MDM.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
#[serde(rename_all = "camelCase")]
pub enum ComplianceState {
    /// Compliant with every assigned policy.
    Compliant,
    /// Not compliant with at least one policy.
    NonCompliant,
    /// Not evaluated yet, or unknown.
    #[default]
    Unknown,
}

/// The sharer's device, when it is known.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Device {
    /// The device id.
    pub id: String,
    /// The tenant the device belongs to (for an unenrolled device: the tenant
    /// of the directory it is registered in, or of its sharer).
    pub tenant_id: String,
    /// Whether the device is enrolled (managed) in its tenant.
    pub enrolled: bool,
    /// Compliance state; only meaningful for enrolled devices.
    #[serde(default)]
    pub compliance: ComplianceState,
    /// The device's primary user, if any. Informational: it appears in no rule
    /// (scope is reached through the sharer's groups or the device's groups).
    #[serde(default)]
    pub primary_user_id: Option<String>,
    /// Every group the device is a member of; matched against scope groups.
    #[serde(default)]
    pub group_ids: BTreeSet<String>,
}

/// One `allowedResourceActions` / `notAllowedResourceActions` pair
/// (Intune Graph `resourceAction`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ResourceActionSet {
    /// Actions this entry allows.
    #[serde(default)]
    pub allowed_resource_actions: Vec<ResourceAction>,
    /// Actions this entry forbids; a forbidden action is removed from the
    /// whole role (see [`RoleDefinition::effective_permissions`]).
    #[serde(default)]
    pub not_allowed_resource_actions: Vec<ResourceAction>,
}

/// One entry of a role definition's `rolePermissions` (Intune Graph `rolePermission`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RolePermission {
    /// The entry's action sets.
    #[serde(default)]
    pub resource_actions: Vec<ResourceActionSet>,
}

/// Id of the built-in "Help Desk Operator" role definition.
pub const HELP_DESK_OPERATOR_ROLE_ID: &str = "builtin-help-desk-operator";
/// Id of the built-in "School Administrator" role definition.
pub const SCHOOL_ADMINISTRATOR_ROLE_ID: &str = "builtin-school-administrator";

/// An RBAC role definition (Intune Graph `roleDefinition`).
///
/// Role definition ids are expected to be unique within a tenant. If several
/// definitions share an id, the evaluator merges them into one role whose
/// permission entries are all of theirs (so a `notAllowed` in any of them applies).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RoleDefinition {
    /// The role definition id.
    pub id: String,
    /// Human-readable name.
    pub display_name: String,
    /// Whether this is a built-in role (built-ins are not editable by admins).
    #[serde(default)]
    pub is_built_in: bool,
    /// The role's permissions.
    #[serde(default)]
    pub role_permissions: Vec<RolePermission>,
}

impl RoleDefinition {
    /// A custom (not built-in) role allowing exactly `allowed`.
    pub fn custom(
        id: impl Into<String>,
        display_name: impl Into<String>,
        allowed: impl IntoIterator<Item = ResourceAction>,
    ) -> Self {
        RoleDefinition {
            id: id.into(),
            display_name: display_name.into(),
            is_built_in: false,
            role_permissions: vec![RolePermission {
                resource_actions: vec![ResourceActionSet {
                    allowed_resource_actions: allowed.into_iter().collect(),
                    not_allowed_resource_actions: Vec::new(),
                }],
            }],
        }
    }

    /// The built-in "Help Desk Operator" role: Offer, Read, ViewScreen,
    /// TakeFullControl, Elevation and Unattended (not Update nor ViewReports).
    pub fn help_desk_operator() -> Self {
        RoleDefinition {
            is_built_in: true,
            ..RoleDefinition::custom(
                HELP_DESK_OPERATOR_ROLE_ID,
                "Help Desk Operator",
                [
                    ResourceAction::RequestRemoteAssistance,
                    ResourceAction::Read,
                    ResourceAction::ViewScreen,
                    ResourceAction::TakeFullControl,
                    ResourceAction::Elevation,
                    ResourceAction::Unattended,
                ],
            )
        }
    }

    /// The built-in "School Administrator" role: as Help Desk Operator, without Unattended.
    pub fn school_administrator() -> Self {
        RoleDefinition {
            is_built_in: true,
            ..RoleDefinition::custom(
                SCHOOL_ADMINISTRATOR_ROLE_ID,
                "School Administrator",
                [
                    ResourceAction::RequestRemoteAssistance,
                    ResourceAction::Read,
                    ResourceAction::ViewScreen,
                    ResourceAction::TakeFullControl,
                    ResourceAction::Elevation,
                ],
            )
        }
    }

    /// Every built-in role definition.
    pub fn built_ins() -> Vec<RoleDefinition> {
        vec![
            RoleDefinition::help_desk_operator(),
            RoleDefinition::school_administrator(),
        ]
    }

    /// Adds `actions` to the role's `notAllowedResourceActions` (builder style).
    pub fn with_not_allowed(mut self, actions: impl IntoIterator<Item = ResourceAction>) -> Self {
        self.role_permissions.push(RolePermission {
            resource_actions: vec![ResourceActionSet {
                allowed_resource_actions: Vec::new(),
                not_allowed_resource_actions: actions.into_iter().collect(),
            }],
        });
        self
    }

    /// Every allowed action of the role, as written (before implications).
    pub fn allowed_actions(&self) -> BTreeSet<ResourceAction> {
        self.action_sets()
            .flat_map(|s| s.allowed_resource_actions.iter().copied())
            .collect()
    }

    /// Every not-allowed action of the role, as written.
    pub fn not_allowed_actions(&self) -> BTreeSet<ResourceAction> {
        self.action_sets()
            .flat_map(|s| s.not_allowed_resource_actions.iter().copied())
            .collect()
    }

    fn action_sets(&self) -> impl Iterator<Item = &ResourceActionSet> {
        self.role_permissions
            .iter()
            .flat_map(|p| p.resource_actions.iter())
    }

    /// What the role actually grants.
    ///
    /// Rule: all entries' allowed actions are pooled, and so are all
    /// not-allowed actions (a `notAllowed` anywhere in the role applies to the
    /// whole role).
    /// - A non-mode action (Offer, Read, Update, ViewReports) is granted iff it
    ///   is allowed and not not-allowed.
    /// - A mode is granted iff some allowed action implies it (the action
    ///   itself or a higher mode's action) **and** neither it nor any mode it
    ///   implies is not-allowed. So `notAllowed` of a mode blocks that mode and
    ///   every higher one (they would imply it), and leaves the lower ones.
    ///   E.g. allowed Unattended + notAllowed Elevation grants viewOnly and
    ///   fullControl. The granted modes are therefore always downward closed.
    pub fn effective_permissions(&self) -> EffectivePermissions {
        EffectivePermissions::from_actions(&self.allowed_actions(), &self.not_allowed_actions())
    }
}

/// The permissions a role actually grants, after implications and `notAllowed`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EffectivePermissions {
    /// "Offer remote assistance" (RequestRemoteAssistance) is granted.
    pub can_offer: bool,
    /// "Remote assistance read" is granted.
    pub can_read: bool,
    /// The session modes granted (downward closed).
    pub modes: BTreeSet<Mode>,
    /// Every action granted, implied mode actions included.
    pub actions: BTreeSet<ResourceAction>,
}

impl EffectivePermissions {
    /// Computes the grant of pooled `allowed` and `not_allowed` action sets
    /// (rule documented on [`RoleDefinition::effective_permissions`]).
    pub fn from_actions(
        allowed: &BTreeSet<ResourceAction>,
        not_allowed: &BTreeSet<ResourceAction>,
    ) -> Self {
        let allowed_modes = || allowed.iter().filter_map(|a| a.mode());
        let blocked_modes = || not_allowed.iter().filter_map(|a| a.mode());
        let actions: BTreeSet<ResourceAction> = ResourceAction::ALL
            .into_iter()
            .filter(|action| match action.mode() {
                None => allowed.contains(action) && !not_allowed.contains(action),
                Some(mode) => {
                    allowed_modes().any(|held| held.implies(mode))
                        && !blocked_modes().any(|blocked| mode.implies(blocked))
                }
            })
            .collect();
        EffectivePermissions {
            can_offer: actions.contains(&ResourceAction::RequestRemoteAssistance),
            can_read: actions.contains(&ResourceAction::Read),
            modes: Mode::ALL
                .into_iter()
                .filter(|m| actions.contains(&m.action()))
                .collect(),
            actions,
        }
    }

    /// Whether these permissions allow a session in `mode`: Offer, Read and the mode.
    pub fn allows_session(&self, mode: Mode) -> bool {
        self.can_offer && self.can_read && self.modes.contains(&mode)
    }
}

/// How a role assignment's scope is defined (Intune Graph `scopeType`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum ScopeType {
    /// The scope groups listed in the assignment (users and devices in them).
    ResourceScope,
    /// Every enrolled device of the tenant (unenrolled devices are excluded).
    AllDevices,
    /// Every user of the tenant.
    AllLicensedUsers,
    /// Both `allDevices` and `allLicensedUsers`.
    AllDevicesAndLicensedUsers,
}

/// A role assignment: who (member admin groups) holds which role over what (scope).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RoleAssignment {
    /// The assignment id.
    pub id: String,
    /// Human-readable name.
    #[serde(default)]
    pub display_name: String,
    /// The role definition assigned.
    pub role_definition_id: String,
    /// Member (admin) groups: helpers in any of them hold the role.
    #[serde(default)]
    pub member_group_ids: BTreeSet<String>,
    /// How the scope is defined.
    pub scope_type: ScopeType,
    /// Scope groups; used only when `scope_type` is `resourceScope`.
    #[serde(default)]
    pub scope_group_ids: BTreeSet<String>,
}

/// Everything the evaluator knows about the tenant a request is evaluated in.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TenantPolicy {
    /// The tenant's Remote Help settings (the helper's tenant).
    pub settings: TenantSettings,
    /// The tenant's role definitions (built-ins included, if assigned).
    #[serde(default)]
    pub role_definitions: Vec<RoleDefinition>,
    /// The tenant's role assignments.
    #[serde(default)]
    pub role_assignments: Vec<RoleAssignment>,
}

/// A helper's request to start a session with a sharer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SessionRequest {
    /// Who offers help.
    pub helper: Helper,
    /// Who is helped.
    pub sharer: Sharer,
    /// The sharer's device; `None` when unknown (e.g. code flow), which counts as unenrolled.
    #[serde(default)]
    pub device: Option<Device>,
    /// The requested session mode.
    pub mode: Mode,
}
