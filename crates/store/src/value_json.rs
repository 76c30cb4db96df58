//! A cell value's JSON form, both ways: the one form of query results, of
//! statement parameters, and of the JSON lines export and import.
//!
//! Out: integers and reals as numbers (infinities as `"inf"`/`"-inf"`),
//! bools, text as strings, bytes as padded standard base64, timestamps as
//! integer microseconds since 1970, json columns as the document itself.
//!
//! In, untyped ([`from_json`], statement parameters): `null`,
//! `true`/`false`, integers, other numbers as reals, strings as text (a
//! timestamp column also takes RFC 3339 text), arrays and objects as json
//! documents. Bytes cannot be passed as a parameter yet.
//!
//! In, typed by the column (`decode`, import): each type from its form
//! above, a json document kept as written.

use std::fmt::Write as _;

use basic_proto::json::check_json;
use basic_proto::value::MAX_VALUE_LEN;
use basic_proto::{ColumnDef, ColumnType, Value};
use data_encoding::BASE64;
use serde_json::{Number, Value as Json};

/// A cell value as JSON.
pub fn to_json(value: &Value) -> Json {
    match value {
        Value::Null => Json::Null,
        Value::Integer(i) | Value::Timestamp(i) => Json::from(*i),
        Value::Real(r) => match Number::from_f64(*r) {
            Some(number) => Json::Number(number),
            None if *r > 0.0 => Json::from("inf"),
            None if *r < 0.0 => Json::from("-inf"),
            // A value is never NaN; SQLite would have made it NULL anyway.
            None => Json::Null,
        },
        Value::Bool(b) => Json::Bool(*b),
        Value::Text(text) => Json::String(text.clone()),
        Value::Bytes(bytes) => Json::String(BASE64.encode(bytes)),
        // Documents too large for serde_json's numbers stay as their text.
        Value::Json(text) => {
            serde_json::from_str(text).unwrap_or_else(|_| Json::from(text.clone()))
        }
    }
}

/// Appends a cell value in its JSON form as one line's text: as
/// [`to_json`], except that a json document is written as stored (key
/// order, repeated keys and the spelling of numbers kept), its line breaks
/// between tokens as spaces and the whitespace around it dropped.
pub(crate) fn write_value(out: &mut String, value: &Value) {
    match value {
        Value::Json(json) => {
            // Stored JSON follows the protocol's rule, so a line break can
            // only be whitespace between tokens. Checked anyway: text that
            // is not JSON is written as a string rather than break the line.
            if check_json(json).is_ok() {
                out.push_str(&json.trim_matches(JSON_WHITESPACE).replace(['\n', '\r'], " "));
            } else {
                let _ = write!(out, "{}", Json::from(json.as_str()));
            }
        }
        other => {
            let _ = write!(out, "{}", to_json(other));
        }
    }
}

/// Appends `text` as a JSON string.
pub(crate) fn write_string(out: &mut String, text: &str) {
    // `str` always serializes; the fallback only keeps the line JSON.
    out.push_str(&serde_json::to_string(text).unwrap_or_else(|_| "null".into()));
}

/// JSON's whitespace.
pub(crate) const JSON_WHITESPACE: [char; 4] = [' ', '\t', '\n', '\r'];

/// Why a JSON value cannot be a statement parameter.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParamError {
    /// An integer beyond `i64`.
    #[error("parameter {0} is out of the 64-bit integer range")]
    OutOfRange(Number),
    /// A number that is neither an `i64` nor an `f64`.
    #[error("parameter {0} is not a number Basic keeps")]
    NotANumber(Number),
    /// One parameter of a list is refused.
    #[error("parameter {position}: {error}")]
    At {
        /// The parameter's position, from 1.
        position: usize,
        /// Why it is refused.
        error: Box<ParamError>,
    },
}

/// A statement parameter from JSON.
pub fn from_json(json: &Json) -> Result<Value, ParamError> {
    Ok(match json {
        Json::Null => Value::Null,
        Json::Bool(b) => Value::Bool(*b),
        Json::Number(number) => match (number.as_i64(), number.as_f64()) {
            (Some(i), _) => Value::Integer(i),
            (None, Some(_)) if number.is_u64() => {
                return Err(ParamError::OutOfRange(number.clone()));
            }
            (None, Some(r)) => Value::Real(r),
            (None, None) => return Err(ParamError::NotANumber(number.clone())),
        },
        Json::String(text) => Value::Text(text.clone()),
        Json::Array(_) | Json::Object(_) => Value::Json(json.to_string()),
    })
}

/// Statement parameters from JSON; the error names the parameter.
pub fn params_from_json(params: &[Json]) -> Result<Vec<Value>, ParamError> {
    params
        .iter()
        .enumerate()
        .map(|(i, p)| {
            from_json(p).map_err(|error| ParamError::At { position: i + 1, error: Box::new(error) })
        })
        .collect()
}

/// A cell of column `def` from its JSON text `raw` (one whole JSON value,
/// without surrounding whitespace); on a mismatch, what the text is.
pub(crate) fn decode(raw: &str, def: &ColumnDef) -> Result<Value, String> {
    let mismatch = || Err(describe(raw));
    if raw == "null" {
        return match def.ty {
            _ if def.nullable => Ok(Value::Null),
            ColumnType::Json => Ok(Value::Json(raw.to_owned())),
            _ => mismatch(),
        };
    }
    let string = || serde_json::from_str::<String>(raw).ok();
    let value = match &def.ty {
        ColumnType::Integer | ColumnType::Timestamp => {
            let Ok(i) = serde_json::from_str::<i64>(raw) else { return mismatch() };
            if def.ty == ColumnType::Integer { Value::Integer(i) } else { Value::Timestamp(i) }
        }
        ColumnType::Real if raw.starts_with('"') => match string().as_deref() {
            Some("inf") => Value::Real(f64::INFINITY),
            Some("-inf") => Value::Real(f64::NEG_INFINITY),
            _ => return mismatch(),
        },
        ColumnType::Real => match serde_json::from_str::<f64>(raw) {
            Ok(r) if !r.is_nan() => Value::Real(r),
            _ => return mismatch(),
        },
        ColumnType::Bool => match raw {
            "true" => Value::Bool(true),
            "false" => Value::Bool(false),
            _ => return mismatch(),
        },
        ColumnType::Text => match string() {
            Some(text) => Value::Text(text),
            None => return mismatch(),
        },
        ColumnType::Bytes => match string().map(|text| BASE64.decode(text.as_bytes()).ok()) {
            Some(Some(bytes)) => Value::Bytes(bytes),
            Some(None) => return Err(format!("{} (not base64)", describe(raw))),
            None => return mismatch(),
        },
        ColumnType::Json => match check_json(raw) {
            Ok(()) => Value::Json(raw.to_owned()),
            Err(error) => return Err(format!("text that is not JSON ({error})")),
        },
        // The catalog resolves references to their key's type.
        ColumnType::Reference { .. } => return mismatch(),
    };
    let len = value.payload_len();
    if len > MAX_VALUE_LEN {
        return Err(format!("a value of {len} bytes (the most is {MAX_VALUE_LEN})"));
    }
    Ok(value)
}

/// What kind of JSON value `raw` is, with a short excerpt.
fn describe(raw: &str) -> String {
    let kind = match raw.bytes().next() {
        Some(b'"') => "string",
        Some(b'-' | b'0'..=b'9') => "number",
        Some(b't' | b'f') => "boolean",
        Some(b'n') => "null",
        Some(b'[') => "array",
        Some(b'{') => "object",
        _ => "value",
    };
    if raw == "null" { kind.to_owned() } else { format!("{kind} {}", excerpt(raw)) }
}

/// `raw`, cut to 40 characters.
pub(crate) fn excerpt(raw: &str) -> String {
    if raw.chars().count() > 40 {
        format!("{}…", raw.chars().take(40).collect::<String>())
    } else {
        raw.to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn values_map_to_natural_json() {
        assert_eq!(to_json(&Value::Bytes(vec![1, 2, 3])), Json::from("AQID"));
        assert_eq!(to_json(&Value::Timestamp(5)), Json::from(5));
        assert_eq!(to_json(&Value::Real(f64::INFINITY)), Json::from("inf"));
        assert_eq!(to_json(&Value::Real(f64::NEG_INFINITY)), Json::from("-inf"));
        assert_eq!(to_json(&Value::Json(r#"{"a":[1]}"#.into())), serde_json::json!({"a": [1]}));
        assert_eq!(to_json(&Value::Json("[1e400]".into())), Json::from("[1e400]"));
    }

    #[test]
    fn params_come_from_json() {
        let params = serde_json::json!([null, true, 3, 2.5, "x", {"k": 1}]);
        let Json::Array(params) = params else { unreachable!() };
        assert_eq!(
            params_from_json(&params).unwrap(),
            [
                Value::Null,
                Value::Bool(true),
                Value::Integer(3),
                Value::Real(2.5),
                Value::Text("x".into()),
                Value::Json(r#"{"k":1}"#.into()),
            ]
        );
        assert_eq!(
            params_from_json(&[Json::Null, Json::from(u64::MAX)]).unwrap_err().to_string(),
            "parameter 2: parameter 18446744073709551615 is out of the 64-bit integer range"
        );
    }

    #[test]
    fn values_round_trip_through_their_json_form() {
        let cases = [
            (ColumnType::Integer, Value::Integer(i64::MIN)),
            (ColumnType::Real, Value::Real(0.1)),
            (ColumnType::Real, Value::Real(-0.0)),
            (ColumnType::Real, Value::Real(1e300)),
            (ColumnType::Real, Value::Real(f64::NEG_INFINITY)),
            (ColumnType::Bool, Value::Bool(true)),
            (ColumnType::Text, Value::Text("line\nbreak \"quoted\" \u{1} \u{8} é 🦀".into())),
            (ColumnType::Bytes, Value::Bytes((0..=255).collect())),
            (ColumnType::Timestamp, Value::Timestamp(-1)),
            (ColumnType::Json, Value::Json("[1e400, {\"a\":1,\"a\":2}]".into())),
            (ColumnType::Json, Value::Json("null".into())),
        ];
        for (ty, value) in cases {
            let mut text = String::new();
            write_value(&mut text, &value);
            let back = decode(&text, &ColumnDef { ty, nullable: false }).unwrap();
            assert_eq!(back.encode(), value.encode(), "{text}");
        }
        let mut text = String::new();
        write_value(&mut text, &Value::Json("{\n  \"a\": [1,\r\n 2]\n}\n".into()));
        assert_eq!(text, "{   \"a\": [1,   2] }");
    }

    fn any_value() -> impl Strategy<Value = (ColumnType, Value)> {
        prop_oneof![
            any::<i64>().prop_map(|i| (ColumnType::Integer, Value::Integer(i))),
            any::<f64>()
                .prop_filter("not NaN", |r| !r.is_nan())
                .prop_map(|r| (ColumnType::Real, Value::Real(r))),
            any::<bool>().prop_map(|b| (ColumnType::Bool, Value::Bool(b))),
            any::<String>().prop_map(|t| (ColumnType::Text, Value::Text(t))),
            proptest::collection::vec(any::<u8>(), 0..64)
                .prop_map(|b| (ColumnType::Bytes, Value::Bytes(b))),
            any::<i64>().prop_map(|t| (ColumnType::Timestamp, Value::Timestamp(t))),
        ]
    }

    proptest! {
        #[test]
        fn values_round_trip((ty, value) in any_value(), nullable in any::<bool>()) {
            let mut text = String::new();
            write_value(&mut text, &value);
            let back = decode(&text, &ColumnDef { ty, nullable }).unwrap();
            prop_assert_eq!(back.encode(), value.encode());
            // The line form and the query form are the same JSON.
            let line: Json = serde_json::from_str(&text).unwrap();
            prop_assert_eq!(line, to_json(&value));
        }
    }
}
