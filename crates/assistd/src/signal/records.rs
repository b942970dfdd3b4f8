//! The records writer: session records, audit events and relay counters, written to the store
//! in the order the machine produced them, in group-committed batches.

use assist_session::{AuditEvent, RecordEvent, Timestamp};
use assist_store::sessions::SessionWrite;
use assist_store::{AuditEvent as StoreAudit, Store};
use serde_json::json;
use std::time::Duration;
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

/// Writes taken from the queue into one transaction at most.
const WRITE_BATCH: usize = 512;

/// How long the writer waits after the first write of a batch for others to join it. Under
/// load this turns thousands of commits per second into at most 200; idle, it delays a record
/// by this much (docs/benchmarks.md: 2 ms gave 1,914 pairings per CPU-second, 5 ms 2,332).
const GROUP_COMMIT: Duration = Duration::from_millis(5);

/// Writes records and audit events in the order the machine produced them. Whatever is
/// waiting in the queue [`GROUP_COMMIT`] after a first write (up to [`WRITE_BATCH`]) is
/// written in one transaction; if that fails,
/// each write is retried on its own so one bad write loses nothing else.
pub(super) async fn store_writer(store: Store, mut rx: mpsc::UnboundedReceiver<StoreWrite>) {
    let mut batch: Vec<SessionWrite> = Vec::new();
    while let Some(first) = rx.recv().await {
        // Group commit: let the writes of the next moment join this transaction.
        tokio::time::sleep(GROUP_COMMIT).await;
        let mut next = Some(first);
        while let Some(w) = next.take() {
            to_session_writes(w, &mut batch);
            if batch.len() >= WRITE_BATCH {
                break;
            }
            next = rx.try_recv().ok();
        }
        if let Err(e) = store.write_session_batch(&batch).await {
            tracing::warn!(error = %e, writes = batch.len(), "a batch of session records failed; writing one by one");
            for w in &batch {
                if let Err(e) = store.write_session_batch(std::slice::from_ref(w)).await {
                    tracing::error!(error = %e, "writing a session record failed");
                }
            }
        }
        batch.clear();
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
