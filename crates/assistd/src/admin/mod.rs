//! The Graph-compatible admin API (`/beta/...`) and Assist's own admin extensions
//! (`/assist/v1/...`): routes and handlers. Handlers check permissions here, validate with
//! `assist-graph`, decide with `assist-policy`, and persist through `assist-store`.

pub mod audit;
pub mod directory;
pub mod policy;
pub mod reports;
pub mod settings;

use axum::body::Body;
use axum::extract::{Path, RawQuery, State};
use axum::http::HeaderMap;
use axum::routing::{delete, get, post};
use axum::Router;

use crate::api::Caller;
use crate::state::AppState;
use directory::Collection;

fn collection(router: Router<AppState>, c: &'static Collection) -> Router<AppState> {
    router
        .route(
            c.path,
            get(
                move |State(s): State<AppState>,
                      caller: Caller,
                      RawQuery(q): RawQuery,
                      headers: HeaderMap| directory::list(c, s, caller, q, headers),
            )
            .post(
                move |State(s): State<AppState>, caller: Caller, headers: HeaderMap, body: Body| {
                    directory::create(c, s, caller, headers, body)
                },
            ),
        )
        .route(
            &format!("{}/{{id}}", c.path),
            get(
                move |State(s): State<AppState>,
                      caller: Caller,
                      Path(id): Path<String>,
                      RawQuery(q): RawQuery| {
                    directory::get_one(c, s, caller, id, q)
                },
            )
            .patch(
                move |State(s): State<AppState>,
                      caller: Caller,
                      Path(id): Path<String>,
                      headers: HeaderMap,
                      body: Body| {
                    directory::patch(c, s, caller, id, headers, body)
                },
            )
            .delete(
                move |State(s): State<AppState>, caller: Caller, Path(id): Path<String>| {
                    directory::delete(c, s, caller, id)
                },
            ),
        )
}

/// The admin API's routes.
pub fn routes() -> Router<AppState> {
    let mut r = Router::new().route(
        "/beta/deviceManagement/remoteAssistanceSettings",
        get(settings::get_settings).patch(settings::patch_settings),
    );
    for c in [
        &directory::USERS,
        &directory::GROUPS,
        &directory::MANAGED_DEVICES,
        &directory::DOMAINS,
        &directory::ROLE_DEFINITIONS,
        &directory::ROLE_ASSIGNMENTS,
    ] {
        r = collection(r, c);
    }
    r.route("/beta/groups/{id}/members", get(directory::list_members))
        .route(
            "/beta/groups/{id}/members/$ref",
            post(directory::add_member),
        )
        .route(
            "/beta/groups/{id}/members/{member}/$ref",
            delete(directory::remove_member),
        )
        .route(audit::PATH, get(audit::list))
        .route(
            "/beta/deviceManagement/auditEvents/{id}",
            get(audit::get_one),
        )
        .route("/assist/v1/policy/evaluate", post(policy::evaluate))
        .route(
            "/beta/deviceManagement/reports/getRemoteAssistanceSessionsReport",
            post(reports::sessions_report),
        )
        .route("/assist/v1/reports/sessionSummary", get(reports::summary))
        .route("/assist/v1/reports/sessionsPerDay", get(reports::per_day))
        .route(
            "/beta/deviceManagement/managedDevices/{id}/requestRemoteAssistance",
            post(directory::request_remote_assistance),
        )
}
