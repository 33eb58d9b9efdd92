//! A structural JSON scanner: walks a JSON text without building values, so that an answer can
//! be taken apart entry by entry and one bad entry cannot spoil the rest.
//!
//! Why not `serde_json::from_slice::<Value>` on the whole answer: it gives all or nothing. A
//! number out of `f64`'s range (`1e400`) or nesting deeper than its recursion limit (128) in one
//! command's `params` fails the whole answer, and a cut-off answer (the transport stops reading
//! at its byte limit) is nothing at all. This scanner:
//!
//! * checks the syntax of everything it walks over (strings with their escapes, numbers,
//!   literals, brackets), so garbage is still refused;
//! * never converts a number and never recurses: nesting is a counted stack of brackets on the
//!   heap, as deep as the text is long, so neither `1e400` nor 100,000 levels trouble it;
//! * tells "the text ended" ([`ScanError::End`]) apart from "this is not JSON"
//!   ([`ScanError::Syntax`]), so a caller reading a prefix knows which entries were complete.
//!
//! Memory: the bracket stack (one byte per open bracket) and nothing else. Time: one pass.
//! What is not here: what an answer means (`checkin_answer.rs`).

use std::fmt;

/// Why a scan stopped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ScanError {
    /// The text ended in the middle of a value: a prefix of valid JSON, as far as it goes.
    End,
    /// Not JSON: what was expected, and the byte offset where it went wrong.
    Syntax { at: usize, expected: &'static str },
}

impl fmt::Display for ScanError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ScanError::End => f.write_str("the text ends in the middle of a value"),
            ScanError::Syntax { at, expected } => write!(f, "expected {expected} at byte {at}"),
        }
    }
}

/// A position in a JSON text. Every method leaves `pos` just after what it read.
#[derive(Debug, Clone)]
pub struct Scanner<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Scanner<'a> {
    pub fn new(bytes: &'a [u8]) -> Self {
        Scanner { bytes, pos: 0 }
    }

    /// Byte offset of the next unread byte.
    pub fn pos(&self) -> usize {
        self.pos
    }

    /// The text between two offsets (both from [`Scanner::pos`]).
    pub fn slice(&self, from: usize, to: usize) -> &'a [u8] {
        &self.bytes[from..to]
    }

    /// The text from an offset (from [`Scanner::pos`]) to the end.
    pub fn tail(&self, from: usize) -> &'a [u8] {
        &self.bytes[from..]
    }

    /// Skips JSON whitespace.
    pub fn ws(&mut self) {
        while let Some(b' ' | b'\t' | b'\n' | b'\r') = self.bytes.get(self.pos) {
            self.pos += 1;
        }
    }

    /// Whether only whitespace is left.
    pub fn at_end(&mut self) -> bool {
        self.ws();
        self.pos >= self.bytes.len()
    }

    /// The next byte after whitespace, not consumed.
    pub fn peek(&mut self) -> Result<u8, ScanError> {
        self.ws();
        self.bytes.get(self.pos).copied().ok_or(ScanError::End)
    }

    /// Consumes `byte` (after whitespace), or fails saying `expected`.
    pub fn expect(&mut self, byte: u8, expected: &'static str) -> Result<(), ScanError> {
        match self.peek()? {
            b if b == byte => {
                self.pos += 1;
                Ok(())
            }
            _ => Err(self.syntax(expected)),
        }
    }

    fn syntax(&self, expected: &'static str) -> ScanError {
        ScanError::Syntax { at: self.pos, expected }
    }

    fn next_byte(&mut self) -> Result<u8, ScanError> {
        let b = self.bytes.get(self.pos).copied().ok_or(ScanError::End)?;
        self.pos += 1;
        Ok(b)
    }

    /// One string, quotes included, escapes checked (not decoded). Returns its raw text.
    pub fn string(&mut self) -> Result<&'a [u8], ScanError> {
        let start = self.pos;
        self.expect(b'"', "a string")?;
        let start = start.max(self.pos - 1);
        loop {
            match self.next_byte()? {
                b'"' => return Ok(&self.bytes[start..self.pos]),
                b'\\' => match self.next_byte()? {
                    b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't' => {}
                    b'u' => {
                        for _ in 0..4 {
                            if !self.next_byte()?.is_ascii_hexdigit() {
                                return Err(self.syntax("four hex digits after \\u"));
                            }
                        }
                    }
                    _ => return Err(self.syntax("a valid escape after \\")),
                },
                0x00..=0x1f => return Err(self.syntax("no control character inside a string")),
                _ => {}
            }
        }
    }

    /// One number, by JSON's grammar; never converted, so no value is out of range here.
    fn number(&mut self) -> Result<(), ScanError> {
        if self.bytes.get(self.pos) == Some(&b'-') {
            self.pos += 1;
        }
        match self.next_byte()? {
            b'0' => {}
            b'1'..=b'9' => self.digits(),
            _ => return Err(self.syntax("a digit")),
        }
        if self.bytes.get(self.pos) == Some(&b'.') {
            self.pos += 1;
            self.first_digit()?;
        }
        if let Some(b'e' | b'E') = self.bytes.get(self.pos) {
            self.pos += 1;
            if let Some(b'+' | b'-') = self.bytes.get(self.pos) {
                self.pos += 1;
            }
            self.first_digit()?;
        }
        // A number that ends where the text ends may have gone on in a cut-off text; callers
        // reading a prefix accept a value only when a delimiter follows it.
        Ok(())
    }

    fn first_digit(&mut self) -> Result<(), ScanError> {
        if !self.next_byte()?.is_ascii_digit() {
            return Err(self.syntax("a digit"));
        }
        self.digits();
        Ok(())
    }

    fn digits(&mut self) {
        while self.bytes.get(self.pos).is_some_and(u8::is_ascii_digit) {
            self.pos += 1;
        }
    }

    fn literal(&mut self, word: &'static [u8], expected: &'static str) -> Result<(), ScanError> {
        for &want in word {
            if self.next_byte()? != want {
                return Err(self.syntax(expected));
            }
        }
        Ok(())
    }

    /// An object key and the colon after it. Returns the key's raw text (quotes included).
    pub fn key(&mut self) -> Result<&'a [u8], ScanError> {
        let key = self.string()?;
        self.expect(b':', "':' after an object key")?;
        Ok(key)
    }

    /// One whole value of any kind and depth, checked and skipped. Returns its raw text.
    pub fn value(&mut self) -> Result<&'a [u8], ScanError> {
        self.ws();
        let start = self.pos;
        // The open containers, innermost last: b'{' or b'['.
        let mut open: Vec<u8> = Vec::new();
        loop {
            // At the start of a value.
            match self.peek()? {
                b'{' | b'[' => {
                    let bracket = self.next_byte()?;
                    let close = if bracket == b'{' { b'}' } else { b']' };
                    if self.peek()? == close {
                        self.pos += 1;
                    } else {
                        open.push(bracket);
                        if bracket == b'{' {
                            self.key()?;
                        }
                        continue;
                    }
                }
                b'"' => {
                    self.string()?;
                }
                b'-' | b'0'..=b'9' => self.number()?,
                b't' => self.literal(b"true", "a JSON value")?,
                b'f' => self.literal(b"false", "a JSON value")?,
                b'n' => self.literal(b"null", "a JSON value")?,
                _ => return Err(self.syntax("a JSON value")),
            }
            // A value ended: close what it ends, or move to the next member.
            loop {
                let Some(&inner) = open.last() else { return Ok(&self.bytes[start..self.pos]) };
                match (inner, self.peek()?) {
                    (_, b',') => {
                        self.pos += 1;
                        if inner == b'{' {
                            self.key()?;
                        }
                        break;
                    }
                    (b'{', b'}') | (b'[', b']') => {
                        self.pos += 1;
                        open.pop();
                    }
                    (b'{', _) => return Err(self.syntax("',' or '}' in an object")),
                    _ => return Err(self.syntax("',' or ']' in an array")),
                }
            }
        }
    }
}

/// How a JSON value's type reads in an error message, from its first byte.
pub fn kind_of(raw: &[u8]) -> &'static str {
    match raw.iter().find(|b| !b.is_ascii_whitespace()) {
        Some(b'{') => "an object",
        Some(b'[') => "an array",
        Some(b'"') => "a string",
        Some(b't' | b'f') => "a boolean",
        Some(b'n') => "null",
        Some(_) => "a number",
        None => "nothing",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn whole(text: &str) -> Result<usize, ScanError> {
        let mut s = Scanner::new(text.as_bytes());
        s.value()?;
        match s.at_end() {
            true => Ok(s.pos()),
            false => Err(ScanError::Syntax { at: s.pos(), expected: "the end" }),
        }
    }

    #[test]
    fn agrees_with_serde_json_on_what_is_json() {
        let cases = [
            "{}", "[]", "0", "-0.5e+10", "1e400", "\"a\\u00e9\\n\"", "true", "null",
            r#"{"a":[1,{"b":null}],"c":"d"}"#, " [ 1 , 2 ] ", r#"{"k":"v","k2":[[],{}]}"#,
            "{", "[1,]", "{\"a\" 1}", "01", "1.", "-", "\"\\x\"", "[1 2]", "{\"a\":1,}", "tru", "\"a\nb\"",
            "{1:2}", "[\"\\u12g4\"]", "]", "",
        ];
        for text in cases {
            let ours = whole(text).is_ok();
            // serde_json refuses 1e400 (out of range): we only check syntax, on purpose.
            let theirs = serde_json::from_str::<serde::de::IgnoredAny>(text).is_ok() || text == "1e400";
            assert_eq!(ours, theirs, "{text:?}: ours {:?}", whole(text));
        }
    }

    #[test]
    fn a_prefix_is_told_from_garbage() {
        let full = r#"{"commands":[{"id":"a","params":{"n":12.5e3,"s":"x\"y"}}]}"#;
        for cut in 1..full.len() {
            assert_eq!(whole(&full[..cut]), Err(ScanError::End), "prefix {:?}", &full[..cut]);
        }
        assert!(matches!(whole("{\"a\":x}"), Err(ScanError::Syntax { at: 5, .. })));
    }

    #[test]
    fn any_depth_without_recursion() {
        let depth = 200_000;
        let deep = format!("{}{}", "[".repeat(depth), "]".repeat(depth));
        assert_eq!(whole(&deep), Ok(2 * depth));
        let objects = format!("{}1{}", "{\"a\":".repeat(depth), "}".repeat(depth));
        assert!(whole(&objects).is_ok());
        assert_eq!(whole(&"[".repeat(depth)), Err(ScanError::End));
    }

    #[test]
    fn values_come_back_raw() {
        let text = br#"  {"x": [1, 2], "y": "z"} tail"#;
        let mut s = Scanner::new(text);
        assert_eq!(s.value().unwrap(), br#"{"x": [1, 2], "y": "z"}"#);
        assert_eq!(kind_of(b" [1]"), "an array");
    }
}
