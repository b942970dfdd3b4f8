//! The browser pages: the helper page (`/helper/`) and the browser sharer (`/share/`), static
//! files embedded in the binary, served with a strict Content-Security-Policy. The pages
//! themselves talk to `/v1/signal` and `/v1/relay` (see `docs/protocol.md` and
//! `docs/clients.md`); this module only serves them.
//!
//! `GET /` redirects to `/helper/`; `/share` to `/share/`. Only the listed files exist; any
//! other path falls through to the Graph-shaped 404 like every unknown path.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;

/// The page's Content-Security-Policy: everything from this origin only, WebSockets to this
/// origin or any `wss:` relay, images from decoded tiles (`blob:`), no inline script or style.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'self'; connect-src 'self' wss:; \
     img-src 'self' blob: data:; style-src 'self'; script-src 'self'; object-src 'none'; \
     base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/// Where the helper page lives.
pub const HELPER_PATH: &str = "/helper/";

/// Where the browser sharer lives.
pub const SHARE_PATH: &str = "/share/";

/// The Permissions-Policy of every page: no camera, microphone or location; screen capture
/// (`getDisplayMedia`) only for the browser sharer, see [`permissions_policy`].
const PERMISSIONS_DENY: &str = "camera=(), microphone=(), geolocation=(), display-capture=()";
const PERMISSIONS_SHARE: &str = "camera=(), microphone=(), geolocation=(), display-capture=(self)";

/// The Permissions-Policy for the file at `path`: the sharer's files may capture the screen
/// (`display-capture=(self)`, which `getDisplayMedia` needs); nothing else may.
pub fn permissions_policy(path: &str) -> &'static str {
    if path.starts_with(SHARE_PATH) {
        PERMISSIONS_SHARE
    } else {
        PERMISSIONS_DENY
    }
}

/// One embedded file: the path it is served at, its media type and its bytes.
#[derive(Debug, Clone, Copy)]
pub struct Asset {
    /// The URL path, e.g. `/helper/helper.js`. A page's `index.html` is also served at its
    /// directory (`/helper/`).
    pub path: &'static str,
    /// The `Content-Type` it is served with.
    pub content_type: &'static str,
    /// The file's contents.
    pub body: &'static [u8],
}

/// Every file of the pages, embedded at build time from `crates/assistd/web/`.
pub const ASSETS: &[Asset] = &[
    Asset {
        path: "/helper/index.html",
        content_type: "text/html; charset=utf-8",
        body: include_bytes!("../web/index.html"),
    },
    Asset {
        path: "/helper/helper.css",
        content_type: "text/css; charset=utf-8",
        body: include_bytes!("../web/helper.css"),
    },
    Asset {
        path: "/helper/helper.js",
        content_type: "text/javascript; charset=utf-8",
        body: include_bytes!("../web/helper.js"),
    },
    Asset {
        path: "/helper/screen.js",
        content_type: "text/javascript; charset=utf-8",
        body: include_bytes!("../web/screen.js"),
    },
    Asset {
        path: "/helper/proto.mjs",
        content_type: "text/javascript; charset=utf-8",
        body: include_bytes!("../web/proto.mjs"),
    },
    Asset {
        path: "/helper/icon.svg",
        content_type: "image/svg+xml",
        body: include_bytes!("../web/icon.svg"),
    },
    Asset {
        path: "/share/index.html",
        content_type: "text/html; charset=utf-8",
        body: include_bytes!("../web/share/index.html"),
    },
    Asset {
        path: "/share/share.css",
        content_type: "text/css; charset=utf-8",
        body: include_bytes!("../web/share/share.css"),
    },
    Asset {
        path: "/share/share.js",
        content_type: "text/javascript; charset=utf-8",
        body: include_bytes!("../web/share/share.js"),
    },
    Asset {
        path: "/share/ticker.js",
        content_type: "text/javascript; charset=utf-8",
        body: include_bytes!("../web/share/ticker.js"),
    },
    Asset {
        path: "/share/capture.mjs",
        content_type: "text/javascript; charset=utf-8",
        body: include_bytes!("../web/share/capture.mjs"),
    },
];

/// The embedded file served at `path`, if there is one.
pub fn asset(path: &str) -> Option<&'static Asset> {
    ASSETS.iter().find(|a| a.path == path)
}

/// The routes of the pages: `/`, `/helper`, `/share`, each page's directory and every file.
pub fn routes<S: Clone + Send + Sync + 'static>() -> Router<S> {
    let mut r = Router::new()
        .route("/", get(|| async { redirect(HELPER_PATH) }))
        .route("/helper", get(|| async { redirect(HELPER_PATH) }))
        .route("/share", get(|| async { redirect(SHARE_PATH) }));
    for a in ASSETS {
        let path = a.path;
        r = r.route(path, get(move || async move { serve(path) }));
        if let Some(dir) = path.strip_suffix("index.html") {
            r = r.route(dir, get(move || async move { serve(path) }));
        }
    }
    r
}

fn redirect(to: &'static str) -> Response {
    let mut resp = StatusCode::FOUND.into_response();
    let h = resp.headers_mut();
    h.insert(header::LOCATION, HeaderValue::from_static(to));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    resp
}

fn serve(path: &str) -> Response {
    let Some(a) = asset(path) else {
        return StatusCode::NOT_FOUND.into_response();
    };
    let mut resp = a.body.into_response();
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(a.content_type),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CONTENT_SECURITY_POLICY),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        "permissions-policy",
        HeaderValue::from_static(permissions_policy(path)),
    );
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_asset_is_non_empty_and_named_once() {
        for (i, a) in ASSETS.iter().enumerate() {
            assert!(!a.body.is_empty(), "{} is empty", a.path);
            assert!(
                ASSETS[i + 1..].iter().all(|b| b.path != a.path),
                "{} twice",
                a.path
            );
        }
        assert!(asset("/helper/index.html").is_some());
        assert!(asset("/share/index.html").is_some());
        assert!(asset("/helper/nope.js").is_none());
    }

    #[test]
    fn only_the_sharer_may_capture_the_screen() {
        assert!(permissions_policy("/share/index.html").contains("display-capture=(self)"));
        assert!(permissions_policy("/helper/index.html").contains("display-capture=()"));
        for p in [PERMISSIONS_DENY, PERMISSIONS_SHARE] {
            assert!(
                p.contains("camera=()") && p.contains("microphone=()"),
                "{p}"
            );
        }
    }

    #[test]
    fn the_pages_have_no_inline_script_or_style() {
        for page in ASSETS.iter().filter(|a| a.path.ends_with(".html")) {
            no_inline_script_or_style(std::str::from_utf8(page.body).unwrap());
        }
    }

    fn no_inline_script_or_style(html: &str) {
        assert!(!html.contains("<style"), "inline <style>");
        assert!(!html.contains(" style="), "inline style attribute");
        for (i, _) in html.match_indices(" on") {
            let rest = &html[i + 3..];
            let word: String = rest
                .chars()
                .take_while(|c| c.is_ascii_alphabetic())
                .collect();
            assert!(
                word.is_empty() || !rest[word.len()..].starts_with('='),
                "inline event handler attribute on{word}="
            );
        }
        for part in html.split("<script").skip(1) {
            let tag = part.split('>').next().unwrap_or_default();
            assert!(tag.contains("src="), "inline <script>: {tag}");
        }
    }
}
