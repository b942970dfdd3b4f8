//! Shared harness for assistd's integration tests: a real server on 127.0.0.1:0 over real TLS,
//! a client that trusts its self-signed certificate, and tokens from its dev issuer.
#![allow(dead_code)]

use assist_identity::{DevIssuer, TokenRequest};
use assist_store::StoreUrl;
use assistd::{RunningServer, Settings};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

pub const READ: &str = "DeviceManagementServiceConfig.Read.All";
pub const WRITE: &str = "DeviceManagementServiceConfig.ReadWrite.All";
pub const SETTINGS: &str = "/beta/deviceManagement/remoteAssistanceSettings";

pub struct TestServer {
    pub server: RunningServer,
    pub client: reqwest::Client,
    pub base: String,
    pub dev: DevIssuer,
    /// The store the server uses (open a second handle with `Store::open`).
    pub store_url: StoreUrl,
}

/// Whether the tests' servers use PostgreSQL (`ASSIST_TEST_STORE=postgres`) instead of the
/// default SQLite file in their data directory.
pub fn testing_postgres() -> bool {
    match std::env::var("ASSIST_TEST_STORE")
        .unwrap_or_default()
        .as_str()
    {
        "" | "sqlite" => false,
        "postgres" | "postgresql" => true,
        other => panic!("ASSIST_TEST_STORE={other}: use sqlite or postgres"),
    }
}

/// The store a server with data directory `dir` uses in these tests: with
/// `ASSIST_TEST_STORE=postgres`, a database of its own on this test binary's PostgreSQL (the
/// same one again for the same directory, so a restarted server finds its data); otherwise
/// `None` (the default, `assist.db` in the directory).
pub fn test_store_for(dir: &Path) -> Option<StoreUrl> {
    static BY_DIR: Mutex<Vec<(PathBuf, String)>> = Mutex::new(Vec::new());
    if !testing_postgres() {
        return None;
    }
    let pg = assist_testkit::PostgresInstance::shared()
        .expect("ASSIST_TEST_STORE=postgres needs PostgreSQL's server binaries");
    let mut by_dir = BY_DIR.lock().unwrap_or_else(|e| e.into_inner());
    let url = match by_dir.iter().find(|(d, _)| d == dir) {
        Some((_, url)) => url.clone(),
        None => {
            let url = pg.fresh_database();
            by_dir.push((dir.to_path_buf(), url.clone()));
            url
        }
    };
    Some(StoreUrl::Postgres(url))
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

    pub async fn start_with(mut settings: Settings) -> TestServer {
        let dir = settings.data_dir.clone();
        if settings.store == StoreUrl::Sqlite(dir.join("assist.db")) {
            if let Some(url) = test_store_for(&dir) {
                settings.store = url;
            }
        }
        let store_url = settings.store.clone();
        let server = assistd::start(settings).await.expect("server starts");
        let client = client_trusting(&server.cert_path);
        let base = format!("https://127.0.0.1:{}", server.https_addr.port());
        let dev = DevIssuer::load_or_create(&dir).expect("dev issuer");
        TestServer {
            server,
            client,
            base,
            dev,
            store_url,
        }
    }

    /// A second handle on the server's store (to seed or inspect it).
    pub async fn open_store(&self) -> assist_store::Store {
        assist_store::Store::open(&self.store_url)
            .await
            .expect("store opens")
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
