//! The exact rule for JSON cell values (`protocol-spec/wire-format.md` §2.2).
//!
//! Whether a commit's content is valid must not depend on which JSON
//! library, version or feature flags a replica was built with, so the rule
//! is written out here rather than borrowed: RFC 8259 grammar; strings
//! without raw control characters, with only the RFC's escapes and with
//! every `\u` surrogate escape paired; numbers checked by grammar only (any
//! magnitude); at most [`MAX_JSON_DEPTH`] nested arrays and objects;
//! duplicate object keys allowed.

/// Deepest nesting of arrays and objects allowed in a JSON value.
pub const MAX_JSON_DEPTH: usize = 127;

/// Why a text is not an acceptable JSON value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid JSON at byte {at}: {reason}")]
pub struct JsonError {
    /// Byte offset of the problem.
    pub at: usize,
    /// What is wrong there.
    pub reason: &'static str,
}

/// Checks `text` against the rule above.
pub fn check_json(text: &str) -> Result<(), JsonError> {
    let mut parser = Parser { bytes: text.as_bytes(), at: 0 };
    parser.whitespace();
    parser.value()?;
    parser.whitespace();
    if parser.at != parser.bytes.len() {
        return parser.fail("text after the JSON value");
    }
    Ok(())
}

struct Parser<'a> {
    bytes: &'a [u8],
    at: usize,
}

/// What the value parser is inside of, innermost last.
#[derive(Clone, Copy, PartialEq)]
enum Open {
    Array,
    Object,
}

impl Parser<'_> {
    fn fail<T>(&self, reason: &'static str) -> Result<T, JsonError> {
        Err(JsonError { at: self.at, reason })
    }

    fn peek(&self) -> Option<u8> {
        self.bytes.get(self.at).copied()
    }

    fn whitespace(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t' | b'\n' | b'\r')) {
            self.at += 1;
        }
    }

    fn expect(&mut self, byte: u8, reason: &'static str) -> Result<(), JsonError> {
        if self.peek() == Some(byte) {
            self.at += 1;
            Ok(())
        } else {
            self.fail(reason)
        }
    }

    /// One value, iteratively, so nesting never grows the call stack.
    fn value(&mut self) -> Result<(), JsonError> {
        let mut stack: Vec<Open> = Vec::new();
        loop {
            // At the start of a value.
            self.whitespace();
            match self.peek() {
                Some(b'[' | b'{') => {
                    let open = if self.peek() == Some(b'[') { Open::Array } else { Open::Object };
                    if stack.len() == MAX_JSON_DEPTH {
                        return self.fail("nested deeper than 127 levels");
                    }
                    self.at += 1;
                    self.whitespace();
                    let close = if open == Open::Array { b']' } else { b'}' };
                    if self.peek() == Some(close) {
                        self.at += 1;
                    } else {
                        stack.push(open);
                        if open == Open::Object {
                            self.member_name()?;
                        }
                        continue;
                    }
                }
                Some(b'"') => self.string()?,
                Some(b'-' | b'0'..=b'9') => self.number()?,
                Some(b't') => self.literal(b"true")?,
                Some(b'f') => self.literal(b"false")?,
                Some(b'n') => self.literal(b"null")?,
                Some(_) => return self.fail("expected a value"),
                None => return self.fail("unexpected end of text"),
            }
            // After a complete value: close containers or move to the next item.
            loop {
                let Some(&open) = stack.last() else { return Ok(()) };
                self.whitespace();
                let close = if open == Open::Array { b']' } else { b'}' };
                match self.peek() {
                    Some(b',') => {
                        self.at += 1;
                        if open == Open::Object {
                            self.whitespace();
                            self.member_name()?;
                        }
                        break;
                    }
                    Some(byte) if byte == close => {
                        self.at += 1;
                        stack.pop();
                    }
                    _ => return self.fail("expected ',' or the end of the array or object"),
                }
            }
        }
    }

    /// An object member's name and its colon.
    fn member_name(&mut self) -> Result<(), JsonError> {
        if self.peek() != Some(b'"') {
            return self.fail("expected a member name");
        }
        self.string()?;
        self.whitespace();
        self.expect(b':', "expected ':'")
    }

    fn literal(&mut self, word: &'static [u8]) -> Result<(), JsonError> {
        if self.bytes[self.at..].starts_with(word) {
            self.at += word.len();
            Ok(())
        } else {
            self.fail("unknown literal")
        }
    }

    fn digits(&mut self) -> usize {
        let start = self.at;
        while matches!(self.peek(), Some(b'0'..=b'9')) {
            self.at += 1;
        }
        self.at - start
    }

    fn number(&mut self) -> Result<(), JsonError> {
        if self.peek() == Some(b'-') {
            self.at += 1;
        }
        match self.peek() {
            Some(b'0') => self.at += 1,
            Some(b'1'..=b'9') => {
                self.digits();
            }
            _ => return self.fail("expected a digit"),
        }
        if self.peek() == Some(b'.') {
            self.at += 1;
            if self.digits() == 0 {
                return self.fail("expected a digit after '.'");
            }
        }
        if matches!(self.peek(), Some(b'e' | b'E')) {
            self.at += 1;
            if matches!(self.peek(), Some(b'+' | b'-')) {
                self.at += 1;
            }
            if self.digits() == 0 {
                return self.fail("expected a digit in the exponent");
            }
        }
        Ok(())
    }

    fn hex4(&mut self) -> Result<u16, JsonError> {
        let digits = self
            .bytes
            .get(self.at..self.at + 4)
            .ok_or(JsonError { at: self.at, reason: "short \\u escape" })?;
        let mut value = 0u16;
        for &d in digits {
            let nibble = (d as char)
                .to_digit(16)
                .ok_or(JsonError { at: self.at, reason: "bad \\u escape" })?;
            value = value << 4 | nibble as u16;
        }
        self.at += 4;
        Ok(value)
    }

    fn string(&mut self) -> Result<(), JsonError> {
        self.at += 1; // the opening quote
        loop {
            match self.peek() {
                None => return self.fail("unterminated string"),
                Some(b'"') => {
                    self.at += 1;
                    return Ok(());
                }
                Some(0..=0x1f) => return self.fail("raw control character in a string"),
                Some(b'\\') => {
                    self.at += 1;
                    match self.peek() {
                        Some(b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't') => {
                            self.at += 1
                        }
                        Some(b'u') => {
                            self.at += 1;
                            let unit = self.hex4()?;
                            if (0xdc00..=0xdfff).contains(&unit) {
                                return self.fail("unpaired low surrogate escape");
                            }
                            if (0xd800..=0xdbff).contains(&unit) {
                                let low = if self.bytes[self.at..].starts_with(b"\\u") {
                                    self.at += 2;
                                    self.hex4()?
                                } else {
                                    0
                                };
                                if !(0xdc00..=0xdfff).contains(&low) {
                                    return self.fail("unpaired high surrogate escape");
                                }
                            }
                        }
                        _ => return self.fail("unknown escape"),
                    }
                }
                // Input is a Rust string: multi-byte characters are valid UTF-8.
                Some(_) => self.at += 1,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn accepts_rfc_8259_values() {
        for ok in [
            "null",
            " true ",
            "false",
            "0",
            "-0",
            "12.5e-3",
            "1E+2",
            "1e400",
            "-1e-400",
            "\"\"",
            r#""a\"\\\/\b\f\n\r\t\u00e9""#,
            r#""\ud83d\ude00""#,
            "\"é✓\"",
            "[]",
            "{}",
            r#"{"a":1,"a":[2,{"b":null}]}"#,
            "[1, \"x\", [], {}]",
        ] {
            assert_eq!(check_json(ok), Ok(()), "{ok}");
        }
    }

    #[test]
    fn refuses_everything_else() {
        for bad in [
            "",
            " ",
            "nul",
            "01",
            "1.",
            ".5",
            "1e",
            "-",
            "+1",
            "NaN",
            "[1,]",
            "{\"a\"}",
            "{a:1}",
            "[1 2]",
            "\"abc",
            "\"\u{1}\"",
            r#""\x""#,
            r#""\ud800""#,
            r#""\udc00""#,
            r#""\ud800\u0041""#,
            r#""\u12""#,
            "1 2",
            "[",
            "]",
            "{\"a\":1,}",
            "'a'",
        ] {
            assert!(check_json(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn nesting_is_bounded() {
        let nested = |depth: usize| "[".repeat(depth) + &"]".repeat(depth);
        assert_eq!(check_json(&nested(MAX_JSON_DEPTH)), Ok(()));
        assert!(check_json(&nested(MAX_JSON_DEPTH + 1)).is_err());
        let objects = |depth: usize| "{\"a\":".repeat(depth) + "1" + &"}".repeat(depth);
        assert_eq!(check_json(&objects(MAX_JSON_DEPTH)), Ok(()));
        assert!(check_json(&objects(MAX_JSON_DEPTH + 1)).is_err());
        // Deep input is refused without deep recursion.
        assert!(check_json(&"[".repeat(1_000_000)).is_err());
    }

    fn any_json() -> impl Strategy<Value = serde_json::Value> {
        let leaf = prop_oneof![
            Just(serde_json::Value::Null),
            any::<bool>().prop_map(serde_json::Value::Bool),
            any::<i64>().prop_map(Into::into),
            any::<f64>().prop_filter("finite", |f| f.is_finite()).prop_map(Into::into),
            "\\PC{0,10}".prop_map(serde_json::Value::String),
        ];
        leaf.prop_recursive(4, 32, 4, |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..4).prop_map(serde_json::Value::Array),
                proptest::collection::btree_map("\\PC{0,5}", inner, 0..4)
                    .prop_map(|m| serde_json::Value::Object(m.into_iter().collect())),
            ]
        })
    }

    proptest! {
        /// Whatever a JSON library writes, the rule accepts.
        #[test]
        fn accepts_what_serde_json_writes(value in any_json()) {
            prop_assert_eq!(check_json(&value.to_string()), Ok(()));
            prop_assert_eq!(check_json(&serde_json::to_string_pretty(&value).unwrap()), Ok(()));
        }

        /// Arbitrary text never panics, and what the rule accepts a JSON
        /// library can parse (numbers aside, which it may not represent).
        #[test]
        fn arbitrary_text_never_panics(text in "[\\[\\]{}\",:0-9a-z\\\\ .eE+-]{0,40}") {
            if check_json(&text).is_ok() {
                prop_assert!(serde_json::from_str::<serde::de::IgnoredAny>(&text).is_ok(), "{}", text);
            }
        }
    }
}
