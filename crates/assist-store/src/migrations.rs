//! Versioned schema migrations, embedded in the binary and applied in order on open.
//!
//! Each migration runs in its own transaction together with the row that records it, so a
//! crash mid-way leaves the database at the previous version.

use crate::StoreError;
use sqlx::{Row, SqlitePool};

/// (version, name, SQL). Versions are dense and never reused; a released migration never changes.
const MIGRATIONS: &[(i64, &str, &str)] = &[
    (
        1,
        "settings_and_audit",
        include_str!("../migrations/0001_settings_and_audit.sql"),
    ),
    (
        2,
        "directory",
        include_str!("../migrations/0002_directory.sql"),
    ),
    (
        3,
        "sessions",
        include_str!("../migrations/0003_sessions.sql"),
    ),
];

pub(crate) async fn apply(pool: &SqlitePool) -> Result<(), StoreError> {
    sqlx::query(
        "CREATE TABLE IF NOT EXISTS assist_schema_migrations (\
         version INTEGER PRIMARY KEY NOT NULL, name TEXT NOT NULL, applied_at TEXT NOT NULL)",
    )
    .execute(pool)
    .await?;
    let current: i64 =
        sqlx::query("SELECT COALESCE(MAX(version), 0) FROM assist_schema_migrations")
            .fetch_one(pool)
            .await?
            .try_get(0)?;
    let supported = MIGRATIONS.last().map(|m| m.0).unwrap_or(0);
    if current > supported {
        return Err(StoreError::SchemaTooNew {
            found: current,
            supported,
        });
    }
    for (version, name, sql) in MIGRATIONS.iter().filter(|m| m.0 > current) {
        let mut tx = pool.begin().await?;
        sqlx::raw_sql(*sql).execute(&mut *tx).await?;
        sqlx::query(
            "INSERT INTO assist_schema_migrations (version, name, applied_at) VALUES ($1, $2, $3)",
        )
        .bind(version)
        .bind(name)
        .bind(crate::now_rfc3339())
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        tracing::info!(version, name, "applied database migration");
    }
    Ok(())
}
