//! Names, cell values, column types and row keys.
//!
//! Implements `protocol-spec/wire-format.md` §2 (Values).

use std::fmt;
use std::sync::Arc;

use ciborium::Value as Cbor;

use crate::codec::{self, DecodeError};
use crate::json::check_json;

/// Longest table, column or scope name, in bytes.
pub const MAX_NAME_LEN: usize = 64;
/// Largest text, bytes or JSON value, in bytes.
pub const MAX_VALUE_LEN: usize = 256 * 1024;
/// Most columns in a primary key.
pub const MAX_KEY_PARTS: usize = 8;

/// Value type tag of a timestamp in its CBOR array form.
const TIMESTAMP_TAG: u64 = 1;
/// Value type tag of a JSON document in its CBOR array form.
const JSON_TAG: u64 = 2;

/// A table, column or scope name: 1–64 bytes of `a-z 0-9 _ .`, starting
/// with a letter or `_`, with no empty dot-separated segment. Shared, so a
/// clone (one per cell a row state keeps) copies no text.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Name(Arc<str>);

/// Why a name was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid name {name:?}: {reason}")]
pub struct NameError {
    /// The name given (cut to 80 characters).
    pub name: String,
    /// What rule it breaks.
    pub reason: &'static str,
}

impl Name {
    /// Validates `name`.
    pub fn new(name: impl AsRef<str>) -> Result<Self, NameError> {
        let name = name.as_ref();
        let fail = |reason| Err(NameError { name: name.chars().take(80).collect(), reason });
        if name.is_empty() || name.len() > MAX_NAME_LEN {
            return fail("must be 1 to 64 bytes long");
        }
        if !name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'.')
        {
            return fail("may only contain lowercase letters, digits, '_' and '.'");
        }
        if name
            .split('.')
            .any(|segment| !segment.starts_with(|c: char| c.is_ascii_lowercase() || c == '_'))
        {
            return fail("each dot-separated part must start with a letter or '_'");
        }
        Ok(Self(Arc::from(name)))
    }

    /// The name as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub(crate) fn from_cbor(value: Cbor, field: &'static str) -> Result<Self, DecodeError> {
        let text = codec::as_text(value, field, 1, MAX_NAME_LEN)?;
        Name::new(text).map_err(|e| DecodeError::InvalidValue { field, reason: e.reason.into() })
    }
}

impl fmt::Display for Name {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for Name {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.0)
    }
}

/// A cell value.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// SQL NULL.
    Null,
    /// A signed 64-bit integer.
    Integer(i64),
    /// A 64-bit float; never NaN.
    Real(f64),
    /// A boolean.
    Bool(bool),
    /// UTF-8 text.
    Text(String),
    /// Raw bytes.
    Bytes(Vec<u8>),
    /// Microseconds since 1970-01-01T00:00:00Z.
    Timestamp(i64),
    /// A JSON document, as well-formed JSON text.
    Json(String),
}

impl Value {
    /// The value as a CBOR data item.
    pub fn to_cbor(&self) -> Cbor {
        match self {
            Value::Null => Cbor::Null,
            Value::Integer(i) => Cbor::Integer((*i).into()),
            Value::Real(r) => Cbor::Float(*r),
            Value::Bool(b) => Cbor::Bool(*b),
            Value::Text(t) => Cbor::Text(t.clone()),
            Value::Bytes(b) => Cbor::Bytes(b.clone()),
            Value::Timestamp(t) => {
                Cbor::Array(vec![Cbor::Integer(TIMESTAMP_TAG.into()), Cbor::Integer((*t).into())])
            }
            Value::Json(j) => {
                Cbor::Array(vec![Cbor::Integer(JSON_TAG.into()), Cbor::Text(j.clone())])
            }
        }
    }

    /// Reads a value, checking sizes, NaN and JSON well-formedness.
    pub fn from_cbor(value: Cbor, field: &'static str) -> Result<Self, DecodeError> {
        Ok(match value {
            Cbor::Null => Value::Null,
            Cbor::Integer(i) => Value::Integer(as_i64(i, field)?),
            Cbor::Float(r) if r.is_nan() => {
                return Err(DecodeError::InvalidValue {
                    field,
                    reason: "NaN is not a value".into(),
                });
            }
            Cbor::Float(r) => Value::Real(r),
            Cbor::Bool(b) => Value::Bool(b),
            Cbor::Text(t) => Value::Text(codec::as_text(Cbor::Text(t), field, 0, MAX_VALUE_LEN)?),
            Cbor::Bytes(b) => {
                Value::Bytes(codec::as_bytes(Cbor::Bytes(b), field, 0, MAX_VALUE_LEN)?)
            }
            Cbor::Array(items) => {
                let mut fields = codec::Fields::new(Cbor::Array(items), field, 2)?;
                match fields.uint(field)? {
                    TIMESTAMP_TAG => match fields.next(field)? {
                        Cbor::Integer(i) => Value::Timestamp(as_i64(i, field)?),
                        _ => {
                            return Err(DecodeError::WrongType {
                                field,
                                expected: "integer timestamp",
                            });
                        }
                    },
                    JSON_TAG => {
                        let json = fields.text(field, 0, MAX_VALUE_LEN)?;
                        if let Err(e) = check_json(&json) {
                            return Err(DecodeError::InvalidValue {
                                field,
                                reason: format!("not JSON: {e}"),
                            });
                        }
                        Value::Json(json)
                    }
                    tag => {
                        return Err(DecodeError::InvalidValue {
                            field,
                            reason: format!("unknown value tag {tag}"),
                        });
                    }
                }
            }
            _ => return Err(DecodeError::WrongType { field, expected: "a value" }),
        })
    }

    /// Deterministic CBOR encoding, the final tie-break between two writes
    /// with equal stamps.
    pub fn encode(&self) -> Vec<u8> {
        codec::encode_value(&self.to_cbor())
    }

    /// Bytes of a text, JSON or bytes payload (checked against
    /// [`MAX_VALUE_LEN`]); 0 for the fixed-size types.
    pub fn payload_len(&self) -> usize {
        match self {
            Value::Text(t) | Value::Json(t) => t.len(),
            Value::Bytes(b) => b.len(),
            _ => 0,
        }
    }

    /// The value's type, or `None` for NULL.
    pub fn column_type(&self) -> Option<ColumnType> {
        Some(match self {
            Value::Null => return None,
            Value::Integer(_) => ColumnType::Integer,
            Value::Real(_) => ColumnType::Real,
            Value::Bool(_) => ColumnType::Bool,
            Value::Text(_) => ColumnType::Text,
            Value::Bytes(_) => ColumnType::Bytes,
            Value::Timestamp(_) => ColumnType::Timestamp,
            Value::Json(_) => ColumnType::Json,
        })
    }
}

fn as_i64(i: ciborium::value::Integer, field: &'static str) -> Result<i64, DecodeError> {
    i64::try_from(i128::from(i)).map_err(|_| DecodeError::InvalidValue {
        field,
        reason: "integer out of 64-bit range".into(),
    })
}

/// The type of a column.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum ColumnType {
    /// UTF-8 text.
    Text,
    /// Signed 64-bit integer.
    Integer,
    /// 64-bit float.
    Real,
    /// Boolean.
    Bool,
    /// Raw bytes.
    Bytes,
    /// Microseconds since the Unix epoch.
    Timestamp,
    /// A JSON document.
    Json,
    /// The primary key of a row in `table`, which must have a one-column key.
    Reference {
        /// The referenced table.
        table: Name,
    },
}

impl fmt::Display for ColumnType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ColumnType::Text => f.write_str("text"),
            ColumnType::Integer => f.write_str("integer"),
            ColumnType::Real => f.write_str("real"),
            ColumnType::Bool => f.write_str("bool"),
            ColumnType::Bytes => f.write_str("bytes"),
            ColumnType::Timestamp => f.write_str("timestamp"),
            ColumnType::Json => f.write_str("json"),
            ColumnType::Reference { table } => write!(f, "reference to {table}"),
        }
    }
}

/// A column's type and whether it may hold NULL.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ColumnDef {
    /// The type of non-null values.
    pub ty: ColumnType,
    /// Whether NULL is allowed.
    pub nullable: bool,
}

/// Why a value does not fit a column.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TypeError {
    /// NULL in a column that does not allow it.
    #[error("NULL is not allowed in a non-nullable {expected} column")]
    NotNullable {
        /// The column's type.
        expected: ColumnType,
    },
    /// A value of another type.
    #[error("expected {expected}, got {found}")]
    Mismatch {
        /// The column's type.
        expected: ColumnType,
        /// The value's type.
        found: ColumnType,
    },
}

impl ColumnDef {
    /// Checks that `value` may be stored in this column. A reference holds an
    /// integer, text or bytes key; whether the row exists is not checked here.
    pub fn check(&self, value: &Value) -> Result<(), TypeError> {
        let Some(found) = value.column_type() else {
            return if self.nullable {
                Ok(())
            } else {
                Err(TypeError::NotNullable { expected: self.ty.clone() })
            };
        };
        let fits = match &self.ty {
            ColumnType::Reference { .. } => {
                matches!(found, ColumnType::Integer | ColumnType::Text | ColumnType::Bytes)
            }
            ty => *ty == found,
        };
        if fits { Ok(()) } else { Err(TypeError::Mismatch { expected: self.ty.clone(), found }) }
    }
}

/// One column of a primary key.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum KeyPart {
    /// An integer key.
    Integer(i64),
    /// A text key.
    Text(String),
    /// A bytes key (for example a UUID).
    Bytes(Vec<u8>),
}

impl KeyPart {
    /// The key part as a cell value.
    pub fn to_value(&self) -> Value {
        match self {
            KeyPart::Integer(i) => Value::Integer(*i),
            KeyPart::Text(t) => Value::Text(t.clone()),
            KeyPart::Bytes(b) => Value::Bytes(b.clone()),
        }
    }

    /// A cell value as a key part, if it has a key type.
    pub fn from_value(value: Value) -> Option<Self> {
        match value {
            Value::Integer(i) => Some(KeyPart::Integer(i)),
            Value::Text(t) => Some(KeyPart::Text(t)),
            Value::Bytes(b) => Some(KeyPart::Bytes(b)),
            _ => None,
        }
    }
}

/// A row's primary key: 1–8 parts.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RowKey(Vec<KeyPart>);

impl RowKey {
    /// A key of `parts`; `None` if there are none or more than 8.
    pub fn new(parts: Vec<KeyPart>) -> Option<Self> {
        (1..=MAX_KEY_PARTS).contains(&parts.len()).then_some(Self(parts))
    }

    /// A one-column key.
    pub fn single(part: KeyPart) -> Self {
        Self(vec![part])
    }

    /// The parts, in key-column order.
    pub fn parts(&self) -> &[KeyPart] {
        &self.0
    }

    /// The key as a CBOR data item.
    pub fn to_cbor(&self) -> Cbor {
        Cbor::Array(self.0.iter().map(|part| part.to_value().to_cbor()).collect())
    }

    /// Deterministic CBOR encoding, usable as a storage key.
    pub fn encode(&self) -> Vec<u8> {
        codec::encode_value(&self.to_cbor())
    }

    /// Reads a key.
    pub fn from_cbor(value: Cbor, field: &'static str) -> Result<Self, DecodeError> {
        let items = codec::as_array(value, field, 1, MAX_KEY_PARTS)?;
        let parts = items
            .into_iter()
            .map(|item| {
                KeyPart::from_value(Value::from_cbor(item, field)?)
                    .ok_or(DecodeError::WrongType { field, expected: "integer, text or bytes key" })
            })
            .collect::<Result<_, _>>()?;
        Ok(Self(parts))
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::codec::parse;
    use proptest::prelude::*;

    pub(crate) fn any_value() -> impl Strategy<Value = Value> {
        prop_oneof![
            Just(Value::Null),
            any::<i64>().prop_map(Value::Integer),
            any::<f64>().prop_filter("not NaN", |r| !r.is_nan()).prop_map(Value::Real),
            any::<bool>().prop_map(Value::Bool),
            ".{0,20}".prop_map(Value::Text),
            proptest::collection::vec(any::<u8>(), 0..20).prop_map(Value::Bytes),
            any::<i64>().prop_map(Value::Timestamp),
            Just(Value::Json(r#"{"a":[1,2,null]}"#.into())),
        ]
    }

    fn round_trip(value: &Value) -> Result<Value, DecodeError> {
        let bytes = value.encode();
        Value::from_cbor(parse(&bytes, "value", usize::MAX)?, "value")
    }

    proptest! {
        #[test]
        fn every_value_round_trips(value in any_value()) {
            let back = round_trip(&value).unwrap();
            // Compare encodings: -0.0 == 0.0 but they must stay distinct.
            prop_assert_eq!(back.encode(), value.encode());
            prop_assert_eq!(back, value);
        }

        #[test]
        fn names_follow_the_grammar(name in "[a-z_][a-z0-9_]{0,20}(\\.[a-z_][a-z0-9_]{0,20})?") {
            prop_assert!(Name::new(name).is_ok());
        }
    }

    #[test]
    fn bad_names_are_refused() {
        for bad in ["", "Users", "1abc", "a..b", ".a", "a.", "a-b", &"x".repeat(65)] {
            assert!(Name::new(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn nan_and_bad_json_are_refused() {
        let nan = codec::encode_value(&Cbor::Float(f64::NAN));
        assert!(matches!(
            Value::from_cbor(parse(&nan, "v", 64).unwrap(), "v"),
            Err(DecodeError::InvalidValue { .. })
        ));
        let json = Value::Json("{not json".into()).encode();
        assert!(matches!(
            Value::from_cbor(parse(&json, "v", 64).unwrap(), "v"),
            Err(DecodeError::InvalidValue { .. })
        ));
    }

    #[test]
    fn type_checks() {
        let int = ColumnDef { ty: ColumnType::Integer, nullable: false };
        assert_eq!(int.check(&Value::Integer(1)), Ok(()));
        assert_eq!(
            int.check(&Value::Text("1".into())),
            Err(TypeError::Mismatch { expected: ColumnType::Integer, found: ColumnType::Text })
        );
        assert_eq!(
            int.check(&Value::Null),
            Err(TypeError::NotNullable { expected: ColumnType::Integer })
        );
        let reference = ColumnDef {
            ty: ColumnType::Reference { table: Name::new("todo.lists").unwrap() },
            nullable: true,
        };
        assert_eq!(reference.check(&Value::Text("l1".into())), Ok(()));
        assert_eq!(reference.check(&Value::Null), Ok(()));
        assert!(reference.check(&Value::Real(1.0)).is_err());
    }
}
