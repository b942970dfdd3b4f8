//! `RedisLive` against a real redis-server: the live-state contract, and what a cluster adds
//! (nodes sharing codes and sessions, presence per node, forgetting a dead node, re-asserting
//! after an empty restart).

use std::sync::Arc;

use assist_live::LiveStore;
use assist_live_redis::{BatchItem, BatchReply, RedisLive, RedisOptions};
use assist_session::code::CodeDigest;
use assist_session::{
    ConnId, DeviceRef, LiveAnswer, LiveCode, LiveOp, LiveQuery, LiveSession, LiveStage, SessionId,
    Timestamp, UserRef,
};
use assist_testkit::RedisInstance;

/// A fresh database on the shared instance, or `None` to skip.
fn fresh() -> Option<String> {
    RedisInstance::shared().map(|r| r.fresh_url())
}

async fn node(url: &str, id: &str) -> RedisLive {
    RedisLive::connect(url, id, RedisOptions::default())
        .await
        .expect("connects")
}

fn sid(n: u8) -> SessionId {
    SessionId(format!("{n:032x}"))
}

fn user(n: u8) -> UserRef {
    UserRef {
        tenant_id: "t1".into(),
        user_id: format!("u{n}"),
    }
}

fn device(n: u8) -> DeviceRef {
    DeviceRef {
        tenant_id: "t1".into(),
        device_id: format!("d{n}"),
    }
}

fn entry(tenant: &str, conn: u64) -> LiveSession {
    LiveSession {
        tenant_id: tenant.into(),
        stage: LiveStage::Pending,
        mode: None,
        chat: true,
        helper: Some(user(1)),
        helper_conn: Some(ConnId(conn)),
        sharer: None,
        sharer_conn: None,
        device_id: None,
    }
}

fn add(conn: u64, u: Option<UserRef>, d: Option<DeviceRef>) -> LiveOp {
    LiveOp::AddConnection {
        conn: ConnId(conn),
        user: u,
        device: d,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_contract_holds_on_redis() {
    let Some(url) = fresh() else { return };
    assist_live::contract::run_all(Arc::new(node(&url, "n1").await)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_share_codes_and_sessions_but_see_only_their_own_connections() {
    let Some(url) = fresh() else { return };
    let (a, b) = (node(&url, "node-a").await, node(&url, "node-b").await);
    let digest = CodeDigest([9; 32]);
    let code = LiveCode::Pending(sid(1));
    let insert = LiveQuery::InsertCode {
        digest: digest.clone(),
        code: code.clone(),
    };
    assert_eq!(
        a.query(insert.clone()).await.unwrap(),
        LiveAnswer::Inserted(true)
    );
    assert_eq!(
        b.query(insert).await.unwrap(),
        LiveAnswer::Inserted(false),
        "codes are unique across the cluster"
    );
    let take = LiveQuery::TakeCodeIf {
        digest: digest.clone(),
        expected: code.clone(),
    };
    assert_eq!(
        b.query(take.clone()).await.unwrap(),
        LiveAnswer::Taken(Some(code)),
        "a code issued on A is redeemed on B"
    );
    assert_eq!(a.query(take).await.unwrap(), LiveAnswer::Taken(None));

    // The directory is shared, with its owner.
    let put = |n, conn| LiveOp::PutSession {
        id: sid(n),
        session: entry("t-shared", conn),
    };
    a.apply(put(0x22, 1)).await.unwrap();
    b.apply(put(0x21, 2)).await.unwrap();
    let listed = |s: Vec<(SessionId, LiveSession)>| s.into_iter().map(|(id, _)| id).collect();
    let on_a: Vec<SessionId> = listed(a.tenant_sessions("t-shared").await.unwrap());
    assert_eq!(on_a, vec![sid(0x21), sid(0x22)], "every node's, by id");
    assert_eq!(listed(b.tenant_sessions("t-shared").await.unwrap()), on_a);
    assert_eq!(
        b.session(&sid(0x22)).await.unwrap(),
        Some(entry("t-shared", 1))
    );
    assert_eq!(
        a.session_owner(&sid(0x21)).await.unwrap().as_deref(),
        Some("node-b")
    );
    assert_eq!(
        b.session_owner(&sid(0x22)).await.unwrap().as_deref(),
        Some("node-a")
    );
    assert_eq!(a.session_owner(&sid(0x23)).await.unwrap(), None);
    assert_eq!(
        b.sessions_listed(&[sid(0x23), sid(0x21), sid(0x22), sid(0x24)])
            .await
            .unwrap(),
        vec![false, true, true, false]
    );
    assert_eq!(b.sessions_listed(&[]).await.unwrap(), Vec::<bool>::new());
    assert_eq!(a.session_count().await.unwrap(), 2);

    // Connection ids are per node: the same number on two nodes is two connections.
    a.apply(add(5, Some(user(1)), Some(device(1))))
        .await
        .unwrap();
    b.apply(add(5, Some(user(1)), None)).await.unwrap();
    b.apply(add(7, Some(user(1)), None)).await.unwrap();
    assert_eq!(a.user_connections(&user(1)).await.unwrap(), vec![ConnId(5)]);
    assert_eq!(
        b.user_connections(&user(1)).await.unwrap(),
        vec![ConnId(5), ConnId(7)]
    );
    assert_eq!(
        a.device_connections(&device(1)).await.unwrap(),
        vec![ConnId(5)]
    );
    assert!(b.device_connections(&device(1)).await.unwrap().is_empty());
    let remove = LiveOp::RemoveConnection {
        conn: ConnId(5),
        user: Some(user(1)),
        device: None,
    };
    b.apply(remove).await.unwrap();
    assert_eq!(
        a.user_connections(&user(1)).await.unwrap(),
        vec![ConnId(5)],
        "B's removal leaves A's connection 5"
    );
    assert_eq!(b.user_connections(&user(1)).await.unwrap(), vec![ConnId(7)]);
}

#[tokio::test]
async fn presence_names_the_nodes_holding_a_device_or_user() {
    let Some(url) = fresh() else { return };
    let (a, b, c) = (
        node(&url, "n-a").await,
        node(&url, "n-b").await,
        node(&url, "n-c").await,
    );
    assert!(a.device_nodes(&device(3)).await.unwrap().is_empty());
    c.apply(add(1, None, Some(device(3)))).await.unwrap();
    a.apply(add(1, Some(user(3)), Some(device(3))))
        .await
        .unwrap();
    a.apply(add(2, None, Some(device(3)))).await.unwrap();
    b.apply(add(9, Some(user(3)), None)).await.unwrap();
    assert_eq!(
        b.device_nodes(&device(3)).await.unwrap(),
        vec!["n-a".to_owned(), "n-c".to_owned()],
        "sorted, one entry per node"
    );
    assert_eq!(
        c.user_nodes(&user(3)).await.unwrap(),
        vec!["n-a".to_owned(), "n-b".to_owned()]
    );
    let other_tenant = DeviceRef {
        tenant_id: "t2".into(),
        device_id: "d3".into(),
    };
    assert!(a.device_nodes(&other_tenant).await.unwrap().is_empty());
}

#[tokio::test]
async fn forgetting_a_node_removes_what_it_owned_and_names_its_sessions() {
    let Some(url) = fresh() else { return };
    let (dead, alive) = (node(&url, "dead").await, node(&url, "alive").await);
    for n in [0x12, 0x11] {
        let put = LiveOp::PutSession {
            id: sid(n),
            session: entry("t-f", 1),
        };
        dead.apply(put).await.unwrap();
    }
    let put = LiveOp::PutSession {
        id: sid(0x13),
        session: entry("t-f", 2),
    };
    alive.apply(put).await.unwrap();
    dead.apply(add(1, Some(user(4)), Some(device(4))))
        .await
        .unwrap();
    dead.apply(add(2, Some(user(4)), None)).await.unwrap();
    alive.apply(add(1, Some(user(4)), None)).await.unwrap();

    assert_eq!(
        alive.forget_node("dead").await.unwrap(),
        vec![sid(0x11), sid(0x12)],
        "the dead node's sessions, by id"
    );
    assert!(dead.user_connections(&user(4)).await.unwrap().is_empty());
    assert!(alive.device_nodes(&device(4)).await.unwrap().is_empty());
    assert_eq!(
        alive.user_nodes(&user(4)).await.unwrap(),
        vec!["alive".to_owned()],
        "the survivor's presence stays"
    );
    let left: Vec<SessionId> = alive
        .tenant_sessions("t-f")
        .await
        .unwrap()
        .into_iter()
        .map(|(id, _)| id)
        .collect();
    assert_eq!(left, vec![sid(0x13)]);
    assert_eq!(alive.session_count().await.unwrap(), 1);
    assert!(
        alive.forget_node("dead").await.unwrap().is_empty(),
        "forgetting twice finds nothing"
    );
}

#[tokio::test]
async fn a_session_taken_over_by_another_node_is_not_forgotten_with_the_first() {
    let Some(url) = fresh() else { return };
    let (first, second) = (node(&url, "first").await, node(&url, "second").await);
    let put = LiveOp::PutSession {
        id: sid(0x41),
        session: entry("t-o", 1),
    };
    first.apply(put.clone()).await.unwrap();
    second.apply(put).await.unwrap();
    assert_eq!(
        first.session_owner(&sid(0x41)).await.unwrap().as_deref(),
        Some("second")
    );
    assert!(second.forget_node("first").await.unwrap().is_empty());
    assert!(first.session(&sid(0x41)).await.unwrap().is_some());
    assert_eq!(first.forget_node("second").await.unwrap(), vec![sid(0x41)]);
    assert!(first.tenant_sessions("t-o").await.unwrap().is_empty());
}

#[tokio::test]
async fn moving_a_session_to_another_tenant_keeps_the_indexes_exact() {
    let Some(url) = fresh() else { return };
    let a = node(&url, "n1").await;
    let put = |tenant| LiveOp::PutSession {
        id: sid(0x51),
        session: entry(tenant, 1),
    };
    a.apply(put("t-x")).await.unwrap();
    a.apply(put("t-y")).await.unwrap();
    assert!(a.tenant_sessions("t-x").await.unwrap().is_empty());
    assert_eq!(a.tenant_sessions("t-y").await.unwrap().len(), 1);
}

#[tokio::test]
async fn reassert_rewrites_a_batch_in_order() {
    let Some(url) = fresh() else { return };
    let a = node(&url, "n1").await;
    let digest = CodeDigest([4; 32]);
    let mut ops = vec![
        add(3, Some(user(6)), Some(device(6))),
        LiveOp::PutSession {
            id: sid(0x61),
            session: entry("t-r", 3),
        },
        LiveOp::ReplaceCode {
            digest: digest.clone(),
            code: LiveCode::Pending(sid(0x61)),
        },
        LiveOp::RemoveCodeIf {
            digest: digest.clone(),
            expected: LiveCode::Pending(sid(0x61)),
        },
        LiveOp::ReplaceCode {
            digest: digest.clone(),
            code: LiveCode::Expired {
                forget_at: Timestamp::from_millis(5),
            },
        },
    ];
    // Enough ops for more than one pipeline.
    for n in 0..1200u64 {
        ops.push(add(100 + n, Some(user(7)), None));
    }
    ops.push(LiveOp::RemoveSession { id: sid(0x99) });
    a.reassert(ops).await.unwrap();
    assert_eq!(a.user_connections(&user(6)).await.unwrap(), vec![ConnId(3)]);
    assert_eq!(
        a.device_connections(&device(6)).await.unwrap(),
        vec![ConnId(3)]
    );
    assert_eq!(a.user_connections(&user(7)).await.unwrap().len(), 1200);
    assert_eq!(a.session(&sid(0x61)).await.unwrap(), Some(entry("t-r", 3)));
    assert_eq!(
        a.query(LiveQuery::GetCode { digest }).await.unwrap(),
        LiveAnswer::Code(Some((
            CodeDigest([4; 32]),
            LiveCode::Expired {
                forget_at: Timestamp::from_millis(5)
            }
        ))),
        "in order: the last write wins"
    );
}

#[tokio::test]
async fn a_bad_url_or_node_id_is_an_error() {
    assert!(
        RedisLive::connect("nonsense", "n1", RedisOptions::default())
            .await
            .is_err()
    );
    let Some(url) = fresh() else { return };
    assert!(RedisLive::connect(&url, "a/b", RedisOptions::default())
        .await
        .is_err());
}

#[tokio::test]
async fn a_value_that_does_not_decode_is_an_error_not_a_panic() {
    let Some(r) = RedisInstance::shared() else {
        return;
    };
    let url = r.fresh_url();
    let a = node(&url, "n1").await;
    let client = redis::Client::open(url.as_str()).unwrap();
    let mut raw = client.get_multiplexed_async_connection().await.unwrap();
    let digest = CodeDigest([1; 32]);
    let key = format!("assist:code:{}", "01".repeat(32));
    redis::cmd("SET")
        .arg(&key)
        .arg("not json")
        .exec_async(&mut raw)
        .await
        .unwrap();
    assert!(a.query(LiveQuery::GetCode { digest }).await.is_err());
    redis::cmd("HSET")
        .arg("assist:sessions")
        .arg(sid(1).0)
        .arg("{")
        .exec_async(&mut raw)
        .await
        .unwrap();
    assert!(a.session(&sid(1)).await.is_err());
    redis::cmd("SADD")
        .arg("assist:user:2:t1:u1")
        .arg("n1/notanumber")
        .exec_async(&mut raw)
        .await
        .unwrap();
    assert!(a.user_connections(&user(1)).await.is_err());
}

#[tokio::test]
async fn codes_carry_ttls_a_pending_one_the_safety_ttl_an_expired_one_its_forget_at() {
    let Some(url) = fresh() else { return };
    let opts = RedisOptions {
        pending_code_ttl: std::time::Duration::from_secs(600),
        min_code_ttl: std::time::Duration::from_secs(30),
        ..RedisOptions::default()
    };
    let a = RedisLive::connect(&url, "n1", opts).await.unwrap();
    let client = redis::Client::open(url.as_str()).unwrap();
    let raw = client.get_multiplexed_async_connection().await.unwrap();
    let pttl = |n: u8| {
        let key = format!("assist:code:{}", format!("{n:02x}").repeat(32));
        let mut raw = raw.clone();
        async move {
            let ms: i64 = redis::cmd("PTTL")
                .arg(key)
                .query_async(&mut raw)
                .await
                .unwrap();
            ms
        }
    };
    let insert = LiveQuery::InsertCode {
        digest: CodeDigest([1; 32]),
        code: LiveCode::Pending(sid(1)),
    };
    a.query(insert).await.unwrap();
    let ttl = pttl(1).await;
    assert!(ttl > 500_000 && ttl <= 600_000, "pending: {ttl} ms");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    let replace = |n: u8, forget_at| LiveOp::ReplaceCode {
        digest: CodeDigest([n; 32]),
        code: LiveCode::Expired {
            forget_at: Timestamp::from_millis(forget_at),
        },
    };
    a.apply(replace(1, now + 300_000)).await.unwrap();
    let ttl = pttl(1).await;
    assert!(
        ttl > 200_000 && ttl <= 300_000,
        "expired, forget_at in 5 min: {ttl} ms"
    );
    a.apply(replace(2, 5)).await.unwrap();
    let ttl = pttl(2).await;
    assert!(
        ttl > 20_000 && ttl <= 30_000,
        "forget_at passed: the floor, {ttl} ms"
    );
    a.apply(replace(3, u64::MAX)).await.unwrap();
    let ttl = pttl(3).await;
    assert!(
        ttl > 23 * 3600 * 1000 && ttl <= 24 * 3600 * 1000,
        "forget_at out of range: a day, {ttl} ms"
    );
}

/// `RedisLive` with every write and query carried out as a one-item [`RedisLive::run_batch`]:
/// the contract holds on the batch path too.
#[derive(Debug)]
struct Batched(RedisLive);

impl Batched {
    async fn one(&self, item: BatchItem<'_>) -> Result<BatchReply, assist_live::LiveError> {
        let mut replies = self.0.run_batch(&[item]).await?;
        assert_eq!(replies.len(), 1, "one reply per item");
        replies.remove(0)
    }
}

impl LiveStore for Batched {
    fn apply(&self, op: LiveOp) -> assist_live::LiveFuture<'_, ()> {
        Box::pin(async move {
            match self.one(BatchItem::Op(&op)).await? {
                BatchReply::Applied => Ok(()),
                other => panic!("a write answered {other:?}"),
            }
        })
    }
    fn query(&self, query: LiveQuery) -> assist_live::LiveFuture<'_, LiveAnswer> {
        Box::pin(async move {
            match self.one(BatchItem::Query(&query)).await? {
                BatchReply::Answer(a) => Ok(a),
                other => panic!("a query answered {other:?}"),
            }
        })
    }
    fn session<'a>(
        &'a self,
        id: &'a SessionId,
    ) -> assist_live::LiveFuture<'a, Option<LiveSession>> {
        self.0.session(id)
    }
    fn tenant_sessions<'a>(
        &'a self,
        tenant_id: &'a str,
    ) -> assist_live::LiveFuture<'a, Vec<(SessionId, LiveSession)>> {
        self.0.tenant_sessions(tenant_id)
    }
    fn session_count(&self) -> assist_live::LiveFuture<'_, usize> {
        self.0.session_count()
    }
    fn code_count(&self) -> assist_live::LiveFuture<'_, usize> {
        self.0.code_count()
    }
    fn device_connections<'a>(
        &'a self,
        device: &'a DeviceRef,
    ) -> assist_live::LiveFuture<'a, Vec<ConnId>> {
        self.0.device_connections(device)
    }
    fn user_connections<'a>(
        &'a self,
        user: &'a UserRef,
    ) -> assist_live::LiveFuture<'a, Vec<ConnId>> {
        self.0.user_connections(user)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_contract_holds_through_batches() {
    let Some(url) = fresh() else { return };
    assist_live::contract::run_all(Arc::new(Batched(node(&url, "n1").await))).await;
}

#[tokio::test]
async fn a_batch_runs_in_order_and_a_refused_item_fails_alone() {
    let Some(url) = fresh() else { return };
    let a = node(&url, "n1").await;
    let (code_a, code_b) = (CodeDigest([8; 32]), CodeDigest([9; 32]));
    // Code B's key holds a hash: reading it as a code is refused by Redis (WRONGTYPE).
    let client = redis::Client::open(url.as_str()).unwrap();
    let mut raw = client.get_multiplexed_async_connection().await.unwrap();
    let key = assist_live_redis::keys::code(&code_b);
    let _: i64 = redis::cmd("HSET")
        .arg(&key)
        .arg("f")
        .arg("v")
        .query_async(&mut raw)
        .await
        .unwrap();
    // Someone listens on node n2's channel: the publish counts it.
    let (bus, mut inbound) = assist_live_redis::Bus::start(&url, "n2").unwrap();
    let mut up = bus.connected();
    while !*up.borrow_and_update() {
        up.changed().await.unwrap();
    }

    let pending = LiveCode::Pending(sid(0x71));
    let put = LiveOp::ReplaceCode {
        digest: code_a.clone(),
        code: pending.clone(),
    };
    let get_a = LiveQuery::GetCode {
        digest: code_a.clone(),
    };
    let insert_a = LiveQuery::InsertCode {
        digest: code_a.clone(),
        code: LiveCode::Pending(sid(0x72)),
    };
    let get_b = LiveQuery::GetCode { digest: code_b };
    let take_a = LiveQuery::TakeCodeIf {
        digest: code_a.clone(),
        expected: pending.clone(),
    };
    let session = LiveOp::PutSession {
        id: sid(0x73),
        session: entry("t-b", 4),
    };
    let replies = a
        .run_batch(&[
            BatchItem::Op(&put),
            BatchItem::Query(&get_a),
            BatchItem::Query(&insert_a),
            BatchItem::Query(&get_b),
            BatchItem::Publish {
                to: Some("n2"),
                payload: b"hello",
            },
            BatchItem::Publish {
                to: Some("not/a node"),
                payload: b"x",
            },
            BatchItem::Query(&take_a),
            BatchItem::Query(&get_a),
            BatchItem::Op(&session),
        ])
        .await
        .expect("Redis answers");
    assert_eq!(replies.len(), 9);
    assert_eq!(replies[0], Ok(BatchReply::Applied));
    assert_eq!(
        replies[1],
        Ok(BatchReply::Answer(LiveAnswer::Code(Some((
            code_a.clone(),
            pending.clone()
        ))))),
        "a query sees the write before it"
    );
    assert_eq!(
        replies[2],
        Ok(BatchReply::Answer(LiveAnswer::Inserted(false)))
    );
    let refused = replies[3].clone().expect_err("WRONGTYPE");
    assert!(refused.0.contains("get code"), "{refused}");
    assert_eq!(replies[4], Ok(BatchReply::Published(Some(1))));
    assert_eq!(replies[5], Ok(BatchReply::Published(None)));
    assert_eq!(
        replies[6],
        Ok(BatchReply::Answer(LiveAnswer::Taken(Some(pending)))),
        "the items after a refused one still ran"
    );
    assert_eq!(replies[7], Ok(BatchReply::Answer(LiveAnswer::Code(None))));
    assert_eq!(replies[8], Ok(BatchReply::Applied));
    assert_eq!(a.session(&sid(0x73)).await.unwrap(), Some(entry("t-b", 4)));
    let heard = tokio::time::timeout(std::time::Duration::from_secs(5), inbound.recv())
        .await
        .expect("delivered")
        .expect("bus open");
    assert_eq!(heard, b"hello");
    assert_eq!(a.run_batch(&[]).await.unwrap(), vec![], "an empty batch");
}

#[tokio::test]
async fn a_code_and_its_sessions_owner_come_in_one_answer() {
    let Some(url) = fresh() else { return };
    let (a, b) = (node(&url, "n1").await, node(&url, "n2").await);
    let (listed, unlisted, expired, none) = (
        CodeDigest([21; 32]),
        CodeDigest([22; 32]),
        CodeDigest([23; 32]),
        CodeDigest([24; 32]),
    );
    a.apply(LiveOp::PutSession {
        id: sid(0x81),
        session: entry("t1", 1),
    })
    .await
    .unwrap();
    for (digest, code) in [
        (&listed, LiveCode::Pending(sid(0x81))),
        (&unlisted, LiveCode::Pending(sid(0x82))),
        (
            &expired,
            LiveCode::Expired {
                forget_at: Timestamp::from_millis(9),
            },
        ),
    ] {
        a.apply(LiveOp::ReplaceCode {
            digest: digest.clone(),
            code,
        })
        .await
        .unwrap();
    }
    // Asked from another node: the owner is the node that wrote the entry.
    assert_eq!(
        b.code_and_owner(&listed).await.unwrap(),
        Some((LiveCode::Pending(sid(0x81)), Some("n1".into())))
    );
    assert_eq!(
        b.code_and_owner(&unlisted).await.unwrap(),
        Some((LiveCode::Pending(sid(0x82)), None))
    );
    assert_eq!(
        b.code_and_owner(&expired).await.unwrap(),
        Some((
            LiveCode::Expired {
                forget_at: Timestamp::from_millis(9)
            },
            None
        ))
    );
    assert_eq!(b.code_and_owner(&none).await.unwrap(), None);
}
