//! The admin console: served from the binary under `/admin/` with the right types and the same
//! strict headers as the helper page; `/admin` redirects to it; other paths under `/admin/`
//! get the Graph-shaped 404.

mod common;

use common::{assert_graph_error, send, TestServer};
use reqwest::header;

fn header_of<'a>(resp: &'a reqwest::Response, name: &header::HeaderName) -> &'a str {
    resp.headers()
        .get(name)
        .unwrap_or_else(|| panic!("no {name} on {}", resp.url()))
        .to_str()
        .expect("ascii header")
}

#[tokio::test]
async fn the_console_and_its_files_are_served_with_strict_headers() {
    let dir = tempfile::tempdir().unwrap();
    let ts = TestServer::start(dir.path()).await;
    for (path, ty, needle) in [
        (
            "/admin/",
            "text/html; charset=utf-8",
            r#"<script type="module" src="admin.mjs"></script>"#,
        ),
        (
            "/admin/admin.mjs",
            "text/javascript; charset=utf-8",
            "/assets/auth.mjs",
        ),
        (
            "/admin/console.mjs",
            "text/javascript; charset=utf-8",
            "export function toCsv",
        ),
        (
            "/admin/admin.css",
            "text/css; charset=utf-8",
            r#"[data-theme="dark"]"#,
        ),
    ] {
        let resp = ts.client.get(ts.url(path)).send().await.expect("sent");
        assert_eq!(resp.status(), 200, "GET {path}");
        assert_eq!(header_of(&resp, &header::CONTENT_TYPE), ty, "{path}");
        assert_eq!(header_of(&resp, &header::CACHE_CONTROL), "no-cache");
        assert_eq!(header_of(&resp, &header::X_CONTENT_TYPE_OPTIONS), "nosniff");
        assert_eq!(header_of(&resp, &header::X_FRAME_OPTIONS), "DENY");
        let csp = header_of(&resp, &header::CONTENT_SECURITY_POLICY).to_owned();
        for part in [
            "default-src 'self'",
            "script-src 'self'",
            "style-src 'self'",
        ] {
            assert!(csp.contains(part), "CSP {csp:?} lacks {part:?}");
        }
        assert!(!csp.contains("unsafe-inline"), "CSP {csp:?}");
        let body = resp.text().await.unwrap();
        assert!(body.contains(needle), "{path} lacks {needle:?}");
    }
}

#[tokio::test]
async fn bare_admin_redirects_and_unknown_files_are_graph_404s() {
    let dir = tempfile::tempdir().unwrap();
    let ts = TestServer::start(dir.path()).await;
    let pem = std::fs::read(&ts.server.cert_path).expect("cert");
    let no_redirects = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(&pem).expect("pem"))
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client");
    let resp = no_redirects.get(ts.url("/admin")).send().await.unwrap();
    assert_eq!(resp.status(), 302);
    assert_eq!(header_of(&resp, &header::LOCATION), "/admin/");
    for path in ["/admin/nope.js", "/admin/index.html", "/admin/../beta/nope"] {
        let (status, body) = send(ts.client.get(ts.url(path))).await;
        assert_eq!(status, 404, "{path}");
        assert_graph_error(&body, "ResourceNotFound");
    }
}
