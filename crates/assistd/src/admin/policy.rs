//! `POST /assist/v1/policy/evaluate`: the admin what-if (an Assist extension outside Graph's
//! namespace). Given a helper, a sharer or device, and a mode, it answers what the broker would
//! decide now and why: every rule's outcome and every role assignment's trace.

use assist_graph::GraphError;
use assist_policy::{Mode, SessionRequest};
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use serde::Deserialize;
use serde_json::json;

use crate::api::{json_response, read_json, ApiError, Caller};
use crate::facts;
use crate::state::AppState;

/// Permissions to ask (any one).
pub const PERMISSIONS: &[&str] = &[
    "DeviceManagementRBAC.Read.All",
    "DeviceManagementRBAC.ReadWrite.All",
];

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct EvaluateRequest {
    helper: String,
    sharer: Option<String>,
    device: Option<String>,
    mode: Mode,
    sharer_tenant_id: Option<String>,
    device_tenant_id: Option<String>,
}

/// Evaluates a hypothetical session request.
pub async fn evaluate(
    State(state): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    caller.require_any(PERMISSIONS)?;
    let body = read_json(&headers, body).await?;
    let req: EvaluateRequest = serde_json::from_value(body)
        .map_err(|e| GraphError::bad_request(format!("Invalid request: {e}.")))?;
    let tenant = caller.0.tenant_id.clone();
    let store = &state.store;

    let helper_user = facts::find_user(store, &tenant, &req.helper)
        .await?
        .ok_or_else(|| {
            GraphError::bad_request(format!(
                "helper '{}' is not a user of this tenant",
                req.helper
            ))
        })?;
    let helper_id = helper_user["id"].as_str().unwrap_or_default().to_owned();

    let device = match &req.device {
        Some(d) => Some(
            facts::device(
                store,
                &tenant,
                d,
                req.device_tenant_id.as_deref().unwrap_or(&tenant),
            )
            .await?,
        ),
        None => None,
    };
    let sharer_tenant = req
        .sharer_tenant_id
        .clone()
        .unwrap_or_else(|| tenant.clone());
    let sharer_ref = match (&req.sharer, &device) {
        (Some(s), _) => s.clone(),
        (None, Some(d)) => d.primary_user_id.clone().ok_or_else(|| {
            GraphError::bad_request("give a sharer: the device has no primary user")
        })?,
        (None, None) => {
            return Err(GraphError::bad_request("give a sharer, a device, or both").into())
        }
    };
    let sharer = if sharer_tenant == tenant {
        let user = facts::find_user(store, &tenant, &sharer_ref)
            .await?
            .ok_or_else(|| {
                GraphError::bad_request(format!(
                    "sharer '{sharer_ref}' is not a user of this tenant"
                ))
            })?;
        facts::sharer(store, &tenant, user["id"].as_str().unwrap_or_default()).await?
    } else {
        // A sharer of another tenant: nothing of theirs is visible here, which is the point.
        assist_policy::Sharer {
            tenant_id: sharer_tenant,
            user_id: sharer_ref,
            group_ids: Default::default(),
        }
    };
    let request = SessionRequest {
        helper: facts::helper(store, &tenant, &helper_id).await?,
        sharer,
        device,
        mode: req.mode,
    };
    let policy = facts::tenant_policy(store, &tenant).await?;
    let explanation = assist_policy::explain(&policy, &request);
    let mut body = serde_json::to_value(&explanation)
        .map_err(|e| GraphError::internal(format!("encoding: {e}")))?;
    if let Some(m) = body.as_object_mut() {
        m.insert(
            "request".into(),
            json!({
                "helperId": request.helper.user_id,
                "helperGroupIds": request.helper.group_ids,
                "sharerId": request.sharer.user_id,
                "sharerTenantId": request.sharer.tenant_id,
                "sharerGroupIds": request.sharer.group_ids,
                "device": request.device,
            }),
        );
    }
    Ok(json_response(StatusCode::OK, body))
}
