// The store's SQL, written once and compiled twice: lib.rs includes this file (`include!`) in
// one module per database, each defining `DB` (the sqlx database), `POSTGRES` and `MIGRATIONS`.
// Every query is one SQL text valid on both; where they differ (row locks, transaction start,
// SQLite's rowid) the code picks between two literals on `POSTGRES`. Values are bound with
// types both drivers map to each database's own column types: `bool` (INTEGER 0/1 in SQLite,
// BOOLEAN in PostgreSQL), `Json` (TEXT / JSONB) and `Ts` (TEXT / TIMESTAMPTZ).
// cargo fmt does not see included files: format this one with `rustfmt --edition 2021`.

use crate::audit::AuditEvent;
use crate::codec::{Ts, TsText};
use crate::directory::MemberKind;
use crate::sessions::{SessionBrief, SessionOrder, SessionRow, SessionWrite};
use crate::StoreError;
use assist_graph::settings::{RemoteAssistanceSettings, RemoteAssistanceState};
use serde_json::Value;
use sqlx::types::Json;
use sqlx::Row;

/// A connection (pooled or in a transaction) of this database.
pub(crate) type Conn = <DB as sqlx::Database>::Connection;
/// A transaction of this database.
pub(crate) type Tx = sqlx::Transaction<'static, DB>;

fn decode(body: &str, what: &str) -> Result<Value, StoreError> {
    serde_json::from_str(body).map_err(|e| StoreError::Corrupt(format!("{what}: {e}")))
}

/// Begins a transaction. `write_lock`: SQLite starts it with `BEGIN IMMEDIATE`, taking the
/// database's write lock at once (so what the transaction reads cannot change before it
/// writes); PostgreSQL starts a plain one, and the caller takes row or advisory locks.
pub(crate) async fn begin(pool: &sqlx::Pool<DB>, write_lock: bool) -> Result<Tx, StoreError> {
    Ok(if write_lock && !POSTGRES {
        pool.begin_with("BEGIN IMMEDIATE").await?
    } else {
        pool.begin().await?
    })
}

/// Applies the pending migrations, one transaction each. Two nodes starting at once on one
/// PostgreSQL take turns on an advisory lock; on SQLite, `BEGIN IMMEDIATE` does the same.
pub(crate) async fn migrate(pool: &sqlx::Pool<DB>) -> Result<(), StoreError> {
    let supported = MIGRATIONS.last().map(|m| m.0).unwrap_or(0);
    loop {
        let mut tx = begin(pool, true).await?;
        if POSTGRES {
            sqlx::query("SELECT pg_advisory_xact_lock(4163531380597133312)")
                .execute(&mut *tx)
                .await?;
        }
        sqlx::query(if POSTGRES {
            "CREATE TABLE IF NOT EXISTS assist_schema_migrations (\
             version BIGINT PRIMARY KEY NOT NULL, name TEXT NOT NULL, applied_at TIMESTAMPTZ NOT NULL)"
        } else {
            "CREATE TABLE IF NOT EXISTS assist_schema_migrations (\
             version INTEGER PRIMARY KEY NOT NULL, name TEXT NOT NULL, applied_at TEXT NOT NULL)"
        })
        .execute(&mut *tx)
        .await?;
        let current: i64 =
            sqlx::query_scalar("SELECT COALESCE(MAX(version), 0) FROM assist_schema_migrations")
                .fetch_one(&mut *tx)
                .await?;
        if current > supported {
            return Err(StoreError::SchemaTooNew {
                found: current,
                supported,
            });
        }
        let Some((version, name, sql)) = MIGRATIONS.iter().find(|m| m.0 > current) else {
            tx.commit().await?;
            return Ok(());
        };
        sqlx::raw_sql(*sql).execute(&mut *tx).await?;
        let now = crate::now_rfc3339();
        sqlx::query(
            "INSERT INTO assist_schema_migrations (version, name, applied_at) VALUES ($1, $2, $3)",
        )
        .bind(version)
        .bind(*name)
        .bind(Ts(&now))
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        tracing::info!(version, name, "applied database migration");
    }
}

/// Serialises admin read-modify-write transactions on one tenant across every node sharing
/// the database: PostgreSQL's transaction-scoped advisory lock on the tenant (released at
/// commit or rollback). Needed where a check reads rows that may not exist yet (uniqueness,
/// references), which no row lock covers. SQLite's `BEGIN IMMEDIATE` already serialises.
pub(crate) async fn lock_tenant(c: &mut Conn, tenant_id: &str) -> Result<(), StoreError> {
    if POSTGRES {
        sqlx::query("SELECT pg_advisory_xact_lock(hashtextextended($1, 0))")
            .bind(format!("assist.admin:{tenant_id}"))
            .execute(&mut *c)
            .await?;
    }
    Ok(())
}

pub(crate) async fn ping(c: &mut Conn) -> Result<(), StoreError> {
    sqlx::query("SELECT 1").execute(&mut *c).await?;
    Ok(())
}

/// Only for tests: runs one statement as given.
pub(crate) async fn execute_raw(c: &mut Conn, sql: &'static str) -> Result<u64, StoreError> {
    Ok(sqlx::raw_sql(sql).execute(&mut *c).await?.rows_affected())
}

/// The plan the database chooses for `sql` (SQLite: `EXPLAIN QUERY PLAN`'s detail lines;
/// PostgreSQL: `EXPLAIN`'s lines), for tests that check an index is used.
pub(crate) async fn query_plan(c: &mut Conn, sql: &'static str) -> Result<Vec<String>, StoreError> {
    let explain = if POSTGRES {
        format!("EXPLAIN {sql}")
    } else {
        format!("EXPLAIN QUERY PLAN {sql}")
    };
    let column = if POSTGRES { 0 } else { 3 };
    if !POSTGRES {
        // SQLite plans an EXPLAIN with the schema the connection last loaded, and nothing in an
        // EXPLAIN checks it is current: a pooled connection that last looked before another
        // connection applied a migration would describe a plan without the new indexes. A real
        // read checks the schema cookie and reloads the schema first.
        sqlx::query("SELECT count(*) FROM sqlite_schema")
            .execute(&mut *c)
            .await?;
    }
    // `sql` is a test's own static statement, prefixed with EXPLAIN.
    let rows = sqlx::query(sqlx::AssertSqlSafe(explain))
        .fetch_all(&mut *c)
        .await?;
    rows.iter()
        .map(|r| r.try_get::<String, _>(column).map_err(StoreError::from))
        .collect()
}

// ---- settings ----

/// A tenant's settings row, if any; `for_update` locks it (PostgreSQL) until the transaction ends.
pub(crate) async fn settings(
    c: &mut Conn,
    tenant_id: &str,
    for_update: bool,
) -> Result<Option<RemoteAssistanceSettings>, StoreError> {
    let sql = if POSTGRES && for_update {
        "SELECT remote_assistance_state, allow_sessions_to_unenrolled_devices, block_chat \
         FROM remote_assistance_settings WHERE tenant_id = $1 FOR UPDATE"
    } else {
        "SELECT remote_assistance_state, allow_sessions_to_unenrolled_devices, block_chat \
         FROM remote_assistance_settings WHERE tenant_id = $1"
    };
    let row = sqlx::query(sql)
        .bind(tenant_id)
        .fetch_optional(&mut *c)
        .await?;
    let Some(row) = row else { return Ok(None) };
    let state: String = row.try_get(0)?;
    Ok(Some(RemoteAssistanceSettings {
        state: RemoteAssistanceState::parse(&state)
            .ok_or_else(|| StoreError::Corrupt(format!("remote_assistance_state '{state}'")))?,
        allow_sessions_to_unenrolled_devices: row.try_get::<bool, _>(1)?,
        block_chat: row.try_get::<bool, _>(2)?,
    }))
}

/// Inserts or replaces a tenant's settings; `only_if_absent` leaves an existing row alone.
pub(crate) async fn save_settings(
    c: &mut Conn,
    tenant_id: &str,
    s: &RemoteAssistanceSettings,
    only_if_absent: bool,
) -> Result<(), StoreError> {
    let sql = if only_if_absent {
        "INSERT INTO remote_assistance_settings \
         (tenant_id, remote_assistance_state, allow_sessions_to_unenrolled_devices, block_chat, updated_at) \
         VALUES ($1, $2, $3, $4, $5) ON CONFLICT (tenant_id) DO NOTHING"
    } else {
        "INSERT INTO remote_assistance_settings \
         (tenant_id, remote_assistance_state, allow_sessions_to_unenrolled_devices, block_chat, updated_at) \
         VALUES ($1, $2, $3, $4, $5) \
         ON CONFLICT (tenant_id) DO UPDATE SET \
         remote_assistance_state = excluded.remote_assistance_state, \
         allow_sessions_to_unenrolled_devices = excluded.allow_sessions_to_unenrolled_devices, \
         block_chat = excluded.block_chat, updated_at = excluded.updated_at"
    };
    let now = crate::now_rfc3339();
    sqlx::query(sql)
        .bind(tenant_id)
        .bind(s.state.as_str())
        .bind(s.allow_sessions_to_unenrolled_devices)
        .bind(s.block_chat)
        .bind(Ts(&now))
        .execute(&mut *c)
        .await?;
    Ok(())
}

// ---- audit ----

pub(crate) async fn audit_insert(
    c: &mut Conn,
    tenant_id: &str,
    event: &AuditEvent,
) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO audit_events (tenant_id, id, activity_date_time, category, body) VALUES ($1, $2, $3, $4, $5)",
    )
    .bind(tenant_id)
    .bind(event.str_field("id"))
    .bind(Ts(event.str_field("activityDateTime")))
    .bind(event.str_field("category"))
    .bind(Json(&event.body))
    .execute(&mut *c)
    .await?;
    Ok(())
}

pub(crate) async fn audit_list(c: &mut Conn, tenant_id: &str) -> Result<Vec<Value>, StoreError> {
    let rows = sqlx::query(
        "SELECT CAST(body AS TEXT) FROM audit_events WHERE tenant_id = $1 ORDER BY activity_date_time, id",
    )
    .bind(tenant_id)
    .fetch_all(&mut *c)
    .await?;
    rows.iter()
        .map(|r| decode(&r.try_get::<String, _>(0)?, "audit event"))
        .collect()
}

/// Streams a tenant's audit events, oldest first, to `visit`, one at a time, until it returns
/// `false`.
pub(crate) async fn audit_for_each(
    c: &mut Conn,
    tenant_id: &str,
    visit: &mut (dyn FnMut(Value) -> bool + Send),
) -> Result<(), StoreError> {
    use futures_util::TryStreamExt as _;
    let mut rows = sqlx::query(
        "SELECT CAST(body AS TEXT) FROM audit_events WHERE tenant_id = $1 ORDER BY activity_date_time, id",
    )
    .bind(tenant_id)
    .fetch(&mut *c);
    while let Some(r) = rows.try_next().await? {
        if !visit(decode(&r.try_get::<String, _>(0)?, "audit event")?) {
            break;
        }
    }
    Ok(())
}

pub(crate) async fn audit_get(
    c: &mut Conn,
    tenant_id: &str,
    id: &str,
) -> Result<Option<Value>, StoreError> {
    let row =
        sqlx::query("SELECT CAST(body AS TEXT) FROM audit_events WHERE tenant_id = $1 AND id = $2")
            .bind(tenant_id)
            .bind(id)
            .fetch_optional(&mut *c)
            .await?;
    row.map(|r| decode(&r.try_get::<String, _>(0)?, "audit event"))
        .transpose()
}

// ---- directory ----

pub(crate) async fn list_objects(
    c: &mut Conn,
    tenant_id: &str,
    kind: &str,
) -> Result<Vec<Value>, StoreError> {
    let rows = sqlx::query(
        "SELECT CAST(body AS TEXT) FROM directory_objects WHERE tenant_id = $1 AND kind = $2 ORDER BY seq, id",
    )
    .bind(tenant_id)
    .bind(kind)
    .fetch_all(&mut *c)
    .await?;
    rows.iter()
        .map(|r| decode(&r.try_get::<String, _>(0)?, "object body"))
        .collect()
}

/// Streams a tenant's objects of `kind`, in creation order, to `visit`, one at a time, until
/// it returns `false`.
pub(crate) async fn for_each_object(
    c: &mut Conn,
    tenant_id: &str,
    kind: &str,
    visit: &mut (dyn FnMut(Value) -> bool + Send),
) -> Result<(), StoreError> {
    use futures_util::TryStreamExt as _;
    let mut rows = sqlx::query(
        "SELECT CAST(body AS TEXT) FROM directory_objects WHERE tenant_id = $1 AND kind = $2 ORDER BY seq, id",
    )
    .bind(tenant_id)
    .bind(kind)
    .fetch(&mut *c);
    while let Some(r) = rows.try_next().await? {
        if !visit(decode(&r.try_get::<String, _>(0)?, "object body")?) {
            break;
        }
    }
    Ok(())
}

pub(crate) async fn list_objects_all_tenants(
    c: &mut Conn,
    kind: &str,
    limit: u32,
) -> Result<Vec<(String, Value)>, StoreError> {
    let rows = sqlx::query(
        "SELECT tenant_id, CAST(body AS TEXT) FROM directory_objects WHERE kind = $1 ORDER BY seq, tenant_id, id LIMIT $2",
    )
    .bind(kind)
    .bind(i64::from(limit))
    .fetch_all(&mut *c)
    .await?;
    rows.iter()
        .map(|r| {
            Ok((
                r.try_get::<String, _>(0)?,
                decode(&r.try_get::<String, _>(1)?, "object body")?,
            ))
        })
        .collect()
}

/// One object; `for_update` locks its row (PostgreSQL) until the transaction ends.
pub(crate) async fn get_object(
    c: &mut Conn,
    tenant_id: &str,
    kind: &str,
    id: &str,
    for_update: bool,
) -> Result<Option<Value>, StoreError> {
    let sql = if POSTGRES && for_update {
        "SELECT CAST(body AS TEXT) FROM directory_objects WHERE tenant_id = $1 AND kind = $2 AND id = $3 FOR UPDATE"
    } else {
        "SELECT CAST(body AS TEXT) FROM directory_objects WHERE tenant_id = $1 AND kind = $2 AND id = $3"
    };
    let row = sqlx::query(sql)
        .bind(tenant_id)
        .bind(kind)
        .bind(id)
        .fetch_optional(&mut *c)
        .await?;
    row.map(|r| decode(&r.try_get::<String, _>(0)?, "object body"))
        .transpose()
}

/// Rows changed.
pub(crate) async fn insert_object(
    c: &mut Conn,
    tenant_id: &str,
    kind: &str,
    id: &str,
    body: &Value,
) -> Result<u64, StoreError> {
    Ok(sqlx::query(
        "INSERT INTO directory_objects (tenant_id, kind, id, seq, body) \
         SELECT $1, $2, $3, COALESCE(MAX(seq), 0) + 1, $4 FROM directory_objects WHERE tenant_id = $1 AND kind = $2 \
         ON CONFLICT (tenant_id, kind, id) DO NOTHING",
    )
    .bind(tenant_id)
    .bind(kind)
    .bind(id)
    .bind(Json(body))
    .execute(&mut *c)
    .await?
    .rows_affected())
}

pub(crate) async fn update_object(
    c: &mut Conn,
    tenant_id: &str,
    kind: &str,
    id: &str,
    body: &Value,
) -> Result<u64, StoreError> {
    Ok(sqlx::query(
        "UPDATE directory_objects SET body = $4 WHERE tenant_id = $1 AND kind = $2 AND id = $3",
    )
    .bind(tenant_id)
    .bind(kind)
    .bind(id)
    .bind(Json(body))
    .execute(&mut *c)
    .await?
    .rows_affected())
}

/// Deletes an object and its group memberships (as a group or as a member).
pub(crate) async fn delete_object(
    c: &mut Conn,
    tenant_id: &str,
    kind: &str,
    id: &str,
) -> Result<u64, StoreError> {
    let done =
        sqlx::query("DELETE FROM directory_objects WHERE tenant_id = $1 AND kind = $2 AND id = $3")
            .bind(tenant_id)
            .bind(kind)
            .bind(id)
            .execute(&mut *c)
            .await?
            .rows_affected();
    if done > 0 {
        sqlx::query(
            "DELETE FROM group_members WHERE tenant_id = $1 AND (group_id = $2 OR member_id = $2)",
        )
        .bind(tenant_id)
        .bind(id)
        .execute(&mut *c)
        .await?;
    }
    Ok(done)
}

pub(crate) async fn add_member(
    c: &mut Conn,
    tenant_id: &str,
    group_id: &str,
    member_id: &str,
    kind: MemberKind,
) -> Result<u64, StoreError> {
    Ok(sqlx::query(
        "INSERT INTO group_members (tenant_id, group_id, member_id, member_kind) VALUES ($1, $2, $3, $4) \
         ON CONFLICT (tenant_id, group_id, member_id) DO NOTHING",
    )
    .bind(tenant_id)
    .bind(group_id)
    .bind(member_id)
    .bind(kind.as_str())
    .execute(&mut *c)
    .await?
    .rows_affected())
}

pub(crate) async fn remove_member(
    c: &mut Conn,
    tenant_id: &str,
    group_id: &str,
    member_id: &str,
) -> Result<u64, StoreError> {
    Ok(sqlx::query(
        "DELETE FROM group_members WHERE tenant_id = $1 AND group_id = $2 AND member_id = $3",
    )
    .bind(tenant_id)
    .bind(group_id)
    .bind(member_id)
    .execute(&mut *c)
    .await?
    .rows_affected())
}

/// A group's members in the order they were added (SQLite's rowid; PostgreSQL's identity column).
pub(crate) async fn members(
    c: &mut Conn,
    tenant_id: &str,
    group_id: &str,
) -> Result<Vec<(String, MemberKind)>, StoreError> {
    let sql = if POSTGRES {
        "SELECT member_id, member_kind FROM group_members WHERE tenant_id = $1 AND group_id = $2 ORDER BY seq"
    } else {
        "SELECT member_id, member_kind FROM group_members WHERE tenant_id = $1 AND group_id = $2 ORDER BY rowid"
    };
    let rows = sqlx::query(sql)
        .bind(tenant_id)
        .bind(group_id)
        .fetch_all(&mut *c)
        .await?;
    rows.iter()
        .map(|r| {
            Ok((
                r.try_get::<String, _>(0)?,
                MemberKind::parse(&r.try_get::<String, _>(1)?)?,
            ))
        })
        .collect()
}

pub(crate) async fn groups_of(
    c: &mut Conn,
    tenant_id: &str,
    member_id: &str,
) -> Result<Vec<String>, StoreError> {
    let rows = sqlx::query(
        "SELECT group_id FROM group_members WHERE tenant_id = $1 AND member_id = $2 ORDER BY group_id",
    )
    .bind(tenant_id)
    .bind(member_id)
    .fetch_all(&mut *c)
    .await?;
    rows.iter()
        .map(|r| Ok(r.try_get::<String, _>(0)?))
        .collect()
}

// ---- sessions ----

/// Applies one session write; returns the rows it changed.
pub(crate) async fn session_write(c: &mut Conn, w: &SessionWrite) -> Result<u64, StoreError> {
    let q = match w {
        SessionWrite::Started {
            tenant_id,
            id,
            start_time,
            mode,
            body,
        } => sqlx::query(
            "INSERT INTO sessions (tenant_id, id, state, start_time, last_seen, mode, body) \
             VALUES ($1, $2, 'active', $3, $3, $4, $5) ON CONFLICT (tenant_id, id) DO NOTHING",
        )
        .bind(tenant_id.as_str())
        .bind(id.as_str())
        .bind(Ts(start_time))
        .bind(mode.as_str())
        .bind(Json(body)),
        SessionWrite::Seen {
            tenant_id,
            id,
            now,
            mode,
        } => sqlx::query(SESSION_SEEN_SQL)
            .bind(tenant_id.as_str())
            .bind(id.as_str())
            .bind(Ts(now))
            .bind(mode.as_deref()),
        SessionWrite::Ended {
            tenant_id,
            id,
            end_time,
            reason,
            by,
            mode,
        } => sqlx::query(SESSION_ENDED_SQL)
            .bind(tenant_id.as_str())
            .bind(id.as_str())
            .bind(Ts(end_time))
            .bind(reason.as_str())
            .bind(by.as_str())
            .bind(mode.as_deref()),
        SessionWrite::MergeBody { id, extra } => return merge_body(c, id, extra).await,
        SessionWrite::Audit { tenant_id, event } => {
            audit_insert(c, tenant_id, event).await?;
            return Ok(1);
        }
    };
    Ok(q.execute(&mut *c).await?.rows_affected())
}

/// Merges `extra`'s fields into a session's body (its row locked on PostgreSQL, so merges from
/// two nodes do not lose each other's fields).
pub(crate) async fn merge_body(c: &mut Conn, id: &str, extra: &Value) -> Result<u64, StoreError> {
    let sql = if POSTGRES {
        "SELECT tenant_id, CAST(body AS TEXT) FROM sessions WHERE id = $1 FOR UPDATE"
    } else {
        "SELECT tenant_id, CAST(body AS TEXT) FROM sessions WHERE id = $1"
    };
    let row = sqlx::query(sql).bind(id).fetch_optional(&mut *c).await?;
    let Some(row) = row else { return Ok(0) };
    let tenant: String = row.try_get(0)?;
    let mut body = decode(&row.try_get::<String, _>(1)?, "session body")?;
    if let (Some(b), Some(e)) = (body.as_object_mut(), extra.as_object()) {
        for (k, v) in e {
            b.insert(k.clone(), v.clone());
        }
    }
    Ok(
        sqlx::query("UPDATE sessions SET body = $3 WHERE tenant_id = $1 AND id = $2")
            .bind(&tenant)
            .bind(id)
            .bind(Json(&body))
            .execute(&mut *c)
            .await?
            .rows_affected(),
    )
}

// The writes to one open session find it by its key (or id) with `state <> 'ended'`, not
// `state = 'active'` (the same rows: the column's CHECK allows only the two). On a table
// without statistics, a fresh database's, PostgreSQL's planner costs an index scan of
// `sessions_by_end` on `state = 'active'` the same as the key lookup and takes it: each write
// then walks every open session and every dead row version left behind by an ended one, and a
// pooled connection keeps that plan. A btree cannot serve `<>`, so the key is the only index left.
// `session_write_plans` checks it on both databases.
const SESSION_SEEN_SQL: &str = "UPDATE sessions SET last_seen = $3, mode = COALESCE($4, mode) \
     WHERE tenant_id = $1 AND id = $2 AND state <> 'ended'";
const SESSION_ENDED_SQL: &str =
    "UPDATE sessions SET state = 'ended', end_time = $3, last_seen = $3, \
     end_reason = $4, ended_by = $5, mode = COALESCE($6, mode) \
     WHERE tenant_id = $1 AND id = $2 AND state <> 'ended'";
const SESSION_CLOSE_SQL: &str =
    "UPDATE sessions SET state = 'ended', end_time = last_seen, end_reason = $2, \
     ended_by = 'broker' WHERE id = $1 AND state <> 'ended'";

/// The plans of the writes to one open session, each as `query_plan`'s lines, for the test
/// that checks they find their row by its key.
pub(crate) async fn session_write_plans(
    c: &mut Conn,
) -> Result<Vec<(&'static str, Vec<String>)>, StoreError> {
    let explain = |sql: &str| {
        if POSTGRES {
            format!("EXPLAIN {sql}")
        } else {
            format!("EXPLAIN QUERY PLAN {sql}")
        }
    };
    let column = if POSTGRES { 0 } else { 3 };
    let now = "2026-01-01T00:00:00Z";
    let mut plans = Vec::new();
    for (name, rows) in [
        (
            "seen",
            sqlx::query(sqlx::AssertSqlSafe(explain(SESSION_SEEN_SQL)))
                .bind("t")
                .bind("s1")
                .bind(Ts(now))
                .bind(None::<&str>)
                .fetch_all(&mut *c)
                .await?,
        ),
        (
            "ended",
            sqlx::query(sqlx::AssertSqlSafe(explain(SESSION_ENDED_SQL)))
                .bind("t")
                .bind("s1")
                .bind(Ts(now))
                .bind("r")
                .bind("helper")
                .bind(None::<&str>)
                .fetch_all(&mut *c)
                .await?,
        ),
        (
            "close",
            sqlx::query(sqlx::AssertSqlSafe(explain(SESSION_CLOSE_SQL)))
                .bind("s1")
                .bind("r")
                .fetch_all(&mut *c)
                .await?,
        ),
    ] {
        let lines = rows
            .iter()
            .map(|r| r.try_get::<String, _>(column).map_err(StoreError::from))
            .collect::<Result<_, _>>()?;
        plans.push((name, lines));
    }
    Ok(plans)
}

/// Applies the session writes of `writes`, then its audit events, in order
/// ([`Store::write_session_batch`](crate::Store::write_session_batch)), through the database's
/// `batch` module: SQLite's runs the session writes row by row and the audit events in
/// multi-row statements; PostgreSQL's binds each kind of write as arrays, one statement each
/// (`pg_batch.rs`), so a batch of pairings takes a handful of statements whatever its size.
pub(crate) async fn session_batch(c: &mut Conn, writes: &[SessionWrite]) -> Result<(), StoreError> {
    let mut rows: Vec<&SessionWrite> = Vec::with_capacity(writes.len());
    let mut audits: Vec<(&str, &AuditEvent)> = Vec::new();
    for w in writes {
        match w {
            SessionWrite::Audit { tenant_id, event } => audits.push((tenant_id, event)),
            other => rows.push(other),
        }
    }
    batch::session_rows(c, &rows).await?;
    batch::audit_rows(c, &audits).await
}

pub(crate) async fn close_open_sessions(c: &mut Conn, reason: &str) -> Result<u64, StoreError> {
    Ok(sqlx::query(
        "UPDATE sessions SET state = 'ended', end_time = last_seen, end_reason = $1, ended_by = 'broker' WHERE state = 'active'",
    )
    .bind(reason)
    .execute(&mut *c)
    .await?
    .rows_affected())
}

pub(crate) async fn close_session(c: &mut Conn, id: &str, reason: &str) -> Result<u64, StoreError> {
    Ok(sqlx::query(SESSION_CLOSE_SQL)
        .bind(id)
        .bind(reason)
        .execute(&mut *c)
        .await?
        .rows_affected())
}

pub(crate) async fn stale_open_sessions(
    c: &mut Conn,
    seen_before: &str,
    limit: u32,
) -> Result<Vec<String>, StoreError> {
    let rows = sqlx::query(
        "SELECT id FROM sessions WHERE state = 'active' AND last_seen < $1 ORDER BY last_seen, id LIMIT $2",
    )
    .bind(Ts(seen_before))
    .bind(i64::from(limit))
    .fetch_all(&mut *c)
    .await?;
    Ok(rows
        .iter()
        .map(|r| r.try_get::<String, _>(0))
        .collect::<Result<_, _>>()?)
}

/// The columns a session listing reads, in `session_from_row`'s order.
const SESSION_COLUMNS: &str =
    "id, state, start_time, end_time, mode, end_reason, ended_by, CAST(body AS TEXT)";

fn session_from_row(r: &<DB as sqlx::Database>::Row) -> Result<SessionRow, StoreError> {
    Ok(SessionRow {
        id: r.try_get(0)?,
        state: r.try_get(1)?,
        start_time: r.try_get::<TsText, _>(2)?.0,
        end_time: r.try_get::<Option<TsText>, _>(3)?.map(|t| t.0),
        mode: r.try_get(4)?,
        end_reason: r.try_get(5)?,
        ended_by: r.try_get(6)?,
        body: decode(&r.try_get::<String, _>(7)?, "session body")?,
    })
}

pub(crate) async fn sessions(c: &mut Conn, tenant_id: &str) -> Result<Vec<SessionRow>, StoreError> {
    let sql = format!(
        "SELECT {SESSION_COLUMNS} FROM sessions WHERE tenant_id = $1 ORDER BY start_time DESC, id"
    );
    // Built from constants only; the tenant is bound.
    let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(tenant_id)
        .fetch_all(&mut *c)
        .await?;
    rows.iter().map(session_from_row).collect()
}

pub(crate) async fn session_count(c: &mut Conn, tenant_id: &str) -> Result<u64, StoreError> {
    let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM sessions WHERE tenant_id = $1")
        .bind(tenant_id)
        .fetch_one(&mut *c)
        .await?;
    Ok(u64::try_from(n).unwrap_or(0))
}

/// A listing's `ORDER BY` (each key of `order`, then newest first: the order of [`sessions`])
/// and the values to bind for it from `$2` on: the body fields' JSON paths.
///
/// Each key orders as the report always has (`serde_json::Value` values: two numbers as
/// numbers, anything else by its JSON text, a missing field as `null`), which comes to: by
/// kind (strings, numbers, arrays, `false`, `null`, `true`, objects, as their JSON texts'
/// first characters order), then numbers by value and strings by their JSON text, byte by
/// byte (`json_quote` in SQLite, `::text COLLATE "C"` in PostgreSQL: both escape as
/// serde_json does). Time columns order as stored: SQLite's RFC 3339 text (no such text is a
/// prefix of another, so this is their JSON texts' order, and `sessions_by_start` serves it);
/// PostgreSQL's `TIMESTAMPTZ` as instants (the same as the text for times written alike, e.g.
/// all with microseconds).
fn session_order_sql(order: &[SessionOrder]) -> Result<(String, Vec<String>), StoreError> {
    let mut terms: Vec<String> = Vec::new();
    let mut binds: Vec<String> = Vec::new();
    for key in order {
        let d = if key.descending { "DESC" } else { "ASC" };
        let column = match key.column.as_str() {
            "id" => Some(("id", false, false)),
            "startDateTime" => Some(("start_time", false, true)),
            "endDateTime" => Some(("end_time", true, true)),
            "remoteAssistanceSessionType" => Some(("mode", false, false)),
            "state" => Some(("state", false, false)),
            "endReason" => Some(("end_reason", true, false)),
            "endedBy" => Some(("ended_by", true, false)),
            _ => None,
        };
        if let Some((col, nullable, time)) = column {
            if nullable {
                // `null`'s JSON text orders after any string's.
                terms.push(format!("({col} IS NULL) {d}"));
            }
            terms.push(match (POSTGRES, time) {
                // RFC 3339 texts: none is a prefix of another, so they order as their JSON
                // texts do, and the index on (tenant, start time) serves the order.
                (_, true) => format!("{col} {d}"),
                (true, false) => format!("to_jsonb({col})::text COLLATE \"C\" {d}"),
                (false, false) => format!("json_quote({col}) {d}"),
            });
            continue;
        }
        if key.column.is_empty()
            || !key
                .column
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_')
        {
            return Err(StoreError::InvalidQuery(format!(
                "'{}' is not a session field",
                key.column
            )));
        }
        binds.push(if POSTGRES {
            key.column.clone()
        } else {
            format!("$.{}", key.column)
        });
        let p = format!("${}", binds.len() + 1);
        if POSTGRES {
            let v = format!("(body -> {p})");
            terms.push(format!(
                "CASE jsonb_typeof({v}) WHEN 'string' THEN 0 WHEN 'number' THEN 1 WHEN 'array' THEN 2 \
                 WHEN 'boolean' THEN CASE WHEN {v} = 'true'::jsonb THEN 5 ELSE 3 END \
                 WHEN 'object' THEN 6 ELSE 4 END {d}"
            ));
            terms.push(format!(
                "CASE WHEN jsonb_typeof({v}) = 'number' THEN (body ->> {p})::float8 END {d}"
            ));
            terms.push(format!(
                "(CASE WHEN jsonb_typeof({v}) IN ('string', 'array', 'object') THEN {v}::text END) COLLATE \"C\" {d}"
            ));
        } else {
            let t = format!("json_type(body, {p})");
            terms.push(format!(
                "CASE {t} WHEN 'text' THEN 0 WHEN 'integer' THEN 1 WHEN 'real' THEN 1 WHEN 'array' THEN 2 \
                 WHEN 'false' THEN 3 WHEN 'true' THEN 5 WHEN 'object' THEN 6 ELSE 4 END {d}"
            ));
            terms.push(format!(
                "CASE WHEN {t} IN ('integer', 'real') THEN json_extract(body, {p}) END {d}"
            ));
            terms.push(format!(
                "CASE WHEN {t} = 'text' THEN json_quote(json_extract(body, {p})) \
                 WHEN {t} IN ('array', 'object') THEN json_extract(body, {p}) END {d}"
            ));
        }
    }
    terms.push("start_time DESC".into());
    terms.push("id".into());
    Ok((terms.join(", "), binds))
}

/// Rows `[skip, skip + limit)` of a tenant's sessions in `order`.
pub(crate) async fn sessions_page(
    c: &mut Conn,
    tenant_id: &str,
    order: &[SessionOrder],
    skip: u64,
    limit: u64,
) -> Result<Vec<SessionRow>, StoreError> {
    let (order_by, binds) = session_order_sql(order)?;
    let n = binds.len();
    let sql = format!(
        "SELECT {SESSION_COLUMNS} FROM sessions WHERE tenant_id = $1 ORDER BY {order_by} LIMIT ${} OFFSET ${}",
        n + 2,
        n + 3
    );
    // Built from constants and numbered placeholders; every value is bound.
    let mut q = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(tenant_id);
    for b in binds {
        q = q.bind(b);
    }
    let rows = q
        .bind(i64::try_from(limit).unwrap_or(i64::MAX))
        .bind(i64::try_from(skip).unwrap_or(i64::MAX))
        .fetch_all(&mut *c)
        .await?;
    rows.iter().map(session_from_row).collect()
}

/// Streams a tenant's sessions in `order` to `visit`, one row at a time, until it returns
/// `false`.
pub(crate) async fn for_each_session(
    c: &mut Conn,
    tenant_id: &str,
    order: &[SessionOrder],
    visit: &mut (dyn FnMut(SessionRow) -> bool + Send),
) -> Result<(), StoreError> {
    use futures_util::TryStreamExt as _;
    let (order_by, binds) = session_order_sql(order)?;
    let sql =
        format!("SELECT {SESSION_COLUMNS} FROM sessions WHERE tenant_id = $1 ORDER BY {order_by}");
    // Built from constants and numbered placeholders; every value is bound.
    let mut q = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(tenant_id);
    for b in binds {
        q = q.bind(b);
    }
    let mut rows = q.fetch(&mut *c);
    while let Some(r) = rows.try_next().await? {
        if !visit(session_from_row(&r)?) {
            break;
        }
    }
    Ok(())
}

/// Streams the times, state and mode of a tenant's sessions (no report body) to `visit`,
/// newest first (as [`sessions`]: sums over them come out the same to the last bit).
pub(crate) async fn for_each_session_brief(
    c: &mut Conn,
    tenant_id: &str,
    visit: &mut (dyn FnMut(SessionBrief) + Send),
) -> Result<(), StoreError> {
    use futures_util::TryStreamExt as _;
    let mut rows = sqlx::query(
        "SELECT state, start_time, end_time, mode FROM sessions WHERE tenant_id = $1 ORDER BY start_time DESC, id",
    )
    .bind(tenant_id)
    .fetch(&mut *c);
    while let Some(r) = rows.try_next().await? {
        visit(SessionBrief {
            state: r.try_get(0)?,
            start_time: r.try_get::<TsText, _>(1)?.0,
            end_time: r.try_get::<Option<TsText>, _>(2)?.map(|t| t.0),
            mode: r.try_get(3)?,
        });
    }
    Ok(())
}

/// Retention: (sessions, audit events) deleted.
pub(crate) async fn delete_older_than(
    c: &mut Conn,
    cutoff: &str,
) -> Result<(u64, u64), StoreError> {
    let s = sqlx::query("DELETE FROM sessions WHERE state = 'ended' AND end_time < $1")
        .bind(Ts(cutoff))
        .execute(&mut *c)
        .await?
        .rows_affected();
    let a = sqlx::query("DELETE FROM audit_events WHERE activity_date_time < $1")
        .bind(Ts(cutoff))
        .execute(&mut *c)
        .await?
        .rows_affected();
    Ok((s, a))
}
