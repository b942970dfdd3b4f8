//! Shared harness for assistd's integration tests: a real server on 127.0.0.1:0 over real TLS,
//! a client that trusts its self-signed certificate, and tokens from its dev issuer.
#![allow(dead_code)]

use assist_identity::{DevIssuer, TokenRequest};
use assistd::{RunningServer, Settings};
use std::path::Path;
use std::time::Duration;

pub const READ: &str = "DeviceManagementServiceConfig.Read.All";
pub const WRITE: &str = "DeviceManagementServiceConfig.ReadWrite.All";
pub const SETTINGS: &str = "/beta/deviceManagement/remoteAssistanceSettings";

pub struct TestServer {
    pub server: RunningServer,
    pub client: reqwest::Client,
    pub base: String,
    pub dev: DevIssuer,
}

pub fn client_trusting(cert_path: &Path) -> reqwest::Client {
    let pem = std::fs::read(cert_path).expect("read cert");
    reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(&pem).expect("cert pem"))
        .timeout(Duration::from_secs(20))
        .build()
        .expect("client")
}

impl TestServer {
    pub async fn start(dir: &Path) -> TestServer {
        Self::start_with(Settings::ephemeral(dir)).await
    }

    /// A server whose retention (3650 days, the most allowed) keeps fixtures written with fixed
    /// dates: with the default 30 days the retention job deletes them once the calendar has
    /// moved past them, and the test would start failing on its own one day.
    pub async fn start_keeping_history(dir: &Path) -> TestServer {
        let mut settings = Settings::ephemeral(dir);
        settings.retention_days = 3650;
        Self::start_with(settings).await
    }

    pub async fn start_with(settings: Settings) -> TestServer {
        let dir = settings.data_dir.clone();
        let server = assistd::start(settings).await.expect("server starts");
        let client = client_trusting(&server.cert_path);
        let base = format!("https://127.0.0.1:{}", server.https_addr.port());
        let dev = DevIssuer::load_or_create(&dir).expect("dev issuer");
        TestServer {
            server,
            client,
            base,
            dev,
        }
    }

    pub fn token(&self, tenant: &str, roles: &[&str]) -> String {
        self.dev.mint(&request(tenant, roles)).expect("mint")
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    pub async fn get(&self, path: &str, token: Option<&str>) -> (u16, serde_json::Value) {
        let mut req = self.client.get(self.url(path));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        send(req).await
    }

    pub async fn patch(
        &self,
        path: &str,
        token: &str,
        body: &serde_json::Value,
    ) -> (u16, serde_json::Value) {
        send(
            self.client
                .patch(self.url(path))
                .bearer_auth(token)
                .json(body),
        )
        .await
    }
}

pub fn request(tenant: &str, roles: &[&str]) -> TokenRequest {
    TokenRequest {
        tenant_id: tenant.into(),
        user_principal_name: format!("admin@{tenant}.example"),
        roles: roles.iter().map(|r| r.to_string()).collect(),
        ttl: Duration::from_secs(3600),
        audience: "api://assist".into(),
        ..Default::default()
    }
}

pub async fn send(req: reqwest::RequestBuilder) -> (u16, serde_json::Value) {
    let resp = req.send().await.expect("request sent");
    let status = resp.status().as_u16();
    let text = resp.text().await.expect("body");
    let body = if text.is_empty() {
        serde_json::Value::Null
    } else {
        serde_json::from_str(&text).unwrap_or(serde_json::Value::String(text))
    };
    (status, body)
}

/// Asserts a Graph error body with `code`, and returns its message.
pub fn assert_graph_error(body: &serde_json::Value, code: &str) -> String {
    let err = &body["error"];
    assert_eq!(err["code"], code, "body: {body}");
    assert!(
        err["message"].as_str().is_some_and(|m| !m.is_empty()),
        "message in {body}"
    );
    assert!(
        err["innerError"]["request-id"]
            .as_str()
            .is_some_and(|r| !r.is_empty()),
        "request-id in {body}"
    );
    assert!(
        err["innerError"]["date"]
            .as_str()
            .is_some_and(|d| d.contains('T')),
        "date in {body}"
    );
    err["message"].as_str().unwrap_or_default().to_owned()
}
