//! Issue 15, as a hostile client meets the server: connection caps per listener and per source
//! address, the metrics listener's timeouts, Graph-shaped errors at the edge (431, bad paths),
//! control characters in identifiers, date-time `$filter`s as instants, HSTS and nosniff, and
//! the dev issuer's warnings. A real server on 127.0.0.1:0, real TLS, real sockets.

mod common;

use common::*;
use serde_json::json;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const USERS: &str = "User.ReadWrite.All";

/// Whether the server closes `tcp` (EOF or reset) within `within`, without us sending more.
async fn closed_within(tcp: &mut TcpStream, within: Duration) -> bool {
    let mut buf = [0u8; 4096];
    let deadline = tokio::time::Instant::now() + within;
    loop {
        match tokio::time::timeout_at(deadline, tcp.read(&mut buf)).await {
            Err(_) => return false,
            Ok(Ok(0)) | Ok(Err(_)) => return true,
            // Some bytes (a response): keep reading until the close.
            Ok(Ok(_)) => continue,
        }
    }
}

async fn metric(s: &TestServer, line_start: &str) -> f64 {
    let text = reqwest::get(format!("http://{}/metrics", s.server.metrics_addr))
        .await
        .expect("metrics answer")
        .text()
        .await
        .expect("metrics body");
    text.lines()
        .find(|l| l.starts_with(line_start))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no {line_start} in\n{text}"))
}

/// A local address that is not loopback (the source of the route out), if the machine has one.
fn outside_address() -> Option<std::net::IpAddr> {
    let probe = std::net::UdpSocket::bind("0.0.0.0:0").ok()?;
    probe.connect("192.0.2.1:9").ok()?;
    let ip = probe.local_addr().ok()?.ip();
    (!ip.is_loopback() && !ip.is_unspecified()).then_some(ip)
}

async fn connect_from(src: std::net::IpAddr, to: std::net::SocketAddr) -> TcpStream {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind(std::net::SocketAddr::new(src, 0)).unwrap();
    socket.connect(to).await.unwrap()
}

#[tokio::test]
async fn one_address_cannot_take_every_connection() {
    let dir = tempfile::tempdir().unwrap();
    let mut settings = assistd::Settings::ephemeral(dir.path());
    settings.limits.max_connections_per_address = 8;
    let s = TestServer::start_with(settings).await;
    let Some(src) = outside_address() else {
        // No address but loopback: check the other half of the rule, that loopback peers (a
        // proxy on the same host, the health self-probe) are held to the listener's cap only.
        eprintln!("no non-loopback address here: checking the loopback exemption only");
        let mut idle = Vec::new();
        for _ in 0..20 {
            idle.push(TcpStream::connect(s.server.https_addr).await.unwrap());
        }
        let (status, _) = s.get(SETTINGS, None).await;
        assert_eq!(status, 401, "loopback is not capped per address");
        s.server.shutdown().await;
        return;
    };

    // Eight idle connections that never start TLS: the cap for one address.
    let mut idle = Vec::new();
    for _ in 0..8 {
        idle.push(connect_from(src, s.server.https_addr).await);
    }
    let mut ninth = connect_from(src, s.server.https_addr).await;
    assert!(
        closed_within(&mut ninth, Duration::from_secs(3)).await,
        "the ninth connection from one address is closed at once"
    );
    assert!(
        metric(
            &s,
            "assist_connections_refused_total{listener=\"https\",reason=\"address\"}"
        )
        .await
            >= 1.0
    );
    assert_eq!(
        metric(&s, "assist_connections_open{listener=\"https\"}").await,
        8.0
    );
    // Everyone else is still served: the admin API, and /healthz (whose self-probe goes
    // through the HTTPS listener).
    let (status, _) = s.get(SETTINGS, None).await;
    assert_eq!(status, 401);
    let health = reqwest::get(format!("http://{}/healthz", s.server.metrics_addr))
        .await
        .unwrap();
    assert_eq!(health.status(), 200);

    // Freeing one place lets that address in again.
    drop(idle.pop());
    let pem = std::fs::read(&s.server.cert_path).unwrap();
    let from_src = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(&pem).unwrap())
        .local_address(src)
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap();
    let mut ok = false;
    for _ in 0..50 {
        tokio::time::sleep(Duration::from_millis(50)).await;
        if let Ok(r) = from_src.get(s.url(SETTINGS)).send().await {
            assert_eq!(r.status(), 401);
            ok = true;
            break;
        }
    }
    assert!(ok, "a freed place is usable");
    drop(idle);
    s.server.shutdown().await;
}

#[tokio::test]
async fn the_listener_cap_holds_and_is_counted() {
    let dir = tempfile::tempdir().unwrap();
    let mut settings = assistd::Settings::ephemeral(dir.path());
    settings.limits.max_connections = 4;
    let s = TestServer::start_with(settings).await;
    let mut idle = Vec::new();
    for _ in 0..4 {
        idle.push(TcpStream::connect(s.server.https_addr).await.unwrap());
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut fifth = TcpStream::connect(s.server.https_addr).await.unwrap();
    assert!(closed_within(&mut fifth, Duration::from_secs(3)).await);
    assert!(
        metric(
            &s,
            "assist_connections_refused_total{listener=\"https\",reason=\"listener\"}"
        )
        .await
            >= 1.0
    );
    drop(idle);
    s.server.shutdown().await;
}

#[tokio::test]
async fn the_metrics_listener_times_out_half_sent_and_idle_requests() {
    let dir = tempfile::tempdir().unwrap();
    let mut settings = assistd::Settings::ephemeral(dir.path());
    settings.limits.header_read_timeout = Duration::from_secs(1);
    let s = TestServer::start_with(settings).await;

    // A request whose headers never end.
    let mut half = TcpStream::connect(s.server.metrics_addr).await.unwrap();
    half.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    assert!(
        closed_within(&mut half, Duration::from_secs(5)).await,
        "a half-sent request does not hold a metrics connection"
    );

    // A keep-alive connection left idle after one answer.
    let mut idle = TcpStream::connect(s.server.metrics_addr).await.unwrap();
    idle.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut buf = [0u8; 512];
    let n = idle.read(&mut buf).await.unwrap();
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));
    assert!(
        closed_within(&mut idle, Duration::from_secs(5)).await,
        "an idle keep-alive metrics connection is closed"
    );
    s.server.shutdown().await;
}

#[tokio::test]
async fn oversized_headers_and_bad_paths_get_graph_errors() {
    let dir = tempfile::tempdir().unwrap();
    let s = TestServer::start(dir.path()).await;
    // 100 KB answered 431 or 401 at random, 200 KB got hyper's bare 431: now always Graph's.
    for kb in [70, 100, 200] {
        for _ in 0..3 {
            let token = "a".repeat(kb * 1024);
            let (status, body) = send(s.client.get(s.url(SETTINGS)).bearer_auth(&token)).await;
            assert_eq!(status, 431, "{kb} KB: {body}");
            assert_graph_error(&body, "RequestHeaderFieldsTooLarge");
        }
    }
    let mut many = reqwest::header::HeaderMap::new();
    for i in 0..150 {
        many.insert(
            reqwest::header::HeaderName::from_bytes(format!("x-h{i}").as_bytes()).unwrap(),
            reqwest::header::HeaderValue::from_static("1"),
        );
    }
    let (status, body) = send(s.client.get(s.url(SETTINGS)).headers(many)).await;
    assert_eq!(status, 431, "{body}");
    assert_graph_error(&body, "RequestHeaderFieldsTooLarge");

    let token = s.token("t1", &[USERS]);
    for path in ["/beta/users/%FF", "/beta/users/%C3", "/beta/users/a%00b"] {
        let (status, body) = send(s.client.get(s.url(path)).bearer_auth(&token)).await;
        assert_eq!(status, 400, "{path}: {body}");
        assert_graph_error(&body, "BadRequest");
    }
    s.server.shutdown().await;
}

#[tokio::test]
async fn control_characters_are_refused_in_identifiers() {
    let dir = tempfile::tempdir().unwrap();
    let s = TestServer::start(dir.path()).await;
    let token = s.token("t1", &[USERS]);
    for body in [
        json!({"userPrincipalName": "ana\u{0}@contoso.com", "displayName": "Ana"}),
        json!({"userPrincipalName": "ana@contoso.com\u{1b}", "displayName": "Ana"}),
        json!({"userPrincipalName": "ana@contoso.com", "displayName": "Ana\r\nINFO forged"}),
        json!({"userPrincipalName": "ana@contoso.com", "displayName": "Ana", "jobTitle": "\u{7f}"}),
    ] {
        let (status, err) = send(
            s.client
                .post(s.url("/beta/users"))
                .bearer_auth(&token)
                .json(&body),
        )
        .await;
        assert_eq!(status, 400, "{body} -> {err}");
        assert_graph_error(&err, "BadRequest");
    }
    let (status, users) = s.get("/beta/users", Some(&token)).await;
    assert_eq!(status, 200);
    assert!(
        users["value"]
            .as_array()
            .unwrap()
            .iter()
            .all(|u| !u["userPrincipalName"].as_str().unwrap().contains('\0')),
        "{users}"
    );

    // The same from a token: a signed UPN with a NUL is refused, not put in the directory.
    let mut req = request("t1", &[USERS]);
    req.user_principal_name = "eve\u{0}@contoso.com".into();
    let forged = s.dev.mint(&req).unwrap();
    let (status, body) = s.get("/beta/users", Some(&forged)).await;
    assert_eq!(status, 401, "{body}");
    assert!(assert_graph_error(&body, "InvalidAuthenticationToken").contains("control"));
    s.server.shutdown().await;
}

#[tokio::test]
async fn date_time_filters_compare_instants() {
    let dir = tempfile::tempdir().unwrap();
    let s = TestServer::start(dir.path()).await;
    let token = s.token("t1", &[WRITE, "DeviceManagementApps.Read.All"]);
    let (status, _) = s.patch(SETTINGS, &token, &json!({"blockChat": true})).await;
    assert_eq!(status, 200);
    let (status, all) = s
        .get("/beta/deviceManagement/auditEvents", Some(&token))
        .await;
    assert_eq!(status, 200, "{all}");
    let at = all["value"][0]["activityDateTime"]
        .as_str()
        .expect("an audit event")
        .to_owned();
    // The event's own second, at second precision: an exporter polling this way must see it.
    let second = format!("{}Z", &at[..19]);
    assert!(at.len() > second.len(), "{at} has a fraction");
    let (status, page) = s
        .get(
            &format!("/beta/deviceManagement/auditEvents?$filter=activityDateTime ge {second}"),
            Some(&token),
        )
        .await;
    assert_eq!(status, 200, "{page}");
    assert_eq!(
        page["value"].as_array().unwrap().len(),
        1,
        "{at} ge {second}"
    );
    let (status, body) = s
        .get(
            "/beta/deviceManagement/auditEvents?$filter=activityDateTime ge 2026-13-45T99:00:00Z",
            Some(&token),
        )
        .await;
    assert_eq!(status, 400, "{body}");
    assert_graph_error(&body, "BadRequest");
    s.server.shutdown().await;
}

#[tokio::test]
async fn https_answers_carry_hsts_and_json_answers_nosniff() {
    let dir = tempfile::tempdir().unwrap();
    let s = TestServer::start(dir.path()).await;
    let token = s.token("t1", &[READ]);
    for (path, token) in [
        (SETTINGS, Some(&token)),
        (SETTINGS, None),
        ("/nowhere", None),
    ] {
        let mut req = s.client.get(s.url(path));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        let resp = req.send().await.unwrap();
        let h = resp.headers();
        assert_eq!(
            h.get("strict-transport-security").unwrap(),
            "max-age=31536000",
            "{path}"
        );
        assert!(h["content-type"]
            .to_str()
            .unwrap()
            .starts_with("application/json"));
        assert_eq!(
            h.get("x-content-type-options").unwrap(),
            "nosniff",
            "{path}"
        );
    }
    s.server.shutdown().await;
}

fn assistd() -> std::process::Command {
    std::process::Command::new(env!("CARGO_BIN_EXE_assistd"))
}

#[test]
fn token_warns_when_the_dev_issuer_is_disabled() {
    let dir = tempfile::tempdir().unwrap();
    let jwks = dir.path().join("keys.json");
    std::fs::write(&jwks, r#"{"keys":[]}"#).unwrap();
    let config = dir.path().join("assist.toml");
    std::fs::write(
        &config,
        format!(
            "[auth]\ndev_issuer = false\n[[auth.issuers]]\nissuer = \"https://idp.example\"\njwks_file = \"{}\"\ntenants = [\"t1\"]\n",
            jwks.display()
        ),
    )
    .unwrap();
    let out = assistd()
        .args([
            "token",
            "--tenant",
            "t1",
            "--user",
            "a@b.example",
            "--config",
        ])
        .arg(&config)
        .arg("--data-dir")
        .arg(dir.path().join("data"))
        .env_remove("ASSIST_AUTH_DEV_ISSUER")
        .output()
        .unwrap();
    assert!(out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("warning") && stderr.contains("dev issuer is disabled"),
        "{stderr}"
    );
    // With the default configuration there is nothing to warn about.
    let out = assistd()
        .args([
            "token",
            "--tenant",
            "t1",
            "--user",
            "a@b.example",
            "--data-dir",
        ])
        .arg(dir.path().join("data"))
        .env_remove("ASSIST_AUTH_DEV_ISSUER")
        .env_remove("ASSIST_CONFIG")
        .output()
        .unwrap();
    assert!(out.status.success());
    assert!(!String::from_utf8_lossy(&out.stderr).contains("warning"));
}

#[test]
fn serve_warns_when_the_dev_issuer_is_forced_on_beside_a_real_issuer() {
    use std::io::BufRead;
    let dir = tempfile::tempdir().unwrap();
    let jwks = dir.path().join("keys.json");
    std::fs::write(&jwks, r#"{"keys":[]}"#).unwrap();
    let config = dir.path().join("assist.toml");
    std::fs::write(
        &config,
        format!(
            "[[auth.issuers]]\nissuer = \"https://idp.example\"\njwks_file = \"{}\"\ntenants = [\"t1\"]\n",
            jwks.display()
        ),
    )
    .unwrap();
    let mut child = assistd()
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--quic-listen",
            "127.0.0.1:0",
            "--metrics-listen",
            "127.0.0.1:0",
            "--log",
            "info",
            "--config",
        ])
        .arg(&config)
        .arg("--data-dir")
        .arg(dir.path().join("data"))
        .env("ASSIST_AUTH_DEV_ISSUER", "true")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let mut lines = Vec::new();
    for line in std::io::BufReader::new(stderr).lines() {
        let line = line.unwrap();
        let done = line.contains("assistd listening");
        lines.push(line);
        if done {
            break;
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    let log = lines.join("\n");
    assert!(
        log.contains("WARN") && log.contains("development token issuer is trusted beside"),
        "{log}"
    );
    assert!(log.contains("open-files limit"), "{log}");
}
