//! Bearer token validation: JWT header and claims parsing. Two inputs from one: the bytes as a
//! token (garbage, forged headers, `alg` games), and the bytes as claims JSON that the dev key
//! signs, so claims parsing past the signature (tid, upn, control characters, tenant binding)
//! is reached too. Never panics; nothing validates that should not.
#![no_main]

use assist_identity::claims::Claims;
use assist_identity::dev_issuer::DEV_ISSUER;
use assist_identity::{DevIssuer, JwksSource, TenantBinding, TokenValidator, TrustedIssuer};
use libfuzzer_sys::fuzz_target;
use std::future::Future;
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll, Waker};

struct Setup {
    dev: DevIssuer,
    validator: TokenValidator,
}

fn setup() -> &'static Setup {
    static SETUP: OnceLock<Setup> = OnceLock::new();
    SETUP.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("assist-fuzz-jwt-{}", std::process::id()));
        let dev = DevIssuer::load_or_create(&dir).expect("dev issuer key");
        let jwks = Arc::new(dev.jwks().clone());
        let validator = TokenValidator::new(
            vec![
                TrustedIssuer {
                    issuer: DEV_ISSUER.into(),
                    keys: JwksSource::Static(jwks.clone()),
                    tenants: TenantBinding::Any,
                },
                TrustedIssuer {
                    issuer: "https://login.example/{tenantid}/v2.0".into(),
                    keys: JwksSource::Static(jwks.clone()),
                    tenants: TenantBinding::Only(vec!["t1".into()]),
                },
            ],
            vec!["api://assist".into()],
            60,
        );
        Setup { dev, validator }
    })
}

/// Static keys never wait: one poll completes the validation.
fn now<F: Future>(f: F) -> F::Output {
    let mut f = std::pin::pin!(f);
    match f.as_mut().poll(&mut Context::from_waker(Waker::noop())) {
        Poll::Ready(v) => v,
        Poll::Pending => panic!("validation with static keys waited"),
    }
}

fuzz_target!(|data: &[u8]| {
    let s = setup();
    if let Ok(token) = std::str::from_utf8(data) {
        // Bytes the fuzzer made up carry no signature of this run's fresh key: never valid.
        assert!(now(s.validator.validate(token)).is_err());
    }
    if let Ok(claims) = serde_json::from_slice::<Claims>(data) {
        if let Ok(token) = s.dev.sign(&claims) {
            if let Ok(id) = now(s.validator.validate(&token)) {
                assert!(!id.tenant_id.is_empty());
                assert!(!id.tenant_id.contains(char::is_control));
                assert!(!id.user_principal_name.contains(char::is_control));
                if claims.iss.as_deref() != Some(DEV_ISSUER) {
                    assert_eq!(
                        id.tenant_id, "t1",
                        "the template issuer spoke for another tenant"
                    );
                }
            }
        }
    }
});
