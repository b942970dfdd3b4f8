//! The admin API's inputs: OData query options (`$filter`, `$select`, `$top`, …) and Graph
//! request bodies (every entity's create and patch validation, the settings patch). Never
//! panics; what validates holds no control characters outside free text.
#![no_main]

use assist_graph::directory::{
    DOMAIN, GROUP, MANAGED_DEVICE, ROLE_ASSIGNMENT, ROLE_DEFINITION, USER,
};
use assist_graph::odata::{QueryOptions, ResourceKind};
use assist_graph::settings::RemoteAssistanceSettings;
use libfuzzer_sys::fuzz_target;
use serde_json::json;

fuzz_target!(|data: &[u8]| {
    if let Ok(query) = std::str::from_utf8(data) {
        for kind in [ResourceKind::Collection, ResourceKind::Entity] {
            if let Ok(q) = QueryOptions::parse(Some(query), kind) {
                let _ = q.check_properties(&["id", "displayName", "activityDateTime", "n"]);
                if let Some(f) = &q.filter {
                    for entity in [
                        json!({"id": "1", "displayName": "a", "activityDateTime": "2026-12-01T20:55:31.586Z", "n": 3}),
                        json!({"activityDateTime": 5, "n": "x"}),
                        json!({}),
                    ] {
                        let _ = f.matches(&entity);
                    }
                }
                let _ = q.apply_select(json!({"id": "1", "@odata.type": "t", "displayName": "d"}));
            }
        }
    }
    let Ok(body) = serde_json::from_slice::<serde_json::Value>(data) else {
        return;
    };
    let existing = json!({"id": "1", "displayName": "x", "userPrincipalName": "a@b.example"});
    for schema in [
        &USER,
        &GROUP,
        &MANAGED_DEVICE,
        &DOMAIN,
        &ROLE_DEFINITION,
        &ROLE_ASSIGNMENT,
    ] {
        if let Ok(m) = schema.validate_create(&body) {
            for v in m.values() {
                if let Some(s) = v.as_str() {
                    assert!(!s.contains('\0'), "NUL accepted in {}", schema.name);
                }
            }
        }
        let _ = schema.validate_patch(&existing, &body);
    }
    let _ = RemoteAssistanceSettings::default().apply_patch(&body);
});
