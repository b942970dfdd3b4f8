//! Input events (channel 2, helper → sharer): one JSON object per frame, and the DOM key name → X11 keysym
//! table the sharer uses to type them.

use serde::{Deserialize, Serialize};

/// Longest `key` value accepted, in bytes. DOM key names are short (`"AudioVolumeMute"` is among the longest);
/// anything longer is malformed.
pub const MAX_KEY_LEN: usize = 32;

/// Largest input payload accepted, in bytes: an event is a few dozen bytes.
pub const MAX_EVENT_LEN: usize = 1024;

/// One input event from the helper. Coordinates are pixels of the sharer's screen.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "camelCase")]
pub enum InputEvent {
    /// `pointerMove`: move the pointer to `(x, y)`.
    PointerMove {
        /// Column.
        x: u16,
        /// Row.
        y: u16,
    },
    /// `pointerButton`: press or release `button` at `(x, y)`.
    PointerButton {
        /// Column.
        x: u16,
        /// Row.
        y: u16,
        /// 1 left, 2 middle, 3 right.
        button: u8,
        /// Pressed (`true`) or released.
        down: bool,
    },
    /// `wheel`: scroll by whole steps at `(x, y)`; `dy > 0` scrolls down, `dx > 0` right.
    Wheel {
        /// Column.
        x: u16,
        /// Row.
        y: u16,
        /// Horizontal steps.
        dx: i32,
        /// Vertical steps.
        dy: i32,
    },
    /// `key`: press or release the key named by the DOM `KeyboardEvent.key` value.
    Key {
        /// The DOM key value (`"a"`, `"Enter"`, `"ArrowLeft"`, …).
        key: String,
        /// Pressed (`true`) or released.
        down: bool,
    },
}

/// Why an input payload was refused. The helper is at fault in every case; the sharer ignores the event.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum InputError {
    /// Longer than [`MAX_EVENT_LEN`].
    #[error("input event of {0} bytes is too long")]
    TooLong(usize),
    /// Not a JSON object with a string `type`.
    #[error("input event is not a JSON object with a type")]
    NotAnEvent,
    /// A `type` this version does not know (ignored, as the protocol says).
    #[error("unknown input event type")]
    UnknownType,
    /// A known type with missing or ill-typed fields.
    #[error("malformed input event: {0}")]
    Malformed(serde_json::Error),
    /// A button other than 1, 2 or 3.
    #[error("unknown pointer button {0}")]
    BadButton(u8),
    /// An empty key name, or one longer than [`MAX_KEY_LEN`].
    #[error("key name is empty or too long")]
    BadKey,
}

const TYPES: [&str; 4] = ["pointerMove", "pointerButton", "wheel", "key"];

impl InputEvent {
    /// Parses one input payload. Unknown fields are ignored (for later versions); everything else that is not
    /// one of the four documented events is an error. Never panics.
    pub fn parse(payload: &[u8]) -> Result<InputEvent, InputError> {
        if payload.len() > MAX_EVENT_LEN {
            return Err(InputError::TooLong(payload.len()));
        }
        let value: serde_json::Value =
            serde_json::from_slice(payload).map_err(|_| InputError::NotAnEvent)?;
        let ty = value
            .get("type")
            .and_then(|t| t.as_str())
            .ok_or(InputError::NotAnEvent)?;
        if !TYPES.contains(&ty) {
            return Err(InputError::UnknownType);
        }
        let ev: InputEvent = serde_json::from_value(value).map_err(InputError::Malformed)?;
        match &ev {
            InputEvent::PointerButton { button, .. } if !(1..=3).contains(button) => {
                Err(InputError::BadButton(*button))
            }
            InputEvent::Key { key, .. } if key.is_empty() || key.len() > MAX_KEY_LEN => {
                Err(InputError::BadKey)
            }
            _ => Ok(ev),
        }
    }

    /// The event's JSON encoding (what a helper sends).
    pub fn to_json(&self) -> Vec<u8> {
        // Invariant: the variants hold only integers, bools and strings, which serialize infallibly.
        serde_json::to_vec(self).unwrap_or_default()
    }
}

/// The X11 keysym for a DOM `KeyboardEvent.key` value, or `None` for keys the sharer does not type
/// (`"Unidentified"`, `"Dead"`, media keys, …).
///
/// A single character maps to its keysym: Latin-1 characters to the same code point, others to
/// `0x0100_0000 + code point` (the X11 Unicode keysyms). Named keys map to their X11 names: `Enter` →
/// `Return`, `Shift` → `Shift_L`, `Meta` → `Super_L`, `PageUp` → `Prior`, …
pub fn keysym_for(key: &str) -> Option<u32> {
    let mut chars = key.chars();
    if let (Some(c), None) = (chars.next(), chars.next()) {
        let cp = u32::from(c);
        return match cp {
            // Control characters are not keys; DOM names them ("Enter", "Tab", …).
            0..=0x1f | 0x7f..=0x9f => None,
            0x20..=0x7e | 0xa0..=0xff => Some(cp),
            _ => Some(0x0100_0000 + cp),
        };
    }
    let sym = match key {
        "Enter" => 0xff0d,
        "Backspace" => 0xff08,
        "Tab" => 0xff09,
        "Escape" => 0xff1b,
        "Delete" => 0xffff,
        "Insert" => 0xff63,
        "Home" => 0xff50,
        "End" => 0xff57,
        "PageUp" => 0xff55,
        "PageDown" => 0xff56,
        "ArrowLeft" => 0xff51,
        "ArrowUp" => 0xff52,
        "ArrowRight" => 0xff53,
        "ArrowDown" => 0xff54,
        "Shift" => 0xffe1,
        "Control" => 0xffe3,
        "Alt" => 0xffe9,
        "AltGraph" => 0xfe03,
        "Meta" | "OS" => 0xffeb,
        "CapsLock" => 0xffe5,
        "NumLock" => 0xff7f,
        "ScrollLock" => 0xff14,
        "Pause" => 0xff13,
        "PrintScreen" => 0xff61,
        "ContextMenu" => 0xff67,
        "Spacebar" => 0x20,
        f if f.len() <= 3 && f.starts_with('F') => {
            // F1..F12 are XK_F1 (0xffbe) onwards.
            let n: u32 = f[1..].parse().ok()?;
            if !(1..=12).contains(&n) {
                return None;
            }
            0xffbe + n - 1
        }
        _ => return None,
    };
    Some(sym)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_each_event_and_refuses_the_rest() {
        assert_eq!(
            InputEvent::parse(br#"{"type":"pointerMove","x":1,"y":2,"extra":true}"#).unwrap(),
            InputEvent::PointerMove { x: 1, y: 2 }
        );
        assert_eq!(
            InputEvent::parse(br#"{"type":"wheel","x":1,"y":2,"dx":-1,"dy":3}"#).unwrap(),
            InputEvent::Wheel {
                x: 1,
                y: 2,
                dx: -1,
                dy: 3
            }
        );
        let bad: [(&[u8], &str); 10] = [
            (b"", "NotAnEvent"),
            (b"[1]", "NotAnEvent"),
            (br#"{"type":1}"#, "NotAnEvent"),
            (br#"{"type":"teleport","x":1}"#, "UnknownType"),
            (br#"{"type":"pointerMove","x":-1,"y":2}"#, "Malformed"),
            (br#"{"type":"pointerMove","x":1.5,"y":2}"#, "Malformed"),
            (br#"{"type":"pointerMove","x":70000,"y":2}"#, "Malformed"),
            (
                br#"{"type":"pointerButton","x":1,"y":2,"button":4,"down":true}"#,
                "BadButton",
            ),
            (br#"{"type":"key","key":"","down":true}"#, "BadKey"),
            (br#"{"type":"key","key":"a"}"#, "Malformed"),
        ];
        for (payload, kind) in bad {
            let err = InputEvent::parse(payload).unwrap_err();
            assert!(format!("{err:?}").starts_with(kind), "{payload:?}: {err:?}");
        }
        let long = format!(
            r#"{{"type":"key","key":"{}","down":true}}"#,
            "x".repeat(2000)
        );
        assert!(matches!(
            InputEvent::parse(long.as_bytes()),
            Err(InputError::TooLong(_))
        ));
    }

    #[test]
    fn keysyms() {
        let cases: [(&str, Option<u32>); 24] = [
            ("a", Some(0x61)),
            ("A", Some(0x41)),
            ("1", Some(0x31)),
            (" ", Some(0x20)),
            ("é", Some(0xe9)),
            ("€", Some(0x0100_20ac)),
            ("ж", Some(0x0100_0436)),
            ("Enter", Some(0xff0d)),
            ("Backspace", Some(0xff08)),
            ("Tab", Some(0xff09)),
            ("Escape", Some(0xff1b)),
            ("Delete", Some(0xffff)),
            ("PageUp", Some(0xff55)),
            ("PageDown", Some(0xff56)),
            ("ArrowLeft", Some(0xff51)),
            ("F1", Some(0xffbe)),
            ("F12", Some(0xffc9)),
            ("F13", None),
            ("Shift", Some(0xffe1)),
            ("Control", Some(0xffe3)),
            ("Meta", Some(0xffeb)),
            ("Unidentified", None),
            ("\n", None),
            ("", None),
        ];
        for (key, sym) in cases {
            assert_eq!(keysym_for(key), sym, "{key:?}");
        }
        assert_eq!(keysym_for("Alt"), Some(0xffe9));
        assert_eq!(keysym_for("CapsLock"), Some(0xffe5));
        assert_eq!(keysym_for("Home"), Some(0xff50));
        assert_eq!(keysym_for("End"), Some(0xff57));
        assert_eq!(keysym_for("Insert"), Some(0xff63));
        assert_eq!(keysym_for("Fx"), None);
    }
}
