//! Microsoft Graph shapes for Assist.
//!
//! This crate owns what the admin API looks like on the wire: the entities Assist serves
//! (`remoteAssistanceSettings` so far), how a PATCH body is validated and applied, the OData
//! query options (`$select` …) and Graph's error body. It does no IO and knows nothing about
//! HTTP servers, tokens or storage: the `assistd` binary feeds it parsed JSON and query strings
//! and turns its results into responses.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod directory;
pub mod entity;
pub mod error;
pub mod odata;
pub mod settings;

pub use error::{GraphError, GraphErrorKind};
