//! Identifiers parsed at the boundary: E.164 numbers and Twilio SIDs.
use std::fmt;

/// A phone number in E.164 form: `+` then 8 to 15 digits, the first not 0.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct E164(String);

impl E164 {
    /// Normalises human input: spaces, dots, dashes and parentheses are dropped; the number
    /// must carry its country code (`+` or `00`).
    pub fn parse(input: &str) -> Result<Self, String> {
        let trimmed = input.trim();
        let rest = if let Some(r) = trimmed.strip_prefix('+') {
            r
        } else if let Some(r) = trimmed.strip_prefix("00") {
            r
        } else {
            return Err(format!(
                "{trimmed:?} is not an E.164 phone number: it must start with + and the country code"
            ));
        };
        let mut digits = String::with_capacity(16);
        digits.push('+');
        for c in rest.chars() {
            match c {
                '0'..='9' => digits.push(c),
                ' ' | '-' | '.' | '(' | ')' | '\u{a0}' => {}
                _ => return Err(format!("{trimmed:?} is not a phone number: unexpected {c:?}")),
            }
        }
        let count = digits.len() - 1;
        if !(8..=15).contains(&count) || digits.as_bytes()[1] == b'0' {
            return Err(format!(
                "{trimmed:?} is not an E.164 phone number: expected 8 to 15 digits after the country code"
            ));
        }
        Ok(Self(digits))
    }

    /// The normalised number, e.g. `+15555551234`.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for E164 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Checks a Twilio SID: a two-letter `prefix` then 32 hex digits.
pub fn is_sid(value: &str, prefix: &str) -> bool {
    value.len() == 34 && value.starts_with(prefix) && value[2..].bytes().all(|b| b.is_ascii_hexdigit())
}

/// A call SID as received. Twilio's are `CA` + 32 hex digits; any short token of letters and
/// digits is accepted so test tools can use readable ones.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallSid(String);

impl CallSid {
    /// Accepts 2 to 64 ASCII letters and digits.
    pub fn parse(value: &str) -> Result<Self, String> {
        if (2..=64).contains(&value.len()) && value.bytes().all(|b| b.is_ascii_alphanumeric()) {
            Ok(Self(value.to_owned()))
        } else {
            Err("CallSid must be 2 to 64 letters and digits".to_owned())
        }
    }

    /// The SID.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalises_formatted_numbers() {
        assert_eq!(E164::parse("+1 (555) 555-1234").unwrap().as_str(), "+15555551234");
        assert_eq!(
            E164::parse(" +44 20.7946.0000 ").unwrap().as_str(),
            "+442079460000"
        );
        assert_eq!(E164::parse("0049 30 1234567").unwrap().as_str(), "+49301234567");
    }

    #[test]
    fn rejects_non_numbers() {
        for bad in [
            "555-1234",
            "+1555",
            "+1234567890123456",
            "+0155555512",
            "+1 555 CALL NOW",
            "client:alice",
            "",
        ] {
            assert!(E164::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn sids() {
        assert!(is_sid("AC3f3f3f3f3f3f3f3f3f3f3f3f3f3f3f3f", "AC"));
        assert!(!is_sid("AC3f3f", "AC"));
        assert!(!is_sid("CA3f3f3f3f3f3f3f3f3f3f3f3f3f3f3f3f", "AC"));
        assert!(CallSid::parse("CA1234567890ABCDE").is_ok());
        assert!(CallSid::parse("CA12'; DROP").is_err());
    }
}
