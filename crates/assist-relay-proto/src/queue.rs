//! The per-direction backpressure policy of docs/protocol.md, "Backpressure", sans-IO.
//!
//! Each direction of a pair has one [`DirectionQueue`]: frames read from the sending leg are pushed, frames
//! written to the receiving leg are popped (one batch per vectored write). Under congestion only **screen**
//! frames are dropped; input, chat and control frames are never dropped: when they do not fit, [`DirectionQueue::push`]
//! hands the frame back and the caller pauses reading from the sender until there is room.
//!
//! Limits: the queue never holds more than `max_frames` frames nor more than `max_bytes` bytes (whole frames,
//! relay header included), with one exception: a single frame larger than `max_bytes` is queued when the queue
//! is empty (otherwise such a non-screen frame could never be forwarded; the frame size limit of 4 MiB is below
//! the default 8 MiB queue anyway). Order: frames leave in the order they were queued (minus drops); non-screen
//! frames keep their relative order always. The queue keeps no time at all: the keyframe-request throttle and the oldest-frame age are the
//! session's ([`crate::session`]).

use std::collections::VecDeque;
use std::time::Duration;

use crate::frame::Frame;

/// Bounds of one direction's queue.
#[derive(Debug, Clone, Copy)]
pub struct QueueLimits {
    /// Maximum number of queued frames (at least 1 is used).
    pub max_frames: usize,
    /// Maximum queued bytes (whole frames, header included).
    pub max_bytes: usize,
    /// Minimum time between two keyframe requests. The queue only reports drops; the throttle that applies
    /// this interval is the session's ([`crate::session::SessionCore`]), the one place it lives.
    pub keyframe_request_interval: Duration,
}

impl Default for QueueLimits {
    /// 64 frames, 8 MiB, one keyframe request per 250 ms.
    fn default() -> Self {
        QueueLimits {
            max_frames: 64,
            max_bytes: 8 * 1024 * 1024,
            keyframe_request_interval: Duration::from_millis(250),
        }
    }
}

/// What [`DirectionQueue::push`] did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct PushOutcome {
    /// The pushed frame was queued. Always true for a non-screen frame (which is handed back instead of being
    /// dropped); false for a screen frame that was itself dropped.
    pub queued: bool,
    /// Screen frames dropped by this push (`reason="congestion"`), the pushed one included if it was dropped.
    pub dropped_frames: u32,
    /// Bytes of the dropped frames.
    pub dropped_bytes: u64,
}

/// The bounded queue of one direction of a pair.
#[derive(Debug)]
pub struct DirectionQueue {
    limits: QueueLimits,
    frames: VecDeque<Frame>,
    bytes: usize,
    screen_frames: usize,
    screen_bytes: usize,
}

impl DirectionQueue {
    /// An empty queue. A `max_frames` of 0 is taken as 1.
    pub fn new(limits: QueueLimits) -> Self {
        let limits = QueueLimits {
            max_frames: limits.max_frames.max(1),
            ..limits
        };
        DirectionQueue {
            limits,
            frames: VecDeque::new(),
            bytes: 0,
            screen_frames: 0,
            screen_bytes: 0,
        }
    }

    /// Queues `frame`, applying the congestion policy.
    ///
    /// **Screen frames** are always accepted (`Ok`): if the new screen frame arrives while the queue is more than
    /// half full (by frames or bytes) and holds screen frames, those stale screen frames are dropped first; then,
    /// while there is no room, the oldest queued screen frames are dropped; if that does not free room, the new
    /// screen frame itself is dropped (`queued == false`). Drops are reported in the outcome; whether they
    /// lead to a `keyframeRequest` is the session's decision.
    ///
    /// **Non-screen frames** (input, chat, control) are never dropped. If there is no room, the oldest queued
    /// screen frames are dropped to make it, but only when dropping them is enough; otherwise nothing changes and
    /// the frame is handed back as `Err(frame)`: the caller keeps it, pauses reading from the sender, and pushes
    /// the same frame again after popping (this is never the case on an empty queue).
    pub fn push(&mut self, frame: Frame) -> Result<PushOutcome, Frame> {
        let len = frame.len();
        let mut out = PushOutcome::default();
        if frame.is_screen() {
            if self.screen_frames > 0 && self.over_half_full() {
                self.drop_all_screen(&mut out);
            }
            while !self.has_room_for(len) && self.screen_frames > 0 {
                self.drop_oldest_screen(&mut out);
            }
            if self.has_room_for(len) {
                self.enqueue(frame);
                out.queued = true;
            } else {
                out.dropped_frames += 1;
                out.dropped_bytes += len as u64;
            }
        } else {
            if !self.has_room_for(len) {
                let other_frames = self.frames.len() - self.screen_frames;
                let other_bytes = self.bytes - self.screen_bytes;
                let room_without_screen = other_frames < self.limits.max_frames
                    && (other_frames == 0
                        || other_bytes.saturating_add(len) <= self.limits.max_bytes);
                if !room_without_screen {
                    return Err(frame);
                }
                while !self.has_room_for(len) && self.screen_frames > 0 {
                    self.drop_oldest_screen(&mut out);
                }
            }
            // Either there was room, or dropping screen frames made it (checked just above).
            debug_assert!(self.has_room_for(len));
            self.enqueue(frame);
            out.queued = true;
        }
        Ok(out)
    }

    /// The oldest queued frame.
    pub fn pop(&mut self) -> Option<Frame> {
        let frame = self.frames.pop_front()?;
        self.account_removed(&frame);
        Some(frame)
    }

    /// Pops frames while their total stays <= `max_bytes` (at least one if non-empty), in order, into `out`: for
    /// one vectored write per batch.
    pub fn pop_batch(&mut self, max_bytes: usize, out: &mut Vec<Frame>) {
        let mut total = 0usize;
        let mut first = true;
        while let Some(next) = self.frames.front() {
            let n = next.len();
            if !first && total.saturating_add(n) > max_bytes {
                break;
            }
            first = false;
            total = total.saturating_add(n);
            if let Some(f) = self.pop() {
                out.push(f);
            }
        }
    }

    /// Number of queued frames.
    pub fn len(&self) -> usize {
        self.frames.len()
    }

    /// Queued bytes (whole frames).
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// Whether no frame is queued.
    pub fn is_empty(&self) -> bool {
        self.frames.is_empty()
    }

    /// Whether a frame of `len` bytes (header included) would be queued now without dropping anything: fewer than
    /// `max_frames` queued, and the bytes stay within `max_bytes` (or the queue is empty).
    pub fn has_room_for(&self, len: usize) -> bool {
        self.frames.len() < self.limits.max_frames
            && (self.frames.is_empty() || self.bytes.saturating_add(len) <= self.limits.max_bytes)
    }

    /// Number of queued screen frames.
    pub fn screen_len(&self) -> usize {
        self.screen_frames
    }

    /// The limits in force (`max_frames` at least 1).
    pub fn limits(&self) -> QueueLimits {
        self.limits
    }

    /// Removes every queued frame (leg closed), returning how many frames and bytes were discarded.
    pub fn clear(&mut self) -> (usize, usize) {
        let discarded = (self.frames.len(), self.bytes);
        self.frames.clear();
        self.bytes = 0;
        self.screen_frames = 0;
        self.screen_bytes = 0;
        discarded
    }

    fn over_half_full(&self) -> bool {
        self.frames.len().saturating_mul(2) > self.limits.max_frames
            || self.bytes.saturating_mul(2) > self.limits.max_bytes
    }

    fn enqueue(&mut self, frame: Frame) {
        self.bytes += frame.len();
        if frame.is_screen() {
            self.screen_frames += 1;
            self.screen_bytes += frame.len();
        }
        self.frames.push_back(frame);
    }

    fn account_removed(&mut self, frame: &Frame) {
        self.bytes -= frame.len();
        if frame.is_screen() {
            self.screen_frames -= 1;
            self.screen_bytes -= frame.len();
        }
    }

    fn drop_oldest_screen(&mut self, out: &mut PushOutcome) {
        if let Some(i) = self.frames.iter().position(Frame::is_screen) {
            if let Some(f) = self.frames.remove(i) {
                self.account_removed(&f);
                out.dropped_frames += 1;
                out.dropped_bytes += f.len() as u64;
            }
        }
    }

    fn drop_all_screen(&mut self, out: &mut PushOutcome) {
        out.dropped_frames += self.screen_frames as u32;
        out.dropped_bytes += self.screen_bytes as u64;
        self.frames.retain(|f| !f.is_screen());
        self.bytes -= self.screen_bytes;
        self.screen_frames = 0;
        self.screen_bytes = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frame::{Channel, FLAG_KEYFRAME};

    fn limits(max_frames: usize, max_bytes: usize) -> QueueLimits {
        QueueLimits {
            max_frames,
            max_bytes,
            keyframe_request_interval: Duration::from_millis(250),
        }
    }

    fn screen(tag: u8, payload: usize) -> Frame {
        let mut p = vec![0u8; payload.max(1)];
        p[0] = tag;
        Frame::new(Channel::Screen, 0, &p)
    }

    fn input(tag: u8) -> Frame {
        Frame::new(Channel::Input, 0, &[tag])
    }

    fn tags(q: &mut DirectionQueue) -> Vec<(Channel, u8)> {
        let mut out = Vec::new();
        while let Some(f) = q.pop() {
            out.push((f.header.channel, f.payload()[0]));
        }
        out
    }

    #[test]
    fn defaults() {
        let l = QueueLimits::default();
        assert_eq!((l.max_frames, l.max_bytes), (64, 8 << 20));
        assert_eq!(l.keyframe_request_interval, Duration::from_millis(250));
        assert_eq!(DirectionQueue::new(limits(0, 10)).limits().max_frames, 1);
    }

    #[test]
    fn fifo_without_congestion() {
        let mut q = DirectionQueue::new(limits(10, 1000));
        assert!(q.is_empty());
        for i in 0..3 {
            let o = q.push(input(i)).unwrap();
            assert_eq!(
                o,
                PushOutcome {
                    queued: true,
                    ..Default::default()
                }
            );
        }
        q.push(screen(3, 10)).unwrap();
        assert_eq!((q.len(), q.bytes(), q.screen_len()), (4, 3 * 7 + 16, 1));
        assert_eq!(
            tags(&mut q),
            [
                (Channel::Input, 0),
                (Channel::Input, 1),
                (Channel::Input, 2),
                (Channel::Screen, 3)
            ]
        );
        assert_eq!((q.len(), q.bytes(), q.screen_len()), (0, 0, 0));
        assert_eq!(q.pop(), None);
    }

    #[test]
    fn full_queue_drops_oldest_screen_frame() {
        // Half full (not over): only the oldest screen frame goes, to make room by bytes.
        let mut q = DirectionQueue::new(limits(100, 100));
        q.push(screen(1, 44)).unwrap(); // 50 bytes: exactly half, not over
        let o = q.push(screen(2, 54)).unwrap(); // 60 bytes: would make 110 > 100
        assert_eq!(
            o,
            PushOutcome {
                queued: true,
                dropped_frames: 1,
                dropped_bytes: 50
            }
        );
        assert_eq!(tags(&mut q), [(Channel::Screen, 2)]);
    }

    #[test]
    fn stale_screen_frames_dropped_when_over_half_full() {
        let mut q = DirectionQueue::new(limits(6, 10_000));
        q.push(screen(1, 10)).unwrap();
        q.push(input(2)).unwrap();
        q.push(screen(3, 10)).unwrap();
        // 3 of 6: not over half, no drop.
        let o = q.push(screen(4, 10)).unwrap();
        assert_eq!(o.dropped_frames, 0);
        // 4 of 6: over half, with screen frames queued: all three stale screens go.
        let o = q.push(screen(5, 10)).unwrap();
        assert_eq!(
            o,
            PushOutcome {
                queued: true,
                dropped_frames: 3,
                dropped_bytes: 48
            }
        );
        assert_eq!(tags(&mut q), [(Channel::Input, 2), (Channel::Screen, 5)]);
    }

    #[test]
    fn over_half_by_bytes_also_drops_stale() {
        let mut q = DirectionQueue::new(limits(64, 100));
        q.push(screen(1, 50)).unwrap(); // 56 bytes > 50
        let o = q.push(screen(2, 4)).unwrap();
        assert_eq!((o.queued, o.dropped_frames, o.dropped_bytes), (true, 1, 56));
    }

    #[test]
    fn new_screen_frame_dropped_when_nothing_droppable() {
        let mut q = DirectionQueue::new(limits(2, 1000));
        q.push(input(1)).unwrap();
        q.push(input(2)).unwrap();
        let o = q.push(screen(3, 10)).unwrap();
        assert_eq!(
            o,
            PushOutcome {
                queued: false,
                dropped_frames: 1,
                dropped_bytes: 16
            }
        );
        assert_eq!(tags(&mut q), [(Channel::Input, 1), (Channel::Input, 2)]);
    }

    #[test]
    fn non_screen_frame_makes_room_by_dropping_screens() {
        let mut q = DirectionQueue::new(limits(4, 1000));
        q.push(screen(1, 10)).unwrap();
        q.push(input(2)).unwrap();
        assert_eq!(q.push(screen(3, 10)).unwrap().dropped_frames, 0); // half full, not over
        assert_eq!(q.push(input(4)).unwrap().dropped_frames, 0);
        let o = q.push(input(5)).unwrap();
        assert_eq!(
            o,
            PushOutcome {
                queued: true,
                dropped_frames: 1,
                dropped_bytes: 16
            }
        );
        assert_eq!(
            tags(&mut q),
            [
                (Channel::Input, 2),
                (Channel::Screen, 3),
                (Channel::Input, 4),
                (Channel::Input, 5)
            ]
        );
    }

    #[test]
    fn non_screen_frame_handed_back_when_only_non_screen_queued() {
        let mut q = DirectionQueue::new(limits(2, 1000));
        q.push(input(1)).unwrap();
        q.push(input(2)).unwrap();
        let back = q.push(input(3)).unwrap_err();
        assert_eq!(back, input(3));
        assert!(!q.has_room_for(back.len()));
        assert_eq!(q.pop(), Some(input(1)));
        assert!(q.has_room_for(back.len()));
        assert!(q.push(back).unwrap().queued);
        assert_eq!(tags(&mut q), [(Channel::Input, 2), (Channel::Input, 3)]);
    }

    #[test]
    fn non_screen_frame_handed_back_without_useless_drops() {
        // 100 bytes: a 16-byte screen frame and a 76-byte chat frame queued; a 36-byte chat frame does not fit
        // even without the screen frame (76 + 36 > 100), so the screen frame is kept.
        let mut q = DirectionQueue::new(limits(10, 100));
        q.push(screen(1, 10)).unwrap();
        q.push(Frame::new(Channel::Chat, 0, &[7; 70])).unwrap();
        let chat = Frame::new(Channel::Chat, 0, &[8; 30]);
        assert_eq!(q.push(chat.clone()), Err(chat));
        assert_eq!(q.screen_len(), 1);
    }

    #[test]
    fn oversized_frame_queued_alone_when_empty() {
        let mut q = DirectionQueue::new(limits(10, 50));
        let big = Frame::new(Channel::Chat, 0, &[0; 100]);
        assert!(q.push(big.clone()).unwrap().queued);
        assert_eq!(q.push(input(1)), Err(input(1)));
        assert_eq!(q.pop(), Some(big));
        // A big screen frame on a non-empty queue is dropped after the queued screens.
        q.push(screen(1, 10)).unwrap();
        let o = q.push(screen(2, 100)).unwrap();
        assert!(o.queued, "queued alone once the old screen frame is gone");
        assert_eq!(q.len(), 1);
    }

    #[test]
    fn pop_batch_respects_byte_budget() {
        let mut q = DirectionQueue::new(limits(10, 10_000));
        for i in 0..5 {
            q.push(screen(i, 94)).unwrap(); // 100 bytes each
        }
        let mut out = Vec::new();
        q.pop_batch(250, &mut out);
        assert_eq!(out.len(), 2);
        q.pop_batch(0, &mut out); // at least one
        assert_eq!(out.len(), 3);
        q.pop_batch(usize::MAX, &mut out);
        assert_eq!(out.len(), 5);
        assert!(q.is_empty());
        q.pop_batch(100, &mut out);
        assert_eq!(out.len(), 5);
        let got: Vec<u8> = out.iter().map(|f| f.payload()[0]).collect();
        assert_eq!(got, [0, 1, 2, 3, 4]);
    }

    #[test]
    fn clear_discards_everything() {
        let mut q = DirectionQueue::new(limits(10, 10_000));
        q.push(screen(1, 10)).unwrap();
        q.push(Frame::new(Channel::Screen, FLAG_KEYFRAME, &[1]))
            .unwrap();
        q.push(input(2)).unwrap();
        assert_eq!(q.clear(), (3, 16 + 7 + 7));
        assert!(q.is_empty() && q.bytes() == 0 && q.screen_len() == 0);
    }
}
