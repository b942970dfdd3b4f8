//! The shared clock, the measurement window, counters and latency histograms, /proc readings and the
//! report.

use hdrhistogram::Histogram;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

static BASE: OnceLock<Instant> = OnceLock::new();

/// Nanoseconds since the process-wide base instant (the timestamp in every payload).
pub fn now_ns() -> u64 {
    BASE.get_or_init(Instant::now).elapsed().as_nanos() as u64
}

/// The instant `ns` nanoseconds after the base.
pub fn instant_at(ns: u64) -> Instant {
    *BASE.get_or_init(Instant::now) + Duration::from_nanos(ns)
}

/// Relay channel numbers the generator measures.
pub const SCREEN: u8 = 1;
/// Input channel.
pub const INPUT: u8 = 2;

/// When traffic starts, when measuring starts and stops, and when the run is over.
#[derive(Debug, Clone, Copy)]
pub struct Timeline {
    /// Traffic starts.
    pub t0: u64,
    /// Warm-up over: measuring starts.
    pub warm_end: u64,
    /// Measuring stops; senders stop.
    pub meas_end: u64,
    /// Receivers stop counting frames sent in the window.
    pub drain_end: u64,
}

impl Timeline {
    /// Whether `t` (ns) lies in the measured window.
    pub fn in_window(&self, t: u64) -> bool {
        t >= self.warm_end && t < self.meas_end
    }
}

/// Counters shared by all tasks (updated once per read batch or at a sender's end).
#[derive(Default)]
pub struct Shared {
    /// Screen frames received in the window (by receive time).
    pub frames: AtomicU64,
    /// Their bytes (whole relay frames).
    pub frame_bytes: AtomicU64,
    /// Input frames received in the window.
    pub inputs: AtomicU64,
    /// Their bytes.
    pub input_bytes: AtomicU64,
    /// Screen frames sent in the window (by send time).
    pub frames_sent: AtomicU64,
    /// Inputs sent in the window.
    pub inputs_sent: AtomicU64,
    /// Screen frames received whose send time was in the window.
    pub frames_rx_sent_in_window: AtomicU64,
    /// Same for inputs.
    pub inputs_rx_sent_in_window: AtomicU64,
    /// Frame ticks skipped because the sender was late (in the window).
    pub frames_skipped: AtomicU64,
    /// Input ticks skipped.
    pub inputs_skipped: AtomicU64,
    /// `keyframeRequest` control frames seen by sharers (whole run).
    pub keyframe_requests: AtomicU64,
    /// WebSocket pings seen.
    pub pings: AtomicU64,
    /// Latency histograms (ns): frames, inputs.
    pub hist: Mutex<Option<[Histogram<u64>; 2]>>,
    /// Closes and errors, by message, with counts.
    pub events: Mutex<BTreeMap<String, u64>>,
    /// The QUIC connections' paths as the window closed (each side's view of its own sending).
    pub quic: Mutex<QuicPaths>,
}

/// QUIC path statistics summed over the generator's connections, read as the window closes.
#[derive(Debug, Default, Clone, Copy)]
pub struct QuicPaths {
    /// Connections read.
    pub connections: u64,
    /// Packets they declared lost.
    pub lost_packets: u64,
    /// Their congestion events.
    pub congestion_events: u64,
    /// MTU black holes detected (each drops the connection's datagrams back to 1,200 bytes).
    pub black_holes: u64,
    /// The smallest and largest current MTU among them.
    pub mtu_min: u16,
    /// See `mtu_min`.
    pub mtu_max: u16,
}

impl Shared {
    /// Empty counters and histograms.
    pub fn new() -> Self {
        let h = || Histogram::<u64>::new_with_bounds(1_000, 120_000_000_000, 3).expect("bounds");
        Shared {
            hist: Mutex::new(Some([h(), h()])),
            ..Default::default()
        }
    }

    /// Adds one QUIC connection's path statistics to [`Shared::quic`].
    pub fn quic_path(&self, p: &quinn::PathStats) {
        let mut q = self.quic.lock().unwrap_or_else(|p| p.into_inner());
        q.mtu_min = if q.connections == 0 {
            p.current_mtu
        } else {
            q.mtu_min.min(p.current_mtu)
        };
        q.mtu_max = q.mtu_max.max(p.current_mtu);
        q.connections += 1;
        q.lost_packets += p.lost_packets;
        q.congestion_events += p.congestion_events;
        q.black_holes += p.black_holes_detected;
    }

    /// Counts an event (a close, an error) by its message.
    pub fn event(&self, what: String) {
        *self
            .events
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(what)
            .or_insert(0) += 1;
    }
}

/// A receiver's accumulator, merged into [`Shared`] once per read batch.
#[derive(Default)]
pub struct Local {
    frames: u64,
    frame_bytes: u64,
    inputs: u64,
    input_bytes: u64,
    frames_sw: u64,
    inputs_sw: u64,
    lat: [Vec<u64>; 2],
}

impl Local {
    /// A data frame of `channel` sent at `ts`, fully received at `now`.
    pub fn data(&mut self, tl: &Timeline, channel: u8, ts: u64, bytes: u64, now: u64) {
        let i = usize::from(channel != SCREEN);
        if tl.in_window(now) {
            if i == 0 {
                self.frames += 1;
                self.frame_bytes += bytes;
            } else {
                self.inputs += 1;
                self.input_bytes += bytes;
            }
            self.lat[i].push(now.saturating_sub(ts).max(1_000));
        }
        if tl.in_window(ts) {
            if i == 0 {
                self.frames_sw += 1;
            } else {
                self.inputs_sw += 1;
            }
        }
    }

    /// Adds what was gathered to `s` and starts over.
    pub fn flush(&mut self, s: &Shared) {
        if self.frames_sw + self.inputs_sw + self.frames + self.inputs == 0 {
            return;
        }
        s.frames.fetch_add(self.frames, Relaxed);
        s.frame_bytes.fetch_add(self.frame_bytes, Relaxed);
        s.inputs.fetch_add(self.inputs, Relaxed);
        s.input_bytes.fetch_add(self.input_bytes, Relaxed);
        s.frames_rx_sent_in_window
            .fetch_add(self.frames_sw, Relaxed);
        s.inputs_rx_sent_in_window
            .fetch_add(self.inputs_sw, Relaxed);
        if !self.lat[0].is_empty() || !self.lat[1].is_empty() {
            let mut g = s.hist.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(h) = g.as_mut() {
                for (i, lat) in self.lat.iter().enumerate() {
                    for &v in lat {
                        h[i].saturating_record(v);
                    }
                }
            }
        }
        self.frames = 0;
        self.frame_bytes = 0;
        self.inputs = 0;
        self.input_bytes = 0;
        self.frames_sw = 0;
        self.inputs_sw = 0;
        self.lat[0].clear();
        self.lat[1].clear();
    }
}

/// CPU time and memory of a process, from /proc.
#[derive(Debug, Clone, Copy, Default)]
pub struct ProcSample {
    /// When it was read (ns since the base).
    pub at: u64,
    /// utime + stime, seconds (clock ticks of 1/100 s).
    pub cpu_s: f64,
    /// Sum over the threads' schedstat run times, seconds (ns precision; threads alive now).
    pub sched_s: f64,
    /// VmRSS, KiB.
    pub rss_kib: u64,
}

/// Reads `pid`'s CPU time and RSS ("self" for this process).
pub fn sample(pid: &str) -> Option<ProcSample> {
    let at = now_ns();
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name (which may contain spaces), from field 3 on.
    let rest = &stat[stat.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let utime: f64 = f.get(11)?.parse().ok()?;
    let stime: f64 = f.get(12)?.parse().ok()?;
    let mut sched_ns = 0u64;
    if let Ok(dir) = std::fs::read_dir(format!("/proc/{pid}/task")) {
        for t in dir.flatten() {
            if let Ok(s) = std::fs::read_to_string(t.path().join("schedstat")) {
                sched_ns += s
                    .split_whitespace()
                    .next()
                    .and_then(|v| v.parse::<u64>().ok())
                    .unwrap_or(0);
            }
        }
    }
    let rss_kib = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.split_whitespace().next()?.parse().ok())
        })
        .unwrap_or(0);
    Some(ProcSample {
        at,
        cpu_s: (utime + stime) / 100.0,
        sched_s: sched_ns as f64 / 1e9,
        rss_kib,
    })
}

/// Machine-wide counters: busy and steal CPU seconds (all cores, /proc/stat) and UDP receive-buffer
/// overflows (/proc/net/snmp).
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemSample {
    /// user+nice+system+irq+softirq, seconds.
    pub busy_s: f64,
    /// steal, seconds.
    pub steal_s: f64,
    /// Udp RcvbufErrors.
    pub udp_rcvbuf_errors: u64,
}

/// Reads [`SystemSample`].
pub fn system_sample() -> Option<SystemSample> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let cpu: Vec<f64> = stat
        .lines()
        .next()?
        .split_whitespace()
        .skip(1)
        .filter_map(|v| v.parse().ok())
        .collect();
    let at = |i: usize| cpu.get(i).copied().unwrap_or(0.0);
    let snmp = std::fs::read_to_string("/proc/net/snmp").unwrap_or_default();
    let mut udp = snmp.lines().filter(|l| l.starts_with("Udp:"));
    let errors = match (udp.next(), udp.next()) {
        (Some(h), Some(v)) => h
            .split_whitespace()
            .zip(v.split_whitespace())
            .find(|(k, _)| *k == "RcvbufErrors")
            .and_then(|(_, v)| v.parse().ok())
            .unwrap_or(0),
        _ => 0,
    };
    Some(SystemSample {
        busy_s: (at(0) + at(1) + at(2) + at(5) + at(6)) / 100.0,
        steal_s: at(7) / 100.0,
        udp_rcvbuf_errors: errors,
    })
}

/// Samples taken around the window by the sampler thread.
#[derive(Debug, Default, Clone, Copy)]
pub struct Samples {
    /// Relay (or HAProxy) at the window's start and end.
    pub relay: Option<(ProcSample, ProcSample)>,
    /// This generator, same points.
    pub gen: Option<(ProcSample, ProcSample)>,
    /// The machine, same points.
    pub system: Option<(SystemSample, SystemSample)>,
}

/// Sleeps (on an OS thread, so a saturated runtime cannot delay it) until the window's edges and
/// samples the relay and this process there.
pub fn spawn_sampler(tl: Timeline, relay_pid: Option<u32>) -> std::thread::JoinHandle<Samples> {
    std::thread::spawn(move || {
        let wait = |t: u64| {
            let now = now_ns();
            if t > now {
                std::thread::sleep(Duration::from_nanos(t - now));
            }
        };
        let pid = relay_pid.map(|p| p.to_string());
        wait(tl.warm_end);
        let s0 = system_sample();
        let r0 = pid.as_deref().and_then(sample);
        let g0 = sample("self");
        wait(tl.meas_end);
        let s1 = system_sample();
        let r1 = pid.as_deref().and_then(sample);
        let g1 = sample("self");
        Samples {
            relay: r0.zip(r1),
            gen: g0.zip(g1),
            system: s0.zip(s1),
        }
    })
}

/// What a run was, for the report.
#[derive(Debug, Clone)]
pub struct RunInfo {
    /// "relay" or "baseline".
    pub mode: String,
    /// wss, quic, mixed, or tls (baseline).
    pub transport: String,
    /// Pairs.
    pub pairs: usize,
    /// Screen frame payload bytes.
    pub frame_bytes: usize,
    /// Frames per second per sharer; None = unthrottled.
    pub fps: Option<f64>,
    /// Inputs per second per helper.
    pub input_hz: f64,
    /// Measured seconds.
    pub duration_s: f64,
    /// Warm-up seconds.
    pub warmup_s: f64,
    /// Seconds spent connecting and pairing.
    pub connect_s: f64,
    /// Negotiated TLS version and cipher suite of the first TLS connection.
    pub tls: String,
    /// Relay RSS before connecting (KiB).
    pub relay_rss_start_kib: Option<u64>,
    /// Generator runtime worker threads.
    pub workers: usize,
}

fn pct(h: &Histogram<u64>, q: f64) -> f64 {
    if h.is_empty() {
        return 0.0;
    }
    h.value_at_quantile(q) as f64 / 1000.0
}

/// Builds the JSON result object.
pub fn result_json(info: &RunInfo, s: &Shared, samples: &Samples) -> Value {
    let g = s.hist.lock().unwrap_or_else(|p| p.into_inner());
    let hists = g.as_ref().expect("histograms");
    let d = info.duration_s;
    let frames = s.frames.load(Relaxed);
    let frame_bytes = s.frame_bytes.load(Relaxed);
    let inputs = s.inputs.load(Relaxed);
    let input_bytes = s.input_bytes.load(Relaxed);
    let lat = |h: &Histogram<u64>| {
        json!({
            "count": h.len(),
            "p50_us": pct(h, 0.50),
            "p99_us": pct(h, 0.99),
            "p999_us": pct(h, 0.999),
            "max_us": if h.is_empty() { 0.0 } else { h.max() as f64 / 1000.0 },
        })
    };
    let bytes_per_s = (frame_bytes + input_bytes) as f64 / d;
    let msgs_per_s = (frames + inputs) as f64 / d;
    let mut v = json!({
        "mode": info.mode,
        "transport": info.transport,
        "pairs": info.pairs,
        "frame_bytes": info.frame_bytes,
        "fps": info.fps,
        "input_hz": info.input_hz,
        "duration_s": d,
        "warmup_s": info.warmup_s,
        "connect_s": info.connect_s,
        "tls": info.tls,
        "workers": info.workers,
        "frames_per_s": frames as f64 / d,
        "frame_bytes_per_s": frame_bytes as f64 / d,
        "inputs_per_s": inputs as f64 / d,
        "bytes_per_s": bytes_per_s,
        "msgs_per_s": msgs_per_s,
        "frame_latency": lat(&hists[0]),
        "input_latency": lat(&hists[1]),
        "frames_sent": s.frames_sent.load(Relaxed),
        "inputs_sent": s.inputs_sent.load(Relaxed),
        "frames_dropped": s.frames_sent.load(Relaxed).saturating_sub(s.frames_rx_sent_in_window.load(Relaxed)),
        "inputs_dropped": s.inputs_sent.load(Relaxed).saturating_sub(s.inputs_rx_sent_in_window.load(Relaxed)),
        "frames_skipped": s.frames_skipped.load(Relaxed),
        "inputs_skipped": s.inputs_skipped.load(Relaxed),
        "keyframe_requests": s.keyframe_requests.load(Relaxed),
        "pings": s.pings.load(Relaxed),
        "events": *s.events.lock().unwrap_or_else(|p| p.into_inner()),
    });
    let q = *s.quic.lock().unwrap_or_else(|p| p.into_inner());
    if q.connections > 0 {
        v["quic"] = json!({
            "connections": q.connections,
            "lost_packets": q.lost_packets,
            "congestion_events": q.congestion_events,
            "black_holes": q.black_holes,
            "mtu_min": q.mtu_min,
            "mtu_max": q.mtu_max,
        });
    }
    if let Some((a, b)) = samples.gen {
        let wall = (b.at - a.at) as f64 / 1e9;
        v["gen_cpu_pct"] = json!(100.0 * (b.cpu_s - a.cpu_s) / wall);
    }
    if let (Some((a, b)), Some((g0, g1))) = (samples.system, samples.gen) {
        // CPU that neither the server nor the generator used: other processes disturbing the run.
        let wall = (g1.at - g0.at) as f64 / 1e9;
        let ours = (g1.cpu_s - g0.cpu_s)
            + samples
                .relay
                .map(|(r0, r1)| r1.cpu_s - r0.cpu_s)
                .unwrap_or(0.0);
        v["other_cpu_pct"] = json!((100.0 * ((b.busy_s - a.busy_s) - ours) / wall).max(0.0));
        v["steal_pct"] = json!(100.0 * (b.steal_s - a.steal_s) / wall);
        v["udp_rcvbuf_errors"] = json!(b.udp_rcvbuf_errors.saturating_sub(a.udp_rcvbuf_errors));
    }
    if let Some((a, b)) = samples.relay {
        let wall = (b.at - a.at) as f64 / 1e9;
        let cpu = b.cpu_s - a.cpu_s;
        let sched = b.sched_s - a.sched_s;
        // Rates over the nominal window, CPU over the sampled one (they differ by microseconds).
        let cpu_rate = cpu / wall;
        v["relay_cpu_s"] = json!(cpu);
        v["relay_cpu_s_schedstat"] = json!(sched);
        v["relay_cpu_pct"] = json!(100.0 * cpu_rate);
        v["relay_rss_kib"] = json!(b.rss_kib);
        if let Some(start) = info.relay_rss_start_kib {
            v["relay_rss_start_kib"] = json!(start);
            v["relay_rss_per_pair_kib"] =
                json!(b.rss_kib.saturating_sub(start) as f64 / info.pairs.max(1) as f64);
        }
        if cpu_rate > 0.0 {
            v["bytes_per_relay_cpu_s"] = json!(bytes_per_s / cpu_rate);
            v["msgs_per_relay_cpu_s"] = json!(msgs_per_s / cpu_rate);
        }
    }
    v
}

fn num(v: &Value, k: &str) -> f64 {
    v.get(k).and_then(Value::as_f64).unwrap_or(f64::NAN)
}

/// The human-readable report.
pub fn human(v: &Value) -> String {
    let mut o = String::new();
    let fps = v["fps"]
        .as_f64()
        .map(|f| format!("{f} fps"))
        .unwrap_or_else(|| "unthrottled".into());
    o += &format!(
        "{} over {}: {} pairs x {} B screen frames @ {}, inputs @ {} Hz; {} s measured after {} s warm-up (connect {:.1} s; {})\n",
        v["mode"].as_str().unwrap_or(""),
        v["transport"].as_str().unwrap_or(""),
        v["pairs"],
        v["frame_bytes"],
        fps,
        v["input_hz"],
        v["duration_s"],
        v["warmup_s"],
        num(v, "connect_s"),
        v["tls"].as_str().unwrap_or(""),
    );
    o += &format!(
        "  received: {:.0} frames/s ({:.1} MB/s), {:.0} inputs/s; {:.0} msgs/s, {:.1} MB/s total\n",
        num(v, "frames_per_s"),
        num(v, "frame_bytes_per_s") / 1e6,
        num(v, "inputs_per_s"),
        num(v, "msgs_per_s"),
        num(v, "bytes_per_s") / 1e6,
    );
    for (name, k) in [("frame", "frame_latency"), ("input", "input_latency")] {
        let l = &v[k];
        o += &format!(
            "  {name} latency us: p50 {:.0}  p99 {:.0}  p99.9 {:.0}  max {:.0}  (n={})\n",
            num(l, "p50_us"),
            num(l, "p99_us"),
            num(l, "p999_us"),
            num(l, "max_us"),
            l["count"],
        );
    }
    o += &format!(
        "  sent in window: {} frames, {} inputs; dropped: {} frames, {} inputs; skipped ticks: {} frames, {} inputs; keyframe requests: {}\n",
        v["frames_sent"], v["inputs_sent"], v["frames_dropped"], v["inputs_dropped"],
        v["frames_skipped"], v["inputs_skipped"], v["keyframe_requests"],
    );
    if v.get("relay_cpu_s").is_some() {
        o += &format!(
            "  relay: CPU {:.3} s ({:.1}% of a core; schedstat {:.3} s), RSS {:.1} MiB",
            num(v, "relay_cpu_s"),
            num(v, "relay_cpu_pct"),
            num(v, "relay_cpu_s_schedstat"),
            num(v, "relay_rss_kib") / 1024.0,
        );
        if v.get("relay_rss_per_pair_kib").is_some() {
            o += &format!(
                " (+{:.1} KiB per pair over {:.1} MiB before)",
                num(v, "relay_rss_per_pair_kib"),
                num(v, "relay_rss_start_kib") / 1024.0
            );
        }
        o += &format!(
            "\n  per relay CPU-second: {:.3} GB, {:.0} msgs\n",
            num(v, "bytes_per_relay_cpu_s") / 1e9,
            num(v, "msgs_per_relay_cpu_s"),
        );
    }
    if v.get("gen_cpu_pct").is_some() {
        o += &format!("  generator CPU: {:.1}%", num(v, "gen_cpu_pct"));
        if v.get("other_cpu_pct").is_some() {
            o += &format!(
                "; other processes {:.1}%, steal {:.1}%; UDP receive-buffer drops {}",
                num(v, "other_cpu_pct"),
                num(v, "steal_pct"),
                v["udp_rcvbuf_errors"]
            );
        }
        o += "\n";
    }
    if let Some(q) = v.get("quic") {
        o += &format!(
            "  QUIC paths ({} connections): MTU {}..{}, {} packets lost, {} congestion events, {} black holes\n",
            q["connections"], q["mtu_min"], q["mtu_max"], q["lost_packets"], q["congestion_events"], q["black_holes"]
        );
    }
    if let Some(ev) = v["events"].as_object() {
        for (k, n) in ev {
            o += &format!("  event x{n}: {k}\n");
        }
    }
    o
}
