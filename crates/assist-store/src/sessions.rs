//! Session records (Graph's `remoteAssistanceReporting` fields), written when a session becomes
//! active, updated when its mode rises or it is seen alive, closed when it ends; recovery after
//! a broker restart; and retention.

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

impl Store {
    /// Records a session that just became active, with its audit event, in one transaction.
    pub async fn session_started(
        &self,
        tenant_id: &str,
        id: &str,
        start_time: &str,
        mode: &str,
        body: &Value,
        audit: Option<&AuditEvent>,
    ) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await?;
        sqlx::query(
            "INSERT INTO sessions (tenant_id, id, state, start_time, last_seen, mode, body) VALUES ($1, $2, 'active', $3, $3, $4, $5) \
             ON CONFLICT (tenant_id, id) DO NOTHING",
        )
        .bind(tenant_id)
        .bind(id)
        .bind(start_time)
        .bind(mode)
        .bind(body.to_string())
        .execute(&mut *tx)
        .await?;
        if let Some(a) = audit {
            audit::insert(&mut tx, tenant_id, a).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// Notes that an active session is alive at `now` and, if given, raises its highest mode.
    pub async fn session_seen(
        &self,
        tenant_id: &str,
        id: &str,
        now: &str,
        mode: Option<&str>,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE sessions SET last_seen = $3, mode = COALESCE($4, mode) WHERE tenant_id = $1 AND id = $2 AND state = 'active'",
        )
        .bind(tenant_id)
        .bind(id)
        .bind(now)
        .bind(mode)
        .execute(&self.pool)
        .await?;
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
        let write = sqlx::query(
            "UPDATE sessions SET state = 'ended', end_time = $3, last_seen = $3, end_reason = $4, ended_by = $5 \
             WHERE tenant_id = $1 AND id = $2 AND state = 'active'",
        )
        .bind(tenant_id)
        .bind(id)
        .bind(end_time)
        .bind(reason)
        .bind(by);
        self.audited_write(tenant_id, write, audit).await
    }

    /// Merges `extra` (an object) into a session's report body, by session id (ids are unique
    /// across tenants). Used for the relay's byte and frame counters when a session ends.
    pub async fn session_merge_body(&self, id: &str, extra: &Value) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await?;
        let row = sqlx::query("SELECT tenant_id, body FROM sessions WHERE id = $1")
            .bind(id)
            .fetch_optional(&mut *tx)
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
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Recovery after a restart: closes every session still marked active, at its last known
    /// time, with `reason` (`brokerRestart`). Returns how many it closed.
    pub async fn close_open_sessions(&self, reason: &str) -> Result<u64, StoreError> {
        let done = sqlx::query(
            "UPDATE sessions SET state = 'ended', end_time = last_seen, end_reason = $1, ended_by = 'system' WHERE state = 'active'",
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
}
