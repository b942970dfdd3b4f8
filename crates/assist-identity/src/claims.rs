//! The claims Assist reads from a token, and the validated identity built from them.

use serde::{Deserialize, Serialize};

/// The claims of an access token, as Entra ID and the dev issuer write them.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Claims {
    /// Issuer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iss: Option<String>,
    /// Audience (a string or a list).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aud: Option<serde_json::Value>,
    /// Expiry, seconds since the epoch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exp: Option<u64>,
    /// Not before, seconds since the epoch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nbf: Option<u64>,
    /// Issued at, seconds since the epoch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iat: Option<u64>,
    /// Tenant id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tid: Option<String>,
    /// Object id of the user (or device) in the tenant.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub oid: Option<String>,
    /// User principal name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upn: Option<String>,
    /// Used when `upn` is absent (v2 tokens).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub preferred_username: Option<String>,
    /// Display name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// First name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub given_name: Option<String>,
    /// Last name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub family_name: Option<String>,
    /// Application permissions (Graph names such as `DeviceManagementServiceConfig.Read.All`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub roles: Vec<String>,
    /// Delegated permissions, space-separated.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scp: Option<String>,
    /// Device id (Entra device id) when the caller is a device or signs in on one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deviceid: Option<String>,
    /// Entra directory roles of the user (role template ids), e.g. [`GLOBAL_ADMINISTRATOR`].
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub wids: Vec<String>,
    /// Object ids of the groups the user is in, when the issuer says (Entra's `groups` claim).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub groups: Vec<String>,
}

/// The role template id of Entra's Global Administrator (in a token's `wids`).
pub const GLOBAL_ADMINISTRATOR: &str = "62e90394-69f5-4237-9190-012177145e10";
/// The role template id of Entra's Intune Administrator (in a token's `wids`).
pub const INTUNE_ADMINISTRATOR: &str = "3a2c62db-5318-420d-8d74-23affee5d9d5";

/// A validated caller.
#[derive(Clone, PartialEq, Eq)]
pub struct Identity {
    /// Tenant id (`tid`).
    pub tenant_id: String,
    /// Object id (`oid`; falls back to `sub` semantics of the UPN when absent).
    pub object_id: String,
    /// User principal name (`upn` or `preferred_username`).
    pub user_principal_name: String,
    /// Display name.
    pub display_name: Option<String>,
    /// First name.
    pub given_name: Option<String>,
    /// Last name.
    pub family_name: Option<String>,
    /// Application permissions.
    pub roles: Vec<String>,
    /// Delegated permissions.
    pub scopes: Vec<String>,
    /// Device id, when present.
    pub device_id: Option<String>,
    /// Entra directory roles (`wids`, role template ids).
    pub directory_roles: Vec<String>,
    /// A device token: it names a device (`deviceid`) and no user (no `upn`). Nobody is
    /// signed in on it, so nobody is "present" for unattended sessions; it carries no admin rights.
    pub is_device: bool,
    /// When the token expires (`exp`), seconds since the Unix epoch. A signalling connection
    /// opened with it is closed then (plus the validator's leeway) unless the app sends a fresh
    /// token.
    pub expires_at: u64,
    /// Group object ids from the token's `groups` claim (empty when it has none). They count
    /// for RBAC scope and admin-group membership in addition to the stored memberships.
    pub groups: Vec<String>,
}

impl std::fmt::Debug for Identity {
    // Identifiers are personal data: debug output names the tenant and hides the rest.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Identity")
            .field("tenant_id", &self.tenant_id)
            .field("roles", &self.roles)
            .field("scopes", &self.scopes)
            .field("directory_roles", &self.directory_roles)
            .finish_non_exhaustive()
    }
}

impl Identity {
    /// Whether the user holds a directory role that, as in Intune, grants every Remote Help
    /// admin action (Global Administrator or Intune Administrator in `wids`). A device token
    /// never does: nobody is signed in on it.
    pub fn is_intune_admin(&self) -> bool {
        !self.is_device
            && self.directory_roles.iter().any(|w| {
                w.eq_ignore_ascii_case(GLOBAL_ADMINISTRATOR)
                    || w.eq_ignore_ascii_case(INTUNE_ADMINISTRATOR)
            })
    }

    /// Whether the token carries any of `permissions`, as an application role or delegated scope.
    pub fn has_any_permission(&self, permissions: &[&str]) -> bool {
        permissions
            .iter()
            .any(|p| self.roles.iter().any(|r| r == p) || self.scopes.iter().any(|s| s == p))
    }
}
