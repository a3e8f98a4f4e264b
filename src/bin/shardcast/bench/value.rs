//! The machine-readable figures of the bench as a tree of values, written as one JSON object
//! (`--json`) or as flat CSV columns (`--csv`), and summarised over repeated runs.
//!
//! # Invariants
//!
//! - A report's tree has the same keys in the same order whatever the run measured: a section
//!   the run did not have (`topics` without `--topics`) is a [`Value::Absent`] whose fields are
//!   all null. So every CSV line of a run, a sweep's included, has the columns of its header,
//!   and the trees of two runs line up field by field for [`Value::pick`].
//! - [`Value::pick`] returns one of the values it was given (a median is the lower middle one
//!   of an even count), so a summary keeps the figures' kinds and precision: an integer stays
//!   an integer.

use std::fmt::Write;

/// One figure, or an object of them.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Value {
    /// Unknown here (off Linux, a server without counters): `null`, an empty CSV field.
    Null,
    /// A count.
    Int(u64),
    /// A measured number, written with this many decimals; `null` if it is not finite.
    Num(f64, usize),
    /// A name.
    Str(String),
    /// Values in order.
    Arr(Vec<Value>),
    /// Named values, in the order they are written.
    Obj(Vec<(String, Value)>),
    /// A section this run did not have: `null` in JSON, yet its fields (all null) still stand
    /// as CSV columns, so that the header is the same for every run.
    Absent(Vec<(String, Value)>),
}

/// How [`Value::pick`] chooses among numbers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Pick {
    /// The median: the middle value, or the lower middle one of an even count.
    Median,
    /// The smallest value.
    Min,
    /// The largest value.
    Max,
}

impl Value {
    /// An object of `fields`.
    pub(crate) fn obj<const N: usize>(fields: [(&str, Value); N]) -> Value {
        Value::Obj(fields.map(|(k, v)| (k.to_owned(), v)).into())
    }

    /// `fields` if `present`, else the same keys as an absent section.
    pub(crate) fn section<const N: usize>(present: bool, fields: [(&str, Value); N]) -> Value {
        match Value::obj(fields) {
            Value::Obj(fields) if !present => Value::Absent(fields),
            v => v,
        }
    }

    /// A count, or null.
    pub(crate) fn int(v: Option<u64>) -> Value {
        v.map_or(Value::Null, Value::Int)
    }

    /// A number with 3 decimals, or null.
    pub(crate) fn num(v: Option<f64>) -> Value {
        v.map_or(Value::Null, |v| Value::Num(v, 3))
    }

    /// The number this value holds, if finite.
    pub(crate) fn as_f64(&self) -> Option<f64> {
        match *self {
            Value::Int(v) => Some(v as f64),
            Value::Num(v, _) if v.is_finite() => Some(v),
            _ => None,
        }
    }

    /// The value at `path` of an object (one key per level).
    pub(crate) fn at(&self, path: &[&str]) -> Option<&Value> {
        let Some((first, rest)) = path.split_first() else {
            return Some(self);
        };
        match self {
            Value::Obj(fields) | Value::Absent(fields) => fields
                .iter()
                .find(|(k, _)| k == first)
                .and_then(|(_, v)| v.at(rest)),
            _ => None,
        }
    }

    /// Field by field, the median, smallest or largest of `values`, trees of the same keys
    /// (the reports of repeated runs): numbers are compared, nulls are left out (null if every
    /// one is), a name is the first's, a section is present if it is in any of them.
    pub(crate) fn pick(values: &[&Value], how: Pick) -> Value {
        let Some(&first) = values.first() else {
            return Value::Null;
        };
        match first {
            Value::Obj(fields) | Value::Absent(fields) => {
                let present = values.iter().any(|v| matches!(v, Value::Obj(_)));
                let picked = fields
                    .iter()
                    .map(|(key, _)| {
                        let column: Vec<&Value> = values
                            .iter()
                            .filter_map(|v| v.at(&[key.as_str()]))
                            .collect();
                        (key.clone(), Value::pick(&column, how))
                    })
                    .collect();
                if present {
                    Value::Obj(picked)
                } else {
                    Value::Absent(picked)
                }
            }
            Value::Str(_) | Value::Arr(_) => first.clone(),
            Value::Null | Value::Int(_) | Value::Num(..) => {
                let mut numbers: Vec<(f64, &Value)> = values
                    .iter()
                    .filter_map(|&v| Some((v.as_f64()?, v)))
                    .collect();
                numbers.sort_by(|a, b| a.0.total_cmp(&b.0));
                let at = match how {
                    Pick::Median => numbers.len().saturating_sub(1) / 2,
                    Pick::Min => 0,
                    Pick::Max => numbers.len().saturating_sub(1),
                };
                numbers.get(at).map_or(Value::Null, |&(_, v)| v.clone())
            }
        }
    }

    /// Compact JSON.
    pub(crate) fn json(&self) -> String {
        let mut out = String::new();
        self.write_json(&mut out);
        out
    }

    fn write_json(&self, out: &mut String) {
        match self {
            Value::Null | Value::Absent(_) => out.push_str("null"),
            Value::Int(v) => {
                let _ = write!(out, "{v}");
            }
            Value::Num(v, decimals) if v.is_finite() => {
                let _ = write!(out, "{v:.decimals$}");
            }
            Value::Num(..) => out.push_str("null"),
            Value::Str(s) => quote(s, out),
            Value::Arr(items) => {
                out.push('[');
                for (i, item) in items.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    item.write_json(out);
                }
                out.push(']');
            }
            Value::Obj(fields) => {
                out.push('{');
                for (i, (key, value)) in fields.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    quote(key, out);
                    out.push(':');
                    value.write_json(out);
                }
                out.push('}');
            }
        }
    }

    /// The leaves as CSV columns, in order: the path of each (keys, or an item's index, joined
    /// by dots) and its field (empty for null).
    pub(crate) fn columns(&self) -> Vec<(String, String)> {
        let mut out = Vec::new();
        self.flatten("", &mut out);
        out
    }

    fn flatten(&self, prefix: &str, out: &mut Vec<(String, String)>) {
        let field = match self {
            Value::Obj(fields) | Value::Absent(fields) => {
                for (key, value) in fields {
                    let path = if prefix.is_empty() {
                        key.clone()
                    } else {
                        format!("{prefix}.{key}")
                    };
                    value.flatten(&path, out);
                }
                return;
            }
            Value::Arr(items) => {
                for (i, item) in items.iter().enumerate() {
                    let path = if prefix.is_empty() {
                        i.to_string()
                    } else {
                        format!("{prefix}.{i}")
                    };
                    item.flatten(&path, out);
                }
                return;
            }
            Value::Str(s) => csv_field(s),
            // A number's CSV field is its JSON text; null is an empty field.
            Value::Null | Value::Int(_) | Value::Num(..) => match self.json().as_str() {
                "null" => String::new(),
                text => text.to_owned(),
            },
        };
        out.push((prefix.to_owned(), field));
    }
}

/// `s` as a JSON string.
fn quote(s: &str, out: &mut String) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

/// `s` as a CSV field (RFC 4180): quoted, with quotes doubled, if it holds a comma, a quote or
/// a line break.
pub(crate) fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_owned()
    }
}

/// CSV lines of `header` and then `lines`, each line's fields in the header's order.
pub(crate) fn csv(header: &[String], lines: &[Vec<String>]) -> String {
    let mut out = String::new();
    for line in std::iter::once(header).chain(lines.iter().map(Vec::as_slice)) {
        out.push_str(&line.join(","));
        out.push('\n');
    }
    out
}

/// The keys of a JSON object, in the order they were written (the tests read what the bench
/// prints with `serde_json`, whose `preserve_order` keeps it); none for anything else.
#[cfg(test)]
pub(crate) fn keys(v: &serde_json::Value) -> Vec<&str> {
    v.as_object()
        .map_or_else(Vec::new, |o| o.keys().map(String::as_str).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(rate: f64, p99: u64, evicted: Option<u64>, stall: bool) -> Value {
        Value::obj([
            ("server", Value::Str("embedded".into())),
            ("deliveries_per_sec", Value::Num(rate, 1)),
            ("latency_us", Value::obj([("p99", Value::Int(p99))])),
            (
                "stall",
                Value::section(stall, [("evicted", Value::int(evicted))]),
            ),
        ])
    }

    #[test]
    fn json_is_compact_with_nulls_for_what_is_unknown_or_absent() {
        let v = run(1234.56, 90, None, false);
        assert_eq!(
            v.json(),
            r#"{"server":"embedded","deliveries_per_sec":1234.6,"latency_us":{"p99":90},"stall":null}"#
        );
        assert_eq!(Value::Num(f64::NAN, 3).json(), "null");
        assert_eq!(Value::Str("a\"b\\c\n".into()).json(), r#""a\"b\\c\u000a""#);
        assert_eq!(
            serde_json::from_str::<serde_json::Value>(&Value::Str("a\"b\\c\n".into()).json())
                .expect("JSON"),
            serde_json::Value::String("a\"b\\c\n".into())
        );
    }

    #[test]
    fn csv_columns_are_the_same_whether_a_section_is_there_or_not() {
        let absent = run(1.0, 2, None, false).columns();
        let present = run(1.0, 2, Some(3), true).columns();
        let keys = |c: &[(String, String)]| c.iter().map(|(k, _)| k.clone()).collect::<Vec<_>>();
        assert_eq!(keys(&absent), keys(&present));
        assert_eq!(
            keys(&absent),
            [
                "server",
                "deliveries_per_sec",
                "latency_us.p99",
                "stall.evicted"
            ]
        );
        assert_eq!(absent[3].1, "");
        assert_eq!(present[3].1, "3");
    }

    #[test]
    fn a_csv_field_with_a_comma_or_a_quote_is_quoted() {
        assert_eq!(csv_field("embedded x2 nats"), "embedded x2 nats");
        assert_eq!(csv_field("a,b"), "\"a,b\"");
        assert_eq!(csv_field("say \"hi\""), "\"say \"\"hi\"\"\"");
    }

    #[test]
    fn picks_are_field_by_field_and_keep_a_measured_value() {
        let runs = [
            run(300.0, 50, Some(1), true),
            run(100.0, 90, None, true),
            run(200.0, 70, Some(4), true),
            run(400.0, 10, Some(2), true),
        ];
        let runs: Vec<&Value> = runs.iter().collect();
        let median = Value::pick(&runs, Pick::Median);
        // The lower middle of 100, 200, 300, 400; of 10, 50, 70, 90; of 1, 2, 4 (null left out).
        assert_eq!(
            median.at(&["deliveries_per_sec"]),
            Some(&Value::Num(200.0, 1))
        );
        assert_eq!(median.at(&["latency_us", "p99"]), Some(&Value::Int(50)));
        assert_eq!(median.at(&["stall", "evicted"]), Some(&Value::Int(2)));
        let min = Value::pick(&runs, Pick::Min);
        let max = Value::pick(&runs, Pick::Max);
        assert_eq!(min.at(&["latency_us", "p99"]), Some(&Value::Int(10)));
        assert_eq!(max.at(&["latency_us", "p99"]), Some(&Value::Int(90)));
        assert_eq!(max.at(&["server"]), Some(&Value::Str("embedded".into())));
        let nothing = [Value::Null, Value::Num(f64::NAN, 3)];
        let nothing: Vec<&Value> = nothing.iter().collect();
        assert_eq!(Value::pick(&nothing, Pick::Median), Value::Null);
    }

    #[test]
    fn a_section_is_picked_present_if_any_run_had_it() {
        let runs = [run(1.0, 1, None, false), run(2.0, 2, Some(7), true)];
        let runs: Vec<&Value> = runs.iter().collect();
        let max = Value::pick(&runs, Pick::Max);
        assert!(matches!(max.at(&["stall"]), Some(Value::Obj(_))));
        let none = [run(1.0, 1, None, false)];
        let none: Vec<&Value> = none.iter().collect();
        assert!(matches!(
            Value::pick(&none, Pick::Median).at(&["stall"]),
            Some(Value::Absent(_))
        ));
    }
}
