//! `GET /v1/relay`: the WebSocket upgrade into a relay leg. The ticket is checked before the
//! upgrade, so a bad one gets an HTTP answer with a Graph-shaped error instead of a socket.

use assist_graph::{GraphError, GraphErrorKind};
use assist_relay::AdmitError;
use axum::extract::{Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use hyper_util::rt::TokioIo;

use crate::api::ApiError;
use crate::state::AppState;

fn ticket_from(req: &Request) -> Option<String> {
    if let Some(v) = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
    {
        if let Some(t) = v
            .strip_prefix("Bearer ")
            .or_else(|| v.strip_prefix("bearer "))
        {
            return Some(t.trim().to_owned());
        }
    }
    req.uri().query().and_then(|q| {
        q.split('&')
            .filter_map(|p| p.split_once('='))
            .find(|(k, _)| *k == "ticket")
            .map(|(_, v)| v.to_owned())
    })
}

fn header_has(req: &Request, name: header::HeaderName, token: &str) -> bool {
    req.headers()
        .get_all(name)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| v.split(',').any(|t| t.trim().eq_ignore_ascii_case(token)))
}

fn refuse(kind: GraphErrorKind, code: &str, message: String) -> Response {
    // Graph's shape, with the relay's own stable code (see docs/protocol.md).
    let mut resp = ApiError(GraphError::new(kind, message)).into_response();
    resp.headers_mut().insert(
        "x-assist-relay-error",
        HeaderValue::from_str(code).unwrap_or(HeaderValue::from_static("error")),
    );
    resp
}

/// Upgrades to a relay leg.
pub async fn upgrade(State(state): State<AppState>, mut req: Request) -> Response {
    let Some(relay) = state.relay.clone() else {
        return refuse(
            GraphErrorKind::NotFound,
            "RelayDisabled",
            "This node runs no relay.".into(),
        );
    };
    let is_upgrade = header_has(&req, header::CONNECTION, "upgrade")
        && header_has(&req, header::UPGRADE, "websocket");
    let version_ok = req
        .headers()
        .get(header::SEC_WEBSOCKET_VERSION)
        .is_some_and(|v| v == "13");
    let key = req
        .headers()
        .get(header::SEC_WEBSOCKET_KEY)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let (true, true, Some(key)) = (is_upgrade, version_ok, key) else {
        return refuse(
            GraphErrorKind::BadRequest,
            "NotWebSocket",
            "GET /v1/relay must be a WebSocket upgrade (version 13) carrying a relay ticket."
                .into(),
        );
    };
    let Some(ticket) = ticket_from(&req) else {
        return refuse(
            GraphErrorKind::Unauthenticated,
            "InvalidRelayTicket",
            "No relay ticket was presented.".into(),
        );
    };
    let admission = match relay.admit(&ticket) {
        Ok(a) => a,
        Err(e @ AdmitError::BadTicket(_)) => {
            return refuse(
                GraphErrorKind::Unauthenticated,
                "InvalidRelayTicket",
                e.to_string(),
            )
        }
        Err(e @ AdmitError::TicketUsed) => {
            return refuse(GraphErrorKind::Conflict, "RelayTicketUsed", e.to_string())
        }
        Err(e) => return refuse(GraphErrorKind::Unavailable, "RelayFull", e.to_string()),
    };
    let on_upgrade = hyper::upgrade::on(&mut req);
    let relay2 = relay.clone();
    relay.tracker().spawn(async move {
        match on_upgrade.await {
            Ok(upgraded) => {
                let max = relay2.config().max_frame_bytes;
                let (reader, writer) =
                    assist_relay::leg::websocket(Box::new(TokioIo::new(upgraded)), max);
                relay2.run_leg(admission, reader, writer).await;
            }
            Err(e) => {
                tracing::debug!(error = %e, "relay upgrade failed");
                relay2.abandon(admission);
            }
        }
    });
    let mut resp = StatusCode::SWITCHING_PROTOCOLS.into_response();
    let h = resp.headers_mut();
    h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    h.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
    if let Ok(v) = HeaderValue::from_str(&assist_relay_proto::ws::accept_key(&key)) {
        h.insert(header::SEC_WEBSOCKET_ACCEPT, v);
    }
    resp
}
