//! Generic Graph collections of the directory and RBAC: users, groups (and members), managed
//! devices, verified domains, role definitions and role assignments. One set of handlers
//! serves them all; what differs per entity type (permissions, uniqueness, references) is in
//! [`Collection`] and the `prepare` checks below.

use assist_graph::directory as schema;
use assist_graph::entity::{EntitySchema, Pager};
use assist_graph::odata::{QueryOptions, ResourceKind};
use assist_graph::{GraphError, GraphErrorKind};
use assist_policy::{ResourceAction, RoleDefinition};
use assist_store::directory::{AdminTransaction, MemberKind};
use assist_store::AuditEvent;
use axum::body::Body;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{json, Map, Value};

use crate::api::{json_response, read_json, ApiError, Caller};
use crate::state::AppState;

/// A Graph collection served from the directory store.
#[derive(Debug)]
pub struct Collection {
    /// Store kind.
    pub kind: &'static str,
    /// Entity schema.
    pub schema: &'static EntitySchema,
    /// Collection path, e.g. `/beta/users`.
    pub path: &'static str,
    /// Permissions to read (any one).
    pub read: &'static [&'static str],
    /// Permissions to write (any one).
    pub write: &'static [&'static str],
    /// Audit category.
    pub category: &'static str,
}

/// `/beta/users`.
pub static USERS: Collection = Collection {
    kind: "user",
    schema: &schema::USER,
    path: "/beta/users",
    read: &[
        "User.Read.All",
        "User.ReadWrite.All",
        "Directory.Read.All",
        "Directory.ReadWrite.All",
    ],
    write: &["User.ReadWrite.All", "Directory.ReadWrite.All"],
    category: "Directory",
};

/// `/beta/groups`.
pub static GROUPS: Collection = Collection {
    kind: "group",
    schema: &schema::GROUP,
    path: "/beta/groups",
    read: &[
        "Group.Read.All",
        "Group.ReadWrite.All",
        "Directory.Read.All",
        "Directory.ReadWrite.All",
    ],
    write: &["Group.ReadWrite.All", "Directory.ReadWrite.All"],
    category: "Directory",
};

/// Permissions to change group membership (any one).
pub const MEMBER_WRITE: &[&str] = &[
    "GroupMember.ReadWrite.All",
    "Group.ReadWrite.All",
    "Directory.ReadWrite.All",
];
/// Permissions to read group membership (any one).
pub const MEMBER_READ: &[&str] = &[
    "GroupMember.Read.All",
    "GroupMember.ReadWrite.All",
    "Group.Read.All",
    "Group.ReadWrite.All",
    "Directory.Read.All",
    "Directory.ReadWrite.All",
];

/// `/beta/deviceManagement/managedDevices`.
pub static MANAGED_DEVICES: Collection = Collection {
    kind: "managedDevice",
    schema: &schema::MANAGED_DEVICE,
    path: "/beta/deviceManagement/managedDevices",
    read: &[
        "DeviceManagementManagedDevices.Read.All",
        "DeviceManagementManagedDevices.ReadWrite.All",
    ],
    write: &["DeviceManagementManagedDevices.ReadWrite.All"],
    category: "Device",
};

/// `/beta/domains` (verified domains).
pub static DOMAINS: Collection = Collection {
    kind: "domain",
    schema: &schema::DOMAIN,
    path: "/beta/domains",
    read: &[
        "Domain.Read.All",
        "Domain.ReadWrite.All",
        "Directory.Read.All",
        "Directory.ReadWrite.All",
    ],
    write: &["Domain.ReadWrite.All", "Directory.ReadWrite.All"],
    category: "Directory",
};

/// `/beta/deviceManagement/roleDefinitions`.
pub static ROLE_DEFINITIONS: Collection = Collection {
    kind: "roleDefinition",
    schema: &schema::ROLE_DEFINITION,
    path: "/beta/deviceManagement/roleDefinitions",
    read: &[
        "DeviceManagementRBAC.Read.All",
        "DeviceManagementRBAC.ReadWrite.All",
    ],
    write: &["DeviceManagementRBAC.ReadWrite.All"],
    category: "Role",
};

/// `/beta/deviceManagement/roleAssignments`.
pub static ROLE_ASSIGNMENTS: Collection = Collection {
    kind: "roleAssignment",
    schema: &schema::ROLE_ASSIGNMENT,
    path: "/beta/deviceManagement/roleAssignments",
    read: &[
        "DeviceManagementRBAC.Read.All",
        "DeviceManagementRBAC.ReadWrite.All",
    ],
    write: &["DeviceManagementRBAC.ReadWrite.All"],
    category: "Role",
};

/// The absolute base URL of this server for links: the configured public URL, else from `Host`.
pub fn base_url(state: &AppState, headers: &HeaderMap) -> String {
    if let Some(u) = &state.public_url {
        return u.clone();
    }
    let host = headers
        .get(http::header::HOST)
        .and_then(|h| h.to_str().ok())
        .filter(|h| {
            !h.is_empty()
                && h.chars()
                    .all(|c| c.is_ascii_alphanumeric() || ".-:[]".contains(c))
        })
        .unwrap_or("localhost");
    format!("https://{host}")
}

/// The built-in role definitions as Graph entities.
pub fn built_in_roles() -> Vec<Value> {
    RoleDefinition::built_ins()
        .into_iter()
        .map(|r| {
            let mut v = serde_json::to_value(&r).unwrap_or_default();
            if let Some(m) = v.as_object_mut() {
                m.insert("isBuiltInRoleDefinition".into(), Value::Bool(true));
                m.insert("roleScopeTagIds".into(), json!([]));
                m.insert(
                    "description".into(),
                    Value::String(format!("Built-in role: {}. Read-only.", r.display_name)),
                );
            }
            v
        })
        .collect()
}

fn is_built_in_role(id: &str) -> bool {
    RoleDefinition::built_ins().iter().any(|r| r.id == id)
}

async fn find(
    c: &Collection,
    state: &AppState,
    tenant: &str,
    id: &str,
) -> Result<Option<Value>, ApiError> {
    if c.kind == ROLE_DEFINITIONS.kind {
        if let Some(r) = built_in_roles().into_iter().find(|r| r["id"] == id) {
            return Ok(Some(r));
        }
    }
    Ok(state.store.get_object(tenant, c.kind, id).await?)
}

fn not_found(c: &Collection, id: &str) -> ApiError {
    GraphError::not_found(format!(
        "No {} with id '{id}' exists in this tenant.",
        c.schema.name
    ))
    .into()
}

fn present(c: &Collection, stored: &Value, q: &QueryOptions) -> Value {
    let mut v = c.schema.present(stored);
    if c.kind == ROLE_ASSIGNMENTS.kind && q.expand.as_deref() == Some("roleDefinition") {
        if let (Some(m), Some(role_id)) = (
            v.as_object_mut(),
            stored.get("_roleDefinitionId").and_then(Value::as_str),
        ) {
            let role = built_in_roles()
                .into_iter()
                .find(|r| r["id"] == role_id)
                .map(|r| ROLE_DEFINITIONS.schema.present(&r))
                .unwrap_or_else(|| json!({"id": role_id}));
            m.insert("roleDefinition".into(), role);
        }
    }
    v
}

fn check_query(c: &Collection, q: &QueryOptions) -> Result<(), ApiError> {
    let mut q = q.clone();
    if c.kind == ROLE_ASSIGNMENTS.kind && q.expand.as_deref() == Some("roleDefinition") {
        q.expand = None;
    }
    q.check_properties(&c.schema.readable_names())?;
    Ok(())
}

/// `GET {collection}`: a page with `$filter`, `$select`, `$top`, `$skip`, `$count`.
pub async fn list(
    c: &'static Collection,
    state: AppState,
    caller: Caller,
    query: Option<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    caller.require_any(c.read)?;
    let q = QueryOptions::parse(query.as_deref(), ResourceKind::Collection)?;
    check_query(c, &q)?;
    // The objects stream from the database (after the built-in roles); only the page's stay
    // in memory.
    let mut pager = Pager::new(&q);
    if c.kind == ROLE_DEFINITIONS.kind {
        for r in built_in_roles() {
            pager.offer(present(c, &r, &q));
        }
    }
    state
        .store
        .for_each_object(&caller.0.tenant_id, c.kind, &mut |e| {
            pager.offer(present(c, &e, &q));
            true
        })
        .await?;
    let url = format!("{}{}", base_url(&state, &headers), c.path);
    Ok(json_response(
        StatusCode::OK,
        pager.finish(&url, query.as_deref()),
    ))
}

/// `GET {collection}/{id}`.
pub async fn get_one(
    c: &'static Collection,
    state: AppState,
    caller: Caller,
    id: String,
    query: Option<String>,
) -> Result<Response, ApiError> {
    caller.require_any(c.read)?;
    let q = QueryOptions::parse(query.as_deref(), ResourceKind::Entity)?;
    check_query(c, &q)?;
    let stored = find(c, &state, &caller.0.tenant_id, &id)
        .await?
        .ok_or_else(|| not_found(c, &id))?;
    Ok(json_response(
        StatusCode::OK,
        q.apply_select(present(c, &stored, &q)),
    ))
}

fn audit_for(
    c: &Collection,
    caller: &Caller,
    verb: &str,
    operation: &str,
    id: &str,
    changes: &[(String, Value, Value)],
) -> AuditEvent {
    let modified: Vec<(&str, Value, Value)> = changes
        .iter()
        .map(|(k, o, n)| (k.as_str(), o.clone(), n.clone()))
        .collect();
    AuditEvent::new(&format!("{verb} {}", c.schema.name), operation, c.category)
        .actor(&caller.0.user_principal_name, &caller.0.object_id, None)
        .resource(
            c.schema.name,
            c.schema.odata_type.trim_start_matches('#'),
            id,
            &modified,
        )
}

fn conflict(msg: String) -> ApiError {
    GraphError::new(GraphErrorKind::Conflict, msg).into()
}

/// Per-type checks on a validated entity before it is written: uniqueness, references, and
/// normalisation. `id` is the entity's id (new or existing).
/// Reads go through `tx`, the write's own transaction, so that what they check still holds when
/// it commits, whichever node the other writers are on.
async fn prepare(
    c: &Collection,
    tx: &mut AdminTransaction,
    id: &str,
    entity: &mut Map<String, Value>,
) -> Result<(), ApiError> {
    async fn others(
        c: &Collection,
        tx: &mut AdminTransaction,
        id: &str,
        entity: &Map<String, Value>,
        key: &str,
    ) -> Result<bool, ApiError> {
        let Some(wanted) = entity
            .get(key)
            .and_then(Value::as_str)
            .map(str::to_ascii_lowercase)
        else {
            return Ok(false);
        };
        // One object at a time, stopping at the first clash.
        let mut clash = false;
        tx.for_each_object(c.kind, &mut |o| {
            clash = o["id"] != id
                && o.get(key)
                    .and_then(Value::as_str)
                    .is_some_and(|v| v.to_ascii_lowercase() == wanted);
            !clash
        })
        .await?;
        Ok(clash)
    }
    match c.kind {
        "user" => {
            let upn = entity
                .get("userPrincipalName")
                .and_then(Value::as_str)
                .unwrap_or_default();
            if !is_upn(upn) {
                return Err(GraphError::bad_request(format!(
                    "'{upn}' is not a valid userPrincipalName (name@domain)"
                ))
                .into());
            }
            if others(c, tx, id, entity, "userPrincipalName").await? {
                return Err(conflict(format!(
                    "Another user already has the userPrincipalName '{upn}'."
                )));
            }
        }
        "managedDevice" if others(c, tx, id, entity, "azureADDeviceId").await? => {
            return Err(conflict(
                "Another managed device already has this azureADDeviceId.".into(),
            ));
        }
        "domain" => {
            let name = entity
                .get("id")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_ascii_lowercase();
            if !is_domain(&name) {
                return Err(GraphError::bad_request(format!(
                    "'{name}' is not a valid domain name"
                ))
                .into());
            }
            entity.insert("id".into(), Value::String(name));
        }
        "roleDefinition" => {
            let perms = entity
                .get("rolePermissions")
                .cloned()
                .unwrap_or(Value::Null);
            entity.insert(
                "rolePermissions".into(),
                normalise_role_permissions(&perms)?,
            );
            entity.insert("isBuiltIn".into(), Value::Bool(false));
            entity.insert("isBuiltInRoleDefinition".into(), Value::Bool(false));
        }
        "roleAssignment" => prepare_assignment(tx, entity).await?,
        _ => {}
    }
    Ok(())
}

fn is_upn(s: &str) -> bool {
    match s.split_once('@') {
        Some((local, domain)) => {
            !local.is_empty()
                && is_domain(domain)
                && !s.contains(|c: char| c.is_whitespace() || c.is_control())
        }
        None => false,
    }
}

fn is_domain(s: &str) -> bool {
    s.len() <= 253
        && s.contains('.')
        && s.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
                && !label.starts_with('-')
                && !label.ends_with('-')
        })
}

/// Checks `rolePermissions` (Intune's shape) and returns it normalised; an unknown action is a 400.
fn normalise_role_permissions(v: &Value) -> Result<Value, ApiError> {
    let bad = |m: String| -> ApiError { GraphError::bad_request(m).into() };
    let perms = v
        .as_array()
        .ok_or_else(|| bad("rolePermissions must be an array".into()))?;
    if perms.len() > 16 {
        return Err(bad("rolePermissions may have at most 16 entries".into()));
    }
    let mut out = Vec::new();
    for p in perms {
        let sets = p
            .get("resourceActions")
            .and_then(Value::as_array)
            .ok_or_else(
                || bad("each rolePermissions entry needs a resourceActions array".into()),
            )?;
        let mut out_sets = Vec::new();
        for set in sets {
            let mut parsed = Map::new();
            for key in ["allowedResourceActions", "notAllowedResourceActions"] {
                let list = match set.get(key) {
                    None | Some(Value::Null) => vec![],
                    Some(Value::Array(a)) => a.clone(),
                    Some(_) => return Err(bad(format!("{key} must be an array of strings"))),
                };
                let mut actions = Vec::new();
                for a in list {
                    let s = a
                        .as_str()
                        .ok_or_else(|| bad(format!("{key} must be an array of strings")))?;
                    let action = ResourceAction::parse(s).map_err(|e| {
                        bad(format!(
                            "'{}' is not a resource action Assist knows",
                            e.action()
                        ))
                    })?;
                    actions.push(Value::String(action.as_str().to_owned()));
                }
                parsed.insert(key.to_owned(), Value::Array(actions));
            }
            if let Some(extra) = set.as_object().and_then(|o| {
                o.keys().find(|k| {
                    !k.starts_with('@')
                        && *k != "allowedResourceActions"
                        && *k != "notAllowedResourceActions"
                })
            }) {
                return Err(bad(format!(
                    "'{extra}' is not a property of resourceAction"
                )));
            }
            out_sets.push(Value::Object(parsed));
        }
        out.push(json!({"resourceActions": out_sets}));
    }
    Ok(Value::Array(out))
}

async fn prepare_assignment(
    tx: &mut AdminTransaction,
    entity: &mut Map<String, Value>,
) -> Result<(), ApiError> {
    let bad = |m: String| -> ApiError { GraphError::bad_request(m).into() };
    if let Some(bind) = entity.remove("roleDefinition@odata.bind") {
        let s = bind.as_str().unwrap_or_default();
        let role_id = s
            .rsplit('/')
            .next()
            .unwrap_or(s)
            .trim_end_matches("')")
            .trim_start_matches("('");
        let exists =
            is_built_in_role(role_id) || tx.get_object("roleDefinition", role_id).await?.is_some();
        if !exists {
            return Err(bad(format!(
                "roleDefinition@odata.bind names a role definition '{role_id}' that does not exist"
            )));
        }
        entity.insert(
            "_roleDefinitionId".into(),
            Value::String(role_id.to_owned()),
        );
    }
    if entity.get("_roleDefinitionId").is_none() {
        return Err(bad(
            "roleDefinition@odata.bind is required to create a roleAssignment".into(),
        ));
    }
    let scope_type = entity
        .get("scopeType")
        .and_then(Value::as_str)
        .unwrap_or("resourceScope");
    let resource_scopes = entity
        .get("resourceScopes")
        .and_then(Value::as_array)
        .map(Vec::len)
        .unwrap_or(0);
    if scope_type != "resourceScope" && resource_scopes > 0 {
        return Err(bad(format!(
            "resourceScopes must be empty when scopeType is '{scope_type}'"
        )));
    }
    for key in ["members", "scopeMembers", "resourceScopes"] {
        let ids: Vec<String> = entity
            .get(key)
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(Value::as_str)
                    .map(str::to_owned)
                    .collect()
            })
            .unwrap_or_default();
        for gid in ids {
            if tx.get_object("group", &gid).await?.is_none() {
                return Err(bad(format!(
                    "{key} names a group '{gid}' that does not exist"
                )));
            }
        }
    }
    Ok(())
}

/// `POST {collection}` → 201 with the created entity.
pub async fn create(
    c: &'static Collection,
    state: AppState,
    caller: Caller,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    caller.require_any(c.write)?;
    let body = read_json(&headers, body).await?;
    let mut entity = c.schema.validate_create(&body)?;
    let tenant = caller.0.tenant_id.clone();
    let mut tx = state.store.admin_transaction(&tenant).await?;
    let id = if c.schema.client_sets_id {
        entity
            .get("id")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned()
    } else {
        let id = uuid::Uuid::new_v4().to_string();
        entity.insert("id".into(), Value::String(id.clone()));
        id
    };
    prepare(c, &mut tx, &id, &mut entity).await?;
    let id = entity
        .get("id")
        .and_then(Value::as_str)
        .unwrap_or(&id)
        .to_owned();
    let stored = Value::Object(entity);
    let changes: Vec<(String, Value, Value)> = c
        .schema
        .present(&stored)
        .as_object()
        .map(|m| {
            m.iter()
                .filter(|(k, _)| !k.starts_with('@'))
                .map(|(k, v)| (k.clone(), Value::Null, v.clone()))
                .collect()
        })
        .unwrap_or_default();
    let audit = audit_for(c, &caller, "Create", "Create", &id, &changes);
    if !tx.insert_object(c.kind, &id, &stored, Some(&audit)).await? {
        return Err(conflict(format!(
            "A {} with id '{id}' already exists.",
            c.schema.name
        )));
    }
    tx.commit().await?;
    tracing::info!(kind = c.kind, "created");
    let mut resp = json_response(
        StatusCode::CREATED,
        present(c, &stored, &QueryOptions::default()),
    );
    if let Ok(loc) =
        http::HeaderValue::from_str(&format!("{}{}/{}", base_url(&state, &headers), c.path, id))
    {
        resp.headers_mut().insert(http::header::LOCATION, loc);
    }
    Ok(resp)
}

/// `PATCH {collection}/{id}` → 200 with the updated entity.
pub async fn patch(
    c: &'static Collection,
    state: AppState,
    caller: Caller,
    id: String,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    caller.require_any(c.write)?;
    if c.kind == ROLE_DEFINITIONS.kind && is_built_in_role(&id) {
        return Err(GraphError::forbidden("Built-in role definitions are read-only.").into());
    }
    let body = read_json(&headers, body).await?;
    let tenant = caller.0.tenant_id.clone();
    let mut tx = state.store.admin_transaction(&tenant).await?;
    let existing = tx
        .get_object_for_update(c.kind, &id)
        .await?
        .ok_or_else(|| not_found(c, &id))?;
    let (merged, changes) = c.schema.validate_patch(&existing, &body)?;
    let mut entity = merged.as_object().cloned().unwrap_or_default();
    prepare(c, &mut tx, &id, &mut entity).await?;
    let stored = Value::Object(entity);
    let audit = audit_for(c, &caller, "Patch", "Patch", &id, &changes);
    if !tx.update_object(c.kind, &id, &stored, &audit).await? {
        return Err(not_found(c, &id));
    }
    tx.commit().await?;
    Ok(json_response(
        StatusCode::OK,
        present(c, &stored, &QueryOptions::default()),
    ))
}

/// `DELETE {collection}/{id}` → 204.
pub async fn delete(
    c: &'static Collection,
    state: AppState,
    caller: Caller,
    id: String,
) -> Result<Response, ApiError> {
    caller.require_any(c.write)?;
    if c.kind == ROLE_DEFINITIONS.kind && is_built_in_role(&id) {
        return Err(GraphError::forbidden("Built-in role definitions cannot be deleted.").into());
    }
    let tenant = caller.0.tenant_id.clone();
    let mut tx = state.store.admin_transaction(&tenant).await?;
    if c.kind == ROLE_DEFINITIONS.kind {
        let mut assigned = false;
        tx.for_each_object(ROLE_ASSIGNMENTS.kind, &mut |a| {
            assigned = a.get("_roleDefinitionId").and_then(Value::as_str) == Some(id.as_str());
            !assigned
        })
        .await?;
        if assigned {
            return Err(GraphError::bad_request(
                "The role definition is assigned; delete its role assignments first.",
            )
            .into());
        }
    }
    let audit = audit_for(c, &caller, "Delete", "Delete", &id, &[]);
    if !tx.delete_object(c.kind, &id, &audit).await? {
        return Err(not_found(c, &id));
    }
    tx.commit().await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// `GET /beta/groups/{id}/members`: the group's users and managed devices.
pub async fn list_members(
    State(state): State<AppState>,
    caller: Caller,
    Path(group_id): Path<String>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    caller.require_any(MEMBER_READ)?;
    let q = QueryOptions::parse(query.as_deref(), ResourceKind::Collection)?;
    if q.expand.is_some() {
        return Err(GraphError::bad_request("$expand is not supported on members").into());
    }
    let tenant = &caller.0.tenant_id;
    if state
        .store
        .get_object(tenant, GROUPS.kind, &group_id)
        .await?
        .is_none()
    {
        return Err(not_found(&GROUPS, &group_id));
    }
    // The member ids are read at once (small); their objects one at a time, keeping the page's.
    let mut pager = Pager::new(&q);
    for (id, kind) in state.store.members(tenant, &group_id).await? {
        let c = match kind {
            MemberKind::User => &USERS,
            MemberKind::Device => &MANAGED_DEVICES,
        };
        if let Some(o) = state.store.get_object(tenant, c.kind, &id).await? {
            pager.offer(c.schema.present(&o));
        }
    }
    let url = format!(
        "{}{}/{}/members",
        base_url(&state, &headers),
        GROUPS.path,
        group_id
    );
    Ok(json_response(
        StatusCode::OK,
        pager.finish(&url, query.as_deref()),
    ))
}

/// `POST /beta/groups/{id}/members/$ref` with `{"@odata.id": ".../directoryObjects/{id}"}` → 204.
pub async fn add_member(
    State(state): State<AppState>,
    caller: Caller,
    Path(group_id): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    caller.require_any(MEMBER_WRITE)?;
    let body = read_json(&headers, body).await?;
    let reference = body
        .get("@odata.id")
        .and_then(Value::as_str)
        .ok_or_else(|| {
            GraphError::bad_request(
                "The body must be {\"@odata.id\": \"…/directoryObjects/{id}\"}.",
            )
        })?;
    let member_id = reference
        .trim_end_matches('/')
        .rsplit('/')
        .next()
        .unwrap_or_default()
        .to_owned();
    let tenant = caller.0.tenant_id.clone();
    let mut tx = state.store.admin_transaction(&tenant).await?;
    if tx.get_object(GROUPS.kind, &group_id).await?.is_none() {
        return Err(not_found(&GROUPS, &group_id));
    }
    let kind = if tx.get_object(USERS.kind, &member_id).await?.is_some() {
        MemberKind::User
    } else if tx
        .get_object(MANAGED_DEVICES.kind, &member_id)
        .await?
        .is_some()
    {
        MemberKind::Device
    } else {
        return Err(GraphError::bad_request(format!(
            "No user or managed device with id '{member_id}' exists in this tenant."
        ))
        .into());
    };
    let audit = AuditEvent::new("Add member to group", "Action", GROUPS.category)
        .actor(&caller.0.user_principal_name, &caller.0.object_id, None)
        .resource(
            "group",
            "microsoft.graph.group",
            &group_id,
            &[("members", Value::Null, Value::String(member_id.clone()))],
        );
    if !tx.add_member(&group_id, &member_id, kind, &audit).await? {
        return Err(GraphError::bad_request("One or more added object references already exist for the following modified properties: 'members'.").into());
    }
    tx.commit().await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// `DELETE /beta/groups/{id}/members/{memberId}/$ref` → 204.
pub async fn remove_member(
    State(state): State<AppState>,
    caller: Caller,
    Path((group_id, member_id)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    caller.require_any(MEMBER_WRITE)?;
    let tenant = caller.0.tenant_id.clone();
    let mut tx = state.store.admin_transaction(&tenant).await?;
    if tx.get_object(GROUPS.kind, &group_id).await?.is_none() {
        return Err(not_found(&GROUPS, &group_id));
    }
    let audit = AuditEvent::new("Remove member from group", "Action", GROUPS.category)
        .actor(&caller.0.user_principal_name, &caller.0.object_id, None)
        .resource(
            "group",
            "microsoft.graph.group",
            &group_id,
            &[("members", Value::String(member_id.clone()), Value::Null)],
        );
    if !tx.remove_member(&group_id, &member_id, &audit).await? {
        return Err(GraphError::not_found(format!(
            "'{member_id}' is not a member of group '{group_id}'."
        ))
        .into());
    }
    tx.commit().await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// Permissions for `requestRemoteAssistance` (any one).
pub const LAUNCH_PERMISSIONS: &[&str] = &[
    "DeviceManagementManagedDevices.PrivilegedOperations.All",
    "DeviceManagementManagedDevices.ReadWrite.All",
];

/// `POST /beta/deviceManagement/managedDevices/{id}/requestRemoteAssistance` → 204: the
/// device's signalling connections are notified on the caller's behalf (the launch flow). The
/// caller must be a user; the session still needs the policy and the sharer's answer.
pub async fn request_remote_assistance(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    caller.require_any(LAUNCH_PERMISSIONS)?;
    let tenant = caller.0.tenant_id.clone();
    let device = state
        .store
        .get_object(&tenant, MANAGED_DEVICES.kind, &id)
        .await?
        .ok_or_else(|| not_found(&MANAGED_DEVICES, &id))?;
    let Some(hub) = state.signal.clone() else {
        return Err(GraphError::new(
            GraphErrorKind::Unavailable,
            "This node runs no signalling service.",
        )
        .into());
    };
    let party = crate::signal::party_for(&state.store, &caller.0).await?;
    let aad = device["azureADDeviceId"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    match hub.admin_launch(party, aad).await {
        Ok(_) => Ok(StatusCode::NO_CONTENT.into_response()),
        Err(e) => {
            let kind = match e {
                assist_session::LaunchError::DeviceOffline
                | assist_session::LaunchError::DeviceBusy => GraphErrorKind::Conflict,
                assist_session::LaunchError::NotAUser => GraphErrorKind::BadRequest,
                _ => GraphErrorKind::Unavailable,
            };
            Err(GraphError::new(kind, crate::signal::launch_error_message(&e)).into())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upn_and_domain_shapes() {
        assert!(is_upn("ana@contoso.com"));
        assert!(!is_upn("ana"));
        assert!(!is_upn("@contoso.com"));
        assert!(!is_upn("ana@localhost"));
        assert!(!is_upn("a na@contoso.com"));
        assert!(is_domain("sub.contoso.co.uk"));
        assert!(!is_domain("-bad.com"));
        assert!(!is_domain("bad..com"));
    }

    #[test]
    fn role_permissions_are_normalised_and_checked() {
        let v = json!([{"resourceActions": [{"allowedResourceActions": ["microsoft.intune_remoteassistanceapp_viewscreen"]}]}]);
        let n = normalise_role_permissions(&v).unwrap();
        assert_eq!(
            n,
            json!([{"resourceActions": [{"allowedResourceActions": ["Microsoft.Intune_RemoteAssistanceApp_ViewScreen"], "notAllowedResourceActions": []}]}])
        );
        for bad in [
            json!({}),
            json!([{}]),
            json!([{"resourceActions": [{"allowedResourceActions": ["Microsoft.Intune_Nope"]}]}]),
            json!([{"resourceActions": [{"allowedResourceActions": "x"}]}]),
            json!([{"resourceActions": [{"allowed": []}]}]),
        ] {
            assert!(normalise_role_permissions(&bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn built_ins_are_graph_shaped() {
        let roles = built_in_roles();
        assert_eq!(roles.len(), 2);
        for r in &roles {
            assert_eq!(r["isBuiltIn"], true);
            assert!(
                r["rolePermissions"][0]["resourceActions"][0]["allowedResourceActions"].is_array(),
                "{r}"
            );
        }
    }
}
