//! Assist's relay.
//!
//! This crate owns the relay's IO: admitting legs by ticket (`ticket`), the session's task that
//! polls both legs and forwards inline (`relay`), the WebSocket and QUIC transports (`leg`,
//! `quic`), its metrics, and a client for tests and the load generator (`client`). The wire
//! codecs and every per-session decision are pure code in `assist-relay-proto` (`session`); the
//! HTTP upgrade to WebSocket happens in `assistd`, which takes the TLS stream back out of hyper
//! and hands it to [`Relay::run_leg`].
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod client;
pub mod config;
pub mod leg;
pub mod metrics;
pub mod quic;
pub mod relay;
pub mod ticket;

pub use config::RelayConfig;
pub use relay::{Admission, AdmitError, Relay, SessionReport};
pub use ticket::{RelayIdentity, Role, TicketAuthority, TicketClaims};
