//! The values stored in Redis: compact JSON of small mirror structs (the session crate's types
//! carry no serde of their own for these). Encoding is deterministic (the compare-and-delete
//! scripts compare encoded bytes); decoding never panics: what does not decode is a
//! [`LiveError`].

use assist_live::LiveError;
use assist_policy::Mode;
use assist_session::{ConnId, LiveCode, LiveSession, LiveStage, SessionId, Timestamp, UserRef};
use serde::{Deserialize, Serialize};

/// A code: `{"p":"<session id>"}` or `{"e":<forget_at ms>}`.
#[derive(Serialize, Deserialize)]
enum CodeV {
    #[serde(rename = "p")]
    Pending(String),
    #[serde(rename = "e")]
    Expired(u64),
}

#[derive(Serialize, Deserialize, Clone, Copy)]
enum StageV {
    #[serde(rename = "p")]
    Pending,
    #[serde(rename = "j")]
    Joined,
    #[serde(rename = "a")]
    Active,
}

#[derive(Serialize, Deserialize)]
struct UserV {
    t: String,
    u: String,
}

/// A directory entry. `n` (the node) and `t` (the tenant) are top-level: the session scripts
/// read them (`cjson`) to keep the indexes exact.
#[derive(Serialize, Deserialize)]
struct EntryV {
    n: String,
    t: String,
    g: StageV,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    m: Option<Mode>,
    c: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    h: Option<UserV>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    hc: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    s: Option<UserV>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    sc: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    d: Option<String>,
}

fn bad(what: &str, e: impl std::fmt::Display) -> LiveError {
    LiveError(format!("a stored {what} does not decode: {e}"))
}

fn to_json(v: &impl Serialize) -> Vec<u8> {
    // Serialising these plain structs cannot fail (string keys, no maps of other keys).
    serde_json::to_vec(v).unwrap_or_default()
}

/// Encodes a code entry.
pub(crate) fn encode_code(code: &LiveCode) -> Vec<u8> {
    to_json(&match code {
        LiveCode::Pending(sid) => CodeV::Pending(sid.0.clone()),
        LiveCode::Expired { forget_at } => CodeV::Expired(forget_at.as_millis()),
    })
}

/// Decodes a code entry.
pub(crate) fn decode_code(bytes: &[u8]) -> Result<LiveCode, LiveError> {
    let v: CodeV = serde_json::from_slice(bytes).map_err(|e| bad("code", e))?;
    Ok(match v {
        CodeV::Pending(sid) => LiveCode::Pending(SessionId(sid)),
        CodeV::Expired(ms) => LiveCode::Expired {
            forget_at: Timestamp::from_millis(ms),
        },
    })
}

fn user_v(u: &UserRef) -> UserV {
    UserV {
        t: u.tenant_id.clone(),
        u: u.user_id.clone(),
    }
}

fn user_of(u: UserV) -> UserRef {
    UserRef {
        tenant_id: u.t,
        user_id: u.u,
    }
}

/// Encodes a directory entry written by `node`.
pub(crate) fn encode_entry(node: &str, s: &LiveSession) -> Vec<u8> {
    to_json(&EntryV {
        n: node.to_owned(),
        t: s.tenant_id.clone(),
        g: match s.stage {
            LiveStage::Pending => StageV::Pending,
            LiveStage::Joined => StageV::Joined,
            LiveStage::Active => StageV::Active,
        },
        m: s.mode,
        c: s.chat,
        h: s.helper.as_ref().map(user_v),
        hc: s.helper_conn.map(|c| c.0),
        s: s.sharer.as_ref().map(user_v),
        sc: s.sharer_conn.map(|c| c.0),
        d: s.device_id.clone(),
    })
}

/// Decodes a directory entry: the node that wrote it, and the entry.
pub(crate) fn decode_entry(bytes: &[u8]) -> Result<(String, LiveSession), LiveError> {
    let v: EntryV = serde_json::from_slice(bytes).map_err(|e| bad("session entry", e))?;
    let session = LiveSession {
        tenant_id: v.t,
        stage: match v.g {
            StageV::Pending => LiveStage::Pending,
            StageV::Joined => LiveStage::Joined,
            StageV::Active => LiveStage::Active,
        },
        mode: v.m,
        chat: v.c,
        helper: v.h.map(user_of),
        helper_conn: v.hc.map(ConnId),
        sharer: v.s.map(user_of),
        sharer_conn: v.sc.map(ConnId),
        device_id: v.d,
    };
    Ok((v.n, session))
}

/// A presence member: `"<node>/<conn>"`.
pub(crate) fn member(node: &str, conn: ConnId) -> String {
    format!("{node}/{}", conn.0)
}

/// Splits a presence member into its node and connection; `None` if it is not one.
pub(crate) fn split_member(m: &str) -> Option<(&str, ConnId)> {
    let (node, conn) = m.rsplit_once('/')?;
    if node.is_empty() {
        return None;
    }
    Some((node, ConnId(conn.parse().ok()?)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn text() -> impl Strategy<Value = String> {
        // Any string, non-ASCII and control characters included.
        any::<String>()
    }

    fn user() -> impl Strategy<Value = UserRef> {
        (text(), text()).prop_map(|(tenant_id, user_id)| UserRef { tenant_id, user_id })
    }

    fn code() -> impl Strategy<Value = LiveCode> {
        prop_oneof![
            text().prop_map(|s| LiveCode::Pending(SessionId(s))),
            any::<u64>().prop_map(|ms| LiveCode::Expired {
                forget_at: Timestamp::from_millis(ms)
            }),
        ]
    }

    fn session() -> impl Strategy<Value = LiveSession> {
        let stage = prop_oneof![
            Just(LiveStage::Pending),
            Just(LiveStage::Joined),
            Just(LiveStage::Active)
        ];
        let mode = proptest::option::of(prop_oneof![
            Just(Mode::ViewOnly),
            Just(Mode::FullControl),
            Just(Mode::Elevation),
            Just(Mode::Unattended)
        ]);
        let conn = proptest::option::of(any::<u64>().prop_map(ConnId));
        (
            text(),
            stage,
            mode,
            any::<bool>(),
            proptest::option::of(user()),
            conn.clone(),
            proptest::option::of(user()),
            conn,
            proptest::option::of(text()),
        )
            .prop_map(
                |(tenant_id, stage, mode, chat, helper, helper_conn, sharer, sharer_conn, d)| {
                    LiveSession {
                        tenant_id,
                        stage,
                        mode,
                        chat,
                        helper,
                        helper_conn,
                        sharer,
                        sharer_conn,
                        device_id: d,
                    }
                },
            )
    }

    proptest! {
        #[test]
        fn codes_round_trip_and_encode_deterministically(c in code()) {
            let bytes = encode_code(&c);
            prop_assert_eq!(decode_code(&bytes), Ok(c.clone()));
            prop_assert_eq!(encode_code(&c), bytes);
        }

        #[test]
        fn entries_round_trip(node in "[a-z0-9.-]{1,20}", s in session()) {
            let bytes = encode_entry(&node, &s);
            prop_assert_eq!(decode_entry(&bytes), Ok((node, s)));
        }

        #[test]
        fn members_round_trip(node in "[!-.0-~]{1,40}", conn in any::<u64>()) {
            let m = member(&node, ConnId(conn));
            prop_assert_eq!(split_member(&m), Some((node.as_str(), ConnId(conn))));
        }

        #[test]
        fn garbage_is_an_error_never_a_panic(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
            let _ = decode_code(&bytes);
            let _ = decode_entry(&bytes);
            let _ = split_member(&String::from_utf8_lossy(&bytes));
        }
    }

    #[test]
    fn the_encoding_is_compact() {
        assert_eq!(
            encode_code(&LiveCode::Pending(SessionId("ab".into()))),
            br#"{"p":"ab"}"#
        );
        assert_eq!(
            encode_code(&LiveCode::Expired {
                forget_at: Timestamp::from_millis(7)
            }),
            br#"{"e":7}"#
        );
        assert!(decode_code(br#"{"x":1}"#).is_err());
        assert!(decode_entry(b"{}").is_err());
        assert_eq!(split_member("n1/x"), None);
        assert_eq!(split_member("/5"), None);
        assert_eq!(split_member("n1"), None);
    }
}
