//! What request handlers share: the store, the token validator, metrics and the readiness and
//! draining flags.

use assist_identity::TokenValidator;
use assist_store::Store;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use crate::metrics::HttpMetrics;

/// Shared handles; cheap to clone (everything is behind `Arc`s).
#[derive(Clone)]
pub struct AppState {
    /// Durable data.
    pub store: Store,
    /// Bearer token validation.
    pub validator: Arc<TokenValidator>,
    /// HTTP metrics.
    pub http_metrics: HttpMetrics,
    /// The metrics registry (rendered by `/metrics`).
    pub registry: prometheus::Registry,
    /// The relay on this node (absent on broker-only nodes).
    pub relay: Option<assist_relay::Relay>,
    /// The signalling service (absent on relay-only nodes).
    pub signal: Option<crate::signal::SignalHub>,
    /// The configured public base URL, for absolute links.
    pub public_url: Option<String>,
    /// False once shutdown begins (and `/readyz` answers 503).
    pub ready: Arc<AtomicBool>,
    /// True once the node drains (SIGTERM): no new sessions start here, `/readyz` answers 503
    /// `draining`, and running sessions have until the grace period ends. Readable by anyone
    /// who needs to know (the cluster's node registry).
    pub draining: Arc<AtomicBool>,
    /// Where pages and the CLI sign in, and the dev issuer's OIDC provider when it is on.
    pub sign_in: Arc<crate::sign_in::SignIn>,
}
