//! Relay-originated control messages (docs/protocol.md, "Frames": the JSON payload of control frames flagged
//! [`FLAG_FROM_RELAY`](crate::frame::FLAG_FROM_RELAY)).

use serde::{Deserialize, Serialize};

/// A control message the relay sends to a leg, serialized as a JSON object with a `type` field.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "camelCase")]
pub enum RelayControl {
    /// `joined`: the ticket was accepted; waiting for the other leg.
    Joined {
        /// `helper` or `sharer`.
        role: String,
        /// The relay session id.
        sid: String,
    },
    /// `paired`: both legs are present; forwarding starts.
    Paired {
        /// The granted mode (`viewOnly`, `fullControl`, `elevation`, `unattended`).
        mode: String,
        /// Whether chat is allowed.
        chat: bool,
    },
    /// `keyframeRequest` (to the sharer): send a keyframe next.
    KeyframeRequest {
        /// `congestion` or `dropped`.
        reason: String,
    },
    /// `modeChanged`: the broker changed the mode or chat permission; applies from the next frame.
    ModeChanged {
        /// The new mode.
        mode: String,
        /// Whether chat is now allowed.
        chat: bool,
    },
    /// `ended`: the session is over; the relay closes the leg right after.
    Ended {
        /// Why the session ended.
        reason: String,
    },
}

impl RelayControl {
    /// The JSON encoding of this message (the payload of its control frame).
    pub fn to_json(&self) -> Vec<u8> {
        // Invariant: every variant holds only strings and bools, whose serialization into a Vec cannot fail.
        serde_json::to_vec(self).expect("RelayControl serializes infallibly")
    }

    /// Parses a control payload. Unknown `type`s (which clients must ignore) and malformed JSON are errors.
    pub fn from_json(payload: &[u8]) -> Result<Self, serde_json::Error> {
        serde_json::from_slice(payload)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wire_shapes() {
        let cases = [
            (
                RelayControl::Joined {
                    role: "helper".into(),
                    sid: "s1".into(),
                },
                r#"{"type":"joined","role":"helper","sid":"s1"}"#,
            ),
            (
                RelayControl::Paired {
                    mode: "fullControl".into(),
                    chat: true,
                },
                r#"{"type":"paired","mode":"fullControl","chat":true}"#,
            ),
            (
                RelayControl::KeyframeRequest {
                    reason: "congestion".into(),
                },
                r#"{"type":"keyframeRequest","reason":"congestion"}"#,
            ),
            (
                RelayControl::ModeChanged {
                    mode: "viewOnly".into(),
                    chat: false,
                },
                r#"{"type":"modeChanged","mode":"viewOnly","chat":false}"#,
            ),
            (
                RelayControl::Ended {
                    reason: "ended".into(),
                },
                r#"{"type":"ended","reason":"ended"}"#,
            ),
        ];
        for (msg, json) in cases {
            assert_eq!(String::from_utf8(msg.to_json()).unwrap(), json);
            assert_eq!(RelayControl::from_json(json.as_bytes()).unwrap(), msg);
        }
    }

    #[test]
    fn unknown_type_is_an_error() {
        assert!(RelayControl::from_json(br#"{"type":"later","x":1}"#).is_err());
        assert!(RelayControl::from_json(b"not json").is_err());
    }
}
