//! `GET` and `PATCH /beta/deviceManagement/remoteAssistanceSettings`, per tenant (the token's `tid`).

use assist_graph::odata::{QueryOptions, ResourceKind};
use assist_graph::settings::PROPERTIES;
use assist_store::AuditEvent;
use axum::body::Body;
use axum::extract::{RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;

use crate::api::{json_response, read_json, ApiError, Caller};
use crate::state::AppState;

/// Permissions that allow reading the settings (any one).
pub const READ_PERMISSIONS: &[&str] = &[
    "DeviceManagementServiceConfig.Read.All",
    "DeviceManagementServiceConfig.ReadWrite.All",
    "DeviceManagementConfiguration.Read.All",
    "DeviceManagementConfiguration.ReadWrite.All",
];

/// Permissions that allow changing them (any one).
pub const WRITE_PERMISSIONS: &[&str] = &[
    "DeviceManagementServiceConfig.ReadWrite.All",
    "DeviceManagementConfiguration.ReadWrite.All",
];

/// `GET`: the tenant's settings (defaults if never configured), honouring `$select`.
pub async fn get_settings(
    State(state): State<AppState>,
    caller: Caller,
    RawQuery(query): RawQuery,
) -> Result<Response, ApiError> {
    caller.require_any(READ_PERMISSIONS)?;
    let q = QueryOptions::parse(query.as_deref(), ResourceKind::Entity)?;
    q.check_properties(PROPERTIES)?;
    let tenant = &caller.0.tenant_id;
    let settings = state.store.settings(tenant).await?;
    Ok(json_response(
        StatusCode::OK,
        q.apply_select(settings.to_entity(tenant)),
    ))
}

/// `PATCH`: changes exactly the properties sent; answers 200 with the updated entity. The
/// change and its audit event are stored in one transaction; a refused body changes nothing.
pub async fn patch_settings(
    State(state): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    caller.require_any(WRITE_PERMISSIONS)?;
    let patch = read_json(&headers, body).await?;
    let tenant = caller.0.tenant_id.clone();
    // Read, patch and write in one transaction holding the settings row's lock: concurrent
    // PATCHes (on this node or another sharing the database) apply one after the other.
    let mut tx = state.store.admin_transaction(&tenant).await?;
    let current = tx.settings_for_update().await?;
    let (next, changed) = current.apply_patch(&patch)?;
    let modified: Vec<(&str, serde_json::Value, serde_json::Value)> = changed
        .iter()
        .map(|p| {
            (
                *p,
                current.property(p).unwrap_or_default(),
                next.property(p).unwrap_or_default(),
            )
        })
        .collect();
    let audit = AuditEvent::new(
        "Patch remoteAssistanceSettings",
        "Patch",
        "RemoteAssistance",
    )
    .actor(&caller.0.user_principal_name, &caller.0.object_id, None)
    .resource(
        "remoteAssistanceSettings",
        "remoteAssistanceSettings",
        &tenant,
        &modified,
    );
    tx.save_settings(&next, Some(&audit)).await?;
    tx.commit().await?;
    tracing::info!(changed = ?changed, "remote assistance settings updated");
    if let Some(hub) = &state.signal {
        // Running sessions learn at once: chat is checked at send time, and disabling Remote
        // Help ends the tenant's sessions.
        hub.settings_changed(
            &tenant,
            next.block_chat,
            next.state == assist_graph::settings::RemoteAssistanceState::Enabled,
        )
        .await;
    }
    Ok(json_response(StatusCode::OK, next.to_entity(&tenant)))
}
