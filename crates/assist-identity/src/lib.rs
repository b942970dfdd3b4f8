//! Who is calling.
//!
//! This crate owns token validation (signature against a JWKS with key rotation, issuer,
//! audience, expiry and not-before with a small leeway, an allow-list of asymmetric algorithms)
//! and Assist's development token issuer (an ES256 key pair kept in the data directory) with
//! the grant bookkeeping of its minimal OpenID Connect provider ([`dev_provider`]). It
//! turns a bearer token into an [`Identity`]; it decides nothing about what that identity may
//! do (the admin API checks Graph permissions, the policy crate decides Remote Help access).
//! Its only IO is reading key files and fetching an OIDC issuer's JWKS over HTTPS.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod claims;
pub mod dev_issuer;
pub mod dev_provider;
pub mod jwks;
pub mod keys;
pub mod validator;

pub use claims::{Identity, GLOBAL_ADMINISTRATOR, INTUNE_ADMINISTRATOR};
pub use dev_issuer::{DevIssuer, TokenRequest};
pub use jwks::{JwksSource, RemoteJwks};
pub use validator::{TenantBinding, TokenError, TokenValidator, TrustedIssuer, TENANT_PLACEHOLDER};
