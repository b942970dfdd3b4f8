//! Session reports: `POST /beta/deviceManagement/reports/getRemoteAssistanceSessionsReport` in
//! the Intune report shape, and the monitor summary and sessions per day (Assist extensions).
//! All need a Graph
//! scope *and* the Intune action `Microsoft.Intune_RemoteAssistance_ViewReports` through one of
//! the caller's role assignments.

use assist_graph::odata::{percent_decode, Filter};
use assist_graph::GraphError;
use assist_policy::ResourceAction;
use assist_store::sessions::{SessionOrder, SessionRow};
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
    ("relayBytesHelperToSharer", "Int64"),
    ("relayBytesSharerToHelper", "Int64"),
    ("relayScreenFramesDropped", "Int64"),
    ("relayKeyframeRequests", "Int64"),
    ("relayHelperRttMs", "Double"),
    ("relaySharerRttMs", "Double"),
];

/// Checks the Graph scope and the RBAC action `ViewReports`. A Global or Intune
/// Administrator (`wids`) has both, as in Intune, with no role assignment.
async fn require_view_reports(state: &AppState, caller: &Caller) -> Result<(), ApiError> {
    caller.require_any(SCOPES)?;
    if caller.0.is_intune_admin() {
        return Ok(());
    }
    let tenant = &caller.0.tenant_id;
    let user = facts::ensure_user(&state.store, &caller.0).await?;
    let me = facts::helper_signed_in(
        &state.store,
        &caller.0,
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

/// The columns `search` looks in.
const SEARCHED: [&str; 7] = [
    "helperEmail",
    "sharerEmail",
    "sharerDeviceName",
    "helperFirstName",
    "helperLastName",
    "sharerFirstName",
    "sharerLastName",
];

/// Whether a report row holds `term` (already lower-case ASCII) in a searched column,
/// ignoring ASCII case.
fn search_matches(r: &Value, term: &str) -> bool {
    SEARCHED.iter().any(|k| {
        r[k].as_str()
            .is_some_and(|v| v.to_ascii_lowercase().contains(term))
    })
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
    // Checked in the order the report always checked them (the last key first).
    let mut order = Vec::with_capacity(req.order_by.len());
    for spec in req.order_by.iter().rev() {
        let mut parts = spec.split_whitespace();
        let col = parts.next().unwrap_or_default().to_owned();
        let descending = match parts.next().map(str::to_ascii_lowercase).as_deref() {
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
        order.push(SessionOrder {
            column: col,
            descending,
        });
    }
    order.reverse();
    let search = req
        .search
        .as_deref()
        .map(str::to_ascii_lowercase)
        .filter(|t| !t.is_empty());
    let top = req.top.unwrap_or(50).clamp(1, 1000);
    let skip = req.skip.unwrap_or(0);
    let tenant = &caller.0.tenant_id;
    // At most one page of rows in memory: ordering, offset and limit run in the database; a
    // filter or search it cannot evaluate reads the rows one at a time in order, keeping the
    // page's and counting the rest.
    let (total, rows): (u64, Vec<Value>) = if filter.is_none() && search.is_none() {
        let total = state.store.session_count(tenant).await?;
        let page = state
            .store
            .sessions_page(tenant, &order, skip as u64, top as u64)
            .await?;
        (total, page.iter().map(row).collect())
    } else {
        let mut total: u64 = 0;
        let mut page = Vec::new();
        state
            .store
            .for_each_session(tenant, &order, &mut |s| {
                let r = row(&s);
                let keep = filter.as_ref().is_none_or(|f| f.matches(&r))
                    && search.as_deref().is_none_or(|t| search_matches(&r, t));
                if keep {
                    if total >= skip as u64 && page.len() < top {
                        page.push(r);
                    }
                    total += 1;
                }
                true
            })
            .await?;
        (total, page)
    };
    let values: Vec<Value> = rows
        .iter()
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
    // One pass over the sessions' times (no report bodies), one row at a time.
    let (mut active, mut in_period, mut length_sum, mut lengths) = (0u64, 0u64, 0.0f64, 0u64);
    state
        .store
        .for_each_session_brief(&caller.0.tenant_id, &mut |r| {
            if r.state == "active" {
                active += 1;
            }
            let Ok(start) = time::OffsetDateTime::parse(&r.start_time, &Rfc3339) else {
                return;
            };
            if !(from.is_none_or(|f| start >= f) && to.is_none_or(|t| start < t)) {
                return;
            }
            in_period += 1;
            let end = r
                .end_time
                .as_deref()
                .and_then(|e| time::OffsetDateTime::parse(e, &Rfc3339).ok());
            if let Some(end) = end {
                length_sum += (end - start).as_seconds_f64();
                lengths += 1;
            }
        })
        .await?;
    // Sessions asked for but not active yet (a code out, a launch ringing, consent pending),
    // from the broker's live directory.
    let waiting = match state.signal.as_ref() {
        Some(hub) => hub
            .live_state()
            .tenant_sessions(&caller.0.tenant_id)
            .await
            .map_err(|e| {
                tracing::error!(error = %e, "reading the live session directory failed");
                GraphError::internal("The live session directory could not be read.")
            })?
            .iter()
            .filter(|(_, s)| s.stage != assist_session::LiveStage::Active)
            .count(),
        None => 0,
    };
    let average = if lengths == 0 {
        0.0
    } else {
        length_sum / lengths as f64
    };
    Ok(json_response(
        StatusCode::OK,
        json!({"activeSessions": active, "waitingSessions": waiting, "totalSessions": in_period, "averageSessionSeconds": average, "from": from.map(format_bound), "to": to.map(format_bound)}),
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

/// The modes a day's count is split by, in the order the answer lists them.
pub const MODES: [&str; 4] = ["viewOnly", "fullControl", "elevation", "unattended"];

/// The longest period `sessionsPerDay` answers, in days.
pub const MAX_DAYS: i64 = 366;

/// Sessions started on each UTC day of `[from, to)`, by mode: one entry per day, days with
/// no session included (zeros), oldest first. `starts` are (start time RFC 3339, mode); a
/// start outside the period or unparsable is skipped, an unknown mode counts in `total` only.
pub fn sessions_per_day(
    starts: &[(&str, &str)],
    from: time::OffsetDateTime,
    to: time::OffsetDateTime,
) -> Vec<Value> {
    let mut days = DayCounts::new(from, to);
    for (start, mode) in starts {
        days.add(start, mode);
    }
    days.finish()
}

/// [`sessions_per_day`] one session at a time: memory for the days of the period only.
pub struct DayCounts {
    from: time::OffsetDateTime,
    to: time::OffsetDateTime,
    first: time::Date,
    days: Vec<(time::Date, [u64; 4], u64)>,
}

impl DayCounts {
    /// Every UTC day of `[from, to)`, at zero.
    pub fn new(from: time::OffsetDateTime, to: time::OffsetDateTime) -> Self {
        let (from, to) = (
            from.to_offset(time::UtcOffset::UTC),
            to.to_offset(time::UtcOffset::UTC),
        );
        let first = from.date();
        let mut days: Vec<(time::Date, [u64; 4], u64)> = Vec::new();
        let mut d = first;
        // The last day is the one holding the last instant before `to`.
        let last = (to - time::Duration::nanoseconds(1)).date();
        while d <= last {
            days.push((d, [0; 4], 0));
            match d.next_day() {
                Some(n) => d = n,
                None => break,
            }
        }
        Self {
            from,
            to,
            first,
            days,
        }
    }

    /// Counts a session started at `start` (RFC 3339) in `mode`.
    pub fn add(&mut self, start: &str, mode: &str) {
        let Ok(t) = time::OffsetDateTime::parse(start, &Rfc3339) else {
            return;
        };
        if t < self.from || t >= self.to {
            return;
        }
        let day = t.to_offset(time::UtcOffset::UTC).date();
        let i = (day - self.first).whole_days();
        let Some(entry) = usize::try_from(i).ok().and_then(|i| self.days.get_mut(i)) else {
            return;
        };
        if let Some(m) = MODES.iter().position(|m| *m == mode) {
            entry.1[m] += 1;
        }
        entry.2 += 1;
    }

    /// One entry per day, oldest first.
    pub fn finish(self) -> Vec<Value> {
        self.days
            .into_iter()
            .map(|(day, by_mode, total)| {
                let mut m = Map::new();
                m.insert("date".into(), Value::String(day.to_string()));
                for (name, n) in MODES.iter().zip(by_mode) {
                    m.insert((*name).into(), json!(n));
                }
                m.insert("total".into(), json!(total));
                Value::Object(m)
            })
            .collect()
    }
}

/// `GET /assist/v1/reports/sessionsPerDay?from=&to=` (Assist extension): the Monitor tab's
/// chart, sessions started on each UTC day of `[from, to)` by mode. Both bounds are required
/// (RFC 3339), `from < to`, at most [`MAX_DAYS`] days apart.
pub async fn per_day(
    State(state): State<AppState>,
    caller: Caller,
    RawQuery(query): RawQuery,
) -> Result<Response, ApiError> {
    require_view_reports(&state, &caller).await?;
    let fmt = &time::format_description::well_known::Rfc3339;
    let (mut from, mut to) = (None, None);
    for pair in query
        .as_deref()
        .unwrap_or("")
        .split('&')
        .filter(|p| !p.is_empty())
    {
        let (slot, name, v) = match pair.split_once('=') {
            Some(("from", v)) => (&mut from, "from", v),
            Some(("to", v)) => (&mut to, "to", v),
            _ => {
                return Err(GraphError::bad_request(format!(
                    "unknown parameter '{pair}' (from, to)"
                ))
                .into())
            }
        };
        if slot.is_some() {
            return Err(GraphError::bad_request(format!("'{name}' is given twice")).into());
        }
        let v = assist_graph::odata::percent_decode(v)?;
        let t = time::OffsetDateTime::parse(&v, fmt).map_err(|_| {
            GraphError::bad_request(format!("'{name}' must be an RFC 3339 time, got '{v}'"))
        })?;
        *slot = Some(t);
    }
    let (Some(from), Some(to)) = (from, to) else {
        return Err(GraphError::bad_request("both 'from' and 'to' are required").into());
    };
    if from >= to || (to - from).whole_days() > MAX_DAYS {
        return Err(GraphError::bad_request(format!(
            "'from' must be before 'to', at most {MAX_DAYS} days apart"
        ))
        .into());
    }
    let mut days = DayCounts::new(from, to);
    state
        .store
        .for_each_session_brief(&caller.0.tenant_id, &mut |r| {
            days.add(&r.start_time, &r.mode)
        })
        .await?;
    let value = days.finish();
    Ok(json_response(
        StatusCode::OK,
        json!({"from": from.format(fmt).unwrap_or_default(), "to": to.format(fmt).unwrap_or_default(), "value": value}),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &str) -> time::OffsetDateTime {
        time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339).unwrap()
    }

    #[test]
    fn per_day_counts_each_utc_day_by_mode_with_empty_days() {
        let starts = [
            ("2026-11-29T23:59:59Z", "viewOnly"),
            ("2026-11-30T00:00:00Z", "fullControl"),
            ("2026-11-30T10:00:00+02:00", "fullControl"),
            ("2026-12-01T23:30:00-01:00", "elevation"), // 2026-12-02 00:30 UTC
            ("2026-12-02T00:00:00Z", "strange"),
            ("2026-12-03T00:00:00Z", "unattended"), // at `to`: outside
            ("2026-11-28T12:00:00Z", "viewOnly"),   // before `from`
            ("not a time", "viewOnly"),
        ];
        let days = sessions_per_day(
            &starts,
            t("2026-11-29T00:00:00Z"),
            t("2026-12-03T00:00:00Z"),
        );
        let got: Vec<(String, [u64; 5])> = days
            .iter()
            .map(|d| {
                (
                    d["date"].as_str().unwrap().to_owned(),
                    [
                        d["viewOnly"].as_u64().unwrap(),
                        d["fullControl"].as_u64().unwrap(),
                        d["elevation"].as_u64().unwrap(),
                        d["unattended"].as_u64().unwrap(),
                        d["total"].as_u64().unwrap(),
                    ],
                )
            })
            .collect();
        assert_eq!(
            got,
            vec![
                ("2026-11-29".into(), [1, 0, 0, 0, 1]),
                ("2026-11-30".into(), [0, 2, 0, 0, 2]),
                ("2026-12-01".into(), [0, 0, 0, 0, 0]),
                ("2026-12-02".into(), [0, 0, 1, 0, 2]),
            ]
        );
    }

    #[test]
    fn per_day_of_a_partial_day_is_that_one_day() {
        let days = sessions_per_day(&[], t("2026-12-01T08:00:00Z"), t("2026-12-01T09:00:00Z"));
        assert_eq!(days.len(), 1);
        assert_eq!(days[0]["date"], "2026-12-01");
        assert_eq!(days[0]["total"], 0);
    }
}
