//! Sans-IO core of the Assist relay (docs/protocol.md, "Relay").
//!
//! This crate owns the relay's wire formats and its per-session policy, and nothing else:
//!
//! - [`frame`]: the 6-byte-header relay frame, validated once and then forwarded as shared [`bytes::Bytes`];
//! - [`quic`]: the QUIC ALPN, the ticket prelude and the length-delimited frame decoder for QUIC streams;
//! - [`control`]: the JSON control messages the relay originates;
//! - [`close`]: the relay's close codes;
//! - [`queue`]: the per-direction bounded queue that drops stale screen frames under congestion and pauses the
//!   sender instead of dropping input, chat or control;
//! - [`session`]: one session's decisions: the forwarding verdict, join and end bookkeeping, the keyframe-request
//!   throttle, the watchdog (idle, bandwidth, slow consumer, pings) and the report counters.
//!
//! It does **no IO**: no sockets, no async runtime, no clock reads (time is passed in as
//! [`std::time::Instant`]) and no randomness. Decoders take the caller's read buffer and never panic on
//! malformed input; they return errors that map to close codes.
//!
//! The WebSocket framing WSS legs use is its own crate, `assist-ws`.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod close;
pub mod control;
pub mod frame;
pub mod queue;
pub mod quic;
pub mod session;
