//! The `assistd` command line: `serve` runs the server, `token` prints a dev-issuer token.

use anyhow::Context;
use assistd::config::{self, FileConfig, Overrides, Settings};
use assistd::logging::LogOutput;
use clap::{Args, CommandFactory, FromArgMatches, Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

/// mimalloc instead of glibc's malloc: the signalling path allocates many small, short-lived
/// messages across threads, where glibc spent about 15% of the server's CPU (docs/benchmarks.md).
/// Built without the `mimalloc` feature, glibc malloc is used (for heap profilers).
#[cfg(feature = "mimalloc")]
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Assist: a self-hostable Remote Help service (broker, relay and Graph-compatible admin API).
#[derive(Parser)]
#[command(name = "assistd", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the server. With no options it runs on embedded defaults: data in ./assist-data
    /// (SQLite database, a self-signed certificate for localhost and a development token
    /// issuer, all created on first start), HTTPS on 127.0.0.1:8443, metrics on 127.0.0.1:9090.
    Serve(ServeArgs),
    /// Print a token signed by the local development issuer, for scripts, tests and trying
    /// things out. Admin tokens carry Graph permission names in `roles` (see --roles).
    Token(TokenArgs),
}

#[derive(Args)]
struct CommonArgs {
    /// TOML configuration file. Settings are taken from defaults, then this file, then
    /// ASSIST_* environment variables, then these flags.
    #[arg(long, env = "ASSIST_CONFIG", value_name = "FILE")]
    config: Option<PathBuf>,
    /// Directory for the database, TLS certificate and dev issuer key (created if missing).
    /// [default: ./assist-data]
    #[arg(long, env = "ASSIST_DATA_DIR", value_name = "DIR")]
    data_dir: Option<PathBuf>,
}

#[derive(Args)]
struct ServeArgs {
    #[command(flatten)]
    common: CommonArgs,
    /// HTTPS address for the admin API and the WSS signalling and relay endpoints.
    /// [default: 127.0.0.1:8443]
    #[arg(long, env = "ASSIST_LISTEN", value_name = "ADDR")]
    listen: Option<String>,
    /// UDP address for QUIC relay connections. [default: 127.0.0.1:8443]
    #[arg(long, env = "ASSIST_QUIC_LISTEN", value_name = "ADDR")]
    quic_listen: Option<String>,
    /// Plain-HTTP address for /metrics, /healthz and /readyz; keep it private.
    /// [default: 127.0.0.1:9090]
    #[arg(long, env = "ASSIST_METRICS_LISTEN", value_name = "ADDR")]
    metrics_listen: Option<String>,
    /// Public base URL (e.g. https://assist.example.com) used in absolute links such as
    /// @odata.nextLink; by default taken from the request's Host header.
    #[arg(long, env = "ASSIST_PUBLIC_URL", value_name = "URL")]
    public_url: Option<String>,
    /// Log filter, e.g. "info" or "assistd=debug,info".
    #[arg(long, env = "ASSIST_LOG", value_name = "FILTER")]
    log: Option<String>,
    /// What this node runs: all (signalling, admin API, pages and relay), broker (all but the
    /// relay) or relay (the relay only; no database). broker and relay need cluster mode
    /// (ASSIST_CLUSTER_REDIS_URL). [default: all]
    #[arg(long, env = "ASSIST_ROLE", value_name = "ROLE", value_parser = ["all", "broker", "relay"])]
    role: Option<String>,
}

#[derive(Args)]
struct TokenArgs {
    #[command(flatten)]
    common: CommonArgs,
    /// Tenant id (`tid`).
    #[arg(long, value_name = "TID")]
    tenant: String,
    /// User principal name (`upn`), e.g. admin@contoso.com. Omit it (and give --device) for a
    /// device token: a device with nobody signed in.
    #[arg(
        long,
        value_name = "UPN",
        required_unless_present = "device",
        default_value = ""
    )]
    user: String,
    /// Comma-separated Graph permissions put in `roles`, e.g.
    /// DeviceManagementServiceConfig.ReadWrite.All.
    #[arg(long, value_name = "R1,R2", value_delimiter = ',')]
    roles: Vec<String>,
    /// Comma-separated delegated permissions put in `scp`.
    #[arg(long, value_name = "S1,S2", value_delimiter = ',')]
    scopes: Vec<String>,
    /// Device id (`deviceid`), for a sharer signed in on a device or a device itself.
    #[arg(long, value_name = "DEVICEID")]
    device: Option<String>,
    /// Comma-separated Entra directory role template ids put in `wids`; Global Administrator
    /// (62e90394-69f5-4237-9190-012177145e10) or Intune Administrator
    /// (3a2c62db-5318-420d-8d74-23affee5d9d5) grants every admin API call.
    #[arg(long, value_name = "W1,W2", value_delimiter = ',')]
    wids: Vec<String>,
    /// Object id (`oid`); derived from tenant and user when omitted.
    #[arg(long, value_name = "OID")]
    oid: Option<String>,
    /// Display name (`name`); the UPN's local part when omitted.
    #[arg(long, value_name = "NAME")]
    name: Option<String>,
    /// Lifetime: a number with s, m, h or d (e.g. 90s, 15m, 1h, 7d).
    #[arg(long, default_value = "1h", value_parser = parse_ttl, value_name = "TTL")]
    ttl: Duration,
}

fn parse_ttl(s: &str) -> Result<Duration, String> {
    let (num, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len()));
    let n: u64 = num
        .parse()
        .map_err(|_| format!("'{s}' is not a duration like 90s, 15m, 1h or 7d"))?;
    let secs = match unit {
        "s" | "" => n,
        "m" => n * 60,
        "h" => n * 3600,
        "d" => n * 86400,
        _ => return Err(format!("'{s}': unit must be s, m, h or d")),
    };
    if secs == 0 || secs > 30 * 86400 {
        return Err("ttl must be between 1s and 30d".into());
    }
    Ok(Duration::from_secs(secs))
}

fn load(common: &CommonArgs, mut overrides: Overrides) -> Result<Settings, config::ConfigError> {
    let (file, name) = match &common.config {
        Some(p) => (config::read_file(p)?, p.display().to_string()),
        None => (FileConfig::default(), "(no config file)".to_owned()),
    };
    overrides.data_dir = common.data_dir.clone();
    let env = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
    overrides.tls_cert_file = env("ASSIST_TLS_CERT_FILE").map(PathBuf::from);
    overrides.tls_key_file = env("ASSIST_TLS_KEY_FILE").map(PathBuf::from);
    overrides.audiences = env("ASSIST_AUTH_AUDIENCES");
    overrides.dev_issuer = env("ASSIST_AUTH_DEV_ISSUER");
    overrides.oidc_issuer = env("ASSIST_AUTH_OIDC_ISSUER");
    overrides.oidc_tenants = env("ASSIST_AUTH_OIDC_TENANTS");
    overrides.shutdown_grace_secs = env("ASSIST_SHUTDOWN_GRACE_SECS");
    overrides.store_url = env("ASSIST_STORE_URL");
    overrides.redis_url = env("ASSIST_CLUSTER_REDIS_URL");
    overrides.relay_public_addr = env("ASSIST_RELAY_PUBLIC_ADDR");
    overrides.relay_public_quic_addr = env("ASSIST_RELAY_PUBLIC_QUIC_ADDR");
    overrides.node_id = env("ASSIST_CLUSTER_NODE_ID");
    overrides.relay_ticket_file = env("ASSIST_KEYS_RELAY_TICKET_FILE").map(PathBuf::from);
    overrides.signal_code_file = env("ASSIST_KEYS_SIGNAL_CODE_FILE").map(PathBuf::from);
    overrides.dev_issuer_file = env("ASSIST_KEYS_DEV_ISSUER_FILE").map(PathBuf::from);
    Settings::resolve(file, &name, overrides)
}

fn main() -> ExitCode {
    // Before anything allocates much (see the function).
    let huge_pages = assistd::admission::disable_transparent_huge_pages();
    // `serve --help` ends with every setting: TOML key, environment variable and default.
    let matches = Cli::command()
        .mut_subcommand("serve", |c| c.after_help(config::settings_help()))
        .get_matches();
    let cli = match Cli::from_arg_matches(&matches) {
        Ok(cli) => cli,
        Err(e) => e.exit(),
    };
    match cli.command {
        Command::Serve(args) => {
            let overrides = Overrides {
                listen: args.listen,
                quic_listen: args.quic_listen,
                metrics_listen: args.metrics_listen,
                public_url: args.public_url,
                log: args.log,
                role: args.role,
                ..Default::default()
            };
            let settings = match load(&args.common, overrides) {
                Ok(s) => s,
                Err(e) => {
                    eprintln!("assistd: {e}");
                    return ExitCode::from(2);
                }
            };
            let log = match init_tracing(&settings.log) {
                Ok(log) => log,
                Err(e) => {
                    eprintln!("assistd: cannot start the log writer: {e}");
                    return ExitCode::FAILURE;
                }
            };
            assistd::admission::log_huge_pages(&huge_pages);
            let rt = match tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()
            {
                Ok(rt) => rt,
                Err(e) => {
                    eprintln!("assistd: cannot start the runtime: {e}");
                    return ExitCode::FAILURE;
                }
            };
            let code = match rt.block_on(serve(settings, &log)) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    tracing::error!("{e:#}");
                    say(&format!("assistd: {e:#}"));
                    // Keys that differ from the cluster's are a configuration error.
                    if e.downcast_ref::<assistd::keys::KeysDiffer>().is_some() {
                        ExitCode::from(2)
                    } else {
                        ExitCode::FAILURE
                    }
                }
            };
            // The last lines ("stopped") are still queued; give them a moment, never forever.
            log.flush(Duration::from_secs(2));
            code
        }
        Command::Token(args) => match token(args) {
            Ok(t) => {
                println!("{t}");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("assistd: {e:#}");
                ExitCode::from(2)
            }
        },
    }
}

/// Logs to stderr through [`LogOutput`]: a log line never blocks the server or stops it, even
/// when stderr is a pipe whose reader has gone or stopped reading.
fn init_tracing(filter: &str) -> std::io::Result<LogOutput> {
    // `Settings::resolve` has checked the filter, so this fallback is never taken.
    let filter = tracing_subscriber::EnvFilter::try_new(filter)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let dropped = prometheus::IntCounter::new(
        "assist_log_lines_dropped_total",
        "Log lines dropped because stderr was full or broken.",
    )
    .map_err(std::io::Error::other)?;
    let log = LogOutput::new(std::io::stderr(), dropped)?;
    use std::io::IsTerminal;
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .log_internal_errors(false)
        .with_writer(log.clone())
        .init();
    Ok(log)
}

/// One line on stdout for the person who started the server; ignored if stdout is gone
/// (`println!` would panic on a broken pipe).
fn say(line: &str) {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}").and_then(|()| out.flush());
}

async fn serve(settings: Settings, log: &LogOutput) -> anyhow::Result<()> {
    let mut signals = ShutdownSignals::register();
    let server = assistd::start(settings).await?;
    server
        .registry()
        .register(Box::new(log.dropped().clone()))
        .context("registering the log metrics")?;
    say(&format!(
        "assistd: serving https://{} (metrics on http://{}); certificate {}; role {}",
        server.https_addr,
        server.metrics_addr,
        server.cert_path.display(),
        server.role.as_str()
    ));
    let cancel = server.cancel_token();
    let hard_stop_log = log.clone();
    tokio::spawn(async move {
        signals.next().await;
        // Cancel before logging: nothing may stand between SIGTERM and the drain.
        cancel.cancel();
        tracing::info!("shutdown requested; draining (a second signal stops at once)");
        signals.next().await;
        tracing::warn!("second shutdown signal; stopping without draining");
        hard_stop_log.flush(Duration::from_millis(500));
        std::process::exit(1);
    });
    server.wait().await;
    Ok(())
}

/// SIGTERM and SIGINT, caught from the moment this is made: a signal sent while the server is
/// still starting is then neither lost nor fatal (the default action would kill the process).
struct ShutdownSignals {
    #[cfg(unix)]
    term: Option<tokio::signal::unix::Signal>,
    #[cfg(unix)]
    int: Option<tokio::signal::unix::Signal>,
}

impl ShutdownSignals {
    /// Registers the handlers; must run inside the runtime.
    fn register() -> ShutdownSignals {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{signal, SignalKind};
            ShutdownSignals {
                term: signal(SignalKind::terminate()).ok(),
                int: signal(SignalKind::interrupt()).ok(),
            }
        }
        #[cfg(not(unix))]
        {
            ShutdownSignals {}
        }
    }

    /// The next SIGTERM or SIGINT (Ctrl-C).
    async fn next(&mut self) {
        #[cfg(unix)]
        {
            async fn recv(s: &mut Option<tokio::signal::unix::Signal>) {
                match s {
                    Some(s) => {
                        s.recv().await;
                    }
                    None => std::future::pending().await,
                }
            }
            let ShutdownSignals { term, int } = self;
            tokio::select! {
                _ = recv(term) => {}
                _ = recv(int) => {}
            }
        }
        #[cfg(not(unix))]
        {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

fn token(args: TokenArgs) -> anyhow::Result<String> {
    let settings = load(&args.common, Overrides::default())?;
    if !settings.auth.dev_issuer {
        // The token is still printed (a script may mint for another server), but this
        // configuration's server would refuse it: say so rather than let a 401 puzzle later.
        eprintln!(
            "assistd: warning: the dev issuer is disabled in this configuration \
             (auth.dev_issuer / ASSIST_AUTH_DEV_ISSUER); a server started with it will refuse this token"
        );
    }
    std::fs::create_dir_all(&settings.data_dir)
        .with_context(|| format!("creating data directory {}", settings.data_dir.display()))?;
    // The same key file as the server's (keys.dev_issuer_file, or the data directory's).
    let dev = assistd::keys::dev_issuer(&settings)?;
    let audience = settings
        .auth
        .audiences
        .first()
        .cloned()
        .unwrap_or_else(|| config::DEFAULT_AUDIENCE.to_owned());
    let req = assist_identity::TokenRequest {
        tenant_id: args.tenant,
        user_principal_name: args.user,
        object_id: args.oid,
        display_name: args.name,
        roles: args.roles.into_iter().filter(|r| !r.is_empty()).collect(),
        scopes: args.scopes.into_iter().filter(|s| !s.is_empty()).collect(),
        device_id: args.device,
        directory_roles: args.wids.into_iter().filter(|w| !w.is_empty()).collect(),
        ttl: args.ttl,
        audience,
        ..Default::default()
    };
    Ok(dev.mint(&req)?)
}
