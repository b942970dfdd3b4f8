//! The dev issuer's minimal OpenID Connect provider: the grant bookkeeping only.
//!
//! It holds pending authorization requests, authorization codes, refresh tokens and device
//! codes (RFC 8628) in bounded in-memory tables, checks PKCE (S256 only), exact redirect URIs,
//! single use and expiry, and says who a grant names. It does no IO, reads no clock (every
//! call takes `now`, seconds since the epoch) and signs nothing: `assistd`'s HTTP glue renders
//! the sign-in pages and mints the tokens with the [`crate::DevIssuer`] key.
//!
//! It is for development only: anyone who can reach the sign-in page may sign in as anyone.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use sha2::{Digest, Sha256};
use std::collections::HashMap;

/// The public client id of the pages `assistd` serves (authorization code + PKCE).
pub const WEB_CLIENT_ID: &str = "assist-web";
/// The public client id of the `assist` CLI (device authorization grant).
pub const CLI_CLIENT_ID: &str = "assist-cli";
/// The paths (under the server's origin) registered as the web client's redirect URIs.
pub const WEB_REDIRECT_PATHS: &[&str] = &["/helper/", "/share/", "/admin/"];
/// The grant type name of the device authorization grant.
pub const DEVICE_CODE_GRANT: &str = "urn:ietf:params:oauth:grant-type:device_code";

/// How long a sign-in page may stay open before its request is forgotten.
pub const PENDING_TTL_SECS: u64 = 600;
/// How long an authorization code may wait to be exchanged.
pub const CODE_TTL_SECS: u64 = 60;
/// How long a refresh token stays usable (each use rotates it and restarts this).
pub const REFRESH_TTL_SECS: u64 = 8 * 3600;
/// How long a device code waits for its user.
pub const DEVICE_TTL_SECS: u64 = 600;
/// The least time between two polls of one device code, at first.
pub const DEVICE_INTERVAL_SECS: u64 = 5;

/// Bounds of the tables (a full table refuses new entries with [`ProviderError::Busy`]).
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Pending sign-in pages.
    pub pending: usize,
    /// Unexchanged authorization codes (and remembered used ones).
    pub codes: usize,
    /// Live refresh tokens.
    pub refresh_tokens: usize,
    /// Device codes.
    pub devices: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            pending: 1024,
            codes: 1024,
            refresh_tokens: 16 * 1024,
            devices: 1024,
        }
    }
}

/// Errors, named as OAuth 2.0 (RFC 6749 §4.1.2.1, §5.2) and RFC 8628 §3.5 name them.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ProviderError {
    /// The client id is not registered, or not for this grant (the client's fault).
    #[error("unknown client or a grant this client may not use")]
    InvalidClient,
    /// The redirect URI is not one registered for the client: never redirect to it.
    #[error("the redirect_uri is not registered for this client")]
    InvalidRedirectUri,
    /// A parameter is missing, repeated or malformed (the client's fault).
    #[error("invalid request: {0}")]
    InvalidRequest(&'static str),
    /// Only `response_type=code` is supported.
    #[error("only response_type=code is supported")]
    UnsupportedResponseType,
    /// A grant type the provider does not support.
    #[error("unsupported grant_type")]
    UnsupportedGrantType,
    /// The code, refresh token or device code is unknown, used, expired, or bound to another
    /// client, redirect URI or PKCE verifier (the client's fault).
    #[error("invalid grant: {0}")]
    InvalidGrant(&'static str),
    /// The sign-in page's form is stale or did not come from this browser (CSRF check).
    #[error("the sign-in form is stale or was not sent by the page that showed it")]
    BadForm,
    /// Device grant: the user has not answered yet.
    #[error("authorization_pending")]
    AuthorizationPending,
    /// Device grant: polled faster than the interval; the interval grows by 5 seconds.
    #[error("slow_down")]
    SlowDown,
    /// Device grant: the user declined.
    #[error("access_denied")]
    AccessDenied,
    /// Device grant: the device code expired.
    #[error("expired_token")]
    ExpiredToken,
    /// A table is full (too many sign-ins in flight; the server's limit).
    #[error("too many sign-ins in flight; try again shortly")]
    Busy,
}

impl ProviderError {
    /// The `error` value of the OAuth error response.
    pub fn code(&self) -> &'static str {
        match self {
            ProviderError::InvalidClient => "invalid_client",
            ProviderError::InvalidRedirectUri | ProviderError::InvalidRequest(_) => {
                "invalid_request"
            }
            ProviderError::BadForm => "invalid_request",
            ProviderError::UnsupportedResponseType => "unsupported_response_type",
            ProviderError::UnsupportedGrantType => "unsupported_grant_type",
            ProviderError::InvalidGrant(_) => "invalid_grant",
            ProviderError::AuthorizationPending => "authorization_pending",
            ProviderError::SlowDown => "slow_down",
            ProviderError::AccessDenied => "access_denied",
            ProviderError::ExpiredToken => "expired_token",
            ProviderError::Busy => "temporarily_unavailable",
        }
    }
}

/// Who signs in: picked on the sign-in page.
#[derive(Clone, PartialEq, Eq)]
pub struct Subject {
    /// Tenant id.
    pub tenant_id: String,
    /// Object id.
    pub object_id: String,
    /// User principal name.
    pub user_principal_name: String,
    /// Display name.
    pub display_name: String,
    /// Global Administrator (`wids`).
    pub administrator: bool,
}

impl std::fmt::Debug for Subject {
    // Identifiers are personal data: debug output names the tenant only.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Subject")
            .field("tenant_id", &self.tenant_id)
            .field("administrator", &self.administrator)
            .finish_non_exhaustive()
    }
}

/// An authorization request as the `authorize` endpoint received it (query parameters).
#[derive(Debug, Clone, Default)]
pub struct AuthorizationRequest {
    /// `client_id`.
    pub client_id: Option<String>,
    /// `redirect_uri`.
    pub redirect_uri: Option<String>,
    /// `response_type`.
    pub response_type: Option<String>,
    /// `scope`.
    pub scope: Option<String>,
    /// `state`.
    pub state: Option<String>,
    /// `nonce`.
    pub nonce: Option<String>,
    /// `code_challenge`.
    pub code_challenge: Option<String>,
    /// `code_challenge_method`.
    pub code_challenge_method: Option<String>,
    /// `login_hint`.
    pub login_hint: Option<String>,
}

/// A refused authorization request and where (if anywhere) to send the error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthorizeRefusal {
    /// Why.
    pub error: ProviderError,
    /// The validated redirect URI and `state` to return the error to; `None` when the client
    /// or redirect URI is bad (show the error instead of redirecting).
    pub redirect: Option<(String, Option<String>)>,
}

/// What a sign-in page is for.
#[derive(Debug, Clone)]
pub enum PendingKind {
    /// An authorization request (code + PKCE).
    Authorize {
        /// The validated request's redirect URI.
        redirect_uri: String,
        /// Echoed `state`.
        state: Option<String>,
        /// The `login_hint`, if any.
        login_hint: Option<String>,
    },
    /// A device's user code (RFC 8628 verification).
    Device {
        /// The normalised user code.
        user_code: String,
    },
}

/// A sign-in page being shown.
#[derive(Debug, Clone)]
struct Pending {
    kind: PendingKind,
    grant: GrantBase,
    browser: String,
    expires: u64,
}

/// What every grant carries from the sign-in request to the tokens.
#[derive(Debug, Clone)]
struct GrantBase {
    client_id: String,
    scope: String,
    nonce: Option<String>,
    code_challenge: Option<String>,
}

#[derive(Debug, Clone)]
struct CodeEntry {
    base: GrantBase,
    redirect_uri: String,
    subject: Subject,
    expires: u64,
    /// Set once exchanged: a second use revokes the refresh tokens issued from it.
    used: bool,
    family: String,
}

#[derive(Debug, Clone)]
struct RefreshEntry {
    client_id: String,
    scope: String,
    subject: Subject,
    family: String,
    expires: u64,
}

#[derive(Debug, Clone)]
enum DeviceState {
    Waiting,
    Approved(Subject),
    Denied,
}

#[derive(Debug, Clone)]
struct DeviceEntry {
    client_id: String,
    scope: String,
    user_code: String,
    state: DeviceState,
    expires: u64,
    interval: u64,
    last_poll: Option<u64>,
}

/// A grant the token endpoint turns into tokens.
#[derive(Debug, Clone)]
pub struct Grant {
    /// Who.
    pub subject: Subject,
    /// For which client.
    pub client_id: String,
    /// The scope granted (as requested).
    pub scope: String,
    /// The `nonce` of the authorization request, for the ID token.
    pub nonce: Option<String>,
    /// A new refresh token (the old one, if any, is no longer valid).
    pub refresh_token: String,
}

/// A device authorization response's values (RFC 8628 §3.2).
#[derive(Debug, Clone)]
pub struct DeviceAuthorization {
    /// The secret the device polls with.
    pub device_code: String,
    /// The code the user types, `XXXX-XXXX`.
    pub user_code: String,
    /// Seconds until it expires.
    pub expires_in: u64,
    /// Seconds between polls.
    pub interval: u64,
}

/// A source of secret random bytes (the glue passes the system's; tests a seeded one).
pub trait SecretSource: Send {
    /// Fills `out` with unpredictable bytes.
    fn fill(&mut self, out: &mut [u8]);
}

/// The system's cryptographic random source.
#[derive(Debug, Default)]
pub struct SystemSecrets;

impl SecretSource for SystemSecrets {
    fn fill(&mut self, out: &mut [u8]) {
        use aws_lc_rs::rand::SecureRandom;
        // aws-lc's RNG does not fail on supported platforms; an all-zero buffer would be
        // caught by nothing, so treat a failure as fatal for this value (a bug or a broken OS).
        if aws_lc_rs::rand::SystemRandom::new().fill(out).is_err() {
            panic!("the system random source failed");
        }
    }
}

/// The characters of user codes: consonants only (no vowels, so no words; no 0/O, 1/I).
const USER_CODE_ALPHABET: &[u8] = b"BCDFGHJKLMNPQRSTVWXZ";

/// The provider's state. Not thread-safe by itself: the glue keeps it behind a mutex.
pub struct DevProvider {
    limits: Limits,
    secrets: Box<dyn SecretSource>,
    pending: HashMap<String, Pending>,
    codes: HashMap<String, CodeEntry>,
    refresh: HashMap<String, RefreshEntry>,
    devices: HashMap<String, DeviceEntry>,
    /// Normalised user code → device code.
    user_codes: HashMap<String, String>,
}

impl std::fmt::Debug for DevProvider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DevProvider")
            .field("pending", &self.pending.len())
            .field("codes", &self.codes.len())
            .field("refresh", &self.refresh.len())
            .field("devices", &self.devices.len())
            .finish_non_exhaustive()
    }
}

/// Whether `s` is a PKCE verifier (RFC 7636 §4.1: 43..=128 unreserved characters).
fn is_verifier(s: &str) -> bool {
    (43..=128).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~'))
}

/// The S256 challenge of a verifier.
pub fn s256_challenge(verifier: &str) -> String {
    URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()))
}

/// A user code as typed (any case, with or without the dash and spaces), normalised.
pub fn normalise_user_code(typed: &str) -> String {
    typed
        .chars()
        .filter(|c| !matches!(c, '-' | ' '))
        .map(|c| c.to_ascii_uppercase())
        .collect()
}

fn bounded(s: &Option<String>, max: usize, what: &'static str) -> Result<(), ProviderError> {
    match s {
        Some(v) if v.len() > max || v.chars().any(char::is_control) => {
            Err(ProviderError::InvalidRequest(what))
        }
        _ => Ok(()),
    }
}

fn make_room<V>(
    map: &mut HashMap<String, V>,
    cap: usize,
    now: u64,
    expires: impl Fn(&V) -> u64,
) -> Result<(), ProviderError> {
    if map.len() >= cap {
        map.retain(|_, v| expires(v) > now);
    }
    if map.len() >= cap {
        return Err(ProviderError::Busy);
    }
    Ok(())
}

impl DevProvider {
    /// An empty provider.
    pub fn new(limits: Limits, secrets: Box<dyn SecretSource>) -> Self {
        DevProvider {
            limits,
            secrets,
            pending: HashMap::new(),
            codes: HashMap::new(),
            refresh: HashMap::new(),
            devices: HashMap::new(),
            user_codes: HashMap::new(),
        }
    }

    /// A new secret: 32 random bytes, base64url.
    pub fn secret(&mut self) -> String {
        let mut b = [0u8; 32];
        self.secrets.fill(&mut b);
        URL_SAFE_NO_PAD.encode(b)
    }

    fn user_code(&mut self) -> String {
        let mut b = [0u8; 8];
        self.secrets.fill(&mut b);
        b.iter()
            .map(|x| USER_CODE_ALPHABET[*x as usize % USER_CODE_ALPHABET.len()] as char)
            .collect()
    }

    /// Validates an authorization request whose redirect URI must be one of `allowed_redirects`
    /// (exact string match), and remembers it for the sign-in page. Returns the page's id;
    /// `browser` is the value of the browser's CSRF cookie, which the form's post must carry.
    pub fn begin_authorization(
        &mut self,
        req: &AuthorizationRequest,
        allowed_redirects: &[String],
        browser: &str,
        now: u64,
    ) -> Result<String, AuthorizeRefusal> {
        let fatal = |error| AuthorizeRefusal {
            error,
            redirect: None,
        };
        match req.client_id.as_deref() {
            Some(WEB_CLIENT_ID) => {}
            _ => return Err(fatal(ProviderError::InvalidClient)),
        }
        let redirect_uri = match &req.redirect_uri {
            Some(r) if allowed_redirects.iter().any(|a| a == r) => r.clone(),
            _ => return Err(fatal(ProviderError::InvalidRedirectUri)),
        };
        // From here on errors go back to the client.
        let back = |error| AuthorizeRefusal {
            error,
            redirect: Some((redirect_uri.clone(), req.state.clone())),
        };
        for (v, max, what) in [
            (&req.state, 512, "state is too long"),
            (&req.nonce, 512, "nonce is too long"),
            (&req.scope, 1024, "scope is too long"),
            (&req.login_hint, 256, "login_hint is too long"),
        ] {
            bounded(v, max, what).map_err(back)?;
        }
        if req.response_type.as_deref() != Some("code") {
            return Err(back(ProviderError::UnsupportedResponseType));
        }
        let challenge = match (&req.code_challenge, req.code_challenge_method.as_deref()) {
            (None, _) => {
                return Err(back(ProviderError::InvalidRequest(
                    "code_challenge is required (PKCE)",
                )))
            }
            (Some(_), m) if m != Some("S256") => {
                return Err(back(ProviderError::InvalidRequest(
                    "code_challenge_method must be S256",
                )))
            }
            (Some(c), _)
                if c.len() != 43
                    || !c
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_') =>
            {
                return Err(back(ProviderError::InvalidRequest(
                    "code_challenge is not a base64url SHA-256",
                )))
            }
            (Some(c), _) => c.clone(),
        };
        make_room(&mut self.pending, self.limits.pending, now, |p| p.expires).map_err(back)?;
        let id = self.secret();
        self.pending.insert(
            id.clone(),
            Pending {
                kind: PendingKind::Authorize {
                    redirect_uri,
                    state: req.state.clone(),
                    login_hint: req.login_hint.clone(),
                },
                grant: GrantBase {
                    client_id: WEB_CLIENT_ID.to_owned(),
                    scope: req.scope.clone().unwrap_or_default(),
                    nonce: req.nonce.clone(),
                    code_challenge: Some(challenge),
                },
                browser: browser.to_owned(),
                expires: now + PENDING_TTL_SECS,
            },
        );
        Ok(id)
    }

    /// What the sign-in page `id` is for, if it is still open.
    pub fn pending(&self, id: &str, now: u64) -> Option<&PendingKind> {
        self.pending
            .get(id)
            .filter(|p| p.expires > now)
            .map(|p| &p.kind)
    }

    fn take_pending(
        &mut self,
        id: &str,
        browser: &str,
        now: u64,
    ) -> Result<Pending, ProviderError> {
        let p = self.pending.get(id).ok_or(ProviderError::BadForm)?;
        // The cookie is compared in constant time: it is the CSRF secret.
        use subtle_compare::eq;
        if p.expires <= now || !eq(p.browser.as_bytes(), browser.as_bytes()) {
            return Err(ProviderError::BadForm);
        }
        self.pending.remove(id).ok_or(ProviderError::BadForm)
    }

    /// The sign-in page `id` was answered with `subject` (or declined, `None`): for an
    /// authorization request, returns where to redirect and the code (or the error) to put in
    /// the URL; for a device code, records the answer. The page is forgotten either way.
    pub fn answer(
        &mut self,
        id: &str,
        browser: &str,
        subject: Option<Subject>,
        now: u64,
    ) -> Result<Answered, ProviderError> {
        let p = self.take_pending(id, browser, now)?;
        match p.kind {
            PendingKind::Authorize {
                redirect_uri,
                state,
                ..
            } => {
                let Some(subject) = subject else {
                    return Ok(Answered::Redirect {
                        redirect_uri,
                        state,
                        result: Err(ProviderError::AccessDenied),
                    });
                };
                make_room(&mut self.codes, self.limits.codes, now, |c| c.expires)?;
                let code = self.secret();
                let family = self.secret();
                self.codes.insert(
                    code.clone(),
                    CodeEntry {
                        base: p.grant,
                        redirect_uri: redirect_uri.clone(),
                        subject,
                        expires: now + CODE_TTL_SECS,
                        used: false,
                        family,
                    },
                );
                Ok(Answered::Redirect {
                    redirect_uri,
                    state,
                    result: Ok(code),
                })
            }
            PendingKind::Device { user_code } => {
                let device_code = self
                    .user_codes
                    .get(&user_code)
                    .cloned()
                    .ok_or(ProviderError::ExpiredToken)?;
                let d = self
                    .devices
                    .get_mut(&device_code)
                    .filter(|d| d.expires > now)
                    .ok_or(ProviderError::ExpiredToken)?;
                if !matches!(d.state, DeviceState::Waiting) {
                    return Err(ProviderError::InvalidGrant("the code was answered already"));
                }
                let approved = subject.is_some();
                d.state = match subject {
                    Some(s) => DeviceState::Approved(s),
                    None => DeviceState::Denied,
                };
                Ok(Answered::Device { approved })
            }
        }
    }

    /// Exchanges an authorization code (RFC 6749 §4.1.3 with RFC 7636 §4.6). A code works once;
    /// using it again fails and revokes the refresh tokens it produced.
    pub fn exchange_code(
        &mut self,
        client_id: &str,
        code: &str,
        redirect_uri: &str,
        code_verifier: Option<&str>,
        now: u64,
    ) -> Result<Grant, ProviderError> {
        let Some(entry) = self.codes.get_mut(code) else {
            return Err(ProviderError::InvalidGrant("unknown or expired code"));
        };
        if entry.used {
            let family = entry.family.clone();
            self.refresh.retain(|_, r| r.family != family);
            return Err(ProviderError::InvalidGrant("the code was used already"));
        }
        // Any attempt uses the code up: a wrong verifier must not be retried.
        entry.used = true;
        let entry = entry.clone();
        if entry.expires <= now {
            return Err(ProviderError::InvalidGrant("the code has expired"));
        }
        if entry.base.client_id != client_id {
            return Err(ProviderError::InvalidGrant(
                "the code was issued to another client",
            ));
        }
        if entry.redirect_uri != redirect_uri {
            return Err(ProviderError::InvalidGrant(
                "redirect_uri differs from the request's",
            ));
        }
        let Some(verifier) = code_verifier else {
            return Err(ProviderError::InvalidRequest(
                "code_verifier is required (PKCE)",
            ));
        };
        if !is_verifier(verifier) {
            return Err(ProviderError::InvalidRequest("code_verifier is malformed"));
        }
        let expected = entry.base.code_challenge.as_deref().unwrap_or_default();
        if !subtle_compare::eq(s256_challenge(verifier).as_bytes(), expected.as_bytes()) {
            return Err(ProviderError::InvalidGrant("code_verifier does not match"));
        }
        let refresh_token = self.new_refresh(
            &entry.base.client_id,
            &entry.base.scope,
            &entry.subject,
            &entry.family,
            now,
        )?;
        Ok(Grant {
            subject: entry.subject,
            client_id: entry.base.client_id,
            scope: entry.base.scope,
            nonce: entry.base.nonce,
            refresh_token,
        })
    }

    fn new_refresh(
        &mut self,
        client_id: &str,
        scope: &str,
        subject: &Subject,
        family: &str,
        now: u64,
    ) -> Result<String, ProviderError> {
        make_room(&mut self.refresh, self.limits.refresh_tokens, now, |r| {
            r.expires
        })?;
        let token = self.secret();
        self.refresh.insert(
            token.clone(),
            RefreshEntry {
                client_id: client_id.to_owned(),
                scope: scope.to_owned(),
                subject: subject.clone(),
                family: family.to_owned(),
                expires: now + REFRESH_TTL_SECS,
            },
        );
        Ok(token)
    }

    /// Uses a refresh token (RFC 6749 §6): it is replaced by the new one in the grant.
    pub fn refresh(
        &mut self,
        client_id: &str,
        refresh_token: &str,
        now: u64,
    ) -> Result<Grant, ProviderError> {
        let Some(entry) = self.refresh.get(refresh_token) else {
            return Err(ProviderError::InvalidGrant(
                "unknown or expired refresh token",
            ));
        };
        if entry.client_id != client_id {
            return Err(ProviderError::InvalidGrant(
                "the refresh token was issued to another client",
            ));
        }
        let entry = self
            .refresh
            .remove(refresh_token)
            .ok_or(ProviderError::InvalidGrant(
                "unknown or expired refresh token",
            ))?;
        if entry.expires <= now {
            return Err(ProviderError::InvalidGrant("the refresh token has expired"));
        }
        let refresh_token = self.new_refresh(
            &entry.client_id,
            &entry.scope,
            &entry.subject,
            &entry.family,
            now,
        )?;
        Ok(Grant {
            subject: entry.subject,
            client_id: entry.client_id,
            scope: entry.scope,
            nonce: None,
            refresh_token,
        })
    }

    /// Forgets a refresh token (RFC 7009 revocation; unknown tokens are not an error).
    pub fn revoke(&mut self, token: &str) {
        self.refresh.remove(token);
    }

    /// Starts a device authorization (RFC 8628 §3.1) for `client_id`.
    pub fn begin_device(
        &mut self,
        client_id: &str,
        scope: Option<&str>,
        now: u64,
    ) -> Result<DeviceAuthorization, ProviderError> {
        if client_id != CLI_CLIENT_ID {
            return Err(ProviderError::InvalidClient);
        }
        let scope = scope.unwrap_or_default();
        if scope.len() > 1024 {
            return Err(ProviderError::InvalidRequest("scope is too long"));
        }
        make_room(&mut self.devices, self.limits.devices, now, |d| d.expires)?;
        let live = &self.devices;
        self.user_codes.retain(|_, dc| live.contains_key(dc));
        let device_code = self.secret();
        let mut user_code = self.user_code();
        while self.user_codes.contains_key(&user_code) {
            user_code = self.user_code();
        }
        self.user_codes
            .insert(user_code.clone(), device_code.clone());
        self.devices.insert(
            device_code.clone(),
            DeviceEntry {
                client_id: client_id.to_owned(),
                scope: scope.to_owned(),
                user_code: user_code.clone(),
                state: DeviceState::Waiting,
                expires: now + DEVICE_TTL_SECS,
                interval: DEVICE_INTERVAL_SECS,
                last_poll: None,
            },
        );
        Ok(DeviceAuthorization {
            device_code,
            user_code: format!("{}-{}", &user_code[..4], &user_code[4..]),
            expires_in: DEVICE_TTL_SECS,
            interval: DEVICE_INTERVAL_SECS,
        })
    }

    /// Opens a sign-in page for the device whose user code was typed (RFC 8628 §3.3), if the
    /// code is waiting for an answer. Returns the page's id.
    pub fn begin_device_verification(
        &mut self,
        typed_user_code: &str,
        browser: &str,
        now: u64,
    ) -> Result<String, ProviderError> {
        let user_code = normalise_user_code(typed_user_code);
        let waiting = self
            .user_codes
            .get(&user_code)
            .and_then(|dc| self.devices.get(dc))
            .filter(|d| d.expires > now && matches!(d.state, DeviceState::Waiting));
        let Some(d) = waiting else {
            return Err(ProviderError::InvalidGrant("unknown, used or expired code"));
        };
        let grant = GrantBase {
            client_id: d.client_id.clone(),
            scope: d.scope.clone(),
            nonce: None,
            code_challenge: None,
        };
        let expires = d.expires;
        make_room(&mut self.pending, self.limits.pending, now, |p| p.expires)?;
        let id = self.secret();
        self.pending.insert(
            id.clone(),
            Pending {
                kind: PendingKind::Device { user_code },
                grant,
                browser: browser.to_owned(),
                expires: expires.min(now + PENDING_TTL_SECS),
            },
        );
        Ok(id)
    }

    /// A device polls the token endpoint (RFC 8628 §3.4, §3.5).
    pub fn poll_device(
        &mut self,
        client_id: &str,
        device_code: &str,
        now: u64,
    ) -> Result<Grant, ProviderError> {
        let Some(d) = self.devices.get_mut(device_code) else {
            return Err(ProviderError::InvalidGrant("unknown device code"));
        };
        if d.client_id != client_id {
            return Err(ProviderError::InvalidGrant(
                "the device code was issued to another client",
            ));
        }
        if d.expires <= now {
            let user_code = d.user_code.clone();
            self.devices.remove(device_code);
            self.user_codes.remove(&user_code);
            return Err(ProviderError::ExpiredToken);
        }
        let too_soon = d.last_poll.is_some_and(|t| now < t + d.interval);
        d.last_poll = Some(now);
        match d.state.clone() {
            DeviceState::Waiting if too_soon => {
                d.interval += 5;
                Err(ProviderError::SlowDown)
            }
            DeviceState::Waiting => Err(ProviderError::AuthorizationPending),
            DeviceState::Denied => {
                let user_code = d.user_code.clone();
                self.devices.remove(device_code);
                self.user_codes.remove(&user_code);
                Err(ProviderError::AccessDenied)
            }
            DeviceState::Approved(subject) => {
                let (client_id, scope, user_code) =
                    (d.client_id.clone(), d.scope.clone(), d.user_code.clone());
                self.devices.remove(device_code);
                self.user_codes.remove(&user_code);
                let family = self.secret();
                let refresh_token = self.new_refresh(&client_id, &scope, &subject, &family, now)?;
                Ok(Grant {
                    subject,
                    client_id,
                    scope,
                    nonce: None,
                    refresh_token,
                })
            }
        }
    }
}

/// The result of answering a sign-in page.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answered {
    /// Send the browser back to the client.
    Redirect {
        /// The validated redirect URI.
        redirect_uri: String,
        /// The request's `state`, echoed.
        state: Option<String>,
        /// The code, or the error to report (`access_denied`).
        result: Result<String, ProviderError>,
    },
    /// A device code was approved or declined; the page says so.
    Device {
        /// Whether the user approved.
        approved: bool,
    },
}

mod subtle_compare {
    /// Constant-time equality of two byte strings (length is not secret).
    pub fn eq(a: &[u8], b: &[u8]) -> bool {
        a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A deterministic source: a counter's bytes (tests only need distinct values).
    struct Counter(u64);
    impl SecretSource for Counter {
        fn fill(&mut self, out: &mut [u8]) {
            for b in out.iter_mut() {
                self.0 = self
                    .0
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                *b = (self.0 >> 33) as u8;
            }
        }
    }

    const REDIRECT: &str = "https://localhost:8443/helper/";
    const VERIFIER: &str = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk";

    fn provider() -> DevProvider {
        DevProvider::new(Limits::default(), Box::new(Counter(7)))
    }

    fn subject() -> Subject {
        Subject {
            tenant_id: "contoso".into(),
            object_id: "o1".into(),
            user_principal_name: "helen@contoso.com".into(),
            display_name: "Helen".into(),
            administrator: false,
        }
    }

    fn request() -> AuthorizationRequest {
        AuthorizationRequest {
            client_id: Some(WEB_CLIENT_ID.into()),
            redirect_uri: Some(REDIRECT.into()),
            response_type: Some("code".into()),
            scope: Some("openid profile offline_access".into()),
            state: Some("st".into()),
            nonce: Some("n".into()),
            code_challenge: Some(s256_challenge(VERIFIER)),
            code_challenge_method: Some("S256".into()),
            login_hint: None,
        }
    }

    fn code(p: &mut DevProvider, now: u64) -> String {
        let id = p
            .begin_authorization(&request(), &[REDIRECT.into()], "b", now)
            .unwrap();
        match p.answer(&id, "b", Some(subject()), now).unwrap() {
            Answered::Redirect {
                result: Ok(code),
                state,
                ..
            } => {
                assert_eq!(state.as_deref(), Some("st"));
                code
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn rfc7636_appendix_b_challenge() {
        assert_eq!(
            s256_challenge(VERIFIER),
            "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"
        );
    }

    #[test]
    fn code_flow_with_pkce_works_once() {
        let mut p = provider();
        let c = code(&mut p, 100);
        let g = p
            .exchange_code(WEB_CLIENT_ID, &c, REDIRECT, Some(VERIFIER), 110)
            .unwrap();
        assert_eq!(g.subject, subject());
        assert_eq!(g.nonce.as_deref(), Some("n"));
        assert_eq!(
            p.exchange_code(WEB_CLIENT_ID, &c, REDIRECT, Some(VERIFIER), 111)
                .unwrap_err(),
            ProviderError::InvalidGrant("the code was used already")
        );
        // Reuse revoked the refresh token the first exchange gave.
        assert!(p.refresh(WEB_CLIENT_ID, &g.refresh_token, 112).is_err());
    }

    #[test]
    fn wrong_or_missing_verifier_uses_the_code_up() {
        let mut p = provider();
        let c = code(&mut p, 0);
        let other = "x".repeat(43);
        assert_eq!(
            p.exchange_code(WEB_CLIENT_ID, &c, REDIRECT, Some(&other), 1)
                .unwrap_err(),
            ProviderError::InvalidGrant("code_verifier does not match")
        );
        assert!(p
            .exchange_code(WEB_CLIENT_ID, &c, REDIRECT, Some(VERIFIER), 2)
            .is_err());
        let c = code(&mut p, 0);
        assert!(matches!(
            p.exchange_code(WEB_CLIENT_ID, &c, REDIRECT, None, 1),
            Err(ProviderError::InvalidRequest(_))
        ));
    }

    #[test]
    fn codes_expire_and_are_bound_to_client_and_redirect() {
        let mut p = provider();
        let c = code(&mut p, 0);
        assert!(p
            .exchange_code(WEB_CLIENT_ID, &c, REDIRECT, Some(VERIFIER), CODE_TTL_SECS)
            .is_err());
        let c = code(&mut p, 0);
        assert!(p
            .exchange_code(CLI_CLIENT_ID, &c, REDIRECT, Some(VERIFIER), 1)
            .is_err());
        let c = code(&mut p, 0);
        assert!(p
            .exchange_code(
                WEB_CLIENT_ID,
                &c,
                "https://localhost:8443/admin/",
                Some(VERIFIER),
                1
            )
            .is_err());
    }

    #[test]
    fn authorization_requests_are_checked() {
        let mut p = provider();
        let allowed = [REDIRECT.to_owned()];
        let mut r = request();
        r.redirect_uri = Some("https://localhost:8443/helper/x".into());
        let e = p.begin_authorization(&r, &allowed, "b", 0).unwrap_err();
        assert_eq!(e.error, ProviderError::InvalidRedirectUri);
        assert_eq!(e.redirect, None, "never redirect to an unregistered URI");
        let mut r = request();
        r.client_id = Some(CLI_CLIENT_ID.into());
        assert_eq!(
            p.begin_authorization(&r, &allowed, "b", 0)
                .unwrap_err()
                .error,
            ProviderError::InvalidClient
        );
        for change in [
            |r: &mut AuthorizationRequest| r.code_challenge = None,
            |r: &mut AuthorizationRequest| r.code_challenge_method = Some("plain".into()),
            |r: &mut AuthorizationRequest| r.code_challenge_method = None,
            |r: &mut AuthorizationRequest| r.code_challenge = Some("short".into()),
            |r: &mut AuthorizationRequest| r.response_type = Some("token".into()),
            |r: &mut AuthorizationRequest| r.state = Some("s".repeat(600)),
        ] {
            let mut r = request();
            change(&mut r);
            let e = p.begin_authorization(&r, &allowed, "b", 0).unwrap_err();
            assert_eq!(
                e.redirect,
                Some((REDIRECT.to_owned(), r.state.clone())),
                "{e:?}"
            );
        }
    }

    #[test]
    fn the_form_needs_the_same_browser_and_works_once() {
        let mut p = provider();
        let id = p
            .begin_authorization(&request(), &[REDIRECT.into()], "b", 0)
            .unwrap();
        assert_eq!(
            p.answer(&id, "other", Some(subject()), 1).unwrap_err(),
            ProviderError::BadForm
        );
        assert!(matches!(
            p.answer(&id, "b", None, 1).unwrap(),
            Answered::Redirect {
                result: Err(ProviderError::AccessDenied),
                ..
            }
        ));
        assert_eq!(
            p.answer(&id, "b", Some(subject()), 1).unwrap_err(),
            ProviderError::BadForm
        );
        let id = p
            .begin_authorization(&request(), &[REDIRECT.into()], "b", 0)
            .unwrap();
        assert_eq!(
            p.answer(&id, "b", Some(subject()), PENDING_TTL_SECS)
                .unwrap_err(),
            ProviderError::BadForm
        );
    }

    #[test]
    fn refresh_tokens_rotate() {
        let mut p = provider();
        let c = code(&mut p, 0);
        let g = p
            .exchange_code(WEB_CLIENT_ID, &c, REDIRECT, Some(VERIFIER), 1)
            .unwrap();
        let g2 = p.refresh(WEB_CLIENT_ID, &g.refresh_token, 2).unwrap();
        assert_ne!(g2.refresh_token, g.refresh_token);
        assert!(p.refresh(WEB_CLIENT_ID, &g.refresh_token, 3).is_err());
        assert!(p.refresh(CLI_CLIENT_ID, &g2.refresh_token, 3).is_err());
        let g3 = p.refresh(WEB_CLIENT_ID, &g2.refresh_token, 4).unwrap();
        assert!(p
            .refresh(WEB_CLIENT_ID, &g3.refresh_token, 4 + REFRESH_TTL_SECS)
            .is_err());
    }

    #[test]
    fn device_grant_pending_slow_down_approved_denied_expired() {
        let mut p = provider();
        let d = p.begin_device(CLI_CLIENT_ID, None, 0).unwrap();
        assert_eq!(d.user_code.len(), 9);
        assert_eq!(
            p.poll_device(CLI_CLIENT_ID, &d.device_code, 0).unwrap_err(),
            ProviderError::AuthorizationPending
        );
        assert_eq!(
            p.poll_device(CLI_CLIENT_ID, &d.device_code, 1).unwrap_err(),
            ProviderError::SlowDown
        );
        // The interval grew to 10 s.
        assert_eq!(
            p.poll_device(CLI_CLIENT_ID, &d.device_code, 8).unwrap_err(),
            ProviderError::SlowDown
        );
        let typed = d.user_code.to_lowercase().replace('-', " ");
        let id = p.begin_device_verification(&typed, "b", 10).unwrap();
        assert_eq!(
            p.answer(&id, "b", Some(subject()), 10).unwrap(),
            Answered::Device { approved: true }
        );
        let g = p.poll_device(CLI_CLIENT_ID, &d.device_code, 30).unwrap();
        assert_eq!(g.subject, subject());
        assert!(p.poll_device(CLI_CLIENT_ID, &d.device_code, 60).is_err());
        assert!(p.begin_device_verification(&d.user_code, "b", 61).is_err());

        let d = p.begin_device(CLI_CLIENT_ID, None, 0).unwrap();
        let id = p.begin_device_verification(&d.user_code, "b", 1).unwrap();
        p.answer(&id, "b", None, 1).unwrap();
        assert_eq!(
            p.poll_device(CLI_CLIENT_ID, &d.device_code, 20)
                .unwrap_err(),
            ProviderError::AccessDenied
        );

        let d = p.begin_device(CLI_CLIENT_ID, None, 0).unwrap();
        assert_eq!(
            p.poll_device(CLI_CLIENT_ID, &d.device_code, DEVICE_TTL_SECS)
                .unwrap_err(),
            ProviderError::ExpiredToken
        );
        assert_eq!(
            p.begin_device(WEB_CLIENT_ID, None, 0).unwrap_err(),
            ProviderError::InvalidClient
        );
    }

    #[test]
    fn tables_are_bounded() {
        let mut p = DevProvider::new(
            Limits {
                pending: 2,
                codes: 2,
                refresh_tokens: 2,
                devices: 2,
            },
            Box::new(Counter(1)),
        );
        for _ in 0..2 {
            p.begin_device(CLI_CLIENT_ID, None, 0).unwrap();
        }
        assert_eq!(
            p.begin_device(CLI_CLIENT_ID, None, 1).unwrap_err(),
            ProviderError::Busy
        );
        // Expired entries make room.
        assert!(p.begin_device(CLI_CLIENT_ID, None, DEVICE_TTL_SECS).is_ok());
        for _ in 0..2 {
            p.begin_authorization(&request(), &[REDIRECT.into()], "b", 0)
                .unwrap();
        }
        assert_eq!(
            p.begin_authorization(&request(), &[REDIRECT.into()], "b", 0)
                .unwrap_err()
                .error,
            ProviderError::Busy
        );
    }

    mod properties {
        use super::*;
        use proptest::prelude::*;

        proptest! {
            /// Only the verifier whose S256 is the challenge redeems a code, whatever is sent.
            #[test]
            fn only_the_right_verifier_redeems(verifier in "[A-Za-z0-9._~-]{0,140}") {
                prop_assume!(verifier != VERIFIER);
                let mut p = provider();
                let c = code(&mut p, 0);
                prop_assert!(p.exchange_code(WEB_CLIENT_ID, &c, REDIRECT, Some(&verifier), 1).is_err());
                // The code is used up either way.
                prop_assert!(p.exchange_code(WEB_CLIENT_ID, &c, REDIRECT, Some(VERIFIER), 1).is_err());
            }

            /// Any redirect URI other than a registered one is never redirected to.
            #[test]
            fn unregistered_redirects_are_never_used(uri in "\\PC{0,80}") {
                prop_assume!(uri != REDIRECT);
                let mut p = provider();
                let mut r = request();
                r.redirect_uri = Some(uri);
                let e = p.begin_authorization(&r, &[REDIRECT.into()], "b", 0).unwrap_err();
                prop_assert_eq!(e.redirect, None);
            }

            /// Codes as people type them normalise to the issued form.
            #[test]
            fn user_codes_survive_how_people_type_them(lower in any::<bool>(), dash in any::<bool>()) {
                let mut p = provider();
                let d = p.begin_device(CLI_CLIENT_ID, None, 0).unwrap();
                let mut typed = d.user_code.clone();
                if lower { typed = typed.to_lowercase(); }
                if !dash { typed = typed.replace('-', " "); }
                prop_assert!(p.begin_device_verification(&typed, "b", 1).is_ok());
            }
        }
    }
}
