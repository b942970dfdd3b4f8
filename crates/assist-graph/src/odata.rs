//! OData system query options (`$select`, `$filter`, `$top`, `$skip`, `$count`, …) as Graph
//! uses them, parsed from a raw query string and applied to JSON entities.
//!
//! Only what Assist supports is accepted; anything else is a 400 rather than silently ignored,
//! so a script never believes a filter was applied when it was not.

use crate::GraphError;
use serde_json::{Map, Value};

/// The largest `$top` a caller may ask for; larger pages are refused.
pub const MAX_TOP: usize = 999;

/// Query options parsed from a request's query string.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct QueryOptions {
    /// `$select`: the properties to return, in the order given.
    pub select: Option<Vec<String>>,
    /// `$filter`, parsed.
    pub filter: Option<Filter>,
    /// `$top`: at most this many items in a page.
    pub top: Option<usize>,
    /// `$skip`: skip this many items.
    pub skip: Option<usize>,
    /// `$count=true`: include `@odata.count`.
    pub count: bool,
    /// `$expand`: accepted by the SDK's templates; Assist's entities have no expandable relationships.
    pub expand: Option<String>,
}

/// Which options a resource accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResourceKind {
    /// A single entity or singleton: `$select` and `$expand` only.
    Entity,
    /// A collection: every option.
    Collection,
}

/// Decodes one query-string value (`+` is a space, `%XX` a byte); 400 when malformed or not UTF-8.
pub fn percent_decode(raw: &str) -> Result<String, GraphError> {
    let bytes = raw.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' => {
                let hex = bytes
                    .get(i + 1..i + 3)
                    .and_then(|h| std::str::from_utf8(h).ok())
                    .and_then(|h| u8::from_str_radix(h, 16).ok())
                    .ok_or_else(|| {
                        GraphError::bad_request("malformed percent-encoding in query string")
                    })?;
                out.push(hex);
                i += 2;
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8(out).map_err(|_| GraphError::bad_request("query string is not UTF-8"))
}

fn parse_usize(name: &str, v: &str) -> Result<usize, GraphError> {
    v.trim().parse::<usize>().map_err(|_| {
        GraphError::bad_request(format!("{name} must be a non-negative integer, got '{v}'"))
    })
}

impl QueryOptions {
    /// Parses a raw (still percent-encoded) query string. Parameters that do not start with `$`
    /// are left to the caller (Graph ignores unknown plain parameters); unknown `$` options,
    /// repeated options and options the resource kind does not take are a 400.
    pub fn parse(query: Option<&str>, kind: ResourceKind) -> Result<Self, GraphError> {
        let mut opts = QueryOptions::default();
        let mut seen: Vec<String> = Vec::new();
        for pair in query.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            let key = percent_decode(k)?;
            let value = percent_decode(v)?;
            let name = key.to_ascii_lowercase();
            if !name.starts_with('$') {
                continue;
            }
            if seen.contains(&name) {
                return Err(GraphError::bad_request(format!(
                    "query option {key} is given more than once"
                )));
            }
            seen.push(name.clone());
            let collection_only = |o: &str| -> Result<(), GraphError> {
                if kind == ResourceKind::Entity {
                    Err(GraphError::bad_request(format!(
                        "query option {o} is not supported on a single entity"
                    )))
                } else {
                    Ok(())
                }
            };
            match name.as_str() {
                "$select" => {
                    let props: Vec<String> = value
                        .split(',')
                        .map(|s| s.trim().to_owned())
                        .filter(|s| !s.is_empty())
                        .collect();
                    if props.is_empty() {
                        return Err(GraphError::bad_request("$select names no property"));
                    }
                    opts.select = Some(props);
                }
                "$expand" => {
                    if !value.trim().is_empty() {
                        opts.expand = Some(value);
                    }
                }
                "$filter" => {
                    collection_only("$filter")?;
                    opts.filter = Some(Filter::parse(&value)?);
                }
                "$top" => {
                    collection_only("$top")?;
                    let top = parse_usize("$top", &value)?;
                    if top == 0 || top > MAX_TOP {
                        return Err(GraphError::bad_request(format!(
                            "$top must be between 1 and {MAX_TOP}"
                        )));
                    }
                    opts.top = Some(top);
                }
                "$skip" => {
                    collection_only("$skip")?;
                    opts.skip = Some(parse_usize("$skip", &value)?);
                }
                "$count" => {
                    collection_only("$count")?;
                    opts.count = match value.trim() {
                        "true" => true,
                        "false" => false,
                        other => {
                            return Err(GraphError::bad_request(format!(
                                "$count must be true or false, got '{other}'"
                            )))
                        }
                    };
                }
                _ => {
                    return Err(GraphError::bad_request(format!(
                        "query option {key} is not supported"
                    )));
                }
            }
        }
        Ok(opts)
    }

    /// Checks `$select` and `$expand` against an entity's property names (`$expand` is refused:
    /// Assist's entities have no expandable relationships).
    pub fn check_properties(&self, properties: &[&str]) -> Result<(), GraphError> {
        if let Some(expand) = &self.expand {
            return Err(GraphError::bad_request(format!(
                "'{expand}' is not a navigation property that can be expanded"
            )));
        }
        if let Some(select) = &self.select {
            for p in select {
                if !properties.contains(&p.as_str()) {
                    return Err(GraphError::bad_request(format!(
                        "'{p}' is not a property of this resource"
                    )));
                }
            }
        }
        if let Some(filter) = &self.filter {
            for p in filter.properties() {
                if !properties.contains(&p) {
                    return Err(GraphError::bad_request(format!(
                        "'{p}' in $filter is not a property of this resource"
                    )));
                }
            }
        }
        Ok(())
    }

    /// Applies `$select` to an entity: keeps the selected properties and any `@odata.*` annotation.
    pub fn apply_select(&self, entity: Value) -> Value {
        let Some(select) = &self.select else {
            return entity;
        };
        match entity {
            Value::Object(map) => {
                let kept: Map<String, Value> = map
                    .into_iter()
                    .filter(|(k, _)| k.starts_with("@odata.") || select.iter().any(|s| s == k))
                    .collect();
                Value::Object(kept)
            }
            other => other,
        }
    }
}

/// A comparison operator in `$filter`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CompareOp {
    /// `eq`
    Eq,
    /// `ne`
    Ne,
    /// `gt`
    Gt,
    /// `ge`
    Ge,
    /// `lt`
    Lt,
    /// `le`
    Le,
}

/// One `property op literal` clause.
#[derive(Debug, Clone, PartialEq)]
pub struct Comparison {
    /// The property name (camelCase, as on the wire).
    pub property: String,
    /// The operator.
    pub op: CompareOp,
    /// The literal.
    pub value: Literal,
}

/// A `$filter` literal.
#[derive(Debug, Clone, PartialEq)]
pub enum Literal {
    /// A string, a number, a boolean or null, compared with the property's JSON value.
    Json(Value),
    /// An unquoted DateTimeOffset or Date literal, as Unix nanoseconds: compared with the
    /// property's RFC 3339 string as an instant (a property that is not one never matches).
    Instant(i128),
}

/// A `$filter` expression: comparisons joined by `and` (the subset Assist supports).
#[derive(Debug, Clone, PartialEq)]
pub struct Filter {
    /// All must hold.
    pub all_of: Vec<Comparison>,
}

fn tokenize(input: &str) -> Result<Vec<String>, GraphError> {
    let mut tokens = Vec::new();
    let chars: Vec<char> = input.chars().collect();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if c.is_whitespace() {
            i += 1;
        } else if c == '\'' {
            // OData string literal: '' escapes a quote.
            let mut s = String::from("'");
            i += 1;
            loop {
                match chars.get(i) {
                    None => {
                        return Err(GraphError::bad_request(
                            "unterminated string literal in $filter",
                        ))
                    }
                    Some('\'') if chars.get(i + 1) == Some(&'\'') => {
                        s.push('\'');
                        i += 2;
                    }
                    Some('\'') => {
                        i += 1;
                        break;
                    }
                    Some(ch) => {
                        s.push(*ch);
                        i += 1;
                    }
                }
            }
            tokens.push(s);
        } else {
            let start = i;
            while i < chars.len() && !chars[i].is_whitespace() && chars[i] != '\'' {
                i += 1;
            }
            tokens.push(chars[start..i].iter().collect());
        }
    }
    Ok(tokens)
}

fn looks_like_date(tok: &str) -> bool {
    let b = tok.as_bytes();
    b.len() >= 5 && b[..4].iter().all(u8::is_ascii_digit) && b[4] == b'-'
}

/// An RFC 3339 date-time with an offset, or a plain date (midnight UTC), as Unix nanoseconds.
pub fn parse_instant(s: &str) -> Option<i128> {
    use time::format_description::well_known::Rfc3339;
    if let Ok(t) = time::OffsetDateTime::parse(s, &Rfc3339) {
        return Some(t.unix_timestamp_nanos());
    }
    let date_only = time::macros::format_description!("[year]-[month]-[day]");
    time::Date::parse(s, &date_only)
        .ok()
        .map(|d| d.midnight().assume_utc().unix_timestamp_nanos())
}

fn parse_literal(tok: &str) -> Result<Literal, GraphError> {
    if let Some(s) = tok.strip_prefix('\'') {
        return Ok(Literal::Json(Value::String(s.to_owned())));
    }
    match tok {
        "true" => return Ok(Literal::Json(Value::Bool(true))),
        "false" => return Ok(Literal::Json(Value::Bool(false))),
        "null" => return Ok(Literal::Json(Value::Null)),
        _ => {}
    }
    // Dates first: `2026-01-01` must not be read as the number 2026 minus something.
    if !looks_like_date(tok) {
        if let Ok(n) = tok.parse::<i64>() {
            return Ok(Literal::Json(Value::from(n)));
        }
        if let Ok(f) = tok.parse::<f64>() {
            if let Some(n) = serde_json::Number::from_f64(f) {
                return Ok(Literal::Json(Value::Number(n)));
            }
        }
    }
    // Unquoted DateTimeOffset (2026-01-01T00:00:00Z) and Date (2026-01-01) literals: anything
    // that starts like a date must be a valid one, compared as an instant (never as a string,
    // which would order `…:31Z` before `…:31.586Z`).
    if looks_like_date(tok) {
        return parse_instant(tok).map(Literal::Instant).ok_or_else(|| {
            GraphError::bad_request(format!(
                "'{tok}' is not a valid DateTimeOffset (e.g. 2026-01-01T00:00:00Z) or Date (2026-01-01)"
            ))
        });
    }
    Err(GraphError::bad_request(format!(
        "'{tok}' is not a literal $filter understands"
    )))
}

impl Filter {
    /// Parses `a eq 'x' and b ge 2026-01-01T00:00:00Z`. Supports `eq ne gt ge lt le` joined by `and`.
    pub fn parse(input: &str) -> Result<Self, GraphError> {
        let tokens = tokenize(input)?;
        if tokens.is_empty() {
            return Err(GraphError::bad_request("$filter is empty"));
        }
        let mut all_of = Vec::new();
        let mut rest = tokens.as_slice();
        loop {
            let [property, op, literal, tail @ ..] = rest else {
                return Err(GraphError::bad_request(format!(
                    "cannot parse $filter '{input}': expected 'property op value'"
                )));
            };
            if property.starts_with('\'')
                || !property
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '/')
            {
                return Err(GraphError::bad_request(format!(
                    "'{property}' is not a property name"
                )));
            }
            let op = match op.as_str() {
                "eq" => CompareOp::Eq,
                "ne" => CompareOp::Ne,
                "gt" => CompareOp::Gt,
                "ge" => CompareOp::Ge,
                "lt" => CompareOp::Lt,
                "le" => CompareOp::Le,
                other => {
                    return Err(GraphError::bad_request(format!(
                        "$filter operator '{other}' is not supported (eq, ne, gt, ge, lt, le)"
                    )))
                }
            };
            all_of.push(Comparison {
                property: property.clone(),
                op,
                value: parse_literal(literal)?,
            });
            match tail {
                [] => break,
                [and, more @ ..] if and == "and" => rest = more,
                [other, ..] => {
                    return Err(GraphError::bad_request(format!(
                        "$filter: expected 'and', got '{other}' (only 'and' is supported)"
                    )))
                }
            }
        }
        Ok(Filter { all_of })
    }

    /// The property names the filter reads.
    pub fn properties(&self) -> impl Iterator<Item = &str> {
        self.all_of.iter().map(|c| c.property.as_str())
    }

    /// Whether `entity` satisfies the filter. Strings compare case-insensitively for `eq`/`ne`
    /// (as Graph does) and lexically for ordering, which is right for ISO 8601 timestamps.
    pub fn matches(&self, entity: &Value) -> bool {
        self.all_of.iter().all(|c| {
            let actual = entity.get(&c.property).unwrap_or(&Value::Null);
            compare(actual, c.op, &c.value)
        })
    }
}

fn compare(actual: &Value, op: CompareOp, expected: &Literal) -> bool {
    use std::cmp::Ordering;
    let expected = match expected {
        Literal::Json(v) => v,
        Literal::Instant(want) => {
            let ord = actual.as_str().and_then(parse_instant).map(|h| h.cmp(want));
            return holds(op, ord);
        }
    };
    let ord: Option<Ordering> = match (actual, expected) {
        (Value::String(a), Value::String(b)) => {
            if matches!(op, CompareOp::Eq | CompareOp::Ne) {
                Some(if a.eq_ignore_ascii_case(b) {
                    Ordering::Equal
                } else {
                    Ordering::Less
                })
            } else {
                Some(a.as_str().cmp(b.as_str()))
            }
        }
        (Value::Number(a), Value::Number(b)) => a
            .as_f64()
            .zip(b.as_f64())
            .and_then(|(a, b)| a.partial_cmp(&b)),
        (Value::Bool(a), Value::Bool(b)) => Some(a.cmp(b)),
        (Value::Null, Value::Null) => Some(Ordering::Equal),
        _ => None,
    };
    holds(op, ord)
}

fn holds(op: CompareOp, ord: Option<std::cmp::Ordering>) -> bool {
    use std::cmp::Ordering;
    match (op, ord) {
        (CompareOp::Eq, o) => o == Some(Ordering::Equal),
        (CompareOp::Ne, o) => o != Some(Ordering::Equal),
        (_, None) => false,
        (CompareOp::Gt, Some(o)) => o == Ordering::Greater,
        (CompareOp::Ge, Some(o)) => o != Ordering::Less,
        (CompareOp::Lt, Some(o)) => o == Ordering::Less,
        (CompareOp::Le, Some(o)) => o != Ordering::Greater,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    #[test]
    fn select_parses_and_applies() {
        let q = QueryOptions::parse(
            Some("$select=blockChat,remoteAssistanceState"),
            ResourceKind::Entity,
        )
        .unwrap();
        assert_eq!(
            q.select.as_deref(),
            Some(&["blockChat".to_owned(), "remoteAssistanceState".to_owned()][..])
        );
        let out = q.apply_select(json!({"@odata.type":"t","id":"1","blockChat":true,"remoteAssistanceState":"enabled","x":1}));
        assert_eq!(
            out,
            json!({"@odata.type":"t","blockChat":true,"remoteAssistanceState":"enabled"})
        );
    }

    #[test]
    fn percent_encoded_dollar_is_understood() {
        let q = QueryOptions::parse(Some("%24select=blockChat"), ResourceKind::Entity).unwrap();
        assert_eq!(q.select.unwrap(), vec!["blockChat"]);
    }

    #[test]
    fn unknown_and_misplaced_options_are_refused() {
        assert!(QueryOptions::parse(Some("$frobnicate=1"), ResourceKind::Collection).is_err());
        assert!(QueryOptions::parse(Some("$top=5"), ResourceKind::Entity).is_err());
        assert!(QueryOptions::parse(Some("$select=a&$select=b"), ResourceKind::Entity).is_err());
        assert!(QueryOptions::parse(Some("$top=0"), ResourceKind::Collection).is_err());
        assert!(QueryOptions::parse(Some("$top=abc"), ResourceKind::Collection).is_err());
        assert!(QueryOptions::parse(Some("$count=yes"), ResourceKind::Collection).is_err());
        assert!(QueryOptions::parse(Some("$select="), ResourceKind::Entity).is_err());
        assert!(QueryOptions::parse(Some("%zz=1"), ResourceKind::Entity).is_err());
        // Plain parameters are not ours to judge.
        assert!(QueryOptions::parse(Some("api-version=1"), ResourceKind::Entity).is_ok());
    }

    #[test]
    fn check_properties_rejects_unknown_names() {
        let q = QueryOptions::parse(Some("$select=nope"), ResourceKind::Entity).unwrap();
        assert!(q.check_properties(&["id"]).is_err());
        let q = QueryOptions::parse(Some("$expand=x"), ResourceKind::Entity).unwrap();
        assert!(q.check_properties(&["id"]).is_err());
        let q = QueryOptions::parse(Some("$filter=nope eq 1"), ResourceKind::Collection).unwrap();
        assert!(q.check_properties(&["id"]).is_err());
    }

    #[test]
    fn filter_eq_and_ranges() {
        let f = Filter::parse("displayName eq 'O''Brien' and enabled eq true").unwrap();
        assert!(f.matches(&json!({"displayName":"o'brien","enabled":true})));
        assert!(!f.matches(&json!({"displayName":"o'brien","enabled":false})));
        let f = Filter::parse(
            "activityDateTime ge 2026-01-01T00:00:00Z and activityDateTime lt '2026-02-01'",
        )
        .unwrap();
        assert!(f.matches(&json!({"activityDateTime":"2026-01-15T10:00:00Z"})));
        assert!(!f.matches(&json!({"activityDateTime":"2025-12-31T10:00:00Z"})));
        assert!(!f.matches(&json!({"activityDateTime":"2026-02-01T10:00:00Z"})));
        let f = Filter::parse("n gt 2").unwrap();
        assert!(f.matches(&json!({"n":3})));
        assert!(!f.matches(&json!({"n":"3"})));
        let f = Filter::parse("x ne null").unwrap();
        assert!(f.matches(&json!({"x":1})));
        assert!(!f.matches(&json!({})));
    }

    #[test]
    fn date_times_compare_as_instants() {
        // Issue 15: at second precision a string comparison misses the event at .586.
        let f = Filter::parse("activityDateTime ge 2026-12-01T20:55:31Z").unwrap();
        assert!(f.matches(&json!({"activityDateTime":"2026-12-01T20:55:31.586Z"})));
        assert!(f.matches(&json!({"activityDateTime":"2026-12-01T20:55:31Z"})));
        assert!(!f.matches(&json!({"activityDateTime":"2026-12-01T20:55:30.999Z"})));
        // Offsets are instants too: 21:55:31+01:00 is 20:55:31Z.
        let f = Filter::parse("activityDateTime eq 2026-12-01T21:55:31+01:00").unwrap();
        assert!(f.matches(&json!({"activityDateTime":"2026-12-01T20:55:31Z"})));
        let f = Filter::parse("activityDateTime lt 2026-12-02").unwrap();
        assert!(f.matches(&json!({"activityDateTime":"2026-12-01T23:59:59.999Z"})));
        assert!(!f.matches(&json!({"activityDateTime":"2026-12-02T00:00:00Z"})));
        // A property that is not a date-time never matches a date-time literal.
        assert!(!f.matches(&json!({"activityDateTime":"yesterday"})));
        assert!(!f.matches(&json!({"activityDateTime":5})));
    }

    #[test]
    fn bad_date_time_literals_are_refused() {
        for bad in [
            "t ge 2026-13-45T99:00:00Z",
            "t ge 2026-02-30",
            "t ge 2026-01-01T00:00:00",
            "t ge 2026-1-1",
            "t ge 2026-",
        ] {
            assert!(Filter::parse(bad).is_err(), "{bad} should not parse");
        }
    }

    #[test]
    fn filter_errors() {
        for bad in [
            "",
            "a eq",
            "a eq 'x",
            "a like 'x'",
            "a eq 'x' or b eq 'y'",
            "'a' eq 'b'",
            "a eq bare",
        ] {
            assert!(Filter::parse(bad).is_err(), "{bad} should not parse");
        }
    }

    proptest! {
        #[test]
        fn parse_never_panics(s in ".{0,64}") {
            let _ = QueryOptions::parse(Some(&s), ResourceKind::Collection);
            let _ = Filter::parse(&s);
        }

        #[test]
        fn instants_order_like_time(a in 0i64..4_000_000_000, b in 0i64..4_000_000_000, ms in 0u32..1000) {
            use time::format_description::well_known::Rfc3339;
            let fmt = |s: i64, ms: u32| {
                (time::OffsetDateTime::from_unix_timestamp(s).unwrap() + time::Duration::milliseconds(ms.into()))
                    .format(&Rfc3339)
                    .unwrap()
            };
            let f = Filter::parse(&format!("t ge {}", fmt(b, 0))).unwrap();
            let entity = json!({"t": fmt(a, ms)});
            prop_assert_eq!(f.matches(&entity), a >= b);
        }

        #[test]
        fn string_eq_round_trips(v in "[a-zA-Z0-9 '@.]{0,20}") {
            let lit = v.replace('\'', "''");
            let f = Filter::parse(&format!("p eq '{lit}'")).unwrap();
            let entity = json!({"p": v});
            prop_assert!(f.matches(&entity));
        }
    }
}
