//! The live-state contract, run against the in-process store; and its presence sets against
//! a plain model after any sequence of opens and closes.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use assist_live::{contract, InProcessLiveState, LiveStore};
use assist_session::{ConnId, DeviceRef, LiveOp, UserRef};
use proptest::prelude::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_in_process_store_keeps_the_contract() {
    contract::run_all(Arc::new(InProcessLiveState::new())).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_takes_race_on_threads() {
    // The takes run on worker threads at the same time, many rounds over.
    for _ in 0..50 {
        contract::concurrent_takes_have_one_winner(Arc::new(InProcessLiveState::new())).await;
    }
}

fn user(n: u8) -> UserRef {
    UserRef {
        tenant_id: "t".into(),
        user_id: format!("u{n}"),
    }
}

fn device(n: u8) -> DeviceRef {
    DeviceRef {
        tenant_id: "t".into(),
        device_id: format!("d{n}"),
    }
}

#[derive(Debug, Clone)]
enum Op {
    Add(u8, Option<u8>, Option<u8>),
    Remove(u8),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        (
            0u8..6,
            proptest::option::of(0u8..3),
            proptest::option::of(0u8..3)
        )
            .prop_map(|(c, u, d)| Op::Add(c, u, d)),
        (0u8..6).prop_map(Op::Remove),
    ]
}

proptest! {
    /// Presence matches a plain model after any sequence of opens and closes, and forgets
    /// users and devices whose last connection closed.
    #[test]
    fn presence_matches_a_model(ops in proptest::collection::vec(op(), 0..60)) {
        let live = InProcessLiveState::new();
        // conn -> (user, device) for open connections, as the broker would remember them.
        let mut open: BTreeMap<u8, (Option<u8>, Option<u8>)> = BTreeMap::new();
        for op in ops {
            match op {
                Op::Add(c, u, d) => {
                    if open.contains_key(&c) { continue; }
                    live.apply_now(LiveOp::AddConnection { conn: ConnId(c.into()), user: u.map(user), device: d.map(device) });
                    open.insert(c, (u, d));
                }
                Op::Remove(c) => {
                    let Some((u, d)) = open.remove(&c) else { continue };
                    live.apply_now(LiveOp::RemoveConnection { conn: ConnId(c.into()), user: u.map(user), device: d.map(device) });
                }
            }
        }
        let rt = tokio::runtime::Builder::new_current_thread().build().expect("runtime");
        for n in 0..3u8 {
            let by_user: Vec<ConnId> = open.iter().filter(|(_, (u, _))| *u == Some(n)).map(|(c, _)| ConnId((*c).into())).collect();
            prop_assert_eq!(rt.block_on(live.user_connections(&user(n))).expect("read"), by_user);
            let by_device: Vec<ConnId> = open.iter().filter(|(_, (_, d))| *d == Some(n)).map(|(c, _)| ConnId((*c).into())).collect();
            prop_assert_eq!(rt.block_on(live.device_connections(&device(n))).expect("read"), by_device);
        }
        prop_assert_eq!(live.users_present(), open.values().filter_map(|(u, _)| *u).collect::<BTreeSet<_>>().len());
        prop_assert_eq!(live.devices_present(), open.values().filter_map(|(_, d)| *d).collect::<BTreeSet<_>>().len());
    }
}
