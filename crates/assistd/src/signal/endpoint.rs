//! `GET /v1/signal`: the WebSocket upgrade into a signalling connection. A token in the
//! `Authorization` header is checked before the upgrade (401 in Graph's shape if bad), and the
//! connection is registered with the broker before the `101` goes out, so a device is reachable
//! as soon as its upgrade completes. Without a header token, the first message must be
//! `{"type":"authenticate","token":"…"}` within 10 s, else the connection is closed with 4401.
//!
//! A connection lives as long as its token: at `exp` (plus the validator's leeway) it is closed
//! with 4401, unless the app has sent `authenticate` with a fresh token for the same tenant and
//! user, whose expiry then counts. A token for anyone else closes the connection with 4401.

use assist_graph::{GraphError, GraphErrorKind};
use axum::extract::{Request, State};
use axum::response::{IntoResponse, Response};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::sync::mpsc;

use super::conn::{self, Inbound, Outbound};
use super::{party_for, SignalHub};
use crate::api::ApiError;
use crate::state::AppState;
use crate::ws_upgrade::{bearer_token, WsUpgrade};
use assist_identity::Identity;
use assist_session::message::{Authenticate, CloseCode, RequestId};
use assist_session::ConnId;

/// How long a connection without a header token has to authenticate.
pub const AUTH_TIMEOUT: Duration = Duration::from_secs(10);

/// Upgrades to a signalling connection.
pub async fn upgrade(State(state): State<AppState>, mut req: Request) -> Response {
    let Some(hub) = state.signal.clone() else {
        return ApiError(GraphError::not_found(
            "This node runs no signalling service.",
        ))
        .into_response();
    };
    let Some(upgrade) = WsUpgrade::from_request(&mut req) else {
        return ApiError(GraphError::bad_request(
            "GET /v1/signal must be a WebSocket upgrade (version 13).",
        ))
        .into_response();
    };
    // A header token is validated now, so a bad one gets an HTTP answer.
    let header_identity = match bearer_token(&req) {
        Some(token) => match state.validator.validate(token).await {
            Ok(id) => Some(id),
            Err(e) => {
                return ApiError(GraphError::new(
                    GraphErrorKind::Unauthenticated,
                    format!("Access token validation failure: {e}."),
                ))
                .into_response()
            }
        },
        None => None,
    };
    // A header token: the connection is the broker's before the client hears `101`.
    let (out_tx, out_rx) = mpsc::channel(conn::OUTBOUND_QUEUE);
    let registered = match header_identity {
        Some(identity) => match register(&state, &hub, &identity, &out_tx).await {
            Ok(conn_id) => Some((conn_id, identity)),
            Err(e) => return ApiError(e).into_response(),
        },
        None => None,
    };
    let (resp, upgraded) = upgrade.accept();
    let tracker = state.relay.as_ref().map(|r| r.tracker().clone());
    let task = async move {
        let Ok(stream) = upgraded.await else {
            if let Some((conn_id, _)) = registered {
                hub.disconnect(conn_id).await;
            }
            return;
        };
        serve(state, hub, registered, stream, out_tx, out_rx).await;
    };
    match tracker {
        Some(t) => {
            t.spawn(task);
        }
        None => {
            tokio::spawn(task);
        }
    }
    resp
}

/// Loads the caller's directory record and registers the connection with the broker.
async fn register(
    state: &AppState,
    hub: &SignalHub,
    identity: &Identity,
    out: &mpsc::Sender<Outbound>,
) -> Result<ConnId, GraphError> {
    let party = party_for(&state.store, identity).await.map_err(|e| {
        tracing::error!(error = %e, "loading the caller's directory record failed");
        GraphError::internal("Loading the caller's directory record failed.")
    })?;
    if let Some(user_id) = &party.user_id {
        hub.note_token_groups(identity, user_id);
    }
    hub.connect(party, out.clone()).await.ok_or_else(|| {
        GraphError::new(
            GraphErrorKind::Unavailable,
            "The signalling service is shutting down.",
        )
    })
}

/// When a connection signed in with `identity` must be closed: its `exp` plus the leeway the
/// validator allows, as a point on the monotonic clock.
fn expiry(identity: &Identity, leeway: Duration) -> tokio::time::Instant {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    let at = Duration::from_secs(identity.expires_at).saturating_add(leeway);
    tokio::time::Instant::now() + at.saturating_sub(now)
}

/// An `authenticate` message, if `text` is one (`Err` if it is one that cannot be read).
fn authenticate_message(text: &str) -> Option<Result<Authenticate, ()>> {
    // Cheap test first: most messages are not `authenticate`.
    if !text.contains("authenticate") {
        return None;
    }
    let value: serde_json::Value = serde_json::from_str(text).ok()?;
    if value.get("type").and_then(|t| t.as_str()) != Some("authenticate") {
        return None;
    }
    Some(serde_json::from_value(value).map_err(|_| ()))
}

fn ack(id: &RequestId) -> Outbound {
    Outbound::Text(serde_json::json!({"type": "ack", "id": id}).to_string())
}

fn same_principal(a: &Identity, b: &Identity) -> bool {
    a.tenant_id == b.tenant_id && a.object_id == b.object_id && a.is_device == b.is_device
}

async fn serve<S>(
    state: AppState,
    hub: SignalHub,
    registered: Option<(ConnId, Identity)>,
    stream: S,
    out_tx: mpsc::Sender<Outbound>,
    out_rx: mpsc::Receiver<Outbound>,
) where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin + 'static,
{
    let (in_tx, mut in_rx) = mpsc::channel(64);
    let io = tokio::spawn(conn::run(stream, in_tx, out_rx));

    let (conn_id, mut identity) = match registered {
        Some(r) => r,
        None => {
            // First message must authenticate.
            let first = tokio::time::timeout(AUTH_TIMEOUT, in_rx.recv()).await;
            let auth = match first {
                Ok(Some(Inbound::Text(t))) => serde_json::from_str::<Authenticate>(&t).ok(),
                _ => None,
            };
            let validated = match &auth {
                Some(a) => state.validator.validate(&a.token).await.ok(),
                None => None,
            };
            let Some(identity) = validated else {
                let _ = out_tx.send(Outbound::Close(CloseCode::Unauthorized)).await;
                drop(in_rx);
                let _ = io.await;
                return;
            };
            match register(&state, &hub, &identity, &out_tx).await {
                Ok(conn_id) => {
                    if let Some(id) = auth.and_then(|a| a.id) {
                        let _ = out_tx.send(ack(&id)).await;
                    }
                    (conn_id, identity)
                }
                Err(e) => {
                    let code = match e.status() {
                        503 => CloseCode::GoingAway,
                        _ => CloseCode::Internal,
                    };
                    let _ = out_tx.send(Outbound::Close(code)).await;
                    drop(in_rx);
                    let _ = io.await;
                    return;
                }
            }
        }
    };
    let leeway = state.validator.leeway();
    let mut expires = expiry(&identity, leeway);
    loop {
        let msg = tokio::select! {
            msg = in_rx.recv() => msg,
            _ = tokio::time::sleep_until(expires) => {
                let _ = out_tx.send(Outbound::Close(CloseCode::Unauthorized)).await;
                break;
            }
        };
        match msg {
            Some(Inbound::Text(t)) => match authenticate_message(&t) {
                None => hub.text(conn_id, t).await,
                Some(auth) => {
                    // A fresh token: it must name the same tenant and user (or device).
                    let fresh = match &auth {
                        Ok(a) => state.validator.validate(&a.token).await.ok(),
                        Err(()) => None,
                    };
                    match fresh {
                        Some(fresh) if same_principal(&identity, &fresh) => {
                            // The fresh token's groups replace the old one's in policy facts.
                            if !fresh.is_device {
                                match crate::facts::ensure_user(&state.store, &fresh).await {
                                    Ok(u) => {
                                        if let Some(uid) = u["id"].as_str() {
                                            hub.note_token_groups(&fresh, uid);
                                        }
                                    }
                                    Err(e) => {
                                        tracing::warn!(error = %e, "re-authentication: the directory record could not be read")
                                    }
                                }
                            }
                            identity = fresh;
                            expires = expiry(&identity, leeway);
                            if let Some(id) = auth.ok().and_then(|a| a.id) {
                                let _ = out_tx.send(ack(&id)).await;
                            }
                        }
                        _ => {
                            let _ = out_tx.send(Outbound::Close(CloseCode::Unauthorized)).await;
                            break;
                        }
                    }
                }
            },
            Some(Inbound::RateLimited) => {}
            Some(Inbound::Closed(_)) | None => break,
        }
    }
    // Nobody reads inbound messages any more: the IO task must not wait to deliver one
    // (it would never write the close frame queued for it).
    drop(in_rx);
    hub.disconnect(conn_id).await;
    let _ = io.await;
}
