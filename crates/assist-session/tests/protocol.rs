//! The wire format: every example in docs/protocol.md parses and serialises back to the same JSON,
//! and the error and close codes are the documented ones.

use assist_policy::DenyReason;
use assist_session::message::{Authenticate, CloseCode, ParseError, MAX_MESSAGE_BYTES};
use assist_session::{ClientMessage, ClientRequest, ErrorCode, ServerEvent};
use serde_json::Value;

const PROTOCOL: &str = include_str!("../../../docs/protocol.md");

/// (info string, line) for every line of every fenced ```json block.
fn examples() -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut current: Option<String> = None;
    for line in PROTOCOL.lines() {
        if let Some(info) = line.strip_prefix("```") {
            current = match current {
                None if info.starts_with("json") => Some(info.trim().to_owned()),
                None => Some(String::new()),
                Some(_) => None,
            };
        } else if let Some(info) = &current {
            if info.starts_with("json") && !line.trim().is_empty() {
                out.push((info.clone(), line.to_owned()));
            }
        }
    }
    out
}

#[test]
fn every_documented_example_round_trips_exactly() {
    let examples = examples();
    assert!(
        examples.len() >= 35,
        "found only {} examples",
        examples.len()
    );
    let mut seen_requests = std::collections::BTreeSet::new();
    let mut seen_events = std::collections::BTreeSet::new();
    for (info, line) in examples {
        let original: Value = serde_json::from_str(&line).expect(&line);
        let again = match info.as_str() {
            "json client" => {
                let message = ClientMessage::parse(&line).unwrap_or_else(|e| panic!("{line}: {e}"));
                seen_requests.insert(message.request.type_name());
                message.to_json()
            }
            "json server" => {
                let event: ServerEvent =
                    serde_json::from_str(&line).unwrap_or_else(|e| panic!("{line}: {e}"));
                seen_events.insert(event.type_name());
                event.to_json()
            }
            "json auth" => {
                let auth: Authenticate = serde_json::from_str(&line).expect(&line);
                serde_json::to_string(&auth).unwrap()
            }
            // Relay input payloads: checked by assist-screen's tests.
            "json input" => continue,
            other => panic!("unknown block kind {other}"),
        };
        let again: Value = serde_json::from_str(&again).unwrap();
        assert_eq!(again, original, "not canonical: {line}");
    }
    assert_eq!(
        seen_requests.len(),
        ClientRequest::TYPES.len(),
        "a request lacks an example"
    );
    assert_eq!(
        seen_events.len(),
        18,
        "an event lacks an example: {seen_events:?}"
    );
}

#[test]
fn every_error_code_is_documented_and_parses_back() {
    let all = ErrorCode::PROTOCOL
        .into_iter()
        .chain(DenyReason::ALL.into_iter().map(ErrorCode::Policy));
    for code in all {
        assert!(
            PROTOCOL.contains(&format!("| `{}` |", code.as_str())),
            "{code} is not in docs/protocol.md's table"
        );
        assert_eq!(ErrorCode::parse(code.as_str()), Some(code));
        let json = serde_json::to_string(&code).unwrap();
        assert_eq!(serde_json::from_str::<ErrorCode>(&json).unwrap(), code);
    }
    assert_eq!(ErrorCode::parse("nope"), None);
}

#[test]
fn close_codes_are_documented() {
    for code in CloseCode::ALL {
        let row = format!("| {} | {} ", code.code(), code.as_str());
        assert!(
            PROTOCOL.contains(&row),
            "docs/protocol.md lacks the row {row}"
        );
        assert_eq!(CloseCode::from_code(code.code()), Some(code));
    }
}

#[test]
fn parse_errors_carry_the_id_when_it_can_be_read() {
    let too_big = format!(
        r#"{{"id":1,"type":"chat","text":"{}"}}"#,
        "x".repeat(MAX_MESSAGE_BYTES)
    );
    assert!(matches!(
        ClientMessage::parse(&too_big),
        Err(ParseError::TooLarge(_))
    ));
    let long_id = format!(r#"{{"id":"{}","type":"ping"}}"#, "i".repeat(65));
    assert_eq!(
        ClientMessage::parse(&long_id).unwrap_err().code(),
        ErrorCode::BadRequest
    );
    let e = ClientMessage::parse(r#"{"id":"k","type":"consent","sessionId":"s"}"#).unwrap_err();
    assert_eq!(e.code(), ErrorCode::BadRequest);
    assert_eq!(e.to_string(), "malformed request: missing field `allow`");
    // Field values (which could be codes or tokens) are never echoed.
    let e = ClientMessage::parse(r#"{"id":"k","type":"redeemCode","code":12345678}"#).unwrap_err();
    assert!(!e.to_string().contains("12345678"));
}
