//! Where signing keys come from: a fixed JWKS (the dev issuer's, or a file) or an OIDC
//! issuer's `jwks_uri`, fetched over HTTPS, cached, and refetched when a token names a key id
//! the cache does not hold (key rotation), at most once per minimum interval.

use jsonwebtoken::jwk::{Jwk, JwkSet};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::Mutex;

use crate::validator::TokenError;

/// How a trusted issuer's keys are found.
#[derive(Debug, Clone)]
pub enum JwksSource {
    /// A fixed set (dev issuer, or a JWKS file read at start).
    Static(Arc<JwkSet>),
    /// Fetched from an HTTPS endpoint and cached.
    Remote(Arc<RemoteJwks>),
}

impl JwksSource {
    /// The key for `kid`; with no `kid`, the only key of the set (a set of several keys needs a `kid`).
    pub async fn key_for(&self, kid: Option<&str>) -> Result<Jwk, TokenError> {
        match self {
            JwksSource::Static(set) => pick(set, kid).ok_or(TokenError::UnknownKey),
            JwksSource::Remote(remote) => remote.key_for(kid).await,
        }
    }
}

fn pick(set: &JwkSet, kid: Option<&str>) -> Option<Jwk> {
    match kid {
        Some(kid) => set.find(kid).cloned(),
        None if set.keys.len() == 1 => set.keys.first().cloned(),
        None => None,
    }
}

/// Where a remote JWKS lives.
#[derive(Debug, Clone)]
pub enum RemoteLocation {
    /// The JWKS URL itself.
    JwksUri(String),
    /// An OIDC issuer; its `/.well-known/openid-configuration` names the `jwks_uri`.
    Discovery(String),
}

#[derive(Debug, Default)]
struct Cache {
    jwks_uri: Option<String>,
    keys: Option<Arc<JwkSet>>,
    fetched_at: Option<Instant>,
}

/// A JWKS fetched over HTTPS and cached.
#[derive(Debug)]
pub struct RemoteJwks {
    location: RemoteLocation,
    client: reqwest::Client,
    min_refresh: Duration,
    max_age: Duration,
    cache: Mutex<Cache>,
}

/// Answers larger than this are refused (a JWKS is a few KiB).
const MAX_DOCUMENT_BYTES: usize = 256 * 1024;

impl RemoteJwks {
    /// A remote JWKS. `client` should have a timeout; `min_refresh` bounds how often an unknown
    /// `kid` may trigger a refetch, `max_age` how long a fetched set is used without refetching.
    pub fn new(
        location: RemoteLocation,
        client: reqwest::Client,
        min_refresh: Duration,
        max_age: Duration,
    ) -> Self {
        Self {
            location,
            client,
            min_refresh,
            max_age,
            cache: Mutex::new(Cache::default()),
        }
    }

    async fn get_json(&self, url: &str) -> Result<serde_json::Value, TokenError> {
        if !url.starts_with("https://") {
            return Err(TokenError::KeyFetch(format!(
                "refusing to fetch keys over plain HTTP: {url}"
            )));
        }
        let resp = self
            .client
            .get(url)
            .send()
            .await
            .map_err(|e| TokenError::KeyFetch(format!("GET {url}: {e}")))?;
        if !resp.status().is_success() {
            return Err(TokenError::KeyFetch(format!(
                "GET {url}: HTTP {}",
                resp.status()
            )));
        }
        let body = resp
            .bytes()
            .await
            .map_err(|e| TokenError::KeyFetch(format!("GET {url}: {e}")))?;
        if body.len() > MAX_DOCUMENT_BYTES {
            return Err(TokenError::KeyFetch(format!(
                "GET {url}: document over {MAX_DOCUMENT_BYTES} bytes"
            )));
        }
        serde_json::from_slice(&body)
            .map_err(|e| TokenError::KeyFetch(format!("GET {url}: not JSON: {e}")))
    }

    async fn refresh(&self, cache: &mut Cache) -> Result<(), TokenError> {
        let uri = match (&cache.jwks_uri, &self.location) {
            (Some(uri), _) => uri.clone(),
            (None, RemoteLocation::JwksUri(uri)) => uri.clone(),
            (None, RemoteLocation::Discovery(issuer)) => {
                let url = format!(
                    "{}/.well-known/openid-configuration",
                    issuer.trim_end_matches('/')
                );
                let doc = self.get_json(&url).await?;
                let uri = doc
                    .get("jwks_uri")
                    .and_then(|v| v.as_str())
                    .ok_or_else(|| TokenError::KeyFetch(format!("{url} has no jwks_uri")))?
                    .to_owned();
                cache.jwks_uri = Some(uri.clone());
                uri
            }
        };
        // Mark the attempt first so a failing endpoint is not hammered.
        cache.fetched_at = Some(Instant::now());
        let doc = self.get_json(&uri).await?;
        let set: JwkSet = serde_json::from_value(doc)
            .map_err(|e| TokenError::KeyFetch(format!("{uri}: not a JWKS: {e}")))?;
        tracing::info!(keys = set.keys.len(), jwks_uri = %uri, "fetched signing keys");
        cache.keys = Some(Arc::new(set));
        Ok(())
    }

    async fn key_for(&self, kid: Option<&str>) -> Result<Jwk, TokenError> {
        let mut cache = self.cache.lock().await;
        let stale = cache.fetched_at.is_none_or(|t| t.elapsed() >= self.max_age);
        if stale {
            if let Err(e) = self.refresh(&mut cache).await {
                // Keep serving a previously fetched set if there is one.
                if cache.keys.is_none() {
                    return Err(e);
                }
                tracing::warn!(error = %e, "refreshing signing keys failed; using the cached set");
            }
        }
        if let Some(key) = cache.keys.as_deref().and_then(|set| pick(set, kid)) {
            return Ok(key);
        }
        // Unknown kid: the issuer may have rotated keys. Refetch, but not more often than min_refresh.
        let may_refetch = !stale
            && cache
                .fetched_at
                .is_none_or(|t| t.elapsed() >= self.min_refresh);
        if may_refetch {
            self.refresh(&mut cache).await?;
            if let Some(key) = cache.keys.as_deref().and_then(|set| pick(set, kid)) {
                return Ok(key);
            }
        }
        Err(TokenError::UnknownKey)
    }
}
