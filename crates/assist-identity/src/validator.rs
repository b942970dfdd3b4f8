//! Token validation: signature (asymmetric algorithms only, key chosen by `kid` from the
//! issuer's JWKS), `iss`, `aud`, `exp` and `nbf` with a small leeway, and the claims Assist
//! needs (`tid`, `oid`/`upn`).

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use jsonwebtoken::jwk::AlgorithmParameters;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};

use crate::claims::{Claims, Identity};
use crate::jwks::JwksSource;

/// Why a token was refused. Every variant is the caller's fault except [`TokenError::KeyFetch`]
/// (the identity provider's or ours); all of them answer 401.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TokenError {
    /// No token was presented.
    #[error("no bearer token was presented")]
    Missing,
    /// The token is not a well-formed JWS compact serialisation.
    #[error("the token is malformed")]
    Malformed,
    /// The header names an algorithm outside the allow-list (`none`, HMAC, …).
    #[error("the token's algorithm is not accepted")]
    UnsupportedAlgorithm,
    /// The `iss` claim names no trusted issuer.
    #[error("the token's issuer is not trusted")]
    UnknownIssuer,
    /// No key of the issuer matches the token's `kid`.
    #[error("the token is signed with an unknown key")]
    UnknownKey,
    /// The signature does not verify.
    #[error("the token's signature is invalid")]
    InvalidSignature,
    /// `exp` is in the past.
    #[error("the token has expired")]
    Expired,
    /// `nbf` is in the future.
    #[error("the token is not valid yet")]
    NotYetValid,
    /// `aud` does not name this service.
    #[error("the token is not meant for this service (audience)")]
    WrongAudience,
    /// A claim Assist needs is missing.
    #[error("the token lacks the '{0}' claim")]
    MissingClaim(String),
    /// A claim holds a value Assist refuses (control characters in an identifier or a name).
    #[error("the token's '{0}' claim holds control characters")]
    BadClaim(String),
    /// The issuer is trusted, but not for the tenant the token names (`tid`).
    #[error("the token's issuer may not speak for its tenant")]
    TenantNotAllowed,
    /// The issuer's keys could not be fetched.
    #[error("the issuer's signing keys could not be fetched: {0}")]
    KeyFetch(String),
}

/// The placeholder a multi-tenant issuer template carries where each tenant's id goes, as in
/// Entra ID's `https://login.microsoftonline.com/{tenantid}/v2.0`.
pub const TENANT_PLACEHOLDER: &str = "{tenantid}";

/// The tenants an issuer may speak for: a token whose `tid` is outside them is refused, so a
/// compromised or careless identity provider of one organisation cannot act for another.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TenantBinding {
    /// Any `tid` (the local dev issuer; an issuer explicitly configured with `tenants = ["*"]`).
    Any,
    /// Only these tenant ids.
    Only(Vec<String>),
}

impl TenantBinding {
    fn allows(&self, tid: &str) -> bool {
        match self {
            TenantBinding::Any => true,
            TenantBinding::Only(list) => list.iter().any(|t| t == tid),
        }
    }
}

/// An issuer whose tokens are accepted, where its keys are, and which tenants it speaks for.
#[derive(Debug, Clone)]
pub struct TrustedIssuer {
    /// The exact `iss` value, or a template with [`TENANT_PLACEHOLDER`] (Entra ID's multi-tenant
    /// issuer): then `iss` must be the template with the token's own `tid` in its place.
    pub issuer: String,
    /// Its signing keys.
    pub keys: JwksSource,
    /// The tenants it may speak for.
    pub tenants: TenantBinding,
}

impl TrustedIssuer {
    /// Whether `iss` is this issuer's (for a template: any tenant's; `tid` is checked later).
    fn names(&self, iss: &str) -> bool {
        match self.issuer.split_once(TENANT_PLACEHOLDER) {
            None => self.issuer == iss,
            Some((prefix, suffix)) => template_tenant(prefix, suffix, iss).is_some(),
        }
    }

    /// Whether a token from `iss` naming tenant `tid` is this issuer speaking for a tenant it may.
    fn speaks_for(&self, iss: &str, tid: &str) -> bool {
        let tenant_in_iss = match self.issuer.split_once(TENANT_PLACEHOLDER) {
            None => true,
            Some((prefix, suffix)) => template_tenant(prefix, suffix, iss) == Some(tid),
        };
        tenant_in_iss && self.tenants.allows(tid)
    }
}

/// The tenant segment of `iss` for the template `prefix{tenantid}suffix`: one non-empty path
/// segment (no `/`, `?` or `#`).
fn template_tenant<'a>(prefix: &str, suffix: &str, iss: &'a str) -> Option<&'a str> {
    let middle = iss.strip_prefix(prefix)?.strip_suffix(suffix)?;
    (!middle.is_empty() && !middle.contains(['/', '?', '#'])).then_some(middle)
}

/// Validates bearer tokens.
#[derive(Debug, Clone)]
pub struct TokenValidator {
    issuers: Vec<TrustedIssuer>,
    audiences: Vec<String>,
    leeway_secs: u64,
}

/// Algorithms accepted. Never `none`, never HMAC: a public key must not double as a shared secret.
pub const ALLOWED_ALGORITHMS: &[Algorithm] = &[
    Algorithm::ES256,
    Algorithm::ES384,
    Algorithm::RS256,
    Algorithm::RS384,
    Algorithm::RS512,
    Algorithm::PS256,
    Algorithm::PS384,
    Algorithm::PS512,
    Algorithm::EdDSA,
];

fn peek_issuer(token: &str) -> Result<String, TokenError> {
    let mut parts = token.split('.');
    let (Some(_), Some(payload), Some(_), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(TokenError::Malformed);
    };
    let bytes = URL_SAFE_NO_PAD
        .decode(payload)
        .map_err(|_| TokenError::Malformed)?;
    let v: serde_json::Value = serde_json::from_slice(&bytes).map_err(|_| TokenError::Malformed)?;
    match v.get("iss") {
        Some(serde_json::Value::String(iss)) => Ok(iss.clone()),
        Some(_) => Err(TokenError::Malformed),
        None => Err(TokenError::MissingClaim("iss".into())),
    }
}

fn key_fits(alg: Algorithm, params: &AlgorithmParameters) -> bool {
    use Algorithm::*;
    match params {
        AlgorithmParameters::EllipticCurve(_) => matches!(alg, ES256 | ES384),
        AlgorithmParameters::RSA(_) => matches!(alg, RS256 | RS384 | RS512 | PS256 | PS384 | PS512),
        AlgorithmParameters::OctetKeyPair(_) => alg == EdDSA,
        // Symmetric keys are never accepted from a JWKS.
        AlgorithmParameters::OctetKey(_) => false,
        _ => false,
    }
}

impl TokenValidator {
    /// A validator accepting tokens from `issuers` whose `aud` is one of `audiences`, with
    /// `leeway_secs` of clock skew on `exp` and `nbf`.
    pub fn new(issuers: Vec<TrustedIssuer>, audiences: Vec<String>, leeway_secs: u64) -> Self {
        // Idempotent: the first provider installed in the process stays.
        let _ = jsonwebtoken::crypto::aws_lc::DEFAULT_PROVIDER.install_default();
        Self {
            issuers,
            audiences,
            leeway_secs,
        }
    }

    /// The clock skew allowed on `exp` and `nbf`: a token is accepted until `exp` plus this.
    pub fn leeway(&self) -> std::time::Duration {
        std::time::Duration::from_secs(self.leeway_secs)
    }

    /// Validates `token` and returns who it names.
    pub async fn validate(&self, token: &str) -> Result<Identity, TokenError> {
        if token.is_empty() {
            return Err(TokenError::Missing);
        }
        if token.len() > 16 * 1024 {
            return Err(TokenError::Malformed);
        }
        // Read `alg` ourselves first: names jsonwebtoken does not know (`none`) must still be
        // reported as a refused algorithm, not as a malformed token.
        let alg_name = token
            .split('.')
            .next()
            .and_then(|h| URL_SAFE_NO_PAD.decode(h).ok())
            .and_then(|h| serde_json::from_slice::<serde_json::Value>(&h).ok())
            .and_then(|h| h.get("alg").and_then(|a| a.as_str()).map(str::to_owned))
            .ok_or(TokenError::Malformed)?;
        if !ALLOWED_ALGORITHMS
            .iter()
            .any(|a| format!("{a:?}") == alg_name)
        {
            return Err(TokenError::UnsupportedAlgorithm);
        }
        let header = jsonwebtoken::decode_header(token).map_err(|e| match e.kind() {
            jsonwebtoken::errors::ErrorKind::InvalidAlgorithmName => {
                TokenError::UnsupportedAlgorithm
            }
            _ => TokenError::Malformed,
        })?;
        if !ALLOWED_ALGORITHMS.contains(&header.alg) {
            return Err(TokenError::UnsupportedAlgorithm);
        }
        let iss = peek_issuer(token)?;
        let issuer = self
            .issuers
            .iter()
            .find(|i| i.names(&iss))
            .ok_or(TokenError::UnknownIssuer)?;
        let jwk = issuer.keys.key_for(header.kid.as_deref()).await?;
        if !key_fits(header.alg, &jwk.algorithm) {
            return Err(TokenError::UnsupportedAlgorithm);
        }
        if let Some(key_alg) = jwk.common.key_algorithm {
            if format!("{key_alg:?}") != format!("{:?}", header.alg) {
                return Err(TokenError::UnsupportedAlgorithm);
            }
        }
        let key = DecodingKey::from_jwk(&jwk).map_err(|_| TokenError::UnknownKey)?;
        let mut validation = Validation::new(header.alg);
        validation.leeway = self.leeway_secs;
        validation.validate_nbf = true;
        validation.set_issuer(&[iss.as_str()]);
        validation.set_audience(&self.audiences);
        validation.set_required_spec_claims(&["exp", "iss", "aud"]);
        let data = jsonwebtoken::decode::<Claims>(token, &key, &validation).map_err(|e| {
            use jsonwebtoken::errors::ErrorKind as K;
            match e.kind() {
                K::ExpiredSignature => TokenError::Expired,
                K::ImmatureSignature => TokenError::NotYetValid,
                K::InvalidAudience => TokenError::WrongAudience,
                K::InvalidIssuer => TokenError::UnknownIssuer,
                K::InvalidSignature => TokenError::InvalidSignature,
                K::InvalidAlgorithm | K::InvalidAlgorithmName => TokenError::UnsupportedAlgorithm,
                K::MissingRequiredClaim(c) => TokenError::MissingClaim(c.clone()),
                _ => TokenError::Malformed,
            }
        })?;
        let id = identity_from(data.claims)?;
        if !issuer.speaks_for(&iss, &id.tenant_id) {
            return Err(TokenError::TenantNotAllowed);
        }
        Ok(id)
    }
}

/// Whether an identifier from a token is fit to be stored, logged and compared: not empty and
/// free of control characters (NUL, ESC, CR, LF, DEL, C1), which would forge log lines or keys.
fn clean(v: &str) -> bool {
    !v.is_empty() && !v.contains(char::is_control)
}

fn identity_from(c: Claims) -> Result<Identity, TokenError> {
    for (name, v) in [
        ("tid", &c.tid),
        ("oid", &c.oid),
        ("upn", &c.upn),
        ("preferred_username", &c.preferred_username),
        ("deviceid", &c.deviceid),
        ("name", &c.name),
        ("given_name", &c.given_name),
        ("family_name", &c.family_name),
    ] {
        if v.as_deref().is_some_and(|v| v.contains(char::is_control)) {
            return Err(TokenError::BadClaim(name.into()));
        }
    }
    if c.roles.iter().any(|r| !clean(r)) {
        return Err(TokenError::BadClaim("roles".into()));
    }
    let tenant_id = c
        .tid
        .filter(|t| !t.is_empty())
        .ok_or_else(|| TokenError::MissingClaim("tid".into()))?;
    let device_id = c.deviceid.filter(|d| !d.is_empty());
    let upn = c.upn.or(c.preferred_username).filter(|u| !u.is_empty());
    // A token with a device and no user is a device token; any other token needs a user.
    let is_device = upn.is_none() && device_id.is_some();
    let upn = match upn {
        Some(u) => u,
        None if is_device => String::new(),
        None => return Err(TokenError::MissingClaim("upn".into())),
    };
    let object_id = c
        .oid
        .filter(|o| !o.is_empty())
        .ok_or_else(|| TokenError::MissingClaim("oid".into()))?;
    Ok(Identity {
        tenant_id,
        object_id,
        user_principal_name: upn,
        display_name: c.name,
        given_name: c.given_name,
        family_name: c.family_name,
        roles: c.roles,
        scopes: c
            .scp
            .map(|s| s.split_whitespace().map(str::to_owned).collect())
            .unwrap_or_default(),
        device_id,
        directory_roles: c.wids,
        is_device,
        // `exp` is a required claim: decoding fails without it.
        expires_at: c.exp.unwrap_or(0),
        // Bounded: a token is at most 16 KiB, but a group id is never longer than a UUID-ish
        // string; anything odd is dropped rather than trusted.
        groups: c
            .groups
            .into_iter()
            .filter(|g| !g.is_empty() && g.len() <= 128)
            .take(1000)
            .collect(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dev_issuer::{DevIssuer, TokenRequest, DEV_ISSUER};
    use std::sync::Arc;
    use std::time::{Duration, SystemTime, UNIX_EPOCH};

    const AUD: &str = "api://assist";

    fn setup() -> (DevIssuer, TokenValidator, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        let dev = DevIssuer::load_or_create(dir.path()).unwrap();
        let v = TokenValidator::new(
            vec![TrustedIssuer {
                issuer: DEV_ISSUER.into(),
                keys: JwksSource::Static(Arc::new(dev.jwks().clone())),
                tenants: TenantBinding::Any,
            }],
            vec![AUD.into()],
            60,
        );
        (dev, v, dir)
    }

    fn req() -> TokenRequest {
        TokenRequest {
            tenant_id: "t1".into(),
            user_principal_name: "ana@contoso.com".into(),
            roles: vec!["DeviceManagementServiceConfig.Read.All".into()],
            scopes: vec!["a".into(), "b".into()],
            device_id: Some("dev-1".into()),
            ttl: Duration::from_secs(3600),
            audience: AUD.into(),
            ..Default::default()
        }
    }

    fn now() -> u64 {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs()
    }

    #[tokio::test]
    async fn valid_token_yields_identity() {
        let (dev, v, _d) = setup();
        let id = v.validate(&dev.mint(&req()).unwrap()).await.unwrap();
        assert_eq!(id.tenant_id, "t1");
        assert_eq!(id.user_principal_name, "ana@contoso.com");
        assert_eq!(id.display_name.as_deref(), Some("ana"));
        assert_eq!(id.scopes, vec!["a", "b"]);
        assert_eq!(id.device_id.as_deref(), Some("dev-1"));
        assert!(id.has_any_permission(&["DeviceManagementServiceConfig.Read.All"]));
        assert!(id.has_any_permission(&["b"]));
        assert!(!id.has_any_permission(&["DeviceManagementServiceConfig.ReadWrite.All"]));
    }

    #[tokio::test]
    async fn wids_make_an_intune_admin_only_for_the_two_admin_roles_and_never_a_device() {
        use crate::claims::{GLOBAL_ADMINISTRATOR, INTUNE_ADMINISTRATOR};
        let (dev, v, _d) = setup();
        let with = |wids: &[&str], device_token: bool| {
            let mut r = req();
            r.directory_roles = wids.iter().map(|w| w.to_string()).collect();
            if device_token {
                r.user_principal_name = String::new();
            }
            dev.mint(&r).unwrap()
        };
        let id = v.validate(&with(&[], false)).await.unwrap();
        assert!(id.directory_roles.is_empty());
        assert!(!id.is_intune_admin());
        for admin in [GLOBAL_ADMINISTRATOR, INTUNE_ADMINISTRATOR] {
            let id = v.validate(&with(&["x", admin], false)).await.unwrap();
            assert_eq!(id.directory_roles, vec!["x", admin]);
            assert!(id.is_intune_admin(), "{admin}");
            let upper = admin.to_ascii_uppercase();
            assert!(v
                .validate(&with(&[&upper], false))
                .await
                .unwrap()
                .is_intune_admin());
            assert!(!v
                .validate(&with(&[admin], true))
                .await
                .unwrap()
                .is_intune_admin());
        }
        // Another directory role (Helpdesk Administrator) grants nothing here.
        let id = v
            .validate(&with(&["729827e3-9c14-49f7-bb1b-9608f156bbb8"], false))
            .await
            .unwrap();
        assert!(!id.is_intune_admin());
    }

    #[tokio::test]
    async fn time_claims_are_enforced_with_leeway() {
        let (dev, v, _d) = setup();
        let r = req();
        let expired = dev.mint_at(&r, now() - 3600 - 120).unwrap();
        assert_eq!(v.validate(&expired).await.unwrap_err(), TokenError::Expired);
        let future = dev.mint_at(&r, now() + 600).unwrap();
        assert_eq!(
            v.validate(&future).await.unwrap_err(),
            TokenError::NotYetValid
        );
        // Within the 60 s leeway both ways.
        assert!(v
            .validate(&dev.mint_at(&r, now() + 30).unwrap())
            .await
            .is_ok());
        assert!(v
            .validate(&dev.mint_at(&r, now() - 3600 - 30).unwrap())
            .await
            .is_ok());
    }

    #[tokio::test]
    async fn audience_issuer_signature_and_alg_are_checked() {
        let (dev, v, _d) = setup();
        let mut r = req();
        r.audience = "api://other".into();
        assert_eq!(
            v.validate(&dev.mint(&r).unwrap()).await.unwrap_err(),
            TokenError::WrongAudience
        );

        let mut c = Claims {
            iss: Some("https://evil.example".into()),
            aud: Some(AUD.into()),
            exp: Some(now() + 60),
            tid: Some("t1".into()),
            oid: Some("o".into()),
            upn: Some("u@x".into()),
            ..Default::default()
        };
        assert_eq!(
            v.validate(&dev.sign(&c).unwrap()).await.unwrap_err(),
            TokenError::UnknownIssuer
        );

        c.iss = Some(DEV_ISSUER.into());
        let good = dev.sign(&c).unwrap();
        assert!(v.validate(&good).await.is_ok());
        // Tamper with the payload: the signature no longer matches.
        let parts: Vec<&str> = good.split('.').collect();
        let mut payload: serde_json::Value =
            serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[1]).unwrap()).unwrap();
        payload["tid"] = "t2".into();
        let forged = format!(
            "{}.{}.{}",
            parts[0],
            URL_SAFE_NO_PAD.encode(payload.to_string()),
            parts[2]
        );
        assert_eq!(
            v.validate(&forged).await.unwrap_err(),
            TokenError::InvalidSignature
        );

        // alg none, and HS256 signed with anything.
        for alg in ["none", "HS256"] {
            let header = URL_SAFE_NO_PAD.encode(format!(r#"{{"alg":"{alg}","typ":"JWT"}}"#));
            let tok = format!("{header}.{}.", parts[1]);
            let e = v.validate(&tok).await.unwrap_err();
            assert!(
                matches!(e, TokenError::UnsupportedAlgorithm | TokenError::Malformed),
                "{alg}: {e:?}"
            );
        }

        // Missing claims.
        c.tid = None;
        assert_eq!(
            v.validate(&dev.sign(&c).unwrap()).await.unwrap_err(),
            TokenError::MissingClaim("tid".into())
        );
    }

    #[tokio::test]
    async fn a_device_without_a_user_is_a_device_token() {
        let (dev, v, _d) = setup();
        let mut r = req();
        r.user_principal_name = String::new();
        let id = v.validate(&dev.mint(&r).unwrap()).await.unwrap();
        assert!(id.is_device);
        assert_eq!(id.device_id.as_deref(), Some("dev-1"));
        r.device_id = None;
        assert_eq!(
            v.validate(&dev.mint(&r).unwrap()).await.unwrap_err(),
            TokenError::MissingClaim("upn".into()),
            "no user and no device"
        );
        let r = req();
        assert!(!v.validate(&dev.mint(&r).unwrap()).await.unwrap().is_device);
    }

    #[tokio::test]
    async fn the_groups_claim_is_read() {
        let (dev, v, _d) = setup();
        let mut c: Claims = serde_json::from_value(serde_json::json!({
            "iss": DEV_ISSUER, "aud": AUD, "exp": now() + 60, "tid": "t1", "oid": "o",
            "upn": "u@x", "groups": ["g1", "", "g2"],
        }))
        .unwrap();
        let id = v.validate(&dev.sign(&c).unwrap()).await.unwrap();
        assert_eq!(id.groups, vec!["g1", "g2"]);
        c.groups.clear();
        assert!(v
            .validate(&dev.sign(&c).unwrap())
            .await
            .unwrap()
            .groups
            .is_empty());
    }

    #[tokio::test]
    async fn unknown_kid_and_other_keys_are_refused() {
        let (_dev, v, _d) = setup();
        let other_dir = tempfile::tempdir().unwrap();
        let other = DevIssuer::load_or_create(other_dir.path()).unwrap();
        let e = v.validate(&other.mint(&req()).unwrap()).await.unwrap_err();
        assert_eq!(e, TokenError::UnknownKey);
    }

    fn validator_for(dev: &DevIssuer, issuer: &str, tenants: TenantBinding) -> TokenValidator {
        TokenValidator::new(
            vec![TrustedIssuer {
                issuer: issuer.into(),
                keys: JwksSource::Static(Arc::new(dev.jwks().clone())),
                tenants,
            }],
            vec![AUD.into()],
            60,
        )
    }

    fn claims(iss: &str, tid: &str) -> Claims {
        Claims {
            iss: Some(iss.into()),
            aud: Some(AUD.into()),
            exp: Some(now() + 60),
            tid: Some(tid.into()),
            oid: Some("o".into()),
            upn: Some("u@x.example".into()),
            ..Default::default()
        }
    }

    #[tokio::test]
    async fn an_issuer_speaks_only_for_its_tenants() {
        let (dev, _, _d) = setup();
        let v = validator_for(
            &dev,
            "https://idp.example/",
            TenantBinding::Only(vec!["t1".into()]),
        );
        let ok = dev.sign(&claims("https://idp.example/", "t1")).unwrap();
        assert_eq!(v.validate(&ok).await.unwrap().tenant_id, "t1");
        let other = dev.sign(&claims("https://idp.example/", "t2")).unwrap();
        assert_eq!(
            v.validate(&other).await.unwrap_err(),
            TokenError::TenantNotAllowed
        );
    }

    #[tokio::test]
    async fn a_multi_tenant_template_must_name_the_tokens_own_tenant() {
        let (dev, _, _d) = setup();
        let tpl = "https://login.microsoftonline.com/{tenantid}/v2.0";
        let v = validator_for(&dev, tpl, TenantBinding::Any);
        let own = |iss_tid: &str, tid: &str| {
            dev.sign(&claims(
                &format!("https://login.microsoftonline.com/{iss_tid}/v2.0"),
                tid,
            ))
            .unwrap()
        };
        assert_eq!(v.validate(&own("t1", "t1")).await.unwrap().tenant_id, "t1");
        // Tenant t1's issuer asserting t2: what Microsoft's own validation refuses.
        assert_eq!(
            v.validate(&own("t1", "t2")).await.unwrap_err(),
            TokenError::TenantNotAllowed
        );
        for iss in [
            "https://login.microsoftonline.com//v2.0",
            "https://login.microsoftonline.com/t1/x/v2.0",
            "https://login.microsoftonline.com/t1/v2.0/extra",
            "https://evil.example/t1/v2.0",
        ] {
            let tok = dev.sign(&claims(iss, "t1")).unwrap();
            assert_eq!(
                v.validate(&tok).await.unwrap_err(),
                TokenError::UnknownIssuer,
                "{iss}"
            );
        }
        // A template bound to a list: both must hold.
        let v = validator_for(&dev, tpl, TenantBinding::Only(vec!["t1".into()]));
        assert!(v.validate(&own("t1", "t1")).await.is_ok());
        assert_eq!(
            v.validate(&own("t3", "t3")).await.unwrap_err(),
            TokenError::TenantNotAllowed
        );
    }

    #[tokio::test]
    async fn control_characters_in_identity_claims_are_refused() {
        let (dev, v, _d) = setup();
        for (field, value) in [
            ("upn", "ana\u{0}@contoso.com"),
            ("tid", "t1\n"),
            ("oid", "o\u{1b}[2J"),
            ("name", "Ana\r\nINFO forged"),
        ] {
            let mut c = claims(DEV_ISSUER, "t1");
            match field {
                "upn" => c.upn = Some(value.into()),
                "tid" => c.tid = Some(value.into()),
                "oid" => c.oid = Some(value.into()),
                _ => c.name = Some(value.into()),
            }
            assert_eq!(
                v.validate(&dev.sign(&c).unwrap()).await.unwrap_err(),
                TokenError::BadClaim(field.into()),
                "{field}"
            );
        }
    }

    #[tokio::test]
    async fn garbage_is_malformed() {
        let (_dev, v, _d) = setup();
        for t in [
            "",
            "a",
            "a.b",
            "a.b.c",
            "a.b.c.d",
            "....",
            "eyJhbGciOiJFUzI1NiJ9.e30.sig",
        ] {
            let e = v.validate(t).await.unwrap_err();
            assert!(
                matches!(
                    e,
                    TokenError::Malformed | TokenError::Missing | TokenError::MissingClaim(_)
                ),
                "{t}: {e:?}"
            );
        }
    }
}
