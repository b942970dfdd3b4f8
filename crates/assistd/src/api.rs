//! The HTTP edge of the admin API: Graph-shaped errors, request ids, one log line and metrics
//! per request, bearer-token authentication and bounded JSON bodies.

use assist_graph::{GraphError, GraphErrorKind};
use assist_identity::{Identity, TokenError};
use axum::body::Body;
use axum::extract::{FromRequestParts, MatchedPath, Request, State};
use axum::http::{header, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use std::time::Instant;

use crate::metrics::HttpMetrics;
use crate::state::AppState;

/// Write requests over this size are refused with 413, as Graph does.
pub const MAX_BODY_BYTES: usize = 4 * 1024 * 1024;
/// A request whose header section (names, values and their separators) is larger is refused
/// with a Graph-shaped 431. Tokens are at most 16 KiB; browsers send a few KiB.
pub const MAX_HEADER_BYTES: usize = 64 * 1024;
/// A request with more headers than this is refused with a Graph-shaped 431.
pub const MAX_HEADERS: usize = 100;
/// `Strict-Transport-Security` on every HTTPS answer: a year, this host only.
pub const HSTS: &str = "max-age=31536000";

tokio::task_local! {
    static REQUEST_CONTEXT: RequestContext;
}

#[derive(Clone)]
struct RequestContext {
    request_id: String,
    client_request_id: Option<String>,
}

/// An error answered in Graph's shape, with the request's id and date in `innerError`.
#[derive(Debug)]
pub struct ApiError(pub GraphError);

impl From<GraphError> for ApiError {
    fn from(e: GraphError) -> Self {
        Self(e)
    }
}

/// `Retry-After` (seconds) on every 503: about how long a database restart or a pool wait takes.
pub const RETRY_AFTER_SECS: u32 = 5;

impl From<assist_store::StoreError> for ApiError {
    fn from(e: assist_store::StoreError) -> Self {
        if e.is_transient() {
            // One line per request while the database is away or busy (SQLite's write lock held
            // past the busy timeout, a PostgreSQL serialization failure): a warning, not an error
            // (the records writer logs an outage itself, once). The client may simply retry.
            tracing::warn!(error = %e, "store unavailable or busy; answering 503");
            return Self(GraphError::new(
                GraphErrorKind::Unavailable,
                "The service's database is unavailable or busy; try again shortly.",
            ));
        }
        tracing::error!(error = %e, "store error");
        Self(GraphError::internal(
            "the service could not complete the request; try again",
        ))
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (request_id, client_request_id) = REQUEST_CONTEXT
            .try_with(|c| (c.request_id.clone(), c.client_request_id.clone()))
            .unwrap_or_else(|_| (String::new(), None));
        let date = assist_store::now_rfc3339();
        let body = self
            .0
            .to_body(&date, &request_id, client_request_id.as_deref());
        let status =
            StatusCode::from_u16(self.0.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let mut resp = (status, axum::Json(body)).into_response();
        if self.0.kind == GraphErrorKind::Unauthenticated {
            resp.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer error=\"invalid_token\""),
            );
        }
        if self.0.kind == GraphErrorKind::Unavailable {
            resp.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(RETRY_AFTER_SECS));
        }
        resp
    }
}

/// A JSON answer with Graph's content type.
pub fn json_response(status: StatusCode, body: serde_json::Value) -> Response {
    let mut resp = (status, axum::Json(body)).into_response();
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json; odata.metadata=minimal; odata.streaming=true; IEEE754Compatible=false; charset=utf-8"),
    );
    resp
}

/// Middleware: gives each request an id (echoed as `request-id`), runs it inside a span and
/// the error context, logs one line with status and latency, and records metrics by route
/// template (never by raw path, so ids never become label values).
pub async fn observe(State(m): State<HttpMetrics>, req: Request, next: Next) -> Response {
    let started = Instant::now();
    let request_id = uuid::Uuid::new_v4().to_string();
    let client_request_id = req
        .headers()
        .get("client-request-id")
        .and_then(|v| v.to_str().ok())
        .filter(|v| v.len() <= 128)
        .map(str::to_owned);
    let method = req.method().clone();
    let path = req.uri().path().to_owned();
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|m| m.as_str().to_owned())
        .unwrap_or_else(|| "unmatched".to_owned());
    let ctx = RequestContext {
        request_id: request_id.clone(),
        client_request_id: client_request_id.clone(),
    };
    let mut resp = REQUEST_CONTEXT
        .scope(ctx, async move {
            match refuse_at_edge(&req) {
                Some(e) => e.into_response(),
                None => next.run(req).await,
            }
        })
        .await;
    let headers = resp.headers_mut();
    headers
        .entry(header::STRICT_TRANSPORT_SECURITY)
        .or_insert(HeaderValue::from_static(HSTS));
    if headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| ct.to_ascii_lowercase().starts_with("application/json"))
    {
        headers.insert(
            header::X_CONTENT_TYPE_OPTIONS,
            HeaderValue::from_static("nosniff"),
        );
    }
    let status = resp.status().as_u16();
    let elapsed = started.elapsed();
    if let Ok(v) = HeaderValue::from_str(&request_id) {
        resp.headers_mut().insert("request-id", v);
    }
    if let Some(Ok(v)) = client_request_id.map(|c| HeaderValue::from_str(&c)) {
        resp.headers_mut().insert("client-request-id", v);
    }
    m.requests
        .with_label_values(&[route.as_str(), method.as_str(), &status.to_string()])
        .inc();
    m.duration
        .with_label_values(&[route.as_str(), method.as_str()])
        .observe(elapsed.as_secs_f64());
    if method == Method::GET && path == "/healthz" && status == 404 {
        // The metrics listener's `/healthz` asks this router for `/healthz` (health.rs), which
        // has no handler here: one 404 per probe, at debug rather than as an info line each time.
        tracing::debug!(target: "assistd::http", status, request_id = %request_id, "self-probe");
        return resp;
    }
    tracing::info!(
        target: "assistd::http",
        %method,
        path = %path,
        status,
        latency_ms = format_args!("{:.2}", elapsed.as_secs_f64() * 1000.0),
        request_id = %request_id,
        "request"
    );
    resp
}

/// What the edge refuses before any handler runs, in Graph's shape: oversized or too many
/// headers (431; hyper's own bare 431 only answers header sections beyond its buffer), and a
/// path that does not percent-decode to UTF-8 free of control characters (400), which would
/// otherwise reach an extractor's plain-text rejection or an identifier lookup.
fn refuse_at_edge(req: &Request) -> Option<ApiError> {
    let headers = req.headers();
    let bytes: usize = headers
        .iter()
        .map(|(k, v)| k.as_str().len() + v.len() + 4)
        .sum();
    if headers.len() > MAX_HEADERS || bytes > MAX_HEADER_BYTES {
        return Some(
            GraphError::new(
                GraphErrorKind::HeadersTooLarge,
                format!(
                    "The request's headers are too large (at most {MAX_HEADERS} headers and \
                     {} KiB).",
                    MAX_HEADER_BYTES / 1024
                ),
            )
            .into(),
        );
    }
    match percent_decoded(req.uri().path()) {
        Some(path) if !path.contains(char::is_control) => None,
        Some(_) => {
            Some(GraphError::bad_request("The request path contains control characters.").into())
        }
        None => Some(
            GraphError::bad_request("The request path is not valid percent-encoded UTF-8.").into(),
        ),
    }
}

/// `path` percent-decoded, if that gives UTF-8 (a stray `%` not followed by two hex digits is
/// kept as is, as the router's extractors do).
fn percent_decoded(path: &str) -> Option<String> {
    let b = path.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let hex = |c: u8| (c as char).to_digit(16);
        match (
            b[i],
            b.get(i + 1).copied().and_then(hex),
            b.get(i + 2).copied().and_then(hex),
        ) {
            (b'%', Some(h), Some(l)) => {
                out.push((h * 16 + l) as u8);
                i += 3;
            }
            (c, _, _) => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8(out).ok()
}

/// The authenticated caller of an admin API request.
pub struct Caller(pub Identity);

impl FromRequestParts<AppState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut http::request::Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let Some(value) = parts.headers.get(header::AUTHORIZATION) else {
            return Err(GraphError::unauthenticated("Access token is empty.").into());
        };
        let token = value
            .to_str()
            .ok()
            .and_then(|v| {
                v.strip_prefix("Bearer ")
                    .or_else(|| v.strip_prefix("bearer "))
            })
            .map(str::trim)
            .ok_or_else(|| {
                GraphError::unauthenticated("The Authorization header must be 'Bearer <token>'.")
            })?;
        match state.validator.validate(token).await {
            Ok(id) => {
                // Signing in makes a user known to the directory (just in time).
                if !id.is_device {
                    crate::facts::ensure_user(&state.store, &id).await?;
                }
                Ok(Caller(id))
            }
            Err(e) => {
                if let TokenError::KeyFetch(detail) = &e {
                    tracing::warn!(%detail, "could not fetch signing keys");
                } else {
                    tracing::debug!(reason = %e, "token refused");
                }
                Err(
                    GraphError::unauthenticated(format!("Access token validation failure: {e}."))
                        .into(),
                )
            }
        }
    }
}

impl Caller {
    /// Requires one of `permissions` (Graph names) in the token's `roles` or `scp`, or a
    /// directory role that grants every Remote Help admin action (Global or Intune
    /// Administrator in `wids`), as in Intune.
    pub fn require_any(&self, permissions: &[&str]) -> Result<(), ApiError> {
        if self.0.is_intune_admin() || self.0.has_any_permission(permissions) {
            Ok(())
        } else {
            Err(GraphError::forbidden(format!(
                "The caller lacks the permission this call needs; one of: {}.",
                permissions.join(", ")
            ))
            .into())
        }
    }
}

/// Reads a JSON body: at most [`MAX_BODY_BYTES`] (else 413), `application/json` when a content
/// type is given (else 415), well-formed (else 400).
pub async fn read_json(
    headers: &http::HeaderMap,
    body: Body,
) -> Result<serde_json::Value, ApiError> {
    if let Some(ct) = headers.get(header::CONTENT_TYPE) {
        let ct = ct.to_str().unwrap_or("").to_ascii_lowercase();
        if !ct.starts_with("application/json") {
            return Err(GraphError::new(
                GraphErrorKind::UnsupportedMediaType,
                "The body must be application/json.",
            )
            .into());
        }
    }
    if let Some(len) = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok())
    {
        if len > MAX_BODY_BYTES {
            return Err(too_large());
        }
    }
    let bytes = axum::body::to_bytes(body, MAX_BODY_BYTES)
        .await
        .map_err(|_| too_large())?;
    serde_json::from_slice(&bytes)
        .map_err(|e| GraphError::bad_request(format!("The body is not valid JSON: {e}.")).into())
}

fn too_large() -> ApiError {
    GraphError::new(
        GraphErrorKind::PayloadTooLarge,
        "The request body is larger than the 4 MB limit.",
    )
    .into()
}

/// Fallback for paths that do not exist: 404 in Graph's shape.
pub async fn not_found(uri: http::Uri) -> ApiError {
    GraphError::not_found(format!(
        "Resource not found for the segment '{}'.",
        uri.path()
    ))
    .into()
}

/// Fallback for a known path with the wrong method: 405 in Graph's shape.
pub async fn method_not_allowed(method: http::Method) -> ApiError {
    GraphError::new(
        GraphErrorKind::MethodNotAllowed,
        format!("The method {method} is not allowed on this resource."),
    )
    .into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_decode_or_are_refused() {
        assert_eq!(
            percent_decoded("/beta/users/a%40b").as_deref(),
            Some("/beta/users/a@b")
        );
        assert_eq!(percent_decoded("/a%2").as_deref(), Some("/a%2"));
        assert_eq!(percent_decoded("/%C3%A9").as_deref(), Some("/é"));
        assert_eq!(percent_decoded("/%FF"), None);
        assert_eq!(percent_decoded("/%C3"), None);
        assert!(percent_decoded("/x%00y").unwrap().contains('\0'));
    }
}
