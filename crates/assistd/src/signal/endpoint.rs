//! `GET /v1/signal`: the WebSocket upgrade into a signalling connection. A token in the
//! `Authorization` header is checked before the upgrade (401 in Graph's shape if bad); without
//! one, the first message must be `{"type":"authenticate","token":"…"}` within 10 s, else the
//! connection is closed with 4401.

use assist_graph::{GraphError, GraphErrorKind};
use axum::extract::{Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use hyper_util::rt::TokioIo;
use std::time::Duration;
use tokio::sync::mpsc;

use super::conn::{self, Inbound, Outbound};
use super::{party_for, SignalHub};
use crate::api::ApiError;
use crate::state::AppState;

/// How long a connection without a header token has to authenticate.
pub const AUTH_TIMEOUT: Duration = Duration::from_secs(10);

fn has_token(req: &Request, name: header::HeaderName, token: &str) -> bool {
    req.headers()
        .get_all(name)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| v.split(',').any(|t| t.trim().eq_ignore_ascii_case(token)))
}

/// Upgrades to a signalling connection.
pub async fn upgrade(State(state): State<AppState>, mut req: Request) -> Response {
    let Some(hub) = state.signal.clone() else {
        return ApiError(GraphError::not_found(
            "This node runs no signalling service.",
        ))
        .into_response();
    };
    let key = req
        .headers()
        .get(header::SEC_WEBSOCKET_KEY)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let ok = has_token(&req, header::CONNECTION, "upgrade")
        && has_token(&req, header::UPGRADE, "websocket")
        && req
            .headers()
            .get(header::SEC_WEBSOCKET_VERSION)
            .is_some_and(|v| v == "13");
    let (true, Some(key)) = (ok, key) else {
        return ApiError(GraphError::bad_request(
            "GET /v1/signal must be a WebSocket upgrade (version 13).",
        ))
        .into_response();
    };
    // A header token is validated now, so a bad one gets an HTTP answer.
    let header_identity = match req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
    {
        Some(v) => {
            let token = v
                .strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
                .unwrap_or("")
                .trim();
            match state.validator.validate(token).await {
                Ok(id) => Some(id),
                Err(e) => {
                    return ApiError(GraphError::new(
                        GraphErrorKind::Unauthenticated,
                        format!("Access token validation failure: {e}."),
                    ))
                    .into_response()
                }
            }
        }
        None => None,
    };
    let on_upgrade = hyper::upgrade::on(&mut req);
    let tracker = state.relay.as_ref().map(|r| r.tracker().clone());
    let task = async move {
        let Ok(upgraded) = on_upgrade.await else {
            return;
        };
        serve(state, hub, header_identity, TokioIo::new(upgraded)).await;
    };
    match tracker {
        Some(t) => {
            t.spawn(task);
        }
        None => {
            tokio::spawn(task);
        }
    }
    let mut resp = StatusCode::SWITCHING_PROTOCOLS.into_response();
    let h = resp.headers_mut();
    h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    h.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
    if let Ok(v) = HeaderValue::from_str(&assist_relay_proto::ws::accept_key(&key)) {
        h.insert(header::SEC_WEBSOCKET_ACCEPT, v);
    }
    resp
}

async fn serve<S>(
    state: AppState,
    hub: SignalHub,
    identity: Option<assist_identity::Identity>,
    stream: S,
) where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin + 'static,
{
    let (in_tx, mut in_rx) = mpsc::channel(64);
    let (out_tx, out_rx) = mpsc::channel(conn::OUTBOUND_QUEUE);
    let io = tokio::spawn(conn::run(stream, in_tx, out_rx));
    let close = |code: u16, reason: &str| Outbound::Close(code, reason.to_owned());

    let identity = match identity {
        Some(id) => id,
        None => {
            // First message must authenticate.
            let first = tokio::time::timeout(AUTH_TIMEOUT, in_rx.recv()).await;
            let token = match first {
                Ok(Some(Inbound::Text(t))) => {
                    serde_json::from_str::<assist_session::message::Authenticate>(&t)
                        .ok()
                        .map(|a| a.token)
                }
                _ => None,
            };
            let validated = match token {
                Some(t) => state.validator.validate(&t).await.ok(),
                None => None,
            };
            match validated {
                Some(id) => id,
                None => {
                    let _ = out_tx.send(close(4401, "unauthorized")).await;
                    let _ = io.await;
                    return;
                }
            }
        }
    };
    let party = match party_for(&state.store, &identity).await {
        Ok(p) => p,
        Err(e) => {
            tracing::error!(error = %e, "loading the caller's directory record failed");
            let _ = out_tx.send(close(1011, "internal error")).await;
            let _ = io.await;
            return;
        }
    };
    if let Some(user_id) = &party.user_id {
        hub.note_token_groups(&identity, user_id);
    }
    let Some(conn_id) = hub.connect(party, out_tx.clone()).await else {
        let _ = out_tx
            .send(close(conn::close::GOING_AWAY, "server shutting down"))
            .await;
        return;
    };
    while let Some(msg) = in_rx.recv().await {
        match msg {
            Inbound::Text(t) => hub.text(conn_id, t).await,
            Inbound::RateLimited => {}
            Inbound::Closed(_) => break,
        }
    }
    hub.disconnect(conn_id).await;
    let _ = io.await;
}
