//! PostgreSQL's session batch: each kind of row write in one statement over arrays (`UNNEST`),
//! one statement text whatever the batch's size, where SQLite (in process, no round trip per
//! statement) runs them row by row. The `postgres_db` instantiation of `backend.rs` calls it as
//! its `batch`.

use crate::audit::AuditEvent;
use crate::codec::Ts;
use crate::postgres_db::{merge_body, session_write, Conn};
use crate::sessions::SessionWrite;
use crate::StoreError;
use serde_json::Value;
use sqlx::types::Json;
use std::collections::HashSet;

/// Whether grouping `writes` by kind (all starts, then the seen times, then the ends, then the
/// stats merges) keeps their effect: it does unless a session's first start in the batch comes
/// after another write to it (which found no row, or an older one). A start after the
/// session's first start changes nothing either way.
pub(crate) fn groupable(writes: &[&SessionWrite]) -> bool {
    let mut started: HashSet<&str> = HashSet::new();
    let mut unstarted: HashSet<&str> = HashSet::new();
    for w in writes {
        match w {
            SessionWrite::Started { id, .. } => {
                if unstarted.contains(id.as_str()) {
                    return false;
                }
                started.insert(id);
            }
            SessionWrite::Seen { id, .. }
            | SessionWrite::Ended { id, .. }
            | SessionWrite::MergeBody { id, .. } => {
                if !started.contains(id.as_str()) {
                    unstarted.insert(id);
                }
            }
            SessionWrite::Audit { .. } => {}
        }
    }
    true
}

/// Applies the session row writes of a batch, in effect in their order (see [`groupable`]):
/// the starts in one INSERT (a repeated start changes nothing, as row by row), each seen time
/// that comes before its session's end (one after it would change nothing), the first end of
/// each session in one UPDATE (later ones would change nothing), then the stats merges in order.
pub(crate) async fn session_rows(c: &mut Conn, writes: &[&SessionWrite]) -> Result<(), StoreError> {
    if !groupable(writes) {
        for w in writes {
            session_write(c, w).await?;
        }
        return Ok(());
    }
    let mut starts = Starts::default();
    let mut started: HashSet<(&str, &str)> = HashSet::new();
    let mut ends = Ends::default();
    let mut ended: HashSet<(&str, &str)> = HashSet::new();
    let mut seen: Vec<&SessionWrite> = Vec::new();
    let mut merges: Vec<(&str, &Value)> = Vec::new();
    for w in writes {
        match w {
            SessionWrite::Started {
                tenant_id,
                id,
                start_time,
                mode,
                body,
            } => {
                if started.insert((tenant_id.as_str(), id.as_str())) {
                    starts.tenant.push(tenant_id);
                    starts.id.push(id);
                    starts.start.push(Ts(start_time));
                    starts.mode.push(mode);
                    starts.body.push(Json(body));
                }
            }
            SessionWrite::Seen { tenant_id, id, .. } => {
                if !ended.contains(&(tenant_id.as_str(), id.as_str())) {
                    seen.push(w);
                }
            }
            SessionWrite::Ended {
                tenant_id,
                id,
                end_time,
                reason,
                by,
                mode,
            } => {
                if ended.insert((tenant_id.as_str(), id.as_str())) {
                    ends.tenant.push(tenant_id);
                    ends.id.push(id);
                    ends.end.push(Ts(end_time));
                    ends.reason.push(reason);
                    ends.by.push(by);
                    ends.mode.push(mode.as_deref());
                }
            }
            SessionWrite::MergeBody { id, extra } => merges.push((id.as_str(), extra)),
            SessionWrite::Audit { .. } => {}
        }
    }
    if !starts.id.is_empty() {
        sqlx::query(
            "INSERT INTO sessions (tenant_id, id, state, start_time, last_seen, mode, body) \
             SELECT t, i, 'active', s, s, m, b FROM UNNEST($1::text[], $2::text[], \
             $3::timestamptz[], $4::text[], $5::jsonb[]) AS u(t, i, s, m, b) \
             ON CONFLICT (tenant_id, id) DO NOTHING",
        )
        .bind(starts.tenant)
        .bind(starts.id)
        .bind(starts.start)
        .bind(starts.mode)
        .bind(starts.body)
        .execute(&mut *c)
        .await?;
    }
    for w in seen {
        session_write(c, w).await?;
    }
    if !ends.id.is_empty() {
        // `state <> 'ended'`, not `= 'active'`: see `SESSION_ENDED_SQL`.
        sqlx::query(
            "UPDATE sessions AS s SET state = 'ended', end_time = u.e, last_seen = u.e, \
             end_reason = u.r, ended_by = u.b, mode = COALESCE(u.m, s.mode) \
             FROM UNNEST($1::text[], $2::text[], $3::timestamptz[], $4::text[], $5::text[], \
             $6::text[]) AS u(t, i, e, r, b, m) \
             WHERE s.tenant_id = u.t AND s.id = u.i AND s.state <> 'ended'",
        )
        .bind(ends.tenant)
        .bind(ends.id)
        .bind(ends.end)
        .bind(ends.reason)
        .bind(ends.by)
        .bind(ends.mode)
        .execute(&mut *c)
        .await?;
    }
    for (id, extra) in merges {
        merge_body(c, id, extra).await?;
    }
    Ok(())
}

/// Inserts audit events in one statement (their order within it is theirs).
pub(crate) async fn audit_rows(
    c: &mut Conn,
    events: &[(&str, &AuditEvent)],
) -> Result<(), StoreError> {
    if events.is_empty() {
        return Ok(());
    }
    let mut tenant = Vec::with_capacity(events.len());
    let mut id = Vec::with_capacity(events.len());
    let mut at = Vec::with_capacity(events.len());
    let mut category = Vec::with_capacity(events.len());
    let mut body = Vec::with_capacity(events.len());
    for (t, e) in events {
        tenant.push(*t);
        id.push(e.str_field("id"));
        at.push(Ts(e.str_field("activityDateTime")));
        category.push(e.str_field("category"));
        body.push(Json(&e.body));
    }
    sqlx::query(
        "INSERT INTO audit_events (tenant_id, id, activity_date_time, category, body) \
         SELECT * FROM UNNEST($1::text[], $2::text[], $3::timestamptz[], $4::text[], $5::jsonb[])",
    )
    .bind(tenant)
    .bind(id)
    .bind(at)
    .bind(category)
    .bind(body)
    .execute(&mut *c)
    .await?;
    Ok(())
}

/// The starts' columns.
#[derive(Default)]
struct Starts<'a> {
    tenant: Vec<&'a str>,
    id: Vec<&'a str>,
    start: Vec<Ts<'a>>,
    mode: Vec<&'a str>,
    body: Vec<Json<&'a Value>>,
}

/// The ends' columns.
#[derive(Default)]
struct Ends<'a> {
    tenant: Vec<&'a str>,
    id: Vec<&'a str>,
    end: Vec<Ts<'a>>,
    reason: Vec<&'a str>,
    by: Vec<&'a str>,
    mode: Vec<Option<&'a str>>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn start(id: &str) -> SessionWrite {
        SessionWrite::Started {
            tenant_id: "t".into(),
            id: id.into(),
            start_time: "2026-01-01T00:00:00Z".into(),
            mode: "viewOnly".into(),
            body: json!({}),
        }
    }

    fn merge(id: &str) -> SessionWrite {
        SessionWrite::MergeBody {
            id: id.into(),
            extra: json!({}),
        }
    }

    #[test]
    fn a_start_after_another_write_to_its_session_is_not_grouped() {
        let (a, b) = (start("a"), start("b"));
        let (ma, mb) = (merge("a"), merge("b"));
        assert!(groupable(&[&a, &ma, &b, &mb]));
        assert!(groupable(&[&a, &b, &mb, &ma]));
        assert!(
            groupable(&[&ma, &b]),
            "a write to a session started earlier"
        );
        assert!(groupable(&[&a, &a]), "a repeated start");
        assert!(groupable(&[&a, &ma, &a]), "a start after the first");
        assert!(!groupable(&[&ma, &a]));
        assert!(!groupable(&[&a, &mb, &b]));
        assert!(groupable(&[]));
    }
}
