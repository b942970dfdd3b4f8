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

/// The server's `/metrics` text.
pub async fn metrics_text(s: &TestServer) -> String {
    reqwest::get(format!("http://{}/metrics", s.server.metrics_addr))
        .await
        .expect("metrics answer")
        .text()
        .await
        .expect("metrics text")
}

/// The value of a metric line beginning with `series` (0 if absent).
pub fn metric_value(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.trim().parse().ok())
        .unwrap_or(0.0)
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

/// [`ADMIN_ALL`] but managed devices.
pub const ADMIN_BUT_DEVICES: &[&str] = &[
    "DeviceManagementServiceConfig.ReadWrite.All",
    "User.ReadWrite.All",
    "Group.ReadWrite.All",
    "DeviceManagementRBAC.ReadWrite.All",
    "Domain.ReadWrite.All",
];

/// A token for `upn` of `tenant` (on `device` if given), from the server's dev issuer.
pub fn user_token(s: &TestServer, tenant: &str, upn: &str, device: Option<&str>) -> String {
    user_token_lasting(s, tenant, upn, device, Duration::from_secs(3600))
}

/// [`user_token`] valid for `ttl`.
pub fn user_token_lasting(
    s: &TestServer,
    tenant: &str,
    upn: &str,
    device: Option<&str>,
    ttl: Duration,
) -> String {
    let mut r = request(tenant, &[]);
    r.user_principal_name = upn.into();
    r.device_id = device.map(str::to_owned);
    r.ttl = ttl;
    s.dev.mint(&r).expect("mint")
}

/// `upn` of `contoso` connected to `s`'s signalling.
pub async fn user_client(s: &TestServer, upn: &str) -> assist_client::signal::SignalClient {
    signal_client(s, &user_token(s, "contoso", upn, None)).await
}

/// The response to a PATCH of `{"blockChat": true}` to the settings as `admin`.
pub async fn patch_block_chat(s: &TestServer, admin: &str) -> reqwest::Response {
    s.client
        .patch(s.url(SETTINGS))
        .bearer_auth(admin)
        .json(&serde_json::json!({"blockChat": true}))
        .send()
        .await
        .expect("request sent")
}

/// POSTs `body` to `path` as `token`; asserts 201 or 204 and returns the body.
pub async fn admin_post(
    s: &TestServer,
    token: &str,
    path: &str,
    body: serde_json::Value,
) -> serde_json::Value {
    let (st, b) = send(s.client.post(s.url(path)).bearer_auth(token).json(&body)).await;
    assert!(st == 201 || st == 204, "POST {path}: {st} {b}");
    b
}

/// How [`help_desk_tenant_with`] sets up tenant `contoso`.
pub struct HelpDeskSetup<'a> {
    /// The roles of the admin token that sets it up (and is returned).
    pub admin_roles: &'a [&'a str],
    /// helen's directory record.
    pub helen: serde_json::Value,
    /// Whether sam@contoso.com gets a directory record too.
    pub with_sam: bool,
    /// A domain added after the users, if any.
    pub domain: Option<&'a str>,
}

impl Default for HelpDeskSetup<'_> {
    fn default() -> Self {
        HelpDeskSetup {
            admin_roles: ADMIN_ALL,
            helen: serde_json::json!({"userPrincipalName": "helen@contoso.com", "displayName": "Helen Helper"}),
            with_sam: true,
            domain: None,
        }
    }
}

/// What [`help_desk_tenant_with`] made.
pub struct HelpDeskTenant {
    /// The admin token.
    pub admin: String,
    /// The id of the Help Desk Operator role assignment.
    pub role_assignment_id: String,
}

/// Tenant `contoso` with Remote Help enabled (sessions to unenrolled devices allowed) where
/// helen@contoso.com (group Help desk, Help Desk Operator over all users) may help sam.
pub async fn help_desk_tenant_with(s: &TestServer, setup: HelpDeskSetup<'_>) -> HelpDeskTenant {
    use serde_json::json;
    let admin = s.token("contoso", setup.admin_roles);
    let (st, b) = s
        .patch(
            SETTINGS,
            &admin,
            &json!({"remoteAssistanceState": "enabled", "allowSessionsToUnenrolledDevices": true}),
        )
        .await;
    assert_eq!(st, 200, "{b}");
    let helen = admin_post(s, &admin, "/beta/users", setup.helen).await;
    if setup.with_sam {
        admin_post(
            s,
            &admin,
            "/beta/users",
            json!({"userPrincipalName": "sam@contoso.com", "displayName": "Sam Sharer"}),
        )
        .await;
    }
    if let Some(domain) = setup.domain {
        admin_post(s, &admin, "/beta/domains", json!({ "id": domain })).await;
    }
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
    let ra = admin_post(
        s,
        &admin,
        "/beta/deviceManagement/roleAssignments",
        json!({"displayName": "HDO", "members": [gid], "scopeType": "allLicensedUsers", "roleDefinition@odata.bind": "builtin-help-desk-operator"}),
    )
    .await;
    let role_assignment_id = ra["id"].as_str().expect("role assignment id").to_owned();
    HelpDeskTenant {
        admin,
        role_assignment_id,
    }
}

/// [`help_desk_tenant_with`] its defaults; returns the admin token.
pub async fn help_desk_tenant(s: &TestServer) -> String {
    help_desk_tenant_with(s, HelpDeskSetup::default())
        .await
        .admin
}

/// [`help_desk_tenant`] set up with an admin token of `admin_roles`.
pub async fn help_desk_tenant_as(s: &TestServer, admin_roles: &[&str]) -> String {
    help_desk_tenant_with(
        s,
        HelpDeskSetup {
            admin_roles,
            ..Default::default()
        },
    )
    .await
    .admin
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

/// The next signalling event (within 10 s).
pub async fn next_signal(
    c: &mut assist_client::signal::SignalClient,
) -> assist_client::signal::SignalEvent {
    tokio::time::timeout(Duration::from_secs(10), c.recv())
        .await
        .expect("an event within 10 s")
        .expect("no client error")
}

/// The next signalling message of `type` (others are skipped; a close fails the test).
pub async fn expect_signal(
    c: &mut assist_client::signal::SignalClient,
    ty: &str,
) -> serde_json::Value {
    use assist_client::signal::SignalEvent;
    loop {
        match next_signal(c).await {
            SignalEvent::Message(m) if m["type"] == ty => return m,
            SignalEvent::Message(_) => continue,
            SignalEvent::Closed(code) => panic!("closed ({code:?}) while waiting for {ty}"),
        }
    }
}

/// The next `sessionEnded`; asserts its `reason` and `by`.
pub async fn expect_ended(
    c: &mut assist_client::signal::SignalClient,
    reason: &str,
    by: &str,
) -> serde_json::Value {
    let ended = expect_signal(c, "sessionEnded").await;
    assert_eq!(
        (ended["reason"].as_str(), ended["by"].as_str()),
        (Some(reason), Some(by)),
        "{ended}"
    );
    ended
}

/// The close code the signalling connection ends with (messages before it are skipped).
pub async fn expect_signal_close(c: &mut assist_client::signal::SignalClient) -> Option<u16> {
    loop {
        if let assist_client::signal::SignalEvent::Closed(code) = next_signal(c).await {
            return code;
        }
    }
}

/// helen (`h`) pairs with sam (`sh`) by code and asks for view-only (acknowledging the
/// unenrolled device); sam consents. Returns the session id once consent is sent.
pub async fn pair_and_consent(
    h: &mut assist_client::signal::SignalClient,
    sh: &mut assist_client::signal::SignalClient,
) -> String {
    pair_and_consent_to(h, sh, "viewOnly").await
}

/// [`pair_and_consent`] asking for `mode`.
pub async fn pair_and_consent_to(
    h: &mut assist_client::signal::SignalClient,
    sh: &mut assist_client::signal::SignalClient,
    mode: &str,
) -> String {
    use serde_json::json;
    h.send(&json!({"id": 1, "type": "requestCode"}))
        .await
        .expect("send");
    let issued = expect_signal(h, "codeIssued").await;
    let sid = issued["sessionId"].as_str().expect("sessionId").to_owned();
    sh.send(&json!({"id": "r1", "type": "redeemCode", "code": issued["code"]}))
        .await
        .expect("send");
    expect_signal(sh, "sessionJoined").await;
    expect_signal(h, "sessionJoined").await;
    h.send(&json!({"id": 2, "type": "requestMode", "sessionId": sid, "mode": mode, "acknowledgeWarnings": ["deviceUnenrolled"]}))
        .await
        .expect("send");
    expect_signal(sh, "consentRequested").await;
    sh.send(&json!({"id": "r2", "type": "consent", "sessionId": sid, "allow": true}))
        .await
        .expect("send");
    sid
}

/// [`pair_and_consent`], then both sides' `sessionActive`: returns (session id, helper's
/// `sessionActive`, sharer's `sessionActive`).
pub async fn active_session(
    h: &mut assist_client::signal::SignalClient,
    sh: &mut assist_client::signal::SignalClient,
) -> (String, serde_json::Value, serde_json::Value) {
    let sid = pair_and_consent(h, sh).await;
    let h_active = expect_signal(h, "sessionActive").await;
    let s_active = expect_signal(sh, "sessionActive").await;
    (sid, h_active, s_active)
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
    let mut h = user_client(s, "helen@contoso.com").await;
    let mut sh = user_client(s, "sam@contoso.com").await;
    let sid = pair_and_consent(&mut h, &mut sh).await;
    (h, sh, sid)
}

/// Both legs of a relay session on `relay` over WSS: the helper's with `h_ticket`, the
/// sharer's with `s_ticket`. Returns ((helper's sender, receiver), (sharer's sender, receiver)).
pub async fn wss_legs(
    relay: &TestServer,
    h_ticket: &str,
    s_ticket: &str,
) -> (
    (
        assist_client::relay::ClientSender,
        assist_client::relay::ClientReceiver,
    ),
    (
        assist_client::relay::ClientSender,
        assist_client::relay::ClientReceiver,
    ),
) {
    let addr = relay.server.https_addr;
    let h = assist_client::relay::connect_wss(addr, "localhost", client_tls(relay), h_ticket)
        .await
        .expect("the helper's leg connects");
    let s = assist_client::relay::connect_wss(addr, "localhost", client_tls(relay), s_ticket)
        .await
        .expect("the sharer's leg connects");
    (h, s)
}

/// The next screen frame on a relay leg (others are skipped; a close fails the test).
pub async fn next_screen(
    rx: &mut assist_client::relay::ClientReceiver,
) -> assist_relay_proto::frame::Frame {
    use assist_client::relay::ClientEvent;
    use assist_relay_proto::frame::Channel;
    loop {
        match tokio::time::timeout(Duration::from_secs(10), rx.recv())
            .await
            .expect("a frame in time")
            .expect("no client error")
        {
            ClientEvent::Frame(f) if f.header.channel == Channel::Screen => return f,
            ClientEvent::Frame(_) => continue,
            ClientEvent::Closed(c) => panic!("relay leg closed ({c:?}) while waiting for a frame"),
        }
    }
}

/// sam (`sh`) ends session `sid`: helen (`h`) hears that the sharer ended it, and her relay
/// leg `hrx` closes with 4000.
pub async fn sharer_ends_session(
    h: &mut assist_client::signal::SignalClient,
    sh: &mut assist_client::signal::SignalClient,
    sid: &str,
    hrx: &mut assist_client::relay::ClientReceiver,
) {
    use assist_client::relay::ClientEvent;
    sh.send(&serde_json::json!({"id": "r3", "type": "endSession", "sessionId": sid}))
        .await
        .expect("send");
    expect_ended(h, "ended", "sharer").await;
    loop {
        if let ClientEvent::Closed(code) = tokio::time::timeout(Duration::from_secs(10), hrx.recv())
            .await
            .expect("the leg closes in time")
            .expect("no client error")
        {
            assert_eq!(code, Some(4000));
            break;
        }
    }
}

/// The relay's control message in `ev`, if it is one.
pub fn relay_control(
    ev: &assist_client::relay::ClientEvent,
) -> Option<assist_relay_proto::control::RelayControl> {
    use assist_relay_proto::frame::{Channel, FLAG_FROM_RELAY};
    match ev {
        assist_client::relay::ClientEvent::Frame(f)
            if f.header.channel == Channel::Control && f.header.flags & FLAG_FROM_RELAY != 0 =>
        {
            serde_json::from_slice(&f.payload()).ok()
        }
        _ => None,
    }
}

/// Reads the first line of an assistd child's stdout: it must say it is serving.
pub fn until_serving(child: &mut std::process::Child) {
    use std::io::BufRead as _;
    let mut line = String::new();
    std::io::BufReader::new(child.stdout.take().expect("the child's stdout is piped"))
        .read_line(&mut line)
        .expect("the child's first line");
    assert!(line.contains("serving https://"), "{line}");
}

/// The record of session `sid` of tenant `contoso` in `store`.
pub async fn session_record(
    store: &assist_store::Store,
    sid: &str,
) -> assist_store::sessions::SessionRow {
    store
        .sessions("contoso")
        .await
        .expect("sessions read")
        .into_iter()
        .find(|r| r.id == sid)
        .expect("the session's record")
}
