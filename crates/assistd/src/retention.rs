//! Retention: session records and audit events older than the retention period (30 days by
//! default) are deleted by a background job that runs at start and then every hour.

use assist_store::Store;
use std::time::Duration;
use time::OffsetDateTime;

/// Deletes what is older than `days` before `now`; returns (sessions, audit events) deleted.
pub async fn run_once(
    store: &Store,
    now: OffsetDateTime,
    days: u32,
) -> Result<(u64, u64), assist_store::StoreError> {
    let cutoff = now - time::Duration::days(i64::from(days));
    let cutoff = cutoff
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default();
    let (s, a) = store.delete_older_than(&cutoff).await?;
    if s + a > 0 {
        tracing::info!(sessions = s, audit_events = a, %cutoff, "retention deleted old records");
    }
    Ok((s, a))
}

/// Runs [`run_once`] now and every `every` until `cancel`.
pub async fn run(
    store: Store,
    days: u32,
    every: Duration,
    cancel: tokio_util::sync::CancellationToken,
) {
    let mut tick = tokio::time::interval(every);
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tick.tick() => {}
        }
        if let Err(e) = run_once(&store, OffsetDateTime::now_utc(), days).await {
            tracing::warn!(error = %e, "retention run failed; will retry");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    #[tokio::test]
    async fn deletes_only_what_is_older_than_the_period() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open_sqlite(&dir.path().join("a.db")).await.unwrap();
        let body = serde_json::json!({});
        for (id, start, end) in [
            ("old", "2026-01-01T10:00:00Z", "2026-01-01T11:00:00Z"),
            ("edge", "2026-01-31T09:00:00Z", "2026-01-31T13:00:00Z"),
            ("new", "2026-02-20T10:00:00Z", "2026-02-20T11:00:00Z"),
        ] {
            store
                .session_started("t", id, start, "viewOnly", &body, None)
                .await
                .unwrap();
            store
                .session_ended("t", id, end, "done", "helper", None)
                .await
                .unwrap();
        }
        store
            .session_started("t", "open", "2025-12-01T10:00:00Z", "viewOnly", &body, None)
            .await
            .unwrap();
        async fn ids(store: &Store) -> Vec<String> {
            let rows = store.sessions("t").await.unwrap();
            rows.into_iter().map(|r| r.id).collect()
        }
        // "Now" is injected: 2026-03-02T12:00Z with 30 days keeps everything that ended after 2026-01-31T12:00Z.
        let (s, _) = run_once(&store, datetime!(2026-03-02 12:00 UTC), 30)
            .await
            .unwrap();
        assert_eq!(s, 1);
        let left = ids(&store).await;
        assert_eq!(
            left,
            vec!["new", "edge", "open"],
            "an active session is never deleted"
        );
        let (s, _) = run_once(&store, datetime!(2026-04-01 00:00 UTC), 30)
            .await
            .unwrap();
        assert_eq!(s, 2);
        let left = ids(&store).await;
        assert_eq!(left, vec!["open"]);
    }
}
