//! Reading JSON objects from outside (HTTP bodies, binding arguments) field by field, so one
//! pass names every problem: wrong types, bad values and unknown fields alike.

use ipnet::IpNet;
use serde_json::{Map, Value};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::error::{Error, Problems, Result};

/// A field that may be absent, explicitly `null`, or set.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Patch<T> {
    #[default]
    Absent,
    Null,
    Set(T),
}

impl<T> Patch<T> {
    pub fn is_absent(&self) -> bool {
        matches!(self, Patch::Absent)
    }

    /// The new value for a nullable field: `None` when absent, `Some(None)` when null.
    pub fn into_update(self) -> Option<Option<T>> {
        match self {
            Patch::Absent => None,
            Patch::Null => Some(None),
            Patch::Set(value) => Some(Some(value)),
        }
    }
}

/// What a field's parser reports, each problem a separate entry: one problem, the problems
/// of a nested object (each put under the field's name), or problems that already name where
/// they are (`Named`).
pub(crate) trait IntoProblems {
    fn into_problems(self, field: &str) -> Vec<String>;
}

impl IntoProblems for String {
    fn into_problems(self, field: &str) -> Vec<String> {
        vec![format!("{field}: {self}")]
    }
}

impl IntoProblems for Vec<String> {
    fn into_problems(self, field: &str) -> Vec<String> {
        self.into_iter()
            .map(|problem| format!("{field}: {problem}"))
            .collect()
    }
}

/// Problems that carry their own path (`permissions.Orders: …`).
pub(crate) struct Named(pub Vec<String>);

impl IntoProblems for Named {
    fn into_problems(self, _field: &str) -> Vec<String> {
        self.0
    }
}

/// A JSON object being read; `finish` reports unknown fields.
pub(crate) struct Fields<'a> {
    map: &'a Map<String, Value>,
    known: Vec<&'static str>,
    pub problems: Problems,
}

impl<'a> Fields<'a> {
    pub fn new(value: &'a Value, what: &str) -> Result<Fields<'a>> {
        match value {
            Value::Object(map) => Ok(Fields {
                map,
                known: Vec::new(),
                problems: Problems::new(),
            }),
            _ => Err(Error::invalid(vec![format!(
                "{what}: expected a JSON object"
            )])),
        }
    }

    /// The raw value of `name`, marking it known. `None` when absent.
    pub fn raw(&mut self, name: &'static str) -> Option<&'a Value> {
        self.known.push(name);
        self.map.get(name)
    }

    /// A field that may be absent, null or a value parsed by `parse`.
    pub fn patch<T, E: IntoProblems>(
        &mut self,
        name: &'static str,
        parse: impl FnOnce(&'a Value) -> Result<T, E>,
    ) -> Patch<T> {
        match self.raw(name) {
            None => Patch::Absent,
            Some(Value::Null) => Patch::Null,
            Some(value) => match parse(value) {
                Ok(parsed) => Patch::Set(parsed),
                Err(problems) => {
                    for problem in problems.into_problems(name) {
                        self.problems.push(problem);
                    }
                    Patch::Absent
                }
            },
        }
    }

    /// A field that may be absent or a value, but not null.
    pub fn optional<T, E: IntoProblems>(
        &mut self,
        name: &'static str,
        parse: impl FnOnce(&'a Value) -> Result<T, E>,
    ) -> Option<T> {
        match self.patch(name, parse) {
            Patch::Absent => None,
            Patch::Null => {
                self.problems.push(format!("{name}: must not be null"));
                None
            }
            Patch::Set(value) => Some(value),
        }
    }

    /// A field that must be present.
    pub fn required<T, E: IntoProblems>(
        &mut self,
        name: &'static str,
        parse: impl FnOnce(&'a Value) -> Result<T, E>,
    ) -> Option<T> {
        if !self.map.contains_key(name) {
            self.known.push(name);
            self.problems.push(format!("{name}: is required"));
            return None;
        }
        self.optional(name, parse)
    }

    /// Every problem found, including one per unknown field.
    pub fn finish(mut self) -> Problems {
        for name in self.map.keys() {
            if !self.known.contains(&name.as_str()) {
                self.problems.push(format!("{name}: unknown field"));
            }
        }
        self.problems
    }
}

pub(crate) fn string(value: &Value) -> Result<String, String> {
    value
        .as_str()
        .map(str::to_owned)
        .ok_or_else(|| "expected a string".to_owned())
}

pub(crate) fn boolean(value: &Value) -> Result<bool, String> {
    value
        .as_bool()
        .ok_or_else(|| "expected true or false".to_owned())
}

pub(crate) fn integer(value: &Value) -> Result<i64, String> {
    value
        .as_i64()
        .ok_or_else(|| "expected an integer".to_owned())
}

/// How long a replaced secret keeps working: from 0 (it stops at once) to `max`.
pub(crate) fn overlap_within(
    overlap: time::Duration,
    max: time::Duration,
) -> Result<time::Duration, String> {
    if (time::Duration::ZERO..=max).contains(&overlap) {
        Ok(overlap)
    } else {
        Err(format!("must be from 0 to {} seconds", max.whole_seconds()))
    }
}

/// [`overlap_within`] from a JSON integer of seconds.
pub(crate) fn overlap_seconds(
    value: &Value,
    max: time::Duration,
) -> Result<time::Duration, String> {
    overlap_within(time::Duration::seconds(integer(value)?), max)
}

pub(crate) fn timestamp(value: &Value) -> Result<OffsetDateTime, String> {
    let text = value
        .as_str()
        .ok_or("expected an RFC 3339 date-time string")?;
    OffsetDateTime::parse(text, &Rfc3339)
        .map(|t| t.to_offset(time::UtcOffset::UTC))
        .map_err(|_| format!("`{text}` is not an RFC 3339 date-time (e.g. 2027-01-31T12:00:00Z)"))
}

pub(crate) fn string_list(value: &Value) -> Result<Vec<String>, String> {
    let items = value.as_array().ok_or("expected a list of strings")?;
    items
        .iter()
        .map(|item| {
            item.as_str()
                .map(str::to_owned)
                .ok_or_else(|| "expected a list of strings".to_owned())
        })
        .collect()
}

/// Parses a list of CIDRs or bare addresses, naming every bad entry.
pub fn parse_cidrs(entries: &[String]) -> Result<Vec<IpNet>, Vec<String>> {
    let mut nets = Vec::with_capacity(entries.len());
    let mut problems = Vec::new();
    for entry in entries {
        let text = entry.trim();
        let parsed = text
            .parse::<IpNet>()
            .or_else(|_| text.parse::<std::net::IpAddr>().map(IpNet::from));
        match parsed {
            Ok(net) => nets.push(net.trunc()),
            Err(_) => problems.push(format!("`{entry}` is not an IP address or CIDR")),
        }
    }
    if problems.is_empty() {
        Ok(nets)
    } else {
        Err(problems)
    }
}

/// Length in characters, for limits that users read as characters.
pub(crate) fn char_len(text: &str) -> usize {
    text.chars().count()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn fields_report_every_problem() {
        let body = json!({"name": 3, "flag": null, "extra": 1, "other": 2});
        let mut fields = Fields::new(&body, "body").unwrap();
        assert_eq!(fields.required("name", string), None);
        assert_eq!(fields.optional("flag", boolean), None);
        assert_eq!(fields.required("missing", string), None);
        let problems = fields.finish().finish().unwrap_err().problems();
        assert_eq!(problems.len(), 5, "{problems:?}");
        assert!(Fields::new(&json!([1]), "body").is_err());
    }

    #[test]
    fn patch_distinguishes_absent_null_and_set() {
        let body = json!({"a": null, "b": "x"});
        let mut fields = Fields::new(&body, "body").unwrap();
        assert_eq!(fields.patch("a", string), Patch::Null);
        assert_eq!(fields.patch("b", string), Patch::Set("x".into()));
        assert_eq!(fields.patch("c", string), Patch::Absent);
        assert!(fields.finish().is_empty());
    }

    #[test]
    fn cidrs_accept_addresses_and_networks_of_both_families() {
        let ok = parse_cidrs(&[
            "10.0.0.0/8".into(),
            "192.168.1.7".into(),
            "2001:db8::/32".into(),
            "::1".into(),
        ])
        .unwrap();
        assert_eq!(ok.len(), 4);
        assert_eq!(ok[1].to_string(), "192.168.1.7/32");
        let bad = parse_cidrs(&[
            "10.0.0.0/33".into(),
            "nope".into(),
            "1.2.3.4".into(),
            "::/129".into(),
        ])
        .unwrap_err();
        assert_eq!(bad.len(), 3);
    }

    #[test]
    fn timestamps_are_rfc3339() {
        assert!(timestamp(&json!("2027-01-31T12:00:00Z")).is_ok());
        assert!(timestamp(&json!("2027-01-31T12:00:00+02:00")).is_ok());
        assert!(timestamp(&json!("tomorrow")).is_err());
        assert!(timestamp(&json!(5)).is_err());
    }
}
