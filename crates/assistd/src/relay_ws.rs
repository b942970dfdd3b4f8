//! `GET /v1/relay`: the WebSocket upgrade into a relay leg. The ticket is checked before the
//! upgrade, so a bad one gets an HTTP answer with a Graph-shaped error instead of a socket.

use assist_graph::{GraphError, GraphErrorKind};
use assist_relay::AdmitError;
use axum::extract::{Request, State};
use axum::http::HeaderValue;
use axum::response::{IntoResponse, Response};
use hyper::upgrade::Upgraded;
use hyper_util::rt::TokioIo;

use crate::api::ApiError;
use crate::state::AppState;
use crate::ws_upgrade::{bearer_token, WsUpgrade};

fn ticket_from(req: &Request) -> Option<String> {
    if let Some(t) = bearer_token(req).filter(|t| !t.is_empty()) {
        return Some(t.to_owned());
    }
    req.uri().query().and_then(|q| {
        q.split('&')
            .filter_map(|p| p.split_once('='))
            .find(|(k, _)| *k == "ticket")
            .map(|(_, v)| v.to_owned())
    })
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

/// The TLS stream the HTTPS server hands hyper (`server::serve_http`).
type TlsIo = TokioIo<assist_relay::tls::ServerTls<tokio::net::TcpStream>>;

/// The relay leg over an upgraded connection: the TLS (or plain TCP) stream taken back out of
/// hyper's `Upgraded`, with the bytes hyper had read past the request, so every read and write
/// goes to the stream directly; hyper's wrapper only if the stream is of another type. A TLS 1.3
/// stream leaves rustls too: the relay runs its own record layer over the socket
/// (`assist_relay::tls`), unless rustls still holds data of the connection.
fn into_leg(
    upgraded: Upgraded,
    relay: &assist_relay::Relay,
) -> std::io::Result<assist_relay::leg::Leg> {
    let max_payload = relay.config().max_frame_bytes;
    let upgraded = match upgraded.downcast::<TlsIo>() {
        Ok(parts) => {
            let stream: Box<dyn assist_relay::leg::Stream> =
                match assist_relay::tls::take_over(parts.io.into_inner())? {
                    assist_relay::tls::TakeOver::Records(records) => {
                        relay.metrics().tls_layer("relay");
                        Box::new(records)
                    }
                    assist_relay::tls::TakeOver::Kept(tls, why) => {
                        tracing::debug!(?why, "relay leg keeps rustls' record layer");
                        relay.metrics().tls_layer(match why {
                            assist_relay::tls::Kept::NotTls13 => "rustls_tls12",
                            assist_relay::tls::Kept::Buffered => "rustls_buffered",
                        });
                        tls
                    }
                };
            return Ok(assist_relay::leg::websocket_with(
                stream,
                parts.read_buf,
                max_payload,
            ));
        }
        Err(u) => u,
    };
    Ok(
        match upgraded.downcast::<TokioIo<tokio::net::TcpStream>>() {
            Ok(parts) => assist_relay::leg::websocket_with(
                Box::new(parts.io.into_inner()),
                parts.read_buf,
                max_payload,
            ),
            Err(u) => {
                tracing::debug!("relay leg over hyper's upgraded stream (not downcast)");
                assist_relay::leg::websocket(Box::new(TokioIo::new(u)), max_payload)
            }
        },
    )
}

/// Upgrades to a relay leg.
pub async fn upgrade(State(state): State<AppState>, req: Request) -> Response {
    serve(state.relay.clone(), req).await
}

/// Upgrades to a leg of `relay`: `None` (a broker-only node) answers 404 `RelayDisabled`.
pub async fn serve(relay: Option<assist_relay::Relay>, mut req: Request) -> Response {
    let Some(relay) = relay else {
        return refuse(
            GraphErrorKind::NotFound,
            "RelayDisabled",
            "This node runs no relay.".into(),
        );
    };
    let Some(upgrade) = WsUpgrade::from_request(&mut req) else {
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
        Err(e @ (AdmitError::Draining | AdmitError::ShuttingDown)) => {
            return refuse(GraphErrorKind::Unavailable, "RelayDraining", e.to_string())
        }
        Err(e) => return refuse(GraphErrorKind::Unavailable, "RelayFull", e.to_string()),
    };
    let (resp, upgraded) = upgrade.accept_upgraded();
    let relay2 = relay.clone();
    relay.tracker().spawn(async move {
        match upgraded.await {
            Ok(upgraded) => match into_leg(upgraded, &relay2) {
                Ok(leg) => relay2.run_leg(admission, leg).await,
                Err(e) => {
                    tracing::warn!(error = %e, "relay leg lost taking over its TLS keys");
                    relay2.abandon(admission);
                }
            },
            Err(e) => {
                tracing::debug!(error = %e, "relay upgrade failed");
                relay2.abandon(admission);
            }
        }
    });
    resp
}
