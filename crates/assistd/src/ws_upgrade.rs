//! The WebSocket upgrade (RFC 6455, version 13) shared by `/v1/signal` and `/v1/relay`: the
//! request check, the bearer token, the `101 Switching Protocols` answer and the upgraded
//! stream. What each endpoint checks before it answers `101` (token, ticket) is its own.

use axum::extract::Request;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use hyper::upgrade::{OnUpgrade, Upgraded};
use hyper_util::rt::TokioIo;

/// The stream of an upgraded connection.
pub type UpgradedStream = TokioIo<Upgraded>;

/// A valid WebSocket upgrade request, not yet answered.
pub struct WsUpgrade {
    key: String,
    on_upgrade: OnUpgrade,
}

fn header_has(req: &Request, name: header::HeaderName, token: &str) -> bool {
    req.headers()
        .get_all(name)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| v.split(',').any(|t| t.trim().eq_ignore_ascii_case(token)))
}

/// The token of an `Authorization: Bearer …` header, if the request has one (empty if the
/// scheme is not `Bearer`).
pub fn bearer_token(req: &Request) -> Option<&str> {
    let v = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())?;
    Some(
        v.strip_prefix("Bearer ")
            .or_else(|| v.strip_prefix("bearer "))
            .unwrap_or("")
            .trim(),
    )
}

impl WsUpgrade {
    /// The upgrade `req` asks for, if it is a WebSocket upgrade: `Connection: upgrade`,
    /// `Upgrade: websocket`, `Sec-WebSocket-Version: 13` and a `Sec-WebSocket-Key`.
    pub fn from_request(req: &mut Request) -> Option<WsUpgrade> {
        let ok = header_has(req, header::CONNECTION, "upgrade")
            && header_has(req, header::UPGRADE, "websocket")
            && req
                .headers()
                .get(header::SEC_WEBSOCKET_VERSION)
                .is_some_and(|v| v == "13");
        if !ok {
            return None;
        }
        let key = req
            .headers()
            .get(header::SEC_WEBSOCKET_KEY)
            .and_then(|v| v.to_str().ok())?
            .to_owned();
        Some(WsUpgrade {
            key,
            on_upgrade: hyper::upgrade::on(req),
        })
    }

    /// The `101 Switching Protocols` answer, and the stream it leads to once sent (an error if
    /// the client went away first). Spawn the stream's use; return the answer.
    pub fn accept(
        self,
    ) -> (
        Response,
        impl std::future::Future<Output = Result<UpgradedStream, hyper::Error>> + Send + 'static,
    ) {
        let (resp, upgraded) = self.accept_upgraded();
        (resp, async move { upgraded.await.map(TokioIo::new) })
    }

    /// Like [`WsUpgrade::accept`], with hyper's [`Upgraded`] itself, so the caller can take the
    /// original stream back out of it ([`Upgraded::downcast`]).
    pub fn accept_upgraded(
        self,
    ) -> (
        Response,
        impl std::future::Future<Output = Result<Upgraded, hyper::Error>> + Send + 'static,
    ) {
        let mut resp = StatusCode::SWITCHING_PROTOCOLS.into_response();
        let h = resp.headers_mut();
        h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
        h.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
        if let Ok(v) = HeaderValue::from_str(&assist_ws::accept_key(&self.key)) {
            h.insert(header::SEC_WEBSOCKET_ACCEPT, v);
        }
        (resp, self.on_upgrade)
    }
}
