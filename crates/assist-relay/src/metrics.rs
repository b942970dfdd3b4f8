//! The relay's Prometheus families (`assist_relay_*`). Hot-path counters are resolved once per
//! channel and direction so forwarding a frame costs atomic adds, not label lookups.

use assist_relay_proto::close::CloseCode;
use assist_relay_proto::frame::Channel;
use prometheus::{
    Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry,
};

/// Direction of travel, by the leg that sent the frame.
pub const DIRECTIONS: [&str; 2] = ["helperToSharer", "sharerToHelper"];

pub use assist_relay_proto::session::DropReason;

/// The relay's metrics.
#[derive(Clone)]
pub struct RelayMetrics {
    frames: Vec<IntCounter>,
    bytes: Vec<IntCounter>,
    dropped: Vec<IntCounter>,
    /// Frames waiting in relay queues, all sessions.
    pub queued_frames: IntGauge,
    /// How long the oldest frame of each written batch waited in the relay.
    pub forward_latency: Histogram,
    /// Paired and waiting sessions.
    pub sessions_active: IntGauge,
    legs: IntGaugeVec,
    closes: IntCounterVec,
    rejected: IntCounterVec,
    /// Keyframe requests sent to sharers.
    pub keyframe_requests: IntCounter,
    rtt: Vec<Histogram>,
    tls_layers: IntCounterVec,
}

fn idx(channel: Channel, direction: usize) -> usize {
    channel as usize * 2 + direction
}

impl RelayMetrics {
    /// Registers the families in `registry`.
    pub fn register(registry: &Registry) -> prometheus::Result<Self> {
        let frames_vec = IntCounterVec::new(
            Opts::new(
                "assist_relay_frames_total",
                "Frames forwarded, by channel and direction.",
            ),
            &["channel", "direction"],
        )?;
        let bytes_vec = IntCounterVec::new(
            Opts::new(
                "assist_relay_bytes_total",
                "Frame bytes (header and payload) forwarded, by channel and direction.",
            ),
            &["channel", "direction"],
        )?;
        let dropped_vec = IntCounterVec::new(
            Opts::new(
                "assist_relay_frames_dropped_total",
                "Frames not forwarded, by reason.",
            ),
            &["reason"],
        )?;
        let queued_frames = IntGauge::new(
            "assist_relay_queued_frames",
            "Frames waiting in relay queues.",
        )?;
        let forward_latency = Histogram::with_opts(
            HistogramOpts::new(
                "assist_relay_forward_latency_seconds",
                "Time the oldest frame of each written batch spent inside the relay.",
            )
            .buckets(vec![
                0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1,
                0.25, 1.0,
            ]),
        )?;
        let sessions_active = IntGauge::new(
            "assist_relay_sessions_active",
            "Relay sessions with at least one leg.",
        )?;
        let legs = IntGaugeVec::new(
            Opts::new("assist_relay_legs_active", "Connected legs, by transport."),
            &["transport"],
        )?;
        let closes = IntCounterVec::new(
            Opts::new(
                "assist_relay_closes_total",
                "Legs closed, by close code name.",
            ),
            &["code"],
        )?;
        let rejected = IntCounterVec::new(
            Opts::new(
                "assist_relay_joins_rejected_total",
                "Join attempts refused, by reason.",
            ),
            &["reason"],
        )?;
        let keyframe_requests = IntCounter::new(
            "assist_relay_keyframe_requests_total",
            "Keyframe requests sent to sharers.",
        )?;
        let rtt_vec = prometheus::HistogramVec::new(
            HistogramOpts::new(
                "assist_relay_leg_rtt_seconds",
                "Round-trip time samples of relay legs (WebSocket ping/pong, QUIC path statistics), by transport.",
            )
            .buckets(vec![
                0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
            ]),
            &["transport"],
        )?;
        registry.register(Box::new(rtt_vec.clone()))?;
        let tls_layers = IntCounterVec::new(
            Opts::new(
                "assist_relay_wss_tls_layers_total",
                "WSS legs by the TLS record layer they run on: `relay` (the relay's own, TLS 1.3), \
                 `rustls_tls12` (a TLS 1.2 connection), `rustls_buffered` (rustls still held data at the upgrade).",
            ),
            &["layer"],
        )?;
        registry.register(Box::new(tls_layers.clone()))?;
        let rtt = ["wss", "quic"]
            .iter()
            .map(|t| rtt_vec.with_label_values(&[t]))
            .collect();
        for c in [&frames_vec, &bytes_vec, &dropped_vec, &closes, &rejected] {
            registry.register(Box::new(c.clone()))?;
        }
        registry.register(Box::new(queued_frames.clone()))?;
        registry.register(Box::new(forward_latency.clone()))?;
        registry.register(Box::new(sessions_active.clone()))?;
        registry.register(Box::new(legs.clone()))?;
        registry.register(Box::new(keyframe_requests.clone()))?;
        let mut frames = Vec::new();
        let mut bytes = Vec::new();
        for ch in Channel::ALL {
            for d in DIRECTIONS {
                frames.push(frames_vec.with_label_values(&[ch.as_str(), d]));
                bytes.push(bytes_vec.with_label_values(&[ch.as_str(), d]));
            }
        }
        let dropped = DropReason::ALL
            .iter()
            .map(|r| dropped_vec.with_label_values(&[r.as_str()]))
            .collect();
        Ok(Self {
            frames,
            bytes,
            dropped,
            queued_frames,
            forward_latency,
            sessions_active,
            legs,
            closes,
            rejected,
            keyframe_requests,
            rtt,
            tls_layers,
        })
    }

    /// Counts a forwarded frame.
    pub fn forwarded(&self, channel: Channel, direction: usize, len: usize) {
        let i = idx(channel, direction);
        if let (Some(f), Some(b)) = (self.frames.get(i), self.bytes.get(i)) {
            f.inc();
            b.inc_by(len as u64);
        }
    }

    /// Counts dropped frames.
    pub fn dropped(&self, reason: DropReason, n: u64) {
        if let Some(c) = self.dropped.get(reason as usize) {
            c.inc_by(n);
        }
    }

    /// A leg connected (`+1`) or left (`-1`) on `transport` ("wss" or "quic").
    pub fn leg(&self, transport: &str, delta: i64) {
        self.legs.with_label_values(&[transport]).add(delta);
    }

    /// Counts a leg closed with `code`.
    pub fn closed(&self, code: CloseCode) {
        self.closes.with_label_values(&[code.name()]).inc();
    }

    /// Records a round-trip sample of a leg on `transport` ("wss" or "quic").
    pub fn rtt(&self, transport: &str, rtt: std::time::Duration) {
        let i = usize::from(transport == "quic");
        if let Some(h) = self.rtt.get(i) {
            h.observe(rtt.as_secs_f64());
        }
    }

    /// Counts a WSS leg on TLS record layer `layer` (`relay`, `rustls_tls12`, `rustls_buffered`).
    pub fn tls_layer(&self, layer: &str) {
        self.tls_layers.with_label_values(&[layer]).inc();
    }

    /// Counts a refused join.
    pub fn rejected(&self, reason: &str) {
        self.rejected.with_label_values(&[reason]).inc();
    }
}
