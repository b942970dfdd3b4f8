//! Assist's durable data.
//!
//! This crate owns the database: its schema (versioned migrations embedded in the binary,
//! applied on open, refused if the database is newer than the code), and the reads and writes
//! the broker and admin API make. Today the backend is SQLite (one file in the data
//! directory); the queries are written to move to PostgreSQL for cluster mode. It does not
//! decide anything: validation happens before a write reaches it, permission checks in the
//! admin API.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod audit;
pub mod directory;
mod migrations;
pub mod sessions;

use assist_graph::settings::{RemoteAssistanceSettings, RemoteAssistanceState};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{Row, SqlitePool};
use std::path::Path;
use std::str::FromStr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

pub use audit::AuditEvent;

/// Store failures. All are our side's (or the disk's) fault, never the caller's.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The database could not be opened or a query failed.
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    /// The database was written by a newer Assist.
    #[error("database schema version {found} is newer than this assistd supports ({supported}); upgrade assistd")]
    SchemaTooNew {
        /// Version in the database.
        found: i64,
        /// Highest version this code knows.
        supported: i64,
    },
    /// A stored row does not decode (corruption or a manual edit).
    #[error("stored data is corrupt: {0}")]
    Corrupt(String),
}

/// A handle to the store; cheap to clone.
#[derive(Debug, Clone)]
pub struct Store {
    pool: SqlitePool,
    /// Moves on after every committed change to policy inputs (settings, directory objects,
    /// group memberships) made through this handle or its clones.
    generation: Arc<AtomicU64>,
}

/// The current time as Graph writes it (RFC 3339, UTC).
pub fn now_rfc3339() -> String {
    time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

impl Store {
    /// Opens (creating if missing) the SQLite database at `path` and applies migrations.
    pub async fn open_sqlite(path: &Path) -> Result<Self, StoreError> {
        let opts = SqliteConnectOptions::from_str("sqlite://")?
            .filename(path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .foreign_keys(true)
            .busy_timeout(Duration::from_secs(5))
            // Reads through a memory map instead of a read() per page missed, and a larger page
            // cache per connection (16 MiB): the signalling path's commits re-read the same
            // index pages all the time.
            .pragma("mmap_size", "268435456")
            .pragma("cache_size", "-16384")
            // Checkpoint every ~40 MiB of WAL instead of 4 MiB: pages written again and again
            // (index tails, the sessions table) are copied to the database once per checkpoint.
            .pragma("wal_autocheckpoint", "10000");
        let pool = SqlitePoolOptions::new()
            .max_connections(4)
            .acquire_timeout(Duration::from_secs(10))
            .connect_with(opts)
            .await?;
        migrations::apply(&pool).await?;
        Ok(Self {
            pool,
            generation: Arc::new(AtomicU64::new(0)),
        })
    }

    /// A tenant's settings; the defaults if the tenant never configured them.
    pub async fn settings(&self, tenant_id: &str) -> Result<RemoteAssistanceSettings, StoreError> {
        let row = sqlx::query(
            "SELECT remote_assistance_state, allow_sessions_to_unenrolled_devices, block_chat \
             FROM remote_assistance_settings WHERE tenant_id = $1",
        )
        .bind(tenant_id)
        .fetch_optional(&self.pool)
        .await?;
        let Some(row) = row else {
            return Ok(RemoteAssistanceSettings::default());
        };
        let state: String = row.try_get(0)?;
        Ok(RemoteAssistanceSettings {
            state: RemoteAssistanceState::parse(&state)
                .ok_or_else(|| StoreError::Corrupt(format!("remote_assistance_state '{state}'")))?,
            allow_sessions_to_unenrolled_devices: row.try_get::<i64, _>(1)? != 0,
            block_chat: row.try_get::<i64, _>(2)? != 0,
        })
    }

    /// Replaces a tenant's settings and appends `audit` in the same transaction, so a change is
    /// never stored without its audit event (nor the other way round).
    pub async fn save_settings(
        &self,
        tenant_id: &str,
        settings: &RemoteAssistanceSettings,
        audit: Option<&AuditEvent>,
    ) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await?;
        sqlx::query(
            "INSERT INTO remote_assistance_settings \
             (tenant_id, remote_assistance_state, allow_sessions_to_unenrolled_devices, block_chat, updated_at) \
             VALUES ($1, $2, $3, $4, $5) \
             ON CONFLICT (tenant_id) DO UPDATE SET \
             remote_assistance_state = excluded.remote_assistance_state, \
             allow_sessions_to_unenrolled_devices = excluded.allow_sessions_to_unenrolled_devices, \
             block_chat = excluded.block_chat, updated_at = excluded.updated_at",
        )
        .bind(tenant_id)
        .bind(settings.state.as_str())
        .bind(settings.allow_sessions_to_unenrolled_devices as i64)
        .bind(settings.block_chat as i64)
        .bind(now_rfc3339())
        .execute(&mut *tx)
        .await?;
        if let Some(event) = audit {
            audit::insert(&mut tx, tenant_id, event).await?;
        }
        tx.commit().await?;
        self.directory_changed();
        Ok(())
    }

    /// The directory generation: it changes after every committed change to what the policy
    /// decides on (settings, directory objects, group memberships) made through this store
    /// handle or a clone of it. Caches of policy facts compare it to know they are current.
    /// Changes made by other processes sharing the database do not move it.
    pub fn directory_generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    pub(crate) fn directory_changed(&self) {
        self.generation.fetch_add(1, Ordering::AcqRel);
    }

    /// Appends an audit event that records no stored change (e.g. a session event).
    pub async fn append_audit(
        &self,
        tenant_id: &str,
        event: &AuditEvent,
    ) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await?;
        audit::insert(&mut tx, tenant_id, event).await?;
        tx.commit().await?;
        Ok(())
    }

    /// A tenant's audit events, oldest first.
    pub async fn audit_events(
        &self,
        tenant_id: &str,
    ) -> Result<Vec<serde_json::Value>, StoreError> {
        audit::list(&self.pool, tenant_id).await
    }

    /// Whether the database answers (for `/readyz`).
    pub async fn ping(&self) -> Result<(), StoreError> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    /// Closes the pool, waiting for connections to finish.
    pub async fn close(&self) {
        self.pool.close().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn settings_default_then_persist_across_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("assist.db");
        let store = Store::open_sqlite(&path).await.unwrap();
        assert_eq!(
            store.settings("t1").await.unwrap(),
            RemoteAssistanceSettings::default()
        );
        let s = RemoteAssistanceSettings {
            state: RemoteAssistanceState::Enabled,
            allow_sessions_to_unenrolled_devices: false,
            block_chat: true,
        };
        let ev = AuditEvent::new(
            "Patch remoteAssistanceSettings",
            "Update",
            "RemoteAssistance",
        );
        store.save_settings("t1", &s, Some(&ev)).await.unwrap();
        store.close().await;

        let store = Store::open_sqlite(&path).await.unwrap();
        assert_eq!(store.settings("t1").await.unwrap(), s);
        assert_eq!(
            store.settings("t2").await.unwrap(),
            RemoteAssistanceSettings::default()
        );
        let events = store.audit_events("t1").await.unwrap();
        assert_eq!(events.len(), 1);
        assert_eq!(events[0]["activityOperationType"], "Update");
        assert!(store.audit_events("t2").await.unwrap().is_empty());
    }

    #[tokio::test]
    async fn newer_schema_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("assist.db");
        let store = Store::open_sqlite(&path).await.unwrap();
        sqlx::query("INSERT INTO assist_schema_migrations (version, name, applied_at) VALUES (999, 'future', 'x')")
            .execute(&store.pool)
            .await
            .unwrap();
        store.close().await;
        let e = Store::open_sqlite(&path).await.unwrap_err();
        assert!(
            matches!(e, StoreError::SchemaTooNew { found: 999, .. }),
            "{e}"
        );
    }
}
