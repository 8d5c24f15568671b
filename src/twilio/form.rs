//! Strict `application/x-www-form-urlencoded` parsing and encoding.
//!
//! Every `(key, value)` pair is kept in arrival order, repeated keys included, because the
//! Twilio signature covers all of them. Input that a lenient parser would silently repair
//! (bad percent-escapes, invalid UTF-8, NUL) is an error here.
use thiserror::Error;

/// Most fields a form may carry; Twilio sends about forty at most.
pub const MAX_FIELDS: usize = 1000;

/// Why a form body was refused.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum FormError {
    #[error("invalid percent-escape at byte {0}")]
    InvalidEscape(usize),
    #[error("a form field is not valid UTF-8")]
    InvalidUtf8,
    #[error("a form field contains a NUL character")]
    Nul,
    #[error("too many form fields (at most {MAX_FIELDS})")]
    TooManyFields,
}

/// Decoded form fields in arrival order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FormParams {
    pairs: Vec<(String, String)>,
}

impl FormParams {
    /// Parses a raw body. Empty segments (`a=1&&b=2`) are skipped; a segment without `=`
    /// is a key with an empty value.
    pub fn parse(body: &[u8]) -> Result<Self, FormError> {
        let mut pairs = Vec::new();
        let mut offset = 0;
        for segment in body.split(|b| *b == b'&') {
            let start = offset;
            offset += segment.len() + 1;
            if segment.is_empty() {
                continue;
            }
            if pairs.len() == MAX_FIELDS {
                return Err(FormError::TooManyFields);
            }
            let (key, value) = match segment.iter().position(|b| *b == b'=') {
                Some(eq) => (&segment[..eq], &segment[eq + 1..]),
                None => (segment, &segment[segment.len()..]),
            };
            let value_start = start + segment.len() - value.len();
            pairs.push((decode(key, start)?, decode(value, value_start)?));
        }
        Ok(Self { pairs })
    }

    /// Builds a form from decoded pairs.
    pub fn from_pairs<K: Into<String>, V: Into<String>>(pairs: impl IntoIterator<Item = (K, V)>) -> Self {
        Self {
            pairs: pairs.into_iter().map(|(k, v)| (k.into(), v.into())).collect(),
        }
    }

    /// The first value of `key`.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.pairs.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
    }

    /// All pairs in arrival order.
    pub fn pairs(&self) -> &[(String, String)] {
        &self.pairs
    }

    /// Appends a pair.
    pub fn push(&mut self, key: impl Into<String>, value: impl Into<String>) {
        self.pairs.push((key.into(), value.into()));
    }

    /// Encodes the pairs as a form body, the way browsers and Twilio do.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        for (i, (k, v)) in self.pairs.iter().enumerate() {
            if i > 0 {
                out.push('&');
            }
            encode_into(&mut out, k);
            out.push('=');
            encode_into(&mut out, v);
        }
        out
    }
}

fn decode(raw: &[u8], offset: usize) -> Result<String, FormError> {
    let mut out = Vec::with_capacity(raw.len());
    let mut i = 0;
    while i < raw.len() {
        match raw[i] {
            b'+' => out.push(b' '),
            b'%' => {
                let hex = raw
                    .get(i + 1..i + 3)
                    .ok_or(FormError::InvalidEscape(offset + i))?;
                let hi = hex_value(hex[0]).ok_or(FormError::InvalidEscape(offset + i))?;
                let lo = hex_value(hex[1]).ok_or(FormError::InvalidEscape(offset + i))?;
                out.push(hi << 4 | lo);
                i += 2;
            }
            b => out.push(b),
        }
        i += 1;
    }
    if out.contains(&0) {
        return Err(FormError::Nul);
    }
    String::from_utf8(out).map_err(|_| FormError::InvalidUtf8)
}

fn hex_value(b: u8) -> Option<u8> {
    (b as char).to_digit(16).map(|d| d as u8)
}

fn encode_into(out: &mut String, s: &str) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    for &b in s.as_bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'*' => out.push(b as char),
            b' ' => out.push('+'),
            _ => {
                out.push('%');
                out.push(HEX[(b >> 4) as usize] as char);
                out.push(HEX[(b & 15) as usize] as char);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_order_repeats_and_empty_values() {
        let form = FormParams::parse(b"b=2&a=1&a=0&c=&d").unwrap();
        assert_eq!(
            form.pairs(),
            &[
                ("b".into(), "2".into()),
                ("a".into(), "1".into()),
                ("a".into(), "0".into()),
                ("c".into(), "".into()),
                ("d".into(), "".into())
            ]
        );
        assert_eq!(form.get("a"), Some("1"));
        assert_eq!(form.get("z"), None);
    }

    #[test]
    fn decodes_plus_percent_and_unicode() {
        let form = FormParams::parse(b"From=%2B15555555678&Msg=hello+w%C3%B6rld%21&x=%e2%82%ac").unwrap();
        assert_eq!(form.get("From"), Some("+15555555678"));
        assert_eq!(form.get("Msg"), Some("hello wörld!"));
        assert_eq!(form.get("x"), Some("€"));
    }

    #[test]
    fn skips_empty_segments() {
        let form = FormParams::parse(b"&a=1&&b=2&").unwrap();
        assert_eq!(form.pairs().len(), 2);
        assert!(FormParams::parse(b"").unwrap().pairs().is_empty());
    }

    #[test]
    fn rejects_bad_escapes_with_their_position() {
        assert_eq!(FormParams::parse(b"a=%G1"), Err(FormError::InvalidEscape(2)));
        assert_eq!(FormParams::parse(b"a=1&b=%4"), Err(FormError::InvalidEscape(6)));
        assert_eq!(FormParams::parse(b"%=1"), Err(FormError::InvalidEscape(0)));
    }

    #[test]
    fn rejects_invalid_utf8_and_nul() {
        assert_eq!(FormParams::parse(b"a=%FF%FE"), Err(FormError::InvalidUtf8));
        assert_eq!(FormParams::parse(b"a=\xff"), Err(FormError::InvalidUtf8));
        assert_eq!(FormParams::parse(b"a=x%00y"), Err(FormError::Nul));
        assert_eq!(FormParams::parse(b"a\0=1"), Err(FormError::Nul));
    }

    #[test]
    fn limits_field_count() {
        let ok = "a=1&".repeat(MAX_FIELDS);
        assert_eq!(
            FormParams::parse(ok.as_bytes()).unwrap().pairs().len(),
            MAX_FIELDS
        );
        let too_many = "a=1&".repeat(MAX_FIELDS + 1);
        assert_eq!(
            FormParams::parse(too_many.as_bytes()),
            Err(FormError::TooManyFields)
        );
    }

    #[test]
    fn encode_round_trips() {
        let form = FormParams::from_pairs([("To", "+1 555"), ("Body", "a&b=c%d/é\r\n"), ("Empty", "")]);
        let body = form.encode();
        assert_eq!(body, "To=%2B1+555&Body=a%26b%3Dc%25d%2F%C3%A9%0D%0A&Empty=");
        assert_eq!(FormParams::parse(body.as_bytes()).unwrap(), form);
    }
}
