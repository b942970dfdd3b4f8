//! The input examples in docs/protocol.md ("Screen and input payloads") are what this crate reads and writes.

use assist_screen::InputEvent;

const PROTOCOL: &str = include_str!("../../../docs/protocol.md");

/// The lines of the fenced block whose info string is `json input`.
fn input_examples() -> Vec<&'static str> {
    let mut lines = PROTOCOL.lines();
    let mut out = Vec::new();
    while let Some(l) = lines.next() {
        if l.trim() == "```json input" {
            for l in lines.by_ref() {
                if l.trim_start().starts_with("```") {
                    return out;
                }
                if !l.trim().is_empty() {
                    out.push(l);
                }
            }
        }
    }
    out
}

#[test]
fn every_documented_input_event_round_trips() {
    let examples = input_examples();
    assert_eq!(examples.len(), 4, "one example per event type");
    let mut types = Vec::new();
    for line in examples {
        let ev = InputEvent::parse(line.as_bytes()).unwrap_or_else(|e| panic!("{line}: {e}"));
        let again: serde_json::Value = serde_json::from_slice(&ev.to_json()).unwrap();
        let doc: serde_json::Value = serde_json::from_str(line).unwrap();
        assert_eq!(again, doc, "{line}");
        types.push(doc["type"].as_str().unwrap().to_owned());
    }
    assert_eq!(types, ["pointerMove", "pointerButton", "wheel", "key"]);
}

#[test]
fn documented_keyframe_example() {
    // "Example, hex, of a keyframe header for a 1024×768 screen in 192 tiles: `01 04 00 03 00 00 c0`."
    assert!(PROTOCOL.contains("`01 04 00 03 00 00 c0`"));
}
