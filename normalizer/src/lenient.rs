//! A forgiving parser for JavaScript object literals, the last resort before form decoding.
//!
//! CooCenter documents its pushes as JS literals that neither strict JSON nor JSON5 accept:
//! a missing comma between members (`event:"hangup"` + newline + `calleridnum:…`), and
//! unescaped quotes inside strings (`callerid:""808"<808>"`). This parser accepts, on top of
//! JSON5's unquoted and single-quoted keys, comments and trailing commas:
//! - members separated by a newline alone;
//! - a quote inside a string that is not followed by a delimiter (`,` `}` `]` `:` end of line,
//!   a comment, end of input) is part of the string;
//! - bare words as values (`ANSWERED`, `undefined`), kept as strings (`null` and `undefined` are
//!   null, `true`/`false` booleans).
//!
//! It never panics and its nesting depth is bounded.

use serde_json::{Map, Number, Value};

/// Deepest nesting accepted; deeper input is an error, not a stack overflow.
const MAX_DEPTH: usize = crate::limits::MAX_NESTING;

/// Why a literal was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LiteralError {
    /// It nests deeper than [`crate::limits::MAX_NESTING`].
    TooDeep,
    /// It is not an object literal (the detail says where).
    Syntax(String),
}

impl From<String> for LiteralError {
    fn from(detail: String) -> Self {
        LiteralError::Syntax(detail)
    }
}

impl From<&str> for LiteralError {
    fn from(detail: &str) -> Self {
        LiteralError::Syntax(detail.to_owned())
    }
}

/// Parses a JS object literal into a JSON object.
pub fn parse_object_literal(text: &str) -> Result<Map<String, Value>, LiteralError> {
    let mut parser = Parser {
        chars: text.chars().collect(),
        pos: 0,
    };
    parser.skip_space();
    let value = parser.value(0)?;
    parser.skip_space();
    if parser.pos < parser.chars.len() {
        return Err(format!("trailing text at character {}", parser.pos).into());
    }
    match value {
        Value::Object(map) => Ok(map),
        _ => Err("top level is not an object".into()),
    }
}

struct Parser {
    chars: Vec<char>,
    pos: usize,
}

impl Parser {
    fn peek(&self) -> Option<char> {
        self.chars.get(self.pos).copied()
    }

    fn peek_at(&self, offset: usize) -> Option<char> {
        self.chars.get(self.pos + offset).copied()
    }

    /// Skips white space and comments; returns true if a newline was crossed.
    fn skip_space(&mut self) -> bool {
        let mut newline = false;
        while let Some(ch) = self.peek() {
            if ch == '\n' || ch == '\r' {
                newline = true;
                self.pos += 1;
            } else if ch.is_whitespace() || ch == '\u{feff}' {
                self.pos += 1;
            } else if ch == '/' && self.peek_at(1) == Some('/') {
                while self.peek().is_some_and(|c| c != '\n') {
                    self.pos += 1;
                }
            } else if ch == '/' && self.peek_at(1) == Some('*') {
                self.pos += 2;
                while self.pos < self.chars.len()
                    && !(self.peek() == Some('*') && self.peek_at(1) == Some('/'))
                {
                    newline |= self.peek() == Some('\n');
                    self.pos += 1;
                }
                self.pos = (self.pos + 2).min(self.chars.len());
            } else {
                break;
            }
        }
        newline
    }

    fn value(&mut self, depth: usize) -> Result<Value, LiteralError> {
        if depth >= MAX_DEPTH && matches!(self.peek(), Some('{' | '[')) {
            return Err(LiteralError::TooDeep);
        }
        match self.peek() {
            Some('{') => self.object(depth).map(Value::Object),
            Some('[') => self.array(depth),
            Some(quote @ ('"' | '\'')) => self.string(quote).map(Value::String),
            Some(_) => Ok(self.bare_word()),
            None => Err("unexpected end of input".into()),
        }
    }

    fn object(&mut self, depth: usize) -> Result<Map<String, Value>, LiteralError> {
        self.pos += 1;
        let mut map = Map::new();
        loop {
            self.skip_space();
            match self.peek() {
                Some('}') => {
                    self.pos += 1;
                    return Ok(map);
                }
                None => return Err("unterminated object".into()),
                _ => {}
            }
            let key = self.key()?;
            self.skip_space();
            if self.peek() != Some(':') {
                return Err(format!("expected `:` after key `{key}`").into());
            }
            self.pos += 1;
            self.skip_space();
            let value = self.value(depth + 1)?;
            map.insert(key, value);
            let newline = self.skip_space();
            match self.peek() {
                Some(',') => self.pos += 1,
                Some('}') => {}
                Some(_) if newline => {}
                Some(ch) => return Err(format!("expected `,` or `}}`, found `{ch}`").into()),
                None => return Err("unterminated object".into()),
            }
        }
    }

    fn array(&mut self, depth: usize) -> Result<Value, LiteralError> {
        self.pos += 1;
        let mut items = Vec::new();
        loop {
            let newline_before = self.skip_space();
            match self.peek() {
                Some(']') => {
                    self.pos += 1;
                    return Ok(Value::Array(items));
                }
                None => return Err("unterminated array".into()),
                _ => {}
            }
            let _ = newline_before;
            items.push(self.value(depth + 1)?);
            let newline = self.skip_space();
            match self.peek() {
                Some(',') => self.pos += 1,
                Some(']') => {}
                Some(_) if newline => {}
                Some(ch) => return Err(format!("expected `,` or `]`, found `{ch}`").into()),
                None => return Err("unterminated array".into()),
            }
        }
    }

    fn key(&mut self) -> Result<String, LiteralError> {
        match self.peek() {
            Some(quote @ ('"' | '\'')) => self.string(quote),
            _ => {
                let start = self.pos;
                while self.peek().is_some_and(|c| {
                    c.is_alphanumeric() || c == '_' || c == '$' || c == '-' || c == '.'
                }) {
                    self.pos += 1;
                }
                if start == self.pos {
                    return Err(format!("expected a key at character {}", self.pos).into());
                }
                Ok(self.chars[start..self.pos].iter().collect())
            }
        }
    }

    /// Reads a quoted string; a quote closes it only when a delimiter follows.
    fn string(&mut self, quote: char) -> Result<String, LiteralError> {
        self.pos += 1;
        let mut out = String::new();
        while let Some(ch) = self.peek() {
            self.pos += 1;
            if ch == '\\' {
                self.escape(&mut out);
            } else if ch == quote && self.closes_string() {
                return Ok(out);
            } else {
                out.push(ch);
            }
        }
        Err("unterminated string".into())
    }

    fn closes_string(&self) -> bool {
        let mut index = self.pos;
        while let Some(&ch) = self.chars.get(index) {
            if ch == '\n' || ch == '\r' {
                return true;
            }
            if !ch.is_whitespace() {
                let next = self.chars.get(index + 1).copied();
                return matches!(ch, ',' | '}' | ']' | ':')
                    || (ch == '/' && matches!(next, Some('/') | Some('*')));
            }
            index += 1;
        }
        true
    }

    fn escape(&mut self, out: &mut String) {
        let Some(ch) = self.peek() else { return };
        self.pos += 1;
        match ch {
            'n' => out.push('\n'),
            't' => out.push('\t'),
            'r' => out.push('\r'),
            'b' => out.push('\u{8}'),
            'f' => out.push('\u{c}'),
            '0' => out.push('\0'),
            'u' => match self.hex4_at(0) {
                Some(high @ 0xD800..=0xDBFF) => {
                    self.pos += 4;
                    // A UTF-16 surrogate pair (`\ud83d\ude00`) is one character, as in JSON.
                    let low = (self.peek() == Some('\\') && self.peek_at(1) == Some('u'))
                        .then(|| self.hex4_at(2))
                        .flatten()
                        .filter(|low| (0xDC00..=0xDFFF).contains(low));
                    let pair = low.and_then(|low| {
                        self.pos += 6;
                        char::from_u32(0x10000 + ((high - 0xD800) << 10) + (low - 0xDC00))
                    });
                    out.push(pair.unwrap_or(char::REPLACEMENT_CHARACTER));
                }
                Some(code) => {
                    self.pos += 4;
                    out.push(char::from_u32(code).unwrap_or(char::REPLACEMENT_CHARACTER));
                }
                None => out.push('u'),
            },
            '\n' => {}
            other => out.push(other),
        }
    }

    /// Reads the four hex digits `offset` characters ahead, if that is what is there.
    fn hex4_at(&self, offset: usize) -> Option<u32> {
        let start = self.pos + offset;
        let digits = self.chars.get(start..start + 4)?;
        digits
            .iter()
            .try_fold(0, |code, digit| Some(code * 16 + digit.to_digit(16)?))
    }

    fn bare_word(&mut self) -> Value {
        let start = self.pos;
        while let Some(ch) = self.peek() {
            if matches!(ch, ',' | '}' | ']' | '\n' | '\r')
                || (ch == '/' && matches!(self.peek_at(1), Some('/') | Some('*')))
            {
                break;
            }
            self.pos += 1;
        }
        let word: String = self.chars[start..self.pos].iter().collect();
        let word = word.trim();
        match word {
            "null" | "undefined" => Value::Null,
            "true" => Value::Bool(true),
            "false" => Value::Bool(false),
            _ => number(word).unwrap_or_else(|| Value::String(word.to_owned())),
        }
    }
}

fn number(word: &str) -> Option<Value> {
    let unsigned = word.strip_prefix('+').unwrap_or(word);
    if unsigned.is_empty()
        || !unsigned.bytes().next()?.is_ascii_digit() && !unsigned.starts_with(['-', '.'])
    {
        return None;
    }
    if let Ok(int) = unsigned.parse::<i64>() {
        return Some(Value::Number(int.into()));
    }
    // A decimal keeps the digits as sent (serde_json's `arbitrary_precision`): an epoch time
    // with microseconds must not pick up binary floating-point error.
    let float = unsigned.parse::<f64>().ok()?;
    if !float.is_finite() {
        return None;
    }
    serde_json::from_str::<Number>(unsigned)
        .ok()
        .or_else(|| Number::from_f64(float))
        .map(Value::Number)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    #[test]
    fn test_coocenter_hangup_with_missing_comma() {
        let text = "{\nevent:\"hangup\"\ncalleridnum:\"808\",//主叫号码\nuniqueid:\"1325747409.260\",//呼叫唯一标识\n}";
        let map = parse_object_literal(text).unwrap();
        assert_eq!(
            Value::Object(map),
            json!({"event": "hangup", "calleridnum": "808", "uniqueid": "1325747409.260"})
        );
    }

    #[test]
    fn test_unescaped_inner_quotes_stay_in_the_string() {
        let text = "{\nevent:\"cdr\",\ncallerid:\"\"808\"<808>\",//名称<号码>\nsource:'808'\n}";
        let map = parse_object_literal(text).unwrap();
        assert_eq!(map["callerid"], json!("\"808\"<808>"));
        assert_eq!(map["source"], json!("808"));
    }

    #[test]
    fn test_json5_features() {
        let text = "{a:1, 'b':'x', \"c\": [1,2,], /* note */ d: true, e: null, f: undefined, g: -2.5, h: ANSWERED,}";
        let map = parse_object_literal(text).unwrap();
        assert_eq!(
            Value::Object(map),
            json!({"a": 1, "b": "x", "c": [1, 2], "d": true, "e": null, "f": null, "g": -2.5, "h": "ANSWERED"})
        );
    }

    #[test]
    fn test_surrogate_pairs_are_one_character() {
        // Found by the `lenient` fuzz target: the pair came out as the text `ud83dude00`.
        let map =
            parse_object_literal(r#"{"a\ud83d\ude00": "\ud83d\ude00x", b: '\u00e9'}"#).unwrap();
        assert_eq!(
            Value::Object(map),
            json!({"a\u{1f600}": "\u{1f600}x", "b": "\u{e9}"})
        );
        let lone = parse_object_literal(r#"{a: "\ud83d!", b: "\ude00", c: "\u12"}"#).unwrap();
        assert_eq!(
            Value::Object(lone),
            json!({"a": "\u{fffd}!", "b": "\u{fffd}", "c": "u12"})
        );
    }

    #[test]
    fn test_rejects_non_objects_and_garbage() {
        assert!(parse_object_literal("[1,2]").is_err());
        assert!(parse_object_literal("{a:").is_err());
        assert!(parse_object_literal("{a 1}").is_err());
        assert!(parse_object_literal("hello").is_err());
        assert_eq!(
            parse_object_literal(&"{a:".repeat(100_000)),
            Err(LiteralError::TooDeep)
        );
    }

    proptest! {
        #[test]
        fn test_never_panics(text in ".{0,200}") {
            let _ = parse_object_literal(&text);
        }

        #[test]
        fn test_accepts_strict_json_objects(map in proptest::collection::btree_map("[a-z]{1,8}", "[ -~&&[^\"\\\\]]{0,10}", 0..6)) {
            let value = serde_json::to_value(&map).unwrap();
            let text = serde_json::to_string(&value).unwrap();
            let parsed = parse_object_literal(&text).unwrap();
            prop_assert_eq!(Value::Object(parsed), value);
        }
    }
}
