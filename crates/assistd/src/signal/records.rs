//! The records writer: session records, audit events and relay counters, written to the store
//! in the order the machine produced them, in group-committed batches.
//!
//! The driver hands writes over through a bounded queue ([`RecordsQueue`]) and never waits on
//! it: when the queue is full a write is dropped, counted and logged, heartbeats (`Seen`)
//! first, so that starts, ends and audit events keep room. When the store is unavailable (the
//! database restarting), the writer keeps the batch it holds and tries it again with a bounded
//! backoff until it is written; meanwhile new writes wait in the queue, none lost while it has
//! room.

use assist_session::{AuditEvent, RecordEvent, Timestamp};
use assist_store::sessions::SessionWrite;
use assist_store::{AuditEvent as StoreAudit, Store, StoreError};
use serde_json::json;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::mpsc;

/// A time as RFC 3339 (UTC), as the store and the Graph API keep it.
pub(super) fn rfc3339(t: Timestamp) -> String {
    let ns = i128::from(t.as_millis()) * 1_000_000;
    time::OffsetDateTime::from_unix_timestamp_nanos(ns)
        .ok()
        .and_then(|d| {
            d.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_default()
}

pub(super) enum StoreWrite {
    Record(Box<RecordEvent>),
    Audit(String, StoreAudit),
    Stats(assist_relay::SessionReport),
}

impl StoreWrite {
    /// What the write is, for the dropped-writes metric and log (never an id).
    fn kind(&self) -> &'static str {
        match self {
            StoreWrite::Record(ev) => match **ev {
                RecordEvent::Started { .. } => "started",
                RecordEvent::ModeRaised { .. } => "modeRaised",
                RecordEvent::Seen { .. } => "seen",
                RecordEvent::Ended { .. } => "ended",
            },
            StoreWrite::Audit(..) => "audit",
            StoreWrite::Stats(_) => "relayStats",
        }
    }

    /// A heartbeat: it only moves a session's `last_seen`, and the next one (or the end)
    /// moves it again, so it is the first to go when the queue fills.
    fn is_heartbeat(&self) -> bool {
        matches!(self, StoreWrite::Record(ev) if matches!(**ev, RecordEvent::Seen { .. }))
    }

    /// The session the write is about, for the log line of a dropped write.
    fn session_id(&self) -> Option<&str> {
        match self {
            StoreWrite::Record(ev) => Some(match &**ev {
                RecordEvent::Started { session_id, .. }
                | RecordEvent::ModeRaised { session_id, .. }
                | RecordEvent::Seen { session_id, .. }
                | RecordEvent::Ended { session_id, .. } => session_id.as_str(),
            }),
            StoreWrite::Audit(_, a) => a.body["resources"][0]["resourceId"].as_str(),
            StoreWrite::Stats(r) => Some(&r.sid),
        }
    }
}

/// Writes the queue in front of the records writer holds at most. At the soak's 30 pairings a
/// second (about 8 writes each, a few hundred bytes to 2 KiB apiece) that is several minutes
/// of a store outage, and (estimated at ≤ 2 KiB a write) at most ~200 MB held
/// (docs/security.md, "Limits").
pub(super) const QUEUE_CAPACITY: usize = 100_000;

/// Heartbeats are dropped once the queue holds this many writes: the last tenth of the queue
/// is kept for the writes that matter (starts, mode rises, ends, audit events, relay counters).
const fn heartbeat_limit(capacity: usize) -> usize {
    capacity - capacity / 10
}

/// Writes taken from the queue into one transaction at most.
const WRITE_BATCH: usize = 512;

/// How long the writer waits after the first write of a batch for others to join it. Under
/// load this turns thousands of commits per second into at most 200; idle, it delays a record
/// by this much (docs/benchmarks.md: 2 ms gave 1,914 pairings per CPU-second, 5 ms 2,332).
const GROUP_COMMIT: Duration = Duration::from_millis(5);

/// The first wait before a batch the store could not take is tried again; it doubles up to
/// [`RETRY_MAX`].
const RETRY_FIRST: Duration = Duration::from_millis(200);
/// The longest wait between two tries of a held batch.
const RETRY_MAX: Duration = Duration::from_secs(5);

/// At most one log line per this long about dropped writes (the rest are counted in it).
const DROP_LOG_EVERY: Duration = Duration::from_secs(10);

/// The records writer's metrics (`assist_store_*`); no ids as labels.
#[derive(Clone)]
pub struct StoreMetrics {
    queue_depth: prometheus::IntGauge,
    batches: prometheus::IntCounterVec,
    batch_seconds: prometheus::Histogram,
    dropped: prometheus::IntCounterVec,
}

impl StoreMetrics {
    /// Registers the families in `registry`.
    pub fn register(registry: &prometheus::Registry) -> prometheus::Result<Self> {
        use prometheus::{Histogram, HistogramOpts, IntCounterVec, IntGauge, Opts};
        let queue_depth = IntGauge::new(
            "assist_store_write_queue_depth",
            "Session records, audit events and relay counters waiting for the records writer.",
        )?;
        let batches = IntCounterVec::new(
            Opts::new(
                "assist_store_write_batches_total",
                "Batch writes tried by the records writer, by result: ok (committed), retry (the \
                 store was unavailable or busy; the batch is held and tried again), error (refused; \
                 its writes are tried one by one).",
            ),
            &["result"],
        )?;
        let batch_seconds = Histogram::with_opts(
            HistogramOpts::new(
                "assist_store_write_batch_seconds",
                "Time to write and commit one batch of the records writer (committed batches).",
            )
            .buckets(vec![
                0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
            ]),
        )?;
        let dropped = IntCounterVec::new(
            Opts::new(
                "assist_store_writes_dropped_total",
                "Writes the records writer dropped, by kind and reason: queueFull (the queue was \
                 full; heartbeats go first) or refused (the store refused the write itself).",
            ),
            &["kind", "reason"],
        )?;
        // Every series exists from the start (at 0), so dashboards and alerts see them before
        // the first retry or drop.
        for result in ["ok", "retry", "error"] {
            batches.with_label_values(&[result]);
        }
        for kind in [
            "started",
            "modeRaised",
            "seen",
            "ended",
            "audit",
            "relayStats",
        ] {
            for reason in ["queueFull", "refused"] {
                dropped.with_label_values(&[kind, reason]);
            }
        }
        registry.register(Box::new(queue_depth.clone()))?;
        registry.register(Box::new(batches.clone()))?;
        registry.register(Box::new(batch_seconds.clone()))?;
        registry.register(Box::new(dropped.clone()))?;
        Ok(Self {
            queue_depth,
            batches,
            batch_seconds,
            dropped,
        })
    }
}

/// A write the queue did not take (it is counted and logged already).
#[derive(Debug)]
pub(super) struct Dropped;

/// Dropped writes not logged yet (one line per [`DROP_LOG_EVERY`]).
#[derive(Default)]
struct DropLog {
    last: Option<Instant>,
    unlogged: u64,
}

/// The driver's end of the queue to the records writer: bounded, and never waits.
pub(super) struct RecordsQueue {
    tx: mpsc::Sender<StoreWrite>,
    heartbeat_limit: usize,
    metrics: StoreMetrics,
    drops: Arc<Mutex<DropLog>>,
}

impl RecordsQueue {
    /// A queue of `capacity` writes and the writer's end of it.
    pub(super) fn new(
        capacity: usize,
        metrics: StoreMetrics,
    ) -> (RecordsQueue, mpsc::Receiver<StoreWrite>) {
        let capacity = capacity.max(1);
        let (tx, rx) = mpsc::channel(capacity);
        let q = RecordsQueue {
            tx,
            heartbeat_limit: heartbeat_limit(capacity),
            metrics,
            drops: Arc::default(),
        };
        (q, rx)
    }

    /// Queues `w` for the writer, at once: a full queue drops it (heartbeats already when it
    /// is nine tenths full), counts it in `assist_store_writes_dropped_total` and logs it.
    pub(super) fn send(&self, w: StoreWrite) -> Result<(), Dropped> {
        let depth = self.tx.max_capacity() - self.tx.capacity();
        if w.is_heartbeat() && depth >= self.heartbeat_limit {
            return Err(self.dropped(&w));
        }
        match self.tx.try_send(w) {
            Ok(()) => {
                self.metrics.queue_depth.inc();
                Ok(())
            }
            Err(mpsc::error::TrySendError::Full(w) | mpsc::error::TrySendError::Closed(w)) => {
                Err(self.dropped(&w))
            }
        }
    }

    fn dropped(&self, w: &StoreWrite) -> Dropped {
        let kind = w.kind();
        self.metrics
            .dropped
            .with_label_values(&[kind, "queueFull"])
            .inc();
        let mut log = self.drops.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        if log
            .last
            .is_some_and(|t| now.duration_since(t) < DROP_LOG_EVERY)
        {
            log.unlogged += 1;
        } else {
            tracing::error!(
                kind,
                session_id = w.session_id().unwrap_or(""),
                dropped_since_last_line = log.unlogged,
                queue = self.tx.max_capacity(),
                "the records writer's queue is full (the store is slow or unavailable): a \
                 session write was dropped"
            );
            log.last = Some(now);
            log.unlogged = 0;
        }
        Dropped
    }
}

/// Whether the store is away, as the writer last found it.
struct Outage {
    since: Instant,
}

/// Writes records and audit events in the order the machine produced them. Whatever is
/// waiting in the queue [`GROUP_COMMIT`] after a first write (up to [`WRITE_BATCH`]) is
/// written in one transaction. A batch the store cannot take now (unavailable, or busy) is held
/// and tried again, waiting [`RETRY_FIRST`] doubling to [`RETRY_MAX`], until it is written;
/// one it refuses is written one write at a time, so one bad write loses nothing else.
pub(super) async fn store_writer(
    store: Store,
    mut rx: mpsc::Receiver<StoreWrite>,
    metrics: StoreMetrics,
) {
    let mut batch: Vec<SessionWrite> = Vec::new();
    let mut outage: Option<Outage> = None;
    while let Some(first) = rx.recv().await {
        // Group commit: let the writes of the next moment join this transaction.
        tokio::time::sleep(GROUP_COMMIT).await;
        let mut next = Some(first);
        let mut taken: i64 = 0;
        while let Some(w) = next.take() {
            to_session_writes(w, &mut batch);
            taken += 1;
            if batch.len() >= WRITE_BATCH {
                break;
            }
            next = rx.try_recv().ok();
        }
        metrics.queue_depth.sub(taken);
        if let Err(e) = write_held(&store, &batch, &metrics, &mut outage).await {
            if e.is_unavailable() {
                // The pool was closed: the server is stopping with the store away.
                tracing::error!(error = %e, writes = batch.len(), "the store was closed before these session writes could be written; they are lost");
                count_refused(&metrics, &batch);
            } else {
                tracing::warn!(error = %e, writes = batch.len(), "a batch of session records failed; writing one by one");
                for w in &batch {
                    if let Err(e) =
                        write_held(&store, std::slice::from_ref(w), &metrics, &mut outage).await
                    {
                        tracing::error!(error = %e, "writing a session record failed");
                        count_refused(&metrics, std::slice::from_ref(w));
                    }
                }
            }
        }
        batch.clear();
    }
}

fn count_refused(metrics: &StoreMetrics, writes: &[SessionWrite]) {
    for w in writes {
        let kind = match w {
            SessionWrite::Started { .. } => "started",
            SessionWrite::Seen { mode: Some(_), .. } => "modeRaised",
            SessionWrite::Seen { .. } => "seen",
            SessionWrite::Ended { .. } => "ended",
            SessionWrite::MergeBody { .. } => "relayStats",
            SessionWrite::Audit { .. } => "audit",
        };
        metrics.dropped.with_label_values(&[kind, "refused"]).inc();
    }
}

/// Writes `writes` in one transaction, trying again while the store is unavailable or busy;
/// returns the error of a write the store refuses (or of a closed store).
async fn write_held(
    store: &Store,
    writes: &[SessionWrite],
    metrics: &StoreMetrics,
    outage: &mut Option<Outage>,
) -> Result<(), StoreError> {
    let mut wait = RETRY_FIRST;
    loop {
        let started = Instant::now();
        match store.write_session_batch(writes).await {
            Ok(()) => {
                metrics
                    .batch_seconds
                    .observe(started.elapsed().as_secs_f64());
                metrics.batches.with_label_values(&["ok"]).inc();
                if let Some(o) = outage.take() {
                    tracing::warn!(
                        held = writes.len() as i64 + metrics.queue_depth.get(),
                        unavailable_secs = o.since.elapsed().as_secs(),
                        "the store is back; the session records and audit events held meanwhile are being written"
                    );
                }
                return Ok(());
            }
            Err(e) if e.is_retryable() => {
                metrics.batches.with_label_values(&["retry"]).inc();
                if e.is_unavailable() {
                    if outage.is_none() {
                        tracing::error!(
                            error = %e,
                            queue = metrics.queue_depth.get(),
                            "the store is unavailable; holding session records and audit events until it is back"
                        );
                        *outage = Some(Outage {
                            since: Instant::now(),
                        });
                    }
                } else {
                    tracing::warn!(error = %e, writes = writes.len(), "the store is busy; trying the batch again");
                }
                tokio::time::sleep(wait).await;
                wait = (wait * 2).min(RETRY_MAX);
            }
            Err(e) => {
                metrics.batches.with_label_values(&["error"]).inc();
                return Err(e);
            }
        }
    }
}

fn to_session_writes(w: StoreWrite, out: &mut Vec<SessionWrite>) {
    match w {
        StoreWrite::Audit(tenant_id, event) => out.push(SessionWrite::Audit { tenant_id, event }),
        StoreWrite::Record(ev) => record_writes(*ev, out),
        StoreWrite::Stats(r) => out.push(SessionWrite::MergeBody {
            id: r.sid.clone(),
            extra: r.record_fields(),
        }),
    }
}

/// The store writes of one session record event.
fn record_writes(ev: RecordEvent, out: &mut Vec<SessionWrite>) {
    match ev {
        RecordEvent::Started {
            session_id,
            tenant_id,
            started_at,
            mode,
            helper,
            sharer,
            device,
            ..
        } => out.push(SessionWrite::Started {
            tenant_id,
            id: session_id.0,
            start_time: rfc3339(started_at),
            mode: mode.as_str().to_owned(),
            body: json!({
                "helperEmail": helper.user_principal_name, "helperTenantId": helper.tenant_id,
                "helperFirstName": helper.given_name, "helperLastName": helper.family_name,
                "sharerEmail": sharer.user_principal_name, "sharerTenantId": sharer.tenant_id,
                "sharerFirstName": sharer.given_name, "sharerLastName": sharer.family_name,
                "sharerDeviceAadId": device.as_ref().map(|d| d.id.clone()),
                "sharerDeviceName": device.as_ref().and_then(|d| d.display_name.clone()),
                "sharerOs": device.as_ref().and_then(|d| d.operating_system.clone()),
                "sharerEnrollmentState": device.as_ref().map(|d| if d.enrolled { "enrolled" } else { "unknown" }),
            }),
        }),
        RecordEvent::ModeRaised {
            session_id,
            tenant_id,
            mode,
            at,
        } => out.push(SessionWrite::Seen {
            tenant_id,
            id: session_id.0,
            now: rfc3339(at),
            mode: Some(mode.as_str().to_owned()),
        }),
        RecordEvent::Seen {
            session_id,
            tenant_id,
            at,
        } => out.push(SessionWrite::Seen {
            tenant_id,
            id: session_id.0,
            now: rfc3339(at),
            mode: None,
        }),
        RecordEvent::Ended {
            session_id,
            tenant_id,
            ended_at,
            highest_mode,
            reason,
            by,
        } => out.push(SessionWrite::Ended {
            tenant_id,
            id: session_id.0,
            end_time: rfc3339(ended_at),
            reason: reason.as_str().to_owned(),
            by: wire(&by),
            mode: Some(highest_mode.as_str().to_owned()),
        }),
    }
}

/// A serde enum's wire name.
fn wire<T: serde::Serialize>(v: &T) -> String {
    serde_json::to_value(v)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_default()
}

/// The store write of one audit event of the machine.
pub(super) fn audit_write(ev: AuditEvent) -> StoreWrite {
    let kind = serde_json::to_value(&ev.kind).unwrap_or_default();
    let activity = kind["kind"].as_str().unwrap_or("session").to_owned();
    let (upn, uid) = ev
        .actor
        .as_ref()
        .map(|a| (ev.actor_name.clone().unwrap_or_default(), a.user_id.clone()))
        .unwrap_or_default();
    let mut audit = StoreAudit::new(
        &format!("Remote Help session: {activity}"),
        "Action",
        "RemoteAssistance",
    )
    .actor(&upn, &uid, None);
    audit.body["resources"] = json!([{
        "@odata.type": "#microsoft.graph.auditResource",
        "displayName": "remoteAssistanceSession",
        "type": "remoteAssistanceSession",
        "resourceId": ev.session_id.as_ref().map(|s| s.as_str().to_owned()),
        "modifiedProperties": [],
    }]);
    audit.body["activityDetails"] = kind;
    // Stamped once, by the machine, like the session records.
    audit.body["activityDateTime"] = json!(rfc3339(ev.at));
    StoreWrite::Audit(ev.tenant_id, audit)
}

#[cfg(test)]
mod tests {
    use super::*;
    use assist_policy::Mode;
    use assist_session::{EndReason, EndedBy, ReportParty, SessionId};

    const T: &str = "contoso";

    fn party(name: &str) -> ReportParty {
        ReportParty {
            tenant_id: T.into(),
            user_id: Some(format!("{name}-id")),
            user_principal_name: Some(format!("{name}@contoso.com")),
            given_name: None,
            family_name: None,
            display_name: name.into(),
        }
    }

    fn started(sid: &str) -> StoreWrite {
        StoreWrite::Record(Box::new(RecordEvent::Started {
            session_id: SessionId(sid.into()),
            tenant_id: T.into(),
            started_at: Timestamp::from_millis(1_800_000_000_000),
            requested_at: Timestamp::from_millis(1_799_999_990_000),
            joined_at: Timestamp::from_millis(1_799_999_995_000),
            mode: Mode::ViewOnly,
            chat: true,
            helper: party("helen"),
            sharer: party("sam"),
            device: None,
        }))
    }

    fn seen(sid: &str, n: u64) -> StoreWrite {
        StoreWrite::Record(Box::new(RecordEvent::Seen {
            session_id: SessionId(sid.into()),
            tenant_id: T.into(),
            at: Timestamp::from_millis(1_800_000_001_000 + n),
        }))
    }

    fn ended(sid: &str) -> StoreWrite {
        StoreWrite::Record(Box::new(RecordEvent::Ended {
            session_id: SessionId(sid.into()),
            tenant_id: T.into(),
            ended_at: Timestamp::from_millis(1_800_000_060_000),
            highest_mode: Mode::ViewOnly,
            reason: EndReason::Ended,
            by: EndedBy::Sharer,
        }))
    }

    fn audit(sid: &str) -> StoreWrite {
        let mut a = StoreAudit::new("Remote Help session: ended", "Action", "RemoteAssistance");
        a.body["resources"] = json!([{ "resourceId": sid }]);
        StoreWrite::Audit(T.into(), a)
    }

    fn dropped(m: &StoreMetrics, kind: &str) -> u64 {
        m.dropped.with_label_values(&[kind, "queueFull"]).get()
    }

    /// A full queue drops heartbeats first and keeps its last tenth for the writes that
    /// matter; the writer then writes every write the queue took, in order.
    #[tokio::test]
    async fn a_full_queue_drops_heartbeats_before_starts_and_ends() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open_sqlite(&dir.path().join("a.db")).await.unwrap();
        let metrics = StoreMetrics::register(&prometheus::Registry::new()).unwrap();
        // Capacity 20: heartbeats are refused from 18 queued writes on.
        let (q, rx) = RecordsQueue::new(20, metrics.clone());
        q.send(started("s1")).unwrap();
        for n in 0..17 {
            q.send(seen("s1", n)).unwrap();
        }
        assert!(q.send(seen("s1", 99)).is_err(), "heartbeat refused at 18");
        assert_eq!(dropped(&metrics, "seen"), 1);
        // The reserved tenth: the end and its audit event still go in.
        q.send(ended("s1")).unwrap();
        q.send(audit("s1")).unwrap();
        assert_eq!(metrics.queue_depth.get(), 20);
        // Full now: anything more is dropped (and counted by kind), never waited for.
        assert!(q.send(started("s2")).is_err());
        assert!(q.send(audit("s2")).is_err());
        assert!(q.send(seen("s1", 100)).is_err());
        assert_eq!(
            (
                dropped(&metrics, "started"),
                dropped(&metrics, "audit"),
                dropped(&metrics, "seen"),
                dropped(&metrics, "ended"),
            ),
            (1, 1, 2, 0)
        );
        // The writer drains the queue once the driver's end is gone.
        drop(q);
        store_writer(store.clone(), rx, metrics.clone()).await;
        assert_eq!(metrics.queue_depth.get(), 0);
        assert!(metrics.batches.with_label_values(&["ok"]).get() >= 1);
        assert_eq!(
            metrics.batch_seconds.get_sample_count(),
            metrics.batches.with_label_values(&["ok"]).get()
        );
        let rows = store.sessions(T).await.unwrap();
        assert_eq!(rows.len(), 1, "s2's start was dropped: {rows:?}");
        assert_eq!(
            (rows[0].id.as_str(), rows[0].state.as_str()),
            ("s1", "ended")
        );
        let events = store.audit_events(T).await.unwrap();
        assert_eq!(events.len(), 1);
        assert_eq!(events[0]["resources"][0]["resourceId"], "s1");
    }
}
