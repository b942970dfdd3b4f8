//! SQLite's session batch: row by row, and audit events in multi-row statements (in process,
//! no round trip per statement; SQLite has no arrays to bind). The `sqlite_db` instantiation of
//! `backend.rs` calls it as its `batch`; `pg_batch.rs` is PostgreSQL's.

use crate::audit::{AuditEvent, MAX_ROWS_PER_INSERT};
use crate::codec::Ts;
use crate::sessions::SessionWrite;
use crate::sqlite_db::{session_write, Conn};
use crate::StoreError;
use sqlx::types::Json;

/// Applies the session row writes in order.
pub(crate) async fn session_rows(c: &mut Conn, writes: &[&SessionWrite]) -> Result<(), StoreError> {
    for w in writes {
        session_write(c, w).await?;
    }
    Ok(())
}

/// Inserts audit events in multi-row statements, in order.
pub(crate) async fn audit_rows(
    c: &mut Conn,
    events: &[(&str, &AuditEvent)],
) -> Result<(), StoreError> {
    for chunk in events.chunks(MAX_ROWS_PER_INSERT) {
        audit_insert_many(c, chunk).await?;
    }
    Ok(())
}

/// Inserts `(tenant, event)` rows with one statement (at most
/// [`MAX_ROWS_PER_INSERT`] of them).
async fn audit_insert_many(c: &mut Conn, events: &[(&str, &AuditEvent)]) -> Result<(), StoreError> {
    let mut sql = String::from(
        "INSERT INTO audit_events (tenant_id, id, activity_date_time, category, body) VALUES ",
    );
    for i in 0..events.len() {
        if i > 0 {
            sql.push_str(", ");
        }
        let b = i * 5;
        sql.push_str(&format!(
            "(${}, ${}, ${}, ${}, ${})",
            b + 1,
            b + 2,
            b + 3,
            b + 4,
            b + 5
        ));
    }
    // Built only from numbered placeholders; every value is bound.
    let mut q = sqlx::query(sqlx::AssertSqlSafe(sql));
    for (tenant_id, event) in events {
        q = q
            .bind(*tenant_id)
            .bind(event.str_field("id"))
            .bind(Ts(event.str_field("activityDateTime")))
            .bind(event.str_field("category"))
            .bind(Json(&event.body));
    }
    q.execute(&mut *c).await?;
    Ok(())
}
