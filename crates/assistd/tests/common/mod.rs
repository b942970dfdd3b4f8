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

    /// Starts a server with `settings`. A test that kept the default drain grace
    /// (`shutdown_grace_secs`, 10 s) gets 1 s: `shutdown` drains like SIGTERM, and a test that
    /// stops with sessions still open should not wait 10 s for them (tests/drain.rs sets its own).
    pub async fn start_with(mut settings: Settings) -> TestServer {
        let dir = settings.data_dir.clone();
        if settings.shutdown_grace == Settings::ephemeral(&dir).shutdown_grace {
            settings.shutdown_grace = Duration::from_secs(1);
        }
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

/// A 503 `ServiceUnavailable` in Graph's shape, with `Retry-After`.
pub async fn assert_unavailable(what: &str, resp: reqwest::Response) {
    assert_eq!(resp.status().as_u16(), 503, "{what}");
    assert_eq!(
        resp.headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok()),
        Some("5"),
        "{what}"
    );
    let body: serde_json::Value = resp.json().await.unwrap();
    assert_graph_error(&body, "ServiceUnavailable");
}

/// Every admin permission the signalling tests' setup needs.
pub const ADMIN_ALL: &[&str] = &[
    "DeviceManagementServiceConfig.ReadWrite.All",
    "User.ReadWrite.All",
    "Group.ReadWrite.All",
    "DeviceManagementManagedDevices.ReadWrite.All",
    "DeviceManagementRBAC.ReadWrite.All",
    "Domain.ReadWrite.All",
];

/// A token for `upn` of `tenant` (on `device` if given), from the server's dev issuer.
pub fn user_token(s: &TestServer, tenant: &str, upn: &str, device: Option<&str>) -> String {
    let mut r = request(tenant, &[]);
    r.user_principal_name = upn.into();
    r.device_id = device.map(str::to_owned);
    s.dev.mint(&r).expect("mint")
}

async fn admin_post(
    s: &TestServer,
    token: &str,
    path: &str,
    body: serde_json::Value,
) -> serde_json::Value {
    let (st, b) = send(s.client.post(s.url(path)).bearer_auth(token).json(&body)).await;
    assert!(st == 201 || st == 204, "POST {path}: {st} {b}");
    b
}

/// Tenant `contoso` where helen@contoso.com (Help desk, Help Desk Operator over all users) may
/// help sam@contoso.com; returns an admin token.
pub async fn help_desk_tenant(s: &TestServer) -> String {
    use serde_json::json;
    let admin = s.token("contoso", ADMIN_ALL);
    s.patch(
        SETTINGS,
        &admin,
        &json!({"remoteAssistanceState": "enabled", "allowSessionsToUnenrolledDevices": true}),
    )
    .await;
    let helen = admin_post(
        s,
        &admin,
        "/beta/users",
        json!({"userPrincipalName": "helen@contoso.com", "displayName": "Helen Helper"}),
    )
    .await;
    admin_post(
        s,
        &admin,
        "/beta/users",
        json!({"userPrincipalName": "sam@contoso.com", "displayName": "Sam Sharer"}),
    )
    .await;
    let g = admin_post(
        s,
        &admin,
        "/beta/groups",
        json!({"displayName": "Help desk"}),
    )
    .await;
    let gid = g["id"].as_str().expect("group id");
    admin_post(
        s,
        &admin,
        &format!("/beta/groups/{gid}/members/$ref"),
        json!({"@odata.id": helen["id"]}),
    )
    .await;
    admin_post(
        s,
        &admin,
        "/beta/deviceManagement/roleAssignments",
        json!({"displayName": "HDO", "members": [gid], "scopeType": "allLicensedUsers", "roleDefinition@odata.bind": "builtin-help-desk-operator"}),
    )
    .await;
    admin
}

/// A client config trusting the server's certificate.
pub fn client_tls(s: &TestServer) -> std::sync::Arc<rustls::ClientConfig> {
    assist_client::tls::client_config(&s.server.cert_path).expect("client TLS")
}

/// A signalling connection with `token`.
pub async fn signal_client(s: &TestServer, token: &str) -> assist_client::signal::SignalClient {
    assist_client::signal::SignalClient::connect(
        s.server.https_addr,
        "localhost",
        client_tls(s),
        Some(token),
    )
    .await
    .expect("signalling connects")
}

/// The next signalling message of `type` (others are skipped; a close fails the test).
pub async fn expect_signal(
    c: &mut assist_client::signal::SignalClient,
    ty: &str,
) -> serde_json::Value {
    use assist_client::signal::SignalEvent;
    loop {
        let ev = tokio::time::timeout(Duration::from_secs(10), c.recv())
            .await
            .expect("a message within 10 s")
            .expect("no client error");
        match ev {
            SignalEvent::Message(m) if m["type"] == ty => return m,
            SignalEvent::Message(_) => continue,
            SignalEvent::Closed(code) => panic!("closed ({code:?}) while waiting for {ty}"),
        }
    }
}

/// helen and sam through code, redemption, a view-only request and consent, up to the
/// moment the session is granted. Returns (helper, sharer, session id).
pub async fn granted_session(
    s: &TestServer,
) -> (
    assist_client::signal::SignalClient,
    assist_client::signal::SignalClient,
    String,
) {
    use serde_json::json;
    let mut h = signal_client(s, &user_token(s, "contoso", "helen@contoso.com", None)).await;
    let mut sh = signal_client(s, &user_token(s, "contoso", "sam@contoso.com", None)).await;
    h.send(&json!({"id": 1, "type": "requestCode"}))
        .await
        .expect("send");
    let issued = expect_signal(&mut h, "codeIssued").await;
    let sid = issued["sessionId"].as_str().expect("sessionId").to_owned();
    sh.send(&json!({"id": 1, "type": "redeemCode", "code": issued["code"]}))
        .await
        .expect("send");
    expect_signal(&mut sh, "sessionJoined").await;
    expect_signal(&mut h, "sessionJoined").await;
    h.send(&json!({"id": 2, "type": "requestMode", "sessionId": sid, "mode": "viewOnly", "acknowledgeWarnings": ["deviceUnenrolled"]}))
        .await
        .expect("send");
    expect_signal(&mut sh, "consentRequested").await;
    sh.send(&json!({"id": 2, "type": "consent", "sessionId": sid, "allow": true}))
        .await
        .expect("send");
    (h, sh, sid)
}
