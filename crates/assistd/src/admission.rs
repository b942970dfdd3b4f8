//! Admission of TCP connections: a cap per listener and a cap per source address (loopback
//! peers: the listener's cap only), so one client cannot take every file descriptor (and with them `accept`, the admin API, `/healthz`
//! and new signalling connections) by opening idle connections. A refused connection is closed
//! at once, before any TLS or HTTP work, and counted in
//! `assist_connections_refused_total{listener,reason}`; open ones are in
//! `assist_connections_open{listener}`.
//!
//! Also here: raising the process's open-files soft limit to its hard limit at start.

use prometheus::{IntCounterVec, IntGaugeVec, Opts, Registry};
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

/// Caps of one listener.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Caps {
    /// Connections open at once on the listener.
    pub max_total: usize,
    /// Connections open at once from one source address (an IPv6 client's whole /64).
    pub max_per_address: usize,
}

/// Why a connection was refused (the `reason` label).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// The listener has `max_total` connections open.
    ListenerFull,
    /// The source address has `max_per_address` connections open.
    AddressFull,
}

impl Refusal {
    /// The metric label.
    pub fn label(self) -> &'static str {
        match self {
            Refusal::ListenerFull => "listener",
            Refusal::AddressFull => "address",
        }
    }
}

/// The metrics families, shared by every listener (one label value per listener).
#[derive(Clone)]
pub struct ConnectionMetrics {
    open: IntGaugeVec,
    refused: IntCounterVec,
}

impl ConnectionMetrics {
    /// Registers the families in `registry`.
    pub fn register(registry: &Registry) -> prometheus::Result<Self> {
        let open = IntGaugeVec::new(
            Opts::new(
                "assist_connections_open",
                "TCP connections open, by listener (https, metrics).",
            ),
            &["listener"],
        )?;
        let refused = IntCounterVec::new(
            Opts::new(
                "assist_connections_refused_total",
                "TCP connections closed at accept because a cap was reached, by listener and \
                 reason (listener: the listener's cap; address: the per-source-address cap).",
            ),
            &["listener", "reason"],
        )?;
        registry.register(Box::new(open.clone()))?;
        registry.register(Box::new(refused.clone()))?;
        Ok(Self { open, refused })
    }
}

/// The counts of open connections of one listener.
#[derive(Debug, Default)]
struct Table {
    total: usize,
    per_address: HashMap<IpAddr, usize>,
}

impl Table {
    /// `key` is `None` for a peer the per-address cap does not apply to (loopback).
    fn admit(&mut self, caps: Caps, key: Option<IpAddr>) -> Result<(), Refusal> {
        if self.total >= caps.max_total {
            return Err(Refusal::ListenerFull);
        }
        if let Some(key) = key {
            let n = self.per_address.entry(key).or_insert(0);
            if *n >= caps.max_per_address {
                return Err(Refusal::AddressFull);
            }
            *n += 1;
        }
        self.total += 1;
        Ok(())
    }

    fn release(&mut self, key: Option<IpAddr>) {
        if let Some(key) = key {
            match self.per_address.get_mut(&key) {
                Some(n) => {
                    *n -= 1;
                    if *n == 0 {
                        self.per_address.remove(&key);
                    }
                }
                None => return,
            }
        }
        self.total = self.total.saturating_sub(1);
    }
}

/// The key an address is counted under: IPv4 as is, IPv6 by its /64 (one client's subnet);
/// `None` for loopback, which only the listener's cap applies to: a reverse proxy or sidecar on
/// the same host, and the server's own `/healthz` self-probe, must not be throttled as one client.
fn address_key(ip: IpAddr) -> Option<IpAddr> {
    let key = match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let s = v6.segments();
                IpAddr::V6(std::net::Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
            }
        },
    };
    (!ip.is_loopback() && !key.is_loopback()).then_some(key)
}

/// Admits connections to one listener.
pub struct Admission {
    listener: &'static str,
    caps: Caps,
    table: Mutex<Table>,
    metrics: ConnectionMetrics,
}

/// An admitted connection; dropping it frees its place.
pub struct Permit {
    admission: Arc<Admission>,
    key: Option<IpAddr>,
}

impl Drop for Permit {
    fn drop(&mut self) {
        let a = &self.admission;
        if let Ok(mut t) = a.table.lock() {
            t.release(self.key);
        }
        a.metrics.open.with_label_values(&[a.listener]).dec();
    }
}

impl Admission {
    /// Admission for the listener named `listener` (the metric label).
    pub fn new(listener: &'static str, caps: Caps, metrics: ConnectionMetrics) -> Arc<Self> {
        // Make both series visible from the start, at zero.
        metrics.open.with_label_values(&[listener]).set(0);
        for r in [Refusal::ListenerFull, Refusal::AddressFull] {
            metrics.refused.with_label_values(&[listener, r.label()]);
        }
        Arc::new(Self {
            listener,
            caps,
            table: Mutex::new(Table::default()),
            metrics,
        })
    }

    /// The caps in force.
    pub fn caps(&self) -> Caps {
        self.caps
    }

    /// Admits a connection from `peer`, or says why not (and counts the refusal).
    pub fn admit(self: &Arc<Self>, peer: IpAddr) -> Result<Permit, Refusal> {
        let key = address_key(peer);
        let admitted = match self.table.lock() {
            Ok(mut t) => t.admit(self.caps, key),
            // A poisoned lock means a panic while holding it: refuse rather than guess counts.
            Err(_) => Err(Refusal::ListenerFull),
        };
        match admitted {
            Ok(()) => {
                self.metrics.open.with_label_values(&[self.listener]).inc();
                Ok(Permit {
                    admission: self.clone(),
                    key,
                })
            }
            Err(r) => {
                self.metrics
                    .refused
                    .with_label_values(&[self.listener, r.label()])
                    .inc();
                Err(r)
            }
        }
    }
}

/// The open-files limit before and after [`raise_open_files_limit`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OpenFilesLimit {
    /// The soft limit found at start (`None`: unlimited).
    pub soft_before: Option<u64>,
    /// The soft limit now.
    pub soft: Option<u64>,
    /// The hard limit (`None`: unlimited).
    pub hard: Option<u64>,
}

/// Raises the open-files soft limit to the hard limit (many systems start services at 1024,
/// which about a thousand idle connections exhaust), and logs both. Failing to raise it is a
/// warning, not an error: the connection caps still keep `accept` working.
pub fn raise_open_files_limit() -> OpenFilesLimit {
    use rustix::process::{getrlimit, setrlimit, Resource};
    let before = getrlimit(Resource::Nofile);
    let mut now = before;
    if before.current != before.maximum {
        let wanted = rustix::process::Rlimit {
            current: before.maximum,
            maximum: before.maximum,
        };
        match setrlimit(Resource::Nofile, wanted) {
            Ok(()) => now = getrlimit(Resource::Nofile),
            Err(e) => tracing::warn!(
                error = %e,
                soft = ?before.current,
                hard = ?before.maximum,
                "could not raise the open-files soft limit to the hard limit"
            ),
        }
    }
    let limit = OpenFilesLimit {
        soft_before: before.current,
        soft: now.current,
        hard: now.maximum,
    };
    tracing::info!(
        soft_before = ?limit.soft_before,
        soft = ?limit.soft,
        hard = ?limit.hard,
        "open-files limit"
    );
    limit
}

/// What [`disable_transparent_huge_pages`] did at start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HugePages {
    /// Transparent huge pages are off for this process (the default).
    Disabled,
    /// `MIMALLOC_ALLOW_THP` is set: mimalloc's own option decides (`0` turns them off, `1`
    /// asks for them on mimalloc's memory).
    LeftToMimalloc(String),
    /// The `prctl` failed (or this is not Linux); the kernel's setting applies.
    Unchanged(String),
}

/// Turns transparent huge pages off for this process (`prctl(PR_SET_THP_DISABLE)`), unless
/// `MIMALLOC_ALLOW_THP` is set. mimalloc advises the kernel to back its arenas with 2 MiB pages,
/// and `khugepaged` later collapses any 2 MiB stretch with one page in use into a whole huge
/// page: the soak's heap of ~9 MB live held 30–60 MB of RSS, stepping up every ten minutes or
/// so as the scan came round (docs/benchmarks.md, Soak). Call it first in `main`, before the
/// heap grows: pages already huge stay so.
pub fn disable_transparent_huge_pages() -> HugePages {
    if let Some(v) = std::env::var_os("MIMALLOC_ALLOW_THP") {
        return HugePages::LeftToMimalloc(v.to_string_lossy().into_owned());
    }
    #[cfg(target_os = "linux")]
    {
        match rustix::thread::disable_transparent_huge_pages(true) {
            Ok(()) => HugePages::Disabled,
            Err(e) => HugePages::Unchanged(e.to_string()),
        }
    }
    #[cfg(not(target_os = "linux"))]
    {
        HugePages::Unchanged("not Linux".to_owned())
    }
}

/// Logs what [`disable_transparent_huge_pages`] did (once the log is up).
pub fn log_huge_pages(h: &HugePages) {
    match h {
        HugePages::Disabled => tracing::info!("transparent huge pages off for this process"),
        HugePages::LeftToMimalloc(v) => {
            tracing::info!(MIMALLOC_ALLOW_THP = %v, "transparent huge pages left to mimalloc")
        }
        HugePages::Unchanged(e) => {
            tracing::warn!(error = %e, "could not turn transparent huge pages off")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn caps(total: usize, per: usize) -> Caps {
        Caps {
            max_total: total,
            max_per_address: per,
        }
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn huge_pages_off_unless_mimalloc_is_told() {
        match disable_transparent_huge_pages() {
            HugePages::Disabled => {
                assert_eq!(
                    rustix::thread::transparent_huge_pages_are_disabled().ok(),
                    Some(true)
                );
                let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
                if let Some(line) = status.lines().find(|l| l.starts_with("THP_enabled:")) {
                    assert_eq!(line.split_whitespace().nth(1), Some("0"), "{line}");
                }
            }
            HugePages::LeftToMimalloc(v) => {
                assert_eq!(std::env::var("MIMALLOC_ALLOW_THP").ok(), Some(v));
            }
            HugePages::Unchanged(e) => panic!("prctl(PR_SET_THP_DISABLE) failed: {e}"),
        }
    }

    #[test]
    fn per_address_then_listener_caps() {
        let mut t = Table::default();
        let a = Some("10.0.0.1".parse().unwrap());
        let b = Some("10.0.0.2".parse().unwrap());
        assert_eq!(t.admit(caps(3, 2), a), Ok(()));
        assert_eq!(t.admit(caps(3, 2), a), Ok(()));
        assert_eq!(t.admit(caps(3, 2), a), Err(Refusal::AddressFull));
        assert_eq!(t.admit(caps(3, 2), b), Ok(()));
        assert_eq!(t.admit(caps(3, 2), b), Err(Refusal::ListenerFull));
        t.release(a);
        assert_eq!(t.admit(caps(3, 2), b), Ok(()));
        for _ in 0..3 {
            t.release(b);
            t.release(a);
        }
        assert_eq!(t.total, 0);
        assert!(t.per_address.is_empty(), "no entry left behind");
        // Releasing what was never admitted changes nothing.
        t.release(a);
        assert_eq!(t.total, 0);
        // Loopback: the listener's cap only.
        for _ in 0..3 {
            assert_eq!(t.admit(caps(3, 1), None), Ok(()));
        }
        assert_eq!(t.admit(caps(3, 1), None), Err(Refusal::ListenerFull));
        t.release(None);
        assert_eq!(t.total, 2);
    }

    #[test]
    fn ipv6_counts_by_slash_64_and_mapped_v4_as_v4() {
        let k = |s: &str| address_key(s.parse().unwrap());
        assert_eq!(k("2001:db8:1:2::1"), k("2001:db8:1:2:ffff::9"));
        assert_ne!(k("2001:db8:1:2::1"), k("2001:db8:1:3::1"));
        assert_eq!(k("::ffff:10.0.0.1"), k("10.0.0.1"));
        assert!(k("10.0.0.1").is_some());
        for lo in ["127.0.0.1", "127.3.2.1", "::1", "::ffff:127.0.0.1"] {
            assert_eq!(k(lo), None, "{lo}");
        }
    }

    #[test]
    fn permits_release_on_drop_and_refusals_are_counted() {
        let registry = Registry::new();
        let m = ConnectionMetrics::register(&registry).unwrap();
        let adm = Admission::new("https", caps(10, 1), m.clone());
        let ip: IpAddr = "192.0.2.7".parse().unwrap();
        let p = adm.admit(ip).unwrap();
        assert!(matches!(adm.admit(ip), Err(Refusal::AddressFull)));
        assert_eq!(m.open.with_label_values(&["https"]).get(), 1);
        assert_eq!(m.refused.with_label_values(&["https", "address"]).get(), 1);
        drop(p);
        assert_eq!(m.open.with_label_values(&["https"]).get(), 0);
        assert!(adm.admit(ip).is_ok());
    }
}
