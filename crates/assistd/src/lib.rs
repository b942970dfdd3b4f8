//! `assistd`: the Assist server.
//!
//! This crate wires the IO: configuration, TLS, the HTTPS listener (admin API today; WSS
//! signalling and relay next), the metrics listener, and shutdown. The decisions live in the
//! pure crates (`assist-graph` for Graph shapes; policy and session logic to come), durable data
//! in `assist-store`, token checks in `assist-identity`.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod admin;
pub mod admission;
pub mod api;
pub mod config;
pub mod facts;
pub mod health;
pub mod keys;
pub mod logging;
pub mod metrics;
mod relay_node;
pub mod relay_ws;
pub mod retention;
pub mod server;
pub mod sign_in;
pub mod signal;
pub mod state;
pub mod tls;
pub mod web;
pub mod ws_upgrade;

pub use config::Settings;
pub use server::{start, RunningServer};
