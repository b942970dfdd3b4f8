//! Graph's error body: `{"error":{"code","message","innerError":{"date","request-id"}}}`.
//!
//! Clients branch on `code`, never on `message`, so every code here is stable and documented
//! in `docs/admin-api.md`.

use serde_json::{json, Value};

/// Who is at fault for an error, which fixes its HTTP status and Graph code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum GraphErrorKind {
    /// The client sent something malformed or invalid (400 `BadRequest`).
    BadRequest,
    /// No token, or the token did not validate (401 `InvalidAuthenticationToken`).
    Unauthenticated,
    /// The token is valid but lacks the permission the call needs (403 `Forbidden`).
    Forbidden,
    /// The path or the entity does not exist (404 `ResourceNotFound`).
    NotFound,
    /// The path exists but not with this method (405 `MethodNotAllowed`).
    MethodNotAllowed,
    /// The write conflicts with the current state (409 `Conflict`).
    Conflict,
    /// The body is over the 4 MB write limit (413 `RequestEntityTooLarge`).
    PayloadTooLarge,
    /// The body is not JSON (415 `UnsupportedMediaType`).
    UnsupportedMediaType,
    /// The request's header section is too large (431 `RequestHeaderFieldsTooLarge`).
    HeadersTooLarge,
    /// Something failed on our side, usually the store (500 `InternalServerError`).
    Internal,
    /// The service cannot answer now, e.g. while shutting down (503 `ServiceUnavailable`).
    Unavailable,
}

impl GraphErrorKind {
    /// The HTTP status code for this kind.
    pub fn status(self) -> u16 {
        match self {
            Self::BadRequest => 400,
            Self::Unauthenticated => 401,
            Self::Forbidden => 403,
            Self::NotFound => 404,
            Self::MethodNotAllowed => 405,
            Self::Conflict => 409,
            Self::PayloadTooLarge => 413,
            Self::UnsupportedMediaType => 415,
            Self::HeadersTooLarge => 431,
            Self::Internal => 500,
            Self::Unavailable => 503,
        }
    }

    /// The Graph `error.code` for this kind.
    pub fn code(self) -> &'static str {
        match self {
            Self::BadRequest => "BadRequest",
            Self::Unauthenticated => "InvalidAuthenticationToken",
            Self::Forbidden => "Forbidden",
            Self::NotFound => "ResourceNotFound",
            Self::MethodNotAllowed => "MethodNotAllowed",
            Self::Conflict => "Conflict",
            Self::PayloadTooLarge => "RequestEntityTooLarge",
            Self::UnsupportedMediaType => "UnsupportedMediaType",
            Self::HeadersTooLarge => "RequestHeaderFieldsTooLarge",
            Self::Internal => "InternalServerError",
            Self::Unavailable => "ServiceUnavailable",
        }
    }
}

/// An error the admin API answers with, in Graph's shape.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{} ({}): {message}", kind.code(), kind.status())]
pub struct GraphError {
    /// What went wrong, and whose fault it is.
    pub kind: GraphErrorKind,
    /// A human-readable explanation; safe to show to the caller (never holds a secret).
    pub message: String,
}

impl GraphError {
    /// An error of `kind` with `message`.
    pub fn new(kind: GraphErrorKind, message: impl Into<String>) -> Self {
        Self {
            kind,
            message: message.into(),
        }
    }

    /// 400 `BadRequest`.
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(GraphErrorKind::BadRequest, message)
    }

    /// 401 `InvalidAuthenticationToken`.
    pub fn unauthenticated(message: impl Into<String>) -> Self {
        Self::new(GraphErrorKind::Unauthenticated, message)
    }

    /// 403 `Forbidden`.
    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(GraphErrorKind::Forbidden, message)
    }

    /// 404 `ResourceNotFound`.
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(GraphErrorKind::NotFound, message)
    }

    /// 500 `InternalServerError`; the message must not leak internals (log them instead).
    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(GraphErrorKind::Internal, message)
    }

    /// The HTTP status code.
    pub fn status(&self) -> u16 {
        self.kind.status()
    }

    /// The JSON body: `{"error":{"code","message","innerError":{"date","request-id","client-request-id"?}}}`.
    ///
    /// `date` is an RFC 3339 timestamp, `request_id` the id this server gave the request and
    /// `client_request_id` the caller's own `client-request-id` header, echoed when it sent one.
    pub fn to_body(&self, date: &str, request_id: &str, client_request_id: Option<&str>) -> Value {
        let mut inner = json!({ "date": date, "request-id": request_id });
        if let (Some(id), Some(obj)) = (client_request_id, inner.as_object_mut()) {
            obj.insert("client-request-id".into(), Value::String(id.to_owned()));
        }
        json!({
            "error": {
                "code": self.kind.code(),
                "message": self.message,
                "innerError": inner,
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn body_has_graph_shape() {
        let e = GraphError::bad_request("nope");
        let b = e.to_body("2026-01-01T00:00:00Z", "r1", Some("c1"));
        assert_eq!(b["error"]["code"], "BadRequest");
        assert_eq!(b["error"]["message"], "nope");
        assert_eq!(b["error"]["innerError"]["request-id"], "r1");
        assert_eq!(b["error"]["innerError"]["client-request-id"], "c1");
        assert_eq!(b["error"]["innerError"]["date"], "2026-01-01T00:00:00Z");
        let b = e.to_body("d", "r", None);
        assert!(b["error"]["innerError"].get("client-request-id").is_none());
    }

    #[test]
    fn statuses_and_codes_are_distinct() {
        use GraphErrorKind::*;
        let kinds = [
            BadRequest,
            Unauthenticated,
            Forbidden,
            NotFound,
            MethodNotAllowed,
            Conflict,
            PayloadTooLarge,
            UnsupportedMediaType,
            Internal,
            Unavailable,
        ];
        let mut statuses: Vec<u16> = kinds.iter().map(|k| k.status()).collect();
        statuses.dedup();
        assert_eq!(statuses.len(), kinds.len());
        let mut codes: Vec<&str> = kinds.iter().map(|k| k.code()).collect();
        codes.sort();
        codes.dedup();
        assert_eq!(codes.len(), kinds.len());
    }
}
