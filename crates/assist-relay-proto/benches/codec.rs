//! Codec and queue micro-benchmarks: WebSocket server decoding (in-place unmasking, no copy) of 4 KiB and
//! 64 KiB masked binary messages, relay frame header parse/encode, and direction queue push/pop.
// `criterion_group!` generates an undocumented public function.
#![allow(missing_docs)]

use std::hint::black_box;
use std::time::Duration;

use assist_relay_proto::frame::{Channel, Frame, FrameHeader, DEFAULT_MAX_PAYLOAD, HEADER_LEN};
use assist_relay_proto::queue::{DirectionQueue, QueueLimits};
use assist_ws::{encode_client_frame, Opcode, ServerDecoder, WsEvent};
use bytes::BytesMut;
use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};

fn ws_decode(c: &mut Criterion) {
    let mut group = c.benchmark_group("ws_server_decode");
    for (name, size, count) in [("4KiB", 4096usize, 64usize), ("64KiB", 65536, 16)] {
        // `count` masked binary messages, each one relay frame, back to back in one read buffer.
        let frame = Frame::new(Channel::Screen, 0, &vec![0x5Au8; size - HEADER_LEN]);
        let mut wire = BytesMut::new();
        for i in 0..count {
            encode_client_frame(
                Opcode::Binary,
                &frame.bytes,
                [0x12, 0x34, 0x56, i as u8],
                &mut wire,
            );
        }
        group.throughput(Throughput::Bytes((size * count) as u64));
        group.bench_function(name, |b| {
            b.iter_batched_ref(
                || wire.clone(),
                |buf| {
                    let mut dec = ServerDecoder::new(DEFAULT_MAX_PAYLOAD + HEADER_LEN);
                    let mut n = 0;
                    while let Ok(Some(WsEvent::Binary(msg))) = dec.decode(buf) {
                        let f = Frame::from_client_bytes(msg, DEFAULT_MAX_PAYLOAD);
                        n += usize::from(f.is_ok());
                    }
                    assert_eq!(n, count);
                },
                BatchSize::SmallInput,
            );
        });
    }
    group.finish();
}

fn header(c: &mut Criterion) {
    let h = FrameHeader {
        channel: Channel::Screen,
        flags: 1,
        len: 4090,
    };
    let bytes = h.encode();
    c.bench_function("frame_header_parse", |b| {
        b.iter(|| FrameHeader::parse(black_box(&bytes)))
    });
    c.bench_function("frame_header_encode", |b| b.iter(|| black_box(&h).encode()));
}

fn queue(c: &mut Criterion) {
    let screen = Frame::new(Channel::Screen, 0, &[0u8; 4090]);
    let input = Frame::new(Channel::Input, 0, &[0u8; 26]);
    let mut group = c.benchmark_group("direction_queue");
    group.throughput(Throughput::Elements(1));
    group.bench_function("push_pop", |b| {
        let mut q = DirectionQueue::new(QueueLimits::default());
        let mut i = 0u32;
        b.iter(|| {
            i = i.wrapping_add(1);
            let f = if i.is_multiple_of(4) {
                input.clone()
            } else {
                screen.clone()
            };
            let _ = black_box(q.push(f));
            if q.len() > 16 {
                black_box(q.pop());
            }
        });
    });
    group.bench_function("push_congested", |b| {
        // Full queue: every screen push drops (stale frames or the oldest), the policy's slow path.
        let limits = QueueLimits {
            keyframe_request_interval: Duration::from_millis(250),
            ..QueueLimits::default()
        };
        let mut q = DirectionQueue::new(limits);
        b.iter(|| {
            let _ = black_box(q.push(screen.clone()));
        });
    });
    group.throughput(Throughput::Elements(64));
    group.bench_function("push_pop_batch_64", |b| {
        let mut q = DirectionQueue::new(QueueLimits::default());
        let mut out = Vec::with_capacity(64);
        b.iter(|| {
            for k in 0..64u32 {
                let f = if k.is_multiple_of(4) {
                    input.clone()
                } else {
                    screen.clone()
                };
                let _ = q.push(f);
            }
            while !q.is_empty() {
                out.clear();
                q.pop_batch(256 * 1024, &mut out);
                black_box(&out);
            }
        });
    });
    group.finish();
}

/// The relay's whole user-space forwarding path for one read buffer of client messages:
/// WebSocket decode with in-place unmasking → relay frame validation → direction queue →
/// batch pop → server frame headers for one vectored write. Kernel and TLS costs are not in it.
fn forwarding_path(c: &mut Criterion) {
    use assist_ws::encode_server_header;
    let mut group = c.benchmark_group("forwarding_path");
    for (name, size, count) in [("4KiB", 4096usize, 64usize), ("64KiB", 65536, 16)] {
        let frame = Frame::new(Channel::Screen, 0, &vec![0x5Au8; size - HEADER_LEN]);
        let mut wire = BytesMut::new();
        for i in 0..count {
            encode_client_frame(
                Opcode::Binary,
                &frame.bytes,
                [0x12, 0x34, 0x56, i as u8],
                &mut wire,
            );
        }
        group.throughput(Throughput::Elements(count as u64));
        group.bench_function(name, |b| {
            let mut queue = DirectionQueue::new(QueueLimits {
                max_frames: 1024,
                max_bytes: 64 << 20,
                ..QueueLimits::default()
            });
            let mut batch = Vec::with_capacity(count);
            let mut headers = Vec::with_capacity(count);
            b.iter_batched_ref(
                || wire.clone(),
                |buf| {
                    let mut dec = ServerDecoder::new(DEFAULT_MAX_PAYLOAD + HEADER_LEN);
                    while let Ok(Some(WsEvent::Binary(msg))) = dec.decode(buf) {
                        if let Ok(f) = Frame::from_client_bytes(msg, DEFAULT_MAX_PAYLOAD) {
                            let _ = queue.push(f);
                        }
                    }
                    batch.clear();
                    queue.pop_batch(usize::MAX, &mut batch);
                    headers.clear();
                    for f in &batch {
                        let mut h = [0u8; 10];
                        let n = encode_server_header(Opcode::Binary, f.bytes.len(), &mut h);
                        headers.push((h, n));
                    }
                    assert_eq!(batch.len(), count);
                    black_box(&headers);
                },
                BatchSize::SmallInput,
            );
        });
    }
    group.finish();
}

criterion_group!(benches, ws_decode, header, queue, forwarding_path);
criterion_main!(benches);
