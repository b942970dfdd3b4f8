//! The dev issuer's OpenID Connect provider, against a real assistd over real TLS: discovery,
//! the sign-in page (CSRF cookie, directory users), authorization code with PKCE (required,
//! checked, single use, redirect URI bound), refresh, the device grant and its verification
//! page, and that the provider disappears with the dev issuer.

mod common;

use common::*;
use std::collections::HashMap;

const VERIFIER: &str = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk";
const CHALLENGE: &str = "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM";

fn no_redirects(ts: &TestServer) -> reqwest::Client {
    let pem = std::fs::read(&ts.server.cert_path).unwrap();
    reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(&pem).unwrap())
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

fn query_of(location: &str) -> HashMap<String, String> {
    let q = location.split_once('?').map(|(_, q)| q).unwrap_or("");
    form_urlencoded::parse(q.as_bytes()).into_owned().collect()
}

fn redirect_uri(ts: &TestServer) -> String {
    format!("{}/helper/", ts.base)
}

fn authorize_url(ts: &TestServer, extra: &[(&str, &str)]) -> String {
    let mut q = form_urlencoded::Serializer::new(String::new());
    let ru = redirect_uri(ts);
    let mut params: Vec<(&str, &str)> = vec![
        ("client_id", "assist-web"),
        ("redirect_uri", &ru),
        ("response_type", "code"),
        ("scope", "openid profile offline_access"),
        ("state", "st-1"),
        ("nonce", "n-1"),
        ("code_challenge", CHALLENGE),
        ("code_challenge_method", "S256"),
    ];
    for (k, v) in extra {
        params.retain(|(x, _)| x != k);
        if !v.is_empty() {
            params.push((k, v));
        }
    }
    for (k, v) in params {
        q.append_pair(k, v);
    }
    format!("{}/dev-issuer/authorize?{}", ts.base, q.finish())
}

/// Opens the sign-in page: (request id, cookie header value, html).
async fn open_page(ts: &TestServer, c: &reqwest::Client, url: &str) -> (String, String, String) {
    let resp = c.get(url).send().await.unwrap();
    assert_eq!(resp.status(), 200, "sign-in page");
    let csp = resp.headers()["content-security-policy"].to_str().unwrap();
    assert!(
        csp.contains("form-action 'self'") && !csp.contains("script-src"),
        "{csp}"
    );
    let cookie = resp.headers()["set-cookie"].to_str().unwrap().to_owned();
    assert!(
        cookie.starts_with("__Host-assist-dev-signin=")
            && cookie.contains("HttpOnly")
            && cookie.contains("SameSite=Strict")
            && cookie.contains("Secure"),
        "{cookie}"
    );
    let cookie = cookie.split(';').next().unwrap().to_owned();
    let html = resp.text().await.unwrap();
    let id = html
        .split("name=\"request\" value=\"")
        .nth(1)
        .and_then(|r| r.split('"').next())
        .expect("request id in the page")
        .to_owned();
    let _ = ts;
    (id, cookie, html)
}

async fn post_form(
    c: &reqwest::Client,
    url: &str,
    cookie: Option<&str>,
    form: &[(&str, &str)],
) -> reqwest::Response {
    let body = form_urlencoded::Serializer::new(String::new())
        .extend_pairs(form)
        .finish();
    let mut req = c
        .post(url)
        .header("content-type", "application/x-www-form-urlencoded")
        .body(body);
    if let Some(ck) = cookie {
        req = req.header("cookie", ck);
    }
    req.send().await.unwrap()
}

/// Signs in as `upn` of `tenant` through the page; returns the redirect's query.
async fn sign_in_as(
    ts: &TestServer,
    c: &reqwest::Client,
    tenant: &str,
    upn: &str,
    admin: bool,
) -> HashMap<String, String> {
    let (id, cookie, _) = open_page(ts, c, &authorize_url(ts, &[])).await;
    let mut form = vec![
        ("request", id.as_str()),
        ("user", "other"),
        ("tenant", tenant),
        ("upn", upn),
        ("name", "Test User"),
    ];
    if admin {
        form.push(("administrator", "1"));
    }
    let resp = post_form(
        c,
        &format!("{}/dev-issuer/authorize", ts.base),
        Some(&cookie),
        &form,
    )
    .await;
    assert_eq!(resp.status(), 303);
    let location = resp.headers()["location"].to_str().unwrap().to_owned();
    assert!(location.starts_with(&redirect_uri(ts)), "{location}");
    query_of(&location)
}

async fn token(
    c: &reqwest::Client,
    ts: &TestServer,
    form: &[(&str, &str)],
) -> (u16, serde_json::Value) {
    let resp = post_form(c, &format!("{}/dev-issuer/token", ts.base), None, form).await;
    let status = resp.status().as_u16();
    assert_eq!(resp.headers()["cache-control"], "no-store");
    (status, resp.json().await.unwrap())
}

fn claims(jwt: &str) -> serde_json::Value {
    use base64::Engine;
    let p = jwt.split('.').nth(1).unwrap();
    serde_json::from_slice(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(p)
            .unwrap(),
    )
    .unwrap()
}

/// The API accepts the token (it validates): 200 when it carries admin rights (`wids` Global
/// Administrator grants every admin call), 403 when it does not; never 401.
async fn accepted(ts: &TestServer, access_token: &str) -> bool {
    matches!(ts.get(SETTINGS, Some(access_token)).await.0, 200 | 403)
}

#[tokio::test]
async fn discovery_and_page_configuration() {
    let dir = tempfile::tempdir().unwrap();
    let ts = TestServer::start(dir.path()).await;
    let (s, cfg) = ts.get("/v1/auth/config", None).await;
    assert_eq!(s, 200);
    let iss = format!("{}/dev-issuer", ts.base);
    assert_eq!(cfg["issuer"], iss.as_str());
    assert_eq!(cfg["clientId"], "assist-web");
    assert_eq!(cfg["cliClientId"], "assist-cli");
    let (s, d) = ts
        .get("/dev-issuer/.well-known/openid-configuration", None)
        .await;
    assert_eq!(s, 200);
    assert_eq!(d["issuer"], iss.as_str());
    assert_eq!(
        d["code_challenge_methods_supported"],
        serde_json::json!(["S256"])
    );
    assert_eq!(
        d["device_authorization_endpoint"],
        format!("{iss}/devicecode").as_str()
    );
    let (s, keys) = ts.get("/dev-issuer/keys", None).await;
    assert_eq!(s, 200);
    assert_eq!(keys["keys"][0]["kid"], ts.dev.kid());
    let auth = ts.get("/assets/auth.mjs", None).await;
    assert_eq!(auth.0, 200);
}

#[tokio::test]
async fn authorization_requests_without_pkce_or_with_a_foreign_redirect_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let ts = TestServer::start(dir.path()).await;
    let c = no_redirects(&ts);
    for (extra, error) in [
        (vec![("code_challenge", "")], "invalid_request"),
        (vec![("code_challenge_method", "plain")], "invalid_request"),
        (
            vec![("response_type", "token")],
            "unsupported_response_type",
        ),
    ] {
        let resp = c.get(authorize_url(&ts, &extra)).send().await.unwrap();
        assert_eq!(resp.status(), 303, "{extra:?}");
        let q = query_of(resp.headers()["location"].to_str().unwrap());
        assert_eq!(q["error"], error, "{extra:?}");
        assert_eq!(q["state"], "st-1");
        assert!(!q.contains_key("code"));
    }
    for bad in [
        format!("{}/helper/evil", ts.base),
        "https://evil.example/helper/".to_owned(),
    ] {
        let resp = c
            .get(authorize_url(&ts, &[("redirect_uri", &bad)]))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 400, "never redirect to {bad}");
        assert!(resp.headers().get("location").is_none());
    }
    let resp = c
        .get(authorize_url(&ts, &[("client_id", "someone-else")]))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);
}

#[tokio::test]
async fn code_flow_pkce_single_use_redirect_bound_and_refresh() {
    let dir = tempfile::tempdir().unwrap();
    let ts = TestServer::start(dir.path()).await;
    let c = no_redirects(&ts);
    // A directory user is listed as a button named by their UPN.
    let admin = ts.token("contoso", &["User.ReadWrite.All"]);
    let (s, helen) = send(
        ts.client
            .post(ts.url("/beta/users"))
            .bearer_auth(&admin)
            .json(&serde_json::json!({"userPrincipalName": "helen@contoso.com", "displayName": "Helen Helper"})),
    )
    .await;
    assert_eq!(s, 201, "{helen}");
    let (id, cookie, html) = open_page(&ts, &c, &authorize_url(&ts, &[])).await;
    let value = format!("contoso {}", helen["id"].as_str().unwrap());
    assert!(
        html.contains(&format!("value=\"{value}\">helen@contoso.com</button>")),
        "{html}"
    );
    let url = format!("{}/dev-issuer/authorize", ts.base);
    // The form without the browser's cookie, or from another origin, is refused.
    let resp = post_form(&c, &url, None, &[("request", &id), ("user", &value)]).await;
    assert_eq!(resp.status(), 403);
    let resp = c
        .post(&url)
        .header("content-type", "application/x-www-form-urlencoded")
        .header("cookie", &cookie)
        .header("origin", "https://evil.example")
        .body(format!(
            "request={id}&user=other&tenant=contoso&upn=x%40contoso.com"
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 403);
    let resp = post_form(
        &c,
        &url,
        Some(&cookie),
        &[("request", &id), ("user", &value)],
    )
    .await;
    assert_eq!(resp.status(), 303);
    let q = query_of(resp.headers()["location"].to_str().unwrap());
    assert_eq!(q["state"], "st-1");
    assert_eq!(q["iss"], format!("{}/dev-issuer", ts.base));
    let code = q["code"].clone();
    // The page's request is used up.
    let resp = post_form(
        &c,
        &url,
        Some(&cookie),
        &[("request", &id), ("user", &value)],
    )
    .await;
    assert_eq!(resp.status(), 403);

    let ru = redirect_uri(&ts);
    // Wrong verifier: refused, and the code is gone.
    let wrong = "a".repeat(43);
    let (s, e) = token(
        &c,
        &ts,
        &[
            ("grant_type", "authorization_code"),
            ("client_id", "assist-web"),
            ("code", &code),
            ("redirect_uri", &ru),
            ("code_verifier", &wrong),
        ],
    )
    .await;
    assert_eq!(
        (s, e["error"].as_str()),
        (400, Some("invalid_grant")),
        "{e}"
    );
    let (s, e) = token(
        &c,
        &ts,
        &[
            ("grant_type", "authorization_code"),
            ("client_id", "assist-web"),
            ("code", &code),
            ("redirect_uri", &ru),
            ("code_verifier", VERIFIER),
        ],
    )
    .await;
    assert_eq!(
        (s, e["error"].as_str()),
        (400, Some("invalid_grant")),
        "used code: {e}"
    );

    // No verifier at all.
    let q = sign_in_as(&ts, &c, "contoso", "sam@contoso.com", false).await;
    let (s, e) = token(
        &c,
        &ts,
        &[
            ("grant_type", "authorization_code"),
            ("client_id", "assist-web"),
            ("code", &q["code"]),
            ("redirect_uri", &ru),
        ],
    )
    .await;
    assert_eq!(
        (s, e["error"].as_str()),
        (400, Some("invalid_request")),
        "{e}"
    );

    // Another redirect URI than the request's.
    let q = sign_in_as(&ts, &c, "contoso", "sam@contoso.com", false).await;
    let other = format!("{}/admin/", ts.base);
    let (s, e) = token(
        &c,
        &ts,
        &[
            ("grant_type", "authorization_code"),
            ("client_id", "assist-web"),
            ("code", &q["code"]),
            ("redirect_uri", &other),
            ("code_verifier", VERIFIER),
        ],
    )
    .await;
    assert_eq!(
        (s, e["error"].as_str()),
        (400, Some("invalid_grant")),
        "{e}"
    );

    // The good exchange, once.
    let q = sign_in_as(&ts, &c, "contoso", "sam@contoso.com", true).await;
    let form = [
        ("grant_type", "authorization_code"),
        ("client_id", "assist-web"),
        ("code", q["code"].as_str()),
        ("redirect_uri", ru.as_str()),
        ("code_verifier", VERIFIER),
    ];
    let (s, t) = token(&c, &ts, &form).await;
    assert_eq!(s, 200, "{t}");
    assert_eq!(t["token_type"], "Bearer");
    let at = t["access_token"].as_str().unwrap();
    // "Administrator" ticked: wids makes the caller a Global Administrator.
    assert_eq!(ts.get(SETTINGS, Some(at)).await.0, 200);
    let ac = claims(at);
    assert_eq!(ac["iss"], "urn:assist:dev-issuer");
    assert_eq!(ac["upn"], "sam@contoso.com");
    assert_eq!(ac["tid"], "contoso");
    assert_eq!(
        ac["wids"],
        serde_json::json!(["62e90394-69f5-4237-9190-012177145e10"])
    );
    let idc = claims(t["id_token"].as_str().unwrap());
    assert_eq!(idc["nonce"], "n-1");
    assert_eq!(idc["aud"], "assist-web");
    assert_eq!(idc["iss"], format!("{}/dev-issuer", ts.base));
    let (s, e) = token(&c, &ts, &form).await;
    assert_eq!(
        (s, e["error"].as_str()),
        (400, Some("invalid_grant")),
        "{e}"
    );
    // Reusing the code revoked the refresh token it gave.
    let rt = t["refresh_token"].as_str().unwrap();
    let (s, _) = token(
        &c,
        &ts,
        &[
            ("grant_type", "refresh_token"),
            ("client_id", "assist-web"),
            ("refresh_token", rt),
        ],
    )
    .await;
    assert_eq!(s, 400);

    // Refresh: a new access token and a rotated refresh token.
    let q = sign_in_as(&ts, &c, "contoso", "sam@contoso.com", false).await;
    let (_, t) = token(
        &c,
        &ts,
        &[
            ("grant_type", "authorization_code"),
            ("client_id", "assist-web"),
            ("code", &q["code"]),
            ("redirect_uri", &ru),
            ("code_verifier", VERIFIER),
        ],
    )
    .await;
    let rt = t["refresh_token"].as_str().unwrap().to_owned();
    let (s, t2) = token(
        &c,
        &ts,
        &[
            ("grant_type", "refresh_token"),
            ("client_id", "assist-web"),
            ("refresh_token", &rt),
        ],
    )
    .await;
    assert_eq!(s, 200, "{t2}");
    assert!(accepted(&ts, t2["access_token"].as_str().unwrap()).await);
    assert_ne!(t2["refresh_token"], rt.as_str());
    assert!(claims(t2["access_token"].as_str().unwrap())
        .get("wids")
        .is_none());
    let (s, e) = token(
        &c,
        &ts,
        &[
            ("grant_type", "refresh_token"),
            ("client_id", "assist-web"),
            ("refresh_token", &rt),
        ],
    )
    .await;
    assert_eq!(
        (s, e["error"].as_str()),
        (400, Some("invalid_grant")),
        "rotated: {e}"
    );
    // Revocation.
    let rt2 = t2["refresh_token"].as_str().unwrap();
    let resp = post_form(
        &c,
        &format!("{}/dev-issuer/revoke", ts.base),
        None,
        &[("token", rt2)],
    )
    .await;
    assert_eq!(resp.status(), 200);
    let (s, _) = token(
        &c,
        &ts,
        &[
            ("grant_type", "refresh_token"),
            ("client_id", "assist-web"),
            ("refresh_token", rt2),
        ],
    )
    .await;
    assert_eq!(s, 400);
    let (s, e) = token(
        &c,
        &ts,
        &[("grant_type", "password"), ("client_id", "assist-web")],
    )
    .await;
    assert_eq!(
        (s, e["error"].as_str()),
        (400, Some("unsupported_grant_type"))
    );
}

async fn device_start(c: &reqwest::Client, ts: &TestServer) -> serde_json::Value {
    let resp = post_form(
        c,
        &format!("{}/dev-issuer/devicecode", ts.base),
        None,
        &[
            ("client_id", "assist-cli"),
            ("scope", "openid offline_access"),
        ],
    )
    .await;
    assert_eq!(resp.status(), 200);
    resp.json().await.unwrap()
}

async fn device_poll(c: &reqwest::Client, ts: &TestServer, dc: &str) -> (u16, serde_json::Value) {
    token(
        c,
        ts,
        &[
            ("grant_type", "urn:ietf:params:oauth:grant-type:device_code"),
            ("client_id", "assist-cli"),
            ("device_code", dc),
        ],
    )
    .await
}

async fn device_answer(
    c: &reqwest::Client,
    ts: &TestServer,
    d: &serde_json::Value,
    approve: bool,
) -> String {
    let (id, cookie, html) =
        open_page(ts, c, d["verification_uri_complete"].as_str().unwrap()).await;
    assert!(
        html.contains(&d["user_code"].as_str().unwrap().replace('-', "")),
        "the page shows the code"
    );
    let mut form = vec![("request", id.as_str())];
    if approve {
        form.extend([
            ("user", "other"),
            ("tenant", "contoso"),
            ("upn", "sam@contoso.com"),
        ]);
    } else {
        form.push(("deny", "1"));
    }
    let resp = post_form(
        c,
        &format!("{}/dev-issuer/device", ts.base),
        Some(&cookie),
        &form,
    )
    .await;
    assert_eq!(resp.status(), 200);
    resp.text().await.unwrap()
}

#[tokio::test]
async fn device_grant_pending_slow_down_approved_denied() {
    let dir = tempfile::tempdir().unwrap();
    let ts = TestServer::start(dir.path()).await;
    let c = no_redirects(&ts);
    let d = device_start(&c, &ts).await;
    assert_eq!(d["interval"], 5);
    assert_eq!(
        d["verification_uri"],
        format!("{}/dev-issuer/device", ts.base)
    );
    let dc = d["device_code"].as_str().unwrap();
    let (s, e) = device_poll(&c, &ts, dc).await;
    assert_eq!(
        (s, e["error"].as_str()),
        (400, Some("authorization_pending"))
    );
    let (s, e) = device_poll(&c, &ts, dc).await;
    assert_eq!((s, e["error"].as_str()), (400, Some("slow_down")));
    // The page without a code asks for one; a wrong code says so.
    let resp = c
        .get(format!("{}/dev-issuer/device", ts.base))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert!(resp.text().await.unwrap().contains("name=\"user_code\""));
    let resp = c
        .get(format!("{}/dev-issuer/device?user_code=BCDF-GHJK", ts.base))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);
    let page = device_answer(&c, &ts, &d, true).await;
    assert!(page.contains("signed in"), "{page}");
    let (s, t) = device_poll(&c, &ts, dc).await;
    assert_eq!(s, 200, "{t}");
    assert!(accepted(&ts, t["access_token"].as_str().unwrap()).await);
    assert_eq!(
        claims(t["access_token"].as_str().unwrap())["upn"],
        "sam@contoso.com"
    );
    let (s, e) = device_poll(&c, &ts, dc).await;
    assert_eq!(
        (s, e["error"].as_str()),
        (400, Some("invalid_grant")),
        "used: {e}"
    );
    // The CLI's refresh token works for the CLI's client only.
    let rt = t["refresh_token"].as_str().unwrap();
    let (s, _) = token(
        &c,
        &ts,
        &[
            ("grant_type", "refresh_token"),
            ("client_id", "assist-web"),
            ("refresh_token", rt),
        ],
    )
    .await;
    assert_eq!(s, 400);

    let d = device_start(&c, &ts).await;
    device_answer(&c, &ts, &d, false).await;
    let (s, e) = device_poll(&c, &ts, d["device_code"].as_str().unwrap()).await;
    assert_eq!((s, e["error"].as_str()), (400, Some("access_denied")));
    // Expiry is tested on virtual time in assist-identity's dev_provider tests.
    let resp = post_form(
        &c,
        &format!("{}/dev-issuer/devicecode", ts.base),
        None,
        &[("client_id", "assist-web")],
    )
    .await;
    assert_eq!(resp.status(), 401);
}

#[tokio::test]
async fn no_provider_without_the_dev_issuer() {
    let dir = tempfile::tempdir().unwrap();
    let jwks = dir.path().join("jwks.json");
    std::fs::write(&jwks, r#"{"keys":[]}"#).unwrap();
    let mut settings = assistd::Settings::ephemeral(dir.path());
    settings.auth.dev_issuer = false;
    settings.auth.issuers.push(assistd::config::IssuerSettings {
        issuer: "https://idp.example".into(),
        keys: assistd::config::IssuerKeys::File(jwks),
        tenants: assist_identity::TenantBinding::Only(vec!["t1".into()]),
    });
    let ts = TestServer::start_with(settings).await;
    for path in [
        "/dev-issuer/.well-known/openid-configuration",
        "/dev-issuer/keys",
        "/dev-issuer/authorize",
    ] {
        assert_eq!(ts.get(path, None).await.0, 404, "{path}");
    }
    let (s, body) = ts.get("/v1/auth/config", None).await;
    assert_eq!(s, 404);
    assert_graph_error(&body, "ResourceNotFound");
}
