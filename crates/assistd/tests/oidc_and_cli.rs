//! Tokens from an external OIDC issuer (discovery, JWKS over HTTPS, key rotation), and the
//! `assistd` binary's command line as a user meets it.

mod common;

use assist_identity::{DevIssuer, TokenRequest};
use assistd::config::{IssuerKeys, IssuerSettings};
use assistd::Settings;
use axum::routing::get;
use axum::Router;
use common::*;
use hyper_util::rt::TokioIo;
use hyper_util::service::TowerToHyperService;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// A tiny HTTPS identity provider: discovery document and a JWKS that the test can rotate.
struct FakeIdp {
    issuer: String,
    cert_path: std::path::PathBuf,
    jwks: Arc<Mutex<serde_json::Value>>,
    _dir: tempfile::TempDir,
}

async fn fake_idp() -> FakeIdp {
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) =
        assistd::tls::ensure_files(&assistd::config::TlsSource::SelfSigned, dir.path()).unwrap();
    let acceptor =
        tokio_rustls::TlsAcceptor::from(assistd::tls::server_config(&cert, &key).unwrap());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let issuer = format!(
        "https://127.0.0.1:{}/tenant-x/v2.0",
        listener.local_addr().unwrap().port()
    );
    let jwks = Arc::new(Mutex::new(serde_json::json!({"keys": []})));
    let discovery = serde_json::json!({
        "issuer": issuer,
        "jwks_uri": format!("https://127.0.0.1:{}/keys", listener.local_addr().unwrap().port()),
    });
    let served = jwks.clone();
    let app = Router::new()
        .route(
            "/tenant-x/v2.0/.well-known/openid-configuration",
            get(move || {
                let d = discovery.clone();
                async move { axum::Json(d) }
            }),
        )
        .route(
            "/keys",
            get(move || {
                let k = served.lock().unwrap().clone();
                async move { axum::Json(k) }
            }),
        );
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                return;
            };
            let acceptor = acceptor.clone();
            let svc = TowerToHyperService::new(app.clone());
            tokio::spawn(async move {
                if let Ok(tls) = acceptor.accept(tcp).await {
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(tls), svc)
                        .await;
                }
            });
        }
    });
    FakeIdp {
        issuer,
        cert_path: cert,
        jwks,
        _dir: dir,
    }
}

/// Re-signs a dev-issuer token's claims as the external issuer would (same key type, other `iss`).
fn external_token(key: &DevIssuer, issuer: &str, tenant: &str) -> String {
    let req = TokenRequest {
        tenant_id: tenant.into(),
        user_principal_name: "admin@contoso.com".into(),
        roles: vec![READ.into()],
        ttl: Duration::from_secs(600),
        audience: "api://assist".into(),
        ..Default::default()
    };
    let tok = key.mint(&req).unwrap();
    let payload = tok.split('.').nth(1).unwrap();
    use base64::Engine;
    let mut claims: assist_identity::claims::Claims = serde_json::from_slice(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(payload)
            .unwrap(),
    )
    .unwrap();
    claims.iss = Some(issuer.to_owned());
    key.sign(&claims).unwrap()
}

#[tokio::test]
async fn oidc_discovery_and_key_rotation() {
    let idp = fake_idp().await;
    let key_dir_1 = tempfile::tempdir().unwrap();
    let key_dir_2 = tempfile::tempdir().unwrap();
    let key1 = DevIssuer::load_or_create(key_dir_1.path()).unwrap();
    let key2 = DevIssuer::load_or_create(key_dir_2.path()).unwrap();
    *idp.jwks.lock().unwrap() = serde_json::to_value(key1.jwks()).unwrap();

    let dir = tempfile::tempdir().unwrap();
    let mut settings = Settings::ephemeral(dir.path());
    settings.auth.dev_issuer = false;
    settings.auth.ca_file = Some(idp.cert_path.clone());
    settings.auth.jwks_min_refresh = Duration::from_millis(0);
    settings.auth.issuers.push(IssuerSettings {
        issuer: idp.issuer.clone(),
        keys: IssuerKeys::Discovery,
        tenants: assist_identity::TenantBinding::Only(vec!["t9".into()]),
    });
    let s = TestServer::start_with(settings).await;

    let (status, body) = s
        .get(SETTINGS, Some(&external_token(&key1, &idp.issuer, "t9")))
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["id"], "t9");

    // Issue 15 item 5: the same issuer, validly signing for a tenant it is not bound to.
    let (status, body) = s
        .get(SETTINGS, Some(&external_token(&key1, &idp.issuer, "t8")))
        .await;
    assert_eq!(status, 401, "{body}");
    assert!(assert_graph_error(&body, "InvalidAuthenticationToken").contains("tenant"));

    // The dev issuer is not trusted in this configuration.
    let (status, _) = s.get(SETTINGS, Some(&s.token("t9", &[READ]))).await;
    assert_eq!(status, 401);

    // The IdP rotates to key2: a token with the new kid triggers a refetch and validates.
    *idp.jwks.lock().unwrap() = serde_json::to_value(key2.jwks()).unwrap();
    let (status, body) = s
        .get(SETTINGS, Some(&external_token(&key2, &idp.issuer, "t9")))
        .await;
    assert_eq!(status, 200, "{body}");
    // key1 is gone from the set now.
    let (status, body) = s
        .get(SETTINGS, Some(&external_token(&key1, &idp.issuer, "t9")))
        .await;
    assert_eq!(status, 401);
    assert!(assert_graph_error(&body, "InvalidAuthenticationToken").contains("unknown key"));
    s.server.shutdown().await;
}

fn assistd() -> Command {
    Command::new(env!("CARGO_BIN_EXE_assistd"))
}

#[test]
fn help_explains_every_subcommand() {
    let out = assistd().arg("--help").output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success());
    assert!(text.contains("serve") && text.contains("token"), "{text}");
    let out = assistd().args(["serve", "--help"]).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    for flag in [
        "--data-dir",
        "--listen",
        "--quic-listen",
        "--metrics-listen",
        "--config",
        "ASSIST_LISTEN",
    ] {
        assert!(text.contains(flag), "serve --help lacks {flag}: {text}");
    }
    let out = assistd().args(["token", "--help"]).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    for flag in ["--tenant", "--user", "--roles", "--device", "--ttl"] {
        assert!(text.contains(flag), "token --help lacks {flag}: {text}");
    }
}

#[test]
fn bad_configuration_exits_with_one_clear_line() {
    let dir = tempfile::tempdir().unwrap();
    let out = assistd()
        .args(["serve", "--data-dir"])
        .arg(dir.path())
        .env("ASSIST_LISTEN", "not-an-address")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(
        err.contains("`listen`") && err.contains("not-an-address"),
        "{err}"
    );

    let cfg = dir.path().join("assist.toml");
    std::fs::write(&cfg, "listen = \"127.0.0.1:0\"\nmetrics_listn = \"x\"\n").unwrap();
    let out = assistd()
        .args(["serve", "--config"])
        .arg(&cfg)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("metrics_listn"), "{err}");
    // Nothing was bound or created for a refused configuration.
    assert!(!dir.path().join("assist.db").exists());
}

#[tokio::test]
async fn token_command_mints_tokens_the_server_accepts() {
    let dir = tempfile::tempdir().unwrap();
    let out = assistd()
        .args([
            "token",
            "--tenant",
            "t5",
            "--user",
            "admin@t5.example",
            "--roles",
            &format!("{READ},{WRITE}"),
            "--ttl",
            "5m",
            "--data-dir",
        ])
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let token = String::from_utf8(out.stdout).unwrap().trim().to_owned();
    assert_eq!(token.split('.').count(), 3);

    let s = TestServer::start(dir.path()).await;
    let (status, body) = s.get(SETTINGS, Some(&token)).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["id"], "t5");
    s.server.shutdown().await;

    let out = assistd()
        .args(["token", "--tenant", "t", "--user", "u", "--ttl", "forever"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("forever"));
}

#[test]
fn serve_starts_answers_and_stops_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let mut child = assistd()
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--quic-listen",
            "127.0.0.1:0",
            "--metrics-listen",
            "127.0.0.1:0",
            "--data-dir",
        ])
        .arg(dir.path())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    use std::io::BufRead;
    let mut line = String::new();
    let mut stdout = std::io::BufReader::new(child.stdout.take().unwrap());
    stdout.read_line(&mut line).unwrap();
    assert!(
        line.starts_with("assistd: serving https://127.0.0.1:"),
        "{line}"
    );
    assert!(dir.path().join("tls/cert.pem").is_file());
    assert!(dir.path().join("dev-issuer-key.pem").is_file());
    assert!(dir.path().join("assist.db").is_file());
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let exit = child.wait().unwrap();
    assert!(exit.success(), "graceful stop exits 0: {exit:?}");
}
