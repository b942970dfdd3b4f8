//! The browser helper page (`/helper/`), the browser sharer (`/share/`) and the admin console
//! (`/admin/`): static files embedded in the binary, served with a strict
//! Content-Security-Policy. The pages themselves talk to `/v1/signal` and `/v1/relay` (see
//! `docs/protocol.md` and `docs/clients.md`); this module only serves them.
//!
//! `GET /` redirects to `/helper/`. Only the listed files exist; any other path under
//! `/helper/`, `/share/`, `/admin/` or `/assets/` falls through to the Graph-shaped 404 like
//! every unknown path.

use axum::http::{header, HeaderName, HeaderValue, StatusCode};
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

/// The Permissions-Policy of every page but the sharer: no camera, microphone, location or
/// screen capture.
pub const PERMISSIONS_POLICY: &str = "camera=(), microphone=(), geolocation=(), display-capture=()";

/// The sharer's Permissions-Policy: screen capture (`getDisplayMedia` needs `display-capture`)
/// from this origin, and nothing else.
pub const SHARE_PERMISSIONS_POLICY: &str =
    "camera=(), microphone=(), geolocation=(), display-capture=(self)";

/// One embedded file: its name under `/helper/`, its media type and its bytes.
#[derive(Debug, Clone, Copy)]
pub struct Asset {
    /// The file name, e.g. `helper.js` (the page itself is `index.html`).
    pub name: &'static str,
    /// The `Content-Type` it is served with.
    pub content_type: &'static str,
    /// The file's contents.
    pub body: &'static [u8],
}

/// Every file of the helper page, embedded at build time from `crates/assistd/web/`.
pub const ASSETS: &[Asset] = &[
    Asset {
        name: "index.html",
        content_type: "text/html; charset=utf-8",
        body: include_bytes!("../web/index.html"),
    },
    Asset {
        name: "helper.css",
        content_type: "text/css; charset=utf-8",
        body: include_bytes!("../web/helper.css"),
    },
    Asset {
        name: "helper.js",
        content_type: "text/javascript; charset=utf-8",
        body: include_bytes!("../web/helper.js"),
    },
    Asset {
        name: "screen.js",
        content_type: "text/javascript; charset=utf-8",
        body: include_bytes!("../web/screen.js"),
    },
    Asset {
        name: "proto.mjs",
        content_type: "text/javascript; charset=utf-8",
        body: include_bytes!("../web/proto.mjs"),
    },
    Asset {
        name: "icon.svg",
        content_type: "image/svg+xml",
        body: include_bytes!("../web/icon.svg"),
    },
];

/// Where modules and styles shared by every page live.
pub const SHARED_PATH: &str = "/assets/";

/// Files shared by the pages, served under `/assets/`, from `crates/assistd/web/assets/`.
pub const SHARED_ASSETS: &[Asset] = &[
    Asset {
        name: "auth.mjs",
        content_type: "text/javascript; charset=utf-8",
        body: include_bytes!("../web/assets/auth.mjs"),
    },
    Asset {
        name: "signal.mjs",
        content_type: "text/javascript; charset=utf-8",
        body: include_bytes!("../web/assets/signal.mjs"),
    },
    Asset {
        name: "dev-signin.css",
        content_type: "text/css; charset=utf-8",
        body: include_bytes!("../web/assets/dev-signin.css"),
    },
];

/// Where the browser sharer lives.
pub const SHARE_PATH: &str = "/share/";

/// Every file of the browser sharer, embedded from `crates/assistd/web/share/` and served under
/// `/share/` with [`SHARE_PERMISSIONS_POLICY`]. It also loads the helper page's `helper.css`,
/// `icon.svg` and `proto.mjs`, and signs in with `/assets/auth.mjs`.
pub const SHARE_ASSETS: &[Asset] = &[
    Asset {
        name: "index.html",
        content_type: "text/html; charset=utf-8",
        body: include_bytes!("../web/share/index.html"),
    },
    Asset {
        name: "share.css",
        content_type: "text/css; charset=utf-8",
        body: include_bytes!("../web/share/share.css"),
    },
    Asset {
        name: "share.js",
        content_type: "text/javascript; charset=utf-8",
        body: include_bytes!("../web/share/share.js"),
    },
    Asset {
        name: "capture.mjs",
        content_type: "text/javascript; charset=utf-8",
        body: include_bytes!("../web/share/capture.mjs"),
    },
    Asset {
        name: "ticker.js",
        content_type: "text/javascript; charset=utf-8",
        body: include_bytes!("../web/share/ticker.js"),
    },
];

/// Where the admin console lives.
pub const ADMIN_PATH: &str = "/admin/";

/// Every file of the admin console, embedded from `crates/assistd/web/admin/` and served under
/// `/admin/`. It signs in with `/assets/auth.mjs` and calls the admin API (docs/admin-api.md).
pub const ADMIN_ASSETS: &[Asset] = &[
    Asset {
        name: "index.html",
        content_type: "text/html; charset=utf-8",
        body: include_bytes!("../web/admin/index.html"),
    },
    Asset {
        name: "admin.css",
        content_type: "text/css; charset=utf-8",
        body: include_bytes!("../web/admin/admin.css"),
    },
    Asset {
        name: "admin.mjs",
        content_type: "text/javascript; charset=utf-8",
        body: include_bytes!("../web/admin/admin.mjs"),
    },
    Asset {
        name: "console.mjs",
        content_type: "text/javascript; charset=utf-8",
        body: include_bytes!("../web/admin/console.mjs"),
    },
];

/// The embedded file called `name`, if there is one.
pub fn asset(name: &str) -> Option<&'static Asset> {
    ASSETS.iter().find(|a| a.name == name)
}

/// The `scheme://host[:port]` of an absolute https URL, if it is one.
pub fn origin_of(url: &str) -> Option<String> {
    let rest = url.strip_prefix("https://")?;
    let host = rest.split(['/', '?', '#']).next()?;
    let ok = !host.is_empty()
        && host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b':' | b'[' | b']'));
    ok.then(|| format!("https://{host}"))
}

/// Adds `origin` to the `connect-src` of a page's [`CONTENT_SECURITY_POLICY`] (the external
/// sign-in provider's discovery and token endpoints are fetched from the page).
pub fn allow_connect_to(mut resp: Response, origin: Option<&str>) -> Response {
    let Some(origin) = origin else {
        return resp;
    };
    let h = resp.headers_mut();
    if h.get(header::CONTENT_SECURITY_POLICY)
        .map(HeaderValue::as_bytes)
        == Some(CONTENT_SECURITY_POLICY.as_bytes())
    {
        let csp = CONTENT_SECURITY_POLICY.replacen(
            "connect-src 'self' wss:",
            &format!("connect-src 'self' wss: {origin}"),
            1,
        );
        if let Ok(v) = HeaderValue::from_str(&csp) {
            h.insert(header::CONTENT_SECURITY_POLICY, v);
        }
    }
    resp
}

/// The routes of the helper page (`/`, `/helper`, `/helper/` and `/helper/<file>`), the
/// browser sharer (`/share`, `/share/`, `/share/<file>`), the admin console (`/admin`,
/// `/admin/`, `/admin/<file>`) and the shared `/assets/<file>`.
pub fn routes<S: Clone + Send + Sync + 'static>() -> Router<S> {
    let mut r = Router::new()
        .route("/", get(|| async { redirect(HELPER_PATH) }))
        .route("/helper", get(|| async { redirect(HELPER_PATH) }))
        .route(HELPER_PATH, get(|| async { serve("index.html") }));
    for a in ASSETS {
        let name = a.name;
        r = r.route(
            &format!("{HELPER_PATH}{name}"),
            get(move || async move { serve(name) }),
        );
    }
    for a in SHARED_ASSETS {
        r = r.route(
            &format!("{SHARED_PATH}{}", a.name),
            get(move || async move { serve_asset(a) }),
        );
    }
    r = r.route("/share", get(|| async { redirect(SHARE_PATH) }));
    for a in SHARE_ASSETS {
        let path = if a.name == "index.html" {
            SHARE_PATH.to_owned()
        } else {
            format!("{SHARE_PATH}{}", a.name)
        };
        r = r.route(
            &path,
            get(move || async move { with_permissions(serve_asset(a), SHARE_PERMISSIONS_POLICY) }),
        );
    }
    r = r.route("/admin", get(|| async { redirect(ADMIN_PATH) }));
    for a in ADMIN_ASSETS {
        let path = if a.name == "index.html" {
            ADMIN_PATH.to_owned()
        } else {
            format!("{ADMIN_PATH}{}", a.name)
        };
        r = r.route(&path, get(move || async move { serve_asset(a) }));
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

fn serve(name: &str) -> Response {
    match asset(name) {
        Some(a) => serve_asset(a),
        None => StatusCode::NOT_FOUND.into_response(),
    }
}

fn serve_asset(a: &'static Asset) -> Response {
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
    with_permissions(resp, PERMISSIONS_POLICY)
}

/// Sets the page's Permissions-Policy (only the sharer's allows screen capture).
fn with_permissions(mut resp: Response, policy: &'static str) -> Response {
    resp.headers_mut().insert(
        HeaderName::from_static("permissions-policy"),
        HeaderValue::from_static(policy),
    );
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_asset_is_non_empty_and_named_once() {
        for (i, a) in ASSETS.iter().enumerate() {
            assert!(!a.body.is_empty(), "{} is empty", a.name);
            assert!(
                ASSETS[i + 1..].iter().all(|b| b.name != a.name),
                "{} twice",
                a.name
            );
        }
        assert!(asset("index.html").is_some());
        for (i, a) in SHARED_ASSETS.iter().enumerate() {
            assert!(!a.body.is_empty(), "{} is empty", a.name);
            assert!(SHARED_ASSETS[i + 1..].iter().all(|b| b.name != a.name));
        }
        assert!(asset("nope.js").is_none());
    }

    #[test]
    fn an_external_provider_joins_connect_src_only() {
        assert_eq!(
            origin_of("https://login.example.com:8443/t/v2.0").as_deref(),
            Some("https://login.example.com:8443")
        );
        assert_eq!(origin_of("http://x/"), None);
        assert_eq!(origin_of("https://a b/"), None);
        let resp = serve("index.html");
        let resp = allow_connect_to(resp, Some("https://idp.example"));
        let csp = resp.headers()[header::CONTENT_SECURITY_POLICY]
            .to_str()
            .unwrap()
            .to_owned();
        assert!(
            csp.contains("connect-src 'self' wss: https://idp.example;"),
            "{csp}"
        );
        assert!(csp.contains("script-src 'self';"), "{csp}");
    }

    #[test]
    fn the_page_has_no_inline_script_or_style() {
        let html = std::str::from_utf8(asset("index.html").unwrap().body).unwrap();
        assert_no_inline_script_or_style(html);
    }

    #[test]
    fn the_admin_console_is_named_once_and_has_no_inline_script_or_style() {
        for (i, a) in ADMIN_ASSETS.iter().enumerate() {
            assert!(!a.body.is_empty(), "{} is empty", a.name);
            assert!(
                ADMIN_ASSETS[i + 1..].iter().all(|b| b.name != a.name),
                "{} twice",
                a.name
            );
        }
        let index = ADMIN_ASSETS
            .iter()
            .find(|a| a.name == "index.html")
            .unwrap();
        assert_no_inline_script_or_style(std::str::from_utf8(index.body).unwrap());
    }

    #[test]
    fn the_sharer_is_named_once_has_no_inline_script_or_style_and_alone_may_capture() {
        for (i, a) in SHARE_ASSETS.iter().enumerate() {
            assert!(!a.body.is_empty(), "{} is empty", a.name);
            assert!(
                SHARE_ASSETS[i + 1..].iter().all(|b| b.name != a.name),
                "{} twice",
                a.name
            );
        }
        let index = SHARE_ASSETS
            .iter()
            .find(|a| a.name == "index.html")
            .unwrap();
        assert_no_inline_script_or_style(std::str::from_utf8(index.body).unwrap());
        assert!(SHARE_PERMISSIONS_POLICY.contains("display-capture=(self)"));
        assert!(PERMISSIONS_POLICY.contains("display-capture=()"));
        for p in [PERMISSIONS_POLICY, SHARE_PERMISSIONS_POLICY] {
            assert!(
                p.contains("camera=()") && p.contains("microphone=()"),
                "{p}"
            );
        }
        let helper = serve("index.html");
        assert_eq!(
            helper.headers()["permissions-policy"].to_str().unwrap(),
            PERMISSIONS_POLICY
        );
    }

    fn assert_no_inline_script_or_style(html: &str) {
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
