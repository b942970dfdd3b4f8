//! Sign-in: the configuration pages read (`GET /v1/auth/config`), and the dev issuer's minimal
//! OpenID Connect provider under `/dev-issuer/` (discovery, authorize with a local sign-in
//! page, token, JWKS, device authorization and its verification page, revocation).
//!
//! The provider exists only while the dev issuer is on. Its grant bookkeeping (PKCE, codes,
//! refresh tokens, device codes, bounds) is `assist_identity::dev_provider`; this module is the
//! HTTP glue: it parses forms, renders the pages (no script; strict CSP; a CSRF cookie), looks
//! the directory's users up and signs tokens with the dev issuer's key. Codes, tokens and
//! verifiers never reach a log line. docs/protocol.md ("Sign-in") describes the endpoints.

use assist_graph::GraphError;
use assist_identity::claims::Claims;
use assist_identity::dev_issuer::{derived_id, DEV_ISSUER};
use assist_identity::dev_provider::{
    self, Answered, AuthorizationRequest, DevProvider, Limits, PendingKind, ProviderError, Subject,
    SystemSecrets, CLI_CLIENT_ID, DEVICE_CODE_GRANT, WEB_CLIENT_ID, WEB_REDIRECT_PATHS,
};
use assist_identity::DevIssuer;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use serde_json::{json, Value};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::config::{SignInSettings, DEFAULT_SIGN_IN_SCOPES};
use crate::state::AppState;

/// Where the dev provider lives, under the server's origin. Its OIDC issuer URL is
/// `{origin}/dev-issuer`.
pub const DEV_PROVIDER_PATH: &str = "/dev-issuer";
/// The Global Administrator directory role's template id (`wids`).
pub const GLOBAL_ADMINISTRATOR: &str = "62e90394-69f5-4237-9190-012177145e10";
/// The CSRF cookie of the provider's pages (`__Host-`: Secure, no Domain, Path=/).
const BROWSER_COOKIE: &str = "__Host-assist-dev-signin";
/// The provider pages' Content-Security-Policy: a stylesheet from this origin, forms posting
/// to this origin, nothing else (no script at all).
pub const PROVIDER_CSP: &str = "default-src 'none'; style-src 'self'; img-src 'self'; \
     form-action 'self'; frame-ancestors 'none'; base-uri 'none'";
/// Largest form body accepted.
const MAX_FORM_BYTES: usize = 16 * 1024;
/// Most directory users listed on the sign-in page.
const MAX_LISTED_USERS: u32 = 50;

/// The sign-in state the server shares: the external provider's settings, or the dev provider.
pub struct SignIn {
    /// An external provider for pages and the CLI.
    pub external: Option<SignInSettings>,
    /// The dev provider (present exactly when the dev issuer is on).
    pub dev: Option<DevOidc>,
    /// The configured public URL (the dev provider's origin when set).
    pub public_url: Option<String>,
}

impl std::fmt::Debug for SignIn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SignIn")
            .field("external", &self.external)
            .field("dev", &self.dev.is_some())
            .finish_non_exhaustive()
    }
}

/// The dev provider: the dev issuer's key and the grant tables.
pub struct DevOidc {
    key: Arc<DevIssuer>,
    provider: Mutex<DevProvider>,
    audience: String,
    access_ttl: Duration,
}

impl DevOidc {
    /// A provider signing with `key`, access tokens for `audience` lasting `access_ttl`.
    pub fn new(key: Arc<DevIssuer>, audience: String, access_ttl: Duration) -> Self {
        DevOidc {
            key,
            provider: Mutex::new(DevProvider::new(Limits::default(), Box::new(SystemSecrets))),
            audience,
            access_ttl,
        }
    }

    fn with<T>(&self, f: impl FnOnce(&mut DevProvider) -> T) -> T {
        // A panic while holding the lock cannot leave the tables inconsistent in a way that
        // matters more than losing sign-ins in flight: keep using them.
        let mut g = match self.provider.lock() {
            Ok(g) => g,
            Err(poisoned) => poisoned.into_inner(),
        };
        f(&mut g)
    }
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs()
}

/// The routes: `/v1/auth/config` always, `/dev-issuer/…` when the dev provider is on.
pub fn routes(dev_on: bool) -> Router<AppState> {
    let r = Router::new().route("/v1/auth/config", get(config));
    if !dev_on {
        return r;
    }
    let p = |s: &str| format!("{DEV_PROVIDER_PATH}{s}");
    r.route(&p("/.well-known/openid-configuration"), get(discovery))
        .route(&p("/keys"), get(keys))
        .route(&p("/authorize"), get(authorize_page).post(authorize_answer))
        .route(&p("/token"), axum::routing::post(token))
        .route(&p("/devicecode"), axum::routing::post(device_authorization))
        .route(&p("/device"), get(device_page).post(device_answer))
        .route(&p("/revoke"), axum::routing::post(revoke))
}

/// The origin pages and the provider are reached at: the public URL, else `https://{Host}`.
fn origin(state: &AppState, headers: &HeaderMap) -> Option<String> {
    if let Some(u) = &state.sign_in.public_url {
        return Some(u.clone());
    }
    let host = headers.get(header::HOST)?.to_str().ok()?;
    let ok = !host.is_empty()
        && host.len() <= 255
        && host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b':' | b'[' | b']'));
    ok.then(|| format!("https://{host}"))
}

fn issuer_url(origin: &str) -> String {
    format!("{origin}{DEV_PROVIDER_PATH}")
}

fn no_store(mut resp: Response) -> Response {
    let h = resp.headers_mut();
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
    resp
}

fn bad_host() -> Response {
    crate::api::ApiError(GraphError::bad_request(
        "the request has no usable Host header",
    ))
    .into_response()
}

/// `GET /v1/auth/config`: what the pages' auth.mjs and the CLI sign in with.
async fn config(State(state): State<AppState>, headers: HeaderMap) -> Response {
    let si = &state.sign_in;
    let body = if let Some(ext) = &si.external {
        json!({
            "issuer": ext.issuer, "clientId": ext.client_id,
            "cliClientId": ext.cli_client_id, "scopes": ext.scopes, "devProvider": false,
        })
    } else if si.dev.is_some() {
        let Some(o) = origin(&state, &headers) else {
            return bad_host();
        };
        json!({
            "issuer": issuer_url(&o), "clientId": WEB_CLIENT_ID,
            "cliClientId": CLI_CLIENT_ID, "scopes": DEFAULT_SIGN_IN_SCOPES, "devProvider": true,
        })
    } else {
        return crate::api::ApiError(GraphError::not_found(
            "no sign-in provider is configured: set [auth.sign_in] or turn the dev issuer on",
        ))
        .into_response();
    };
    let mut resp = axum::Json(body).into_response();
    resp.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    resp
}

async fn discovery(State(state): State<AppState>, headers: HeaderMap) -> Response {
    let Some(o) = origin(&state, &headers) else {
        return bad_host();
    };
    let iss = issuer_url(&o);
    axum::Json(json!({
        "issuer": iss,
        "authorization_endpoint": format!("{iss}/authorize"),
        "token_endpoint": format!("{iss}/token"),
        "jwks_uri": format!("{iss}/keys"),
        "device_authorization_endpoint": format!("{iss}/devicecode"),
        "revocation_endpoint": format!("{iss}/revoke"),
        "response_types_supported": ["code"],
        "response_modes_supported": ["query"],
        "grant_types_supported": ["authorization_code", "refresh_token", DEVICE_CODE_GRANT],
        "code_challenge_methods_supported": ["S256"],
        "token_endpoint_auth_methods_supported": ["none"],
        "subject_types_supported": ["public"],
        "id_token_signing_alg_values_supported": ["ES256"],
        "scopes_supported": ["openid", "profile", "offline_access"],
        "claims_supported": ["sub", "tid", "oid", "upn", "preferred_username", "name", "wids", "nonce"],
        "authorization_response_iss_parameter_supported": true,
    }))
    .into_response()
}

async fn keys(State(state): State<AppState>) -> Response {
    match &state.sign_in.dev {
        Some(d) => axum::Json(d.key.jwks().clone()).into_response(),
        None => StatusCode::NOT_FOUND.into_response(),
    }
}

/// Parses an `application/x-www-form-urlencoded` body or query; a repeated parameter is an
/// error (RFC 6749 §3.1).
fn parse_form(bytes: &[u8]) -> Result<Vec<(String, String)>, ProviderError> {
    if bytes.len() > MAX_FORM_BYTES {
        return Err(ProviderError::InvalidRequest("the request is too large"));
    }
    let mut out: Vec<(String, String)> = Vec::new();
    for (k, v) in form_urlencoded::parse(bytes) {
        if out.iter().any(|(x, _)| x == k.as_ref()) {
            return Err(ProviderError::InvalidRequest("a parameter is repeated"));
        }
        out.push((k.into_owned(), v.into_owned()));
    }
    Ok(out)
}

fn param(form: &[(String, String)], name: &str) -> Option<String> {
    form.iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.clone())
        .filter(|v| !v.is_empty())
}

/// An OAuth error response (RFC 6749 §5.2).
fn oauth_error(e: &ProviderError) -> Response {
    let status = match e {
        ProviderError::InvalidClient => StatusCode::UNAUTHORIZED,
        ProviderError::Busy => StatusCode::SERVICE_UNAVAILABLE,
        _ => StatusCode::BAD_REQUEST,
    };
    no_store(
        (
            status,
            axum::Json(json!({"error": e.code(), "error_description": e.to_string()})),
        )
            .into_response(),
    )
}

fn browser_cookie(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|c| c.trim().split_once('='))
        .find(|(k, _)| *k == BROWSER_COOKIE)
        .map(|(_, v)| v.to_owned())
        .filter(|v| {
            v.len() == 43
                && v.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        })
}

/// The browser's CSRF value, and the `Set-Cookie` to send when it is new.
fn browser_binding(dev: &DevOidc, headers: &HeaderMap) -> (String, Option<HeaderValue>) {
    if let Some(v) = browser_cookie(headers) {
        return (v, None);
    }
    let v = dev.with(|p| p.secret());
    let cookie = format!("{BROWSER_COOKIE}={v}; Path=/; Secure; HttpOnly; SameSite=Strict");
    (v, HeaderValue::from_str(&cookie).ok())
}

/// A form post must come from this origin's pages (when the browser says where it comes from).
fn same_origin(state: &AppState, headers: &HeaderMap) -> bool {
    match headers.get(header::ORIGIN).and_then(|v| v.to_str().ok()) {
        None => true,
        Some(o) => origin(state, headers).is_some_and(|mine| mine == o),
    }
}

fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

fn html_page(status: StatusCode, title: &str, body: &str, cookie: Option<HeaderValue>) -> Response {
    let html = format!(
        "<!doctype html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n\
         <title>{t} · Assist dev sign-in</title>\n\
         <link rel=\"stylesheet\" href=\"/assets/dev-signin.css\">\n</head>\n<body>\n<main>\n\
         <p class=\"banner\">Development sign-in: anyone who reaches this page can sign in as anyone. \
         Turn the dev issuer off in production.</p>\n<h1>{t}</h1>\n{body}\n</main>\n</body>\n</html>\n",
        t = escape(title)
    );
    let mut resp = (status, html).into_response();
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(PROVIDER_CSP),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    // Not `no-referrer`: with it, browsers send `Origin: null` on the form's post, and the
    // post's Origin is checked.
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("same-origin"),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    if let Some(c) = cookie {
        h.insert(header::SET_COOKIE, c);
    }
    no_store(resp)
}

fn error_page(status: StatusCode, message: &str) -> Response {
    html_page(
        status,
        "Sign-in failed",
        &format!("<p class=\"error\" role=\"alert\">{}</p>", escape(message)),
        None,
    )
}

/// The user picker: one button per directory user (accessible name: the UPN), a form for
/// anyone else, and the Administrator box (applies to whichever button is pressed).
async fn picker(
    state: &AppState,
    action: &str,
    pending_id: &str,
    intro: &str,
    login_hint: Option<&str>,
    deny_label: &str,
) -> String {
    let users = match state
        .store
        .list_objects_all_tenants("user", MAX_LISTED_USERS)
        .await
    {
        Ok(u) => u,
        Err(e) => {
            tracing::warn!(error = %e, "dev sign-in: listing the directory's users failed");
            Vec::new()
        }
    };
    let mut list = String::new();
    for (tenant, u) in &users {
        let (Some(id), Some(upn)) = (u["id"].as_str(), u["userPrincipalName"].as_str()) else {
            continue;
        };
        let name = u["displayName"].as_str().unwrap_or(upn);
        list.push_str(&format!(
            "<li><button type=\"submit\" name=\"user\" value=\"{v}\">{upn}</button> \
             <span class=\"who\">{name} · tenant {tenant}</span></li>\n",
            v = escape(&format!("{tenant} {id}")),
            upn = escape(upn),
            name = escape(name),
            tenant = escape(tenant),
        ));
    }
    let users_html = if list.is_empty() {
        "<p>The directory has no users yet: sign in as someone below.</p>".to_owned()
    } else {
        format!("<h2>Users of the directory</h2>\n<ul class=\"users\">\n{list}</ul>")
    };
    let (hint_tenant, hint_upn) = match login_hint {
        Some(h) => {
            let found = users.iter().find(|(_, u)| {
                u["userPrincipalName"]
                    .as_str()
                    .is_some_and(|x| x.eq_ignore_ascii_case(h))
            });
            (found.map(|(t, _)| t.as_str()).unwrap_or(""), h)
        }
        None => ("", ""),
    };
    format!(
        "<p>{intro}</p>\n<form method=\"post\" action=\"{action}\">\n\
         <input type=\"hidden\" name=\"request\" value=\"{id}\">\n\
         <p class=\"admin\"><input type=\"checkbox\" id=\"administrator\" name=\"administrator\" value=\"1\"> \
         <label for=\"administrator\">Administrator (adds the Global Administrator role, <code>wids</code>, \
         to the token)</label></p>\n\
         {users_html}\n\
         <fieldset>\n<legend>Sign in as another user</legend>\n\
         <p><label for=\"tenant\">Tenant</label> <input id=\"tenant\" name=\"tenant\" value=\"{ht}\" \
         autocomplete=\"off\" spellcheck=\"false\"></p>\n\
         <p><label for=\"upn\">User principal name</label> <input id=\"upn\" name=\"upn\" type=\"email\" \
         value=\"{hu}\" autocomplete=\"off\" spellcheck=\"false\"></p>\n\
         <p><label for=\"name\">Display name</label> <input id=\"name\" name=\"name\" autocomplete=\"off\"></p>\n\
         <p><button type=\"submit\" name=\"user\" value=\"other\">Sign in as this user</button></p>\n\
         </fieldset>\n\
         <p><button type=\"submit\" name=\"deny\" value=\"1\" class=\"secondary\">{deny}</button></p>\n\
         </form>",
        intro = intro,
        action = escape(action),
        id = escape(pending_id),
        ht = escape(hint_tenant),
        hu = escape(hint_upn),
        deny = escape(deny_label),
    )
}

fn valid_tenant(t: &str) -> bool {
    !t.is_empty()
        && t.len() <= 64
        && t.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

/// Who the form names, or why it names nobody usable.
async fn subject_from(state: &AppState, form: &[(String, String)]) -> Result<Subject, String> {
    let administrator = param(form, "administrator").is_some();
    let choice = param(form, "user").ok_or("choose a user")?;
    if choice != "other" {
        let (tenant, id) = choice.split_once(' ').ok_or("unknown user")?;
        let user = state
            .store
            .get_object(tenant, "user", id)
            .await
            .map_err(|_| "the directory could not be read".to_owned())?
            .ok_or("that user is no longer in the directory")?;
        let upn = user["userPrincipalName"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        return Ok(Subject {
            tenant_id: tenant.to_owned(),
            object_id: id.to_owned(),
            display_name: user["displayName"].as_str().unwrap_or(&upn).to_owned(),
            user_principal_name: upn,
            administrator,
        });
    }
    let tenant = param(form, "tenant").unwrap_or_default();
    let tenant = tenant.trim();
    if !valid_tenant(tenant) {
        return Err(
            "the tenant must be 1 to 64 letters, digits, dots, dashes or underscores".into(),
        );
    }
    let upn = param(form, "upn").unwrap_or_default();
    let upn = upn.trim();
    let plausible = upn.len() <= 256
        && upn
            .split_once('@')
            .is_some_and(|(a, b)| !a.is_empty() && !b.is_empty())
        && !upn.chars().any(|c| c.is_whitespace() || c.is_control());
    if !plausible {
        return Err("the user principal name must look like name@domain".into());
    }
    let name = param(form, "name").unwrap_or_default();
    let name = name.trim();
    if name.chars().count() > 128 || name.chars().any(char::is_control) {
        return Err("the display name is too long".into());
    }
    // Someone the directory knows keeps their object id.
    let known = crate::facts::find_user(&state.store, tenant, upn)
        .await
        .map_err(|_| "the directory could not be read".to_owned())?;
    let object_id = known
        .as_ref()
        .and_then(|u| u["id"].as_str())
        .map(str::to_owned)
        .unwrap_or_else(|| derived_id(&[tenant, upn, ""]));
    let display_name = if !name.is_empty() {
        name.to_owned()
    } else {
        known
            .as_ref()
            .and_then(|u| u["displayName"].as_str())
            .map(str::to_owned)
            .unwrap_or_else(|| upn.split('@').next().unwrap_or(upn).to_owned())
    };
    Ok(Subject {
        tenant_id: tenant.to_owned(),
        object_id,
        user_principal_name: upn.to_owned(),
        display_name,
        administrator,
    })
}

fn allowed_redirects(origin: &str) -> Vec<String> {
    WEB_REDIRECT_PATHS
        .iter()
        .map(|p| format!("{origin}{p}"))
        .collect()
}

fn authorization_request(form: &[(String, String)]) -> AuthorizationRequest {
    AuthorizationRequest {
        client_id: param(form, "client_id"),
        redirect_uri: param(form, "redirect_uri"),
        response_type: param(form, "response_type"),
        scope: param(form, "scope"),
        state: param(form, "state"),
        nonce: param(form, "nonce"),
        code_challenge: param(form, "code_challenge"),
        code_challenge_method: param(form, "code_challenge_method"),
        login_hint: param(form, "login_hint"),
    }
}

/// A redirect back to the client with `params` in the query (RFC 6749 §4.1.2).
fn redirect_back(redirect_uri: &str, params: &[(&str, &str)]) -> Response {
    let mut q = form_urlencoded::Serializer::new(String::new());
    for (k, v) in params {
        q.append_pair(k, v);
    }
    let sep = if redirect_uri.contains('?') { '&' } else { '?' };
    let location = format!("{redirect_uri}{sep}{}", q.finish());
    match HeaderValue::from_str(&location) {
        Ok(v) => {
            let mut resp = StatusCode::SEE_OTHER.into_response();
            resp.headers_mut().insert(header::LOCATION, v);
            resp.headers_mut().insert(
                header::REFERRER_POLICY,
                HeaderValue::from_static("no-referrer"),
            );
            no_store(resp)
        }
        Err(_) => error_page(StatusCode::BAD_REQUEST, "The redirect URI is not usable."),
    }
}

fn error_back(redirect_uri: &str, state: Option<&str>, e: &ProviderError, iss: &str) -> Response {
    let desc = e.to_string();
    let mut params = vec![("error", e.code()), ("error_description", desc.as_str())];
    if let Some(s) = state {
        params.push(("state", s));
    }
    params.push(("iss", iss));
    redirect_back(redirect_uri, &params)
}

/// `GET /dev-issuer/authorize`: validates the request and shows the sign-in page.
async fn authorize_page(State(state): State<AppState>, headers: HeaderMap, uri: Uri) -> Response {
    let Some(dev) = &state.sign_in.dev else {
        return StatusCode::NOT_FOUND.into_response();
    };
    let Some(o) = origin(&state, &headers) else {
        return bad_host();
    };
    let form = match parse_form(uri.query().unwrap_or_default().as_bytes()) {
        Ok(f) => f,
        Err(e) => return error_page(StatusCode::BAD_REQUEST, &e.to_string()),
    };
    let req = authorization_request(&form);
    let (browser, cookie) = browser_binding(dev, &headers);
    let begun = dev.with(|p| p.begin_authorization(&req, &allowed_redirects(&o), &browser, now()));
    let id = match begun {
        Ok(id) => id,
        Err(refusal) => {
            return match refusal.redirect {
                Some((uri, st)) => error_back(&uri, st.as_deref(), &refusal.error, &issuer_url(&o)),
                None => error_page(
                    StatusCode::BAD_REQUEST,
                    &format!(
                        "{} (registered: client {WEB_CLIENT_ID}, redirect URIs {}).",
                        refusal.error,
                        allowed_redirects(&o).join(", ")
                    ),
                ),
            }
        }
    };
    let body = picker(
        &state,
        &format!("{DEV_PROVIDER_PATH}/authorize"),
        &id,
        "Choose who you are. The page you came from gets a token for that user.",
        req.login_hint.as_deref(),
        "Cancel",
    )
    .await;
    html_page(StatusCode::OK, "Sign in", &body, cookie)
}

/// `POST /dev-issuer/authorize`: the sign-in page's answer; redirects back with a code.
async fn authorize_answer(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let Some(dev) = &state.sign_in.dev else {
        return StatusCode::NOT_FOUND.into_response();
    };
    let Some(o) = origin(&state, &headers) else {
        return bad_host();
    };
    let form = match parse_form(&body) {
        Ok(f) => f,
        Err(e) => return error_page(StatusCode::BAD_REQUEST, &e.to_string()),
    };
    let Some(browser) = browser_cookie(&headers).filter(|_| same_origin(&state, &headers)) else {
        return error_page(StatusCode::FORBIDDEN, &ProviderError::BadForm.to_string());
    };
    let id = param(&form, "request").unwrap_or_default();
    let subject = if param(&form, "deny").is_some() {
        None
    } else {
        match subject_from(&state, &form).await {
            Ok(s) => Some(s),
            Err(why) => {
                // Show the page again for the same request (it stays pending).
                let pending = dev.with(|p| p.pending(&id, now()).cloned());
                if pending.is_none() {
                    return error_page(StatusCode::FORBIDDEN, &ProviderError::BadForm.to_string());
                }
                let body = picker(
                    &state,
                    &format!("{DEV_PROVIDER_PATH}/authorize"),
                    &id,
                    &format!(
                        "<span class=\"error\" role=\"alert\">{}</span>",
                        escape(&why)
                    ),
                    None,
                    "Cancel",
                )
                .await;
                return html_page(StatusCode::BAD_REQUEST, "Sign in", &body, None);
            }
        }
    };
    let answered = dev.with(|p| p.answer(&id, &browser, subject, now()));
    let iss = issuer_url(&o);
    match answered {
        Ok(Answered::Redirect {
            redirect_uri,
            state: st,
            result: Ok(code),
        }) => {
            let mut params = vec![("code", code.as_str())];
            if let Some(s) = st.as_deref() {
                params.push(("state", s));
            }
            params.push(("iss", iss.as_str()));
            redirect_back(&redirect_uri, &params)
        }
        Ok(Answered::Redirect {
            redirect_uri,
            state: st,
            result: Err(e),
        }) => error_back(&redirect_uri, st.as_deref(), &e, &iss),
        Ok(Answered::Device { .. }) | Err(_) => {
            error_page(StatusCode::FORBIDDEN, &ProviderError::BadForm.to_string())
        }
    }
}

/// The access and ID tokens for a grant, as a token response.
fn token_response(
    state: &AppState,
    dev: &DevOidc,
    origin: &str,
    grant: &dev_provider::Grant,
) -> Response {
    let now = now();
    let s = &grant.subject;
    let claims = Claims {
        iss: Some(DEV_ISSUER.to_owned()),
        aud: Some(Value::String(dev.audience.clone())),
        exp: Some(now + dev.access_ttl.as_secs()),
        nbf: Some(now),
        iat: Some(now),
        tid: Some(s.tenant_id.clone()),
        oid: Some(s.object_id.clone()),
        upn: Some(s.user_principal_name.clone()),
        name: Some(s.display_name.clone()),
        ..Default::default()
    };
    let mut access = serde_json::to_value(&claims).unwrap_or_else(|_| json!({}));
    access["azp"] = json!(grant.client_id);
    if s.administrator {
        access["wids"] = json!([GLOBAL_ADMINISTRATOR]);
    }
    let mut id = json!({
        "iss": issuer_url(origin), "sub": s.object_id, "aud": grant.client_id,
        "exp": now + dev.access_ttl.as_secs(), "iat": now, "auth_time": now,
        "tid": s.tenant_id, "oid": s.object_id, "upn": s.user_principal_name,
        "preferred_username": s.user_principal_name, "name": s.display_name,
    });
    if let Some(n) = &grant.nonce {
        id["nonce"] = json!(n);
    }
    if s.administrator {
        id["wids"] = json!([GLOBAL_ADMINISTRATOR]);
    }
    let (Ok(access_token), Ok(id_token)) = (dev.key.sign_json(&access), dev.key.sign_json(&id))
    else {
        tracing::error!("dev sign-in: signing a token failed");
        return oauth_error(&ProviderError::Busy);
    };
    let _ = state;
    tracing::info!(client = %grant.client_id, tenant = %s.tenant_id, "dev sign-in: tokens issued");
    no_store(
        axum::Json(json!({
            "access_token": access_token,
            "token_type": "Bearer",
            "expires_in": dev.access_ttl.as_secs(),
            "refresh_token": grant.refresh_token,
            "id_token": id_token,
            "scope": grant.scope,
        }))
        .into_response(),
    )
}

/// `POST /dev-issuer/token`: authorization_code (PKCE), refresh_token, device_code.
async fn token(State(state): State<AppState>, headers: HeaderMap, body: Bytes) -> Response {
    let Some(dev) = &state.sign_in.dev else {
        return StatusCode::NOT_FOUND.into_response();
    };
    let Some(o) = origin(&state, &headers) else {
        return bad_host();
    };
    let form = match parse_form(&body) {
        Ok(f) => f,
        Err(e) => return oauth_error(&e),
    };
    let Some(client_id) = param(&form, "client_id") else {
        return oauth_error(&ProviderError::InvalidClient);
    };
    let now = now();
    let result = match param(&form, "grant_type").as_deref() {
        Some("authorization_code") => {
            let (Some(code), Some(redirect_uri)) =
                (param(&form, "code"), param(&form, "redirect_uri"))
            else {
                return oauth_error(&ProviderError::InvalidRequest(
                    "code and redirect_uri are required",
                ));
            };
            let verifier = param(&form, "code_verifier");
            dev.with(|p| {
                p.exchange_code(&client_id, &code, &redirect_uri, verifier.as_deref(), now)
            })
        }
        Some("refresh_token") => {
            let Some(rt) = param(&form, "refresh_token") else {
                return oauth_error(&ProviderError::InvalidRequest("refresh_token is required"));
            };
            dev.with(|p| p.refresh(&client_id, &rt, now))
        }
        Some(DEVICE_CODE_GRANT) => {
            let Some(dc) = param(&form, "device_code") else {
                return oauth_error(&ProviderError::InvalidRequest("device_code is required"));
            };
            dev.with(|p| p.poll_device(&client_id, &dc, now))
        }
        Some(_) => Err(ProviderError::UnsupportedGrantType),
        None => Err(ProviderError::InvalidRequest("grant_type is required")),
    };
    match result {
        Ok(grant) => token_response(&state, dev, &o, &grant),
        Err(e) => {
            if !matches!(
                e,
                ProviderError::AuthorizationPending | ProviderError::SlowDown
            ) {
                tracing::info!(error = e.code(), "dev sign-in: token request refused");
            }
            oauth_error(&e)
        }
    }
}

/// `POST /dev-issuer/revoke` (RFC 7009): forgets a refresh token; always 200.
async fn revoke(State(state): State<AppState>, body: Bytes) -> Response {
    let Some(dev) = &state.sign_in.dev else {
        return StatusCode::NOT_FOUND.into_response();
    };
    match parse_form(&body) {
        Ok(form) => {
            if let Some(t) = param(&form, "token") {
                dev.with(|p| p.revoke(&t));
            }
            no_store(StatusCode::OK.into_response())
        }
        Err(e) => oauth_error(&e),
    }
}

/// `POST /dev-issuer/devicecode` (RFC 8628 §3.1).
async fn device_authorization(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let Some(dev) = &state.sign_in.dev else {
        return StatusCode::NOT_FOUND.into_response();
    };
    let Some(o) = origin(&state, &headers) else {
        return bad_host();
    };
    let form = match parse_form(&body) {
        Ok(f) => f,
        Err(e) => return oauth_error(&e),
    };
    let client_id = param(&form, "client_id").unwrap_or_default();
    let scope = param(&form, "scope");
    match dev.with(|p| p.begin_device(&client_id, scope.as_deref(), now())) {
        Ok(d) => {
            let verification_uri = format!("{}/device", issuer_url(&o));
            let complete = format!("{verification_uri}?user_code={}", d.user_code);
            no_store(
                axum::Json(json!({
                    "device_code": d.device_code,
                    "user_code": d.user_code,
                    "verification_uri": verification_uri,
                    "verification_uri_complete": complete,
                    "expires_in": d.expires_in,
                    "interval": d.interval,
                }))
                .into_response(),
            )
        }
        Err(e) => oauth_error(&e),
    }
}

/// `GET /dev-issuer/device[?user_code=…]`: asks for the code, then who approves it.
async fn device_page(State(state): State<AppState>, headers: HeaderMap, uri: Uri) -> Response {
    let Some(dev) = &state.sign_in.dev else {
        return StatusCode::NOT_FOUND.into_response();
    };
    let form = parse_form(uri.query().unwrap_or_default().as_bytes()).unwrap_or_default();
    let action = format!("{DEV_PROVIDER_PATH}/device");
    let ask = |msg: &str| {
        format!(
            "{msg}<form method=\"get\" action=\"{a}\">\n<p><label for=\"user_code\">Code shown by the device</label> \
             <input id=\"user_code\" name=\"user_code\" autocomplete=\"off\" spellcheck=\"false\" \
             autocapitalize=\"characters\"></p>\n<p><button type=\"submit\">Continue</button></p>\n</form>",
            a = escape(&action)
        )
    };
    let Some(code) = param(&form, "user_code") else {
        return html_page(StatusCode::OK, "Sign in a device", &ask(""), None);
    };
    let (browser, cookie) = browser_binding(dev, &headers);
    match dev.with(|p| p.begin_device_verification(&code, &browser, now())) {
        Ok(id) => {
            let shown = escape(&dev_provider::normalise_user_code(&code));
            let body = picker(
                &state,
                &action,
                &id,
                &format!(
                    "A device (the <code>assist</code> command line) asks to sign in with code \
                     <strong class=\"code\">{shown}</strong>. Approve only if you started it."
                ),
                None,
                "Deny",
            )
            .await;
            html_page(StatusCode::OK, "Sign in a device", &body, cookie)
        }
        Err(_) => html_page(
            StatusCode::BAD_REQUEST,
            "Sign in a device",
            &ask("<p class=\"error\" role=\"alert\">That code is unknown, used or expired. Check it and try again.</p>\n"),
            None,
        ),
    }
}

/// `POST /dev-issuer/device`: the approval or denial.
async fn device_answer(State(state): State<AppState>, headers: HeaderMap, body: Bytes) -> Response {
    let Some(dev) = &state.sign_in.dev else {
        return StatusCode::NOT_FOUND.into_response();
    };
    let form = match parse_form(&body) {
        Ok(f) => f,
        Err(e) => return error_page(StatusCode::BAD_REQUEST, &e.to_string()),
    };
    let Some(browser) = browser_cookie(&headers).filter(|_| same_origin(&state, &headers)) else {
        return error_page(StatusCode::FORBIDDEN, &ProviderError::BadForm.to_string());
    };
    let id = param(&form, "request").unwrap_or_default();
    let subject = if param(&form, "deny").is_some() {
        None
    } else {
        match subject_from(&state, &form).await {
            Ok(s) => Some(s),
            Err(why) => return error_page(StatusCode::BAD_REQUEST, &why),
        }
    };
    let is_device = dev.with(|p| matches!(p.pending(&id, now()), Some(PendingKind::Device { .. })));
    if !is_device {
        return error_page(StatusCode::FORBIDDEN, &ProviderError::BadForm.to_string());
    }
    match dev.with(|p| p.answer(&id, &browser, subject, now())) {
        Ok(Answered::Device { approved: true }) => html_page(
            StatusCode::OK,
            "Device signed in",
            "<p role=\"status\">Done: the device is signed in. You can close this page and go back to it.</p>",
            None,
        ),
        Ok(Answered::Device { approved: false }) => html_page(
            StatusCode::OK,
            "Device denied",
            "<p role=\"status\">The device was not signed in.</p>",
            None,
        ),
        Ok(Answered::Redirect { .. }) | Err(_) => {
            error_page(StatusCode::FORBIDDEN, &ProviderError::BadForm.to_string())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escaping_covers_html_and_attributes() {
        assert_eq!(
            escape("<a href=\"x\">'&'</a>"),
            "&lt;a href=&quot;x&quot;&gt;&#39;&amp;&#39;&lt;/a&gt;"
        );
    }

    #[test]
    fn forms_refuse_repeats_and_size() {
        assert!(parse_form(b"a=1&b=2").is_ok());
        assert!(parse_form(b"a=1&a=2").is_err());
        assert!(parse_form(&vec![b'a'; MAX_FORM_BYTES + 1]).is_err());
    }

    #[test]
    fn cookie_is_read_only_when_well_formed() {
        let mut h = HeaderMap::new();
        let v = "a".repeat(43);
        h.insert(
            header::COOKIE,
            HeaderValue::from_str(&format!("x=1; {BROWSER_COOKIE}={v}")).unwrap(),
        );
        assert_eq!(browser_cookie(&h), Some(v));
        h.insert(
            header::COOKIE,
            HeaderValue::from_str(&format!("{BROWSER_COOKIE}=short")).unwrap(),
        );
        assert_eq!(browser_cookie(&h), None);
    }
}
