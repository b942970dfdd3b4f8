//! Session records (Graph's `remoteAssistanceReporting` fields), written when a session becomes
//! active, updated when its mode rises or it is seen alive, closed when it ends; recovery after
//! a broker restart; and retention.

use crate::directory::Write;
use crate::{audit, AuditEvent, Store, StoreError};
use serde_json::Value;
use sqlx::Row;

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

type Tx<'c> = sqlx::Transaction<'c, sqlx::Sqlite>;

/// The row of a session that became active (once: a repeat changes nothing).
fn started<'q>(
    tenant_id: &'q str,
    id: &'q str,
    start_time: &'q str,
    mode: &'q str,
    body: &Value,
) -> Write<'q> {
    sqlx::query(
        "INSERT INTO sessions (tenant_id, id, state, start_time, last_seen, mode, body) VALUES ($1, $2, 'active', $3, $3, $4, $5) \
         ON CONFLICT (tenant_id, id) DO NOTHING",
    )
    .bind(tenant_id)
    .bind(id)
    .bind(start_time)
    .bind(mode)
    .bind(body.to_string())
}

/// An active session seen alive at `now`, its highest mode raised to `mode` if given.
fn seen<'q>(tenant_id: &'q str, id: &'q str, now: &'q str, mode: Option<&'q str>) -> Write<'q> {
    sqlx::query(
        "UPDATE sessions SET last_seen = $3, mode = COALESCE($4, mode) WHERE tenant_id = $1 AND id = $2 AND state = 'active'",
    )
    .bind(tenant_id)
    .bind(id)
    .bind(now)
    .bind(mode)
}

/// An active session ended (once: later ends change nothing).
fn ended<'q>(
    tenant_id: &'q str,
    id: &'q str,
    end_time: &'q str,
    reason: &'q str,
    by: &'q str,
    mode: Option<&'q str>,
) -> Write<'q> {
    sqlx::query(
        "UPDATE sessions SET state = 'ended', end_time = $3, last_seen = $3, end_reason = $4, ended_by = $5, \
         mode = COALESCE($6, mode) WHERE tenant_id = $1 AND id = $2 AND state = 'active'",
    )
    .bind(tenant_id)
    .bind(id)
    .bind(end_time)
    .bind(reason)
    .bind(by)
    .bind(mode)
}

/// Applies one write inside `tx`.
async fn apply(tx: &mut Tx<'_>, w: &SessionWrite) -> Result<(), StoreError> {
    let write = match w {
        SessionWrite::Started {
            tenant_id,
            id,
            start_time,
            mode,
            body,
        } => started(tenant_id, id, start_time, mode, body),
        SessionWrite::Seen {
            tenant_id,
            id,
            now,
            mode,
        } => seen(tenant_id, id, now, mode.as_deref()),
        SessionWrite::Ended {
            tenant_id,
            id,
            end_time,
            reason,
            by,
            mode,
        } => ended(tenant_id, id, end_time, reason, by, mode.as_deref()),
        SessionWrite::MergeBody { id, extra } => return merge_body(tx, id, extra).await,
        SessionWrite::Audit { tenant_id, event } => {
            return audit::insert(tx, tenant_id, event).await
        }
    };
    write.execute(&mut **tx).await?;
    Ok(())
}

async fn merge_body(tx: &mut Tx<'_>, id: &str, extra: &Value) -> Result<(), StoreError> {
    let row = sqlx::query("SELECT tenant_id, body FROM sessions WHERE id = $1")
        .bind(id)
        .fetch_optional(&mut **tx)
        .await?;
    let Some(row) = row else { return Ok(()) };
    let tenant: String = row.try_get(0)?;
    let body: String = row.try_get(1)?;
    let mut body: Value = serde_json::from_str(&body)
        .map_err(|e| StoreError::Corrupt(format!("session body: {e}")))?;
    if let (Some(b), Some(e)) = (body.as_object_mut(), extra.as_object()) {
        for (k, v) in e {
            b.insert(k.clone(), v.clone());
        }
    }
    sqlx::query("UPDATE sessions SET body = $3 WHERE tenant_id = $1 AND id = $2")
        .bind(&tenant)
        .bind(id)
        .bind(body.to_string())
        .execute(&mut **tx)
        .await?;
    Ok(())
}

impl Store {
    /// Applies `writes` in order in **one** transaction: all or nothing. Runs of audit events
    /// are inserted with multi-row statements. This is how the signalling service records a
    /// burst of session events with one commit instead of one per event.
    pub async fn write_session_batch(&self, writes: &[SessionWrite]) -> Result<(), StoreError> {
        if writes.is_empty() {
            return Ok(());
        }
        let mut tx = self.pool.begin().await?;
        let mut audits: Vec<(&str, &AuditEvent)> = Vec::new();
        for w in writes {
            match w {
                SessionWrite::Audit { tenant_id, event } => {
                    audits.push((tenant_id, event));
                    if audits.len() == audit::MAX_ROWS_PER_INSERT {
                        audit::insert_many(&mut tx, &audits).await?;
                        audits.clear();
                    }
                }
                other => {
                    // Audit events queued before this write are inserted before it.
                    if !audits.is_empty() {
                        audit::insert_many(&mut tx, &audits).await?;
                        audits.clear();
                    }
                    apply(&mut tx, other).await?;
                }
            }
        }
        if !audits.is_empty() {
            audit::insert_many(&mut tx, &audits).await?;
        }
        tx.commit().await?;
        Ok(())
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
        let write = started(tenant_id, id, start_time, mode, body);
        self.audited_write(tenant_id, write, audit)
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
        seen(tenant_id, id, now, mode).execute(&self.pool).await?;
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
        let write = ended(tenant_id, id, end_time, reason, by, None);
        self.audited_write(tenant_id, write, audit).await
    }

    /// Merges `extra` (an object) into a session's report body, by session id (ids are unique
    /// across tenants). Used for the relay's byte and frame counters when a session ends.
    pub async fn session_merge_body(&self, id: &str, extra: &Value) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await?;
        merge_body(&mut tx, id, extra).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Recovery after a restart: closes every session still marked active, at its last known
    /// time, with `reason` (`brokerRestart`). Returns how many it closed.
    pub async fn close_open_sessions(&self, reason: &str) -> Result<u64, StoreError> {
        let done = sqlx::query(
            "UPDATE sessions SET state = 'ended', end_time = last_seen, end_reason = $1, ended_by = 'broker' WHERE state = 'active'",
        )
        .bind(reason)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected())
    }

    /// A tenant's sessions, newest first.
    pub async fn sessions(&self, tenant_id: &str) -> Result<Vec<SessionRow>, StoreError> {
        let rows = sqlx::query(
            "SELECT id, state, start_time, end_time, mode, end_reason, ended_by, body FROM sessions WHERE tenant_id = $1 ORDER BY start_time DESC, id",
        )
        .bind(tenant_id)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                let body: String = r.try_get(7)?;
                Ok(SessionRow {
                    id: r.try_get(0)?,
                    state: r.try_get(1)?,
                    start_time: r.try_get(2)?,
                    end_time: r.try_get(3)?,
                    mode: r.try_get(4)?,
                    end_reason: r.try_get(5)?,
                    ended_by: r.try_get(6)?,
                    body: serde_json::from_str(&body)
                        .map_err(|e| StoreError::Corrupt(format!("session body: {e}")))?,
                })
            })
            .collect()
    }

    /// Retention: deletes ended sessions that ended, and audit events that happened, before
    /// `cutoff` (RFC 3339). Returns (sessions, audit events) deleted.
    pub async fn delete_older_than(&self, cutoff: &str) -> Result<(u64, u64), StoreError> {
        let mut tx = self.pool.begin().await?;
        let s = sqlx::query("DELETE FROM sessions WHERE state = 'ended' AND end_time < $1")
            .bind(cutoff)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        let a = sqlx::query("DELETE FROM audit_events WHERE activity_date_time < $1")
            .bind(cutoff)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        tx.commit().await?;
        Ok((s, a))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[tokio::test]
    async fn lifecycle_recovery_and_retention() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.db");
        let store = Store::open_sqlite(&path).await.unwrap();
        let body = json!({"helperEmail": "h@x.com", "sharerEmail": "s@x.com"});
        store
            .session_started("t", "s1", "2026-01-01T10:00:00Z", "viewOnly", &body, None)
            .await
            .unwrap();
        store
            .session_started("t", "s2", "2026-01-02T10:00:00Z", "viewOnly", &body, None)
            .await
            .unwrap();
        store
            .session_seen("t", "s1", "2026-01-01T10:05:00Z", Some("fullControl"))
            .await
            .unwrap();
        assert!(store
            .session_ended(
                "t",
                "s1",
                "2026-01-01T10:06:00Z",
                "helperEnded",
                "helper",
                None
            )
            .await
            .unwrap());
        assert!(
            !store
                .session_ended("t", "s1", "2026-01-01T11:00:00Z", "again", "helper", None)
                .await
                .unwrap(),
            "ends once"
        );
        store
            .session_seen("t", "s2", "2026-01-02T10:30:00Z", None)
            .await
            .unwrap();
        store.close().await;

        // "Restart": s2 was left open; recovery closes it at its last known time.
        let store = Store::open_sqlite(&path).await.unwrap();
        assert_eq!(store.close_open_sessions("brokerRestart").await.unwrap(), 1);
        let rows = store.sessions("t").await.unwrap();
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[0].id, "s2");
        assert_eq!(rows[0].end_reason.as_deref(), Some("brokerRestart"));
        assert_eq!(rows[0].ended_by.as_deref(), Some("broker"));
        assert_eq!(rows[0].end_time.as_deref(), Some("2026-01-02T10:30:00Z"));
        assert_eq!(rows[1].mode, "fullControl");
        assert_eq!(rows[1].ended_by.as_deref(), Some("helper"));
        assert_eq!(rows[1].body, body);

        let (s, _) = store
            .delete_older_than("2026-01-02T00:00:00Z")
            .await
            .unwrap();
        assert_eq!(s, 1);
        assert_eq!(store.sessions("t").await.unwrap().len(), 1);
        assert!(store.sessions("other").await.unwrap().is_empty());
    }

    #[tokio::test]
    async fn a_batch_applies_in_order_in_one_transaction_or_not_at_all() {
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
        sqlx::query("UPDATE sessions SET body = 'not json' WHERE id = 's1'")
            .execute(&store.pool)
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
        let count: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM sessions WHERE id = 's2'")
            .fetch_one(&store.pool)
            .await
            .unwrap();
        assert_eq!(count, 0, "s2 was rolled back");
        assert_eq!(store.audit_events("t").await.unwrap().len(), 3);
    }
}
