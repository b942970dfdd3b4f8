//! The error every client in this crate returns.

use assist_relay_proto::frame::FrameError;
use assist_ws::WsError;

/// Client failures: transport, handshake and protocol errors of the relay and signalling clients.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// Transport failure.
    #[error("io: {0}")]
    Io(#[from] std::io::Error),
    /// The server refused the WebSocket upgrade over HTTP (the relay: 401, 409, 503; signalling: 401) with a Graph error body.
    #[error("relay refused the join: HTTP {status}: {body}")]
    Rejected {
        /// HTTP status.
        status: u16,
        /// Response body.
        body: String,
    },
    /// The server's handshake answer was not a valid WebSocket upgrade.
    #[error("bad handshake: {0}")]
    Handshake(String),
    /// A malformed relay frame.
    #[error("frame: {0}")]
    Frame(#[from] FrameError),
    /// A malformed WebSocket frame from the server.
    #[error("websocket: {0}")]
    Ws(#[from] WsError),
    /// QUIC failure.
    #[error("quic: {0}")]
    Quic(String),
}
