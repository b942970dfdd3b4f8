//! The bus against a real redis-server: delivery to one node, broadcast, the payload bound.

use std::time::Duration;

use assist_live_redis::{Bus, MAX_PAYLOAD};
use assist_testkit::RedisInstance;
use tokio::sync::mpsc::Receiver;

/// The next message, within 20 s.
async fn next(rx: &mut Receiver<Vec<u8>>) -> Vec<u8> {
    tokio::time::timeout(Duration::from_secs(20), rx.recv())
        .await
        .expect("a message within 20 s")
        .expect("the bus is running")
}

/// A Redis of the test's own: the broadcast channel is server-wide, and tests run at once.
fn own_redis() -> Option<RedisInstance> {
    RedisInstance::available().then(|| RedisInstance::start().expect("starts redis"))
}

async fn connected(bus: &Bus) {
    let mut state = bus.connected();
    tokio::time::timeout(Duration::from_secs(20), state.wait_for(|up| *up))
        .await
        .expect("subscribed within 20 s")
        .expect("the bus is running");
}

#[tokio::test]
async fn messages_reach_their_node_and_broadcasts_reach_all() {
    let Some(r) = own_redis() else { return };
    let (a, mut rx_a) = Bus::start(&r.url(), "bus1-a").unwrap();
    let (b, mut rx_b) = Bus::start(&r.url(), "bus1-b").unwrap();
    connected(&a).await;
    connected(&b).await;
    assert_eq!(a.publish("bus1-b", b"to b".to_vec()).await.unwrap(), 1);
    assert_eq!(next(&mut rx_b).await, b"to b");
    assert_eq!(b.broadcast(b"all".to_vec()).await.unwrap(), 2);
    assert_eq!(
        next(&mut rx_a).await,
        b"all",
        "a's first message is the broadcast: it did not get b's"
    );
    assert_eq!(next(&mut rx_b).await, b"all", "the sender gets its own");
    assert_eq!(
        a.publish("bus1-nobody", b"x".to_vec()).await.unwrap(),
        0,
        "no such node subscribed"
    );
    assert!(a.publish("bad/id", b"x".to_vec()).await.is_err());
}

#[tokio::test]
async fn a_batch_arrives_in_order_and_counts_each_delivery() {
    let Some(r) = own_redis() else { return };
    let (a, mut rx_a) = Bus::start(&r.url(), "bus4-a").unwrap();
    let (b, mut rx_b) = Bus::start(&r.url(), "bus4-b").unwrap();
    connected(&a).await;
    connected(&b).await;
    let batch: Vec<(Option<&str>, &[u8])> = vec![
        (Some("bus4-b"), b"one"),
        (None, b"two"),
        (Some("bus4-nobody"), b"lost"),
        (Some("bus4-b"), b"three"),
        (Some("bus4-a"), b"four"),
    ];
    let sent = b.send_all(&batch).await.unwrap();
    assert_eq!(sent, vec![Some(1), Some(2), Some(0), Some(1), Some(1)]);
    for want in [&b"one"[..], b"two", b"three"] {
        assert_eq!(next(&mut rx_b).await, want);
    }
    for want in [&b"two"[..], b"four"] {
        assert_eq!(next(&mut rx_a).await, want);
    }
    assert_eq!(a.send_all(&[]).await.unwrap(), Vec::<Option<usize>>::new());
    // A bad node id or an oversized payload is refused; the rest of the batch goes out.
    let big = vec![0u8; MAX_PAYLOAD + 1];
    let mixed: Vec<(Option<&str>, &[u8])> = vec![
        (Some("bad/id"), b"x"),
        (Some("bus4-b"), b"five"),
        (None, &big),
        (Some("bus4-b"), b"six"),
    ];
    let sent = a.send_all(&mixed).await.unwrap();
    assert_eq!(sent, vec![None, Some(1), None, Some(1)]);
    assert_eq!(next(&mut rx_b).await, b"five");
    assert_eq!(next(&mut rx_b).await, b"six");
    let refused: Vec<(Option<&str>, &[u8])> = vec![(Some("bad/id"), b"x")];
    assert_eq!(a.send_all(&refused).await.unwrap(), vec![None]);
}

#[tokio::test]
async fn oversized_payloads_are_refused_and_dropped() {
    let Some(r) = own_redis() else { return };
    let (a, mut rx_a) = Bus::start(&r.url(), "bus2-a").unwrap();
    connected(&a).await;
    let big = vec![7u8; MAX_PAYLOAD + 1];
    assert!(a.publish("bus2-a", big.clone()).await.is_err());
    assert!(a.broadcast(big.clone()).await.is_err());
    // Another writer sends one anyway: it is dropped, the next one arrives.
    let client = redis::Client::open(r.url().as_str()).unwrap();
    let mut raw = client.get_multiplexed_async_connection().await.unwrap();
    let delivered: i64 = redis::cmd("PUBLISH")
        .arg("assist:to:bus2-a")
        .arg(big)
        .query_async(&mut raw)
        .await
        .unwrap();
    assert_eq!(delivered, 1, "Redis sent it to the subscriber");
    let edge = vec![1u8; MAX_PAYLOAD];
    assert_eq!(a.publish("bus2-a", edge.clone()).await.unwrap(), 1);
    let got = next(&mut rx_a).await;
    assert!(
        got == edge,
        "exactly the bound passes (got {} bytes)",
        got.len()
    );
}

#[tokio::test]
async fn dropping_the_bus_ends_the_receiver() {
    let Some(r) = own_redis() else { return };
    let (a, mut rx_a) = Bus::start(&r.url(), "bus3-a").unwrap();
    connected(&a).await;
    drop(a);
    let end = tokio::time::timeout(Duration::from_secs(20), rx_a.recv())
        .await
        .expect("ends within 20 s");
    assert_eq!(end, None);
}
