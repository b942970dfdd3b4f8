//! Session records (Graph's `remoteAssistanceReporting` fields), written when a session becomes
//! active, updated when its mode rises or it is seen alive, closed when it ends; recovery after
//! a broker restart; and retention.

use crate::{on_pool, on_tx, AuditEvent, Store, StoreError};
use serde_json::Value;

/// One stored session.
#[derive(Debug, Clone, PartialEq)]
pub struct SessionRow {
    /// Session id.
    pub id: String,
    /// `active` or `ended`.
    pub state: String,
    /// Start (RFC 3339).
    pub start_time: String,
    /// End (RFC 3339), once ended.
    pub end_time: Option<String>,
    /// Highest mode used.
    pub mode: String,
    /// Why it ended.
    pub end_reason: Option<String>,
    /// Who ended it (`helper`, `sharer`, `admin`, `system`).
    pub ended_by: Option<String>,
    /// The report fields.
    pub body: Value,
}

/// One key of a session listing's order: a report column (`startDateTime`, `id`, `state`,
/// `endReason`, … or a field of the report body such as `helperEmail`), ascending or
/// descending. See [`Store::sessions_page`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionOrder {
    /// The report column.
    pub column: String,
    /// Descending instead of ascending.
    pub descending: bool,
}

/// What the session aggregates (counts, lengths, sessions per day) read of a session: no
/// report body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionBrief {
    /// `active` or `ended`.
    pub state: String,
    /// Start (RFC 3339).
    pub start_time: String,
    /// End (RFC 3339), once ended.
    pub end_time: Option<String>,
    /// Highest mode used.
    pub mode: String,
}

/// One write of the session-record stream (what the signalling service records as sessions
/// start, change and end), for [`Store::write_session_batch`].
#[derive(Debug, Clone)]
pub enum SessionWrite {
    /// A session became active: its row is created (once; a repeat changes nothing).
    Started {
        /// Tenant.
        tenant_id: String,
        /// Session id.
        id: String,
        /// Start (RFC 3339).
        start_time: String,
        /// Mode at start.
        mode: String,
        /// The report fields.
        body: Value,
    },
    /// An active session was seen alive at `now`, and its highest mode is `mode` if given.
    Seen {
        /// Tenant.
        tenant_id: String,
        /// Session id.
        id: String,
        /// When (RFC 3339).
        now: String,
        /// New highest mode.
        mode: Option<String>,
    },
    /// A session ended (once; later ends change nothing).
    Ended {
        /// Tenant.
        tenant_id: String,
        /// Session id.
        id: String,
        /// End (RFC 3339).
        end_time: String,
        /// End reason.
        reason: String,
        /// Who ended it.
        by: String,
        /// The highest mode used, if it rose since the last write.
        mode: Option<String>,
    },
    /// Fields merged into a session's report body, by session id.
    MergeBody {
        /// Session id.
        id: String,
        /// An object whose fields are merged in.
        extra: Value,
    },
    /// An audit event recording no stored change.
    Audit {
        /// Tenant.
        tenant_id: String,
        /// The event.
        event: AuditEvent,
    },
}

impl Store {
    /// Applies `writes` in **one** transaction: all or nothing. The session writes take
    /// effect as in their order; the audit events follow them, in order (no audit row depends
    /// on a session row, and the commit is one). On SQLite the session writes run row by row
    /// and the audit events in multi-row statements of up to 200; on PostgreSQL each kind of
    /// write is one statement over arrays (all the starts, each seen time, all the first
    /// ends, each stats merge, all the audit events) unless a session is started after
    /// another write to it, when the session writes run row by row. This is how the
    /// signalling service records a burst of session events with one commit instead of one
    /// per event.
    pub async fn write_session_batch(&self, writes: &[SessionWrite]) -> Result<(), StoreError> {
        if writes.is_empty() {
            return Ok(());
        }
        let mut tx = self.begin(false).await?;
        on_tx!(tx, session_batch(writes))?;
        tx.commit().await
    }

    /// One session write and, only if it changed a row, `audit`, in one transaction.
    async fn audited_session_write(
        &self,
        tenant_id: &str,
        write: SessionWrite,
        audit: Option<&AuditEvent>,
    ) -> Result<bool, StoreError> {
        let mut tx = self.begin(false).await?;
        if on_tx!(tx, session_write(&write))? == 0 {
            return Ok(false);
        }
        if let Some(a) = audit {
            on_tx!(tx, audit_insert(tenant_id, a))?;
        }
        tx.commit().await?;
        Ok(true)
    }

    /// Records a session that just became active (once), with its audit event, in one
    /// transaction.
    pub async fn session_started(
        &self,
        tenant_id: &str,
        id: &str,
        start_time: &str,
        mode: &str,
        body: &Value,
        audit: Option<&AuditEvent>,
    ) -> Result<(), StoreError> {
        let write = SessionWrite::Started {
            tenant_id: tenant_id.to_owned(),
            id: id.to_owned(),
            start_time: start_time.to_owned(),
            mode: mode.to_owned(),
            body: body.clone(),
        };
        self.audited_session_write(tenant_id, write, audit)
            .await
            .map(|_| ())
    }

    /// Notes that an active session is alive at `now` and, if given, raises its highest mode.
    pub async fn session_seen(
        &self,
        tenant_id: &str,
        id: &str,
        now: &str,
        mode: Option<&str>,
    ) -> Result<(), StoreError> {
        let write = SessionWrite::Seen {
            tenant_id: tenant_id.to_owned(),
            id: id.to_owned(),
            now: now.to_owned(),
            mode: mode.map(str::to_owned),
        };
        on_pool!(self, session_write(&write))?;
        Ok(())
    }

    /// Closes a session (once; later calls change nothing), with its audit event.
    pub async fn session_ended(
        &self,
        tenant_id: &str,
        id: &str,
        end_time: &str,
        reason: &str,
        by: &str,
        audit: Option<&AuditEvent>,
    ) -> Result<bool, StoreError> {
        let write = SessionWrite::Ended {
            tenant_id: tenant_id.to_owned(),
            id: id.to_owned(),
            end_time: end_time.to_owned(),
            reason: reason.to_owned(),
            by: by.to_owned(),
            mode: None,
        };
        self.audited_session_write(tenant_id, write, audit).await
    }

    /// Merges `extra` (an object) into a session's report body, by session id (ids are unique
    /// across tenants). Used for the relay's byte and frame counters when a session ends.
    pub async fn session_merge_body(&self, id: &str, extra: &Value) -> Result<(), StoreError> {
        let write = SessionWrite::MergeBody {
            id: id.to_owned(),
            extra: extra.clone(),
        };
        let mut tx = self.begin(false).await?;
        on_tx!(tx, session_write(&write))?;
        tx.commit().await
    }

    /// Recovery after a restart: closes every session still marked active, at its last known
    /// time, with `reason` (`brokerRestart`). Returns how many it closed.
    pub async fn close_open_sessions(&self, reason: &str) -> Result<u64, StoreError> {
        on_pool!(self, close_open_sessions(reason))
    }

    /// Closes the sessions `ids` that are still marked active, at their last known time, with
    /// `reason` (cluster mode: a survivor closes a dead node's sessions). Returns how many it
    /// closed.
    pub async fn close_sessions(&self, ids: &[String], reason: &str) -> Result<u64, StoreError> {
        let mut closed = 0;
        for id in ids {
            closed += on_pool!(self, close_session(id, reason))?;
        }
        Ok(closed)
    }

    /// The ids of sessions still marked active whose last heartbeat (`last_seen`) is before
    /// `seen_before`, the longest silent first, at most `limit`. A live session's owner moves
    /// `last_seen` every minute (`Seen`); cluster mode's sweep closes the rows found here whose
    /// session is not in the live directory either (their owner is gone).
    pub async fn stale_open_sessions(
        &self,
        seen_before: &str,
        limit: u32,
    ) -> Result<Vec<String>, StoreError> {
        on_pool!(self, stale_open_sessions(seen_before, limit))
    }

    /// A tenant's sessions, newest first. All of them in memory at once: for tests and small
    /// tenants; the admin API reads [`Store::sessions_page`] or [`Store::for_each_session`].
    pub async fn sessions(&self, tenant_id: &str) -> Result<Vec<SessionRow>, StoreError> {
        on_pool!(self, sessions(tenant_id))
    }

    /// How many sessions a tenant has.
    pub async fn session_count(&self, tenant_id: &str) -> Result<u64, StoreError> {
        on_pool!(self, session_count(tenant_id))
    }

    /// Rows `[skip, skip + limit)` of a tenant's sessions ordered by each key of `order` in
    /// turn, then newest first (start time descending, then id), as the report has always
    /// ordered them: per key, two numbers as numbers and any other two values by their JSON
    /// text (a missing field as `null`), which puts strings before numbers before `null`.
    /// Ordering, offset and limit run in the database: only the page is read.
    pub async fn sessions_page(
        &self,
        tenant_id: &str,
        order: &[SessionOrder],
        skip: u64,
        limit: u64,
    ) -> Result<Vec<SessionRow>, StoreError> {
        on_pool!(self, sessions_page(tenant_id, order, skip, limit))
    }

    /// Streams a tenant's sessions in [`Store::sessions_page`]'s order to `visit`, one row at a
    /// time (what the caller keeps is all that stays in memory), until `visit` returns `false`.
    /// For filters the database cannot evaluate.
    pub async fn for_each_session(
        &self,
        tenant_id: &str,
        order: &[SessionOrder],
        visit: &mut (dyn FnMut(SessionRow) -> bool + Send),
    ) -> Result<(), StoreError> {
        on_pool!(self, for_each_session(tenant_id, order, visit))
    }

    /// Streams the state, times and mode of each of a tenant's sessions to `visit`, one at a
    /// time, newest first (as [`Store::sessions`]): for aggregates.
    pub async fn for_each_session_brief(
        &self,
        tenant_id: &str,
        visit: &mut (dyn FnMut(SessionBrief) + Send),
    ) -> Result<(), StoreError> {
        on_pool!(self, for_each_session_brief(tenant_id, visit))
    }

    /// Retention: deletes ended sessions that ended, and audit events that happened, before
    /// `cutoff` (RFC 3339). Returns (sessions, audit events) deleted.
    pub async fn delete_older_than(&self, cutoff: &str) -> Result<(u64, u64), StoreError> {
        let mut tx = self.begin(false).await?;
        let n = on_tx!(tx, delete_older_than(cutoff))?;
        tx.commit().await?;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    // SQLite's alone (PostgreSQL's sessions table has had the index since version 3, and its
    // planner scans small tables whatever the indexes): writes that know only a session's id
    // find the row through an index, not by reading the whole table.
    #[tokio::test]
    async fn writes_by_session_id_and_retention_deletes_use_an_index() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open_sqlite(&dir.path().join("a.db")).await.unwrap();
        for (sql, index) in [
            (
                "SELECT tenant_id, CAST(body AS TEXT) FROM sessions WHERE id = 's1'",
                "sessions_by_id",
            ),
            (
                "UPDATE sessions SET state = 'ended' WHERE id = 's1' AND state = 'active'",
                "sessions_by_id",
            ),
            // A dead node's sweep of the sessions it left open.
            (
                "SELECT id FROM sessions WHERE state = 'active' AND last_seen < '2026-01-01' \
                 ORDER BY last_seen, id LIMIT 10",
                "sessions_by_end",
            ),
            // Retention's deletes, which hold the write lock while they run.
            (
                "DELETE FROM sessions WHERE state = 'ended' AND end_time < '2026-01-01'",
                "sessions_by_end",
            ),
            (
                "DELETE FROM audit_events WHERE activity_date_time < '2026-01-01'",
                "audit_events_by_time_only",
            ),
        ] {
            let plan = store.query_plan_for_tests(sql).await.unwrap();
            assert!(
                plan.iter().any(|l| l.contains(&format!("INDEX {index}"))),
                "{sql}: {plan:?}"
            );
            assert!(
                !plan.iter().any(|l| l.starts_with("SCAN ")),
                "{sql}: {plan:?}"
            );
        }
    }

    // The behaviours are tested on both databases in tests/conformance.rs; this one is
    // SQLite's alone: a corrupt body (PostgreSQL's JSONB column cannot hold one).
    #[tokio::test]
    async fn a_corrupt_row_rolls_a_whole_batch_back() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open_sqlite(&dir.path().join("a.db")).await.unwrap();
        let ev = |n: &str| SessionWrite::Audit {
            tenant_id: "t".into(),
            event: AuditEvent::new(n, "Action", "Session"),
        };
        let started = |id: &str| SessionWrite::Started {
            tenant_id: "t".into(),
            id: id.into(),
            start_time: "2026-01-01T10:00:00Z".into(),
            mode: "viewOnly".into(),
            body: json!({"helperEmail": "h@x.com"}),
        };
        let batch = vec![
            ev("requested"),
            started("s1"),
            ev("started"),
            SessionWrite::Seen {
                tenant_id: "t".into(),
                id: "s1".into(),
                now: "2026-01-01T10:01:00Z".into(),
                mode: Some("fullControl".into()),
            },
            SessionWrite::Ended {
                tenant_id: "t".into(),
                id: "s1".into(),
                end_time: "2026-01-01T10:02:00Z".into(),
                reason: "ended".into(),
                by: "helper".into(),
                mode: None,
            },
            SessionWrite::MergeBody {
                id: "s1".into(),
                extra: json!({"relayFramesDropped": 3}),
            },
            ev("ended"),
        ];
        store.write_session_batch(&batch).await.unwrap();
        let rows = store.sessions("t").await.unwrap();
        assert_eq!(rows.len(), 1);
        assert_eq!(rows[0].state, "ended");
        assert_eq!(rows[0].mode, "fullControl");
        assert_eq!(rows[0].end_time.as_deref(), Some("2026-01-01T10:02:00Z"));
        assert_eq!(
            rows[0].body,
            json!({"helperEmail": "h@x.com", "relayFramesDropped": 3})
        );
        assert_eq!(store.audit_events("t").await.unwrap().len(), 3);

        // A failing write rolls the whole batch back: nothing of it is stored.
        store
            .execute_raw_for_tests("UPDATE sessions SET body = 'not json' WHERE id = 's1'")
            .await
            .unwrap();
        let failing = vec![
            started("s2"),
            ev("x"),
            SessionWrite::MergeBody {
                id: "s1".into(),
                extra: json!({"a": 1}),
            },
        ];
        assert!(matches!(
            store.write_session_batch(&failing).await,
            Err(StoreError::Corrupt(_))
        ));
        assert_eq!(
            store.sessions("t").await.ok().map(|r| r.len()),
            None,
            "s1 is corrupt now"
        );
        let s2_rows = store
            .execute_raw_for_tests("DELETE FROM sessions WHERE id = 's2'")
            .await
            .unwrap();
        assert_eq!(s2_rows, 0, "s2 was rolled back");
        assert_eq!(store.audit_events("t").await.unwrap().len(), 3);
    }
}
