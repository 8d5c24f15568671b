//! The shape of each kind of admin and webhook input field, as one rule: the lengths and the
//! pattern the API declares, which are exactly what the domain enforces ([`Rule::accepts`]).
//!
//! Patterns are written in the common subset of ECMA-262, Python and Rust regular expressions
//! (explicit `\uXXXX` classes instead of `\s` or `\p{..}`, no look-around), so a generated client,
//! Schemathesis and this service read them alike. Lengths count characters (code points), as
//! JSON Schema does.
use std::sync::LazyLock;

use regex::Regex;

use crate::secrets;

/// Control characters (`char::is_control`, Unicode category Cc).
const CONTROL: &str = r"\u0000-\u001f\u007f-\u009f";
/// White space (`char::is_whitespace`, the Unicode White_Space property).
const SPACE: &str = r"\u0009-\u000d\u0020\u0085\u00a0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000";
/// What `E164::parse` drops between digits.
const SEPARATOR: &str = r" .()\u00a0\-";

/// The constraints of one kind of field.
#[derive(Debug)]
pub struct Rule {
    pub min_length: Option<usize>,
    pub max_length: Option<usize>,
    /// An ECMA-262 pattern, anchored where it must match the whole value.
    pub pattern: String,
    regex: Regex,
}

impl Rule {
    fn new(min_length: Option<usize>, max_length: Option<usize>, pattern: String) -> Self {
        let regex = regex::RegexBuilder::new(&pattern)
            .size_limit(64 << 20)
            .build()
            .expect("input patterns compile");
        Self {
            min_length,
            max_length,
            pattern,
            regex,
        }
    }

    /// Whether `value` satisfies the lengths and the pattern.
    pub fn accepts(&self, value: &str) -> bool {
        let chars = value.chars().count();
        self.min_length.is_none_or(|min| chars >= min)
            && self.max_length.is_none_or(|max| chars <= max)
            && self.regex.is_match(value)
    }
}

/// Text of 1 to `max` characters once trimmed, none of them a control character.
fn trimmed_text(max: usize) -> Rule {
    let inner = format!("[^{SPACE}{CONTROL}]");
    Rule::new(
        Some(1),
        None,
        format!(
            "^[{SPACE}]*{inner}(?:[^{CONTROL}]{{0,{}}}{inner})?[{SPACE}]*$",
            max - 2
        ),
    )
}

/// A tenant's name, a route's or an API key's label.
pub static LABEL: LazyLock<Rule> = LazyLock::new(|| trimmed_text(200));

/// A fallback's `<Say>` message: at most 1000 characters, not only white space.
pub static MESSAGE: LazyLock<Rule> = LazyLock::new(|| {
    Rule::new(
        Some(1),
        Some(super::fallback::MAX_MESSAGE_LEN),
        format!("[^{SPACE}]"),
    )
});

/// An auth token or shared key: 1 to 256 characters, no space or control character, and not
/// starting with the prefix of encrypted values.
pub static SECRET: LazyLock<Rule> = LazyLock::new(|| {
    let allowed = format!("{SPACE}{CONTROL}");
    let prefix: Vec<char> = secrets::PREFIX.chars().collect();
    let mut branches = Vec::new();
    for k in 0..prefix.len() {
        let head: String = prefix[..k].iter().collect();
        let head = regex::escape(&head);
        if k > 0 {
            branches.push(head.clone());
        }
        let next = regex::escape(&prefix[k].to_string());
        branches.push(format!("{head}[^{next}{allowed}][^{allowed}]*"));
    }
    Rule::new(Some(1), Some(256), format!("^(?:{})$", branches.join("|")))
});

/// A Twilio account SID: `AC` and 32 hex digits.
pub static ACCOUNT_SID: LazyLock<Rule> =
    LazyLock::new(|| Rule::new(Some(34), Some(34), "^AC[0-9a-fA-F]{32}$".to_owned()));

/// A call SID as accepted from Twilio and test tools: 2 to 64 ASCII letters and digits.
pub static CALL_SID: LazyLock<Rule> =
    LazyLock::new(|| Rule::new(Some(2), Some(64), "^[A-Za-z0-9]{2,64}$".to_owned()));

/// A Standard Webhooks secret: `whsec_` and canonical standard base64 of at least 24 bytes.
pub static WEBHOOK_SECRET: LazyLock<Rule> = LazyLock::new(|| {
    let b64 = "[A-Za-z0-9+/]";
    Rule::new(
        Some(38),
        None,
        format!("^whsec_(?:{b64}{{4}}){{8,}}(?:{b64}{{2}}[AEIMQUYcgkosw048]=|{b64}[AQgw]==)?$"),
    )
});

/// A phone number as `E164::parse` takes it: optional spaces around, `+` or `00`, then 8 to 15
/// digits (the first not 0) with spaces, dots, dashes or parentheses between them.
pub static PHONE: LazyLock<Rule> = LazyLock::new(|| {
    Rule::new(
        Some(9),
        None,
        format!(
            "^[{SPACE}]*(?:\\+|00)[{SEPARATOR}]*[1-9](?:[{SEPARATOR}]*[0-9]){{7,14}}[{SEPARATOR}]*[{SPACE}]*$"
        ),
    )
});

/// An absolute URL with one of `schemes`, a host name or IPv4 address, an optional port, and
/// any path, query and fragment without control characters. No user info, no IPv6 literal.
fn url(schemes: &str) -> Rule {
    let label = "[A-Za-z0-9]+(?:-[A-Za-z0-9]+)*";
    // The last label starts with a letter: a name ending in a number would be read as IPv4.
    let top = "[A-Za-z][A-Za-z0-9]*(?:-[A-Za-z0-9]+)*";
    let octet = "(?:25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])";
    let port = "(?:6553[0-5]|655[0-2][0-9]|65[0-4][0-9]{2}|6[0-4][0-9]{3}|[1-5][0-9]{4}|[1-9][0-9]{0,3}|0)";
    Rule::new(
        None,
        None,
        format!(
            "^(?:{schemes})://(?:(?:{label}\\.)*{top}|(?:{octet}\\.){{3}}{octet})(?::{port})?(?:[/?#][^{CONTROL}]*)?$"
        ),
    )
}

/// An http or https URL (event webhooks, redirects, health checks).
pub static HTTP_URL: LazyLock<Rule> = LazyLock::new(|| url("http|https"));

/// A ws or wss URL (agent runtimes).
pub static WS_URL: LazyLock<Rule> = LazyLock::new(|| url("ws|wss"));

/// Any text without NUL: ids, cursors and filters in URLs, webhook form fields.
pub static NO_NUL: LazyLock<Rule> = LazyLock::new(|| Rule::new(None, None, r"^[^\u0000]*$".to_owned()));

/// Text of at least one character without NUL (a webhook's `To`).
pub static NON_EMPTY_NO_NUL: LazyLock<Rule> =
    LazyLock::new(|| Rule::new(Some(1), None, r"^[^\u0000]+$".to_owned()));

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::domain::phone::{is_sid, CallSid, E164};

    /// Strings mixing the characters each rule cares about.
    fn text() -> impl Strategy<Value = String> {
        let chars = prop_oneof![
            Just(' '),
            Just('\t'),
            Just('\u{a0}'),
            Just('\u{3000}'),
            Just('\u{1c}'),
            Just('\u{0}'),
            Just('\u{85}'),
            Just('\u{7f}'),
            Just('+'),
            Just('-'),
            Just('('),
            Just('.'),
            Just(':'),
            Just('='),
            Just('/'),
            Just('e'),
            Just('n'),
            Just('c'),
            Just('v'),
            Just('1'),
            Just('0'),
            Just('A'),
            Just('C'),
            Just('é'),
            any::<char>(),
            proptest::char::range('0', '9'),
            proptest::char::range('a', 'f'),
        ];
        proptest::collection::vec(chars, 0..40).prop_map(|v| v.into_iter().collect())
    }

    /// Strings matching a whole-value rule's pattern.
    fn generator(rule: &Rule) -> impl Strategy<Value = String> {
        let inner = rule
            .pattern
            .strip_prefix('^')
            .and_then(|p| p.strip_suffix('$'))
            .unwrap();
        proptest::string::string_regex(inner).unwrap()
    }

    fn label_ok(v: &str) -> bool {
        let t = v.trim();
        !t.is_empty() && t.chars().count() <= 200 && !t.chars().any(char::is_control)
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(4000))]

        #[test]
        fn rules_equal_the_checks(v in text()) {
            prop_assert_eq!(LABEL.accepts(&v), label_ok(&v), "label {:?}", v);
            prop_assert_eq!(PHONE.accepts(&v), E164::parse(&v).is_ok(), "phone {:?}", v);
            prop_assert_eq!(SECRET.accepts(&v), super::super::admin::secret("s", v.clone()).is_ok(), "secret {:?}", v);
            prop_assert_eq!(ACCOUNT_SID.accepts(&v), is_sid(&v, "AC"), "sid {:?}", v);
            prop_assert_eq!(CALL_SID.accepts(&v), CallSid::parse(&v).is_ok(), "call sid {:?}", v);
            let message_ok = !v.trim().is_empty() && v.chars().count() <= 1000;
            prop_assert_eq!(MESSAGE.accepts(&v), message_ok, "message {:?}", v);
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(300))]

        #[test]
        fn generated_values_are_accepted(
            phone in generator(&PHONE),
            secret in generator(&WEBHOOK_SECRET),
            url in generator(&HTTP_URL),
            ws in generator(&WS_URL),
        ) {
            prop_assert!(E164::parse(&phone).is_ok(), "{:?}", phone);
            prop_assert!(super::super::admin::check_webhook_secret(&secret).is_ok(), "{:?}", secret);
            for (u, scheme) in [(&url, "http"), (&ws, "ws")] {
                let parsed = url::Url::parse(u);
                prop_assert!(parsed.is_ok(), "{:?}: {:?}", u, parsed);
                let parsed = parsed.unwrap();
                prop_assert!(parsed.scheme().starts_with(scheme) && parsed.host().is_some(), "{:?}", u);
            }
        }
    }

    #[test]
    fn examples() {
        assert!(LABEL.accepts("  Acme  "));
        assert!(!LABEL.accepts(""));
        assert!(!LABEL.accepts("   "));
        assert!(LABEL.accepts(&"x".repeat(200)));
        assert!(!LABEL.accepts(&"x".repeat(201)));
        assert!(SECRET.accepts("enc:v2:x"));
        assert!(SECRET.accepts("enc:v1"));
        assert!(!SECRET.accepts("enc:v1:x"));
        assert!(!SECRET.accepts("a b"));
        assert!(HTTP_URL.accepts("https://hooks.example.com/voice?x=1"));
        assert!(HTTP_URL.accepts("http://127.0.0.1:8080"));
        assert!(!HTTP_URL.accepts("ftp://example.com/"));
        assert!(!HTTP_URL.accepts("https://user@example.com/"));
        assert!(!HTTP_URL.accepts("https://a.1/"));
        assert!(!HTTP_URL.accepts("https://example.com:65536/"));
        assert!(WS_URL.accepts("wss://agent.example.com/ws"));
        assert!(!WS_URL.accepts("https://agent.example.com/ws"));
        assert!(WEBHOOK_SECRET.accepts(&super::super::admin::generate_webhook_secret()));
        assert!(NO_NUL.accepts("") && !NO_NUL.accepts("a\0"));
        assert!(!NON_EMPTY_NO_NUL.accepts(""));
    }
}
