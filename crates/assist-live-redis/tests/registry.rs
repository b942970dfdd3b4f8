//! The node registry against a real redis-server: heartbeat and expiry, one winner of a cleanup
//! claim, the shared-keys fingerprint.

use std::time::{Duration, Instant};

use assist_live_redis::{KeysCheck, Load, NodeRecord, RedisOptions, Registry, RelayAd, Roles};
use assist_testkit::RedisInstance;

fn fresh() -> Option<String> {
    RedisInstance::shared().map(|r| r.fresh_url())
}

async fn registry(url: &str, node: &str) -> Registry {
    Registry::connect(url, node, RedisOptions::default())
        .await
        .expect("connects")
}

fn record(node: &str, at: u64) -> NodeRecord {
    NodeRecord {
        node_id: node.into(),
        roles: Roles {
            broker: true,
            relay: true,
        },
        relay: Some(RelayAd {
            name: format!("relay-{node}"),
            inst: "i1".into(),
            address: "127.0.0.1:8443".into(),
            quic_addr: Some("127.0.0.1:8444".into()),
        }),
        load: Load {
            connections: 3,
            sessions: 2,
            relay_sessions: 1,
        },
        draining: false,
        started_at_ms: 1,
        heartbeat_at_ms: at,
    }
}

/// Polls `nodes()` until `node`'s alive flag is `want`, for at most 20 s.
async fn wait_alive(reg: &Registry, node: &str, want: bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let nodes = reg.nodes().await.expect("nodes");
        let alive = nodes
            .iter()
            .find(|(r, _)| r.node_id == node)
            .map(|(_, a)| *a);
        if alive == Some(want) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{node} alive={alive:?}, want {want}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn a_heartbeat_keeps_a_node_alive_until_its_ttl_passes() {
    let Some(url) = fresh() else { return };
    let (a, b) = (registry(&url, "a").await, registry(&url, "b").await);
    assert!(a.nodes().await.unwrap().is_empty());
    a.heartbeat(&record("a", 10), Duration::from_secs(60))
        .await
        .unwrap();
    b.heartbeat(&record("b", 10), Duration::from_millis(300))
        .await
        .unwrap();
    let nodes = a.nodes().await.unwrap();
    assert_eq!(nodes.len(), 2);
    assert_eq!(nodes[0], (record("a", 10), true), "by node id, as written");
    assert_eq!(nodes[1].0.node_id, "b");
    // b stops beating: its record stays, its alive key expires.
    wait_alive(&a, "b", false).await;
    assert!(a.nodes().await.unwrap()[0].1, "a is still alive");
    let mut draining = record("b", 20);
    draining.draining = true;
    b.heartbeat(&draining, Duration::from_secs(60))
        .await
        .unwrap();
    wait_alive(&a, "b", true).await;
    assert_eq!(a.nodes().await.unwrap()[1].0, draining, "replaced");
    a.remove("b").await.unwrap();
    let left: Vec<String> = a
        .nodes()
        .await
        .unwrap()
        .into_iter()
        .map(|(r, _)| r.node_id)
        .collect();
    assert_eq!(left, vec!["a".to_owned()]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn one_survivor_wins_the_cleanup_of_a_dead_node() {
    let Some(url) = fresh() else { return };
    let mut racers = Vec::new();
    for n in 0..12 {
        let reg = registry(&url, &format!("survivor-{n}")).await;
        racers.push(tokio::spawn(async move {
            reg.claim_cleanup("dead", Duration::from_secs(30)).await
        }));
    }
    let mut winners = 0;
    for r in racers {
        if r.await.unwrap().expect("answers") {
            winners += 1;
        }
    }
    assert_eq!(winners, 1);
    let late = registry(&url, "late").await;
    assert!(!late
        .claim_cleanup("dead", Duration::from_secs(30))
        .await
        .unwrap());
    assert!(
        late.claim_cleanup("other-dead", Duration::from_secs(30))
            .await
            .unwrap(),
        "one claim per dead node"
    );
}

#[tokio::test]
async fn a_cleanup_claim_expires() {
    let Some(url) = fresh() else { return };
    let reg = registry(&url, "s").await;
    assert!(reg
        .claim_cleanup("d", Duration::from_millis(100))
        .await
        .unwrap());
    let deadline = Instant::now() + Duration::from_secs(20);
    while !reg
        .claim_cleanup("d", Duration::from_millis(100))
        .await
        .unwrap()
    {
        assert!(Instant::now() < deadline, "the claim never expired");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn the_first_node_sets_the_clusters_keys_and_others_must_match() {
    let Some(url) = fresh() else { return };
    let (a, b) = (registry(&url, "a").await, registry(&url, "b").await);
    assert_eq!(a.claim_keys("fp-1").await.unwrap(), KeysCheck::Claimed);
    assert_eq!(b.claim_keys("fp-1").await.unwrap(), KeysCheck::Matches);
    assert_eq!(
        b.claim_keys("fp-2").await.unwrap(),
        KeysCheck::Differs {
            existing: "fp-1".into()
        }
    );
    assert_eq!(a.claim_keys("fp-1").await.unwrap(), KeysCheck::Matches);
    // The ticket key's fingerprint is a claim of its own.
    assert_eq!(
        b.claim_ticket_key("fp-2").await.unwrap(),
        KeysCheck::Claimed
    );
    assert_eq!(
        a.claim_ticket_key("fp-1").await.unwrap(),
        KeysCheck::Differs {
            existing: "fp-2".into()
        }
    );
    assert_eq!(a.claim_keys("fp-1").await.unwrap(), KeysCheck::Matches);
}

#[tokio::test]
async fn a_record_that_does_not_decode_is_skipped() {
    let Some(url) = fresh() else { return };
    let a = registry(&url, "a").await;
    a.heartbeat(&record("a", 1), Duration::from_secs(60))
        .await
        .unwrap();
    let client = redis::Client::open(url.as_str()).unwrap();
    let mut raw = client.get_multiplexed_async_connection().await.unwrap();
    redis::cmd("HSET")
        .arg("assist:nodes")
        .arg("junk")
        .arg("{not json")
        .exec_async(&mut raw)
        .await
        .unwrap();
    let nodes = a.nodes().await.unwrap();
    assert_eq!(nodes, vec![(record("a", 1), true)]);
}
