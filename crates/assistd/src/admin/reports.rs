//! Session reports: `POST /beta/deviceManagement/reports/getRemoteAssistanceSessionsReport` in
//! the Intune report shape, and the monitor summary (an Assist extension). Both need a Graph
//! scope *and* the Intune action `Microsoft.Intune_RemoteAssistance_ViewReports` through one of
//! the caller's role assignments.

use assist_graph::odata::{percent_decode, Filter};
use assist_graph::GraphError;
use assist_policy::ResourceAction;
use assist_store::sessions::SessionRow;
use axum::body::Body;
use axum::extract::{RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use serde::Deserialize;
use serde_json::{json, Map, Value};
use time::format_description::well_known::Rfc3339;

use crate::api::{json_response, read_json, ApiError, Caller};
use crate::facts;
use crate::state::AppState;

/// Graph scopes that allow reading reports (any one), as Graph documents for this action.
pub const SCOPES: &[&str] = &[
    "DeviceManagementServiceConfig.Read.All",
    "DeviceManagementServiceConfig.ReadWrite.All",
    "DeviceManagementConfiguration.Read.All",
    "DeviceManagementConfiguration.ReadWrite.All",
];

/// The report's columns: Graph's `remoteAssistanceReporting` fields, then Assist's own.
pub const COLUMNS: &[(&str, &str)] = &[
    ("id", "String"),
    ("startDateTime", "DateTime"),
    ("endDateTime", "DateTime"),
    ("remoteAssistanceSessionType", "String"),
    ("helperEmail", "String"),
    ("helperTenantId", "String"),
    ("helperFirstName", "String"),
    ("helperLastName", "String"),
    ("helperOs", "String"),
    ("helperDeviceAadId", "String"),
    ("helperDeviceName", "String"),
    ("helperEnrollmentState", "String"),
    ("sharerEmail", "String"),
    ("sharerTenantId", "String"),
    ("sharerFirstName", "String"),
    ("sharerLastName", "String"),
    ("sharerDeviceAadId", "String"),
    ("sharerDeviceName", "String"),
    ("sharerOs", "String"),
    ("sharerEnrollmentState", "String"),
    ("state", "String"),
    ("endReason", "String"),
    ("endedBy", "String"),
];

/// Checks the Graph scope and the RBAC action `ViewReports`.
async fn require_view_reports(state: &AppState, caller: &Caller) -> Result<(), ApiError> {
    caller.require_any(SCOPES)?;
    let tenant = &caller.0.tenant_id;
    let user = facts::ensure_user(&state.store, &caller.0).await?;
    let me = facts::helper(
        &state.store,
        tenant,
        user["id"].as_str().unwrap_or_default(),
    )
    .await?;
    let policy = facts::tenant_policy(&state.store, tenant).await?;
    let allowed = policy.role_assignments.iter().any(|a| {
        !a.member_group_ids.is_disjoint(&me.group_ids)
            && policy
                .role_definitions
                .iter()
                .filter(|r| r.id == a.role_definition_id)
                .any(|r| {
                    r.effective_permissions()
                        .actions
                        .contains(&ResourceAction::ViewReports)
                })
    });
    if allowed {
        Ok(())
    } else {
        Err(GraphError::forbidden(
            "Viewing Remote Help reports needs the Microsoft.Intune_RemoteAssistance_ViewReports action through a role assignment.",
        )
        .into())
    }
}

/// One report row as an object keyed by column.
pub fn row(s: &SessionRow) -> Value {
    let mut m = match &s.body {
        Value::Object(m) => m.clone(),
        _ => Map::new(),
    };
    m.insert("id".into(), Value::String(s.id.clone()));
    m.insert("startDateTime".into(), Value::String(s.start_time.clone()));
    m.insert(
        "endDateTime".into(),
        s.end_time.clone().map(Value::String).unwrap_or(Value::Null),
    );
    m.insert(
        "remoteAssistanceSessionType".into(),
        Value::String(s.mode.clone()),
    );
    m.insert("state".into(), Value::String(s.state.clone()));
    m.insert(
        "endReason".into(),
        s.end_reason
            .clone()
            .map(Value::String)
            .unwrap_or(Value::Null),
    );
    m.insert(
        "endedBy".into(),
        s.ended_by.clone().map(Value::String).unwrap_or(Value::Null),
    );
    Value::Object(m)
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct ReportRequest {
    name: Option<String>,
    #[serde(default)]
    select: Vec<String>,
    filter: Option<String>,
    #[serde(default)]
    order_by: Vec<String>,
    search: Option<String>,
    skip: Option<usize>,
    top: Option<usize>,
    #[serde(default)]
    group_by: Vec<String>,
    session_id: Option<String>,
}

fn column_known(c: &str) -> bool {
    COLUMNS.iter().any(|(n, _)| *n == c)
}

/// `POST /beta/deviceManagement/reports/getRemoteAssistanceSessionsReport`.
pub async fn sessions_report(
    State(state): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    require_view_reports(&state, &caller).await?;
    let body = read_json(&headers, body).await?;
    let req: ReportRequest = serde_json::from_value(body)
        .map_err(|e| GraphError::bad_request(format!("Invalid report request: {e}.")))?;
    if let Some(name) = &req.name {
        if !name.is_empty() && name != "RemoteAssistanceSessions" {
            return Err(GraphError::bad_request(format!(
                "Unknown report '{name}'; this action serves 'RemoteAssistanceSessions'."
            ))
            .into());
        }
    }
    if !req.group_by.is_empty() {
        return Err(GraphError::bad_request("groupBy is not supported by this report.").into());
    }
    let _ = &req.session_id;
    let select: Vec<String> = if req.select.is_empty() {
        COLUMNS.iter().map(|(n, _)| (*n).to_owned()).collect()
    } else {
        req.select.clone()
    };
    for c in &select {
        if !column_known(c) {
            return Err(
                GraphError::bad_request(format!("'{c}' is not a column of this report.")).into(),
            );
        }
    }
    let filter = match req.filter.as_deref().filter(|f| !f.trim().is_empty()) {
        Some(f) => {
            let parsed = Filter::parse(f)?;
            if let Some(p) = parsed.properties().find(|p| !column_known(p)) {
                return Err(GraphError::bad_request(format!(
                    "'{p}' in filter is not a column of this report."
                ))
                .into());
            }
            Some(parsed)
        }
        None => None,
    };
    let mut rows: Vec<Value> = state
        .store
        .sessions(&caller.0.tenant_id)
        .await?
        .iter()
        .map(row)
        .collect();
    if let Some(f) = &filter {
        rows.retain(|r| f.matches(r));
    }
    if let Some(term) = req
        .search
        .as_deref()
        .map(str::to_ascii_lowercase)
        .filter(|t| !t.is_empty())
    {
        rows.retain(|r| {
            [
                "helperEmail",
                "sharerEmail",
                "sharerDeviceName",
                "helperFirstName",
                "helperLastName",
                "sharerFirstName",
                "sharerLastName",
            ]
            .iter()
            .any(|k| {
                r[k].as_str()
                    .is_some_and(|v| v.to_ascii_lowercase().contains(&term))
            })
        });
    }
    for spec in req.order_by.iter().rev() {
        let mut parts = spec.split_whitespace();
        let col = parts.next().unwrap_or_default().to_owned();
        let desc = match parts.next().map(str::to_ascii_lowercase).as_deref() {
            None | Some("asc") => false,
            Some("desc") => true,
            Some(other) => {
                return Err(GraphError::bad_request(format!(
                    "orderBy direction '{other}' must be asc or desc."
                ))
                .into())
            }
        };
        if !column_known(&col) {
            return Err(GraphError::bad_request(format!(
                "'{col}' in orderBy is not a column of this report."
            ))
            .into());
        }
        rows.sort_by(|a, b| {
            let (x, y) = (a[&col].to_string(), b[&col].to_string());
            if desc {
                y.cmp(&x)
            } else {
                x.cmp(&y)
            }
        });
    }
    let total = rows.len();
    let top = req.top.unwrap_or(50).clamp(1, 1000);
    let values: Vec<Value> = rows
        .iter()
        .skip(req.skip.unwrap_or(0))
        .take(top)
        .map(|r| {
            Value::Array(
                select
                    .iter()
                    .map(|c| r.get(c).cloned().unwrap_or(Value::Null))
                    .collect(),
            )
        })
        .collect();
    let schema: Vec<Value> = select
        .iter()
        .map(|c| {
            let ty = COLUMNS
                .iter()
                .find(|(n, _)| n == c)
                .map(|(_, t)| *t)
                .unwrap_or("String");
            json!({"Column": c, "PropertyType": ty})
        })
        .collect();
    Ok(json_response(
        StatusCode::OK,
        json!({"TotalRowCount": total, "Schema": schema, "Values": values, "SessionId": ""}),
    ))
}

/// `GET /assist/v1/reports/sessionSummary?from=&to=` (Assist extension): the Monitor tab's
/// figures: sessions active now, sessions waiting to become active (live, from the broker), and
/// sessions started in the period with their average length.
pub async fn summary(
    State(state): State<AppState>,
    caller: Caller,
    RawQuery(query): RawQuery,
) -> Result<Response, ApiError> {
    require_view_reports(&state, &caller).await?;
    let mut from = None;
    let mut to = None;
    for pair in query
        .as_deref()
        .unwrap_or("")
        .split('&')
        .filter(|p| !p.is_empty())
    {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        match percent_decode(key)?.as_str() {
            "from" => from = Some(period_bound("from", &percent_decode(value)?)?),
            "to" => to = Some(period_bound("to", &percent_decode(value)?)?),
            other => {
                return Err(GraphError::bad_request(format!(
                    "unknown parameter '{other}' (from, to)"
                ))
                .into())
            }
        }
    }
    let rows = state.store.sessions(&caller.0.tenant_id).await?;
    let active = rows.iter().filter(|r| r.state == "active").count();
    // Sessions asked for but not active yet (a code out, a launch ringing, consent pending),
    // from the broker's live directory.
    let waiting = state.signal.as_ref().map_or(0, |hub| {
        hub.live_state()
            .tenant_sessions(&caller.0.tenant_id)
            .iter()
            .filter(|(_, s)| s.stage != assist_session::LiveStage::Active)
            .count()
    });
    let in_period: Vec<&SessionRow> = rows
        .iter()
        .filter(|r| {
            let Ok(start) = time::OffsetDateTime::parse(&r.start_time, &Rfc3339) else {
                return false;
            };
            from.is_none_or(|f| start >= f) && to.is_none_or(|t| start < t)
        })
        .collect();
    let lengths: Vec<f64> = in_period
        .iter()
        .filter_map(|r| {
            let end = r.end_time.as_deref()?;
            let s = time::OffsetDateTime::parse(&r.start_time, &Rfc3339).ok()?;
            let e = time::OffsetDateTime::parse(end, &Rfc3339).ok()?;
            Some((e - s).as_seconds_f64())
        })
        .collect();
    let average = if lengths.is_empty() {
        0.0
    } else {
        lengths.iter().sum::<f64>() / lengths.len() as f64
    };
    Ok(json_response(
        StatusCode::OK,
        json!({"activeSessions": active, "waitingSessions": waiting, "totalSessions": in_period.len(), "averageSessionSeconds": average, "from": from.map(format_bound), "to": to.map(format_bound)}),
    ))
}

/// A `from`/`to` bound: an RFC 3339 date-time (`2026-01-01T00:00:00Z`), already URL-decoded.
/// An unencoded `+` of an offset arrives as a space, so a space is read back as `+`.
fn period_bound(name: &str, value: &str) -> Result<time::OffsetDateTime, GraphError> {
    time::OffsetDateTime::parse(value, &Rfc3339)
        .or_else(|_| time::OffsetDateTime::parse(&value.replace(' ', "+"), &Rfc3339))
        .map_err(|_| {
            GraphError::bad_request(format!(
                "{name} must be an RFC 3339 date-time such as 2026-01-01T00:00:00Z, got '{value}'"
            ))
        })
}

fn format_bound(t: time::OffsetDateTime) -> String {
    t.format(&Rfc3339).unwrap_or_default()
}
