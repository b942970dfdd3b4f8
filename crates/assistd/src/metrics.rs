//! Prometheus metrics: one registry made at start and passed down; each component registers
//! its families under the `assist_` prefix. Never a user, tenant or session id as a label.

use prometheus::core::Collector;
use prometheus::{HistogramOpts, HistogramVec, IntCounterVec, IntGauge, Opts, Registry};

/// The HTTP layer's metrics.
#[derive(Clone)]
pub struct HttpMetrics {
    /// Requests by route template, method and status.
    pub requests: IntCounterVec,
    /// Latency by route template and method.
    pub duration: HistogramVec,
}

impl HttpMetrics {
    /// Registers the families in `registry`.
    pub fn register(registry: &Registry) -> prometheus::Result<Self> {
        let requests = IntCounterVec::new(
            Opts::new(
                "assist_http_requests_total",
                "HTTP requests answered, by route template, method and status.",
            ),
            &["route", "method", "status"],
        )?;
        let duration = HistogramVec::new(
            HistogramOpts::new(
                "assist_http_request_duration_seconds",
                "Time to answer an HTTP request.",
            )
            .buckets(vec![
                0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
            ]),
            &["route", "method"],
        )?;
        registry.register(Box::new(requests.clone()))?;
        registry.register(Box::new(duration.clone()))?;
        Ok(Self { requests, duration })
    }
}

/// A registry with the process collector (CPU, memory, file descriptors) already in it, and,
/// when called inside a tokio runtime, that runtime's task and queue gauges
/// (`assist_runtime_*`, read at each scrape).
pub fn new_registry() -> prometheus::Result<Registry> {
    let registry = Registry::new();
    #[cfg(target_os = "linux")]
    registry.register(Box::new(
        prometheus::process_collector::ProcessCollector::for_self(),
    ))?;
    if let Ok(handle) = tokio::runtime::Handle::try_current() {
        registry.register(Box::new(RuntimeCollector::new(handle)?))?;
    }
    Ok(registry)
}

/// The tokio runtime's own figures, read when scraped: a task leak shows as
/// `assist_runtime_alive_tasks` growing while the load stays flat.
struct RuntimeCollector {
    handle: tokio::runtime::Handle,
    alive_tasks: IntGauge,
    workers: IntGauge,
    global_queue_depth: IntGauge,
    descs: Vec<prometheus::core::Desc>,
}

impl RuntimeCollector {
    fn new(handle: tokio::runtime::Handle) -> prometheus::Result<Self> {
        let alive_tasks = IntGauge::new(
            "assist_runtime_alive_tasks",
            "Tasks alive in the server's tokio runtime (spawned and not yet finished).",
        )?;
        let workers = IntGauge::new(
            "assist_runtime_workers",
            "Worker threads of the server's tokio runtime.",
        )?;
        let global_queue_depth = IntGauge::new(
            "assist_runtime_global_queue_depth",
            "Tasks waiting in the tokio runtime's global queue.",
        )?;
        let descs = [&alive_tasks, &workers, &global_queue_depth]
            .iter()
            .flat_map(|g| g.desc().into_iter().cloned())
            .collect();
        Ok(Self {
            handle,
            alive_tasks,
            workers,
            global_queue_depth,
            descs,
        })
    }
}

impl Collector for RuntimeCollector {
    fn desc(&self) -> Vec<&prometheus::core::Desc> {
        self.descs.iter().collect()
    }

    fn collect(&self) -> Vec<prometheus::proto::MetricFamily> {
        let m = self.handle.metrics();
        let set = |g: &IntGauge, v: usize| g.set(i64::try_from(v).unwrap_or(i64::MAX));
        set(&self.alive_tasks, m.num_alive_tasks());
        set(&self.workers, m.num_workers());
        set(&self.global_queue_depth, m.global_queue_depth());
        [&self.alive_tasks, &self.workers, &self.global_queue_depth]
            .iter()
            .flat_map(|g| g.collect())
            .collect()
    }
}

/// The text exposition of everything in `registry`.
pub fn render(registry: &Registry) -> String {
    use prometheus::Encoder;
    let mut buf = Vec::new();
    let encoder = prometheus::TextEncoder::new();
    if let Err(e) = encoder.encode(&registry.gather(), &mut buf) {
        tracing::error!(error = %e, "encoding metrics failed");
    }
    String::from_utf8(buf).unwrap_or_default()
}
