//! The Graph-compatible admin API (`/beta/...`): routes and handlers. Handlers parse and check
//! permissions here, validate with `assist-graph`, and persist through `assist-store`.

pub mod settings;

use axum::routing::get;
use axum::Router;

use crate::state::AppState;

/// The admin API's routes.
pub fn routes() -> Router<AppState> {
    Router::new().route(
        "/beta/deviceManagement/remoteAssistanceSettings",
        get(settings::get_settings).patch(settings::patch_settings),
    )
}
