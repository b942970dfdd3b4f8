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

use super::conn::{self, Flow, Inbox, Outbound};
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
    // A store that is away or busy answers 503 `ServiceUnavailable` (with `Retry-After`), as
    // the admin API does, which logs it as a warning; any other failure is a 500.
    let party = party_for(&state.store, identity).await.map_err(|e| {
        if !e.is_transient() {
            tracing::error!(error = %e, "loading the caller's directory record failed");
        }
        ApiError::from(e).0
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

fn ack(id: &RequestId) -> String {
    serde_json::json!({"type": "ack", "id": id}).to_string()
}

fn same_principal(a: &Identity, b: &Identity) -> bool {
    a.tenant_id == b.tenant_id && a.object_id == b.object_id && a.is_device == b.is_device
}

/// Where a connection stands. One per connection, moved never: boxing the identity would
/// buy nothing.
#[allow(clippy::large_enum_variant)]
enum Phase {
    /// No token yet: the first message must be `authenticate`, before `until`.
    Authenticating { until: tokio::time::Instant },
    /// Registered with the broker as `conn`, signed in as `identity` until `expires`.
    Registered {
        conn: ConnId,
        identity: Identity,
        expires: tokio::time::Instant,
    },
}

/// A signalling connection's handler, on the connection's own task: it authenticates (and
/// re-authenticates) and hands every other message to the driver.
struct Signalling {
    state: AppState,
    hub: SignalHub,
    /// The connection's outbound queue, given to the driver when it registers.
    out_tx: mpsc::Sender<Outbound>,
    leeway: Duration,
    phase: Phase,
}

impl Signalling {
    /// The first message, which must authenticate.
    async fn authenticate(&mut self, text: &str) -> Flow {
        let Some(auth) = serde_json::from_str::<Authenticate>(text).ok() else {
            return Flow::Close(CloseCode::Unauthorized);
        };
        let Ok(identity) = self.state.validator.validate(&auth.token).await else {
            return Flow::Close(CloseCode::Unauthorized);
        };
        match register(&self.state, &self.hub, &identity, &self.out_tx).await {
            Ok(conn) => {
                self.phase = Phase::Registered {
                    conn,
                    expires: expiry(&identity, self.leeway),
                    identity,
                };
                match auth.id {
                    Some(id) => Flow::Reply(ack(&id)),
                    None => Flow::Continue,
                }
            }
            Err(e) => Flow::Close(match e.status() {
                503 => CloseCode::GoingAway,
                _ => CloseCode::Internal,
            }),
        }
    }

    /// A later `authenticate`: a fresh token for the same tenant and user (or device).
    async fn reauthenticate(&mut self, auth: Result<Authenticate, ()>) -> Flow {
        let fresh = match &auth {
            Ok(a) => self.state.validator.validate(&a.token).await.ok(),
            Err(()) => None,
        };
        let Phase::Registered {
            identity, expires, ..
        } = &mut self.phase
        else {
            return Flow::Close(CloseCode::Unauthorized);
        };
        match fresh {
            Some(fresh) if same_principal(identity, &fresh) => {
                // The fresh token's groups replace the old one's in policy facts.
                if !fresh.is_device {
                    match crate::facts::ensure_user(&self.state.store, &fresh).await {
                        Ok(u) => {
                            if let Some(uid) = u["id"].as_str() {
                                self.hub.note_token_groups(&fresh, uid);
                            }
                        }
                        Err(e) => {
                            tracing::warn!(error = %e, "re-authentication: the directory record could not be read")
                        }
                    }
                }
                *expires = expiry(&fresh, self.leeway);
                *identity = fresh;
                match auth.ok().and_then(|a| a.id) {
                    Some(id) => Flow::Reply(ack(&id)),
                    None => Flow::Continue,
                }
            }
            _ => Flow::Close(CloseCode::Unauthorized),
        }
    }
}

impl Inbox for Signalling {
    async fn text(&mut self, text: String) -> Flow {
        let conn = match &self.phase {
            Phase::Authenticating { .. } => return self.authenticate(&text).await,
            Phase::Registered { conn, .. } => *conn,
        };
        match authenticate_message(&text) {
            // Straight to the driver: no task in between.
            None => {
                self.hub.text(conn, text).await;
                Flow::Continue
            }
            Some(auth) => self.reauthenticate(auth).await,
        }
    }

    fn deadline(&self) -> Option<(tokio::time::Instant, CloseCode)> {
        match &self.phase {
            Phase::Authenticating { until } => Some((*until, CloseCode::Unauthorized)),
            Phase::Registered { expires, .. } => Some((*expires, CloseCode::Unauthorized)),
        }
    }
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
    let leeway = state.validator.leeway();
    let phase = match registered {
        Some((conn, identity)) => Phase::Registered {
            conn,
            expires: expiry(&identity, leeway),
            identity,
        },
        None => Phase::Authenticating {
            until: tokio::time::Instant::now() + AUTH_TIMEOUT,
        },
    };
    let mut inbox = Signalling {
        state,
        hub: hub.clone(),
        out_tx,
        leeway,
        phase,
    };
    conn::run(stream, &mut inbox, out_rx).await;
    if let Phase::Registered { conn, .. } = inbox.phase {
        hub.disconnect(conn).await;
    }
}
