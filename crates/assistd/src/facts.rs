//! Loads the facts the policy decides on (settings, the helper's and sharer's groups, the
//! device, role definitions and assignments) from the store, and adds users just in time.

use assist_graph::settings::{RemoteAssistanceSettings, RemoteAssistanceState};
use assist_identity::Identity;
use assist_policy::{
    ComplianceState, Device, Helper, RemoteAssistanceState as PolicyState, RoleAssignment,
    RoleDefinition, ScopeType, Sharer, TenantPolicy, TenantSettings,
};
use assist_store::{Store, StoreError};
use serde_json::{json, Value};
use std::collections::BTreeSet;

/// The policy's view of the tenant settings.
pub fn policy_settings(tenant: &str, s: &RemoteAssistanceSettings) -> TenantSettings {
    TenantSettings {
        tenant_id: tenant.to_owned(),
        remote_assistance_state: match s.state {
            RemoteAssistanceState::Enabled => PolicyState::Enabled,
            RemoteAssistanceState::Disabled => PolicyState::Disabled,
        },
        allow_sessions_to_unenrolled_devices: s.allow_sessions_to_unenrolled_devices,
        block_chat: s.block_chat,
    }
}

fn strings(v: &Value, key: &str) -> BTreeSet<String> {
    v.get(key)
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(Value::as_str)
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default()
}

/// Everything tenant-wide the policy needs.
pub async fn tenant_policy(store: &Store, tenant: &str) -> Result<TenantPolicy, StoreError> {
    let settings = policy_settings(tenant, &store.settings(tenant).await?);
    let mut role_definitions = RoleDefinition::built_ins();
    for v in store.list_objects(tenant, "roleDefinition").await? {
        let shaped = json!({
            "id": v["id"], "displayName": v["displayName"], "isBuiltIn": false,
            "rolePermissions": v.get("rolePermissions").cloned().unwrap_or(json!([])),
        });
        match serde_json::from_value::<RoleDefinition>(shaped) {
            Ok(r) => role_definitions.push(r),
            Err(e) => {
                return Err(StoreError::Corrupt(format!(
                    "role definition {}: {e}",
                    v["id"]
                )))
            }
        }
    }
    let mut role_assignments = Vec::new();
    for v in store.list_objects(tenant, "roleAssignment").await? {
        let scope_type: ScopeType = serde_json::from_value(
            v.get("scopeType")
                .cloned()
                .unwrap_or(json!("resourceScope")),
        )
        .map_err(|e| StoreError::Corrupt(format!("role assignment {}: {e}", v["id"])))?;
        let mut scope_group_ids = strings(&v, "resourceScopes");
        scope_group_ids.extend(strings(&v, "scopeMembers"));
        role_assignments.push(RoleAssignment {
            id: v["id"].as_str().unwrap_or_default().to_owned(),
            display_name: v["displayName"].as_str().unwrap_or_default().to_owned(),
            role_definition_id: v["_roleDefinitionId"]
                .as_str()
                .unwrap_or_default()
                .to_owned(),
            member_group_ids: strings(&v, "members"),
            scope_type,
            scope_group_ids,
        });
    }
    Ok(TenantPolicy {
        settings,
        role_definitions,
        role_assignments,
    })
}

/// An object of `kind` by id, else the first whose `key` property equals `reference`
/// (ignoring ASCII case).
async fn find_by(
    store: &Store,
    tenant: &str,
    kind: &str,
    key: &str,
    reference: &str,
) -> Result<Option<Value>, StoreError> {
    if let Some(o) = store.get_object(tenant, kind, reference).await? {
        return Ok(Some(o));
    }
    Ok(store
        .list_objects(tenant, kind)
        .await?
        .into_iter()
        .find(|o| {
            o[key]
                .as_str()
                .is_some_and(|x| x.eq_ignore_ascii_case(reference))
        }))
}

/// A user of the tenant by object id or (case-insensitive) UPN.
pub async fn find_user(
    store: &Store,
    tenant: &str,
    id_or_upn: &str,
) -> Result<Option<Value>, StoreError> {
    find_by(store, tenant, "user", "userPrincipalName", id_or_upn).await
}

/// Adds the signed-in user from the token's claims if the directory does not know them yet
/// (by object id or UPN), and returns the directory's record.
pub async fn ensure_user(store: &Store, id: &Identity) -> Result<Value, StoreError> {
    if let Some(u) = store
        .get_object(&id.tenant_id, "user", &id.object_id)
        .await?
    {
        return Ok(u);
    }
    if let Some(u) = find_user(store, &id.tenant_id, &id.user_principal_name).await? {
        return Ok(u);
    }
    let user = json!({
        "id": id.object_id,
        "userPrincipalName": id.user_principal_name,
        "displayName": id.display_name.clone().unwrap_or_else(|| id.user_principal_name.clone()),
        "givenName": id.given_name,
        "surname": id.family_name,
        "accountEnabled": true,
    });
    // A concurrent first sign-in may have inserted it: either way the row exists now.
    store
        .insert_object(&id.tenant_id, "user", &id.object_id, &user, None)
        .await?;
    tracing::info!("added a signed-in user to the directory");
    Ok(user)
}

/// The helper's facts.
pub async fn helper(store: &Store, tenant: &str, user_id: &str) -> Result<Helper, StoreError> {
    Ok(Helper {
        tenant_id: tenant.to_owned(),
        user_id: user_id.to_owned(),
        group_ids: store
            .groups_of(tenant, user_id)
            .await?
            .into_iter()
            .collect(),
    })
}

/// The sharer's facts.
pub async fn sharer(store: &Store, tenant: &str, user_id: &str) -> Result<Sharer, StoreError> {
    Ok(Sharer {
        tenant_id: tenant.to_owned(),
        user_id: user_id.to_owned(),
        group_ids: store
            .groups_of(tenant, user_id)
            .await?
            .into_iter()
            .collect(),
    })
}

/// A managed device of the tenant by its id or its `azureADDeviceId`.
pub async fn find_device(
    store: &Store,
    tenant: &str,
    reference: &str,
) -> Result<Option<Value>, StoreError> {
    find_by(store, tenant, "managedDevice", "azureADDeviceId", reference).await
}

/// The device's facts. A device id the tenant does not manage is an unenrolled device of
/// `tenant_if_unknown` (the claimed tenant), with unknown compliance and no groups.
pub async fn device(
    store: &Store,
    tenant: &str,
    reference: &str,
    tenant_if_unknown: &str,
) -> Result<Device, StoreError> {
    let Some(d) = find_device(store, tenant, reference).await? else {
        return Ok(Device {
            id: reference.to_owned(),
            tenant_id: tenant_if_unknown.to_owned(),
            enrolled: false,
            compliance: ComplianceState::Unknown,
            primary_user_id: None,
            group_ids: BTreeSet::new(),
        });
    };
    let id = d["id"].as_str().unwrap_or(reference).to_owned();
    Ok(Device {
        enrolled: d["enrollmentState"] == "enrolled" && d["managementState"] == "managed",
        compliance: match d["complianceState"].as_str() {
            Some("compliant") => ComplianceState::Compliant,
            Some("noncompliant" | "conflict" | "error" | "inGracePeriod") => {
                ComplianceState::NonCompliant
            }
            _ => ComplianceState::Unknown,
        },
        primary_user_id: d["userId"].as_str().map(str::to_owned),
        group_ids: store.groups_of(tenant, &id).await?.into_iter().collect(),
        tenant_id: tenant.to_owned(),
        id,
    })
}

/// What each side of a session is shown of the other: display name, job title, company, and
/// the UPN's domain when the tenant lists it as verified (else `null`, so a look-alike domain is
/// never presented as trusted).
pub async fn profile(store: &Store, tenant: &str, user: &Value) -> Result<Value, StoreError> {
    let upn = user["userPrincipalName"].as_str().unwrap_or_default();
    let domain = upn.rsplit_once('@').map(|(_, d)| d.to_ascii_lowercase());
    let verified = match &domain {
        Some(d) => store
            .get_object(tenant, "domain", d)
            .await?
            .is_some_and(|v| v["isVerified"] == true),
        None => false,
    };
    Ok(json!({
        "displayName": user["displayName"],
        "jobTitle": user.get("jobTitle").cloned().unwrap_or(Value::Null),
        "companyName": user.get("companyName").cloned().unwrap_or(Value::Null),
        "verifiedDomain": if verified { domain.map(Value::String).unwrap_or(Value::Null) } else { Value::Null },
    }))
}
