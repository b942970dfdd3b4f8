//! Assist's relay.
//!
//! This crate owns the relay's IO: admitting legs by ticket (`ticket`, the `assist-ticket`
//! crate), the session's task that polls both legs and forwards inline (`relay`), the WebSocket
//! and QUIC transports (`leg`, `quic`) and its metrics. The wire codecs and every per-session
//! decision are pure code in `assist-relay-proto` (`session`) and `assist-ws`; the client side of
//! a leg is `assist-client`; the HTTP upgrade to WebSocket happens in `assistd`, which takes the
//! TLS stream back out of hyper and hands it to [`Relay::run_leg`].
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod config;
pub mod leg;
pub mod metrics;
pub mod quic;
pub mod relay;
pub mod tls;

/// Tickets are their own crate (the load generator mints them too); `crate::ticket` names it.
pub use assist_ticket as ticket;
pub use config::RelayConfig;
pub use relay::{Admission, AdmitError, Relay, SessionReport};
pub use ticket::{RelayIdentity, Role, TicketAuthority, TicketClaims};
