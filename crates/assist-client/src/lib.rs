//! Clients of an Assist server, as `docs/protocol.md` describes them.
//!
//! - [`signal`]: the signalling connection (`wss://HOST/v1/signal`), JSON messages both ways;
//! - [`relay`]: one relay leg of an active session, over WSS (`/v1/relay`) or QUIC;
//! - [`auth`]: the token to connect with: given (`ASSIST_TOKEN`, a token file) or from a device
//!   sign-in (RFC 8628) against the provider the server names, and its refresh;
//! - [`tls`]: a TLS configuration trusting exactly a PEM file's certificates (the development
//!   server's self-signed one, or a private CA's);
//! - [`wss`]: the WebSocket client handshake both WSS clients share.
//!
//! The WebSocket framing is `assist-ws` and the relay's frames are `assist-relay-proto`; this
//! crate adds the sockets (tokio, rustls, quinn). The `assist` CLI, the sharer agent
//! (`assist-agent`), the load generator and the server's integration tests use it.
//!
//! # Example
//!
//! Ask for a code as a helper, then join the relay once the session is active:
//!
//! ```no_run
//! use assist_client::signal::{SignalClient, SignalEvent};
//! use serde_json::json;
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let tls = assist_client::tls::client_config("assist-data/tls/cert.pem".as_ref())?;
//! let token = assist_client::auth::given_token(std::env::var("ASSIST_TOKEN").ok().as_deref(), None)?
//!     .ok_or("set ASSIST_TOKEN")?;
//! let addr = "127.0.0.1:8443".parse()?;
//! let mut signal = SignalClient::connect(addr, "localhost", tls.clone(), Some(&token)).await?;
//! signal.send(&json!({"id": 1, "type": "requestCode"})).await?;
//! while let SignalEvent::Message(m) = signal.recv().await? {
//!     match m["type"].as_str() {
//!         Some("codeIssued") => println!("read out the code {}", m["code"]),
//!         Some("sessionActive") => {
//!             let ticket = m["relay"]["ticket"].as_str().unwrap_or_default();
//!             let (_send, mut recv) =
//!                 assist_client::relay::connect_wss(addr, "localhost", tls.clone(), ticket).await?;
//!             let first = recv.recv().await?; // the relay's `paired`, then the sharer's screen
//!             println!("{first:?}");
//!             break;
//!         }
//!         _ => {}
//!     }
//! }
//! # Ok(())
//! # }
//! ```
#![forbid(unsafe_code)]

pub mod auth;
mod error;
pub mod relay;
pub mod signal;
pub mod tls;
pub mod wss;

pub use error::ClientError;
