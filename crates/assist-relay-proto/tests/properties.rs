//! Property tests: decoders never panic on arbitrary bytes, codecs round-trip under arbitrary chunking of the
//! input, and the direction queue keeps its limits, order and accounting. (The WebSocket codec's are in
//! `assist-ws`.)

use std::time::{Duration, Instant};

use assist_relay_proto::frame::{
    Channel, Frame, FrameHeader, FLAG_FROM_RELAY, FLAG_KEYFRAME, HEADER_LEN,
};
use assist_relay_proto::queue::{DirectionQueue, QueueLimits};
use assist_relay_proto::quic::{encode_ticket_prelude, parse_ticket_prelude, StreamFrameDecoder};
use bytes::{Bytes, BytesMut};
use proptest::prelude::*;

/// Feeds `input` to `decode` in chunks whose sizes cycle through `chunks`, collecting events until the input is
/// exhausted or an error occurs.
fn feed_chunked<E, T>(
    input: &[u8],
    chunks: &[usize],
    mut decode: impl FnMut(&mut BytesMut) -> Result<Option<T>, E>,
) -> (Vec<T>, Option<E>, usize) {
    let mut buf = BytesMut::new();
    let mut events = Vec::new();
    let mut pos = 0;
    let mut i = 0;
    loop {
        loop {
            match decode(&mut buf) {
                Ok(Some(ev)) => events.push(ev),
                Ok(None) => break,
                Err(e) => return (events, Some(e), buf.len()),
            }
        }
        if pos >= input.len() {
            return (events, None, buf.len());
        }
        let n = chunks
            .get(i % chunks.len().max(1))
            .copied()
            .unwrap_or(input.len())
            .max(1);
        i += 1;
        let end = (pos + n).min(input.len());
        buf.extend_from_slice(&input[pos..end]);
        pos = end;
    }
}

fn payload_of(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect()
}

fn chunking() -> impl Strategy<Value = Vec<usize>> {
    prop_oneof![
        Just(vec![1usize]),
        proptest::collection::vec(1usize..64, 1..8),
        proptest::collection::vec(1usize..100_000, 1..4),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn stream_decoder_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..2048),
                                   chunks in chunking(), max in 0usize..4096, from_client in any::<bool>()) {
        let mut dec = StreamFrameDecoder::new(max);
        let (frames, _, _) = feed_chunked(&bytes, &chunks, |b| dec.decode(b, from_client));
        for f in frames {
            prop_assert_eq!(f.len(), HEADER_LEN + f.header.len as usize);
            prop_assert!(f.header.len as usize <= max);
            prop_assert!(!from_client || f.header.flags & FLAG_FROM_RELAY == 0);
        }
    }

    #[test]
    fn prelude_parse_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..5000)) {
        if let Ok(Some((ticket, used))) = parse_ticket_prelude(&bytes) {
            prop_assert_eq!(used, ticket.len() + 2);
            prop_assert!(used <= bytes.len());
        }
    }

    #[test]
    fn prelude_round_trip(ticket in "[A-Za-z0-9._~é-]{1,300}", tail in proptest::collection::vec(any::<u8>(), 0..10)) {
        let mut buf = encode_ticket_prelude(&ticket).to_vec();
        let used = buf.len();
        buf.extend_from_slice(&tail);
        prop_assert_eq!(parse_ticket_prelude(&buf), Ok(Some((ticket, used))));
        for cut in 0..used {
            prop_assert_eq!(parse_ticket_prelude(&buf[..cut]), Ok(None));
        }
    }

    #[test]
    fn header_parse_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..16)) {
        if let Ok(Some(h)) = FrameHeader::parse(&bytes) {
            prop_assert_eq!(&h.encode()[..], &bytes[..HEADER_LEN]);
        }
    }

    #[test]
    fn header_round_trip(ch in 0u8..4, keyframe in any::<bool>(), relay in any::<bool>(), len in any::<u32>()) {
        let flags = if keyframe { FLAG_KEYFRAME } else { 0 } | if relay { FLAG_FROM_RELAY } else { 0 };
        let h = FrameHeader { channel: Channel::from_u8(ch).unwrap(), flags, len };
        prop_assert_eq!(FrameHeader::parse(&h.encode()), Ok(Some(h)));
    }

    #[test]
    fn from_client_bytes_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..64), max in 0usize..64) {
        if let Ok(f) = Frame::from_client_bytes(Bytes::from(bytes.clone()), max) {
            prop_assert_eq!(&f.bytes[..], &bytes[..]);
            prop_assert_eq!(f.payload().len(), f.header.len as usize);
            prop_assert!(f.payload().len() <= max);
            prop_assert_eq!(f.header.flags & FLAG_FROM_RELAY, 0);
        }
    }

    #[test]
    fn frame_round_trip(ch in 0u8..4, keyframe in any::<bool>(),
                        payload in proptest::collection::vec(any::<u8>(), 0..512)) {
        let f = Frame::new(Channel::from_u8(ch).unwrap(), if keyframe { FLAG_KEYFRAME } else { 0 }, &payload);
        let parsed = Frame::from_client_bytes(f.bytes.clone(), payload.len()).unwrap();
        prop_assert_eq!(&parsed, &f);
        prop_assert_eq!(&parsed.payload()[..], &payload[..]);
        prop_assert_eq!(
            Frame::from_client_bytes(f.bytes.clone(), payload.len().saturating_sub(1)).is_err(),
            !payload.is_empty()
        );
    }

    #[test]
    fn stream_decoder_round_trip(frames in proptest::collection::vec(
                                     (0u8..4, any::<bool>(), proptest::collection::vec(any::<u8>(), 0..300)), 0..8),
                                 chunks in chunking()) {
        let frames: Vec<Frame> = frames.iter()
            .map(|(c, k, p)| Frame::new(Channel::from_u8(*c).unwrap(), if *k { FLAG_KEYFRAME } else { 0 }, p))
            .collect();
        let wire: Vec<u8> = frames.iter().flat_map(|f| f.bytes.to_vec()).collect();
        let mut dec = StreamFrameDecoder::new(300);
        let (got, err, left) = feed_chunked(&wire, &chunks, |b| dec.decode(b, true));
        prop_assert_eq!(err, None);
        prop_assert_eq!(left, 0);
        prop_assert_eq!(got, frames);
    }

}

#[derive(Debug, Clone)]
enum Op {
    Push {
        channel: u8,
        payload: usize,
        keyframe: bool,
        dt_ms: u64,
    },
    Pop,
    PopBatch(usize),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        // Mostly screen frames, as in real traffic.
        4 => (1u8..2, 4usize..400, any::<bool>(), 0u64..120)
            .prop_map(|(channel, payload, keyframe, dt_ms)| Op::Push { channel, payload, keyframe, dt_ms }),
        3 => (prop_oneof![Just(0u8), Just(2u8), Just(3u8)], 4usize..200, 0u64..120)
            .prop_map(|(channel, payload, dt_ms)| Op::Push { channel, payload, keyframe: false, dt_ms }),
        2 => Just(Op::Pop),
        1 => (0usize..1500).prop_map(Op::PopBatch),
    ]
}

struct Model {
    now: Instant,
    limits: QueueLimits,
    /// Every frame pushed and taken by the queue (queued, or dropped as a new screen frame), by id.
    pushed: Vec<Frame>,
    pushed_bytes: u64,
    popped: Vec<Frame>,
    popped_bytes: u64,
    dropped_frames: u64,
    dropped_bytes: u64,
}

fn id_of(f: &Frame) -> u32 {
    let p = f.payload();
    u32::from_be_bytes([p[0], p[1], p[2], p[3]])
}

impl Model {
    fn record_pop(&mut self, f: Frame) {
        self.popped_bytes += f.len() as u64;
        self.popped.push(f);
    }

    fn check_invariants(&self, q: &DirectionQueue) -> Result<(), TestCaseError> {
        prop_assert!(q.len() <= self.limits.max_frames.max(1));
        prop_assert!(
            q.bytes() <= self.limits.max_bytes || q.len() == 1,
            "{} bytes in {} frames",
            q.bytes(),
            q.len()
        );
        prop_assert_eq!(q.is_empty(), q.bytes() == 0);
        prop_assert_eq!(
            self.pushed.len() as u64,
            self.popped.len() as u64 + q.len() as u64 + self.dropped_frames
        );
        prop_assert_eq!(
            self.pushed_bytes,
            self.popped_bytes + q.bytes() as u64 + self.dropped_bytes
        );
        Ok(())
    }

    fn push(&mut self, q: &mut DirectionQueue, frame: Frame) -> Result<(), TestCaseError> {
        let screen = frame.is_screen();
        let mut attempt = frame.clone();
        let mut pops = 0;
        loop {
            let (len_before, bytes_before) = (q.len(), q.bytes());
            match q.push(attempt) {
                Ok(o) => {
                    self.pushed_bytes += frame.len() as u64;
                    self.pushed.push(frame);
                    prop_assert!(screen || o.queued, "non-screen frames are never dropped");
                    prop_assert!(o.queued || o.dropped_frames >= 1);
                    self.dropped_frames += u64::from(o.dropped_frames);
                    self.dropped_bytes += o.dropped_bytes;
                    return Ok(());
                }
                Err(back) => {
                    prop_assert!(!screen, "screen frames are never handed back");
                    prop_assert_eq!(&back, &frame);
                    prop_assert!(!q.is_empty());
                    prop_assert_eq!(
                        (q.len(), q.bytes()),
                        (len_before, bytes_before),
                        "a refused push changes nothing"
                    );
                    prop_assert!(
                        pops <= self.limits.max_frames,
                        "the sender is not paused forever"
                    );
                    // The sender is paused; the receiver drains one frame, then the same frame is retried.
                    let f = q.pop().expect("non-empty");
                    self.record_pop(f);
                    pops += 1;
                    attempt = back;
                }
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn queue_policy(max_frames in 0usize..12, max_bytes in 16usize..1500, interval_ms in 0u64..300,
                    ops in proptest::collection::vec(op(), 1..200)) {
        let limits = QueueLimits {
            max_frames, max_bytes, keyframe_request_interval: Duration::from_millis(interval_ms),
        };
        let mut q = DirectionQueue::new(limits);
        let mut m = Model {
            now: Instant::now(), limits, pushed: Vec::new(), pushed_bytes: 0, popped: Vec::new(), popped_bytes: 0,
            dropped_frames: 0, dropped_bytes: 0,
        };
        let mut next_id = 0u32;
        for op in ops {
            match op {
                Op::Push { channel, payload, keyframe, dt_ms } => {
                    m.now += Duration::from_millis(dt_ms);
                    let mut p = payload_of(payload, channel);
                    p[..4].copy_from_slice(&next_id.to_be_bytes());
                    next_id += 1;
                    let flags = if keyframe { FLAG_KEYFRAME } else { 0 };
                    m.push(&mut q, Frame::new(Channel::from_u8(channel).unwrap(), flags, &p))?;
                }
                Op::Pop => {
                    let was_empty = q.is_empty();
                    match q.pop() {
                        Some(f) => m.record_pop(f),
                        None => prop_assert!(was_empty),
                    }
                }
                Op::PopBatch(max) => {
                    let was_empty = q.is_empty();
                    let mut batch = Vec::new();
                    q.pop_batch(max, &mut batch);
                    prop_assert_eq!(batch.is_empty(), was_empty);
                    let total: usize = batch.iter().map(Frame::len).sum();
                    prop_assert!(total <= max || batch.len() == 1);
                    // Greedy: the next frame would not have fitted.
                    if !q.is_empty() {
                        let mut rest = Vec::new();
                        q.pop_batch(0, &mut rest);
                        prop_assert!(total + rest[0].len() > max);
                        batch.extend(rest);
                    }
                    for f in batch {
                        m.record_pop(f);
                    }
                }
            }
            m.check_invariants(&q)?;
        }
        while let Some(f) = q.pop() {
            m.record_pop(f);
        }
        m.check_invariants(&q)?;
        prop_assert_eq!(q.bytes(), 0);
        // Everything popped was pushed, unchanged, in push order.
        let ids: Vec<u32> = m.popped.iter().map(id_of).collect();
        prop_assert!(ids.windows(2).all(|w| w[0] < w[1]), "pop order {:?}", ids);
        for f in &m.popped {
            prop_assert_eq!(f, &m.pushed[id_of(f) as usize]);
        }
        // Non-screen frames are never dropped (and so keep their order).
        let non_screen_pushed: Vec<u32> = m.pushed.iter().filter(|f| !f.is_screen()).map(id_of).collect();
        let non_screen_popped: Vec<u32> = m.popped.iter().filter(|f| !f.is_screen()).map(id_of).collect();
        prop_assert_eq!(non_screen_popped, non_screen_pushed);
    }
}
