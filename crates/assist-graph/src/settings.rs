//! `remoteAssistanceSettings`: the tenant-wide Remote Help switch, unenrolled devices and chat.
//!
//! The entity's shape follows Graph beta's `microsoft.graph.remoteAssistanceSettings`; a tenant
//! that was never configured reads `disabled`, `false`, `false`.

use crate::GraphError;
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};

/// The `@odata.type` of the entity.
pub const ODATA_TYPE: &str = "#microsoft.graph.remoteAssistanceSettings";

/// The entity's property names, for `$select`.
pub const PROPERTIES: &[&str] = &[
    "id",
    "remoteAssistanceState",
    "allowSessionsToUnenrolledDevices",
    "blockChat",
];

/// Graph's `remoteAssistanceState`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub enum RemoteAssistanceState {
    /// Remote Help is off for the tenant (the default).
    #[default]
    Disabled,
    /// Remote Help is on.
    Enabled,
}

impl RemoteAssistanceState {
    /// The wire value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Disabled => "disabled",
            Self::Enabled => "enabled",
        }
    }

    /// Parses a wire value.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "disabled" => Some(Self::Disabled),
            "enabled" => Some(Self::Enabled),
            _ => None,
        }
    }
}

/// A tenant's Remote Help settings.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RemoteAssistanceSettings {
    /// Whether Remote Help is enabled.
    pub state: RemoteAssistanceState,
    /// Whether helpers may assist devices not enrolled in management.
    pub allow_sessions_to_unenrolled_devices: bool,
    /// Whether chat is blocked in sessions.
    pub block_chat: bool,
}

impl RemoteAssistanceSettings {
    /// The entity as Graph returns it; `id` is the settings identifier (Assist uses the tenant id).
    pub fn to_entity(&self, id: &str) -> Value {
        json!({
            "@odata.type": ODATA_TYPE,
            "id": id,
            "remoteAssistanceState": self.state.as_str(),
            "allowSessionsToUnenrolledDevices": self.allow_sessions_to_unenrolled_devices,
            "blockChat": self.block_chat,
        })
    }

    /// Applies a PATCH body: changes exactly the properties present and returns the new settings,
    /// with the names of the properties that changed value (for the audit trail). Refuses, as a
    /// whole, a body that is not an object, names an unknown or read-only property, has a value
    /// of the wrong JSON type or an invalid enum value.
    pub fn apply_patch(&self, body: &Value) -> Result<(Self, Vec<&'static str>), GraphError> {
        let Value::Object(map) = body else {
            return Err(GraphError::bad_request(
                "the request body must be a JSON object",
            ));
        };
        let mut next = self.clone();
        for (key, value) in map {
            match key.as_str() {
                "@odata.type" => match value.as_str() {
                    Some(t) if t == ODATA_TYPE || t == &ODATA_TYPE[1..] => {}
                    _ => {
                        return Err(GraphError::bad_request(format!(
                            "@odata.type must be '{ODATA_TYPE}'"
                        )))
                    }
                },
                "id" => return Err(GraphError::bad_request("property 'id' is read-only")),
                "remoteAssistanceState" => {
                    let s = value.as_str().ok_or_else(|| {
                        GraphError::bad_request(wrong_type(key, "a string", value))
                    })?;
                    next.state = RemoteAssistanceState::parse(s).ok_or_else(|| {
                        GraphError::bad_request(format!(
                            "'{s}' is not a valid value for remoteAssistanceState (disabled, enabled)"
                        ))
                    })?;
                }
                "allowSessionsToUnenrolledDevices" => {
                    next.allow_sessions_to_unenrolled_devices = bool_value(key, value)?;
                }
                "blockChat" => next.block_chat = bool_value(key, value)?,
                other if other.starts_with('@') => {
                    // Instance annotations other than @odata.type carry no data; Graph ignores them.
                }
                other => {
                    return Err(GraphError::bad_request(format!(
                        "'{other}' is not a property of remoteAssistanceSettings"
                    )))
                }
            }
        }
        let mut changed = Vec::new();
        if next.state != self.state {
            changed.push("remoteAssistanceState");
        }
        if next.allow_sessions_to_unenrolled_devices != self.allow_sessions_to_unenrolled_devices {
            changed.push("allowSessionsToUnenrolledDevices");
        }
        if next.block_chat != self.block_chat {
            changed.push("blockChat");
        }
        Ok((next, changed))
    }

    /// A property's current value as JSON, for audit old/new values.
    pub fn property(&self, name: &str) -> Option<Value> {
        let e = self.to_entity("");
        e.get(name).cloned()
    }
}

fn wrong_type(key: &str, want: &str, got: &Value) -> String {
    let got = match got {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    };
    format!("property '{key}' must be {want}, got {got}")
}

fn bool_value(key: &str, value: &Value) -> Result<bool, GraphError> {
    value
        .as_bool()
        .ok_or_else(|| GraphError::bad_request(wrong_type(key, "a boolean", value)))
}

/// Builds a JSON object from pairs; used by tests and callers assembling patch bodies.
pub fn object(pairs: &[(&str, Value)]) -> Value {
    let mut m = Map::new();
    for (k, v) in pairs {
        m.insert((*k).to_owned(), v.clone());
    }
    Value::Object(m)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn unconfigured_tenant_reads_disabled() {
        let e = RemoteAssistanceSettings::default().to_entity("t1");
        assert_eq!(e["remoteAssistanceState"], "disabled");
        assert_eq!(e["allowSessionsToUnenrolledDevices"], false);
        assert_eq!(e["blockChat"], false);
        assert_eq!(e["@odata.type"], ODATA_TYPE);
        assert_eq!(e["id"], "t1");
    }

    #[test]
    fn seed_example_patch_applies() {
        let body = json!({
            "@odata.type": "#microsoft.graph.remoteAssistanceSettings",
            "remoteAssistanceState": "enabled",
            "allowSessionsToUnenrolledDevices": true,
            "blockChat": true
        });
        let (s, changed) = RemoteAssistanceSettings::default()
            .apply_patch(&body)
            .unwrap();
        assert_eq!(s.state, RemoteAssistanceState::Enabled);
        assert!(s.allow_sessions_to_unenrolled_devices);
        assert!(s.block_chat);
        assert_eq!(changed.len(), 3);
    }

    #[test]
    fn partial_patch_changes_only_what_is_sent() {
        let start = RemoteAssistanceSettings {
            state: RemoteAssistanceState::Enabled,
            allow_sessions_to_unenrolled_devices: true,
            block_chat: false,
        };
        let (s, changed) = start.apply_patch(&json!({"blockChat": true})).unwrap();
        assert_eq!(s.state, RemoteAssistanceState::Enabled);
        assert!(s.allow_sessions_to_unenrolled_devices);
        assert!(s.block_chat);
        assert_eq!(changed, vec!["blockChat"]);
        let (_, changed) = s.apply_patch(&json!({"blockChat": true})).unwrap();
        assert!(changed.is_empty());
    }

    #[test]
    fn invalid_bodies_are_refused() {
        let s = RemoteAssistanceSettings::default();
        for bad in [
            json!([]),
            json!("x"),
            json!({"remoteAssistanceState": "on"}),
            json!({"remoteAssistanceState": 2}),
            json!({"remoteAssistanceState": "Enabled"}),
            json!({"blockChat": "true"}),
            json!({"blockChat": null}),
            json!({"allowSessionsToUnenrolledDevices": 1}),
            json!({"id": "x"}),
            json!({"color": "red"}),
            json!({"@odata.type": "#microsoft.graph.user"}),
            json!({"blockChat": true, "bogus": 1}),
        ] {
            let e = s.apply_patch(&bad).unwrap_err();
            assert_eq!(e.status(), 400, "{bad}");
        }
    }

    proptest! {
        #[test]
        fn patch_of_valid_values_is_reflected(state in any::<bool>(), unenrolled in proptest::option::of(any::<bool>()), chat in proptest::option::of(any::<bool>())) {
            let mut body = Map::new();
            body.insert("remoteAssistanceState".into(), json!(if state {"enabled"} else {"disabled"}));
            if let Some(u) = unenrolled { body.insert("allowSessionsToUnenrolledDevices".into(), json!(u)); }
            if let Some(c) = chat { body.insert("blockChat".into(), json!(c)); }
            let start = RemoteAssistanceSettings { state: RemoteAssistanceState::Disabled, allow_sessions_to_unenrolled_devices: true, block_chat: true };
            let (s, _) = start.apply_patch(&Value::Object(body)).unwrap();
            prop_assert_eq!(s.state == RemoteAssistanceState::Enabled, state);
            prop_assert_eq!(s.allow_sessions_to_unenrolled_devices, unenrolled.unwrap_or(true));
            prop_assert_eq!(s.block_chat, chat.unwrap_or(true));
        }
    }
}
