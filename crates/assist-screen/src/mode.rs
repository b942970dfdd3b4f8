//! Whether the sharer applies the helper's input, from the mode the relay last announced.

/// What the sharer does with an input event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InputDecision {
    /// Inject it into the session's screen.
    Apply,
    /// Drop it: the mode does not allow control (or no mode is known yet).
    Ignore,
}

/// The decision for input arriving while the relay's last `paired` or `modeChanged` said `mode`.
///
/// Only `fullControl`, `elevation` and `unattended` apply input. `viewOnly`, no mode yet (before `paired`)
/// and any mode this version does not know are [`InputDecision::Ignore`]: the relay already drops a
/// view-only helper's input, and the sharer does not rely on that.
pub fn input_decision(mode: Option<&str>) -> InputDecision {
    match mode {
        Some("fullControl" | "elevation" | "unattended") => InputDecision::Apply,
        _ => InputDecision::Ignore,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_control_modes_apply_input() {
        for m in ["fullControl", "elevation", "unattended"] {
            assert_eq!(input_decision(Some(m)), InputDecision::Apply, "{m}");
        }
        for m in [
            None,
            Some("viewOnly"),
            Some("FullControl"),
            Some(""),
            Some("godMode"),
        ] {
            assert_eq!(input_decision(m), InputDecision::Ignore, "{m:?}");
        }
    }
}
