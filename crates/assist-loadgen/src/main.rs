//! `assist-loadgen`: load for the Assist relay, and the same traffic through a TLS pass-through
//! (HAProxy, or nothing) for comparison. See `benches/README.md`.

mod connect;
mod parse;
mod stats;
mod traffic;

use anyhow::{anyhow, bail};
use clap::{Args, Parser, Subcommand};
use connect::{BaselineTarget, RelayTarget, Transport};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

#[derive(Parser)]
#[command(
    name = "assist-loadgen",
    about = "Load generator for the Assist relay and a TLS pass-through baseline"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Pairs through the relay: tickets, WSS or QUIC, `paired`, then traffic.
    Relay(RelayArgs),
    /// The same traffic as raw relay frames over TLS through a TCP proxy (HAProxy) to the
    /// generator's own TLS backend; point --front at --backend-listen for direct TLS.
    Baseline(BaselineArgs),
}

#[derive(Args)]
struct TrafficArgs {
    /// Pairs (sharer + helper).
    #[arg(long, default_value_t = 1)]
    pairs: usize,
    /// Screen frame payload bytes (at least 16).
    #[arg(long, default_value_t = 65536)]
    frame_bytes: usize,
    /// Screen frames per second per sharer, or `unthrottled`.
    #[arg(long, default_value = "30")]
    fps: String,
    /// Input events per second per helper (32-byte payloads; 0 = none).
    #[arg(long, default_value_t = 100.0)]
    input_hz: f64,
    /// Measured window (e.g. 10s, 500ms).
    #[arg(long, default_value = "10s")]
    duration: String,
    /// Warm-up before measuring.
    #[arg(long, default_value = "2s")]
    warmup: String,
    /// Runtime worker threads.
    #[arg(long, default_value_t = 1)]
    workers: usize,
    /// The relay's (or proxy's) pid: its CPU time and RSS are read from /proc.
    #[arg(long)]
    relay_pid: Option<u32>,
    /// Pairs connecting at once.
    #[arg(long, default_value_t = 64)]
    connect_concurrency: usize,
    /// Print one JSON object instead of the table.
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
struct RelayArgs {
    /// The server's data directory (relay-ticket-key.pem, tls/cert.pem).
    #[arg(long)]
    data_dir: PathBuf,
    /// The relay's HTTPS (WSS) address.
    #[arg(long, default_value = "127.0.0.1:8443")]
    addr: SocketAddr,
    /// The relay's QUIC address (default: --addr).
    #[arg(long)]
    quic_addr: Option<SocketAddr>,
    /// The certificate to trust (default: DATA_DIR/tls/cert.pem).
    #[arg(long)]
    ca: Option<PathBuf>,
    /// wss, quic, or mixed (helper QUIC, sharer WSS).
    #[arg(long, value_enum, default_value = "wss")]
    transport: Transport,
    #[command(flatten)]
    t: TrafficArgs,
}

#[derive(Args)]
struct BaselineArgs {
    /// Where sharers connect (the proxy's front, or --backend-listen for direct TLS).
    #[arg(long)]
    front: SocketAddr,
    /// Where the generator's TLS backend listens (the helpers' end).
    #[arg(long)]
    backend_listen: SocketAddr,
    /// Backend certificate (PEM); also what the sharers trust.
    #[arg(long)]
    cert: PathBuf,
    /// Backend key (PEM).
    #[arg(long)]
    key: PathBuf,
    #[command(flatten)]
    t: TrafficArgs,
}

fn parse_duration(s: &str) -> anyhow::Result<Duration> {
    let s = s.trim();
    let (num, mult) = if let Some(v) = s.strip_suffix("ms") {
        (v, 1e-3)
    } else if let Some(v) = s.strip_suffix('s') {
        (v, 1.0)
    } else if let Some(v) = s.strip_suffix('m') {
        (v, 60.0)
    } else {
        (s, 1.0)
    };
    let v: f64 = num
        .trim()
        .parse()
        .map_err(|_| anyhow!("bad duration `{s}` (use e.g. 10s, 500ms)"))?;
    if !(0.0..=3600.0).contains(&(v * mult)) {
        bail!("duration `{s}` is outside 0..1h");
    }
    Ok(Duration::from_secs_f64(v * mult))
}

fn traffic(a: &TrafficArgs) -> anyhow::Result<traffic::Traffic> {
    if a.pairs == 0 || a.pairs > 20_000 {
        bail!("--pairs must be 1..=20000");
    }
    if a.frame_bytes < parse::STAMP_LEN || a.frame_bytes > 16 * 1024 * 1024 {
        bail!("--frame-bytes must be 16..=16777216");
    }
    let fps = if a.fps == "unthrottled" {
        None
    } else {
        let f: f64 = a
            .fps
            .parse()
            .map_err(|_| anyhow!("--fps takes a number or `unthrottled`"))?;
        if !(f > 0.0 && f <= 10_000.0) {
            bail!("--fps must be in (0, 10000]");
        }
        Some(f)
    };
    if !(0.0..=10_000.0).contains(&a.input_hz) {
        bail!("--input-hz must be 0..=10000");
    }
    if a.workers == 0 || a.workers > 64 {
        bail!("--workers must be 1..=64");
    }
    let duration = parse_duration(&a.duration)?;
    if duration.is_zero() {
        bail!("--duration must be positive");
    }
    Ok(traffic::Traffic {
        frame_bytes: a.frame_bytes,
        fps,
        input_hz: a.input_hz,
        warmup: parse_duration(&a.warmup)?,
        duration,
    })
}

fn info(mode: &str, transport: &str, a: &TrafficArgs, t: &traffic::Traffic) -> stats::RunInfo {
    stats::RunInfo {
        mode: mode.into(),
        transport: transport.into(),
        pairs: a.pairs,
        frame_bytes: t.frame_bytes,
        fps: t.fps,
        input_hz: t.input_hz,
        duration_s: t.duration.as_secs_f64(),
        warmup_s: t.warmup.as_secs_f64(),
        connect_s: 0.0,
        tls: String::new(),
        relay_rss_start_kib: a
            .relay_pid
            .and_then(|p| stats::sample(&p.to_string()))
            .map(|s| s.rss_kib),
        workers: a.workers,
    }
}

async fn run(cmd: Cmd) -> anyhow::Result<(serde_json::Value, bool)> {
    let _ = stats::now_ns();
    match cmd {
        Cmd::Relay(a) => {
            let t = traffic(&a.t)?;
            let transport = match a.transport {
                Transport::Wss => "wss",
                Transport::Quic => "quic",
                Transport::Mixed => "mixed",
            };
            let mut info = info("relay", transport, &a.t, &t);
            let target = RelayTarget {
                addr: a.addr,
                quic_addr: a.quic_addr.unwrap_or(a.addr),
                ca: a
                    .ca
                    .clone()
                    .unwrap_or_else(|| a.data_dir.join("tls/cert.pem")),
                data_dir: a.data_dir.clone(),
                transport: a.transport,
                concurrency: a.t.connect_concurrency,
            };
            info.tls = match a.transport {
                Transport::Quic => "QUIC (TLS 1.3)".into(),
                _ => {
                    connect::probe_tls(
                        target.addr,
                        std::sync::Arc::new(connect::client_tls(&target.ca)?),
                    )
                    .await
                }
            };
            let started = stats::now_ns();
            let mut endpoints = Vec::new();
            let pairs =
                connect::relay_pairs(&target, a.t.pairs, t.frame_bytes, &mut endpoints).await?;
            info.connect_s = (stats::now_ns() - started) as f64 / 1e9;
            let v = traffic::run(pairs, &t, a.t.relay_pid, info).await;
            for ep in &endpoints {
                ep.close(quinn::VarInt::from_u32(1000), b"done");
            }
            for ep in &endpoints {
                let _ = tokio::time::timeout(Duration::from_secs(2), ep.wait_idle()).await;
            }
            Ok((v, a.t.json))
        }
        Cmd::Baseline(a) => {
            let t = traffic(&a.t)?;
            let mut info = info("baseline", "tls", &a.t, &t);
            let target = BaselineTarget {
                front: a.front,
                backend: a.backend_listen,
                cert: a.cert.clone(),
                key: a.key.clone(),
                concurrency: a.t.connect_concurrency,
            };
            let started = stats::now_ns();
            let (pairs, tls) = connect::baseline_pairs(&target, a.t.pairs, t.frame_bytes).await?;
            info.connect_s = (stats::now_ns() - started) as f64 / 1e9;
            info.tls = tls;
            if a.front == a.backend_listen {
                info.mode = "direct".into();
            }
            let v = traffic::run(pairs, &t, a.t.relay_pid, info).await;
            Ok((v, a.t.json))
        }
    }
}

fn main() {
    let cli = Cli::parse();
    let workers = match &cli.cmd {
        Cmd::Relay(a) => a.t.workers,
        Cmd::Baseline(a) => a.t.workers,
    }
    .clamp(1, 64);
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(workers)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("assist-loadgen: cannot start the runtime: {e}");
            std::process::exit(2);
        }
    };
    let code = match rt.block_on(run(cli.cmd)) {
        Ok((v, json)) => {
            if json {
                println!("{v}");
            } else {
                print!("{}", stats::human(&v));
            }
            0
        }
        Err(e) => {
            eprintln!("assist-loadgen: {e:#}");
            1
        }
    };
    // Open legs and tasks are dropped with the process; the relay sees the connections close.
    std::process::exit(code);
}
