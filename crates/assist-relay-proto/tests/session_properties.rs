//! Property tests of the per-session core on virtual time: no frame is forwarded against the direction, mode
//! or chat permission in force when it arrived; the counters add up; non-screen frames keep their order;
//! keyframe requests are throttled; nothing is held forever.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use assist_policy::Mode;
use assist_relay_proto::control::RelayControl;
use assist_relay_proto::frame::{Channel, Frame, FLAG_FROM_RELAY};
use assist_relay_proto::queue::QueueLimits;
use assist_relay_proto::session::{verdict, Received, Role, SessionCore, SessionLimits};
use proptest::prelude::*;

#[derive(Debug, Clone)]
enum Op {
    Frame {
        sharer: bool,
        channel: u8,
        payload: usize,
        dt_ms: u64,
    },
    Transmit {
        helper: bool,
        max_bytes: usize,
    },
    SetMode {
        mode: usize,
        chat: bool,
    },
    Tick {
        dt_ms: u64,
    },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (any::<bool>(), 0u8..4, 4usize..300, 0u64..50)
            .prop_map(|(sharer, channel, payload, dt_ms)| Op::Frame { sharer, channel, payload, dt_ms }),
        3 => (any::<bool>(), 0usize..1200).prop_map(|(helper, max_bytes)| Op::Transmit { helper, max_bytes }),
        1 => (0usize..4, any::<bool>()).prop_map(|(mode, chat)| Op::SetMode { mode, chat }),
        1 => (0u64..1500).prop_map(|dt_ms| Op::Tick { dt_ms }),
    ]
}

fn id_of(f: &Frame) -> u32 {
    let p = f.payload();
    u32::from_be_bytes([p[0], p[1], p[2], p[3]])
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn session_core(max_frames in 1usize..10, max_bytes in 64usize..2000, interval_ms in 0u64..400,
                    mode0 in 0usize..4, chat0 in any::<bool>(),
                    ops in proptest::collection::vec(op(), 1..300)) {
        let limits = SessionLimits {
            queue: QueueLimits { max_frames, max_bytes, keyframe_request_interval: Duration::from_millis(interval_ms) },
            idle_timeout: Duration::from_secs(3600),
            max_bytes_per_sec: u64::MAX / 4,
            ..SessionLimits::default()
        };
        let mut now = Instant::now();
        let mut c = SessionCore::new(Mode::ALL[mode0], chat0, limits, now);
        // Frames the core accepted for forwarding, by id: (sender, channel).
        let mut accepted: HashMap<u32, (Role, Channel)> = HashMap::new();
        let mut next_id = 0u32;
        let mut delivered = [0u64; 2];
        let mut last_non_screen = [None::<u32>; 2];
        let mut requests = Vec::new();
        let mut sent_requests = 0usize;
        for op in ops {
            match op {
                Op::Frame { sharer, channel, payload, dt_ms } => {
                    now += Duration::from_millis(dt_ms);
                    let from = if sharer { Role::Sharer } else { Role::Helper };
                    if !c.can_read(from) {
                        continue;
                    }
                    let channel = Channel::from_u8(channel).unwrap();
                    let mut p = vec![0u8; payload];
                    p[..4].copy_from_slice(&next_id.to_be_bytes());
                    let allowed = verdict(from, channel, c.mode(), c.chat()).is_ok();
                    let r = c.on_frame(from, Frame::new(channel, 0, &p), now);
                    match r {
                        Received::Dropped(_) => prop_assert!(!allowed),
                        Received::Forwarded { keyframe_request, congestion_drops } => {
                            prop_assert!(allowed);
                            prop_assert!(!keyframe_request || congestion_drops > 0);
                            if keyframe_request {
                                requests.push(now);
                            }
                            accepted.insert(next_id, (from, channel));
                        }
                        Received::Paused => {
                            prop_assert!(allowed);
                            accepted.insert(next_id, (from, channel));
                        }
                        Received::Ended => {}
                    }
                    next_id += 1;
                }
                Op::Transmit { helper, max_bytes } => {
                    let to = if helper { Role::Helper } else { Role::Sharer };
                    let _ = c.take_pong(to);
                    let mut out = Vec::new();
                    let t = c.poll_transmit(to, max_bytes, now, &mut out);
                    prop_assert_eq!(t.control + t.forwarded, out.len());
                    if t.keyframe_request {
                        requests.push(now);
                    }
                    for (i, f) in out.iter().enumerate() {
                        if f.header.flags & FLAG_FROM_RELAY != 0 {
                            prop_assert!(i < t.control, "relay control first");
                            if let Ok(RelayControl::KeyframeRequest { .. }) = RelayControl::from_json(&f.payload()) {
                                prop_assert_eq!(to, Role::Sharer);
                                sent_requests += 1;
                            }
                            continue;
                        }
                        let id = id_of(f);
                        let (from, channel) = accepted.remove(&id).expect("only accepted frames are forwarded, once");
                        prop_assert_eq!(from, to.peer(), "a frame goes to the other leg");
                        prop_assert_eq!(channel, f.header.channel);
                        delivered[from.index()] += 1;
                        if channel != Channel::Screen {
                            if let Some(last) = last_non_screen[from.index()] {
                                prop_assert!(id > last, "non-screen frames keep their order");
                            }
                            last_non_screen[from.index()] = Some(id);
                        }
                    }
                    if t.forwarded > 0 {
                        prop_assert!(t.waited.is_some());
                    }
                }
                Op::SetMode { mode, chat } => c.set_mode(Mode::ALL[mode], chat),
                Op::Tick { dt_ms } => {
                    now += Duration::from_millis(dt_ms);
                    let _ = c.on_tick(now);
                }
            }
            // The counters add up, per direction.
            let k = *c.counters();
            for from in Role::ALL {
                let d = from.index();
                let held = u64::from(c.ended().is_none() && !c.can_read(from));
                prop_assert_eq!(
                    k.received[d],
                    k.frames[d] + k.policy_dropped[d] + k.screen_dropped[d] + c.queued(from.peer()) as u64 + held,
                    "direction {}", d
                );
                prop_assert_eq!(k.frames[d], delivered[d]);
                prop_assert!(c.queued(from.peer()) <= max_frames);
            }
            prop_assert_eq!(k.screen_dropped[0], 0, "only screen frames are dropped, and only the sharer sends them");
        }
        // Every keyframe request was counted and the throttle held.
        let mut out = Vec::new();
        while c.has_output(Role::Sharer) {
            let _ = c.take_pong(Role::Sharer);
            c.poll_transmit(Role::Sharer, usize::MAX, now, &mut out);
        }
        let pending = out
            .iter()
            .filter(|f| matches!(RelayControl::from_json(&f.payload()), Ok(RelayControl::KeyframeRequest { .. })))
            .count();
        prop_assert_eq!(sent_requests + pending, c.counters().keyframe_requests as usize);
        prop_assert_eq!(requests.len(), sent_requests + pending);
        for w in requests.windows(2) {
            prop_assert!(w[1].duration_since(w[0]) >= Duration::from_millis(interval_ms));
        }
    }
}
