//! Property tests: the WebSocket decoders never panic on arbitrary bytes, and frames round-trip through them under
//! arbitrary chunking of the input, fragmentation and interleaved pings.

use assist_ws::{
    encode_client_frame, encode_frame, server_frame, ClientDecoder, Opcode, ServerDecoder, WsError,
    WsEvent,
};
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

/// Payload lengths around the interesting boundaries: 7-bit, 16-bit (126..=65535) and 64-bit (> 65535).
fn payload_len() -> impl Strategy<Value = usize> {
    prop_oneof![
        6 => 0usize..140,
        2 => 120usize..1200,
        1 => 65_530usize..65_540,
    ]
}

fn chunking() -> impl Strategy<Value = Vec<usize>> {
    prop_oneof![
        Just(vec![1usize]),
        proptest::collection::vec(1usize..64, 1..8),
        proptest::collection::vec(1usize..100_000, 1..4),
    ]
}

#[derive(Debug, Clone)]
struct Message {
    text: bool,
    len: usize,
    seed: u8,
    /// Split points (fractions in 0..1000) for fragmentation; empty = one frame.
    splits: Vec<u16>,
    /// Send a ping with this payload between fragments (if fragmented).
    ping: Option<Vec<u8>>,
    mask: [u8; 4],
}

fn message() -> impl Strategy<Value = Message> {
    (
        any::<bool>(),
        payload_len(),
        any::<u8>(),
        proptest::collection::vec(0u16..1000, 0..4),
        proptest::option::of(proptest::collection::vec(any::<u8>(), 0..126)),
        any::<[u8; 4]>(),
    )
        .prop_map(|(text, len, seed, splits, ping, mask)| Message {
            text,
            len,
            seed,
            splits,
            ping,
            mask,
        })
}

/// Encodes `msg` (possibly fragmented, with a ping in the middle) and returns the events a decoder should yield.
fn encode_message(msg: &Message, masked: bool, out: &mut BytesMut) -> Vec<WsEvent> {
    let payload = payload_of(msg.len, msg.seed);
    let op = if msg.text {
        Opcode::Text
    } else {
        Opcode::Binary
    };
    let mask = masked.then_some(msg.mask);
    let mut cuts: Vec<usize> = msg
        .splits
        .iter()
        .map(|s| payload.len() * usize::from(*s) / 1000)
        .collect();
    cuts.sort_unstable();
    let mut expected = Vec::new();
    if cuts.is_empty() {
        if masked {
            encode_client_frame(op, &payload, msg.mask, out);
        } else {
            out.extend_from_slice(&server_frame(op, &payload));
        }
    } else {
        let mut bounds = vec![0];
        bounds.extend(cuts);
        bounds.push(payload.len());
        let pieces = bounds.len() - 1;
        for k in 0..pieces {
            let fin = k + 1 == pieces;
            let opk = if k == 0 { op } else { Opcode::Continuation };
            encode_frame(fin, opk, &payload[bounds[k]..bounds[k + 1]], mask, out);
            if k == 0 {
                if let Some(p) = &msg.ping {
                    encode_frame(true, Opcode::Ping, p, mask, out);
                    expected.push(WsEvent::Ping(Bytes::from(p.clone())));
                }
            }
        }
    }
    let p = Bytes::from(payload);
    expected.push(if msg.text {
        WsEvent::Text(p)
    } else {
        WsEvent::Binary(p)
    });
    expected
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn server_decoder_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..2048),
                                   chunks in chunking(), max in 0usize..4096) {
        let mut dec = ServerDecoder::new(max);
        let (_, _, _) = feed_chunked(&bytes, &chunks, |b| dec.decode(b));
    }

    #[test]
    fn client_decoder_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..2048),
                                   chunks in chunking(), max in 0usize..4096) {
        let mut dec = ClientDecoder::new(max);
        let (_, _, _) = feed_chunked(&bytes, &chunks, |b| dec.decode(b));
    }

    /// Mostly-valid frames with one corrupted byte reach deeper decoder states than random bytes do.
    #[test]
    fn server_decoder_never_panics_on_corrupted_frames(msgs in proptest::collection::vec(message(), 1..4),
                                                        at in any::<prop::sample::Index>(), byte in any::<u8>(),
                                                        chunks in chunking()) {
        let mut input = BytesMut::new();
        for m in &msgs {
            encode_message(m, true, &mut input);
        }
        let i = at.index(input.len());
        input[i] = byte;
        let mut dec = ServerDecoder::new(70_000);
        let (_, _, _) = feed_chunked(&input, &chunks, |b| dec.decode(b));
    }

    #[test]
    fn client_frames_round_trip_through_server_decoder(msgs in proptest::collection::vec(message(), 1..4),
                                                       chunks in chunking()) {
        let mut wire = BytesMut::new();
        let mut expected = Vec::new();
        for m in &msgs {
            expected.extend(encode_message(m, true, &mut wire));
        }
        let mut dec = ServerDecoder::new(70_000);
        let (got, err, left) = feed_chunked(&wire, &chunks, |b| dec.decode(b));
        prop_assert_eq!(err, None);
        prop_assert_eq!(left, 0);
        prop_assert_eq!(got, expected);
    }

    #[test]
    fn server_frames_round_trip_through_client_decoder(msgs in proptest::collection::vec(message(), 1..4),
                                                       chunks in chunking()) {
        let mut wire = BytesMut::new();
        let mut expected = Vec::new();
        for m in &msgs {
            expected.extend(encode_message(m, false, &mut wire));
        }
        let mut dec = ClientDecoder::new(70_000);
        let (got, err, left) = feed_chunked(&wire, &chunks, |b| dec.decode(b));
        prop_assert_eq!(err, None);
        prop_assert_eq!(left, 0);
        prop_assert_eq!(got, expected);
    }

    #[test]
    fn message_limit_is_exact(len in 0usize..300, max in 0usize..300, mask in any::<[u8; 4]>()) {
        let mut wire = BytesMut::new();
        encode_client_frame(Opcode::Binary, &payload_of(len, 1), mask, &mut wire);
        let mut dec = ServerDecoder::new(max);
        let r = dec.decode(&mut wire);
        if len <= max {
            prop_assert_eq!(r, Ok(Some(WsEvent::Binary(Bytes::from(payload_of(len, 1))))));
        } else {
            prop_assert_eq!(r, Err(WsError::MessageTooBig { len: len as u64, max }));
        }
    }
}
