//! Generic Graph entities: a schema per entity type (properties, types, which are required or
//! read-only, length limits), validation of POST and PATCH bodies against it, and collection
//! pages (`value`, `@odata.count`, absolute `@odata.nextLink`).

use crate::odata::QueryOptions;
use crate::GraphError;
use serde_json::{Map, Value};

/// The longest string property Assist accepts unless a property says otherwise.
pub const DEFAULT_MAX_LEN: usize = 256;
/// The default (and largest without `$top`) page size of a collection.
pub const DEFAULT_PAGE_SIZE: usize = 100;

/// Properties a PATCH changed: (name, old value, new value).
pub type Changes = Vec<(String, Value, Value)>;

/// A property's JSON type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PropType {
    /// A string of at most `max_len` characters.
    String,
    /// A boolean.
    Bool,
    /// One of the listed strings.
    Enum(&'static [&'static str]),
    /// An array of strings (ids, names).
    StringList,
    /// Any JSON (checked by the entity's own rules, e.g. `rolePermissions`).
    Json,
}

/// One property of an entity.
#[derive(Debug, Clone, Copy)]
pub struct Prop {
    /// Wire name (camelCase; may contain `@odata.bind`).
    pub name: &'static str,
    /// Type.
    pub ty: PropType,
    /// Must be given on create.
    pub required: bool,
    /// Set by the server only; a body naming it is refused.
    pub read_only: bool,
    /// Maximum string length (characters) for strings and list items.
    pub max_len: usize,
    /// Default on create, when absent.
    pub default: Option<DefaultValue>,
    /// Write-only: accepted in bodies, never returned (e.g. `roleDefinition@odata.bind`).
    pub write_only: bool,
    /// Free text that may hold line breaks and tabs (`description`). Every other string, and
    /// every list item, refuses all control characters (NUL, ESC, CR, LF, DEL, C1, …): they are
    /// identifiers and names that end up in logs, audit records and other systems' keys.
    pub multiline: bool,
}

/// Whether `c` may appear in a string property (`multiline`: free text with line breaks).
pub fn allowed_char(c: char, multiline: bool) -> bool {
    !c.is_control() || (multiline && matches!(c, '\n' | '\r' | '\t'))
}

/// A default value for a property on create.
#[derive(Debug, Clone, Copy)]
pub enum DefaultValue {
    /// A string.
    Str(&'static str),
    /// A boolean.
    Bool(bool),
    /// An empty list.
    EmptyList,
}

impl Prop {
    /// A plain optional, writable property.
    pub const fn new(name: &'static str, ty: PropType) -> Self {
        Self {
            name,
            ty,
            required: false,
            read_only: false,
            max_len: DEFAULT_MAX_LEN,
            default: None,
            write_only: false,
            multiline: false,
        }
    }
    /// Marks it free text that may hold line breaks and tabs.
    pub const fn multiline(mut self) -> Self {
        self.multiline = true;
        self
    }
    /// Marks it required on create.
    pub const fn required(mut self) -> Self {
        self.required = true;
        self
    }
    /// Marks it read-only.
    pub const fn read_only(mut self) -> Self {
        self.read_only = true;
        self
    }
    /// Sets the maximum length.
    pub const fn max_len(mut self, n: usize) -> Self {
        self.max_len = n;
        self
    }
    /// Sets a default.
    pub const fn default(mut self, d: DefaultValue) -> Self {
        self.default = Some(d);
        self
    }
    /// Marks it write-only.
    pub const fn write_only(mut self) -> Self {
        self.write_only = true;
        self
    }
}

/// An entity type.
#[derive(Debug)]
pub struct EntitySchema {
    /// `@odata.type` with the leading `#`.
    pub odata_type: &'static str,
    /// Human name for messages ("user", "group").
    pub name: &'static str,
    /// Properties, `id` included.
    pub props: &'static [Prop],
    /// Whether the client chooses `id` on create (domains); otherwise the server does.
    pub client_sets_id: bool,
}

impl EntitySchema {
    fn prop(&self, name: &str) -> Option<&Prop> {
        self.props.iter().find(|p| p.name == name)
    }

    /// Names that can be `$select`ed or `$filter`ed.
    pub fn readable_names(&self) -> Vec<&'static str> {
        self.props
            .iter()
            .filter(|p| !p.write_only)
            .map(|p| p.name)
            .collect()
    }

    fn check_value(&self, p: &Prop, v: &Value) -> Result<(), GraphError> {
        let bad = |want: &str| {
            GraphError::bad_request(format!(
                "property '{}' of {} must be {want}",
                p.name, self.name
            ))
        };
        match p.ty {
            PropType::String => {
                let s = v.as_str().ok_or_else(|| bad("a string"))?;
                if s.chars().count() > p.max_len {
                    return Err(bad(&format!("at most {} characters", p.max_len)));
                }
                if !s.chars().all(|c| allowed_char(c, p.multiline)) {
                    return Err(bad("free of control characters"));
                }
            }
            PropType::Bool => {
                v.as_bool().ok_or_else(|| bad("a boolean"))?;
            }
            PropType::Enum(values) => {
                let s = v.as_str().ok_or_else(|| bad("a string"))?;
                if !values.contains(&s) {
                    return Err(GraphError::bad_request(format!(
                        "'{s}' is not a valid value for {} ({})",
                        p.name,
                        values.join(", ")
                    )));
                }
            }
            PropType::StringList => {
                let list = v.as_array().ok_or_else(|| bad("an array of strings"))?;
                if list.len() > 1000 {
                    return Err(bad("an array of at most 1000 strings"));
                }
                for item in list {
                    let s = item.as_str().ok_or_else(|| bad("an array of strings"))?;
                    if s.chars().count() > p.max_len {
                        return Err(bad(&format!(
                            "an array of strings of at most {} characters",
                            p.max_len
                        )));
                    }
                    if !s.chars().all(|c| allowed_char(c, false)) {
                        return Err(bad("an array of strings free of control characters"));
                    }
                }
            }
            PropType::Json => {}
        }
        Ok(())
    }

    fn check_body<'a>(
        &self,
        body: &'a Value,
        creating: bool,
    ) -> Result<&'a Map<String, Value>, GraphError> {
        let map = body
            .as_object()
            .ok_or_else(|| GraphError::bad_request("the request body must be a JSON object"))?;
        for (k, v) in map {
            if k == "@odata.type" {
                match v.as_str() {
                    Some(t) if t == self.odata_type || t == &self.odata_type[1..] => continue,
                    _ => {
                        return Err(GraphError::bad_request(format!(
                            "@odata.type must be '{}'",
                            self.odata_type
                        )))
                    }
                }
            }
            let Some(p) = self.prop(k) else {
                if k.starts_with('@') {
                    continue; // other instance annotations carry no data
                }
                return Err(GraphError::bad_request(format!(
                    "'{k}' is not a property of {}",
                    self.name
                )));
            };
            let id_on_create = k == "id" && creating && self.client_sets_id;
            if p.read_only && !id_on_create {
                return Err(GraphError::bad_request(format!(
                    "property '{k}' is read-only"
                )));
            }
            if v.is_null() {
                if p.required {
                    return Err(GraphError::bad_request(format!(
                        "property '{k}' of {} cannot be null",
                        self.name
                    )));
                }
                continue;
            }
            self.check_value(p, v)?;
        }
        Ok(map)
    }

    /// Validates a POST body and returns the new entity (without `id`, which the caller sets
    /// unless the client chose it), defaults filled in.
    pub fn validate_create(&self, body: &Value) -> Result<Map<String, Value>, GraphError> {
        let map = self.check_body(body, true)?;
        let mut out = Map::new();
        for p in self.props {
            match map.get(p.name) {
                Some(v) => {
                    out.insert(p.name.to_owned(), v.clone());
                }
                None if p.required && (p.name != "id" || self.client_sets_id) => {
                    return Err(GraphError::bad_request(format!(
                        "property '{}' is required to create a {}",
                        p.name, self.name
                    )));
                }
                None => {
                    if let Some(d) = p.default {
                        out.insert(
                            p.name.to_owned(),
                            match d {
                                DefaultValue::Str(s) => Value::String(s.to_owned()),
                                DefaultValue::Bool(b) => Value::Bool(b),
                                DefaultValue::EmptyList => Value::Array(vec![]),
                            },
                        );
                    }
                }
            }
        }
        Ok(out)
    }

    /// Validates a PATCH body against `existing` and returns the merged entity and the changed
    /// properties as (name, old, new).
    pub fn validate_patch(
        &self,
        existing: &Value,
        body: &Value,
    ) -> Result<(Value, Changes), GraphError> {
        let map = self.check_body(body, false)?;
        let mut merged = existing.clone();
        let mut changed = Vec::new();
        for (k, v) in map {
            if k.starts_with('@') && self.prop(k).is_none() {
                continue;
            }
            let old = existing.get(k).cloned().unwrap_or(Value::Null);
            if &old != v {
                changed.push((k.clone(), old, v.clone()));
            }
            if let Some(obj) = merged.as_object_mut() {
                obj.insert(k.clone(), v.clone());
            }
        }
        Ok((merged, changed))
    }

    /// The entity as returned: `@odata.type` first, write-only and internal (`_`-prefixed) keys removed.
    pub fn present(&self, stored: &Value) -> Value {
        let mut out = Map::new();
        out.insert("@odata.type".into(), Value::String(self.odata_type.into()));
        if let Some(map) = stored.as_object() {
            for (k, v) in map {
                if k.starts_with('_') || self.prop(k).is_some_and(|p| p.write_only) {
                    continue;
                }
                out.insert(k.clone(), v.clone());
            }
        }
        Value::Object(out)
    }
}

/// One page of a collection, with `@odata.count` when asked and an absolute `@odata.nextLink`
/// (the request's own URL with `$skip` advanced) when more items follow.
///
/// `items` are already presented entities; `url_without_query` is the absolute URL of the
/// collection and `raw_query` the request's query string. [`Pager`] builds the same page from
/// items offered one at a time.
pub fn page(
    items: Vec<Value>,
    q: &QueryOptions,
    url_without_query: &str,
    raw_query: Option<&str>,
) -> Value {
    let mut pager = Pager::new(q);
    for item in items {
        pager.offer(item);
    }
    pager.finish(url_without_query, raw_query)
}

/// [`page`] with the items offered one at a time (e.g. as rows stream from the database):
/// it keeps only the page's items (at most `$top`, by default [`DEFAULT_PAGE_SIZE`]) and
/// counts the others that pass `$filter`.
#[derive(Debug)]
pub struct Pager<'q> {
    q: &'q QueryOptions,
    skip: usize,
    size: usize,
    total: usize,
    value: Vec<Value>,
}

impl<'q> Pager<'q> {
    /// An empty page for the request's options.
    pub fn new(q: &'q QueryOptions) -> Self {
        Self {
            q,
            skip: q.skip.unwrap_or(0),
            size: q.top.unwrap_or(DEFAULT_PAGE_SIZE),
            total: 0,
            value: Vec::new(),
        }
    }

    /// The next item of the collection, in order (already presented).
    pub fn offer(&mut self, item: Value) {
        if self.q.filter.as_ref().is_some_and(|f| !f.matches(&item)) {
            return;
        }
        if self.total >= self.skip && self.value.len() < self.size {
            self.value.push(self.q.apply_select(item));
        }
        self.total += 1;
    }

    /// The page, with its count and next link.
    pub fn finish(self, url_without_query: &str, raw_query: Option<&str>) -> Value {
        let (skip, total) = (self.skip, self.total);
        let mut out = Map::new();
        if self.q.count {
            out.insert("@odata.count".into(), Value::from(total));
        }
        let shown = self.value.len();
        out.insert("value".into(), Value::Array(self.value));
        if skip + shown < total {
            let mut params: Vec<String> = raw_query
                .unwrap_or("")
                .split('&')
                .filter(|p| !p.is_empty())
                .filter(|p| {
                    let key = p.split('=').next().unwrap_or("").to_ascii_lowercase();
                    key != "$skip" && key != "%24skip"
                })
                .map(str::to_owned)
                .collect();
            params.push(format!("$skip={}", skip + shown));
            out.insert(
                "@odata.nextLink".into(),
                Value::String(format!("{url_without_query}?{}", params.join("&"))),
            );
        }
        Value::Object(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::odata::ResourceKind;
    use serde_json::json;

    static PROPS: &[Prop] = &[
        Prop::new("id", PropType::String).read_only(),
        Prop::new("displayName", PropType::String)
            .required()
            .max_len(10),
        Prop::new("kind", PropType::Enum(&["a", "b"])).default(DefaultValue::Str("a")),
        Prop::new("tags", PropType::StringList),
        Prop::new("on", PropType::Bool),
        Prop::new("secret@odata.bind", PropType::String).write_only(),
        Prop::new("notes", PropType::String).multiline(),
    ];
    static SCHEMA: EntitySchema = EntitySchema {
        odata_type: "#microsoft.graph.thing",
        name: "thing",
        props: PROPS,
        client_sets_id: false,
    };

    #[test]
    fn create_fills_defaults_and_checks_everything() {
        let m = SCHEMA
            .validate_create(&json!({"displayName":"x","tags":["1"]}))
            .unwrap();
        assert_eq!(
            Value::Object(m),
            json!({"displayName":"x","kind":"a","tags":["1"]})
        );
        for bad in [
            json!({}),
            json!({"displayName": "x".repeat(11)}),
            json!({"displayName": "x", "kind": "c"}),
            json!({"displayName": "x", "tags": [1]}),
            json!({"displayName": "x", "on": "yes"}),
            json!({"displayName": "x", "id": "mine"}),
            json!({"displayName": "x", "what": 1}),
            json!({"displayName": null}),
            json!({"displayName": "x", "@odata.type": "#microsoft.graph.user"}),
        ] {
            assert_eq!(
                SCHEMA.validate_create(&bad).unwrap_err().status(),
                400,
                "{bad}"
            );
        }
    }

    #[test]
    fn control_characters_are_refused() {
        for bad in [
            json!({"displayName": "a\u{0}b"}),
            json!({"displayName": "a\nb"}),
            json!({"displayName": "a\u{1b}[31m"}),
            json!({"displayName": "a\u{7f}"}),
            json!({"displayName": "a\u{85}"}),
            json!({"displayName": "x", "tags": ["ok", "b\u{0}"]}),
            json!({"displayName": "x", "notes": "line\u{0}"}),
        ] {
            assert_eq!(
                SCHEMA.validate_create(&bad).unwrap_err().status(),
                400,
                "{bad}"
            );
        }
        // Free text keeps its line breaks and tabs.
        assert!(SCHEMA
            .validate_create(&json!({"displayName": "x", "notes": "a\r\nb\tc"}))
            .is_ok());
        assert!(SCHEMA
            .validate_patch(
                &json!({"id":"1","displayName":"x"}),
                &json!({"displayName":"\u{0}"})
            )
            .is_err());
    }

    #[test]
    fn patch_merges_and_reports_changes() {
        let existing = json!({"id":"1","displayName":"x","kind":"a"});
        let (m, changed) = SCHEMA
            .validate_patch(&existing, &json!({"kind":"b","displayName":"x"}))
            .unwrap();
        assert_eq!(m, json!({"id":"1","displayName":"x","kind":"b"}));
        assert_eq!(changed, vec![("kind".to_owned(), json!("a"), json!("b"))]);
        assert!(SCHEMA
            .validate_patch(&existing, &json!({"id":"2"}))
            .is_err());
    }

    #[test]
    fn present_hides_internal_and_write_only() {
        let v = SCHEMA
            .present(&json!({"id":"1","_internal":2,"secret@odata.bind":"s","displayName":"d"}));
        assert_eq!(
            v,
            json!({"@odata.type":"#microsoft.graph.thing","id":"1","displayName":"d"})
        );
    }

    #[test]
    fn paging_returns_every_item_once_with_next_links() {
        let items: Vec<Value> = (0..25)
            .map(|i| json!({"id": i.to_string(), "n": i}))
            .collect();
        let mut seen = Vec::new();
        let mut query = Some("$top=10&$count=true".to_owned());
        loop {
            let q = QueryOptions::parse(query.as_deref(), ResourceKind::Collection).unwrap();
            let p = page(items.clone(), &q, "https://h/beta/things", query.as_deref());
            assert_eq!(p["@odata.count"], 25);
            for v in p["value"].as_array().unwrap() {
                seen.push(v["n"].as_i64().unwrap());
            }
            match p.get("@odata.nextLink").and_then(Value::as_str) {
                Some(link) => {
                    assert!(link.starts_with("https://h/beta/things?"));
                    query = Some(link.split_once('?').unwrap().1.to_owned());
                }
                None => break,
            }
        }
        assert_eq!(seen, (0..25).collect::<Vec<_>>());
    }

    #[test]
    fn filter_and_select_apply_to_pages() {
        let items: Vec<Value> = (0..5)
            .map(|i| json!({"id": i.to_string(), "even": i % 2 == 0}))
            .collect();
        let q = QueryOptions::parse(
            Some("$filter=even eq true&$select=id"),
            ResourceKind::Collection,
        )
        .unwrap();
        let p = page(items, &q, "u", None);
        assert_eq!(p["value"], json!([{"id":"0"},{"id":"2"},{"id":"4"}]));
        assert!(p.get("@odata.nextLink").is_none());
    }
}
