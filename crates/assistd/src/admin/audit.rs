//! `GET /beta/deviceManagement/auditEvents` (and one by id): the tenant's audit trail, with
//! `$filter` on `activityDateTime` and `category` (and any other top-level property), paging,
//! `$select` and `$count`. There is no write path: audit events cannot be changed or deleted.

use assist_graph::directory::AUDIT_EVENT_PROPERTIES;
use assist_graph::entity::Pager;
use assist_graph::odata::{QueryOptions, ResourceKind};
use assist_graph::GraphError;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;

use crate::admin::directory::base_url;
use crate::api::{json_response, ApiError, Caller};
use crate::state::AppState;

/// Permissions to read audit events (any one), as Graph documents them for Intune audit events.
pub const READ_PERMISSIONS: &[&str] = &[
    "DeviceManagementApps.Read.All",
    "DeviceManagementApps.ReadWrite.All",
];

/// The collection path.
pub const PATH: &str = "/beta/deviceManagement/auditEvents";

/// `GET /beta/deviceManagement/auditEvents`.
pub async fn list(
    State(state): State<AppState>,
    caller: Caller,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    caller.require_any(READ_PERMISSIONS)?;
    let q = QueryOptions::parse(query.as_deref(), ResourceKind::Collection)?;
    q.check_properties(AUDIT_EVENT_PROPERTIES)?;
    // The events stream from the database; only the page's stay in memory.
    let mut pager = Pager::new(&q);
    state
        .store
        .for_each_audit_event(&caller.0.tenant_id, &mut |e| {
            pager.offer(e);
            true
        })
        .await?;
    let url = format!("{}{PATH}", base_url(&state, &headers));
    Ok(json_response(
        StatusCode::OK,
        pager.finish(&url, query.as_deref()),
    ))
}

/// `GET /beta/deviceManagement/auditEvents/{id}`.
pub async fn get_one(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    RawQuery(query): RawQuery,
) -> Result<Response, ApiError> {
    caller.require_any(READ_PERMISSIONS)?;
    let q = QueryOptions::parse(query.as_deref(), ResourceKind::Entity)?;
    q.check_properties(AUDIT_EVENT_PROPERTIES)?;
    let event = state
        .store
        .audit_event(&caller.0.tenant_id, &id)
        .await?
        .ok_or_else(|| {
            GraphError::not_found(format!(
                "No auditEvent with id '{id}' exists in this tenant."
            ))
        })?;
    Ok(json_response(StatusCode::OK, q.apply_select(event)))
}
