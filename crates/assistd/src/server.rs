//! Starting and stopping the server: prepares the data directory, opens the store, loads keys
//! and certificates, binds the listeners, and serves until told to stop; then stops accepting,
//! lets requests in flight finish within the grace period, and stops hard after it.

use anyhow::Context;
use assist_identity::jwks::RemoteLocation;
use assist_identity::{
    DevIssuer, JwksSource, RemoteJwks, TenantBinding, TokenValidator, TrustedIssuer,
};
use assist_store::Store;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use hyper_util::rt::TokioIo;
use hyper_util::service::TowerToHyperService;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::admission::{Admission, Caps, ConnectionMetrics};
use crate::config::{IssuerKeys, Settings};
use crate::health::HttpsProbe;
use crate::metrics::{self, HttpMetrics};
use crate::state::AppState;
use crate::{admin, api, tls};

/// The database file inside the data directory.
pub const DATABASE_FILE: &str = "assist.db";
/// How long a client may take to finish the TLS handshake.
const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// hyper's read buffer per connection, which bounds a request's header section: anything
/// larger gets hyper's own bare 431. It is well above [`api::MAX_HEADER_BYTES`], so every
/// header section a client can plausibly send reaches the Graph-shaped 431 of the router.
const MAX_BUF_BYTES: usize = 256 * 1024;
/// hyper's cap on the number of headers (beyond it, hyper's bare 431); the router answers a
/// Graph-shaped 431 above [`api::MAX_HEADERS`].
const HYPER_MAX_HEADERS: usize = 512;
/// The metrics listener's caps: it serves scrapers and probes, never the public.
const METRICS_CAPS: Caps = Caps {
    max_total: 128,
    max_per_address: 32,
};
/// File descriptors kept free of the HTTPS listener's cap: the metrics listener, the
/// database, the QUIC socket, key and log files.
const RESERVED_FDS: u64 = 256;

/// How long, once the grace period is over (or every session has ended), the server waits for
/// legs and connections to close before it stops hard. It fits the 5 s the deployment files
/// leave beyond `shutdown_grace_secs` (docs/deploy.md).
const CLOSE_WAIT: Duration = Duration::from_secs(4);
/// How often the drain checks whether every session has ended.
const DRAIN_POLL: Duration = Duration::from_millis(50);

/// A running server.
pub struct RunningServer {
    /// Where HTTPS is served.
    pub https_addr: SocketAddr,
    /// Where `/metrics`, `/healthz` and `/readyz` are served.
    pub metrics_addr: SocketAddr,
    /// Where QUIC relay legs connect (UDP); `None` on a broker-only node (no UDP socket).
    pub quic_addr: Option<SocketAddr>,
    /// The certificate clients should trust (the self-signed one, or the operator's).
    pub cert_path: std::path::PathBuf,
    /// What this node runs.
    pub role: crate::config::Role,
    /// The relay on this node; `None` on a broker-only node.
    pub relay: Option<assist_relay::Relay>,
    /// Mints and verifies relay tickets (the broker's side; tests mint with it directly).
    pub tickets: Arc<assist_relay::TicketAuthority>,
    /// Reports of ended relay sessions (the signalling service consumes them; always `None` here).
    pub relay_reports: Option<tokio::sync::mpsc::UnboundedReceiver<assist_relay::SessionReport>>,
    /// True from the moment the drain begins (SIGTERM, [`RunningServer::shutdown`]): `/readyz`
    /// answers 503 `draining`, no new relay or signalling sessions start. The same flag as
    /// [`AppState::draining`].
    pub draining: Arc<AtomicBool>,
    /// [`crate::keys::keys_fingerprint`] of the keys this node uses; `None` on a relay-only
    /// node (it loads only the relay-ticket key: compare [`assist_relay::TicketAuthority::key_id`]).
    pub keys_fingerprint: Option<String>,
    /// Cancelled to ask for the drain (`cancel_token`).
    stop: CancellationToken,
    /// Cancelled once the drain is over: listeners stop accepting, tasks end.
    cancel: CancellationToken,
    tracker: TaskTracker,
    ready: Arc<AtomicBool>,
    store: Option<Store>,
    signal: Option<crate::signal::SignalHub>,
    signal_metrics: Option<crate::signal::SignalMetrics>,
    /// Cluster mode's handles (told when the drain begins).
    cluster: Option<Arc<crate::signal::cluster::Cluster>>,
    grace: Duration,
    registry: prometheus::Registry,
}

impl RunningServer {
    /// The registry `/metrics` renders, for families made outside the server (the log writer's).
    pub fn registry(&self) -> &prometheus::Registry {
        &self.registry
    }

    /// A token that, when cancelled, starts the drain (what SIGTERM does); [`RunningServer::wait`]
    /// then drains and stops.
    pub fn cancel_token(&self) -> CancellationToken {
        self.stop.clone()
    }

    /// Waits until the server is told to stop ([`RunningServer::cancel_token`]), then drains
    /// and stops.
    pub async fn wait(self) {
        self.stop.cancelled().await;
        self.drain().await;
    }

    /// Stops the server the way SIGTERM does: drains (see [`RunningServer::drain`]), then stops.
    pub async fn shutdown(self) {
        self.stop.cancel();
        self.drain().await;
    }

    /// Sessions still open: the broker's (any state) and the relay's.
    fn open_sessions(&self) -> usize {
        let signal = self
            .signal_metrics
            .as_ref()
            .map_or(0, |m| usize::try_from(m.sessions()).unwrap_or(0));
        let relay = self.relay.as_ref().map_or(0, |r| r.active_sessions());
        signal + relay
    }

    /// The drain: marks the node draining (`/readyz` answers 503 `draining` at once), refuses
    /// new relay sessions (4011, or 503 `RelayDraining` before a WSS upgrade) and new signalling
    /// sessions (`unavailable`), and lets running sessions carry on for up to
    /// `shutdown_grace_secs`. When every session has ended, or the grace is over, what is left
    /// ends with `shuttingDown` (relay legs: `ended` and close 4011; signalling: `sessionEnded`),
    /// the listeners stop, connections get [`CLOSE_WAIT`] to close, and the store is closed.
    pub async fn drain(self) {
        let deadline = tokio::time::Instant::now() + self.grace;
        self.draining.store(true, Ordering::SeqCst);
        self.ready.store(false, Ordering::SeqCst);
        // Cluster mode: the registry says so at once, and the other nodes hear it.
        if let Some(c) = &self.cluster {
            c.draining_started();
        }
        if let Some(relay) = &self.relay {
            relay.drain();
        }
        if let Some(signal) = &self.signal {
            signal.drain().await;
        }
        tracing::info!(
            sessions = self.open_sessions(),
            grace_secs = self.grace.as_secs(),
            "draining: no new sessions; running ones have until the grace period ends"
        );
        loop {
            let open = self.open_sessions();
            if open == 0 {
                tracing::info!("drained: every session has ended");
                break;
            }
            let now = tokio::time::Instant::now();
            if now >= deadline {
                tracing::warn!(
                    sessions = open,
                    "grace period over; ending the remaining sessions (shuttingDown)"
                );
                break;
            }
            tokio::time::sleep(DRAIN_POLL.min(deadline - now)).await;
        }
        // Relay first, so its legs get 4011 (a broker end would give them 4000), then the
        // broker's `sessionEnded`, queued to the connections before they are closed.
        if let Some(relay) = &self.relay {
            relay.shutdown(Duration::ZERO).await;
        }
        if let Some(signal) = &self.signal {
            signal.shut_down().await;
        }
        self.stop_listening().await;
    }

    /// Stops at once without draining, as a second SIGTERM does (and, for the sessions, as a
    /// crash would): sessions are not ended, their records stay open until the next start
    /// closes them with `brokerRestart`. Connections get [`CLOSE_WAIT`] to close.
    pub async fn stop_now(self) {
        self.stop.cancel();
        self.draining.store(true, Ordering::SeqCst);
        self.ready.store(false, Ordering::SeqCst);
        if let Some(relay) = &self.relay {
            relay.shutdown(Duration::ZERO).await;
        }
        self.stop_listening().await;
    }

    /// The end of every stop: listeners stop, tasks get [`CLOSE_WAIT`], the store closes.
    async fn stop_listening(self) {
        self.cancel.cancel();
        self.tracker.close();
        let closed = tokio::time::timeout(CLOSE_WAIT, async {
            if let Some(relay) = &self.relay {
                relay.tracker().wait().await;
            }
            self.tracker.wait().await;
        })
        .await;
        if closed.is_err() {
            tracing::warn!(
                close_wait_secs = CLOSE_WAIT.as_secs(),
                "connections still open after the drain; stopping hard"
            );
        }
        if let Some(store) = &self.store {
            store.close().await;
        }
        tracing::info!("stopped");
    }
}

async fn build_validator(
    settings: &Settings,
    dev: Option<&DevIssuer>,
) -> anyhow::Result<TokenValidator> {
    let mut issuers = Vec::new();
    if let Some(dev) = dev {
        issuers.push(TrustedIssuer {
            issuer: assist_identity::dev_issuer::DEV_ISSUER.to_owned(),
            keys: JwksSource::Static(Arc::new(dev.jwks().clone())),
            // Whoever holds the key in the data directory may speak for any tenant: that is
            // what a development issuer is for (docs/security.md).
            tenants: TenantBinding::Any,
        });
    }
    let needs_http = settings
        .auth
        .issuers
        .iter()
        .any(|i| !matches!(i.keys, IssuerKeys::File(_)));
    let client = if needs_http {
        Some(jwks_client(settings)?)
    } else {
        None
    };
    for i in &settings.auth.issuers {
        let keys = match &i.keys {
            IssuerKeys::File(path) => {
                let text = std::fs::read_to_string(path)
                    .with_context(|| format!("reading JWKS file {}", path.display()))?;
                let set = serde_json::from_str(&text)
                    .with_context(|| format!("{} is not a JWKS", path.display()))?;
                JwksSource::Static(Arc::new(set))
            }
            IssuerKeys::Uri(uri) => remote(
                client.clone(),
                RemoteLocation::JwksUri(uri.clone()),
                settings,
            )?,
            IssuerKeys::Discovery => remote(
                client.clone(),
                RemoteLocation::Discovery(i.issuer.clone()),
                settings,
            )?,
        };
        issuers.push(TrustedIssuer {
            issuer: i.issuer.clone(),
            keys,
            tenants: i.tenants.clone(),
        });
    }
    Ok(TokenValidator::new(
        issuers,
        settings.auth.audiences.clone(),
        settings.auth.leeway_secs,
    ))
}

fn remote(
    client: Option<reqwest::Client>,
    location: RemoteLocation,
    settings: &Settings,
) -> anyhow::Result<JwksSource> {
    let client = client.context("HTTP client for JWKS")?;
    Ok(JwksSource::Remote(Arc::new(RemoteJwks::new(
        location,
        client,
        settings.auth.jwks_min_refresh,
        Duration::from_secs(3600),
    ))))
}

fn jwks_client(settings: &Settings) -> anyhow::Result<reqwest::Client> {
    let mut b = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .connect_timeout(Duration::from_secs(5))
        .redirect(reqwest::redirect::Policy::limited(3));
    if let Some(ca) = &settings.auth.ca_file {
        let pem =
            std::fs::read(ca).with_context(|| format!("reading auth.ca_file {}", ca.display()))?;
        for cert in reqwest::Certificate::from_pem_bundle(&pem)
            .with_context(|| format!("parsing {}", ca.display()))?
        {
            b = b.add_root_certificate(cert);
        }
    }
    b.build().context("building the JWKS HTTP client")
}

/// The HTTPS router: admin API plus Graph-shaped fallbacks, wrapped in the observe middleware.
pub fn router(state: AppState) -> Router {
    // Pages may fetch from an external sign-in provider: its origin joins their connect-src.
    let provider_origin = state
        .sign_in
        .external
        .as_ref()
        .and_then(|s| crate::web::origin_of(&s.issuer));
    admin::routes()
        .route("/v1/relay", get(crate::relay_ws::upgrade))
        .route("/v1/signal", get(crate::signal::endpoint::upgrade))
        .merge(crate::sign_in::routes(state.sign_in.dev.is_some()))
        .merge(crate::web::routes().layer(axum::middleware::map_response(
            move |resp: axum::response::Response| {
                let origin = provider_origin.clone();
                async move { crate::web::allow_connect_to(resp, origin.as_deref()) }
            },
        )))
        .fallback(api::not_found)
        .method_not_allowed_fallback(api::method_not_allowed)
        .layer(axum::middleware::from_fn_with_state(
            state.http_metrics.clone(),
            api::observe,
        ))
        .with_state(state)
}

/// The router of a relay-only node: `/v1/relay` and Graph-shaped 404s for everything else (no
/// admin API, pages, sign-in or signalling: this node has no database).
fn relay_router(relay: assist_relay::Relay, http_metrics: HttpMetrics) -> Router {
    Router::new()
        .route(
            "/v1/relay",
            get(move |req: axum::extract::Request| {
                crate::relay_ws::serve(Some(relay.clone()), req)
            }),
        )
        .fallback(api::not_found)
        .method_not_allowed_fallback(api::method_not_allowed)
        .layer(axum::middleware::from_fn_with_state(
            http_metrics,
            api::observe,
        ))
}

/// What the metrics listener's routes read.
#[derive(Clone)]
struct OpsState {
    registry: prometheus::Registry,
    ready: Arc<AtomicBool>,
    draining: Arc<AtomicBool>,
    /// `None` on a relay-only node (no database to check).
    store: Option<Store>,
}

/// How long the HTTPS self-probe of `/healthz` and `/readyz` may take.
const PROBE_DEADLINE: Duration = Duration::from_secs(3);

/// Probes the HTTPS listener; `Err` is the 503 answer, logged once per failed check.
async fn probe_https(probe: &HttpsProbe) -> Result<(), axum::response::Response> {
    probe.check(PROBE_DEADLINE).await.map_err(|e| {
        tracing::error!(error = %e, "health check: the HTTPS listener is not answering");
        (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("https listener not answering: {e}\n"),
        )
            .into_response()
    })
}

fn ops_router(state: OpsState, probe: HttpsProbe) -> Router {
    let health_probe = probe.clone();
    Router::new()
        .route(
            "/metrics",
            get(|State(s): State<OpsState>| async move { metrics::render(&s.registry) }),
        )
        .route(
            "/healthz",
            get(move || async move {
                match probe_https(&health_probe).await {
                    Ok(()) => (StatusCode::OK, "ok\n").into_response(),
                    Err(answer) => answer,
                }
            }),
        )
        .route(
            "/readyz",
            get(move |State(s): State<OpsState>| async move {
                if s.draining.load(Ordering::SeqCst) {
                    return (StatusCode::SERVICE_UNAVAILABLE, "draining\n").into_response();
                }
                if !s.ready.load(Ordering::SeqCst) {
                    return (StatusCode::SERVICE_UNAVAILABLE, "shutting down\n").into_response();
                }
                if let Err(answer) = probe_https(&probe).await {
                    return answer;
                }
                let Some(store) = &s.store else {
                    return (StatusCode::OK, "ready\n").into_response();
                };
                match store.ping().await {
                    Ok(()) => (StatusCode::OK, "ready\n").into_response(),
                    Err(e) => {
                        tracing::warn!(error = %e, "readiness check: store not answering");
                        (StatusCode::SERVICE_UNAVAILABLE, "store unavailable\n").into_response()
                    }
                }
            }),
        )
        .with_state(state)
}

/// What a broker-running node (`all`, `broker`) builds beside the relay.
struct BrokerParts {
    state: AppState,
    signal_metrics: crate::signal::SignalMetrics,
    keys_fingerprint: String,
    cluster: Option<Arc<crate::signal::cluster::Cluster>>,
}

/// Opens the store, loads the keys and issuers, and starts the signalling service.
#[allow(clippy::too_many_arguments)] // the handles the broker shares with the rest of start
async fn start_broker(
    settings: &Settings,
    registry: &prometheus::Registry,
    http_metrics: HttpMetrics,
    relay: Option<assist_relay::Relay>,
    report_rx: Option<tokio::sync::mpsc::UnboundedReceiver<assist_relay::SessionReport>>,
    tickets: &Arc<assist_relay::TicketAuthority>,
    endpoint: crate::signal::RelayEndpoint,
    flags: (Arc<AtomicBool>, Arc<AtomicBool>),
    cancel: &CancellationToken,
    tracker: &TaskTracker,
) -> anyhow::Result<BrokerParts> {
    // A failure to connect names the URL with its password redacted (StoreError::Open).
    let store = Store::open(&settings.store)
        .await
        .context("opening the store")?;
    tracing::info!(store = %settings.store, "store open");
    // Recovery: sessions left open by a previous process are closed at their last known time.
    // Not in cluster mode: the database is shared, and the other nodes' sessions are running;
    // a dead node's sessions are closed by a survivor (signal::cluster).
    let recovered = if settings.cluster.is_none() {
        store.close_open_sessions("brokerRestart").await?
    } else {
        0
    };
    if recovered > 0 {
        tracing::warn!(
            sessions = recovered,
            "closed sessions left open by the previous run (brokerRestart)"
        );
    }
    if settings.auth.dev_issuer && !settings.auth.issuers.is_empty() {
        tracing::warn!(
            issuers = settings.auth.issuers.len(),
            "the development token issuer is trusted beside a real issuer: anyone who can read \
             the dev-issuer key can mint tokens for any tenant; set auth.dev_issuer = false \
             (ASSIST_AUTH_DEV_ISSUER=false) in production"
        );
    }
    let dev = if settings.auth.dev_issuer {
        Some(Arc::new(crate::keys::dev_issuer(settings)?))
    } else {
        None
    };
    let code_key = crate::keys::code_key(settings)?;
    let keys_fingerprint = crate::keys::keys_fingerprint(
        tickets.key_id(),
        &code_key,
        dev.as_deref().map(DevIssuer::kid),
    );
    let validator = build_validator(settings, dev.as_deref()).await?;
    let sign_in = Arc::new(crate::sign_in::SignIn {
        external: settings.auth.sign_in.clone(),
        dev: dev.map(|key| {
            crate::sign_in::DevOidc::new(
                key,
                settings
                    .auth
                    .audiences
                    .first()
                    .cloned()
                    .unwrap_or_else(|| crate::config::DEFAULT_AUDIENCE.to_owned()),
                settings.auth.dev_token_ttl,
            )
        }),
        public_url: settings.public_url.clone(),
    });
    let (ready, draining) = flags;
    // Cluster mode (docs/architecture.md, "Cluster mode"): live state, registry and bus in Redis.
    // Joining checks this node's keys against the cluster's first (a difference refuses the start).
    let cluster_start = match &settings.cluster {
        Some(c) => Some(
            crate::signal::cluster::Cluster::join(
                c,
                draining.clone(),
                tickets.key_id(),
                Some(&keys_fingerprint),
                tracker,
            )
            .await?,
        ),
        None => None,
    };
    let cluster = cluster_start.as_ref().map(|c| c.cluster.clone());
    let signal_metrics = crate::signal::SignalMetrics::register(registry)?;
    let signal = crate::signal::SignalHub::start(
        signal_metrics.clone(),
        settings.signal.clone(),
        store.clone(),
        relay.clone(),
        tickets.clone(),
        endpoint,
        code_key,
        report_rx,
        cluster_start,
        cancel.clone(),
        tracker,
    )?;
    tracker.spawn(crate::retention::run(
        store.clone(),
        settings.retention_days,
        Duration::from_secs(3600),
        cancel.clone(),
    ));
    let state = AppState {
        store,
        validator: Arc::new(validator),
        http_metrics,
        registry: registry.clone(),
        relay,
        signal: Some(signal),
        public_url: settings.public_url.clone(),
        ready,
        draining,
        sign_in,
    };
    Ok(BrokerParts {
        state,
        signal_metrics,
        keys_fingerprint,
        cluster,
    })
}

/// Starts the server with `settings` and returns once every listener is bound. What runs
/// follows `settings.role`: `all` everything; `broker` all but the relay (no QUIC socket,
/// `/v1/relay` answers 404); `relay` only the relay and the metrics listener, with no database
/// (and only the relay-ticket key).
pub async fn start(settings: Settings) -> anyhow::Result<RunningServer> {
    let role = settings.role;
    let open_files = crate::admission::raise_open_files_limit();
    std::fs::create_dir_all(&settings.data_dir)
        .with_context(|| format!("creating data directory {}", settings.data_dir.display()))?;
    let (cert_path, key_path) = tls::ensure_files(&settings.tls, &settings.data_dir)?;
    let acceptor = TlsAcceptor::from(tls::server_config(&cert_path, &key_path)?);
    let tickets = Arc::new(crate::keys::ticket_authority(&settings)?);

    let registry = metrics::new_registry()?;
    let http_metrics = HttpMetrics::register(&registry)?;
    let connection_metrics = ConnectionMetrics::register(&registry)?;
    let https_caps = https_caps(&settings, open_files.soft);
    let https_admission = Admission::new("https", https_caps, connection_metrics.clone());
    let ops_admission = Admission::new("metrics", METRICS_CAPS, connection_metrics);
    let https = TcpListener::bind(settings.listen)
        .await
        .with_context(|| format!("binding HTTPS listener on {}", settings.listen))?;
    let ops = TcpListener::bind(settings.metrics_listen)
        .await
        .with_context(|| format!("binding metrics listener on {}", settings.metrics_listen))?;
    let (certs, key) = tls::load_pem(&cert_path, &key_path)?;
    let certs_for_probe = certs.clone();
    // A broker-only node binds no UDP socket.
    let quic = if role.runs_relay() {
        Some(
            assist_relay::quic::server_endpoint(settings.quic_listen, certs, key).with_context(
                || format!("binding QUIC endpoint on {} (UDP)", settings.quic_listen),
            )?,
        )
    } else {
        None
    };
    let quic_addr = quic.as_ref().map(|q| q.local_addr()).transpose()?;
    let https_addr = https.local_addr()?;
    let metrics_addr = ops.local_addr()?;

    let cancel = CancellationToken::new();
    let tracker = TaskTracker::new();
    let advertised = |a: SocketAddr| {
        if a.ip().is_loopback() {
            format!("localhost:{}", a.port())
        } else {
            a.to_string()
        }
    };
    let ready = Arc::new(AtomicBool::new(true));
    let draining = Arc::new(AtomicBool::new(false));
    let (relay, report_rx) = if role.runs_relay() {
        let relay_metrics = assist_relay::metrics::RelayMetrics::register(&registry)?;
        // The relay's identity is its public address or, without one, this listener as advertised.
        let mut relay_config = settings.relay.clone();
        relay_config.listen_addr = Some(advertised(https_addr));
        // Session reports go to the signalling service, when it runs here, or (a relay-only
        // node in cluster mode) to the sessions' owners.
        let (report_tx, report_rx) = if role.runs_broker() || settings.cluster.is_some() {
            let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
            (Some(tx), Some(rx))
        } else {
            (None, None)
        };
        let relay =
            assist_relay::Relay::new(relay_config, tickets.clone(), relay_metrics, report_tx);
        relay
            .identity()
            .publish(&settings.data_dir)
            .context("writing the relay identity to the data directory")?;
        (Some(relay), report_rx)
    } else {
        (None, None)
    };
    let endpoint = crate::signal::RelayEndpoint {
        address: settings.relay_wss_public(advertised(https_addr)),
        // Unused without a local relay (tickets then name another node's relay).
        quic_addr: quic_addr
            .map(|q| settings.relay_quic_public(advertised(q), q.port()))
            .unwrap_or_default(),
    };
    // A relay-only node in cluster mode joins the registry and the bus (relay_node.rs).
    let (relay_cluster, report_rx) = match (&settings.cluster, &relay, role.runs_broker()) {
        (Some(c), Some(relay), false) => {
            let advert = crate::signal::cluster::Advert {
                identity: relay.identity().clone(),
                address: endpoint.address.clone(),
                quic_addr: endpoint.quic_addr.clone(),
            };
            let reports = report_rx.context("the relay's reports")?;
            let joined = crate::relay_node::start(
                c,
                relay.clone(),
                tickets.key_id(),
                advert,
                reports,
                draining.clone(),
                &cancel,
                &tracker,
            )
            .await?;
            (Some(joined), None)
        }
        _ => (None, report_rx),
    };
    let broker = if role.runs_broker() {
        Some(
            start_broker(
                &settings,
                &registry,
                http_metrics.clone(),
                relay.clone(),
                report_rx,
                &tickets,
                endpoint,
                (ready.clone(), draining.clone()),
                &cancel,
                &tracker,
            )
            .await?,
        )
    } else {
        None
    };
    let app = match (&broker, &relay) {
        (Some(b), _) => router(b.state.clone()),
        (None, Some(relay)) => relay_router(relay.clone(), http_metrics),
        (None, None) => anyhow::bail!("role {} runs nothing", role.as_str()),
    };

    tracker.spawn(serve_http(
        https,
        Some(acceptor),
        app,
        https_admission,
        settings.limits.header_read_timeout,
        cancel.clone(),
        tracker.clone(),
    ));
    // The metrics listener gets the same header-read (and keep-alive idle) timeout and caps of
    // its own: a half-sent request must not hold one of its connections forever.
    let probe = HttpsProbe::new(
        https_addr,
        certs_for_probe
            .first()
            .cloned()
            .context("the TLS certificate file holds no certificate")?,
    )
    .context("building the HTTPS self-probe")?;
    let store = broker.as_ref().map(|b| b.state.store.clone());
    let ops_state = OpsState {
        registry: registry.clone(),
        ready: ready.clone(),
        draining: draining.clone(),
        store: store.clone(),
    };
    tracker.spawn(serve_http(
        ops,
        None,
        ops_router(ops_state, probe),
        ops_admission,
        settings.limits.header_read_timeout,
        cancel.clone(),
        tracker.clone(),
    ));
    if let (Some(quic), Some(relay)) = (quic, &relay) {
        tracker.spawn(assist_relay::quic::serve(
            quic,
            relay.clone(),
            cancel.clone(),
        ));
    }
    let serves = match role {
        crate::config::Role::All => {
            "signalling, admin API, pages and relay (WSS /v1/relay and QUIC)"
        }
        crate::config::Role::Broker => {
            "signalling, admin API and pages; no relay (/v1/relay answers 404, no QUIC socket)"
        }
        crate::config::Role::Relay => {
            "the relay only (WSS /v1/relay and QUIC); no database, admin API, pages or signalling"
        }
    };
    tracing::info!(
        role = role.as_str(),
        serves,
        https = %https_addr,
        quic = %quic_addr.map(|a| a.to_string()).unwrap_or_else(|| "none".into()),
        metrics = %metrics_addr,
        data_dir = %settings.data_dir.display(),
        dev_issuer = settings.auth.dev_issuer && role.runs_broker(),
        max_connections = https_caps.max_total,
        max_connections_per_address = https_caps.max_per_address,
        "assistd listening"
    );
    Ok(RunningServer {
        https_addr,
        metrics_addr,
        quic_addr,
        cert_path,
        role,
        relay,
        tickets,
        relay_reports: None,
        draining,
        keys_fingerprint: broker.as_ref().map(|b| b.keys_fingerprint.clone()),
        stop: CancellationToken::new(),
        cancel,
        tracker,
        ready,
        store,
        registry,
        signal: broker.as_ref().and_then(|b| b.state.signal.clone()),
        cluster: relay_cluster.or_else(|| broker.as_ref().and_then(|b| b.cluster.clone())),
        signal_metrics: broker.map(|b| b.signal_metrics),
        grace: settings.shutdown_grace,
    })
}

/// The HTTPS listener's caps: the configured ones, the total lowered to fit the open-files
/// soft limit (less what the rest of the process needs), so `accept` itself never fails.
fn https_caps(settings: &Settings, open_files: Option<u64>) -> Caps {
    let configured = settings.limits.max_connections;
    let max_total = match open_files {
        Some(soft) => {
            let budget = soft
                .saturating_sub(RESERVED_FDS + METRICS_CAPS.max_total as u64)
                .max(16);
            let budget = usize::try_from(budget).unwrap_or(usize::MAX);
            if budget < configured {
                tracing::warn!(
                    configured,
                    open_files_limit = soft,
                    lowered_to = budget,
                    "limits.max_connections does not fit the open-files limit; lowered"
                );
            }
            configured.min(budget)
        }
        None => configured,
    };
    Caps {
        max_total,
        max_per_address: settings.limits.max_connections_per_address.min(max_total),
    }
}

/// Accepts connections on `listener` (TLS when `tls` is given) and serves `app` on each, within
/// `admission`'s caps and with `header_read_timeout` on every request's headers and on idle
/// keep-alive connections.
async fn serve_http(
    listener: TcpListener,
    tls: Option<TlsAcceptor>,
    app: Router,
    admission: Arc<Admission>,
    header_read_timeout: Duration,
    cancel: CancellationToken,
    tracker: TaskTracker,
) {
    loop {
        let (tcp, peer) = tokio::select! {
            _ = cancel.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // EMFILE and friends: back off briefly rather than spin.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let permit = match admission.admit(peer.ip()) {
            Ok(p) => p,
            Err(reason) => {
                tracing::debug!(%peer, reason = reason.label(), "connection refused: cap reached");
                drop(tcp);
                continue;
            }
        };
        let _ = tcp.set_nodelay(true);
        let service = TowerToHyperService::new(app.clone());
        let conn_cancel = cancel.clone();
        let tls = tls.clone();
        tracker.spawn(async move {
            let _permit = permit;
            match tls {
                None => serve_connection(TokioIo::new(tcp), service, header_read_timeout, peer, conn_cancel).await,
                Some(acceptor) => {
                    let stream = tokio::select! {
                        _ = conn_cancel.cancelled() => return,
                        r = tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, acceptor.accept(assist_relay::tls::Tracked::new(tcp))) => match r {
                            Ok(Ok(stream)) => stream,
                            Ok(Err(e)) => {
                                tracing::debug!(%peer, error = %e, "TLS handshake failed");
                                return;
                            }
                            Err(_) => {
                                tracing::debug!(%peer, "TLS handshake timed out");
                                return;
                            }
                        },
                    };
                    serve_connection(TokioIo::new(stream), service, header_read_timeout, peer, conn_cancel).await
                }
            }
        });
    }
    drop(listener);
}

async fn serve_connection<I>(
    io: I,
    service: TowerToHyperService<Router>,
    header_read_timeout: Duration,
    peer: SocketAddr,
    cancel: CancellationToken,
) where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(header_read_timeout)
        .max_headers(HYPER_MAX_HEADERS)
        .max_buf_size(MAX_BUF_BYTES);
    let conn = builder.serve_connection(io, service).with_upgrades();
    tokio::pin!(conn);
    let result = tokio::select! {
        r = conn.as_mut() => r,
        _ = cancel.cancelled() => {
            // Finish the request in flight, then close; the grace period bounds this.
            conn.as_mut().graceful_shutdown();
            conn.as_mut().await
        }
    };
    if let Err(e) = result {
        tracing::debug!(%peer, error = %e, "connection ended with an error");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_https_cap_fits_the_open_files_limit() {
        let mut settings = Settings::ephemeral(std::path::Path::new("/nonexistent"));
        settings.limits.max_connections = 10_000;
        settings.limits.max_connections_per_address = 2_000;
        let caps = https_caps(&settings, Some(1024));
        // 1024 less the reserve and the metrics listener's own cap.
        assert_eq!(caps.max_total, 1024 - 256 - 128);
        assert_eq!(caps.max_per_address, caps.max_total);
        let caps = https_caps(&settings, Some(1_000_000));
        assert_eq!((caps.max_total, caps.max_per_address), (10_000, 2_000));
        assert_eq!(https_caps(&settings, None).max_total, 10_000);
        // A tiny limit still leaves a usable listener.
        assert_eq!(https_caps(&settings, Some(10)).max_total, 16);
    }
}
