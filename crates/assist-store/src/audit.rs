//! The audit trail: Graph `auditEvent`s, appended in the same transaction as the change they
//! record, never updated or deleted through the API.

use serde_json::{json, Value};

/// One audit event, in Graph's `auditEvent` shape.
#[derive(Debug, Clone)]
pub struct AuditEvent {
    /// The JSON body (`id`, `displayName`, `activity`, `activityDateTime`, `actor`, `resources`, …).
    pub body: Value,
}

impl AuditEvent {
    /// A successful event: `activity` (e.g. "Patch remoteAssistanceSettings"), the operation
    /// type (`Create`, `Update`, `Delete`, `Action`) and the category. Actor and resources are
    /// added with the builder methods.
    pub fn new(activity: &str, operation: &str, category: &str) -> Self {
        // Time-ordered (UUIDv7): new events append to the end of the primary-key index instead
        // of dirtying a random page of it, which is most of what an audit write costs.
        let id = uuid::Uuid::now_v7().to_string();
        Self {
            body: json!({
                "@odata.type": "#microsoft.graph.auditEvent",
                "id": id,
                "displayName": activity,
                "componentName": category,
                "activity": activity,
                "activityDateTime": crate::now_rfc3339(),
                "activityType": activity,
                "activityOperationType": operation,
                "activityResult": "Success",
                "correlationId": id,
                "category": category,
                "actor": Value::Null,
                "resources": [],
            }),
        }
    }

    /// Sets the actor.
    pub fn actor(mut self, upn: &str, user_id: &str, application_id: Option<&str>) -> Self {
        self.body["actor"] = json!({
            "@odata.type": "#microsoft.graph.auditActor",
            "type": if application_id.is_some() { "Application" } else { "ItPro" },
            "userPrincipalName": upn,
            "userId": user_id,
            "applicationId": application_id,
        });
        self
    }

    /// Adds a resource with its modified properties as (name, old, new) JSON values.
    pub fn resource(
        mut self,
        display_name: &str,
        resource_type: &str,
        resource_id: &str,
        modified: &[(&str, Value, Value)],
    ) -> Self {
        let props: Vec<Value> = modified
            .iter()
            .map(|(name, old, new)| {
                json!({
                    "@odata.type": "#microsoft.graph.auditProperty",
                    "displayName": name,
                    "oldValue": old.to_string(),
                    "newValue": new.to_string(),
                })
            })
            .collect();
        if let Some(list) = self.body["resources"].as_array_mut() {
            list.push(json!({
                "@odata.type": "#microsoft.graph.auditResource",
                "displayName": display_name,
                "type": resource_type,
                "resourceId": resource_id,
                "modifiedProperties": props,
            }));
        }
        self
    }

    pub(crate) fn str_field(&self, k: &str) -> &str {
        self.body.get(k).and_then(Value::as_str).unwrap_or("")
    }
}

/// Rows per multi-row INSERT on SQLite: 5 bound values each, well under its 32,766 variables.
/// (PostgreSQL binds a batch's audit events as arrays, in one statement.)
pub(crate) const MAX_ROWS_PER_INSERT: usize = 200;
