//! Redis going away and coming back (empty): operations fail within a bound, never hang or
//! panic; once it is back they work again, the state can be re-asserted, and the bus
//! resubscribes and delivers.

use std::time::{Duration, Instant};

use assist_live::LiveStore;
use assist_live_redis::{Bus, BusOptions, Load, NodeRecord, RedisLive, RedisOptions, Roles};
use assist_session::code::CodeDigest;
use assist_session::{
    ConnId, LiveAnswer, LiveCode, LiveOp, LiveQuery, LiveSession, LiveStage, SessionId, UserRef,
};
use assist_testkit::RedisInstance;

fn opts() -> RedisOptions {
    RedisOptions {
        op_timeout: Duration::from_secs(2),
        response_timeout: Duration::from_secs(1),
        connect_timeout: Duration::from_millis(500),
        reconnect_retries: 2,
        reconnect_max_delay: Duration::from_millis(200),
        ..RedisOptions::default()
    }
}

/// Generous: the bound is `op_timeout` (2 s); the slack covers a loaded machine.
const BOUND: Duration = Duration::from_secs(10);

fn user() -> UserRef {
    UserRef {
        tenant_id: "t1".into(),
        user_id: "u1".into(),
    }
}

fn sid() -> SessionId {
    SessionId("ab".repeat(16))
}

fn session() -> LiveSession {
    LiveSession {
        tenant_id: "t1".into(),
        stage: LiveStage::Active,
        mode: None,
        chat: false,
        helper: Some(user()),
        helper_conn: Some(ConnId(1)),
        sharer: None,
        sharer_conn: None,
        device_id: Some("d1".into()),
    }
}

fn state() -> Vec<LiveOp> {
    vec![
        LiveOp::AddConnection {
            conn: ConnId(1),
            user: Some(user()),
            device: None,
        },
        LiveOp::PutSession {
            id: sid(),
            session: session(),
        },
    ]
}

/// Runs `f`, expects an error, within [`BOUND`].
async fn fails_in_time<T: std::fmt::Debug>(
    what: &str,
    f: impl std::future::Future<Output = Result<T, assist_live::LiveError>>,
) {
    let start = Instant::now();
    let r = tokio::time::timeout(BOUND * 2, f)
        .await
        .unwrap_or_else(|_| panic!("{what} hung"));
    assert!(r.is_err(), "{what} with Redis down answered {r:?}");
    assert!(start.elapsed() < BOUND, "{what} took {:?}", start.elapsed());
}

/// Runs `f` until it succeeds (the breaker closes within about a window once Redis answers),
/// within [`BOUND`].
async fn eventually<T, F: std::future::Future<Output = Result<T, assist_live::LiveError>>>(
    what: &str,
    mut f: impl FnMut() -> F,
) -> T {
    let start = Instant::now();
    loop {
        match f().await {
            Ok(v) => return v,
            Err(e) => {
                assert!(start.elapsed() < BOUND, "{what} still fails: {e}");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    }
}

async fn wait_state(bus: &Bus, up: bool) {
    let mut s = bus.connected();
    tokio::time::timeout(Duration::from_secs(30), s.wait_for(|c| *c == up))
        .await
        .unwrap_or_else(|_| panic!("the bus never became connected={up}"))
        .expect("the bus is running");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_restart_fails_operations_in_time_then_everything_works_again() {
    if !RedisInstance::available() {
        return;
    }
    let r = RedisInstance::start().expect("starts redis");
    let live = RedisLive::connect(&r.url(), "r1", opts()).await.unwrap();
    let reg = live.registry();
    let bus_opts = BusOptions {
        ping_every: Duration::from_millis(200),
        max_backoff: Duration::from_millis(300),
        redis: opts(),
        ..BusOptions::default()
    };
    let (bus, mut rx) = Bus::start_with(&r.url(), "r1", bus_opts).unwrap();
    wait_state(&bus, true).await;
    live.reassert(state()).await.unwrap();
    assert_eq!(live.session(&sid()).await.unwrap(), Some(session()));

    r.stop();
    let digest = CodeDigest([3; 32]);
    fails_in_time(
        "get code",
        live.query(LiveQuery::GetCode {
            digest: digest.clone(),
        }),
    )
    .await;
    fails_in_time("put session", live.apply(state().remove(1))).await;
    fails_in_time("session", live.session(&sid())).await;
    fails_in_time("user connections", live.user_connections(&user())).await;
    fails_in_time("forget node", live.forget_node("other")).await;
    let record = NodeRecord {
        node_id: "r1".into(),
        roles: Roles {
            broker: true,
            relay: false,
        },
        relay: None,
        load: Load::default(),
        draining: false,
        started_at_ms: 1,
        heartbeat_at_ms: 2,
    };
    fails_in_time("heartbeat", reg.heartbeat(&record, Duration::from_secs(5))).await;
    fails_in_time("publish", bus.publish("r1", b"lost".to_vec())).await;
    fails_in_time("connect", RedisLive::connect(&r.url(), "r2", opts())).await;
    wait_state(&bus, false).await;
    // The breaker is open: operations fail at once, with no round trip and no waiting on
    // reconnection (without it, each would wait out the manager's reconnection attempts).
    let start = Instant::now();
    for _ in 0..50 {
        assert!(live.session(&sid()).await.is_err());
        assert!(live.user_connections(&user()).await.is_err());
    }
    assert!(
        start.elapsed() < Duration::from_secs(1),
        "100 operations with the breaker open took {:?}",
        start.elapsed()
    );

    r.restart().expect("starts again");
    // The breaker's probe (one PING per window) finds Redis again: operations work within
    // about a window, and do not fail on the connection that failed while Redis was away.
    let id = sid();
    let first = eventually("session", || live.session(&id)).await;
    assert_eq!(first, None, "Redis came back empty");
    live.reassert(state()).await.unwrap();
    assert_eq!(live.session(&sid()).await.unwrap(), Some(session()));
    assert_eq!(
        live.user_connections(&user()).await.unwrap(),
        vec![ConnId(1)]
    );
    // Scripts were flushed with the restart: EVALSHA loads them again.
    let insert = LiveQuery::InsertCode {
        digest: digest.clone(),
        code: LiveCode::Pending(sid()),
    };
    assert_eq!(
        live.query(insert).await.unwrap(),
        LiveAnswer::Inserted(true)
    );
    let take = LiveQuery::TakeCodeIf {
        digest,
        expected: LiveCode::Pending(sid()),
    };
    assert_eq!(
        live.query(take).await.unwrap(),
        LiveAnswer::Taken(Some(LiveCode::Pending(sid())))
    );
    reg.heartbeat(&record, Duration::from_secs(5))
        .await
        .unwrap();
    assert_eq!(reg.nodes().await.unwrap(), vec![(record, true)]);

    // To a node nobody is: the publisher is back whether or not the subscription is yet.
    eventually("publish", || bus.publish("nobody", b"early".to_vec())).await;
    wait_state(&bus, true).await;
    assert_eq!(bus.publish("r1", b"back".to_vec()).await.unwrap(), 1);
    let got = tokio::time::timeout(Duration::from_secs(20), rx.recv())
        .await
        .expect("delivered within 20 s");
    assert_eq!(
        got.as_deref(),
        Some(&b"back"[..]),
        "nothing sent while down arrives"
    );
}
