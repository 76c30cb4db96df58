//! Cell values in JSON, both ways.
//!
//! Out (query results): the same natural form as the JSON lines export —
//! integers and reals as numbers (infinities as `"inf"`/`"-inf"`), bools,
//! text as strings, bytes as padded standard base64, timestamps as integer
//! microseconds since 1970, json columns as the document itself.
//!
//! In (statement parameters): `null`, `true`/`false`, integers, other
//! numbers as reals, strings as text (a timestamp column also takes
//! RFC 3339 text), arrays and objects as json documents. Bytes cannot be
//! passed as a parameter yet.

use basic_proto::Value;
use data_encoding::BASE64;
use serde_json::Value as Json;

/// A cell value as JSON.
pub fn to_json(value: &Value) -> Json {
    match value {
        Value::Null => Json::Null,
        Value::Integer(i) | Value::Timestamp(i) => Json::from(*i),
        Value::Real(r) => match serde_json::Number::from_f64(*r) {
            Some(number) => Json::Number(number),
            None if *r > 0.0 => Json::from("inf"),
            None if *r < 0.0 => Json::from("-inf"),
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

/// A statement parameter from JSON.
pub fn from_json(json: &Json) -> Result<Value, String> {
    Ok(match json {
        Json::Null => Value::Null,
        Json::Bool(b) => Value::Bool(*b),
        Json::Number(number) => match (number.as_i64(), number.as_f64()) {
            (Some(i), _) => Value::Integer(i),
            (None, Some(_)) if number.is_u64() => {
                return Err(format!("parameter {number} is out of the 64-bit integer range"));
            }
            (None, Some(r)) => Value::Real(r),
            (None, None) => return Err(format!("parameter {number} is not a number Basic keeps")),
        },
        Json::String(text) => Value::Text(text.clone()),
        Json::Array(_) | Json::Object(_) => Value::Json(json.to_string()),
    })
}

/// Statement parameters from JSON; the error names the parameter.
pub fn params_from_json(params: &[Json]) -> Result<Vec<Value>, String> {
    params
        .iter()
        .enumerate()
        .map(|(i, p)| from_json(p).map_err(|e| format!("parameter {}: {e}", i + 1)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_map_to_natural_json() {
        assert_eq!(to_json(&Value::Bytes(vec![1, 2, 3])), Json::from("AQID"));
        assert_eq!(to_json(&Value::Timestamp(5)), Json::from(5));
        assert_eq!(to_json(&Value::Real(f64::INFINITY)), Json::from("inf"));
        assert_eq!(to_json(&Value::Json(r#"{"a":[1]}"#.into())), serde_json::json!({"a": [1]}));
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
        assert!(params_from_json(&[Json::from(u64::MAX)]).unwrap_err().starts_with("parameter 1"));
    }
}
