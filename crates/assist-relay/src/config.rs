//! The relay's limits and timeouts.

use assist_relay_proto::queue::QueueLimits;
use std::time::Duration;

/// Relay settings; [`RelayConfig::default`] holds the documented defaults.
#[derive(Debug, Clone)]
pub struct RelayConfig {
    /// How long the first leg waits for the second (close 4003 after).
    pub pair_timeout: Duration,
    /// Largest frame payload (close 4005 over it).
    pub max_frame_bytes: usize,
    /// Per-direction queue bounds and keyframe request interval.
    pub queue: QueueLimits,
    /// A leg that accepts no bytes this long while frames wait is closed (4007); one deadline per
    /// leg, checked by the session's watchdog about once a second.
    pub slow_consumer_timeout: Duration,
    /// No frame in either direction this long closes the session (4008).
    pub idle_timeout: Duration,
    /// Bytes per second a session may forward (both directions together), over 5 s running → 4009.
    pub max_session_bytes_per_sec: u64,
    /// Most sessions this node holds (503 / 4010 beyond).
    pub max_sessions: usize,
    /// The relay's public address: what tickets must name in `relay`.
    pub public_addr: Option<String>,
    /// The HTTPS address the relay listens on, as advertised to clients (set by the server at
    /// start): what tickets must name when no `public_addr` is configured.
    pub listen_addr: Option<String>,
    /// A WebSocket ping goes to each WSS leg this often (liveness and round-trip samples).
    pub ping_interval: Duration,
    /// Bytes one batched write may carry.
    pub write_batch_bytes: usize,
}

impl Default for RelayConfig {
    fn default() -> Self {
        Self {
            pair_timeout: Duration::from_secs(30),
            max_frame_bytes: assist_relay_proto::frame::DEFAULT_MAX_PAYLOAD,
            queue: QueueLimits::default(),
            slow_consumer_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(300),
            max_session_bytes_per_sec: 100 * 1024 * 1024,
            max_sessions: 20_000,
            public_addr: None,
            listen_addr: None,
            ping_interval: Duration::from_secs(15),
            write_batch_bytes: 256 * 1024,
        }
    }
}
