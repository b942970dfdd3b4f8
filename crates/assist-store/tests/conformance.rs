//! The store conformance suite: every behaviour of the store API, run against SQLite (a temp
//! file) and against PostgreSQL (a real server of the tests' own, `assist-testkit`). Each
//! behaviour is one async fn taking a [`Db`]; `conformance!` makes a test of it per database.
//!
//! Without PostgreSQL's server binaries the PostgreSQL half skips with a loud message, unless
//! `CI` or `ASSIST_REQUIRE_POSTGRES` is set (then it fails).

use assist_graph::settings::{RemoteAssistanceSettings, RemoteAssistanceState};
use assist_store::directory::MemberKind;
use assist_store::sessions::{SessionOrder, SessionRow, SessionWrite};
use assist_store::{AuditEvent, Store, StoreError, StoreUrl};
use serde_json::json;
use std::sync::Arc;
use std::time::Duration;

/// One database to run a behaviour on: its URL (reopened as often as a test likes).
struct Db {
    url: StoreUrl,
    _dir: Option<tempfile::TempDir>,
}

impl Db {
    fn sqlite() -> Db {
        let dir = tempfile::tempdir().unwrap();
        Db {
            url: StoreUrl::Sqlite(dir.path().join("assist.db")),
            _dir: Some(dir),
        }
    }

    fn postgres() -> Option<Db> {
        let pg = assist_testkit::PostgresInstance::shared()?;
        Some(Db {
            url: StoreUrl::Postgres(pg.fresh_database()),
            _dir: None,
        })
    }

    /// A new handle (a new pool): a second one on the same database stands for another node.
    async fn open(&self) -> Store {
        Store::open(&self.url).await.expect("store opens")
    }
}

macro_rules! conformance {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name(super::Db::sqlite()).await;
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    let Some(db) = super::Db::postgres() else { return };
                    super::$name(db).await;
                }
            )*
        }
    };
}

conformance!(
    writes_to_one_open_session_find_it_by_its_key_on_a_fresh_database,
    stale_open_sessions_are_the_active_ones_silent_since_before_the_cutoff,
    settings_default_then_persist_across_reopen,
    newer_schema_is_refused,
    reopening_applies_no_migration_twice,
    objects_crud_membership_and_audit_in_one_transaction,
    members_keep_the_order_they_were_added_in,
    objects_across_tenants_are_listed_in_creation_order_up_to_the_limit,
    the_generation_moves_on_policy_input_changes_only,
    batched_audit_events_are_all_stored_in_order_per_tenant,
    session_lifecycle_recovery_and_retention,
    a_session_batch_applies_in_order_in_one_transaction_or_not_at_all,
    a_session_batch_has_the_effect_of_its_writes_one_at_a_time,
    times_read_back_as_written,
    retention_keeps_thirty_days,
    an_admin_transaction_dropped_uncommitted_changes_nothing,
    concurrent_settings_patches_on_two_nodes_lose_no_update,
    concurrent_object_patches_on_two_nodes_lose_no_update,
    a_uniqueness_check_holds_against_concurrent_creates_on_two_nodes,
    session_listings_order_in_the_database_as_the_report_always_did,
    five_thousand_sessions_page_through_once_each_in_order,
);

fn ev() -> AuditEvent {
    AuditEvent::new("test", "Create", "Other")
}

async fn settings_default_then_persist_across_reopen(db: Db) {
    let store = db.open().await;
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

    let store = db.open().await;
    assert_eq!(store.settings("t1").await.unwrap(), s);
    assert_eq!(
        store.settings("t2").await.unwrap(),
        RemoteAssistanceSettings::default()
    );
    let events = store.audit_events("t1").await.unwrap();
    assert_eq!(events.len(), 1);
    assert_eq!(events[0]["activityOperationType"], "Update");
    assert_eq!(events[0]["id"], ev.body["id"], "the body reads back whole");
    assert_eq!(events[0], ev.body);
    assert!(store.audit_events("t2").await.unwrap().is_empty());
}

async fn newer_schema_is_refused(db: Db) {
    let store = db.open().await;
    store
        .execute_raw_for_tests(
            "INSERT INTO assist_schema_migrations (version, name, applied_at) \
             VALUES (999, 'future', '2026-01-01T00:00:00Z')",
        )
        .await
        .unwrap();
    store.close().await;
    let e = Store::open(&db.url).await.unwrap_err();
    assert!(
        matches!(e, StoreError::SchemaTooNew { found: 999, .. }),
        "{e}"
    );
}

async fn reopening_applies_no_migration_twice(db: Db) {
    // Two handles opened at once (two nodes starting together), then a third later.
    let (a, b) = tokio::join!(Store::open(&db.url), Store::open(&db.url));
    let (a, b) = (a.unwrap(), b.unwrap());
    a.insert_object("t", "user", "u1", &json!({"id": "u1"}), None)
        .await
        .unwrap();
    let c = db.open().await;
    assert_eq!(c.list_objects("t", "user").await.unwrap().len(), 1);
    let versions = c
        .execute_raw_for_tests("DELETE FROM assist_schema_migrations WHERE version > 0")
        .await
        .unwrap();
    assert_eq!(versions, 5, "each migration recorded once");
    b.close().await;
}

async fn objects_crud_membership_and_audit_in_one_transaction(db: Db) {
    let store = db.open().await;
    assert!(store
        .insert_object("t", "user", "u1", &json!({"id":"u1"}), Some(&ev()))
        .await
        .unwrap());
    assert!(store
        .insert_object("t", "user", "u2", &json!({"id":"u2"}), Some(&ev()))
        .await
        .unwrap());
    assert!(!store
        .insert_object("t", "user", "u1", &json!({"id":"dup"}), Some(&ev()))
        .await
        .unwrap());
    assert!(store
        .insert_object("t", "group", "g1", &json!({"id":"g1"}), Some(&ev()))
        .await
        .unwrap());
    assert!(store
        .insert_object("other", "user", "u1", &json!({"id":"u1","t":2}), None)
        .await
        .unwrap());
    let users = store.list_objects("t", "user").await.unwrap();
    assert_eq!(users, vec![json!({"id":"u1"}), json!({"id":"u2"})]);
    assert!(store
        .add_member("t", "g1", "u1", MemberKind::User, &ev())
        .await
        .unwrap());
    assert!(!store
        .add_member("t", "g1", "u1", MemberKind::User, &ev())
        .await
        .unwrap());
    assert_eq!(store.groups_of("t", "u1").await.unwrap(), vec!["g1"]);
    assert!(store.groups_of("other", "u1").await.unwrap().is_empty());
    assert!(store
        .update_object("t", "user", "u1", &json!({"id":"u1","x":1}), &ev())
        .await
        .unwrap());
    assert!(!store
        .update_object("t", "user", "nope", &json!({}), &ev())
        .await
        .unwrap());
    assert_eq!(
        store.get_object("t", "user", "u1").await.unwrap(),
        Some(json!({"id":"u1","x":1}))
    );
    assert!(!store.remove_member("t", "g1", "u2", &ev()).await.unwrap());
    assert!(store.delete_object("t", "user", "u1", &ev()).await.unwrap());
    assert!(!store.delete_object("t", "user", "u1", &ev()).await.unwrap());
    assert!(
        store.groups_of("t", "u1").await.unwrap().is_empty(),
        "membership went with the user"
    );
    assert!(store.members("t", "g1").await.unwrap().is_empty());
    assert_eq!(
        store.get_object("other", "user", "u1").await.unwrap(),
        Some(json!({"id":"u1","t":2}))
    );
    // 3 inserts + 1 member add + 1 update + 1 delete; the refused writes left nothing.
    assert_eq!(store.audit_events("t").await.unwrap().len(), 6);
}

async fn members_keep_the_order_they_were_added_in(db: Db) {
    let store = db.open().await;
    for (id, kind) in [
        ("zed", MemberKind::User),
        ("dev", MemberKind::Device),
        ("amy", MemberKind::User),
    ] {
        assert!(store.add_member("t", "g", id, kind, &ev()).await.unwrap());
    }
    assert!(store.remove_member("t", "g", "dev", &ev()).await.unwrap());
    assert!(store
        .add_member("t", "g", "dev", MemberKind::Device, &ev())
        .await
        .unwrap());
    assert_eq!(
        store.members("t", "g").await.unwrap(),
        vec![
            ("zed".to_owned(), MemberKind::User),
            ("amy".to_owned(), MemberKind::User),
            ("dev".to_owned(), MemberKind::Device),
        ]
    );
    assert_eq!(store.groups_of("t", "amy").await.unwrap(), vec!["g"]);
}

async fn objects_across_tenants_are_listed_in_creation_order_up_to_the_limit(db: Db) {
    let store = db.open().await;
    for (t, id) in [("b", "u1"), ("a", "u2"), ("b", "u3")] {
        store
            .insert_object(
                t,
                "user",
                id,
                &json!({"id": id, "n": [1, 2.5, null, "x"]}),
                None,
            )
            .await
            .unwrap();
    }
    store
        .insert_object("a", "group", "g", &json!({"id": "g"}), None)
        .await
        .unwrap();
    let all = store.list_objects_all_tenants("user", 10).await.unwrap();
    let ids: Vec<(&str, &str)> = all
        .iter()
        .map(|(t, o)| (t.as_str(), o["id"].as_str().unwrap_or_default()))
        .collect();
    // seq counts per tenant and kind: b/u1 and a/u2 are both first, b/u3 second.
    assert_eq!(ids, vec![("a", "u2"), ("b", "u1"), ("b", "u3")]);
    assert_eq!(
        all[0].1["n"],
        json!([1, 2.5, null, "x"]),
        "JSON values survive"
    );
    assert_eq!(
        store
            .list_objects_all_tenants("user", 2)
            .await
            .unwrap()
            .len(),
        2
    );
    assert!(store
        .list_objects_all_tenants("nothing", 5)
        .await
        .unwrap()
        .is_empty());
}

async fn the_generation_moves_on_policy_input_changes_only(db: Db) {
    let store = db.open().await;
    let g0 = store.directory_generation();
    store
        .insert_object("t", "group", "g1", &json!({"id":"g1"}), Some(&ev()))
        .await
        .unwrap();
    let g1 = store.directory_generation();
    assert_ne!(g1, g0, "an insert");
    assert!(!store
        .insert_object("t", "group", "g1", &json!({"id":"g1"}), Some(&ev()))
        .await
        .unwrap());
    assert_eq!(
        store.directory_generation(),
        g1,
        "a write that changed nothing"
    );
    store
        .add_member("t", "g1", "u1", MemberKind::User, &ev())
        .await
        .unwrap();
    let g2 = store.directory_generation();
    assert_ne!(g2, g1, "a membership");
    let clone = store.clone();
    clone
        .save_settings("t", &Default::default(), None)
        .await
        .unwrap();
    let g3 = store.directory_generation();
    assert_ne!(g3, g2, "settings, through a clone");
    store.append_audit("t", &ev()).await.unwrap();
    store
        .session_started(
            "t",
            "s1",
            "2026-11-01T00:00:00Z",
            "viewOnly",
            &json!({}),
            None,
        )
        .await
        .unwrap();
    assert_eq!(store.directory_generation(), g3, "audit and session writes");
    store
        .delete_object("t", "group", "g1", &ev())
        .await
        .unwrap();
    assert_ne!(store.directory_generation(), g3, "a delete");
}

async fn batched_audit_events_are_all_stored_in_order_per_tenant(db: Db) {
    let store = db.open().await;
    store.write_session_batch(&[]).await.unwrap();
    // More than one multi-row statement's worth, across two tenants.
    let events: Vec<SessionWrite> = (0..450)
        .map(|i| {
            let tenant = if i % 3 == 0 { "b" } else { "a" };
            SessionWrite::Audit {
                tenant_id: tenant.to_owned(),
                event: AuditEvent::new(&format!("event {i:03}"), "Action", "Session"),
            }
        })
        .collect();
    store.write_session_batch(&events).await.unwrap();
    let a = store.audit_events("a").await.unwrap();
    let b = store.audit_events("b").await.unwrap();
    assert_eq!((a.len(), b.len()), (300, 150));
    // Events of one microsecond have no order among themselves; all are there.
    let mut names: Vec<&str> = a
        .iter()
        .map(|e| e["activity"].as_str().unwrap_or_default())
        .collect();
    names.sort();
    names.dedup();
    assert_eq!(names.len(), 300);
    assert_eq!(names.first().copied(), Some("event 001"));
    assert_eq!(names.last().copied(), Some("event 449"));
    assert!(b.iter().all(|e| e["category"] == "Session"));
}

async fn session_lifecycle_recovery_and_retention(db: Db) {
    let store = db.open().await;
    let body = json!({"helperEmail": "h@x.com", "sharerEmail": "s@x.com"});
    store
        .session_started("t", "s1", "2026-01-01T10:00:00Z", "viewOnly", &body, None)
        .await
        .unwrap();
    store
        .session_started(
            "t",
            "s2",
            "2026-01-02T10:00:00Z",
            "viewOnly",
            &body,
            Some(&ev()),
        )
        .await
        .unwrap();
    // Started twice: the second changes nothing and records no audit event.
    store
        .session_started(
            "t",
            "s2",
            "2026-01-02T11:00:00Z",
            "fullControl",
            &json!({}),
            Some(&ev()),
        )
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
            Some(&ev())
        )
        .await
        .unwrap());
    assert!(
        !store
            .session_ended(
                "t",
                "s1",
                "2026-01-01T11:00:00Z",
                "again",
                "helper",
                Some(&ev())
            )
            .await
            .unwrap(),
        "ends once"
    );
    store
        .session_seen("t", "s2", "2026-01-02T10:30:00Z", None)
        .await
        .unwrap();
    store
        .session_merge_body("s1", &json!({"relayBytes": 1234}))
        .await
        .unwrap();
    store
        .session_merge_body("unknown", &json!({"relayBytes": 1}))
        .await
        .unwrap();
    assert_eq!(store.audit_events("t").await.unwrap().len(), 2);
    store.close().await;

    // "Restart": s2 was left open; recovery closes it at its last known time.
    let store = db.open().await;
    assert_eq!(store.close_open_sessions("brokerRestart").await.unwrap(), 1);
    assert_eq!(store.close_open_sessions("brokerRestart").await.unwrap(), 0);
    let rows = store.sessions("t").await.unwrap();
    assert_eq!(rows.len(), 2);
    assert_eq!(rows[0].id, "s2");
    assert_eq!(rows[0].state, "ended");
    assert_eq!(rows[0].start_time, "2026-01-02T10:00:00Z");
    assert_eq!(rows[0].mode, "viewOnly");
    assert_eq!(rows[0].end_reason.as_deref(), Some("brokerRestart"));
    assert_eq!(rows[0].ended_by.as_deref(), Some("broker"));
    assert_eq!(rows[0].end_time.as_deref(), Some("2026-01-02T10:30:00Z"));
    assert_eq!(rows[0].body, body);
    assert_eq!(rows[1].mode, "fullControl");
    assert_eq!(rows[1].ended_by.as_deref(), Some("helper"));
    assert_eq!(rows[1].end_reason.as_deref(), Some("helperEnded"));
    assert_eq!(rows[1].end_time.as_deref(), Some("2026-01-01T10:06:00Z"));
    assert_eq!(
        rows[1].body,
        json!({"helperEmail": "h@x.com", "sharerEmail": "s@x.com", "relayBytes": 1234})
    );

    // Nothing is open any more: no stale session either.
    assert!(store
        .stale_open_sessions("2030-01-01T00:00:00Z", 10)
        .await
        .unwrap()
        .is_empty());

    let (s, _) = store
        .delete_older_than("2026-01-02T00:00:00Z")
        .await
        .unwrap();
    assert_eq!(s, 1);
    assert_eq!(store.sessions("t").await.unwrap().len(), 1);
    assert!(store.sessions("other").await.unwrap().is_empty());
}

async fn a_session_batch_applies_in_order_in_one_transaction_or_not_at_all(db: Db) {
    let store = db.open().await;
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
        // After the end: changes nothing.
        SessionWrite::Seen {
            tenant_id: "t".into(),
            id: "s1".into(),
            now: "2026-01-01T10:03:00Z".into(),
            mode: Some("elevation".into()),
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

    // A failing write (an audit event whose id is taken) rolls the whole batch back.
    let dup = AuditEvent::new("dup", "Action", "Session");
    store.append_audit("t", &dup).await.unwrap();
    let failing = vec![
        started("s2"),
        ev("x"),
        SessionWrite::MergeBody {
            id: "s1".into(),
            extra: json!({"a": 1}),
        },
        SessionWrite::Audit {
            tenant_id: "t".into(),
            event: dup,
        },
    ];
    assert!(matches!(
        store.write_session_batch(&failing).await,
        Err(StoreError::Database(_))
    ));
    let rows = store.sessions("t").await.unwrap();
    assert_eq!(rows.len(), 1, "s2 was rolled back");
    assert_eq!(rows[0].body["a"], json!(null), "the merge was rolled back");
    assert_eq!(store.audit_events("t").await.unwrap().len(), 4);
}

// PostgreSQL groups a batch's writes by kind (`pg_batch.rs`): random batches over two
// sessions, with repeated starts and ends, seen times before and after an end and starts after
// other writes, must leave the rows as the same writes do one batch each. Each trial's
// sessions have ids of their own: "b<trial>-<n>" written as one batch, "r<trial>-<n>" one by one.
async fn a_session_batch_has_the_effect_of_its_writes_one_at_a_time(db: Db) {
    let store = db.open().await;
    let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = move |n: u64| {
        seed = seed
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        (seed >> 33) % n
    };
    let modes = ["viewOnly", "fullControl", "elevation"];
    for trial in 0..150 {
        let len = 2 + next(9);
        // Most trials start both sessions first, so that PostgreSQL groups the batch; the others
        // also cover writes before a start (run row by row).
        let mut plan = Vec::new();
        if trial % 4 != 3 {
            for n in 0..2 {
                plan.push((n, 0, "2026-01-01T10:00:00Z".to_owned(), None));
            }
        }
        for k in 0..len {
            let n = next(2);
            let at = format!("2026-01-01T10:{:02}:00Z", 10 + k);
            let kind = next(5);
            let mode = Some(modes[next(3) as usize].to_owned()).filter(|_| next(2) == 1);
            plan.push((n, kind, at, mode));
        }
        let write = |prefix: &str, (n, kind, at, mode): &(u64, u64, String, Option<String>)| {
            let id = format!("{prefix}{trial}-{n}");
            match kind {
                0 | 1 => SessionWrite::Started {
                    tenant_id: "t".into(),
                    id,
                    start_time: at.clone(),
                    mode: mode.clone().unwrap_or_else(|| "viewOnly".into()),
                    body: json!({"n": *n, "at": at}),
                },
                2 => SessionWrite::Seen {
                    tenant_id: "t".into(),
                    id,
                    now: at.clone(),
                    mode: mode.clone(),
                },
                3 => SessionWrite::Ended {
                    tenant_id: "t".into(),
                    id,
                    end_time: at.clone(),
                    reason: format!("r{at}"),
                    by: "helper".into(),
                    mode: mode.clone(),
                },
                _ => SessionWrite::MergeBody {
                    id,
                    extra: json!({ format!("k{}", at.len() % 3): at }),
                },
            }
        };
        let batch: Vec<_> = plan.iter().map(|p| write("b", p)).collect();
        store.write_session_batch(&batch).await.unwrap();
        for p in &plan {
            store.write_session_batch(&[write("r", p)]).await.unwrap();
        }
    }
    let rows = store.sessions("t").await.unwrap();
    let pick = |prefix: &str| {
        let mut v: Vec<SessionRow> = rows
            .iter()
            .filter(|r| r.id.starts_with(prefix))
            .map(|r| SessionRow {
                id: r.id[1..].to_owned(),
                ..r.clone()
            })
            .collect();
        v.sort_by(|a, b| a.id.cmp(&b.id));
        v
    };
    let (batched, one_by_one) = (pick("b"), pick("r"));
    assert!(batched.len() > 150, "{}", batched.len());
    assert!(batched.iter().any(|r| r.state == "ended"));
    assert!(batched.iter().any(|r| r.state == "active"));
    assert_eq!(batched, one_by_one);
}

async fn times_read_back_as_written(db: Db) {
    let store = db.open().await;
    let now = assist_store::now_rfc3339();
    for (id, t) in [
        ("whole", "2026-03-04T05:06:07Z"),
        ("micros", "2026-03-04T05:06:07.123456Z"),
        ("now", now.as_str()),
    ] {
        store
            .session_started("t", id, t, "viewOnly", &json!({}), None)
            .await
            .unwrap();
        let row = store
            .sessions("t")
            .await
            .unwrap()
            .into_iter()
            .find(|r| r.id == id)
            .unwrap();
        assert_eq!(row.start_time, t);
    }
    // An event's time orders the trail.
    let mut a = AuditEvent::new("later", "Action", "Session");
    a.body["activityDateTime"] = json!("2026-03-04T05:06:08Z");
    let mut b = AuditEvent::new("earlier", "Action", "Session");
    b.body["activityDateTime"] = json!("2026-03-04T05:06:07.5Z");
    store.append_audit("t", &a).await.unwrap();
    store.append_audit("t", &b).await.unwrap();
    let trail = store.audit_events("t").await.unwrap();
    assert_eq!(trail[0]["activity"], "earlier");
    assert_eq!(trail[1]["activity"], "later");
}

async fn retention_keeps_thirty_days(db: Db) {
    use time::format_description::well_known::Rfc3339;
    let store = db.open().await;
    let at = |days: i64| {
        (time::OffsetDateTime::now_utc() - time::Duration::days(days))
            .format(&Rfc3339)
            .unwrap()
    };
    for (id, days) in [("old", 31), ("recent", 29)] {
        let (start, end) = (at(days), at(days));
        store
            .session_started("t", id, &start, "viewOnly", &json!({}), None)
            .await
            .unwrap();
        store
            .session_ended("t", id, &end, "ended", "helper", None)
            .await
            .unwrap();
        let mut e = AuditEvent::new(id, "Action", "Session");
        e.body["activityDateTime"] = json!(at(days));
        store.append_audit("t", &e).await.unwrap();
    }
    // An old session still active is kept: only ended sessions expire.
    store
        .session_started("t", "running", &at(40), "viewOnly", &json!({}), None)
        .await
        .unwrap();
    let (s, a) = store.delete_older_than(&at(30)).await.unwrap();
    assert_eq!((s, a), (1, 1));
    let mut left: Vec<String> = store
        .sessions("t")
        .await
        .unwrap()
        .into_iter()
        .map(|r| r.id)
        .collect();
    left.sort();
    assert_eq!(left, vec!["recent", "running"]);
    let trail = store.audit_events("t").await.unwrap();
    assert_eq!(trail.len(), 1);
    assert_eq!(trail[0]["activity"], "recent");
}

async fn an_admin_transaction_dropped_uncommitted_changes_nothing(db: Db) {
    let store = db.open().await;
    let g0 = store.directory_generation();
    {
        let mut tx = store.admin_transaction("t").await.unwrap();
        assert_eq!(tx.tenant_id(), "t");
        let mut s = tx.settings_for_update().await.unwrap();
        s.block_chat = true;
        tx.save_settings(&s, Some(&ev())).await.unwrap();
        assert!(tx
            .insert_object("user", "u1", &json!({"id": "u1"}), Some(&ev()))
            .await
            .unwrap());
        assert_eq!(
            tx.list_objects("user").await.unwrap().len(),
            1,
            "sees its own writes"
        );
        // Dropped here: rolled back.
    }
    assert_eq!(
        store.settings("t").await.unwrap(),
        RemoteAssistanceSettings::default()
    );
    assert!(store.list_objects("t", "user").await.unwrap().is_empty());
    assert!(store.audit_events("t").await.unwrap().is_empty());
    assert_eq!(store.directory_generation(), g0);
    // And the database is free for the next writer.
    let mut tx = store.admin_transaction("t").await.unwrap();
    assert!(tx
        .insert_object("user", "u1", &json!({"id": "u1"}), None)
        .await
        .unwrap());
    assert_eq!(
        tx.get_object("user", "u1").await.unwrap(),
        Some(json!({"id": "u1"}))
    );
    tx.commit().await.unwrap();
    assert_ne!(store.directory_generation(), g0);
    assert_eq!(store.list_objects("t", "user").await.unwrap().len(), 1);
}

/// Writers per node in the concurrency tests, and the pause inside each read-modify-write that
/// gives the other writers time to interleave (so a missing lock loses updates for certain).
const WRITERS: usize = 8;
const PAUSE: Duration = Duration::from_millis(5);

async fn concurrent_settings_patches_on_two_nodes_lose_no_update(db: Db) {
    let nodes = [db.open().await, db.open().await];
    let mut tasks = Vec::new();
    for i in 0..2 * WRITERS {
        let store = nodes[i % 2].clone();
        tasks.push(tokio::spawn(async move {
            // A PATCH that flips blockChat: read, decide, write, with the audit of old → new.
            let mut tx = store.admin_transaction("t").await.unwrap();
            let cur = tx.settings_for_update().await.unwrap();
            tokio::time::sleep(PAUSE).await;
            let next = RemoteAssistanceSettings {
                block_chat: !cur.block_chat,
                ..cur.clone()
            };
            let audit = AuditEvent::new(
                "Patch remoteAssistanceSettings",
                "Patch",
                "RemoteAssistance",
            )
            .resource(
                "s",
                "s",
                "t",
                &[("blockChat", json!(cur.block_chat), json!(next.block_chat))],
            );
            tx.save_settings(&next, Some(&audit)).await.unwrap();
            tx.commit().await.unwrap();
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    // An even number of flips, none lost: back where it started, and as many flips each way.
    assert!(!nodes[1].settings("t").await.unwrap().block_chat);
    let trail = nodes[0].audit_events("t").await.unwrap();
    assert_eq!(trail.len(), 2 * WRITERS);
    let from_false = trail
        .iter()
        .filter(|e| e["resources"][0]["modifiedProperties"][0]["oldValue"] == "false")
        .count();
    assert_eq!(from_false, WRITERS, "every flip saw the one before it");
}

async fn concurrent_object_patches_on_two_nodes_lose_no_update(db: Db) {
    let nodes = [db.open().await, db.open().await];
    nodes[0]
        .insert_object(
            "t",
            "group",
            "g",
            &json!({"id": "g", "n": 0, "by": []}),
            None,
        )
        .await
        .unwrap();
    let mut tasks = Vec::new();
    for i in 0..2 * WRITERS {
        let store = nodes[i % 2].clone();
        tasks.push(tokio::spawn(async move {
            let mut tx = store.admin_transaction("t").await.unwrap();
            let mut g = tx
                .get_object_for_update("group", "g")
                .await
                .unwrap()
                .unwrap();
            tokio::time::sleep(PAUSE).await;
            g["n"] = json!(g["n"].as_i64().unwrap() + 1);
            g["by"].as_array_mut().unwrap().push(json!(i));
            assert!(tx.update_object("group", "g", &g, &ev()).await.unwrap());
            tx.commit().await.unwrap();
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let g = nodes[1]
        .get_object("t", "group", "g")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(g["n"], json!(2 * WRITERS), "{g}");
    let mut by: Vec<i64> = g["by"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|v| v.as_i64())
        .collect();
    by.sort();
    assert_eq!(by, (0..2 * WRITERS as i64).collect::<Vec<_>>());
}

async fn a_uniqueness_check_holds_against_concurrent_creates_on_two_nodes(db: Db) {
    let nodes = [db.open().await, db.open().await];
    let created = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for i in 0..2 * WRITERS {
        let store = nodes[i % 2].clone();
        let created = created.clone();
        tasks.push(tokio::spawn(async move {
            // Create a user unless one already has this userPrincipalName (a check over rows
            // that may not exist yet: no row lock covers it).
            let mut tx = store.admin_transaction("t").await.unwrap();
            let taken = tx
                .list_objects("user")
                .await
                .unwrap()
                .iter()
                .any(|u| u["userPrincipalName"] == "ann@x.com");
            tokio::time::sleep(PAUSE).await;
            if !taken {
                let id = format!("u{i}");
                let body = json!({"id": id, "userPrincipalName": "ann@x.com"});
                assert!(tx.insert_object("user", &id, &body, None).await.unwrap());
                created.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            }
            tx.commit().await.unwrap();
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    assert_eq!(created.load(std::sync::atomic::Ordering::SeqCst), 1);
    assert_eq!(nodes[0].list_objects("t", "user").await.unwrap().len(), 1);
    // Another tenant is not held up by (or mixed with) this one.
    assert!(nodes[1]
        .list_objects("other", "user")
        .await
        .unwrap()
        .is_empty());
}

#[tokio::test]
async fn an_unreachable_postgres_is_a_clear_error_without_the_password() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("postgres://assist:hunter2@127.0.0.1:{port}/assist");
    let e = Store::open(&StoreUrl::parse(&url).unwrap())
        .await
        .unwrap_err();
    let mut msg = e.to_string();
    let mut source = std::error::Error::source(&e);
    while let Some(s) = source {
        msg.push_str(&format!(": {s}"));
        source = s.source();
    }
    assert!(matches!(e, StoreError::Open { .. }), "{msg}");
    assert!(
        msg.contains(&format!("postgres://assist:***@127.0.0.1:{port}/assist")),
        "{msg}"
    );
    assert!(!msg.contains("hunter2"), "{msg}");
    assert!(msg.contains("refused"), "says why: {msg}");
    assert!(!format!("{e:?}").contains("hunter2"));
}

/// A report column's value of a row, as the report builds it (`reports::row`): the body's
/// fields, with the columns over them.
fn report_value(s: &SessionRow, col: &str) -> serde_json::Value {
    use serde_json::Value;
    let text = |v: &Option<String>| v.clone().map(Value::String).unwrap_or(Value::Null);
    match col {
        "id" => Value::String(s.id.clone()),
        "startDateTime" => Value::String(s.start_time.clone()),
        "endDateTime" => text(&s.end_time),
        "remoteAssistanceSessionType" => Value::String(s.mode.clone()),
        "state" => Value::String(s.state.clone()),
        "endReason" => text(&s.end_reason),
        "endedBy" => text(&s.ended_by),
        other => s.body.get(other).cloned().unwrap_or(Value::Null),
    }
}

/// The order the report computed in memory before the database did it: rows newest first,
/// then a stable sort per key from the last one, two numbers as numbers and anything else by
/// its JSON text.
fn reference_order(mut rows: Vec<SessionRow>, order: &[SessionOrder]) -> Vec<String> {
    for key in order.iter().rev() {
        rows.sort_by(|a, b| {
            let (a, b) = (report_value(a, &key.column), report_value(b, &key.column));
            let ord = match (a.as_f64(), b.as_f64()) {
                (Some(x), Some(y)) => x.total_cmp(&y),
                _ => a.to_string().cmp(&b.to_string()),
            };
            if key.descending {
                ord.reverse()
            } else {
                ord
            }
        });
    }
    rows.into_iter().map(|r| r.id).collect()
}

async fn session_listings_order_in_the_database_as_the_report_always_did(db: Db) {
    let store = db.open().await;
    // Values that order differently as JSON text than as plain text (a space or `!` after a
    // common prefix sorts after the closing quote), numbers of both kinds and signs, null,
    // missing fields, booleans, escapes and non-ASCII.
    let names = [
        json!("Ann"),
        json!("Ann Lee"),
        json!("Ann!"),
        json!("ann"),
        json!("Åsa"),
        json!("Zoë \"Z\""),
        json!("back\\slash"),
        json!("tab\there"),
        json!(""),
        json!(null),
        json!(true),
        json!(false),
        json!(12),
        json!(-3),
        json!(2.5),
        json!(1e3),
    ];
    let rtts = [json!(12.5), json!(3), json!(null), json!(-0.5), json!(100)];
    let mut writes = Vec::new();
    for (i, name) in names.iter().enumerate() {
        let id = format!("s{:02}", (i * 7) % names.len());
        let mut body = json!({"helperEmail": format!("h{}@x.com", i % 3), "helperFirstName": name});
        if i % 4 != 3 {
            body["relayHelperRttMs"] = rtts[i % rtts.len()].clone();
        }
        writes.push(SessionWrite::Started {
            tenant_id: "t".into(),
            id: id.clone(),
            // Some share a start time, so the id breaks the tie.
            start_time: format!("2026-01-01T10:{:02}:00Z", i / 3),
            mode: ["viewOnly", "fullControl"][i % 2].into(),
            body,
        });
        if i % 3 == 0 {
            writes.push(SessionWrite::Ended {
                tenant_id: "t".into(),
                id,
                end_time: format!("2026-01-01T11:{:02}:00Z", 20 - i),
                reason: ["helperEnded", "sharerEnded"][i % 2].into(),
                by: "helper".into(),
                mode: None,
            });
        }
    }
    store.write_session_batch(&writes).await.unwrap();
    let all = store.sessions("t").await.unwrap();
    assert_eq!(all.len(), names.len());
    assert_eq!(store.session_count("t").await.unwrap(), names.len() as u64);
    assert_eq!(store.session_count("other").await.unwrap(), 0);
    let key = |c: &str, descending| SessionOrder {
        column: c.into(),
        descending,
    };
    let mut orders: Vec<Vec<SessionOrder>> = vec![vec![]];
    for c in [
        "id",
        "startDateTime",
        "endDateTime",
        "remoteAssistanceSessionType",
        "state",
        "endReason",
        "endedBy",
        "helperFirstName",
        "helperEmail",
        "relayHelperRttMs",
        "sharerOs",
    ] {
        orders.push(vec![key(c, false)]);
        orders.push(vec![key(c, true)]);
    }
    orders.push(vec![
        key("helperEmail", false),
        key("relayHelperRttMs", true),
    ]);
    orders.push(vec![key("state", true), key("helperFirstName", false)]);
    for order in &orders {
        let want = reference_order(all.clone(), order);
        let got: Vec<String> = store
            .sessions_page("t", order, 0, 1000)
            .await
            .unwrap()
            .into_iter()
            .map(|r| r.id)
            .collect();
        assert_eq!(got, want, "sessions_page, order {order:?}");
        let mut streamed = Vec::new();
        store
            .for_each_session("t", order, &mut |r| {
                streamed.push(r.id);
                true
            })
            .await
            .unwrap();
        assert_eq!(streamed, want, "for_each_session, order {order:?}");
        let page: Vec<String> = store
            .sessions_page("t", order, 5, 4)
            .await
            .unwrap()
            .into_iter()
            .map(|r| r.id)
            .collect();
        assert_eq!(page, want[5..9], "a page, order {order:?}");
    }
    // The rows read are the rows stored.
    assert_eq!(store.sessions_page("t", &[], 0, 1000).await.unwrap(), all);
    // A visitor stops the stream.
    let mut seen = 0;
    store
        .for_each_session("t", &[], &mut |_| {
            seen += 1;
            seen < 3
        })
        .await
        .unwrap();
    assert_eq!(seen, 3);
    // A field name that is not one is refused, not spliced into SQL.
    assert!(matches!(
        store
            .sessions_page("t", &[key("x') --", false)], 0, 10)
            .await,
        Err(StoreError::InvalidQuery(_))
    ));
    // The aggregates' view: every session, newest first.
    let mut briefs = Vec::new();
    store
        .for_each_session_brief("t", &mut |b| briefs.push(b))
        .await
        .unwrap();
    let want: Vec<(String, Option<String>, String, String)> = all
        .iter()
        .map(|r| {
            (
                r.start_time.clone(),
                r.end_time.clone(),
                r.state.clone(),
                r.mode.clone(),
            )
        })
        .collect();
    let got: Vec<(String, Option<String>, String, String)> = briefs
        .into_iter()
        .map(|b| (b.start_time, b.end_time, b.state, b.mode))
        .collect();
    assert_eq!(got, want);
}

async fn five_thousand_sessions_page_through_once_each_in_order(db: Db) {
    let store = db.open().await;
    let n = 5000;
    let writes: Vec<SessionWrite> = (0..n)
        .map(|i| SessionWrite::Started {
            tenant_id: "t".into(),
            id: format!("s{i:05}"),
            start_time: format!(
                "2026-01-01T{:02}:{:02}:{:02}Z",
                i / 3600,
                i / 60 % 60,
                i % 60
            ),
            mode: "viewOnly".into(),
            body: json!({"helperEmail": format!("h{}@x.com", i % 17)}),
        })
        .collect();
    for chunk in writes.chunks(500) {
        store.write_session_batch(chunk).await.unwrap();
    }
    assert_eq!(store.session_count("t").await.unwrap(), n as u64);
    let order = [SessionOrder {
        column: "helperEmail".into(),
        descending: false,
    }];
    let want = reference_order(store.sessions("t").await.unwrap(), &order);
    let mut got = Vec::new();
    let mut skip = 0;
    loop {
        let page = store.sessions_page("t", &order, skip, 1000).await.unwrap();
        if page.is_empty() {
            break;
        }
        assert!(page.len() <= 1000);
        skip += page.len() as u64;
        got.extend(page.into_iter().map(|r| r.id));
    }
    assert_eq!(got.len(), n);
    assert_eq!(got, want);
}

/// The sweep's query: active sessions whose `last_seen` is before the cutoff, longest silent
/// first, up to the limit; ended ones never, however old.
// A fresh database's sessions table has no statistics: PostgreSQL's planner would take
// `sessions_by_end` for `state = 'active'` as readily as the key, and a write per session
// would then walk every open session and every dead row an ended one left behind.
async fn writes_to_one_open_session_find_it_by_its_key_on_a_fresh_database(db: Db) {
    let store = db.open().await;
    let plans = store.session_write_plans_for_tests().await.unwrap();
    assert_eq!(
        plans.iter().map(|(n, _)| *n).collect::<Vec<_>>(),
        ["seen", "ended", "close"]
    );
    for (name, plan) in plans {
        let text = plan.join("\n");
        // SQLite: "SEARCH sessions USING INDEX sqlite_autoindex_sessions_1 (tenant_id=? AND id=?)"
        // or "... INDEX sessions_by_id (id=?)"; PostgreSQL: "Index Scan using sessions_pkey"
        // or "... using sessions_by_id".
        let by_key = [
            "sessions_pkey",
            "sqlite_autoindex_sessions_1",
            "sessions_by_id",
        ]
        .iter()
        .any(|i| text.contains(i));
        assert!(by_key, "{name}: {text}");
        assert!(
            !text.contains("sessions_by_end") && !text.contains("sessions_open"),
            "{name}: {text}"
        );
    }
}

async fn stale_open_sessions_are_the_active_ones_silent_since_before_the_cutoff(db: Db) {
    let store = db.open().await;
    for (id, start) in [
        ("quiet", "2026-01-01T10:00:00Z"),
        ("quieter", "2026-01-01T09:00:00Z"),
        ("seen", "2026-01-01T08:00:00Z"),
        ("ended", "2026-01-01T07:00:00Z"),
        ("fresh", "2026-01-01T11:59:59.5Z"),
    ] {
        store
            .session_started("t", id, start, "viewOnly", &json!({}), None)
            .await
            .unwrap();
    }
    store
        .session_seen("t", "seen", "2026-01-01T11:30:00Z", None)
        .await
        .unwrap();
    assert!(store
        .session_ended(
            "t",
            "ended",
            "2026-01-01T07:01:00Z",
            "helperEnded",
            "helper",
            None
        )
        .await
        .unwrap());
    let cutoff = "2026-01-01T11:00:00Z";
    assert_eq!(
        store.stale_open_sessions(cutoff, 10).await.unwrap(),
        ["quieter", "quiet"]
    );
    assert_eq!(
        store.stale_open_sessions(cutoff, 1).await.unwrap(),
        ["quieter"]
    );
    // A later cutoff takes in the recently seen and the fresh ones too.
    assert_eq!(
        store
            .stale_open_sessions("2026-01-01T12:00:00Z", 10)
            .await
            .unwrap(),
        ["quieter", "quiet", "seen", "fresh"]
    );
    assert_eq!(
        store
            .close_sessions(&["quieter".to_owned()], "nodeLost")
            .await
            .unwrap(),
        1
    );
    assert_eq!(
        store.stale_open_sessions(cutoff, 10).await.unwrap(),
        ["quiet"]
    );
}
