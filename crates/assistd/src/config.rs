//! Configuration: defaults, then an optional TOML file, then `ASSIST_*` environment variables,
//! then command-line flags (later wins). Everything is validated into typed [`Settings`] before
//! any port is bound; a bad value is one line naming the setting, where it came from and why.

use serde::Deserialize;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Default data directory.
pub const DEFAULT_DATA_DIR: &str = "./assist-data";
/// Default HTTPS listen address (admin API, signalling and relay over WSS).
pub const DEFAULT_LISTEN: &str = "127.0.0.1:8443";
/// Default QUIC (UDP) listen address.
pub const DEFAULT_QUIC_LISTEN: &str = "127.0.0.1:8443";
/// Default metrics and health listen address (plain HTTP).
pub const DEFAULT_METRICS_LISTEN: &str = "127.0.0.1:9090";
/// Default token audience.
pub const DEFAULT_AUDIENCE: &str = "api://assist";

/// One setting as `assistd serve --help` lists it.
#[derive(Debug, Clone, Copy)]
pub struct SettingDoc {
    /// The TOML key, with its table (`relay.max_sessions`).
    pub key: &'static str,
    /// The environment variable that sets it, if any (a flag of the same name exists for the
    /// ones `serve --help` lists as options).
    pub env: Option<&'static str>,
    /// The default, as a person would write it.
    pub default: &'static str,
    /// What it does.
    pub what: &'static str,
}

const fn doc(
    key: &'static str,
    env: Option<&'static str>,
    default: &'static str,
    what: &'static str,
) -> SettingDoc {
    SettingDoc {
        key,
        env,
        default,
        what,
    }
}

/// Every setting of the TOML file (a unit test checks this against [`FileConfig`]'s keys), in
/// the order `assistd serve --help` prints them.
pub const SETTINGS_DOC: &[SettingDoc] = &[
    doc(
        "data_dir",
        Some("ASSIST_DATA_DIR"),
        DEFAULT_DATA_DIR,
        "database, TLS certificate, keys",
    ),
    doc(
        "listen",
        Some("ASSIST_LISTEN"),
        DEFAULT_LISTEN,
        "HTTPS: admin API, pages, WSS signalling and relay",
    ),
    doc(
        "quic_listen",
        Some("ASSIST_QUIC_LISTEN"),
        DEFAULT_QUIC_LISTEN,
        "UDP: the relay over QUIC",
    ),
    doc(
        "metrics_listen",
        Some("ASSIST_METRICS_LISTEN"),
        DEFAULT_METRICS_LISTEN,
        "plain HTTP: /metrics, /healthz, /readyz",
    ),
    doc(
        "public_url",
        Some("ASSIST_PUBLIC_URL"),
        "(from the Host header)",
        "public base URL for absolute links",
    ),
    doc(
        "log",
        Some("ASSIST_LOG"),
        "info",
        "log filter: a level, or target=level,...",
    ),
    doc(
        "shutdown_grace_secs",
        Some("ASSIST_SHUTDOWN_GRACE_SECS"),
        "10",
        "drain time on SIGTERM (at most 3600)",
    ),
    doc(
        "retention_days",
        None,
        "30",
        "days session records and audit events are kept (1-3650)",
    ),
    doc(
        "store.url",
        Some("ASSIST_STORE_URL"),
        "sqlite://<data_dir>/assist.db",
        "the database: sqlite:///path/assist.db, or postgres://user:password@host:port/db \
         shared by a cluster's nodes",
    ),
    doc(
        "role",
        Some("ASSIST_ROLE"),
        "all",
        "what this node runs: all, broker (signalling and admin API) or relay",
    ),
    doc(
        "cluster.redis_url",
        Some("ASSIST_CLUSTER_REDIS_URL"),
        "(unset: embedded)",
        "redis://host:port/db shared by a cluster's nodes; set, the node runs in cluster mode",
    ),
    doc(
        "cluster.node_id",
        Some("ASSIST_CLUSTER_NODE_ID"),
        "(the host name)",
        "this node's name in the cluster (letters, digits, '-', '_', '.'; at most 64)",
    ),
    doc(
        "cluster.heartbeat_secs",
        None,
        "2",
        "seconds between registry heartbeats; a node is dead after 3 missed (1-60)",
    ),
    doc(
        "keys.relay_ticket_file",
        Some("ASSIST_KEYS_RELAY_TICKET_FILE"),
        "(<data_dir>/relay-ticket-key.pem)",
        "the relay-ticket key every node of a cluster shares",
    ),
    doc(
        "keys.signal_code_file",
        Some("ASSIST_KEYS_SIGNAL_CODE_FILE"),
        "(<data_dir>/signal-code-key)",
        "the security-code key every node of a cluster shares",
    ),
    doc(
        "keys.dev_issuer_file",
        Some("ASSIST_KEYS_DEV_ISSUER_FILE"),
        "(<data_dir>/dev-issuer-key.pem)",
        "the dev issuer's signing key every node of a cluster shares",
    ),
    doc(
        "tls.cert_file",
        Some("ASSIST_TLS_CERT_FILE"),
        "(self-signed for localhost)",
        "PEM certificate chain",
    ),
    doc(
        "tls.key_file",
        Some("ASSIST_TLS_KEY_FILE"),
        "(self-signed for localhost)",
        "PEM private key",
    ),
    doc(
        "auth.audiences",
        Some("ASSIST_AUTH_AUDIENCES"),
        DEFAULT_AUDIENCE,
        "accepted token audiences (env: comma-separated)",
    ),
    doc(
        "auth.leeway_secs",
        None,
        "60",
        "clock skew allowed on exp/nbf (at most 600)",
    ),
    doc(
        "auth.dev_issuer",
        Some("ASSIST_AUTH_DEV_ISSUER"),
        "true when no other issuer",
        "trust the local development issuer",
    ),
    doc(
        "auth.ca_file",
        None,
        "(system roots only)",
        "extra PEM roots for fetching JWKS and discovery",
    ),
    doc(
        "auth.jwks_min_refresh_secs",
        None,
        "30",
        "least time between refetches on an unknown key id",
    ),
    doc(
        "auth.dev_token_ttl_secs",
        None,
        "3600",
        "lifetime of the dev provider's access tokens (10-86400)",
    ),
    doc(
        "auth.issuers",
        Some("ASSIST_AUTH_OIDC_ISSUER"),
        "(none)",
        "[[auth.issuers]] tables; the env adds one by discovery",
    ),
    doc(
        "auth.issuers.issuer",
        None,
        "(required)",
        "the exact iss value",
    ),
    doc(
        "auth.issuers.jwks_file",
        None,
        "(one of the three)",
        "a JWKS file read at start",
    ),
    doc(
        "auth.issuers.jwks_uri",
        None,
        "(one of the three)",
        "a JWKS URL (https://)",
    ),
    doc(
        "auth.issuers.discovery",
        None,
        "false",
        "find the JWKS by OIDC discovery",
    ),
    doc(
        "auth.issuers.tenants",
        None,
        "(the tenant its URL names)",
        "tenant ids (tid) the issuer may speak for; [\"*\"] for any",
    ),
    doc(
        "auth.sign_in.issuer",
        None,
        "(the dev provider)",
        "where pages and the CLI sign in (OIDC discovery)",
    ),
    doc(
        "auth.sign_in.client_id",
        None,
        "(required with issuer)",
        "the pages' public client id",
    ),
    doc(
        "auth.sign_in.cli_client_id",
        None,
        "(client_id)",
        "the CLI's public client id (device grant)",
    ),
    doc(
        "auth.sign_in.scopes",
        None,
        "openid profile offline_access",
        "scopes asked for, space-separated",
    ),
    doc(
        "relay.pair_timeout_secs",
        None,
        "30",
        "seconds the first leg waits for the second",
    ),
    doc(
        "relay.idle_timeout_secs",
        None,
        "300",
        "seconds without frames before a session closes",
    ),
    doc(
        "relay.max_frame_bytes",
        None,
        "4194304",
        "largest frame payload",
    ),
    doc(
        "relay.max_sessions",
        None,
        "20000",
        "most relay sessions on this node",
    ),
    doc(
        "relay.max_session_bytes_per_sec",
        None,
        "104857600",
        "bandwidth cap per session",
    ),
    doc(
        "relay.queue_frames",
        None,
        "64",
        "frames queued per direction",
    ),
    doc(
        "relay.queue_bytes",
        None,
        "8388608",
        "bytes queued per direction",
    ),
    doc(
        "relay.public_addr",
        Some("ASSIST_RELAY_PUBLIC_ADDR"),
        "(the HTTPS listener)",
        "host:port clients reach this node's relay at (WSS); relay tickets name it",
    ),
    doc(
        "relay.public_quic_addr",
        Some("ASSIST_RELAY_PUBLIC_QUIC_ADDR"),
        "(public_addr's host, quic_listen's port)",
        "host:port clients reach this node's relay at over QUIC",
    ),
    doc(
        "signal.requests_per_second",
        None,
        "10",
        "signalling requests per connection, sustained",
    ),
    doc(
        "signal.request_burst",
        None,
        "20",
        "signalling request burst per connection",
    ),
    doc(
        "signal.code_ttl_minutes",
        None,
        "10",
        "minutes a security code stays valid",
    ),
    doc(
        "signal.consent_timeout_minutes",
        None,
        "5",
        "minutes a sharer has to answer a consent request",
    ),
    doc(
        "limits.max_connections",
        None,
        "16384",
        "HTTPS connections open at once (lowered to fit the open-files limit)",
    ),
    doc(
        "limits.max_connections_per_address",
        None,
        "4096",
        "HTTPS connections open at once from one source address",
    ),
    doc(
        "limits.header_read_timeout_secs",
        None,
        "15",
        "seconds a client may take to send request headers (1-600)",
    ),
];

/// The settings list `assistd serve --help` ends with.
pub fn settings_help() -> String {
    let mut out = String::from(
        "Settings: TOML key (in --config FILE, or ASSIST_CONFIG) [default], environment variable.\n\
         Later sources win: defaults, the file, ASSIST_* variables, the options above.\n",
    );
    for d in SETTINGS_DOC {
        let env = d.env.map(|e| format!("  env {e}")).unwrap_or_default();
        out.push_str(&format!(
            "  {} [{}]{env}\n      {}\n",
            d.key, d.default, d.what
        ));
    }
    out
}

/// The TOML file's shape. Unknown keys are an error, so a typo never goes unnoticed.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    /// Data directory.
    pub data_dir: Option<PathBuf>,
    /// HTTPS listen address.
    pub listen: Option<String>,
    /// QUIC listen address.
    pub quic_listen: Option<String>,
    /// Metrics listen address.
    pub metrics_listen: Option<String>,
    /// Public base URL (for absolute `@odata.nextLink`s behind a proxy).
    pub public_url: Option<String>,
    /// Log filter (tracing `EnvFilter` syntax).
    pub log: Option<String>,
    /// Graceful shutdown period in seconds.
    pub shutdown_grace_secs: Option<u64>,
    /// Days session records and audit events are kept.
    pub retention_days: Option<u32>,
    /// What this node runs (`all`, `broker`, `relay`).
    pub role: Option<String>,
    /// The database.
    #[serde(default)]
    pub store: StoreFile,
    /// Cluster mode.
    #[serde(default)]
    pub cluster: ClusterFile,
    /// Key files shared by a cluster's nodes.
    #[serde(default)]
    pub keys: KeysFile,
    /// TLS.
    #[serde(default)]
    pub tls: TlsFile,
    /// Token validation.
    #[serde(default)]
    pub auth: AuthFile,
    /// Relay limits.
    #[serde(default)]
    pub relay: RelayFile,
    /// Signalling limits.
    #[serde(default)]
    pub signal: SignalFile,
    /// Connection limits of the TCP listeners.
    #[serde(default)]
    pub limits: LimitsFile,
}

/// `[store]`: where durable data lives.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StoreFile {
    /// `sqlite:///path/assist.db` or `postgres://user:password@host:port/db`.
    pub url: Option<String>,
}

/// `[cluster]`: cluster mode (unset `redis_url`: embedded, one node).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterFile {
    /// `redis://host:port/db`.
    pub redis_url: Option<String>,
    /// This node's name (default: the host name).
    pub node_id: Option<String>,
    /// Seconds between registry heartbeats.
    pub heartbeat_secs: Option<u64>,
}

/// `[keys]`: key files a cluster's nodes share, instead of one generated per data directory.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeysFile {
    /// The relay-ticket key.
    pub relay_ticket_file: Option<PathBuf>,
    /// The security-code key.
    pub signal_code_file: Option<PathBuf>,
    /// The dev issuer's signing key (PEM).
    pub dev_issuer_file: Option<PathBuf>,
}

/// `[limits]`: connection caps and timeouts of the TCP listeners (docs/security.md, "Limits").
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitsFile {
    /// Connections open at once on the HTTPS listener.
    pub max_connections: Option<usize>,
    /// Connections open at once on the HTTPS listener from one source address.
    pub max_connections_per_address: Option<usize>,
    /// Seconds a client may take to send a request's headers (and to start the next request
    /// on an idle keep-alive connection), on both TCP listeners.
    pub header_read_timeout_secs: Option<u64>,
}

/// Default `limits.max_connections` (lowered at start to fit the open-files limit).
pub const DEFAULT_MAX_CONNECTIONS: usize = 16_384;
/// Default `limits.max_connections_per_address`.
pub const DEFAULT_MAX_CONNECTIONS_PER_ADDRESS: usize = 4_096;
/// Default `limits.header_read_timeout_secs`.
pub const DEFAULT_HEADER_READ_TIMEOUT_SECS: u64 = 15;

/// Validated connection limits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectionLimits {
    /// HTTPS listener cap.
    pub max_connections: usize,
    /// HTTPS listener cap per source address.
    pub max_connections_per_address: usize,
    /// Header read (and keep-alive idle) timeout of both TCP listeners.
    pub header_read_timeout: Duration,
}

impl Default for ConnectionLimits {
    fn default() -> Self {
        Self {
            max_connections: DEFAULT_MAX_CONNECTIONS,
            max_connections_per_address: DEFAULT_MAX_CONNECTIONS_PER_ADDRESS,
            header_read_timeout: Duration::from_secs(DEFAULT_HEADER_READ_TIMEOUT_SECS),
        }
    }
}

fn connection_limits(f: &LimitsFile, file_name: &str) -> Result<ConnectionLimits, ConfigError> {
    let mut c = ConnectionLimits::default();
    let range = |name: &str, v: u64, lo: u64, hi: u64| -> Result<u64, ConfigError> {
        if v < lo || v > hi {
            Err(bad(
                &format!("limits.{name}"),
                file_name,
                format!("{v} is outside {lo}..={hi}"),
            ))
        } else {
            Ok(v)
        }
    };
    if let Some(v) = f.max_connections {
        c.max_connections = range("max_connections", v as u64, 1, 10_000_000)? as usize;
    }
    if let Some(v) = f.max_connections_per_address {
        c.max_connections_per_address =
            range("max_connections_per_address", v as u64, 1, 10_000_000)? as usize;
    }
    if let Some(v) = f.header_read_timeout_secs {
        c.header_read_timeout = Duration::from_secs(range("header_read_timeout_secs", v, 1, 600)?);
    }
    Ok(c)
}

/// `[signal]`: signalling limits (defaults in docs/protocol.md, "Limits").
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SignalFile {
    /// Sustained requests per second per connection.
    pub requests_per_second: Option<u32>,
    /// Request burst per connection.
    pub request_burst: Option<u32>,
    /// Minutes a security code stays valid.
    pub code_ttl_minutes: Option<u64>,
    /// Minutes a sharer has to answer a consent request.
    pub consent_timeout_minutes: Option<u64>,
}

/// `[relay]`: limits and timeouts of the relay (defaults in docs/protocol.md).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RelayFile {
    /// Seconds the first leg waits for the second.
    pub pair_timeout_secs: Option<u64>,
    /// Seconds without frames before a session is closed.
    pub idle_timeout_secs: Option<u64>,
    /// Largest frame payload in bytes.
    pub max_frame_bytes: Option<usize>,
    /// Most sessions on this node.
    pub max_sessions: Option<usize>,
    /// Bandwidth cap per session, bytes per second.
    pub max_session_bytes_per_sec: Option<u64>,
    /// Frames per direction queue.
    pub queue_frames: Option<usize>,
    /// Bytes per direction queue.
    pub queue_bytes: Option<usize>,
    /// The `host:port` clients reach this node's relay at; tickets must name it.
    pub public_addr: Option<String>,
    /// The `host:port` clients reach this node's relay at over QUIC.
    pub public_quic_addr: Option<String>,
}

/// `[tls]`: certificate and key files; both absent means a self-signed certificate for localhost.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsFile {
    /// PEM certificate chain.
    pub cert_file: Option<PathBuf>,
    /// PEM private key.
    pub key_file: Option<PathBuf>,
}

/// `[auth]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthFile {
    /// Accepted `aud` values.
    pub audiences: Option<Vec<String>>,
    /// Clock skew allowed on `exp`/`nbf`, seconds.
    pub leeway_secs: Option<u64>,
    /// Trust the local development issuer (default: true when no other issuer is configured).
    pub dev_issuer: Option<bool>,
    /// A PEM CA bundle trusted (in addition to the system roots) when fetching JWKS.
    pub ca_file: Option<PathBuf>,
    /// Least time between two JWKS refetches triggered by an unknown `kid`, seconds.
    pub jwks_min_refresh_secs: Option<u64>,
    /// Lifetime of the access tokens the dev issuer's OIDC provider issues, seconds.
    pub dev_token_ttl_secs: Option<u64>,
    /// Further trusted issuers.
    #[serde(default)]
    pub issuers: Vec<IssuerFile>,
    /// Where the pages and the CLI sign in (default: the dev issuer's provider, when it is on).
    pub sign_in: Option<SignInFile>,
}

/// `[auth.sign_in]`: the OpenID Connect provider the pages (authorization code + PKCE) and the
/// `assist` CLI (device authorization grant) sign in with, found by discovery.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SignInFile {
    /// The issuer URL (`{issuer}/.well-known/openid-configuration` is its discovery document).
    pub issuer: String,
    /// The pages' public client id (its redirect URIs: `{public URL}/helper/`, `/share/`, `/admin/`).
    pub client_id: String,
    /// The CLI's public client id (device grant); the pages' when absent.
    pub cli_client_id: Option<String>,
    /// Scopes to ask for, space-separated (default `openid profile offline_access`); with Entra
    /// ID add the API's scope, e.g. `api://assist/access_as_user`.
    pub scopes: Option<String>,
}

/// One `[[auth.issuers]]` entry: exactly one of `jwks_file`, `jwks_uri`, `discovery = true`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IssuerFile {
    /// The exact `iss` value.
    pub issuer: String,
    /// A JWKS file read at start.
    pub jwks_file: Option<PathBuf>,
    /// A JWKS URL (HTTPS).
    pub jwks_uri: Option<String>,
    /// Find the JWKS through `{issuer}/.well-known/openid-configuration`.
    #[serde(default)]
    pub discovery: bool,
    /// The tenant ids (`tid`) this issuer may speak for; `["*"]` for any. Optional only when
    /// the issuer names its tenant: an Entra ID issuer URL with the tenant's GUID in its path
    /// (bound to that tenant), or a `{tenantid}` template (each token's `iss` must carry its
    /// own `tid`).
    pub tenants: Option<Vec<String>>,
}

/// Values given on the command line or in the environment (clap fills both).
#[derive(Debug, Default, Clone)]
pub struct Overrides {
    /// `--data-dir` / `ASSIST_DATA_DIR`.
    pub data_dir: Option<PathBuf>,
    /// `--listen` / `ASSIST_LISTEN`.
    pub listen: Option<String>,
    /// `--quic-listen` / `ASSIST_QUIC_LISTEN`.
    pub quic_listen: Option<String>,
    /// `--metrics-listen` / `ASSIST_METRICS_LISTEN`.
    pub metrics_listen: Option<String>,
    /// `--public-url` / `ASSIST_PUBLIC_URL`.
    pub public_url: Option<String>,
    /// `--log` / `ASSIST_LOG`.
    pub log: Option<String>,
    /// `ASSIST_TLS_CERT_FILE`.
    pub tls_cert_file: Option<PathBuf>,
    /// `ASSIST_TLS_KEY_FILE`.
    pub tls_key_file: Option<PathBuf>,
    /// `ASSIST_AUTH_AUDIENCES` (comma-separated).
    pub audiences: Option<String>,
    /// `ASSIST_AUTH_DEV_ISSUER`.
    pub dev_issuer: Option<String>,
    /// `ASSIST_AUTH_OIDC_ISSUER`: one more issuer, found by OIDC discovery.
    pub oidc_issuer: Option<String>,
    /// `ASSIST_AUTH_OIDC_TENANTS` (comma-separated; `*` for any): the tenants that issuer may
    /// speak for.
    pub oidc_tenants: Option<String>,
    /// `ASSIST_SHUTDOWN_GRACE_SECS`.
    pub shutdown_grace_secs: Option<String>,
    /// `ASSIST_STORE_URL`.
    pub store_url: Option<String>,
    /// `--role` / `ASSIST_ROLE`.
    pub role: Option<String>,
    /// `ASSIST_CLUSTER_REDIS_URL`.
    pub redis_url: Option<String>,
    /// `ASSIST_CLUSTER_NODE_ID`.
    pub node_id: Option<String>,
    /// `ASSIST_KEYS_RELAY_TICKET_FILE`.
    pub relay_ticket_file: Option<PathBuf>,
    /// `ASSIST_KEYS_SIGNAL_CODE_FILE`.
    pub signal_code_file: Option<PathBuf>,
    /// `ASSIST_KEYS_DEV_ISSUER_FILE`.
    pub dev_issuer_file: Option<PathBuf>,
    /// `ASSIST_RELAY_PUBLIC_ADDR`.
    pub relay_public_addr: Option<String>,
    /// `ASSIST_RELAY_PUBLIC_QUIC_ADDR`.
    pub relay_public_quic_addr: Option<String>,
}

/// What a node runs (`--role`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Signalling, the admin API, pages and the relay (the default).
    All,
    /// Signalling, the admin API and pages; relay sessions are placed on relay nodes.
    Broker,
    /// The relay only (WSS `/v1/relay` and QUIC); needs no database.
    Relay,
}

impl Role {
    /// Whether this node runs the broker (signalling, admin API, pages).
    pub fn runs_broker(self) -> bool {
        self != Role::Relay
    }

    /// Whether this node runs the relay.
    pub fn runs_relay(self) -> bool {
        self != Role::Broker
    }

    /// The name in configuration and in the node registry.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::All => "all",
            Role::Broker => "broker",
            Role::Relay => "relay",
        }
    }
}

/// Cluster mode's settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterSettings {
    /// `redis://` or `rediss://` URL (its `Debug` is not redacted: keep the password out of logs
    /// with [`redact_url`]).
    pub redis_url: String,
    /// This node's name in the registry.
    pub node_id: String,
    /// Time between registry heartbeats (a node is dead after three missed).
    pub heartbeat: Duration,
    /// How long an open session record may go without a heartbeat (`last_seen`, moved every
    /// minute while the session runs) before the sweep closes it, if the session is not in
    /// the live directory either: the records of a node that died while Redis was away and
    /// came back empty, which no dead-node cleanup can find. Not configurable (tests shorten
    /// it): [`ClusterSettings::STALE_SESSION_GRACE`].
    pub stale_session_grace: Duration,
}

impl ClusterSettings {
    /// The default [`ClusterSettings::stale_session_grace`]: ten minutes, ten missed
    /// heartbeats of a session record.
    pub const STALE_SESSION_GRACE: Duration = Duration::from_secs(600);
}

/// Where the keys a cluster shares come from; `None` is the data directory's own file
/// (generated on first start).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KeyFiles {
    /// The relay-ticket key.
    pub relay_ticket: Option<PathBuf>,
    /// The security-code key.
    pub signal_code: Option<PathBuf>,
    /// The dev issuer's signing key.
    pub dev_issuer: Option<PathBuf>,
}

/// `url` with any password replaced by `***`, for logs and errors.
pub fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    match rest.split_once('@') {
        Some((userinfo, host)) => match userinfo.split_once(':') {
            Some((user, _)) => format!("{scheme}://{user}:***@{host}"),
            None if userinfo.is_empty() => url.to_owned(),
            // `redis://secret@host`: Redis takes a lone userinfo as the password.
            None => format!("{scheme}://***@{host}"),
        },
        None => url.to_owned(),
    }
}

/// `host:port` with a numeric port and no scheme or path (`[::1]:8443` included).
fn is_host_port(v: &str) -> bool {
    match v.rsplit_once(':') {
        Some((host, port)) => {
            !host.is_empty()
                && !host.contains('/')
                && !host.contains("://")
                && port.parse::<u16>().is_ok_and(|p| p != 0)
        }
        None => false,
    }
}

fn valid_node_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 64
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .map(|h| h.trim().to_owned())
        .filter(|h| valid_node_id(h))
        .unwrap_or_else(|| "assistd".to_owned())
}

/// Where the TLS certificate comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TlsSource {
    /// Generated for localhost in the data directory on first start, reused after.
    SelfSigned,
    /// Operator-provided PEM files.
    Files {
        /// Certificate chain.
        cert: PathBuf,
        /// Private key.
        key: PathBuf,
    },
}

/// Where a trusted issuer's keys come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IssuerKeys {
    /// A JWKS file.
    File(PathBuf),
    /// A JWKS URL.
    Uri(String),
    /// OIDC discovery from the issuer URL.
    Discovery,
}

/// A validated trusted issuer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IssuerSettings {
    /// `iss` (or a template with `{tenantid}`).
    pub issuer: String,
    /// Keys.
    pub keys: IssuerKeys,
    /// The tenants it may speak for.
    pub tenants: assist_identity::TenantBinding,
}

/// Whether `s` has the shape of a GUID (Entra ID tenant ids are GUIDs).
fn is_guid(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() == 36
        && b.iter().enumerate().all(|(i, c)| match i {
            8 | 13 | 18 | 23 => *c == b'-',
            _ => c.is_ascii_hexdigit(),
        })
}

/// The tenants an issuer may speak for: the configured list, else what its URL says (an Entra
/// ID tenant GUID in the path, or a `{tenantid}` template), else an error: an issuer that is
/// bound to nothing would be believed for every tenant.
fn tenant_binding(
    setting: &str,
    src: &str,
    issuer: &str,
    tenants: Option<Vec<String>>,
) -> Result<assist_identity::TenantBinding, ConfigError> {
    use assist_identity::TenantBinding;
    match tenants {
        Some(list) if list.iter().any(|t| t == "*") => {
            if list.len() > 1 {
                return Err(bad(setting, src, "tenants: \"*\" must stand alone"));
            }
            Ok(TenantBinding::Any)
        }
        Some(list) => {
            let list: Vec<String> = list.into_iter().map(|t| t.trim().to_owned()).collect();
            if list.is_empty()
                || list
                    .iter()
                    .any(|t| t.is_empty() || t.contains(char::is_control))
            {
                return Err(bad(
                    setting,
                    src,
                    "tenants must name at least one tenant id (or \"*\" for any)",
                ));
            }
            Ok(TenantBinding::Only(list))
        }
        None if issuer.contains(assist_identity::TENANT_PLACEHOLDER) => Ok(TenantBinding::Any),
        None => {
            let guids: Vec<&str> = issuer.split('/').filter(|seg| is_guid(seg)).collect();
            match guids.as_slice() {
                [one] => Ok(TenantBinding::Only(vec![one.to_ascii_lowercase()])),
                _ => Err(bad(
                    setting,
                    src,
                    format!(
                        "issuer '{issuer}' is bound to no tenant: set tenants = [\"<tid>\", …] \
                         (or [\"*\"] to believe it for every tenant)"
                    ),
                )),
            }
        }
    }
}

/// Where pages and the CLI sign in, when it is not the dev issuer's provider.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignInSettings {
    /// Issuer URL (discovery).
    pub issuer: String,
    /// The pages' client id.
    pub client_id: String,
    /// The CLI's client id.
    pub cli_client_id: String,
    /// Scopes, space-separated.
    pub scopes: String,
}

/// The scopes pages and the CLI ask for unless configured otherwise.
pub const DEFAULT_SIGN_IN_SCOPES: &str = "openid profile offline_access";

/// Validated token settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthSettings {
    /// Accepted audiences.
    pub audiences: Vec<String>,
    /// Leeway on time claims.
    pub leeway_secs: u64,
    /// Whether the dev issuer is trusted.
    pub dev_issuer: bool,
    /// Extra CA bundle for JWKS fetches.
    pub ca_file: Option<PathBuf>,
    /// Least time between JWKS refetches triggered by an unknown `kid`.
    pub jwks_min_refresh: Duration,
    /// Other trusted issuers.
    pub issuers: Vec<IssuerSettings>,
    /// Lifetime of access tokens from the dev issuer's OIDC provider.
    pub dev_token_ttl: Duration,
    /// An external provider for sign-in (`None`: the dev provider when the dev issuer is on).
    pub sign_in: Option<SignInSettings>,
}

/// The validated configuration the server runs with.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Data directory (database, certificate, dev issuer key).
    pub data_dir: PathBuf,
    /// HTTPS listen address.
    pub listen: SocketAddr,
    /// QUIC listen address (UDP).
    pub quic_listen: SocketAddr,
    /// Metrics listen address.
    pub metrics_listen: SocketAddr,
    /// Public base URL, if set (no trailing slash).
    pub public_url: Option<String>,
    /// Log filter.
    pub log: String,
    /// Graceful shutdown period.
    pub shutdown_grace: Duration,
    /// Days session records and audit events are kept.
    pub retention_days: u32,
    /// The database (its `Debug` and `Display` redact the password).
    pub store: assist_store::StoreUrl,
    /// What this node runs.
    pub role: Role,
    /// Cluster mode, when `cluster.redis_url` is set.
    pub cluster: Option<ClusterSettings>,
    /// Key files shared by a cluster's nodes.
    pub keys: KeyFiles,
    /// TLS.
    pub tls: TlsSource,
    /// Tokens.
    pub auth: AuthSettings,
    /// Relay limits.
    pub relay: assist_relay::RelayConfig,
    /// `host:port` clients reach this node's relay at over QUIC, when configured (else derived
    /// from `relay.public_addr`'s host and the QUIC listener's port, see [`Settings::relay_quic_public`]).
    pub relay_public_quic_addr: Option<String>,
    /// Signalling limits and timeouts.
    pub signal: assist_session::BrokerConfig,
    /// Connection caps and timeouts of the TCP listeners.
    pub limits: ConnectionLimits,
}

/// A configuration error: one line naming the setting, its source and the problem.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError(pub String);

impl std::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ConfigError {}

fn bad(setting: &str, source: &str, why: impl std::fmt::Display) -> ConfigError {
    ConfigError(format!("invalid setting `{setting}` ({source}): {why}"))
}

/// Picks the override if present (naming it), else the file value, else the default.
fn pick<T>(
    flag: Option<T>,
    flag_src: &str,
    file: Option<T>,
    file_src: &str,
    default: T,
) -> (T, String) {
    match (flag, file) {
        (Some(v), _) => (v, flag_src.to_owned()),
        (None, Some(v)) => (v, file_src.to_owned()),
        (None, None) => (default, "default".to_owned()),
    }
}

fn addr(setting: &str, (value, src): (String, String)) -> Result<SocketAddr, ConfigError> {
    value.parse::<SocketAddr>().map_err(|_| {
        bad(
            setting,
            &src,
            format!("'{value}' is not an IP:port address (e.g. 127.0.0.1:8443)"),
        )
    })
}

fn parse_bool(setting: &str, src: &str, v: &str) -> Result<bool, ConfigError> {
    match v.to_ascii_lowercase().as_str() {
        "1" | "true" | "yes" | "on" => Ok(true),
        "0" | "false" | "no" | "off" => Ok(false),
        _ => Err(bad(
            setting,
            src,
            format!("'{v}' is not a boolean (true/false)"),
        )),
    }
}

/// The levels a bare log directive may name.
const LOG_LEVELS: [&str; 6] = ["trace", "debug", "info", "warn", "error", "off"];

/// Checks a log filter. Beyond tracing's own syntax check, a directive without `=` must be a
/// level: tracing reads a bare word such as `verbose` as a target name, which turns every other
/// line off, and a server that silently stops logging is worse than one that refuses to start.
/// Targets take a level (`assistd=debug`).
fn check_log_filter(filter: &str) -> Result<(), String> {
    if filter.trim().is_empty() {
        return Err("must not be empty (e.g. \"info\" or \"assistd=debug,info\")".into());
    }
    for directive in filter.split(',').map(str::trim) {
        let bare = !directive.contains('=') && !directive.contains('[');
        if bare && !LOG_LEVELS.contains(&directive.to_ascii_lowercase().as_str()) {
            return Err(format!(
                "'{directive}' is not a level (trace, debug, info, warn, error, off); \
                 give a target a level with target=level, e.g. assistd=debug"
            ));
        }
    }
    tracing_subscriber::EnvFilter::try_new(filter)
        .map(|_| ())
        .map_err(|e| format!("'{filter}' is not a log filter: {e}"))
}

/// Reads the TOML file at `path`.
pub fn read_file(path: &Path) -> Result<FileConfig, ConfigError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| ConfigError(format!("cannot read config file {}: {e}", path.display())))?;
    toml::from_str(&text).map_err(|e| {
        let msg = e.message().to_owned();
        ConfigError(format!("config file {}: {msg}", path.display()))
    })
}

fn relay_config(f: &RelayFile, file_name: &str) -> Result<assist_relay::RelayConfig, ConfigError> {
    let mut c = assist_relay::RelayConfig::default();
    let range = |name: &str, v: u64, lo: u64, hi: u64| -> Result<u64, ConfigError> {
        if v < lo || v > hi {
            Err(bad(
                &format!("relay.{name}"),
                file_name,
                format!("{v} is outside {lo}..={hi}"),
            ))
        } else {
            Ok(v)
        }
    };
    if let Some(v) = f.pair_timeout_secs {
        c.pair_timeout = Duration::from_secs(range("pair_timeout_secs", v, 1, 600)?);
    }
    if let Some(v) = f.idle_timeout_secs {
        c.idle_timeout = Duration::from_secs(range("idle_timeout_secs", v, 5, 86_400)?);
    }
    if let Some(v) = f.max_frame_bytes {
        c.max_frame_bytes = range("max_frame_bytes", v as u64, 1024, 64 * 1024 * 1024)? as usize;
    }
    if let Some(v) = f.max_sessions {
        c.max_sessions = range("max_sessions", v as u64, 1, 1_000_000)? as usize;
    }
    if let Some(v) = f.max_session_bytes_per_sec {
        c.max_session_bytes_per_sec = range("max_session_bytes_per_sec", v, 64 * 1024, u64::MAX)?;
    }
    if let Some(v) = f.queue_frames {
        c.queue.max_frames = range("queue_frames", v as u64, 4, 100_000)? as usize;
    }
    if let Some(v) = f.queue_bytes {
        c.queue.max_bytes = range("queue_bytes", v as u64, 64 * 1024, 1 << 30)? as usize;
    }
    c.public_addr = f.public_addr.clone();
    Ok(c)
}

impl Settings {
    /// The `host:port` clients are told to reach this node's relay at over WSS: the configured
    /// `relay.public_addr`, else `listener` as advertised.
    pub fn relay_wss_public(&self, listener: String) -> String {
        self.relay.public_addr.clone().unwrap_or(listener)
    }

    /// The `host:port` clients are told to reach this node's relay at over QUIC: the configured
    /// `relay.public_quic_addr`; else `relay.public_addr`'s host with the QUIC listener's port;
    /// else `listener` as advertised.
    pub fn relay_quic_public(&self, listener: String, quic_port: u16) -> String {
        if let Some(a) = &self.relay_public_quic_addr {
            return a.clone();
        }
        match self
            .relay
            .public_addr
            .as_deref()
            .and_then(|a| a.rsplit_once(':'))
        {
            Some((host, _)) => format!("{host}:{quic_port}"),
            None => listener,
        }
    }

    /// Merges and validates. `file_name` is used in error messages.
    pub fn resolve(
        file: FileConfig,
        file_name: &str,
        o: Overrides,
    ) -> Result<Settings, ConfigError> {
        let fsrc = |k: &str| format!("{k} in {file_name}");
        let data_dir = pick(
            o.data_dir,
            "--data-dir/ASSIST_DATA_DIR",
            file.data_dir,
            &fsrc("data_dir"),
            PathBuf::from(DEFAULT_DATA_DIR),
        );
        if data_dir.0.as_os_str().is_empty() {
            return Err(bad("data_dir", &data_dir.1, "must not be empty"));
        }
        let listen = addr(
            "listen",
            pick(
                o.listen,
                "--listen/ASSIST_LISTEN",
                file.listen,
                &fsrc("listen"),
                DEFAULT_LISTEN.to_owned(),
            ),
        )?;
        let quic_listen = addr(
            "quic_listen",
            pick(
                o.quic_listen,
                "--quic-listen/ASSIST_QUIC_LISTEN",
                file.quic_listen,
                &fsrc("quic_listen"),
                DEFAULT_QUIC_LISTEN.to_owned(),
            ),
        )?;
        let metrics_listen = addr(
            "metrics_listen",
            pick(
                o.metrics_listen,
                "--metrics-listen/ASSIST_METRICS_LISTEN",
                file.metrics_listen,
                &fsrc("metrics_listen"),
                DEFAULT_METRICS_LISTEN.to_owned(),
            ),
        )?;
        if metrics_listen.port() != 0 && metrics_listen == listen {
            return Err(bad(
                "metrics_listen",
                "merged configuration",
                "must differ from `listen`",
            ));
        }
        let (public_url, src) = pick(
            o.public_url.map(Some),
            "--public-url/ASSIST_PUBLIC_URL",
            file.public_url.map(Some),
            &fsrc("public_url"),
            None,
        );
        let public_url = match public_url {
            Some(u) if !(u.starts_with("https://") || u.starts_with("http://")) => {
                return Err(bad(
                    "public_url",
                    &src,
                    format!("'{u}' must start with https://"),
                ))
            }
            Some(u) => Some(u.trim_end_matches('/').to_owned()),
            None => None,
        };
        let (log, src) = pick(
            o.log,
            "--log/ASSIST_LOG",
            file.log,
            &fsrc("log"),
            "info".to_owned(),
        );
        check_log_filter(&log).map_err(|why| bad("log", &src, why))?;
        let (grace, src) = pick(
            o.shutdown_grace_secs,
            "ASSIST_SHUTDOWN_GRACE_SECS",
            file.shutdown_grace_secs.map(|v| v.to_string()),
            &fsrc("shutdown_grace_secs"),
            "10".to_owned(),
        );
        let grace: u64 = grace.parse().map_err(|_| {
            bad(
                "shutdown_grace_secs",
                &src,
                format!("'{grace}' is not a whole number of seconds"),
            )
        })?;
        if grace > 3600 {
            return Err(bad("shutdown_grace_secs", &src, "must be at most 3600"));
        }

        let store = match pick(
            o.store_url,
            "ASSIST_STORE_URL",
            file.store.url,
            &fsrc("store.url"),
            String::new(),
        ) {
            (url, _) if url.is_empty() => {
                assist_store::StoreUrl::Sqlite(data_dir.0.join(crate::server::DATABASE_FILE))
            }
            (url, src) => {
                assist_store::StoreUrl::parse(&url).map_err(|e| bad("store.url", &src, e))?
            }
        };

        let (role, src) = pick(
            o.role,
            "--role/ASSIST_ROLE",
            file.role,
            &fsrc("role"),
            "all".to_owned(),
        );
        let role = match role.as_str() {
            "all" => Role::All,
            "broker" => Role::Broker,
            "relay" => Role::Relay,
            other => {
                return Err(bad(
                    "role",
                    &src,
                    format!("'{other}' is not one of all, broker, relay"),
                ))
            }
        };
        let cluster_extras =
            file.cluster.node_id.is_some() || file.cluster.heartbeat_secs.is_some();
        let cluster = match pick(
            o.redis_url,
            "ASSIST_CLUSTER_REDIS_URL",
            file.cluster.redis_url,
            &fsrc("cluster.redis_url"),
            String::new(),
        ) {
            (url, _) if url.is_empty() => None,
            (url, src) => {
                if !(url.starts_with("redis://") || url.starts_with("rediss://")) {
                    return Err(bad(
                        "cluster.redis_url",
                        &src,
                        format!(
                            "'{}' must start with redis:// or rediss://",
                            redact_url(&url)
                        ),
                    ));
                }
                let (node_id, src) = pick(
                    o.node_id,
                    "ASSIST_CLUSTER_NODE_ID",
                    file.cluster.node_id,
                    &fsrc("cluster.node_id"),
                    host_name(),
                );
                if !valid_node_id(&node_id) {
                    return Err(bad(
                        "cluster.node_id",
                        &src,
                        format!("'{node_id}' must be 1-64 letters, digits, '-', '_' or '.'"),
                    ));
                }
                let heartbeat = file.cluster.heartbeat_secs.unwrap_or(2);
                if !(1..=60).contains(&heartbeat) {
                    return Err(bad(
                        "cluster.heartbeat_secs",
                        &fsrc("cluster.heartbeat_secs"),
                        "must be between 1 and 60",
                    ));
                }
                Some(ClusterSettings {
                    redis_url: url,
                    node_id,
                    heartbeat: Duration::from_secs(heartbeat),
                    stale_session_grace: ClusterSettings::STALE_SESSION_GRACE,
                })
            }
        };
        if cluster.is_none() {
            if cluster_extras {
                return Err(bad(
                    "cluster",
                    file_name,
                    "node_id and heartbeat_secs need cluster.redis_url (cluster mode)",
                ));
            }
            if role != Role::All {
                return Err(bad(
                    "role",
                    &src,
                    format!(
                        "'{}' needs cluster mode (cluster.redis_url / ASSIST_CLUSTER_REDIS_URL): \
                         one node runs everything",
                        role.as_str()
                    ),
                ));
            }
        }
        if matches!(store, assist_store::StoreUrl::Sqlite(_))
            && cluster.is_some()
            && role.runs_broker()
        {
            return Err(bad(
                "store.url",
                "cluster mode",
                "a cluster's brokers share one PostgreSQL database: set store.url / \
                 ASSIST_STORE_URL to postgres://...",
            ));
        }
        let mut keys = KeyFiles {
            relay_ticket: o.relay_ticket_file.or(file.keys.relay_ticket_file),
            signal_code: o.signal_code_file.or(file.keys.signal_code_file),
            dev_issuer: o.dev_issuer_file.or(file.keys.dev_issuer_file),
        };
        for (name, p) in [
            ("keys.relay_ticket_file", &mut keys.relay_ticket),
            ("keys.signal_code_file", &mut keys.signal_code),
            ("keys.dev_issuer_file", &mut keys.dev_issuer),
        ] {
            if let Some(path) = p {
                if !path.is_file() {
                    return Err(bad(
                        name,
                        "configuration",
                        format!(
                            "{} is not a readable file (a key file shared by a cluster is made \
                             once, e.g. by copying a node's data-directory key, and given to every node)",
                            path.display()
                        ),
                    ));
                }
            }
        }

        let cert = o.tls_cert_file.or(file.tls.cert_file);
        let key = o.tls_key_file.or(file.tls.key_file);
        let tls = match (cert, key) {
            (None, None) => TlsSource::SelfSigned,
            (Some(cert), Some(key)) => {
                for (name, p) in [("tls.cert_file", &cert), ("tls.key_file", &key)] {
                    if !p.is_file() {
                        return Err(bad(
                            name,
                            "configuration",
                            format!("{} is not a readable file", p.display()),
                        ));
                    }
                }
                TlsSource::Files { cert, key }
            }
            _ => {
                return Err(bad(
                    "tls",
                    "configuration",
                    "set both cert_file and key_file, or neither for a self-signed certificate",
                ))
            }
        };

        let mut issuers = Vec::new();
        for (i, f) in file.auth.issuers.into_iter().enumerate() {
            let name = format!("auth.issuers[{i}]");
            if f.issuer.trim().is_empty() {
                return Err(bad(&name, file_name, "issuer must not be empty"));
            }
            let keys = match (f.jwks_file, f.jwks_uri, f.discovery) {
                (Some(p), None, false) => IssuerKeys::File(p),
                (None, Some(u), false) if u.starts_with("https://") => IssuerKeys::Uri(u),
                (None, Some(u), false) => {
                    return Err(bad(
                        &name,
                        file_name,
                        format!("jwks_uri '{u}' must be https://"),
                    ))
                }
                (None, None, true) if f.issuer.contains(assist_identity::TENANT_PLACEHOLDER) => {
                    return Err(bad(
                        &name,
                        file_name,
                        "a {tenantid} template has no discovery document: set jwks_uri",
                    ))
                }
                (None, None, true) if f.issuer.starts_with("https://") => IssuerKeys::Discovery,
                (None, None, true) => {
                    return Err(bad(&name, file_name, "discovery needs an https:// issuer"))
                }
                _ => {
                    return Err(bad(
                        &name,
                        file_name,
                        "set exactly one of jwks_file, jwks_uri, discovery = true",
                    ))
                }
            };
            let tenants = tenant_binding(&name, file_name, &f.issuer, f.tenants)?;
            issuers.push(IssuerSettings {
                issuer: f.issuer,
                keys,
                tenants,
            });
        }
        if let Some(iss) = o.oidc_issuer {
            if !iss.starts_with("https://") {
                return Err(bad(
                    "auth.oidc_issuer",
                    "ASSIST_AUTH_OIDC_ISSUER",
                    format!("'{iss}' must be an https:// URL"),
                ));
            }
            let listed = o.oidc_tenants.map(|t| {
                t.split(',')
                    .map(|s| s.trim().to_owned())
                    .filter(|s| !s.is_empty())
                    .collect()
            });
            let tenants = tenant_binding(
                "auth.oidc_issuer",
                "ASSIST_AUTH_OIDC_ISSUER/ASSIST_AUTH_OIDC_TENANTS",
                &iss,
                listed,
            )?;
            issuers.push(IssuerSettings {
                issuer: iss,
                keys: IssuerKeys::Discovery,
                tenants,
            });
        }
        let dev_issuer = match o.dev_issuer {
            Some(v) => parse_bool("auth.dev_issuer", "ASSIST_AUTH_DEV_ISSUER", &v)?,
            None => file.auth.dev_issuer.unwrap_or(issuers.is_empty()),
        };
        if !dev_issuer && issuers.is_empty() {
            return Err(bad(
                "auth",
                "configuration",
                "no token issuer is trusted: enable dev_issuer or configure auth.issuers",
            ));
        }
        let audiences = match o.audiences {
            Some(a) => a
                .split(',')
                .map(|s| s.trim().to_owned())
                .filter(|s| !s.is_empty())
                .collect(),
            None => file
                .auth
                .audiences
                .unwrap_or_else(|| vec![DEFAULT_AUDIENCE.to_owned()]),
        };
        if audiences.is_empty() {
            return Err(bad(
                "auth.audiences",
                "configuration",
                "at least one audience is needed",
            ));
        }
        let leeway_secs = file.auth.leeway_secs.unwrap_or(60);
        if leeway_secs > 600 {
            return Err(bad("auth.leeway_secs", file_name, "must be at most 600"));
        }
        let dev_token_ttl_secs = file.auth.dev_token_ttl_secs.unwrap_or(3600);
        if !(10..=86_400).contains(&dev_token_ttl_secs) {
            return Err(bad(
                "auth.dev_token_ttl_secs",
                file_name,
                "must be between 10 and 86400",
            ));
        }
        let sign_in = match file.auth.sign_in {
            None => None,
            Some(f) => {
                if !f.issuer.starts_with("https://") {
                    return Err(bad(
                        "auth.sign_in.issuer",
                        file_name,
                        format!("'{}' must be an https:// URL", f.issuer),
                    ));
                }
                if f.client_id.trim().is_empty() {
                    return Err(bad(
                        "auth.sign_in.client_id",
                        file_name,
                        "must not be empty",
                    ));
                }
                Some(SignInSettings {
                    issuer: f.issuer.trim_end_matches('/').to_owned(),
                    cli_client_id: f.cli_client_id.unwrap_or_else(|| f.client_id.clone()),
                    client_id: f.client_id,
                    scopes: f
                        .scopes
                        .unwrap_or_else(|| DEFAULT_SIGN_IN_SCOPES.to_owned()),
                })
            }
        };
        let mut relay = relay_config(&file.relay, file_name)?;
        let mut relay_public_quic_addr = file.relay.public_quic_addr.clone();
        for (name, src, value, target) in [
            (
                "relay.public_addr",
                "ASSIST_RELAY_PUBLIC_ADDR",
                o.relay_public_addr,
                &mut relay.public_addr,
            ),
            (
                "relay.public_quic_addr",
                "ASSIST_RELAY_PUBLIC_QUIC_ADDR",
                o.relay_public_quic_addr,
                &mut relay_public_quic_addr,
            ),
        ] {
            let from_env = value.is_some();
            if let Some(v) = value {
                *target = Some(v);
            }
            if let Some(v) = target.as_deref() {
                if !is_host_port(v) {
                    let source = if from_env { src.to_owned() } else { fsrc(name) };
                    return Err(bad(
                        name,
                        &source,
                        format!("'{v}' must be host:port (no scheme, no path)"),
                    ));
                }
            }
        }
        let limits = connection_limits(&file.limits, file_name)?;
        let mut signal = assist_session::BrokerConfig::default();
        if let Some(v) = file.signal.requests_per_second {
            signal.request_rate.per_second = v;
        }
        if let Some(v) = file.signal.request_burst {
            signal.request_rate.burst = v;
        }
        if let Some(v) = file.signal.code_ttl_minutes {
            signal.code_ttl = Duration::from_secs(v * 60);
        }
        if let Some(v) = file.signal.consent_timeout_minutes {
            signal.consent_timeout = Duration::from_secs(v * 60);
        }
        signal.validate().map_err(|e| bad("signal", file_name, e))?;
        let retention_days = file.retention_days.unwrap_or(30);
        if !(1..=3650).contains(&retention_days) {
            return Err(bad(
                "retention_days",
                file_name,
                "must be between 1 and 3650",
            ));
        }
        Ok(Settings {
            limits,
            signal,
            retention_days,
            relay,
            relay_public_quic_addr,
            store,
            role,
            cluster,
            keys,
            data_dir: data_dir.0,
            listen,
            quic_listen,
            metrics_listen,
            public_url,
            log,
            shutdown_grace: Duration::from_secs(grace),
            tls,
            auth: AuthSettings {
                audiences,
                leeway_secs,
                dev_issuer,
                ca_file: file.auth.ca_file,
                jwks_min_refresh: Duration::from_secs(
                    file.auth.jwks_min_refresh_secs.unwrap_or(30),
                ),
                issuers,
                dev_token_ttl: Duration::from_secs(dev_token_ttl_secs),
                sign_in,
            },
        })
    }

    /// Settings for tests and embedding: the given data dir, ephemeral loopback ports, dev issuer.
    pub fn ephemeral(data_dir: &Path) -> Settings {
        let o = Overrides {
            data_dir: Some(data_dir.to_path_buf()),
            listen: Some("127.0.0.1:0".into()),
            quic_listen: Some("127.0.0.1:0".into()),
            metrics_listen: Some("127.0.0.1:0".into()),
            ..Default::default()
        };
        match Settings::resolve(FileConfig::default(), "(none)", o) {
            Ok(s) => s,
            // The inputs above are constants that validate; a failure here is a bug in resolve.
            Err(e) => panic!("ephemeral settings must validate: {e}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn resolve(toml_text: &str, o: Overrides) -> Result<Settings, ConfigError> {
        let f: FileConfig = toml::from_str(toml_text).map_err(|e| ConfigError(e.to_string()))?;
        Settings::resolve(f, "assist.toml", o)
    }

    #[test]
    fn the_store_url_defaults_to_the_data_dir_and_is_checked() {
        use assist_store::StoreUrl;
        let s = resolve("data_dir = \"/srv/a\"", Overrides::default()).unwrap();
        assert_eq!(s.store, StoreUrl::Sqlite(PathBuf::from("/srv/a/assist.db")));
        let s = resolve(
            "[store]\nurl = \"postgres://assist:s3cret@db:5432/assist\"",
            Overrides::default(),
        )
        .unwrap();
        assert!(matches!(s.store, StoreUrl::Postgres(_)));
        assert!(!format!("{s:?}").contains("s3cret"), "Debug redacts it");
        let env = Overrides {
            store_url: Some("sqlite:///var/lib/assist/x.db".into()),
            ..Default::default()
        };
        let s = resolve("[store]\nurl = \"postgres://db/a\"", env).unwrap();
        assert_eq!(
            s.store,
            StoreUrl::Sqlite(PathBuf::from("/var/lib/assist/x.db"))
        );
        let e = resolve(
            "[store]\nurl = \"mysql://assist:s3cret@db/a\"",
            Overrides::default(),
        )
        .unwrap_err()
        .0;
        assert!(e.contains("`store.url` (store.url in assist.toml)"), "{e}");
        assert!(
            e.contains("unknown scheme 'mysql'") && !e.contains("s3cret"),
            "{e}"
        );
        assert!(resolve("[store]\nuri = \"x\"", Overrides::default()).is_err());
    }

    #[test]
    fn defaults() {
        let s = resolve("", Overrides::default()).unwrap();
        assert_eq!(s.listen, DEFAULT_LISTEN.parse().unwrap());
        assert_eq!(s.metrics_listen, DEFAULT_METRICS_LISTEN.parse().unwrap());
        assert_eq!(s.data_dir, PathBuf::from(DEFAULT_DATA_DIR));
        assert_eq!(s.tls, TlsSource::SelfSigned);
        assert!(s.auth.dev_issuer);
        assert_eq!(s.auth.audiences, vec![DEFAULT_AUDIENCE]);
    }

    #[test]
    fn overrides_beat_file() {
        let s = resolve(
            "listen = \"127.0.0.1:1000\"\nmetrics_listen = \"127.0.0.1:1001\"",
            Overrides {
                listen: Some("127.0.0.1:2000".into()),
                ..Default::default()
            },
        )
        .unwrap();
        assert_eq!(s.listen.port(), 2000);
        assert_eq!(s.metrics_listen.port(), 1001);
    }

    #[test]
    fn bad_values_name_the_setting_and_source() {
        let e = resolve(
            "",
            Overrides {
                listen: Some("nope".into()),
                ..Default::default()
            },
        )
        .unwrap_err();
        assert!(
            e.0.contains("`listen`") && e.0.contains("ASSIST_LISTEN") && e.0.contains("nope"),
            "{e}"
        );
        let e = resolve("metrics_listen = \"x\"", Overrides::default()).unwrap_err();
        assert!(e.0.contains("metrics_listen in assist.toml"), "{e}");
        let e = resolve(
            "",
            Overrides {
                shutdown_grace_secs: Some("soon".into()),
                ..Default::default()
            },
        )
        .unwrap_err();
        assert!(e.0.contains("shutdown_grace_secs"), "{e}");
        let e = resolve("[tls]\ncert_file = \"/nonexistent\"", Overrides::default()).unwrap_err();
        assert!(e.0.contains("`tls`"), "{e}");
        let e = resolve("[auth]\ndev_issuer = false", Overrides::default()).unwrap_err();
        assert!(e.0.contains("no token issuer"), "{e}");
        let e = resolve(
            "[[auth.issuers]]\nissuer = \"https://x\"\njwks_uri = \"http://x/keys\"",
            Overrides::default(),
        )
        .unwrap_err();
        assert!(e.0.contains("https://"), "{e}");
        let e = resolve(
            "",
            Overrides {
                dev_issuer: Some("maybe".into()),
                ..Default::default()
            },
        )
        .unwrap_err();
        assert!(e.0.contains("auth.dev_issuer"), "{e}");
    }

    #[test]
    fn connection_limits_parse_and_are_bounded() {
        let s = resolve("", Overrides::default()).unwrap();
        assert_eq!(s.limits, ConnectionLimits::default());
        let s = resolve(
            "[limits]\nmax_connections = 100\nmax_connections_per_address = 10\nheader_read_timeout_secs = 2",
            Overrides::default(),
        )
        .unwrap();
        assert_eq!(s.limits.max_connections, 100);
        assert_eq!(s.limits.max_connections_per_address, 10);
        assert_eq!(s.limits.header_read_timeout, Duration::from_secs(2));
        let e = resolve("[limits]\nmax_connections = 0", Overrides::default()).unwrap_err();
        assert!(e.0.contains("limits.max_connections"), "{e}");
        let e = resolve(
            "[limits]\nheader_read_timeout_secs = 0",
            Overrides::default(),
        )
        .unwrap_err();
        assert!(e.0.contains("limits.header_read_timeout_secs"), "{e}");
    }

    #[test]
    fn a_log_filter_that_would_silence_logging_is_refused() {
        let log = |v: &str| {
            resolve(
                "",
                Overrides {
                    log: Some(v.into()),
                    ..Default::default()
                },
            )
        };
        let e = log("verbose").unwrap_err();
        assert!(
            e.0.contains("`log`") && e.0.contains("ASSIST_LOG") && e.0.contains("'verbose'"),
            "{e}"
        );
        assert!(log("info,hyper").is_err());
        assert!(log("").is_err());
        assert!(log("assistd=loud").is_err());
        let e = resolve("log = \"chatty\"", Overrides::default()).unwrap_err();
        assert!(e.0.contains("log in assist.toml"), "{e}");
        for good in [
            "info",
            "DEBUG",
            "assistd=debug,info",
            "warn,assist_relay=trace",
            "off",
        ] {
            assert_eq!(log(good).map(|s| s.log).ok().as_deref(), Some(good));
        }
    }

    /// The keys serde expects in one table, from its unknown-field error.
    fn expected_keys(toml_text: &str) -> Vec<String> {
        let e = toml::from_str::<FileConfig>(toml_text)
            .unwrap_err()
            .to_string();
        let after = e.split("expected").nth(1).unwrap_or_else(|| panic!("{e}"));
        after
            .split('`')
            .skip(1)
            .step_by(2)
            .map(str::to_owned)
            .collect()
    }

    #[test]
    fn serve_help_documents_every_file_key_and_nothing_else() {
        let mut keys = Vec::new();
        for (prefix, probe) in [
            ("", "__probe = 1"),
            ("tls.", "[tls]\n__probe = 1"),
            ("auth.", "[auth]\n__probe = 1"),
            ("auth.issuers.", "[[auth.issuers]]\n__probe = 1"),
            ("auth.sign_in.", "[auth.sign_in]\n__probe = 1"),
            ("relay.", "[relay]\n__probe = 1"),
            ("signal.", "[signal]\n__probe = 1"),
            ("limits.", "[limits]\n__probe = 1"),
            ("store.", "[store]\n__probe = 1"),
            ("cluster.", "[cluster]\n__probe = 1"),
            ("keys.", "[keys]\n__probe = 1"),
        ] {
            let found = expected_keys(probe);
            let at_least = if prefix == "store." { 1 } else { 2 };
            assert!(found.len() >= at_least, "{prefix}: {found:?}");
            for k in found {
                keys.push(format!("{prefix}{k}"));
            }
        }
        // Tables are documented by their keys.
        keys.retain(|k| {
            ![
                "tls",
                "auth",
                "relay",
                "signal",
                "limits",
                "auth.sign_in",
                "store",
                "cluster",
                "keys",
            ]
            .contains(&k.as_str())
        });
        let documented: Vec<&str> = SETTINGS_DOC.iter().map(|d| d.key).collect();
        for k in &keys {
            assert!(
                documented.contains(&k.as_str()),
                "{k} is not in SETTINGS_DOC"
            );
        }
        for d in &documented {
            assert!(
                keys.iter().any(|k| k == d),
                "SETTINGS_DOC has {d}, the file does not"
            );
        }
        let help = settings_help();
        for d in SETTINGS_DOC {
            assert!(
                help.contains(&format!("{} [{}]", d.key, d.default)),
                "{help}"
            );
            if let Some(env) = d.env {
                assert!(help.contains(env), "{env}");
            }
        }
    }

    #[test]
    fn cluster_mode_role_and_keys_are_checked() {
        let pg = "[store]\nurl = \"postgres://db/a\"\n";
        // Embedded by default: no cluster, every role, the data directory's keys.
        let s = resolve("", Overrides::default()).unwrap();
        assert_eq!((s.cluster, s.role), (None, Role::All));
        assert_eq!(s.keys, KeyFiles::default());
        // A role other than `all` needs cluster mode.
        let e = resolve("role = \"relay\"", Overrides::default()).unwrap_err();
        assert!(
            e.0.contains("`role`") && e.0.contains("cluster mode"),
            "{e}"
        );
        let e = resolve("role = \"bridge\"", Overrides::default()).unwrap_err();
        assert!(e.0.contains("'bridge'"), "{e}");
        // Cluster settings without a Redis URL are a mistake, not ignored.
        let e = resolve("[cluster]\nnode_id = \"a\"", Overrides::default()).unwrap_err();
        assert!(e.0.contains("redis_url"), "{e}");
        // Set: the node id defaults to the host name; the env var wins over the file.
        let env = Overrides {
            redis_url: Some("redis://:pw@10.0.0.5:6379/0".into()),
            node_id: Some("node-2".into()),
            role: Some("broker".into()),
            ..Default::default()
        };
        let text = format!("{pg}[cluster]\nredis_url = \"redis://x\"\nheartbeat_secs = 5");
        let s = resolve(&text, env).unwrap();
        let c = s.cluster.unwrap();
        assert_eq!(c.redis_url, "redis://:pw@10.0.0.5:6379/0");
        assert_eq!(
            (c.node_id.as_str(), c.heartbeat),
            ("node-2", Duration::from_secs(5))
        );
        assert_eq!(s.role, Role::Broker);
        let s = resolve(
            &format!("{pg}[cluster]\nredis_url = \"redis://x\""),
            Overrides::default(),
        )
        .unwrap();
        assert!(valid_node_id(&s.cluster.unwrap().node_id));
        // Bad values name the setting; the password never shows.
        let e = resolve(
            "[cluster]\nredis_url = \"http://u:hunter2@x\"",
            Overrides::default(),
        )
        .unwrap_err();
        assert!(
            e.0.contains("cluster.redis_url") && !e.0.contains("hunter2"),
            "{e}"
        );
        for bad_id in ["", "a b", "x/y", &"n".repeat(65)] {
            let o = Overrides {
                node_id: Some(bad_id.to_owned()),
                ..Default::default()
            };
            let text = format!("{pg}[cluster]\nredis_url = \"redis://x\"");
            let e = resolve(&text, o).unwrap_err();
            assert!(e.0.contains("cluster.node_id"), "{bad_id:?}: {e}");
        }
        let e = resolve(
            &format!("{pg}[cluster]\nredis_url = \"redis://x\"\nheartbeat_secs = 0"),
            Overrides::default(),
        )
        .unwrap_err();
        assert!(e.0.contains("heartbeat_secs"), "{e}");
        // A cluster's brokers share PostgreSQL; a relay-only node needs no database.
        let e = resolve("[cluster]\nredis_url = \"redis://x\"", Overrides::default()).unwrap_err();
        assert!(e.0.contains("store.url") && e.0.contains("postgres"), "{e}");
        let s = resolve(
            "role = \"relay\"\n[cluster]\nredis_url = \"redis://x\"",
            Overrides::default(),
        )
        .unwrap();
        assert_eq!(s.role, Role::Relay);
        // Key files must exist.
        let e = resolve(
            "[keys]\nsignal_code_file = \"/nonexistent/k\"",
            Overrides::default(),
        )
        .unwrap_err();
        assert!(
            e.0.contains("keys.signal_code_file") && e.0.contains("/nonexistent/k"),
            "{e}"
        );
        let dir = tempfile::tempdir().unwrap();
        let key = dir.path().join("ticket.key");
        std::fs::write(&key, [7u8; 32]).unwrap();
        let o = Overrides {
            relay_ticket_file: Some(key.clone()),
            ..Default::default()
        };
        assert_eq!(resolve("", o).unwrap().keys.relay_ticket, Some(key));
    }

    #[test]
    fn relay_public_addresses_are_host_ports_and_derive_quic() {
        let s = resolve("", Overrides::default()).unwrap();
        assert_eq!(
            s.relay_wss_public("localhost:8443".into()),
            "localhost:8443"
        );
        assert_eq!(
            s.relay_quic_public("localhost:8443".into(), 8443),
            "localhost:8443"
        );
        let o = Overrides {
            relay_public_addr: Some("relay-2.example.com:443".into()),
            ..Default::default()
        };
        let s = resolve("[relay]\npublic_addr = \"x:1\"", o).unwrap();
        assert_eq!(s.relay_wss_public("l:1".into()), "relay-2.example.com:443");
        assert_eq!(
            s.relay_quic_public("l:1".into(), 4433),
            "relay-2.example.com:4433"
        );
        let s = resolve(
            "[relay]\npublic_addr = \"a:443\"\npublic_quic_addr = \"b:7443\"",
            Overrides::default(),
        )
        .unwrap();
        assert_eq!(s.relay_quic_public("l:1".into(), 4433), "b:7443");
        for bad_addr in ["https://a:443", "a", "a:0", "a:443/x", ":443"] {
            let o = Overrides {
                relay_public_addr: Some(bad_addr.into()),
                ..Default::default()
            };
            let e = resolve("", o).unwrap_err();
            assert!(
                e.0.contains("relay.public_addr") && e.0.contains("ASSIST_RELAY_PUBLIC_ADDR"),
                "{bad_addr}: {e}"
            );
        }
        let e = resolve("[relay]\npublic_quic_addr = \"q\"", Overrides::default()).unwrap_err();
        assert!(e.0.contains("relay.public_quic_addr in assist.toml"), "{e}");
    }

    #[test]
    fn the_readme_configuration_example_is_a_valid_file() {
        // README.md's ```toml block documents every table; unknown keys are refused, so a
        // renamed setting breaks this test rather than the reader's server.
        let readme = include_str!("../../../README.md");
        let start = readme.find("```toml\n").expect("README has a toml block") + 8;
        let end = start + readme[start..].find("```").expect("the block ends");
        let file: FileConfig =
            toml::from_str(&readme[start..end]).expect("README's example parses");
        assert!(file.cluster.redis_url.is_none() && file.store.url.is_none());
        assert!(!file.auth.issuers.is_empty());
    }

    #[test]
    fn redacted_urls_hide_passwords_only() {
        assert_eq!(redact_url("redis://:pw@h:6379/0"), "redis://:***@h:6379/0");
        assert_eq!(redact_url("redis://u:pw@h"), "redis://u:***@h");
        assert_eq!(redact_url("redis://pw@h"), "redis://***@h");
        assert_eq!(redact_url("redis://h:6379"), "redis://h:6379");
        assert_eq!(redact_url("nonsense"), "nonsense");
    }

    #[test]
    fn unknown_keys_are_refused() {
        assert!(toml::from_str::<FileConfig>("lisen = \"x\"").is_err());
        assert!(toml::from_str::<FileConfig>("[auth]\naudience = \"x\"").is_err());
    }

    #[test]
    fn issuers_are_bound_to_tenants() {
        use assist_identity::TenantBinding;
        let issuer = |extra: &str| {
            resolve(
                &format!("[[auth.issuers]]\njwks_file = \"/k.json\"\n{extra}"),
                Overrides::default(),
            )
        };
        let s = issuer("issuer = \"https://idp.example\"\ntenants = [\"t1\", \"t2\"]").unwrap();
        assert_eq!(
            s.auth.issuers[0].tenants,
            TenantBinding::Only(vec!["t1".into(), "t2".into()])
        );
        let s = issuer("issuer = \"https://idp.example\"\ntenants = [\"*\"]").unwrap();
        assert_eq!(s.auth.issuers[0].tenants, TenantBinding::Any);
        // An Entra ID single-tenant issuer names its tenant.
        let tid = "72F988BF-86F1-41AF-91AB-2D7CD011DB47";
        let s = issuer(&format!(
            "issuer = \"https://login.microsoftonline.com/{tid}/v2.0\""
        ))
        .unwrap();
        assert_eq!(
            s.auth.issuers[0].tenants,
            TenantBinding::Only(vec![tid.to_ascii_lowercase()])
        );
        // A template binds each token to the tenant in its own iss.
        let s = issuer("issuer = \"https://login.microsoftonline.com/{tenantid}/v2.0\"").unwrap();
        assert_eq!(s.auth.issuers[0].tenants, TenantBinding::Any);
        for bad in [
            "issuer = \"https://idp.example\"",
            "issuer = \"https://idp.example\"\ntenants = []",
            "issuer = \"https://idp.example\"\ntenants = [\"*\", \"t1\"]",
        ] {
            let e = issuer(bad).unwrap_err();
            assert!(
                e.0.contains("auth.issuers[0]") && e.0.contains("tenant"),
                "{bad}: {e}"
            );
        }
        let e = resolve(
            "[[auth.issuers]]\nissuer = \"https://login.microsoftonline.com/{tenantid}/v2.0\"\ndiscovery = true",
            Overrides::default(),
        )
        .unwrap_err();
        assert!(e.0.contains("jwks_uri"), "{e}");
        let e = resolve(
            "",
            Overrides {
                oidc_issuer: Some("https://idp.example/realms/x".into()),
                ..Default::default()
            },
        )
        .unwrap_err();
        assert!(e.0.contains("ASSIST_AUTH_OIDC_TENANTS"), "{e}");
    }

    #[test]
    fn sign_in_provider_is_validated() {
        let s = resolve(
            "[auth.sign_in]\nissuer = \"https://login.example.com/t/v2.0/\"\nclient_id = \"c1\"",
            Overrides::default(),
        )
        .unwrap();
        let si = s.auth.sign_in.unwrap();
        assert_eq!(si.issuer, "https://login.example.com/t/v2.0");
        assert_eq!(si.cli_client_id, "c1");
        assert_eq!(si.scopes, DEFAULT_SIGN_IN_SCOPES);
        let e = resolve(
            "[auth.sign_in]\nissuer = \"http://x\"\nclient_id = \"c\"",
            Overrides::default(),
        )
        .unwrap_err();
        assert!(e.0.contains("auth.sign_in.issuer"), "{e}");
        let e = resolve("[auth]\ndev_token_ttl_secs = 1", Overrides::default()).unwrap_err();
        assert!(e.0.contains("dev_token_ttl_secs"), "{e}");
    }

    #[test]
    fn oidc_issuer_turns_dev_issuer_off_by_default() {
        let s = resolve(
            "",
            Overrides {
                oidc_issuer: Some("https://login.example.com/t/v2.0".into()),
                oidc_tenants: Some("t".into()),
                ..Default::default()
            },
        )
        .unwrap();
        assert!(!s.auth.dev_issuer);
        assert_eq!(s.auth.issuers[0].keys, IssuerKeys::Discovery);
    }
}
