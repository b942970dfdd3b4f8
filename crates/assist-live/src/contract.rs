//! The contract every [`LiveStore`] keeps, as one suite. Run it against a fresh, empty store
//! from a test on a multi-threaded tokio runtime:
//!
//! ```text
//! #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
//! async fn the_contract_holds() {
//!     assist_live::contract::run_all(Arc::new(MyStore::connect(..).await)).await;
//! }
//! ```
//!
//! Each check panics (like an assertion) when the store breaks the contract, and uses keys of
//! its own, so the checks may run one after the other on the same store.

use std::sync::Arc;

use assist_session::code::CodeDigest;
use assist_session::{
    ConnId, DeviceRef, LiveAnswer, LiveCode, LiveOp, LiveQuery, LiveSession, LiveStage, SessionId,
    Timestamp, UserRef,
};

use crate::LiveStore;

/// How many takes race in [`concurrent_takes_have_one_winner`].
pub const RACERS: usize = 16;

fn digest(n: u8) -> CodeDigest {
    CodeDigest([n; 32])
}

fn sid(n: u8) -> SessionId {
    SessionId(format!("{n:032x}"))
}

fn user(tenant: &str, n: u8) -> UserRef {
    UserRef {
        tenant_id: tenant.into(),
        user_id: format!("u{n}"),
    }
}

fn device(tenant: &str, n: u8) -> DeviceRef {
    DeviceRef {
        tenant_id: tenant.into(),
        device_id: format!("d{n}"),
    }
}

async fn apply(store: &dyn LiveStore, op: LiveOp) {
    store.apply(op).await.expect("the store applies the op");
}

async fn query(store: &dyn LiveStore, q: LiveQuery) -> LiveAnswer {
    store.query(q).await.expect("the store answers")
}

/// Every check, one after the other.
pub async fn run_all(store: Arc<dyn LiveStore>) {
    a_code_is_inserted_only_if_absent(&*store).await;
    concurrent_takes_have_one_winner(store.clone()).await;
    a_conditional_take_leaves_a_non_matching_entry(&*store).await;
    presence_sets_are_sets(&*store).await;
    the_session_directory_puts_replaces_removes_and_lists_in_order(&*store).await;
    removing_what_is_not_there_changes_nothing(&*store).await;
}

/// `InsertCode` stores only under a free digest; `GetCode` returns the stored digest and
/// entry; `ReplaceCode` overwrites.
pub async fn a_code_is_inserted_only_if_absent(store: &dyn LiveStore) {
    let before = store.code_count().await.expect("count");
    let first = LiveQuery::InsertCode {
        digest: digest(1),
        code: LiveCode::Pending(sid(1)),
    };
    assert_eq!(query(store, first).await, LiveAnswer::Inserted(true));
    let second = LiveQuery::InsertCode {
        digest: digest(1),
        code: LiveCode::Pending(sid(2)),
    };
    assert_eq!(
        query(store, second).await,
        LiveAnswer::Inserted(false),
        "a taken digest is not overwritten by an insert"
    );
    assert_eq!(
        query(store, LiveQuery::GetCode { digest: digest(1) }).await,
        LiveAnswer::Code(Some((digest(1), LiveCode::Pending(sid(1))))),
        "the first insert stays"
    );
    assert_eq!(
        query(store, LiveQuery::GetCode { digest: digest(2) }).await,
        LiveAnswer::Code(None)
    );
    assert_eq!(store.code_count().await.expect("count"), before + 1);
    let expired = LiveCode::Expired {
        forget_at: Timestamp::from_millis(10),
    };
    apply(
        store,
        LiveOp::ReplaceCode {
            digest: digest(1),
            code: expired.clone(),
        },
    )
    .await;
    assert_eq!(
        query(store, LiveQuery::GetCode { digest: digest(1) }).await,
        LiveAnswer::Code(Some((digest(1), expired.clone()))),
        "replace overwrites"
    );
    apply(
        store,
        LiveOp::RemoveCodeIf {
            digest: digest(1),
            expected: expired,
        },
    )
    .await;
    assert_eq!(store.code_count().await.expect("count"), before);
}

/// Of [`RACERS`] concurrent takes of one pending code, exactly one gets it.
pub async fn concurrent_takes_have_one_winner(store: Arc<dyn LiveStore>) {
    let code = LiveCode::Pending(sid(7));
    let insert = LiveQuery::InsertCode {
        digest: digest(7),
        code: code.clone(),
    };
    assert_eq!(query(&*store, insert).await, LiveAnswer::Inserted(true));
    let racers: Vec<_> = (0..RACERS)
        .map(|_| {
            let store = store.clone();
            let code = code.clone();
            tokio::spawn(async move {
                let take = LiveQuery::TakeCodeIf {
                    digest: digest(7),
                    expected: code,
                };
                query(&*store, take).await
            })
        })
        .collect();
    let mut winners = 0;
    for racer in racers {
        match racer.await.expect("a racer finishes") {
            LiveAnswer::Taken(Some(taken)) => {
                assert_eq!(taken, code, "the winner gets the entry");
                winners += 1;
            }
            LiveAnswer::Taken(None) => {}
            other => panic!("a take answered {other:?}"),
        }
    }
    assert_eq!(winners, 1, "one take of {RACERS} wins");
    assert_eq!(
        query(&*store, LiveQuery::GetCode { digest: digest(7) }).await,
        LiveAnswer::Code(None)
    );
}

/// `TakeCodeIf` and `RemoveCodeIf` remove only an entry equal to the expected one.
pub async fn a_conditional_take_leaves_a_non_matching_entry(store: &dyn LiveStore) {
    let pending = LiveCode::Pending(sid(3));
    let insert = LiveQuery::InsertCode {
        digest: digest(3),
        code: pending.clone(),
    };
    assert_eq!(query(store, insert).await, LiveAnswer::Inserted(true));
    let other_session = LiveQuery::TakeCodeIf {
        digest: digest(3),
        expected: LiveCode::Pending(sid(4)),
    };
    assert_eq!(query(store, other_session).await, LiveAnswer::Taken(None));
    apply(
        store,
        LiveOp::RemoveCodeIf {
            digest: digest(3),
            expected: LiveCode::Expired {
                forget_at: Timestamp::from_millis(5),
            },
        },
    )
    .await;
    assert_eq!(
        query(store, LiveQuery::GetCode { digest: digest(3) }).await,
        LiveAnswer::Code(Some((digest(3), pending.clone()))),
        "a non-matching entry stays"
    );
    // An expired code is forgotten only by a removal naming its own `forget_at`.
    let expired = |ms| LiveCode::Expired {
        forget_at: Timestamp::from_millis(ms),
    };
    apply(
        store,
        LiveOp::ReplaceCode {
            digest: digest(3),
            code: expired(20),
        },
    )
    .await;
    apply(
        store,
        LiveOp::RemoveCodeIf {
            digest: digest(3),
            expected: expired(10),
        },
    )
    .await;
    assert_eq!(
        query(store, LiveQuery::GetCode { digest: digest(3) }).await,
        LiveAnswer::Code(Some((digest(3), expired(20))))
    );
    let take = LiveQuery::TakeCodeIf {
        digest: digest(3),
        expected: expired(20),
    };
    assert_eq!(
        query(store, take).await,
        LiveAnswer::Taken(Some(expired(20)))
    );
    let again = LiveQuery::TakeCodeIf {
        digest: digest(3),
        expected: expired(20),
    };
    assert_eq!(
        query(store, again).await,
        LiveAnswer::Taken(None),
        "taken once"
    );
}

/// Adding a connection twice keeps one; removing the last one forgets the user or device;
/// users and devices are per tenant; lists are in ascending order.
pub async fn presence_sets_are_sets(store: &dyn LiveStore) {
    let tenant = "contract-presence";
    let (u, d) = (user(tenant, 1), device(tenant, 1));
    let add = |conn| LiveOp::AddConnection {
        conn: ConnId(conn),
        user: Some(u.clone()),
        device: Some(d.clone()),
    };
    let remove = |conn| LiveOp::RemoveConnection {
        conn: ConnId(conn),
        user: Some(u.clone()),
        device: Some(d.clone()),
    };
    apply(store, add(9)).await;
    apply(store, add(2)).await;
    apply(store, add(9)).await;
    let users = store.user_connections(&u).await.expect("read");
    assert_eq!(
        users,
        vec![ConnId(2), ConnId(9)],
        "a set, in ascending order"
    );
    let devices = store.device_connections(&d).await.expect("read");
    assert_eq!(devices, vec![ConnId(2), ConnId(9)]);
    let elsewhere = device("contract-other", 1);
    assert!(
        store
            .device_connections(&elsewhere)
            .await
            .expect("read")
            .is_empty(),
        "a device id is per tenant"
    );
    apply(store, remove(9)).await;
    assert_eq!(
        store.user_connections(&u).await.expect("read"),
        vec![ConnId(2)],
        "adding twice then removing once removes it"
    );
    apply(store, remove(2)).await;
    assert!(store.user_connections(&u).await.expect("read").is_empty());
    assert!(store.device_connections(&d).await.expect("read").is_empty());
    // A user-only and a device-only connection.
    let only_user = LiveOp::AddConnection {
        conn: ConnId(4),
        user: Some(u.clone()),
        device: None,
    };
    apply(store, only_user).await;
    assert_eq!(
        store.user_connections(&u).await.expect("read"),
        vec![ConnId(4)]
    );
    assert!(store.device_connections(&d).await.expect("read").is_empty());
    let gone = LiveOp::RemoveConnection {
        conn: ConnId(4),
        user: Some(u.clone()),
        device: None,
    };
    apply(store, gone).await;
    assert!(store.user_connections(&u).await.expect("read").is_empty());
}

/// `PutSession` creates or replaces, `RemoveSession` removes, a tenant's sessions list in id
/// order and only that tenant's.
pub async fn the_session_directory_puts_replaces_removes_and_lists_in_order(store: &dyn LiveStore) {
    let before = store.session_count().await.expect("count");
    let entry = |tenant: &str, stage| LiveSession {
        tenant_id: tenant.into(),
        stage,
        mode: None,
        chat: true,
        helper: Some(user(tenant, 1)),
        helper_conn: Some(ConnId(1)),
        sharer: None,
        sharer_conn: None,
        device_id: None,
    };
    let (a, b) = ("contract-dir-a", "contract-dir-b");
    for (n, tenant) in [(0x33, a), (0x31, a), (0x32, b)] {
        let put = LiveOp::PutSession {
            id: sid(n),
            session: entry(tenant, LiveStage::Pending),
        };
        apply(store, put).await;
    }
    let ids: Vec<SessionId> = store
        .tenant_sessions(a)
        .await
        .expect("read")
        .into_iter()
        .map(|(id, _)| id)
        .collect();
    assert_eq!(ids, vec![sid(0x31), sid(0x33)], "by id, one tenant's only");
    assert_eq!(store.session_count().await.expect("count"), before + 3);
    let replace = LiveOp::PutSession {
        id: sid(0x31),
        session: entry(a, LiveStage::Active),
    };
    apply(store, replace).await;
    assert_eq!(
        store
            .session(&sid(0x31))
            .await
            .expect("read")
            .map(|s| s.stage),
        Some(LiveStage::Active),
        "put replaces"
    );
    assert_eq!(store.session_count().await.expect("count"), before + 3);
    for n in [0x31, 0x32, 0x33] {
        apply(store, LiveOp::RemoveSession { id: sid(n) }).await;
    }
    assert_eq!(store.session(&sid(0x31)).await.expect("read"), None);
    assert!(store.tenant_sessions(a).await.expect("read").is_empty());
    assert_eq!(store.session_count().await.expect("count"), before);
}

/// Removing a session, a connection or a code that is not there is harmless: nothing else
/// changes, and the store does not fail.
pub async fn removing_what_is_not_there_changes_nothing(store: &dyn LiveStore) {
    let tenant = "contract-absent";
    let (u, d) = (user(tenant, 1), device(tenant, 1));
    let kept = LiveOp::AddConnection {
        conn: ConnId(1),
        user: Some(u.clone()),
        device: Some(d.clone()),
    };
    apply(store, kept).await;
    let sessions = store.session_count().await.expect("count");
    let codes = store.code_count().await.expect("count");
    apply(store, LiveOp::RemoveSession { id: sid(0x77) }).await;
    let never_added = LiveOp::RemoveConnection {
        conn: ConnId(2),
        user: Some(u.clone()),
        device: Some(d.clone()),
    };
    apply(store, never_added).await;
    let absent = LiveOp::RemoveCodeIf {
        digest: digest(0x77),
        expected: LiveCode::Pending(sid(0x77)),
    };
    apply(store, absent).await;
    let take = LiveQuery::TakeCodeIf {
        digest: digest(0x77),
        expected: LiveCode::Pending(sid(0x77)),
    };
    assert_eq!(query(store, take).await, LiveAnswer::Taken(None));
    assert_eq!(store.session_count().await.expect("count"), sessions);
    assert_eq!(store.code_count().await.expect("count"), codes);
    assert_eq!(
        store.user_connections(&u).await.expect("read"),
        vec![ConnId(1)]
    );
    assert_eq!(
        store.device_connections(&d).await.expect("read"),
        vec![ConnId(1)]
    );
    let gone = LiveOp::RemoveConnection {
        conn: ConnId(1),
        user: Some(u.clone()),
        device: Some(d.clone()),
    };
    apply(store, gone).await;
    assert!(store.user_connections(&u).await.expect("read").is_empty());
}
