//! # assist-session
//!
//! The session lifecycle state machine of the Assist broker (a self-hostable Remote Help
//! service), sans-IO in the style of `quinn-proto` and `rustls`.
//!
//! **What this crate owns:** the signalling protocol's messages ([`message`]), security
//! codes ([`code`]), and the [`Broker`]: pairing by code or by device launch, profiles,
//! mode requests and their policy evaluation, warnings, consent (and its timeout), the
//! unattended decline window, relay tickets, mode upgrades and downgrades, chat (refused
//! when the tenant blocks it, checked at send time), ending, brute-force and abuse limits,
//! and the session report and audit events each transition produces.
//!
//! **What it does not own, and why it does no IO:** no sockets, no clock, no randomness, no
//! store, no async runtime. Time comes in as `now` ([`Timestamp`], milliseconds since the
//! Unix epoch) with every input; randomness and code hashing come from a [`Crypto`] the IO
//! layer supplies; policy facts are loaded by the IO layer when the machine asks
//! ([`Output::Evaluate`]) and the decision comes back as an input; relay tickets are minted
//! by the IO layer ([`Output::IssueTickets`] → [`Broker::handle_tickets`]). So the machine is
//! deterministic and is tested on virtual time.
//!
//! **Live state** (pending codes, the session directory, which connection holds which user or
//! device) is a port ([`live`]): the machine emits writes ([`Output::Live`]) and queries
//! ([`Output::LiveQuery`]) and gets the answers back as inputs
//! ([`Broker::handle_live_answer`]), so it never blocks on a store, local or remote. The
//! stores (in process, and the contract they keep) are in `assist-live`.
//!
//! **Router and sessions:** the [`Broker`] is the router (connections, rate limits, strikes,
//! codes, timers, live-state queries); each session is its own machine inside it, which
//! references no other session.
//!
//! ## The run loop (for the signalling server)
//! ```text
//! on connection opened:   broker.handle_connect(conn, party, now)
//! on text message:        broker.handle_text(conn, text, now)
//! on connection closed:   broker.handle_disconnect(conn, now)
//! on Evaluate done:       broker.handle_decision(eval, decision, now)
//! on tickets minted:      broker.handle_tickets(session, helper, sharer, now)
//! on settings PATCH:      broker.handle_settings_changed(tenant, block_chat, enabled, now)
//! on requestRemoteAssistance: broker.handle_admin_launch(helper_party, device, now)
//! on a live-state answer: broker.handle_live_answer(token, answer, now)
//! at poll_timeout():      broker.handle_timeout(now)
//! after every call:       while let Some(out) = broker.poll_output() { do it }
//! ```
//! Outputs are in order; perform `Send`s per connection in that order, and live-state ops and
//! queries in that order too.
//!
//! ## Limits
//! - Codes: 8 symbols of [`code::CODE_ALPHABET`], single use, valid `code_ttl` (10 min).
//! - Failed redemptions: 5 per minute per user, then that user's redemptions are refused
//!   (`rateLimited`) for 5 minutes; 50 per minute per tenant, then the whole tenant's are
//!   refused for 1 minute. While locked, codes are not even looked at.
//! - Requests: 10 per second per connection, bursts of 20 (`rateLimited`); 10 abuse
//!   strikes (rate-limited, malformed, unknown or oversized messages) within 60 s close the
//!   connection with 4429 ([`message::CloseCode::Abuse`]).
#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod broker;
pub mod code;
mod config;
mod limit;
pub mod live;
pub mod message;
mod output;
mod party;
mod time;

pub use broker::{
    Broker, InputError, LaunchError, SessionCounts, SessionInfo, SessionState, DRAINING_MESSAGE,
};
pub use code::{Crypto, DangerDeterministicCrypto};
pub use config::{BrokerConfig, ConfigError, FailureLimit, RequestRate};
pub use live::{
    DeviceRef, LiveAnswer, LiveCode, LiveOp, LiveQuery, LiveSession, LiveStage, LiveToken,
};
pub use message::{
    ClientMessage, ClientRequest, EndReason, EndedBy, ErrorCode, Profile, RelayAccess, RequestId,
    Role, ServerEvent, SessionId,
};
pub use output::{
    AuditEvent, AuditKind, ConnId, EvalId, EvaluateRequest, Output, RecordEvent, ReportParty,
};
pub use party::{DeviceInfo, Party, UserRef};
pub use time::Timestamp;
