//! The directory and RBAC entity types Assist serves, in Graph's shapes: users, groups,
//! managed devices, verified domains, Intune role definitions and role assignments, and the
//! read-only audit events.

use crate::entity::{DefaultValue, EntitySchema, Prop, PropType};

/// Graph's `enrollmentState` values (as in `remoteAssistanceReporting`).
pub const ENROLLMENT_STATES: &[&str] = &[
    "unknown",
    "enrolled",
    "pendingReset",
    "failed",
    "notContacted",
    "blocked",
];
/// Graph's `managementState` values.
pub const MANAGEMENT_STATES: &[&str] = &[
    "managed",
    "retirePending",
    "retireFailed",
    "wipePending",
    "wipeFailed",
    "unhealthy",
    "deletePending",
    "retireIssued",
    "wipeIssued",
    "wipeCanceled",
    "retireCanceled",
    "discovered",
];
/// Graph's `complianceState` values.
pub const COMPLIANCE_STATES: &[&str] = &[
    "unknown",
    "compliant",
    "noncompliant",
    "conflict",
    "error",
    "inGracePeriod",
    "configManager",
];
/// Intune role assignment scope types.
pub const SCOPE_TYPES: &[&str] = &[
    "resourceScope",
    "allDevices",
    "allLicensedUsers",
    "allDevicesAndLicensedUsers",
];

/// `user`.
pub static USER: EntitySchema = EntitySchema {
    odata_type: "#microsoft.graph.user",
    name: "user",
    client_sets_id: false,
    props: &[
        Prop::new("id", PropType::String).read_only(),
        Prop::new("userPrincipalName", PropType::String).required(),
        Prop::new("displayName", PropType::String).required(),
        Prop::new("givenName", PropType::String).max_len(64),
        Prop::new("surname", PropType::String).max_len(64),
        Prop::new("jobTitle", PropType::String).max_len(128),
        Prop::new("companyName", PropType::String).max_len(64),
        Prop::new("mail", PropType::String),
        Prop::new("accountEnabled", PropType::Bool).default(DefaultValue::Bool(true)),
    ],
};

/// `group`.
pub static GROUP: EntitySchema = EntitySchema {
    odata_type: "#microsoft.graph.group",
    name: "group",
    client_sets_id: false,
    props: &[
        Prop::new("id", PropType::String).read_only(),
        Prop::new("displayName", PropType::String).required(),
        Prop::new("description", PropType::String)
            .max_len(1024)
            .multiline(),
        Prop::new("mailNickname", PropType::String).max_len(64),
        Prop::new("mailEnabled", PropType::Bool).default(DefaultValue::Bool(false)),
        Prop::new("securityEnabled", PropType::Bool).default(DefaultValue::Bool(true)),
    ],
};

/// `managedDevice`.
pub static MANAGED_DEVICE: EntitySchema = EntitySchema {
    odata_type: "#microsoft.graph.managedDevice",
    name: "managedDevice",
    client_sets_id: false,
    props: &[
        Prop::new("id", PropType::String).read_only(),
        Prop::new("azureADDeviceId", PropType::String)
            .required()
            .max_len(64),
        Prop::new("deviceName", PropType::String).required(),
        Prop::new("operatingSystem", PropType::String).max_len(64),
        Prop::new("osVersion", PropType::String).max_len(64),
        Prop::new("userPrincipalName", PropType::String),
        Prop::new("userId", PropType::String).max_len(64),
        Prop::new("managementState", PropType::Enum(MANAGEMENT_STATES))
            .default(DefaultValue::Str("managed")),
        Prop::new("enrollmentState", PropType::Enum(ENROLLMENT_STATES))
            .default(DefaultValue::Str("enrolled")),
        Prop::new("complianceState", PropType::Enum(COMPLIANCE_STATES))
            .default(DefaultValue::Str("unknown")),
    ],
};

/// `domain` (a verified domain of the tenant; `id` is the domain name).
pub static DOMAIN: EntitySchema = EntitySchema {
    odata_type: "#microsoft.graph.domain",
    name: "domain",
    client_sets_id: true,
    props: &[
        Prop::new("id", PropType::String)
            .read_only()
            .required()
            .max_len(253),
        Prop::new("isVerified", PropType::Bool).default(DefaultValue::Bool(true)),
        Prop::new("isDefault", PropType::Bool).default(DefaultValue::Bool(false)),
        Prop::new(
            "authenticationType",
            PropType::Enum(&["Managed", "Federated"]),
        )
        .default(DefaultValue::Str("Managed")),
    ],
};

/// `deviceAndAppManagementRoleDefinition`.
pub static ROLE_DEFINITION: EntitySchema = EntitySchema {
    odata_type: "#microsoft.graph.deviceAndAppManagementRoleDefinition",
    name: "roleDefinition",
    client_sets_id: false,
    props: &[
        Prop::new("id", PropType::String).read_only(),
        Prop::new("displayName", PropType::String)
            .required()
            .max_len(128),
        Prop::new("description", PropType::String)
            .max_len(1024)
            .multiline(),
        Prop::new("isBuiltIn", PropType::Bool).read_only(),
        Prop::new("isBuiltInRoleDefinition", PropType::Bool).read_only(),
        Prop::new("roleScopeTagIds", PropType::StringList).default(DefaultValue::EmptyList),
        Prop::new("rolePermissions", PropType::Json).required(),
    ],
};

/// `deviceAndAppManagementRoleAssignment`.
pub static ROLE_ASSIGNMENT: EntitySchema = EntitySchema {
    odata_type: "#microsoft.graph.deviceAndAppManagementRoleAssignment",
    name: "roleAssignment",
    client_sets_id: false,
    props: &[
        Prop::new("id", PropType::String).read_only(),
        Prop::new("displayName", PropType::String)
            .required()
            .max_len(128),
        Prop::new("description", PropType::String)
            .max_len(1024)
            .multiline(),
        Prop::new("members", PropType::StringList).default(DefaultValue::EmptyList),
        Prop::new("scopeMembers", PropType::StringList).default(DefaultValue::EmptyList),
        Prop::new("resourceScopes", PropType::StringList).default(DefaultValue::EmptyList),
        Prop::new("scopeType", PropType::Enum(SCOPE_TYPES))
            .default(DefaultValue::Str("resourceScope")),
        Prop::new("roleScopeTagIds", PropType::StringList).default(DefaultValue::EmptyList),
        Prop::new("roleDefinition@odata.bind", PropType::String)
            .write_only()
            .max_len(2048),
    ],
};

/// The `auditEvent` properties (read-only; for `$select` and `$filter`).
pub const AUDIT_EVENT_PROPERTIES: &[&str] = &[
    "id",
    "displayName",
    "componentName",
    "activity",
    "activityDateTime",
    "activityType",
    "activityOperationType",
    "activityResult",
    "correlationId",
    "category",
    "actor",
    "resources",
];
