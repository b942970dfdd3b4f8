//! The signalling protocol of WSS `/v1/signal`: what clients send ([`ClientMessage`]) and
//! what the broker sends back ([`ServerEvent`]), as JSON text messages.
//!
//! Every message is one JSON object with a `type` field. Client requests also carry an `id`
//! (a JSON string of at most [`MAX_ID_CHARS`] characters, or a non-negative integer) and every
//! request gets **exactly one answer** carrying the same `id`: the answer event named for the
//! request, `ack`, or `error`. Everything else the broker sends is an event without `id`.
//! Field names are camelCase; unknown fields are ignored in both directions, and clients
//! must ignore event types they do not know. `docs/protocol.md` ("Signalling") documents every
//! message with an example.

use std::fmt;

use assist_policy::{DenyReason, Mode, Warning};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::time::Timestamp;

/// Largest text message, in bytes, a client may send. The server should refuse bigger
/// frames before reading them; [`ClientMessage::parse`] checks too (`tooLarge`).
pub const MAX_MESSAGE_BYTES: usize = 16 * 1024;
/// Longest chat text, in characters (Unicode scalar values).
pub const MAX_CHAT_CHARS: usize = 4000;
/// Longest string request `id`, in characters.
pub const MAX_ID_CHARS: usize = 64;

/// A session id: 32 lowercase hex characters (128 random bits), chosen by the broker.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct SessionId(pub String);

impl SessionId {
    /// The id as a string.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for SessionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A client's request id, echoed verbatim in the answer.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(untagged)]
pub enum RequestId {
    /// A non-negative integer id.
    Number(u64),
    /// A string id (at most [`MAX_ID_CHARS`] characters).
    Text(String),
}

/// Which side of a session someone is on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Role {
    /// The support person.
    Helper,
    /// The person being helped (sharing a screen).
    Sharer,
}

impl Role {
    /// The wire name.
    pub const fn as_str(self) -> &'static str {
        match self {
            Role::Helper => "helper",
            Role::Sharer => "sharer",
        }
    }
}

/// What each side is shown of the other before anything is shared (the trust screen):
/// name, job title, company, verified domain. No email, no ids.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Profile {
    /// Full name.
    pub display_name: String,
    /// Job title, if the directory has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job_title: Option<String>,
    /// Company name, if the directory has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub company_name: Option<String>,
    /// The tenant's verified domain the user signs in with (e.g. `contoso.com`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verified_domain: Option<String>,
}

/// Where and how one side joins the relay; each side gets its own ticket.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RelayAccess {
    /// The relay ticket (a signed, short-lived token naming session, role, mode, chat, relay).
    pub ticket: String,
    /// The relay address the ticket is for (`host:port`).
    pub address: String,
    /// WSS URL of the relay (`wss://host:port/v1/relay`).
    pub wss_url: String,
    /// QUIC address (`host:port`), if the relay offers QUIC.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quic_addr: Option<String>,
}

/// One signalling request from a client: its `id` and the request proper.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClientMessage {
    /// The request id; the answer echoes it.
    pub id: RequestId,
    /// The request.
    #[serde(flatten)]
    pub request: ClientRequest,
}

/// What a client can ask for. `type` is the camelCase variant name.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(
    tag = "type",
    rename_all = "camelCase",
    rename_all_fields = "camelCase"
)]
#[non_exhaustive]
pub enum ClientRequest {
    /// Heartbeat; answered by `pong`.
    Ping,
    /// Helper: issue a security code for a new session. Answer: `codeIssued`.
    RequestCode,
    /// Sharer: redeem the code the helper read out. Answer: `sessionJoined`.
    RedeemCode {
        /// The code as typed; spaces and `-` are ignored, case is not significant.
        code: String,
    },
    /// Helper (launch flow): ask the sharer app running on a device to join a session.
    /// Answer: `launchPending`.
    RequestSession {
        /// The device id (Entra device id).
        device_id: String,
        /// A mode to request as soon as the device's sharer joins (as if `requestMode` were sent then).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        mode: Option<Mode>,
        /// Warnings acknowledged in advance for that mode request.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        acknowledge_warnings: Vec<Warning>,
    },
    /// Sharer (launch flow): answer a `launchRequested`. Answer: `sessionJoined` (accept) or `ack` (decline).
    AnswerLaunch {
        /// The session named in `launchRequested`.
        session_id: SessionId,
        /// Join (`true`) or decline (`false`).
        accept: bool,
    },
    /// Helper: ask for a mode, or lower the current one. Answer: `modeRequested`.
    RequestMode {
        /// The session.
        session_id: SessionId,
        /// The mode wanted.
        mode: Mode,
        /// Warnings the helper has seen and accepts (from an earlier `warnings` event).
        #[serde(default)]
        acknowledge_warnings: Vec<Warning>,
    },
    /// Sharer: allow or decline a `consentRequested` (or decline an `unattendedStarting`). Answer: `ack`.
    Consent {
        /// The session.
        session_id: SessionId,
        /// Allow (`true`) or decline (`false`).
        allow: bool,
    },
    /// Either side, active session: send a chat line to the other side. Answer: `ack`.
    Chat {
        /// The session.
        session_id: SessionId,
        /// The text, at most [`MAX_CHAT_CHARS`] characters.
        text: String,
    },
    /// Either side: end the session, in any state. Answer: `ack`.
    EndSession {
        /// The session.
        session_id: SessionId,
    },
}

impl ClientRequest {
    /// Every request `type`, as on the wire.
    pub const TYPES: [&'static str; 9] = [
        "ping",
        "requestCode",
        "redeemCode",
        "requestSession",
        "answerLaunch",
        "requestMode",
        "consent",
        "chat",
        "endSession",
    ];

    /// The wire `type` of this request.
    pub const fn type_name(&self) -> &'static str {
        match self {
            ClientRequest::Ping => "ping",
            ClientRequest::RequestCode => "requestCode",
            ClientRequest::RedeemCode { .. } => "redeemCode",
            ClientRequest::RequestSession { .. } => "requestSession",
            ClientRequest::AnswerLaunch { .. } => "answerLaunch",
            ClientRequest::RequestMode { .. } => "requestMode",
            ClientRequest::Consent { .. } => "consent",
            ClientRequest::Chat { .. } => "chat",
            ClientRequest::EndSession { .. } => "endSession",
        }
    }
}

/// Why a text message could not be read as a [`ClientMessage`]; the broker answers it
/// with an `error` carrying [`ParseError::code`] and, when it could be read, the `id`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ParseError {
    /// Client's fault: the message is longer than [`MAX_MESSAGE_BYTES`].
    #[error("message of {0} bytes is over the limit")]
    TooLarge(usize),
    /// Client's fault: not a JSON object with a valid `id` and `type`, or a known type
    /// with missing or ill-typed fields.
    #[error("malformed request: {detail}")]
    BadRequest {
        /// The request id, if one could be read.
        id: Option<RequestId>,
        /// What was wrong (safe to show: it never quotes field values).
        detail: String,
    },
    /// Client's fault: the `type` is not one this broker knows.
    #[error("unknown request type")]
    UnknownType {
        /// The request id, if one could be read.
        id: Option<RequestId>,
    },
}

impl ParseError {
    /// The error code to answer with.
    pub fn code(&self) -> ErrorCode {
        match self {
            ParseError::TooLarge(_) => ErrorCode::TooLarge,
            ParseError::BadRequest { .. } => ErrorCode::BadRequest,
            ParseError::UnknownType { .. } => ErrorCode::UnknownType,
        }
    }

    /// The request id to echo, if one could be read.
    pub fn id(&self) -> Option<&RequestId> {
        match self {
            ParseError::TooLarge(_) => None,
            ParseError::BadRequest { id, .. } | ParseError::UnknownType { id } => id.as_ref(),
        }
    }
}

impl ClientMessage {
    /// Parses one text message. Never panics, whatever the input.
    pub fn parse(text: &str) -> Result<ClientMessage, ParseError> {
        if text.len() > MAX_MESSAGE_BYTES {
            return Err(ParseError::TooLarge(text.len()));
        }
        let value: Value = serde_json::from_str(text).map_err(|e| ParseError::BadRequest {
            id: None,
            detail: format!("not JSON ({})", e.classify_name()),
        })?;
        let Value::Object(object) = &value else {
            return Err(ParseError::BadRequest {
                id: None,
                detail: "not a JSON object".into(),
            });
        };
        let id = match object.get("id") {
            Some(Value::Number(n)) => n.as_u64().map(RequestId::Number),
            Some(Value::String(s)) if s.chars().count() <= MAX_ID_CHARS => {
                Some(RequestId::Text(s.clone()))
            }
            _ => None,
        };
        let Some(id) = id else {
            return Err(ParseError::BadRequest {
                id: None,
                detail: "`id` missing, or not a short string or non-negative integer".into(),
            });
        };
        let kind = match object.get("type") {
            Some(Value::String(s)) => s.as_str(),
            _ => {
                return Err(ParseError::BadRequest {
                    id: Some(id),
                    detail: "`type` missing or not a string".into(),
                })
            }
        };
        if !ClientRequest::TYPES.contains(&kind) {
            return Err(ParseError::UnknownType { id: Some(id) });
        }
        match serde_json::from_value::<ClientRequest>(value) {
            Ok(request) => Ok(ClientMessage { id, request }),
            Err(e) => Err(ParseError::BadRequest {
                id: Some(id),
                detail: field_error(&e),
            }),
        }
    }

    /// The message as JSON text (what a client sends).
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }
}

/// Describes a serde error without echoing input values (which could be secrets).
fn field_error(e: &serde_json::Error) -> String {
    let text = e.to_string();
    if let Some(field) = text
        .strip_prefix("missing field `")
        .and_then(|rest| rest.split('`').next())
    {
        return format!("missing field `{field}`");
    }
    "a field has the wrong type or value".into()
}

trait ClassifyName {
    fn classify_name(&self) -> &'static str;
}

impl ClassifyName for serde_json::Error {
    fn classify_name(&self) -> &'static str {
        match self.classify() {
            serde_json::error::Category::Io => "io",
            serde_json::error::Category::Syntax => "syntax error",
            serde_json::error::Category::Data => "bad data",
            serde_json::error::Category::Eof => "truncated",
        }
    }
}

/// Whose fault an error is: drives metrics labels and whether a client should retry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Fault {
    /// The client sent something wrong, or something not allowed in its state.
    Client,
    /// The policy (tenant settings, RBAC) refuses.
    Policy,
    /// The other party or device is not there or not available.
    Peer,
    /// The broker could not do it (a dependency did not answer); retrying may work.
    Broker,
}

/// The `code` of an `error` answer: a policy deny reason or a protocol error.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorCode {
    /// The policy denied the request; the code is the [`DenyReason`]'s (`crossTenant`, …).
    Policy(DenyReason),
    /// `badRequest`: malformed JSON, missing `id`/`type`, missing or ill-typed fields.
    BadRequest,
    /// `unknownType`: the `type` is not a request type.
    UnknownType,
    /// `tooLarge`: the message or the chat text is over its limit.
    TooLarge,
    /// `notFound`: no such session, or not one the caller takes part in.
    NotFound,
    /// `notAllowed`: not allowed in the session's state or for the caller's role or connection.
    NotAllowed,
    /// `invalidCode`: the code is not valid (wrong, used, malformed; indistinguishable).
    InvalidCode,
    /// `codeExpired`: the code was valid but expired.
    CodeExpired,
    /// `rateLimited`: too many requests, or too many failed code redemptions (lockout).
    RateLimited,
    /// `warningNotAcknowledged`: the decision carries warnings the request did not acknowledge.
    WarningNotAcknowledged,
    /// `chatBlocked`: the tenant blocks chat (`blockChat`), checked when the line is sent.
    ChatBlocked,
    /// `deviceOffline`: the device has no signalling connection in the caller's tenant.
    DeviceOffline,
    /// `deviceBusy`: every connection of the device is already in a session.
    DeviceBusy,
    /// `unavailable`: the broker could not evaluate the request in time; retry.
    Unavailable,
    /// `ownSession`: the sharer is the helper's own user (redeeming their own code, or
    /// accepting their own launch). Nobody assists themselves: such a session would let a
    /// user's second sign-in act with helper rights on their own screen, and its report would
    /// name one person twice.
    OwnSession,
}

impl ErrorCode {
    /// Every protocol (non-policy) code.
    pub const PROTOCOL: [ErrorCode; 14] = [
        ErrorCode::BadRequest,
        ErrorCode::UnknownType,
        ErrorCode::TooLarge,
        ErrorCode::NotFound,
        ErrorCode::NotAllowed,
        ErrorCode::InvalidCode,
        ErrorCode::CodeExpired,
        ErrorCode::RateLimited,
        ErrorCode::WarningNotAcknowledged,
        ErrorCode::ChatBlocked,
        ErrorCode::DeviceOffline,
        ErrorCode::DeviceBusy,
        ErrorCode::Unavailable,
        ErrorCode::OwnSession,
    ];

    /// The camelCase code on the wire.
    pub const fn as_str(self) -> &'static str {
        match self {
            ErrorCode::Policy(reason) => reason.as_str(),
            ErrorCode::BadRequest => "badRequest",
            ErrorCode::UnknownType => "unknownType",
            ErrorCode::TooLarge => "tooLarge",
            ErrorCode::NotFound => "notFound",
            ErrorCode::NotAllowed => "notAllowed",
            ErrorCode::InvalidCode => "invalidCode",
            ErrorCode::CodeExpired => "codeExpired",
            ErrorCode::RateLimited => "rateLimited",
            ErrorCode::WarningNotAcknowledged => "warningNotAcknowledged",
            ErrorCode::ChatBlocked => "chatBlocked",
            ErrorCode::DeviceOffline => "deviceOffline",
            ErrorCode::DeviceBusy => "deviceBusy",
            ErrorCode::Unavailable => "unavailable",
            ErrorCode::OwnSession => "ownSession",
        }
    }

    /// Parses a wire code.
    pub fn parse(s: &str) -> Option<ErrorCode> {
        ErrorCode::PROTOCOL
            .into_iter()
            .chain(DenyReason::ALL.into_iter().map(ErrorCode::Policy))
            .find(|c| c.as_str() == s)
    }

    /// Whose fault it is.
    pub const fn fault(self) -> Fault {
        match self {
            ErrorCode::Policy(_) | ErrorCode::ChatBlocked => Fault::Policy,
            ErrorCode::DeviceOffline | ErrorCode::DeviceBusy => Fault::Peer,
            ErrorCode::Unavailable => Fault::Broker,
            ErrorCode::BadRequest
            | ErrorCode::UnknownType
            | ErrorCode::TooLarge
            | ErrorCode::NotFound
            | ErrorCode::NotAllowed
            | ErrorCode::InvalidCode
            | ErrorCode::CodeExpired
            | ErrorCode::RateLimited
            | ErrorCode::WarningNotAcknowledged
            | ErrorCode::OwnSession => Fault::Client,
        }
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for ErrorCode {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for ErrorCode {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let s = String::deserialize(deserializer)?;
        ErrorCode::parse(&s)
            .ok_or_else(|| serde::de::Error::custom(format_args!("unknown error code `{s}`")))
    }
}

/// Why a session ended (`sessionEnded.reason`, and the session record's end reason).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
#[non_exhaustive]
pub enum EndReason {
    /// A participant sent `endSession` (`by` says who).
    Ended,
    /// A participant's connection closed (`by` says whose).
    Disconnected,
    /// The sharer declined the first consent request.
    Declined,
    /// The sharer did not answer the first consent request in time.
    ConsentTimedOut,
    /// The security code expired before anyone redeemed it.
    CodeExpired,
    /// No device connection answered the launch request in time.
    LaunchTimedOut,
    /// Every notified device connection declined the launch request, or left.
    LaunchDeclined,
    /// The session was joined but no mode was granted in time.
    JoinTimedOut,
    /// Relay tickets could not be issued.
    RelayUnavailable,
    /// An admin disabled Remote Help for the tenant.
    RemoteHelpDisabled,
    /// The broker restarted while the session was open (written by the recovery step, never
    /// by the machine).
    BrokerRestart,
    /// The node holding the session was draining (SIGTERM) and its grace period ran out.
    ShuttingDown,
}

impl EndReason {
    /// The wire name.
    pub const fn as_str(self) -> &'static str {
        match self {
            EndReason::Ended => "ended",
            EndReason::Disconnected => "disconnected",
            EndReason::Declined => "declined",
            EndReason::ConsentTimedOut => "consentTimedOut",
            EndReason::CodeExpired => "codeExpired",
            EndReason::LaunchTimedOut => "launchTimedOut",
            EndReason::LaunchDeclined => "launchDeclined",
            EndReason::JoinTimedOut => "joinTimedOut",
            EndReason::RelayUnavailable => "relayUnavailable",
            EndReason::RemoteHelpDisabled => "remoteHelpDisabled",
            EndReason::BrokerRestart => "brokerRestart",
            EndReason::ShuttingDown => "shuttingDown",
        }
    }
}

/// Who ended a session (`sessionEnded.by`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum EndedBy {
    /// The helper (request or disconnect).
    Helper,
    /// The sharer (request, decline or disconnect).
    Sharer,
    /// The broker (a timeout, a failure, a restart).
    Broker,
    /// A tenant admin (settings change).
    Admin,
}

impl From<Role> for EndedBy {
    fn from(role: Role) -> Self {
        match role {
            Role::Helper => EndedBy::Helper,
            Role::Sharer => EndedBy::Sharer,
        }
    }
}

/// What the helper must do next after a mode request passed the policy (`modeRequested.consent`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum ConsentKind {
    /// The sharer was asked (`consentRequested`); wait for `sessionActive`/`modeChanged`,
    /// `consentDeclined`, or `consentTimedOut`.
    Required,
    /// Unattended with a sharer present: it starts at `expiresAt` unless the sharer declines.
    DeclineWindow,
    /// No consent needed (a downgrade, or unattended with no user present): it applies now.
    None,
}

/// Why a launch request was withdrawn from a device connection (`launchWithdrawn.reason`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum WithdrawReason {
    /// Another connection of the device accepted first.
    AnsweredElsewhere,
    /// The helper cancelled, left, or the launch timed out or was otherwise ended.
    Cancelled,
}

/// Something the broker sends a client. `type` is the camelCase variant name; `id` is present
/// only on the answer to a request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(
    tag = "type",
    rename_all = "camelCase",
    rename_all_fields = "camelCase"
)]
#[non_exhaustive]
pub enum ServerEvent {
    /// Answer to `ping`.
    Pong {
        /// The request id.
        id: RequestId,
    },
    /// Answer to a request that has no richer answer (`consent`, `chat`, `endSession`,
    /// declining `answerLaunch`).
    Ack {
        /// The request id.
        id: RequestId,
    },
    /// A request failed, or a message could not be read.
    Error {
        /// The request id, when there was a readable one.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        id: Option<RequestId>,
        /// The policy reason or protocol error code.
        code: ErrorCode,
        /// A human-readable explanation (English; not for parsing).
        message: String,
        /// The session the request was about, if any.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        session_id: Option<SessionId>,
    },
    /// Answer to `requestCode`: the code to read out to the sharer.
    CodeIssued {
        /// The request id.
        id: RequestId,
        /// The session the code opens.
        session_id: SessionId,
        /// The security code (8 characters of [`crate::code::CODE_ALPHABET`]).
        code: String,
        /// When the code stops working.
        expires_at: Timestamp,
    },
    /// Both sides are paired; each is shown the other's profile. To the sharer it is the
    /// answer to `redeemCode`/`answerLaunch` (with `id`); to the helper an event.
    SessionJoined {
        /// The request id (the sharer's answer only).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        id: Option<RequestId>,
        /// The session.
        session_id: SessionId,
        /// The receiver's role in it.
        role: Role,
        /// The other side's profile.
        peer_profile: Profile,
    },
    /// To the helper: the device's connections were notified (answer to `requestSession`,
    /// or an event when a helper connection picks up an admin launch).
    LaunchPending {
        /// The request id (answer only).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        id: Option<RequestId>,
        /// The session.
        session_id: SessionId,
        /// The device.
        device_id: String,
        /// When the launch request lapses if nobody answers.
        expires_at: Timestamp,
    },
    /// To each sharer connection of a device: a helper asks to help. Answer with `answerLaunch`.
    LaunchRequested {
        /// The session.
        session_id: SessionId,
        /// Who asks.
        helper_profile: Profile,
        /// The mode the helper will ask for once joined, if announced.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        mode: Option<Mode>,
        /// When the request lapses.
        expires_at: Timestamp,
    },
    /// To a device connection: a launch request it was shown is no longer open.
    LaunchWithdrawn {
        /// The session.
        session_id: SessionId,
        /// Why.
        reason: WithdrawReason,
    },
    /// To the helper: the decision carries warnings to acknowledge before the request goes on
    /// (sent with a `warningNotAcknowledged` error answering the request).
    Warnings {
        /// The session.
        session_id: SessionId,
        /// The mode that was requested.
        mode: Mode,
        /// Every warning to acknowledge (resend `requestMode` with them in `acknowledgeWarnings`).
        warnings: Vec<Warning>,
    },
    /// To the helper: the mode request passed the policy (the answer to `requestMode`).
    ModeRequested {
        /// The request id (absent when the mode came with `requestSession`).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        id: Option<RequestId>,
        /// The session.
        session_id: SessionId,
        /// The mode requested.
        mode: Mode,
        /// What happens next.
        consent: ConsentKind,
        /// Consent deadline, or when an unattended session starts; absent for `none`.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        expires_at: Option<Timestamp>,
    },
    /// To the sharer: allow or decline (`consent`) before `expiresAt`.
    ConsentRequested {
        /// The session.
        session_id: SessionId,
        /// The mode asked for.
        mode: Mode,
        /// Who asks.
        helper_profile: Profile,
        /// The deadline; no answer means declined.
        expires_at: Timestamp,
    },
    /// To the sharer: an unattended session starts at `startsAt` unless declined (`consent`
    /// with `allow: false`; `allow: true` starts it at once).
    UnattendedStarting {
        /// The session.
        session_id: SessionId,
        /// Who is connecting.
        helper_profile: Profile,
        /// When it starts.
        starts_at: Timestamp,
    },
    /// To both: the sharer declined a mode upgrade (the session goes on in its current mode).
    ConsentDeclined {
        /// The session.
        session_id: SessionId,
        /// The mode that was declined.
        mode: Mode,
    },
    /// To both: the sharer did not answer a consent request in time. For the first request
    /// the session then ends (`sessionEnded`, reason `consentTimedOut`); for an upgrade it
    /// goes on in its current mode.
    ConsentTimedOut {
        /// The session.
        session_id: SessionId,
        /// The mode that was asked for.
        mode: Mode,
    },
    /// To each side: the session is active; join the relay with this side's own ticket.
    SessionActive {
        /// The session.
        session_id: SessionId,
        /// The granted mode.
        mode: Mode,
        /// Whether chat is allowed.
        chat: bool,
        /// This side's relay access.
        relay: RelayAccess,
    },
    /// To both: the mode or the chat permission changed (the relay was told too).
    ModeChanged {
        /// The session.
        session_id: SessionId,
        /// The mode now in force.
        mode: Mode,
        /// Whether chat is allowed now.
        chat: bool,
    },
    /// To the other side: a chat line.
    Chat {
        /// The session.
        session_id: SessionId,
        /// Who wrote it.
        from: Role,
        /// The text.
        text: String,
        /// When the broker received it.
        at: Timestamp,
    },
    /// To both (or the one still there): the session is over.
    SessionEnded {
        /// The session.
        session_id: SessionId,
        /// Why.
        reason: EndReason,
        /// Who ended it.
        by: EndedBy,
    },
}

impl ServerEvent {
    /// The event as JSON text.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }

    /// The wire `type` of this event.
    pub fn type_name(&self) -> &'static str {
        match self {
            ServerEvent::Pong { .. } => "pong",
            ServerEvent::Ack { .. } => "ack",
            ServerEvent::Error { .. } => "error",
            ServerEvent::CodeIssued { .. } => "codeIssued",
            ServerEvent::SessionJoined { .. } => "sessionJoined",
            ServerEvent::LaunchPending { .. } => "launchPending",
            ServerEvent::LaunchRequested { .. } => "launchRequested",
            ServerEvent::LaunchWithdrawn { .. } => "launchWithdrawn",
            ServerEvent::Warnings { .. } => "warnings",
            ServerEvent::ModeRequested { .. } => "modeRequested",
            ServerEvent::ConsentRequested { .. } => "consentRequested",
            ServerEvent::UnattendedStarting { .. } => "unattendedStarting",
            ServerEvent::ConsentDeclined { .. } => "consentDeclined",
            ServerEvent::ConsentTimedOut { .. } => "consentTimedOut",
            ServerEvent::SessionActive { .. } => "sessionActive",
            ServerEvent::ModeChanged { .. } => "modeChanged",
            ServerEvent::Chat { .. } => "chat",
            ServerEvent::SessionEnded { .. } => "sessionEnded",
        }
    }

    /// The request id this event answers, if it is an answer.
    pub fn answer_id(&self) -> Option<&RequestId> {
        match self {
            ServerEvent::Pong { id }
            | ServerEvent::Ack { id }
            | ServerEvent::CodeIssued { id, .. } => Some(id),
            ServerEvent::Error { id, .. }
            | ServerEvent::SessionJoined { id, .. }
            | ServerEvent::LaunchPending { id, .. }
            | ServerEvent::ModeRequested { id, .. } => id.as_ref(),
            _ => None,
        }
    }
}

/// The optional first message that carries the bearer token, for clients (browsers) that
/// cannot set the `Authorization` header on a WebSocket: `{"type":"authenticate","token":"…"}`.
/// Sent again later with a fresh token for the same user, it keeps the connection open past
/// the first token's expiry. The server handles it before the connection reaches the machine.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename = "authenticate")]
pub struct Authenticate {
    /// Optional request id: when present, the server answers `ack` with it once the token is
    /// accepted (the first one: once the connection counts as signed in).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<RequestId>,
    /// The bearer token (a JWT).
    pub token: String,
}

/// WebSocket close codes of the signalling connection: the one list the server and the machine
/// use (docs/protocol.md, "Close codes"). Only [`CloseCode::Abuse`] is emitted by the machine;
/// the others are the server's.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum CloseCode {
    /// 1000: a normal close (the answer to the client's own close).
    Normal,
    /// 1001: the server is shutting down.
    GoingAway,
    /// 1002: malformed WebSocket traffic, or a binary message.
    ProtocolError,
    /// 1007: a text message that is not UTF-8.
    InvalidUtf8,
    /// 1009: a message over [`MAX_MESSAGE_BYTES`] (closed unread).
    TooBig,
    /// 1011: the server could not serve the connection (the caller's directory record could
    /// not be read).
    Internal,
    /// 4401: no valid token, the token expired, or a later `authenticate` named someone else.
    Unauthorized,
    /// 4408: no message (not even `ping`) within the idle timeout.
    Idle,
    /// 4429: repeated abuse (rate limit exceeded, malformed or unknown messages) — see
    /// [`crate::BrokerConfig::abuse_strikes`].
    Abuse,
    /// 4430: the connection did not read what the server had to send it (outbound queue full).
    Slow,
}

impl CloseCode {
    /// Every close code.
    pub const ALL: [CloseCode; 10] = [
        CloseCode::Normal,
        CloseCode::GoingAway,
        CloseCode::ProtocolError,
        CloseCode::InvalidUtf8,
        CloseCode::TooBig,
        CloseCode::Internal,
        CloseCode::Unauthorized,
        CloseCode::Idle,
        CloseCode::Abuse,
        CloseCode::Slow,
    ];

    /// The numeric close code.
    pub const fn code(self) -> u16 {
        match self {
            CloseCode::Normal => 1000,
            CloseCode::GoingAway => 1001,
            CloseCode::ProtocolError => 1002,
            CloseCode::InvalidUtf8 => 1007,
            CloseCode::TooBig => 1009,
            CloseCode::Internal => 1011,
            CloseCode::Unauthorized => 4401,
            CloseCode::Idle => 4408,
            CloseCode::Abuse => 4429,
            CloseCode::Slow => 4430,
        }
    }

    /// The close code with this number, if the signalling protocol defines one.
    pub fn from_code(code: u16) -> Option<CloseCode> {
        CloseCode::ALL.into_iter().find(|c| c.code() == code)
    }

    /// The close reason text to send with it (its name in docs/protocol.md).
    pub const fn as_str(self) -> &'static str {
        match self {
            CloseCode::Normal => "normal",
            CloseCode::GoingAway => "goingAway",
            CloseCode::ProtocolError => "protocolError",
            CloseCode::InvalidUtf8 => "invalidUtf8",
            CloseCode::TooBig => "tooBig",
            CloseCode::Internal => "internal",
            CloseCode::Unauthorized => "unauthorized",
            CloseCode::Idle => "idle",
            CloseCode::Abuse => "abuse",
            CloseCode::Slow => "slow",
        }
    }
}
