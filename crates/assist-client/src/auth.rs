//! Getting a token to connect with: one given by the caller (`ASSIST_TOKEN`, `--token`, a token
//! file) or a sign-in with the OAuth device authorization grant (RFC 8628) against the provider
//! the server names at `GET /v1/auth/config` (the dev issuer's, Entra ID, Keycloak…), refreshed
//! with its refresh token before it expires.
//!
//! Tokens stay in memory: nothing here logs or prints them, and [`Login`]'s `Debug` leaves them
//! out.

use serde_json::Value;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// The largest body read from the server or the identity provider.
const MAX_BODY: usize = 64 * 1024;
/// Every request to the server or the provider is bounded by this.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(20);
/// Bounds on what the provider may ask for, so its numbers cannot stall or overflow the client.
const MAX_POLL_INTERVAL: u64 = 60;
const MAX_CODE_LIFETIME: u64 = 3600;
const MAX_TOKEN_LIFETIME: u64 = 24 * 3600;

/// Why no token could be had.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// The token file could not be read.
    #[error("reading the token file {}: {source}", path.display())]
    ReadTokenFile {
        /// The file.
        path: PathBuf,
        /// What the OS said.
        source: std::io::Error,
    },
    /// The token file's first line is empty.
    #[error("the token file {} is empty", path.display())]
    EmptyTokenFile {
        /// The file.
        path: PathBuf,
    },
    /// The certificate file to trust could not be read or parsed.
    #[error("{doing} {}", path.display())]
    Ca {
        /// `reading` or `parsing`.
        doing: &'static str,
        /// The PEM file.
        path: PathBuf,
        /// What went wrong.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// A request to the server or the provider failed, or its answer was not JSON.
    #[error("{doing}")]
    Http {
        /// What was being done, such as `GET https://…/v1/auth/config`.
        doing: String,
        /// Why it failed.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// The server or the provider answered with an unexpected HTTP status.
    #[error("{doing}: HTTP {status}")]
    Status {
        /// What was being done.
        doing: String,
        /// The status.
        status: u16,
    },
    /// The issuer's discovery document names no device authorization endpoint.
    #[error(
        "the issuer {issuer} does not offer the device authorization grant: pass a token with \
         ASSIST_TOKEN or --token-file"
    )]
    NoDeviceGrant {
        /// The issuer.
        issuer: String,
    },
    /// The provider refused, or answered something this client cannot use (the message says
    /// which, with the provider's OAuth `error` and `error_description`).
    #[error("{0}")]
    Provider(String),
    /// The user code expired before the user entered it.
    #[error("the code expired before it was entered; run the command again")]
    Expired,
    /// The user declined the sign-in.
    #[error("sign-in was denied")]
    Denied,
    /// [`Login::refresh`] without a refresh token.
    #[error("no refresh token")]
    NoRefreshToken,
}

/// The token the caller gave, if any: `token` (from `--token` or `ASSIST_TOKEN`) when it is not
/// blank, else the first line of `token_file`. `Ok(None)` means neither was given: sign in with
/// [`Login::device_grant`].
pub fn given_token(
    token: Option<&str>,
    token_file: Option<&Path>,
) -> Result<Option<String>, AuthError> {
    if let Some(t) = token.map(str::trim).filter(|t| !t.is_empty()) {
        return Ok(Some(t.to_owned()));
    }
    match token_file {
        Some(path) => token_from_file(path).map(Some),
        None => Ok(None),
    }
}

/// The token in the first line of the file at `path` (trimmed); an empty first line is an error.
pub fn token_from_file(path: &Path) -> Result<String, AuthError> {
    let text = std::fs::read_to_string(path).map_err(|source| AuthError::ReadTokenFile {
        path: path.to_owned(),
        source,
    })?;
    let token = text.lines().next().unwrap_or_default().trim();
    if token.is_empty() {
        return Err(AuthError::EmptyTokenFile {
            path: path.to_owned(),
        });
    }
    Ok(token.to_owned())
}

/// What to show the user during a device sign-in: where to go and the code to enter there.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DevicePrompt {
    /// The provider's verification page.
    pub verification_uri: String,
    /// The code to enter there.
    pub user_code: String,
    /// The page with the code already filled in, when the provider offers one.
    pub verification_uri_complete: Option<String>,
}

/// A signed-in session: the access token and what renews it.
pub struct Login {
    client: reqwest::Client,
    token_endpoint: String,
    client_id: String,
    refresh_token: Option<String>,
    access_token: String,
    refresh_at: Instant,
}

impl std::fmt::Debug for Login {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Login")
            .field("token_endpoint", &self.token_endpoint)
            .field("client_id", &self.client_id)
            .field("can_refresh", &self.refresh_token.is_some())
            .field("refresh_at", &self.refresh_at)
            .finish_non_exhaustive()
    }
}

/// An HTTPS client trusting exactly the certificates in `ca`, with bounded requests and no
/// redirects.
fn http(ca: &Path) -> Result<reqwest::Client, AuthError> {
    let ca_error = |doing, source: Box<dyn std::error::Error + Send + Sync>| AuthError::Ca {
        doing,
        path: ca.to_owned(),
        source,
    };
    let pem = std::fs::read(ca).map_err(|e| ca_error("reading", e.into()))?;
    let mut b = reqwest::Client::builder()
        .timeout(REQUEST_TIMEOUT)
        .redirect(reqwest::redirect::Policy::none());
    for cert in
        reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| ca_error("parsing", e.into()))?
    {
        b = b.add_root_certificate(cert);
    }
    b.build().map_err(|e| AuthError::Http {
        doing: "setting up the HTTPS client".into(),
        source: e.into(),
    })
}

/// Reads at most [`MAX_BODY`] bytes of `resp` as JSON.
async fn read_json(mut resp: reqwest::Response, doing: &str) -> Result<Value, AuthError> {
    let fail = |source: Box<dyn std::error::Error + Send + Sync>| AuthError::Http {
        doing: doing.to_owned(),
        source,
    };
    let mut body = Vec::new();
    while let Some(chunk) = resp.chunk().await.map_err(|e| fail(e.into()))? {
        if body.len() + chunk.len() > MAX_BODY {
            return Err(fail(
                format!("the answer is larger than {MAX_BODY} bytes").into(),
            ));
        }
        body.extend_from_slice(&chunk);
    }
    serde_json::from_slice(&body).map_err(|e| fail(e.into()))
}

async fn get_json(client: &reqwest::Client, url: &str, why: &str) -> Result<Value, AuthError> {
    let doing = format!("{why}: GET {url}");
    let resp = client.get(url).send().await.map_err(|e| AuthError::Http {
        doing: doing.clone(),
        source: e.into(),
    })?;
    if !resp.status().is_success() {
        return Err(AuthError::Status {
            doing,
            status: resp.status().as_u16(),
        });
    }
    read_json(resp, &doing).await
}

/// POSTs a form; returns the status and the JSON body (an OAuth error body on 4xx; `null` when
/// the body is not JSON).
async fn post_form(
    client: &reqwest::Client,
    url: &str,
    form: &[(&str, &str)],
) -> Result<(u16, Value), AuthError> {
    let doing = format!("POST {url}");
    let body = form_urlencoded::Serializer::new(String::new())
        .extend_pairs(form)
        .finish();
    let resp = client
        .post(url)
        .header("content-type", "application/x-www-form-urlencoded")
        .body(body)
        .send()
        .await
        .map_err(|e| AuthError::Http {
            doing: doing.clone(),
            source: e.into(),
        })?;
    let status = resp.status().as_u16();
    let v = match read_json(resp, &doing).await {
        Ok(v) => v,
        Err(_) => Value::Null,
    };
    Ok((status, v))
}

/// The OAuth error of a body, with its description when there is one.
fn oauth_error(v: &Value) -> String {
    let e = v["error"].as_str().unwrap_or("unknown error");
    match v["error_description"].as_str() {
        Some(d) => format!("{e} ({d})"),
        None => e.to_owned(),
    }
}

/// When to refresh a token that lives `lifetime` seconds: a quarter of the lifetime before it
/// expires, at least 5 s and at most 2 min before. The lifetime is capped at a day (the
/// provider's number cannot overflow the clock).
fn refresh_delay(lifetime: Option<u64>) -> Duration {
    let lifetime = lifetime
        .filter(|s| *s > 0)
        .unwrap_or(3600)
        .min(MAX_TOKEN_LIFETIME);
    let margin = (lifetime / 4).clamp(5, 120);
    Duration::from_secs(lifetime.saturating_sub(margin))
}

impl Login {
    fn from_response(
        client: reqwest::Client,
        token_endpoint: String,
        client_id: String,
        v: &Value,
        old_refresh: Option<String>,
    ) -> Result<Login, AuthError> {
        let Some(access_token) = v["access_token"].as_str() else {
            return Err(AuthError::Provider(
                "the token endpoint answered without an access token".into(),
            ));
        };
        Ok(Login {
            client,
            token_endpoint,
            client_id,
            refresh_token: v["refresh_token"]
                .as_str()
                .map(str::to_owned)
                .or(old_refresh),
            access_token: access_token.to_owned(),
            refresh_at: Instant::now() + refresh_delay(v["expires_in"].as_u64()),
        })
    }

    /// Signs in against the provider that `server` (such as `https://localhost:8443`) names,
    /// trusting the certificates in `ca`: calls `prompt` with where to go and the code, then
    /// polls at the interval the provider asks for (at most a minute) until the user has
    /// entered the code, declined, or the code expired (at most an hour).
    pub async fn device_grant(
        server: &str,
        ca: &Path,
        prompt: impl FnOnce(&DevicePrompt),
    ) -> Result<Login, AuthError> {
        let client = http(ca)?;
        let server = server.trim_end_matches('/');
        let cfg = get_json(
            &client,
            &format!("{server}/v1/auth/config"),
            "asking the server where to sign in",
        )
        .await?;
        let issuer = cfg["issuer"]
            .as_str()
            .unwrap_or_default()
            .trim_end_matches('/');
        let client_id = cfg["cliClientId"]
            .as_str()
            .or(cfg["clientId"].as_str())
            .unwrap_or_default()
            .to_owned();
        let scopes = cfg["scopes"].as_str().unwrap_or("openid offline_access");
        let meta = get_json(
            &client,
            &format!("{issuer}/.well-known/openid-configuration"),
            "reading the issuer's discovery document",
        )
        .await?;
        let (Some(device_ep), Some(token_ep)) = (
            meta["device_authorization_endpoint"].as_str(),
            meta["token_endpoint"].as_str(),
        ) else {
            return Err(AuthError::NoDeviceGrant {
                issuer: issuer.to_owned(),
            });
        };
        let (status, d) = post_form(
            &client,
            device_ep,
            &[("client_id", &client_id), ("scope", scopes)],
        )
        .await?;
        if status != 200 {
            return Err(AuthError::Provider(format!(
                "the issuer refused to start a device sign-in: {}",
                oauth_error(&d)
            )));
        }
        let (Some(device_code), Some(user_code), Some(uri)) = (
            d["device_code"].as_str(),
            d["user_code"].as_str(),
            d["verification_uri"].as_str(),
        ) else {
            return Err(AuthError::Provider(
                "the device authorization answer lacks device_code, user_code or verification_uri"
                    .into(),
            ));
        };
        prompt(&DevicePrompt {
            verification_uri: uri.to_owned(),
            user_code: user_code.to_owned(),
            verification_uri_complete: d["verification_uri_complete"].as_str().map(str::to_owned),
        });
        let mut interval = d["interval"]
            .as_u64()
            .unwrap_or(5)
            .clamp(1, MAX_POLL_INTERVAL);
        let lifetime = d["expires_in"]
            .as_u64()
            .unwrap_or(600)
            .min(MAX_CODE_LIFETIME);
        let deadline = Instant::now() + Duration::from_secs(lifetime);
        loop {
            tokio::time::sleep(Duration::from_secs(interval)).await;
            if Instant::now() > deadline {
                return Err(AuthError::Expired);
            }
            let (status, v) = post_form(
                &client,
                token_ep,
                &[
                    ("grant_type", "urn:ietf:params:oauth:grant-type:device_code"),
                    ("device_code", device_code),
                    ("client_id", &client_id),
                ],
            )
            .await?;
            if status == 200 {
                return Login::from_response(client, token_ep.to_owned(), client_id, &v, None);
            }
            match v["error"].as_str() {
                Some("authorization_pending") => {}
                Some("slow_down") => interval = (interval + 5).min(MAX_POLL_INTERVAL),
                Some("access_denied") => return Err(AuthError::Denied),
                Some("expired_token") => return Err(AuthError::Expired),
                _ => {
                    return Err(AuthError::Provider(format!(
                        "sign-in failed: {}",
                        oauth_error(&v)
                    )))
                }
            }
        }
    }

    /// The access token (a bearer token: never print or log it).
    pub fn access_token(&self) -> &str {
        &self.access_token
    }

    /// When to call [`Login::refresh`]: a little before the access token expires.
    pub fn refresh_at(&self) -> Instant {
        self.refresh_at
    }

    /// Whether a refresh token is at hand.
    pub fn can_refresh(&self) -> bool {
        self.refresh_token.is_some()
    }

    /// Renews the access token with the refresh token. On a refusal the refresh token is
    /// dropped ([`Login::can_refresh`] turns false).
    pub async fn refresh(&mut self) -> Result<(), AuthError> {
        let Some(rt) = self.refresh_token.clone() else {
            return Err(AuthError::NoRefreshToken);
        };
        let (status, v) = post_form(
            &self.client,
            &self.token_endpoint,
            &[
                ("grant_type", "refresh_token"),
                ("refresh_token", &rt),
                ("client_id", &self.client_id),
            ],
        )
        .await?;
        if status != 200 {
            self.refresh_token = None;
            return Err(AuthError::Provider(format!(
                "refreshing the sign-in failed: {}",
                oauth_error(&v)
            )));
        }
        *self = Login::from_response(
            self.client.clone(),
            self.token_endpoint.clone(),
            self.client_id.clone(),
            &v,
            Some(rt),
        )?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_given_token_wins_over_the_file_and_blank_means_none() {
        let dir = std::env::temp_dir().join(format!("assist-client-auth-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("token");
        std::fs::write(&file, "  from-file \nsecond line\n").unwrap();
        assert_eq!(
            given_token(Some(" given "), Some(&file))
                .unwrap()
                .as_deref(),
            Some("given")
        );
        assert_eq!(
            given_token(Some("  "), Some(&file)).unwrap().as_deref(),
            Some("from-file")
        );
        assert_eq!(given_token(None, None).unwrap(), None);
        std::fs::write(&file, "\nsecond line\n").unwrap();
        let e = given_token(None, Some(&file)).unwrap_err();
        assert!(matches!(e, AuthError::EmptyTokenFile { .. }), "{e}");
        assert!(e.to_string().contains("is empty"), "{e}");
        let e = token_from_file(&dir.join("missing")).unwrap_err();
        assert!(matches!(e, AuthError::ReadTokenFile { .. }), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn refresh_comes_a_quarter_before_expiry_within_bounds() {
        assert_eq!(refresh_delay(Some(3600)), Duration::from_secs(3600 - 120));
        assert_eq!(refresh_delay(Some(100)), Duration::from_secs(75));
        assert_eq!(refresh_delay(Some(8)), Duration::from_secs(3));
        assert_eq!(refresh_delay(Some(2)), Duration::ZERO);
        // Missing or zero: an hour. Absurd: a day at most, without overflowing the clock.
        assert_eq!(refresh_delay(None), Duration::from_secs(3600 - 120));
        assert_eq!(refresh_delay(Some(0)), Duration::from_secs(3600 - 120));
        assert_eq!(
            refresh_delay(Some(u64::MAX)),
            Duration::from_secs(MAX_TOKEN_LIFETIME - 120)
        );
    }

    #[test]
    fn oauth_errors_read_with_their_description() {
        assert_eq!(
            oauth_error(
                &serde_json::json!({"error": "invalid_grant", "error_description": "expired"})
            ),
            "invalid_grant (expired)"
        );
        assert_eq!(oauth_error(&serde_json::json!({"error": "x"})), "x");
        assert_eq!(oauth_error(&Value::Null), "unknown error");
    }
}
