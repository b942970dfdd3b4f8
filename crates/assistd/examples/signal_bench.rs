//! Signalling benchmark: code → active round trips against a running `assistd` (embedded
//! store), reporting p50/p99 latency, pairings per second, and pairings per server CPU-second.
//!
//! ```text
//! cargo run --release -p assistd --example signal_bench -- \
//!     --data-dir DIR --addr 127.0.0.1:8443 --pairs 2000 --concurrency 16 --server-pid PID
//! ```
//! It sets up a demo tenant through the admin API (tokens from the data dir's dev issuer),
//! then runs `concurrency` helper/sharer connection pairs, each doing sessions back to back:
//! requestCode → redeemCode → requestMode (warnings acknowledged) → consent → sessionActive
//! on both sides → endSession. The latency measured is from sending `requestCode` to the
//! helper's `sessionActive`.
//!
//! Cluster mode (`benches/cluster-bench.sh`): `--sharer-addr ADDR` connects the sharers to
//! another node than the helpers (`--addr`), so every pairing crosses nodes; `--server-pid`
//! takes a comma-separated list (every node, Redis, PostgreSQL), whose CPU is summed.
//!
//! `--warmup N`: each pair first does N pairings that are not measured (cold caches, the first
//! connections of the store's pool), then every pair starts the measured ones together; the CPU
//! and time windows start there.
//!
//! For a soak (`benches/soak.sh`): `--duration SECS` runs until that much time has passed
//! instead of stopping after `--pairs`, and `--rate N` caps the pairings started per second
//! across all pairs (0: as fast as they go). Tokens live for the run plus ten minutes.

use assist_client::signal::{SignalClient, SignalEvent};
use assist_identity::{DevIssuer, TokenRequest};
use serde_json::{json, Value};
use std::time::{Duration, Instant};

/// The steps of a pairing, as the helper (h) and sharer (s) see them, for the slowest pairing's
/// breakdown.
const STEPS: [&str; 5] = [
    "h_codeIssued",
    "s_sessionJoined",
    "h_sessionJoined",
    "s_consentRequested",
    "h_sessionActive",
];

fn arg(name: &str, default: &str) -> String {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1).cloned())
        .unwrap_or_else(|| default.to_owned())
}

fn cpu_secs(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = stat.rsplit_once(')')?.1;
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = f.get(11)?.parse::<f64>().ok()? + f.get(12)?.parse::<f64>().ok()?;
    Some(ticks / 100.0)
}

async fn expect(c: &mut SignalClient, ty: &str) -> anyhow::Result<Value> {
    loop {
        match tokio::time::timeout(Duration::from_secs(30), c.recv()).await?? {
            SignalEvent::Message(m) if m["type"] == ty => return Ok(m),
            SignalEvent::Message(m) if m["type"] == "error" => {
                anyhow::bail!("error while waiting for {ty}: {m}")
            }
            SignalEvent::Message(_) => {}
            SignalEvent::Closed(c) => anyhow::bail!("closed {c:?} while waiting for {ty}"),
        }
    }
}

async fn api_post(
    http: &reqwest::Client,
    admin: &str,
    url: String,
    body: Value,
) -> anyhow::Result<Value> {
    let r = http
        .post(url)
        .bearer_auth(admin)
        .json(&body)
        .send()
        .await?
        .error_for_status()?;
    Ok(r.json::<Value>().await.unwrap_or(Value::Null))
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let data = std::path::PathBuf::from(arg("--data-dir", "./assist-data"));
    let addr: std::net::SocketAddr = arg("--addr", "127.0.0.1:8443").parse()?;
    let pairs: usize = arg("--pairs", "1000").parse()?;
    let concurrency: usize = arg("--concurrency", "8").parse()?;
    let sharer_addr: std::net::SocketAddr = arg("--sharer-addr", &addr.to_string()).parse()?;
    let server_pids: Vec<u32> = arg("--server-pid", "")
        .split(',')
        .filter(|p| !p.is_empty())
        .map(|p| p.trim().parse())
        .collect::<Result<_, _>>()?;
    // The CPU of every process named, summed (None if any is gone).
    let cpu_all = || -> Option<f64> {
        if server_pids.is_empty() {
            return None;
        }
        server_pids.iter().map(|p| cpu_secs(*p)).sum()
    };
    let duration: Option<Duration> = arg("--duration", "")
        .parse::<u64>()
        .ok()
        .map(Duration::from_secs);
    let rate: f64 = arg("--rate", "0").parse()?;
    let warmup: usize = arg("--warmup", "0").parse()?;
    // Every pair, and this task, meet here after the warm-up.
    let barrier = std::sync::Arc::new(tokio::sync::Barrier::new(concurrency + 1));
    let token_ttl = duration.map_or(Duration::from_secs(3600), |d| {
        d.max(Duration::from_secs(3000)) + Duration::from_secs(600)
    });
    // Each pair's share of the rate: the pause between two of its pairings' starts.
    let interval = (rate > 0.0).then(|| Duration::from_secs_f64(concurrency as f64 / rate));
    let dev = DevIssuer::load_or_create(&data)?;
    let tok = |upn: &str, roles: &[&str]| {
        dev.mint(&TokenRequest {
            tenant_id: "bench".into(),
            user_principal_name: upn.into(),
            roles: roles.iter().map(|r| r.to_string()).collect(),
            ttl: token_ttl,
            audience: "api://assist".into(),
            ..Default::default()
        })
    };
    let pem = std::fs::read(data.join("tls/cert.pem"))?;
    let http = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(&pem)?)
        .build()?;
    let admin = tok(
        "admin@bench.example",
        &[
            "DeviceManagementServiceConfig.ReadWrite.All",
            "User.ReadWrite.All",
            "Group.ReadWrite.All",
            "DeviceManagementRBAC.ReadWrite.All",
        ],
    )?;
    let base = format!("https://localhost:{}", addr.port());
    let post = |path: String, body: Value| api_post(&http, &admin, format!("{base}{path}"), body);
    http.patch(format!(
        "{base}/beta/deviceManagement/remoteAssistanceSettings"
    ))
    .bearer_auth(&admin)
    .json(&json!({"remoteAssistanceState": "enabled", "allowSessionsToUnenrolledDevices": true}))
    .send()
    .await?
    .error_for_status()?;
    let group = post(
        "/beta/groups".into(),
        json!({"displayName": "Bench helpers"}),
    )
    .await?;
    let gid = group["id"].as_str().unwrap_or_default().to_owned();
    for i in 0..concurrency {
        let u = post("/beta/users".into(), json!({"userPrincipalName": format!("helper{i}@bench.example"), "displayName": format!("Helper {i}")})).await?;
        post(
            format!("/beta/groups/{gid}/members/$ref"),
            json!({"@odata.id": u["id"]}),
        )
        .await?;
    }
    post(
        "/beta/deviceManagement/roleAssignments".into(),
        json!({"displayName": "bench", "members": [gid], "scopeType": "allLicensedUsers", "roleDefinition@odata.bind": "builtin-help-desk-operator"}),
    )
    .await?;

    let tls = assist_client::tls::client_config(&data.join("tls/cert.pem"))?;
    let per_worker = pairs.div_ceil(concurrency);
    let mut tasks = Vec::new();
    for i in 0..concurrency {
        let ht = tok(&format!("helper{i}@bench.example"), &[])?;
        let st = tok(&format!("sharer{i}@bench.example"), &[])?;
        let tls = tls.clone();
        let barrier = barrier.clone();
        tasks.push(tokio::spawn(async move {
            let mut h = SignalClient::connect(addr, "localhost", tls.clone(), Some(&ht)).await?;
            let mut s = SignalClient::connect(sharer_addr, "localhost", tls, Some(&st)).await?;
            let mut lat = Vec::with_capacity(per_worker);
            let mut slowest: Option<(Duration, [Duration; STEPS.len()], Duration)> = None;
            let mut n = 0usize;
            let mut warmed = warmup == 0;
            if warmed {
                barrier.wait().await;
            }
            let mut started = Instant::now();
            let mut next_start = Instant::now();
            loop {
                if !warmed && n == warmup {
                    warmed = true;
                    lat.clear();
                    slowest = None;
                    barrier.wait().await;
                    started = Instant::now();
                    next_start = Instant::now();
                }
                let more = match duration {
                    Some(d) => started.elapsed() < d,
                    None => !warmed || lat.len() < per_worker,
                };
                if !more {
                    break;
                }
                if let Some(iv) = interval {
                    tokio::time::sleep_until(next_start.into()).await;
                    next_start += iv;
                }
                n += 1;
                let t0 = Instant::now();
                let mut steps = [Duration::ZERO; STEPS.len()];
                h.send(&json!({"id": n, "type": "requestCode"})).await?;
                let issued = expect(&mut h, "codeIssued").await?;
                steps[0] = t0.elapsed();
                let sid = issued["sessionId"].clone();
                s.send(&json!({"id": n, "type": "redeemCode", "code": issued["code"]})).await?;
                expect(&mut s, "sessionJoined").await?;
                steps[1] = t0.elapsed();
                expect(&mut h, "sessionJoined").await?;
                steps[2] = t0.elapsed();
                h.send(&json!({"id": n, "type": "requestMode", "sessionId": sid, "mode": "fullControl", "acknowledgeWarnings": ["deviceUnenrolled"]})).await?;
                expect(&mut s, "consentRequested").await?;
                steps[3] = t0.elapsed();
                s.send(&json!({"id": n, "type": "consent", "sessionId": sid, "allow": true})).await?;
                expect(&mut h, "sessionActive").await?;
                steps[4] = t0.elapsed();
                lat.push(steps[4]);
                if slowest.as_ref().is_none_or(|(t, _, _)| steps[4] > *t) {
                    slowest = Some((steps[4], steps, started.elapsed()));
                }
                expect(&mut s, "sessionActive").await?;
                h.send(&json!({"id": n, "type": "endSession", "sessionId": sid})).await?;
                expect(&mut h, "sessionEnded").await?;
                expect(&mut s, "sessionEnded").await?;
            }
            anyhow::Ok((lat, slowest))
        }));
    }
    // After every pair's warm-up: the measured window starts (a pair that failed meanwhile
    // never arrives: give up rather than wait forever).
    if tokio::time::timeout(Duration::from_secs(300), barrier.wait())
        .await
        .is_err()
    {
        // Name what the pairs that stopped said.
        let mut why = Vec::new();
        for t in tasks.into_iter().filter(|t| t.is_finished()) {
            match t.await {
                Ok(Err(e)) => why.push(format!("{e:#}")),
                Ok(Ok(_)) => {}
                Err(e) => why.push(format!("a pair's task failed: {e}")),
            }
        }
        anyhow::bail!(
            "the warm-up did not finish within 300 s; {} pair(s) stopped: {}",
            why.len(),
            why.join("; ")
        );
    }
    let cpu0 = cpu_all();
    let started = Instant::now();
    let mut all = Vec::new();
    let mut slowest: Option<(Duration, [Duration; STEPS.len()], Duration)> = None;
    for t in tasks {
        let (lat, worst) = t.await??;
        all.extend(lat);
        if let Some(w) = worst {
            if slowest.as_ref().is_none_or(|s| w.0 > s.0) {
                slowest = Some(w);
            }
        }
    }
    let elapsed = started.elapsed().as_secs_f64();
    let cpu = match (cpu0, cpu_all()) {
        (Some(a), Some(b)) => Some(b - a),
        _ => None,
    };
    all.sort();
    if all.is_empty() {
        anyhow::bail!("no pairing completed");
    }
    let pct =
        |p: f64| all[((all.len() as f64 * p) as usize).min(all.len() - 1)].as_secs_f64() * 1000.0;
    let out = json!({
        "pairings": all.len(),
        "concurrency": concurrency,
        "crossNode": sharer_addr != addr,
        "warmupPerPair": warmup,
        "seconds": elapsed,
        "pairingsPerSecond": all.len() as f64 / elapsed,
        "codeToActiveMs": {"p50": pct(0.50), "p99": pct(0.99), "max": pct(1.0)},
        // The slowest pairing, step by step (ms since requestCode was sent), and when it started
        // (seconds into the measured window): where a stall sits.
        "slowest": slowest.map(|(_, steps, at)| {
            let mut m = serde_json::Map::new();
            for (name, d) in STEPS.iter().zip(steps) {
                m.insert((*name).into(), json!(d.as_secs_f64() * 1000.0));
            }
            m.insert("startedAtSec".into(), json!(at.as_secs_f64()));
            Value::Object(m)
        }),
        "serverCpuSeconds": cpu,
        "pairingsPerServerCpuSecond": cpu.map(|c| all.len() as f64 / c),
    });
    println!("{}", serde_json::to_string_pretty(&out)?);
    Ok(())
}
