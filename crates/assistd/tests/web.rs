//! The browser helper page: served from the binary with the right types and security headers;
//! `/` redirects to it; other paths still get the Graph-shaped 404.

mod common;

use common::{assert_graph_error, send, TestServer};
use reqwest::header;

const CSP_PARTS: &[&str] = &[
    "default-src 'self'",
    "connect-src 'self' wss:",
    "img-src 'self' blob: data:",
    "style-src 'self'",
    "script-src 'self'",
];

fn permissions_policy() -> header::HeaderName {
    header::HeaderName::from_static("permissions-policy")
}

fn no_redirects(ts: &TestServer) -> reqwest::Client {
    let pem = std::fs::read(&ts.server.cert_path).expect("cert");
    reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(&pem).expect("pem"))
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client")
}

async fn fetch(ts: &TestServer, path: &str) -> reqwest::Response {
    let resp = ts.client.get(ts.url(path)).send().await.expect("sent");
    assert_eq!(resp.status(), 200, "GET {path}");
    resp
}

fn header_of(resp: &reqwest::Response, name: header::HeaderName) -> &str {
    resp.headers()
        .get(&name)
        .unwrap_or_else(|| panic!("no {name} on {}", resp.url()))
        .to_str()
        .expect("ascii header")
}

fn assert_page_headers(resp: &reqwest::Response) {
    assert_eq!(header_of(resp, header::CACHE_CONTROL), "no-cache");
    assert_eq!(header_of(resp, header::X_CONTENT_TYPE_OPTIONS), "nosniff");
    let csp = header_of(resp, header::CONTENT_SECURITY_POLICY);
    for part in CSP_PARTS {
        assert!(csp.contains(part), "CSP {csp:?} lacks {part:?}");
    }
    assert!(!csp.contains("unsafe-inline"), "CSP {csp:?}");
    assert!(!csp.contains("unsafe-eval"), "CSP {csp:?}");
}

#[tokio::test]
async fn the_helper_page_and_its_assets_are_served_with_strict_headers() {
    let dir = tempfile::tempdir().unwrap();
    let ts = TestServer::start(dir.path()).await;

    let page = fetch(&ts, "/helper/").await;
    assert_page_headers(&page);
    assert_eq!(
        header_of(&page, header::CONTENT_TYPE),
        "text/html; charset=utf-8"
    );
    let html = page.text().await.unwrap();
    assert!(html.contains(r#"<script type="module" src="helper.js"></script>"#));
    assert!(html.contains(r#"href="helper.css""#));
    assert!(html.contains("Get a code"));
    assert!(html.contains(r#"<canvas id="screen" tabindex="0""#));

    for (file, ctype, needle) in [
        ("helper.js", "text/javascript; charset=utf-8", "/v1/signal"),
        (
            "proto.mjs",
            "text/javascript; charset=utf-8",
            "parseScreenFrame",
        ),
        (
            "screen.js",
            "text/javascript; charset=utf-8",
            "createImageBitmap",
        ),
        ("helper.css", "text/css; charset=utf-8", "#screen"),
        ("icon.svg", "image/svg+xml", "<svg"),
    ] {
        let resp = fetch(&ts, &format!("/helper/{file}")).await;
        assert_page_headers(&resp);
        assert_eq!(header_of(&resp, header::CONTENT_TYPE), ctype, "{file}");
        let body = resp.text().await.unwrap();
        assert!(body.contains(needle), "{file} lacks {needle:?}");
    }

    // HEAD works too (for uptime checks).
    let head = ts.client.head(ts.url("/helper/")).send().await.unwrap();
    assert_eq!(head.status(), 200);
    ts.server.shutdown().await;
}

#[tokio::test]
async fn root_and_bare_helper_redirect_to_the_page() {
    let dir = tempfile::tempdir().unwrap();
    let ts = TestServer::start(dir.path()).await;
    let client = no_redirects(&ts);
    for path in ["/", "/helper"] {
        let resp = client.get(ts.url(path)).send().await.unwrap();
        assert_eq!(resp.status(), 302, "GET {path}");
        assert_eq!(header_of(&resp, header::LOCATION), "/helper/");
    }
    // A client that follows redirects lands on the page.
    let resp = ts.client.get(ts.url("/")).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.url().path(), "/helper/");
    ts.server.shutdown().await;
}

#[tokio::test]
async fn unknown_paths_still_get_graph_errors() {
    let dir = tempfile::tempdir().unwrap();
    let ts = TestServer::start(dir.path()).await;
    for path in [
        "/beta/nope",
        "/helper/nope.js",
        "/helper/../beta/nope",
        "/nope",
    ] {
        let (status, body) = ts.get(path, None).await;
        assert_eq!(status, 404, "GET {path}: {body}");
        assert_graph_error(&body, "ResourceNotFound");
    }
    // The page answers GET only; another method gets Graph's 405.
    let (status, body) = send(ts.client.post(ts.url("/helper/"))).await;
    assert_eq!(status, 405, "{body}");
    assert_graph_error(&body, "MethodNotAllowed");
    ts.server.shutdown().await;
}

#[tokio::test]
async fn the_browser_sharer_is_served_and_alone_may_capture_the_screen() {
    let dir = tempfile::tempdir().unwrap();
    let ts = TestServer::start(dir.path()).await;

    let page = fetch(&ts, "/share/").await;
    assert_page_headers(&page);
    assert_eq!(
        header_of(&page, permissions_policy()),
        "camera=(), microphone=(), geolocation=(), display-capture=(self)"
    );
    let html = page.text().await.unwrap();
    assert!(html.contains(r#"<script type="module" src="share.js"></script>"#));
    assert!(html.contains("Allow and choose what to share"));
    assert!(html.contains("Control needs the Assist app"));

    for (file, ctype, needle) in [
        (
            "share.js",
            "text/javascript; charset=utf-8",
            "getDisplayMedia",
        ),
        (
            "capture.mjs",
            "text/javascript; charset=utf-8",
            "changedTiles",
        ),
        ("ticker.js", "text/javascript; charset=utf-8", "postMessage"),
        ("share.css", "text/css; charset=utf-8", "#preview"),
    ] {
        let resp = fetch(&ts, &format!("/share/{file}")).await;
        assert_page_headers(&resp);
        assert_eq!(header_of(&resp, header::CONTENT_TYPE), ctype, "{file}");
        assert!(header_of(&resp, permissions_policy()).contains("display-capture=(self)"));
        let body = resp.text().await.unwrap();
        assert!(body.contains(needle), "{file} lacks {needle:?}");
    }

    // The helper page may not capture the screen.
    let helper = fetch(&ts, "/helper/").await;
    assert!(header_of(&helper, permissions_policy()).contains("display-capture=()"));

    // `/share` redirects to the page; unknown files there are Graph's 404.
    let resp = no_redirects(&ts)
        .get(ts.url("/share"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 302);
    assert_eq!(header_of(&resp, header::LOCATION), "/share/");
    let (status, body) = ts.get("/share/nope.js", None).await;
    assert_eq!(status, 404, "{body}");
    assert_graph_error(&body, "ResourceNotFound");
    ts.server.shutdown().await;
}
