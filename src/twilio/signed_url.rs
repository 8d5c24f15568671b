//! The URLs a signature may have been computed over, given the URL a webhook was received at,
//! as Twilio's official helper libraries accept them.
//!
//! Checked against `twilio` 9.13.0 (PyPI, `RequestValidator.validate`) and `twilio` 6.3.1
//! (npm, `validateRequest`) on the vectors of `tests/fixtures/signature-url-variants.json`.
//! Where both accept a variant, it is accepted; where they disagree, the earlier rule stands:
//!
//! - the URL as received, and with its port removed or the scheme's default port added
//!   (Python skips the URL as received when it has an upper-case scheme or an empty `?`, and
//!   cannot remove the port after an IPv6 literal or a `user:password@`; Node accepts these);
//! - with an upper-case scheme (`HTTPS://`), also the URL with the scheme lower-cased, with and
//!   without its port, when both libraries agree: Python lower-cases the scheme and leaves the
//!   rest, Node re-serialises the URL per WHATWG (host lower-cased, `'` and non-ASCII
//!   percent-encoded, dot segments removed, `/` for an empty path, its legacy re-encoding of
//!   the query). So a lower-cased variant counts only when Node's serialisation matches it.
//!
//! Host case is never ignored (Node lower-cases the host, Python does not).
use std::borrow::Cow;

/// The URLs Twilio may have signed for the URL received, the URL itself first. The common case
/// (a lower-case scheme) yields the URL and its port variant.
pub fn url_variants(url: &str) -> Vec<Cow<'_, str>> {
    let mut out = vec![Cow::Borrowed(url)];
    if let Some(variant) = port_variant(url) {
        out.push(Cow::Owned(variant));
    }
    if has_upper_case_scheme(url) {
        out.extend(lower_case_scheme_variants(url).into_iter().map(Cow::Owned));
    }
    out
}

fn has_upper_case_scheme(url: &str) -> bool {
    url.bytes()
        .take_while(|b| *b != b':')
        .any(|b| b.is_ascii_uppercase())
}

/// Where the authority's port is, if the URL has an authority.
enum Port {
    /// `:digits` at `colon`, the authority ending at `end`.
    Explicit { colon: usize, end: usize },
    /// No port; the authority ends at `end`.
    Absent { end: usize },
    /// A colon without a valid port after it.
    Malformed,
}

fn port(url: &str) -> Option<Port> {
    let authority = authority_span(url)?;
    let host_port = &url[authority.clone()];
    // Userinfo ends at the last '@'; the port, if any, follows the host.
    let host_start = authority.start + host_port.rfind('@').map_or(0, |i| i + 1);
    let host_and_port = &url[host_start..authority.end];
    let port_colon = if host_and_port.starts_with('[') {
        host_and_port
            .find(']')
            .and_then(|end| host_and_port[end + 1..].starts_with(':').then_some(end + 1))
    } else {
        host_and_port.rfind(':')
    };
    Some(match port_colon.map(|c| host_start + c) {
        Some(colon)
            if colon + 1 < authority.end
                && url[colon + 1..authority.end].bytes().all(|b| b.is_ascii_digit()) =>
        {
            Port::Explicit {
                colon,
                end: authority.end,
            }
        }
        Some(_) => Port::Malformed,
        None => Port::Absent { end: authority.end },
    })
}

/// `url` without its port, or with the scheme's default port (443 for https, 80 otherwise)
/// when it has none. Only the authority is edited; the rest stays byte for byte.
fn port_variant(url: &str) -> Option<String> {
    match port(url)? {
        Port::Explicit { colon, end } => Some(format!("{}{}", &url[..colon], &url[end..])),
        Port::Absent { end } => {
            let scheme = &url[..url.find("://").unwrap_or(0)];
            let port = if scheme.eq_ignore_ascii_case("https") {
                ":443"
            } else {
                ":80"
            };
            Some(format!("{}{port}{}", &url[..end], &url[end..]))
        }
        Port::Malformed => None,
    }
}

fn authority_span(url: &str) -> Option<std::ops::Range<usize>> {
    let start = url.find("://")? + 3;
    let len = url[start..].find(['/', '?', '#']).unwrap_or(url.len() - start);
    (len > 0).then_some(start..start + len)
}

/// For a URL with an upper-case scheme: the lower-cased-scheme URL and its port variant, each
/// kept only if both helper libraries accept it.
fn lower_case_scheme_variants(url: &str) -> Vec<String> {
    let Some(scheme_end) = url.find("://") else {
        return Vec::new();
    };
    let lower = format!("{}{}", url[..scheme_end].to_ascii_lowercase(), &url[scheme_end..]);
    // Python re-serialises the URL without an empty query or fragment.
    if lower.ends_with(['?', '#']) || lower.contains("?#") {
        return Vec::new();
    }
    // What Python accepts: the URL with its port removed (a naive split at the first ':' of
    // the authority, right only when there is just one, and never for port 0) or the default
    // port added.
    let mut python = vec![lower.clone()];
    match port(&lower) {
        Some(Port::Explicit { colon, end }) => {
            let authority = authority_span(&lower).unwrap_or_default();
            let single_colon = lower[authority].bytes().filter(|b| *b == b':').count() == 1;
            let zero = lower[colon + 1..end].bytes().all(|b| b == b'0');
            if single_colon && !zero {
                python.extend(port_variant(&lower));
            }
        }
        Some(Port::Absent { .. }) => python.extend(port_variant(&lower)),
        Some(Port::Malformed) | None => {}
    }
    // What Node accepts with a lower-case scheme: its WHATWG serialisation of the URL received,
    // with and without the port, or either with the query re-encoded as its legacy
    // `querystring` does.
    let Ok(parsed) = url::Url::parse(url) else {
        return Vec::new();
    };
    let whatwg = parsed.as_str();
    let mut node = vec![whatwg.to_owned()];
    node.extend(port_variant(whatwg));
    python
        .into_iter()
        .filter(|candidate| node.iter().any(|n| node_accepts(n, candidate)))
        .collect()
}

/// Whether Node's candidate `node` (a WHATWG serialisation) is `candidate`, directly or after
/// its legacy query re-encoding.
fn node_accepts(node: &str, candidate: &str) -> bool {
    if node == candidate {
        return true;
    }
    let (Some((node_base, node_query)), Some((base, query))) =
        (node.split_once('?'), candidate.split_once('?'))
    else {
        return false;
    };
    // A query that the re-encoding leaves unchanged has only unreserved characters and
    // escapes of the others; of those, WHATWG's serialisation escapes only `'`.
    node_base == base && is_legacy_querystring(query) && node_query.replace("%27", "'") == query
}

/// Whether Node's `querystring.stringify(querystring.parse(query))` is `query` itself.
fn is_legacy_querystring(query: &str) -> bool {
    let pairs: Vec<(&str, &str)> = match query
        .split('&')
        .map(|p| p.split_once('='))
        .collect::<Option<Vec<_>>>()
    {
        Some(pairs) if !pairs.is_empty() && pairs.len() <= 1000 => pairs,
        _ => return false,
    };
    // `parse` groups a repeated key's values at its first appearance, and JavaScript orders
    // integer-like keys first: both would reorder.
    let mut seen: Vec<&str> = Vec::new();
    for (i, (key, _)) in pairs.iter().enumerate() {
        if key.is_empty() || key.bytes().all(|b| b.is_ascii_digit()) {
            return false;
        }
        let continues_run = i > 0 && pairs[i - 1].0 == *key;
        if !continues_run {
            if seen.contains(key) {
                return false;
            }
            seen.push(key);
        }
    }
    pairs.iter().all(|(k, v)| escapes_itself(k) && escapes_itself(v))
}

/// Whether `querystring.escape(querystring.unescape(s))` is `s`: unreserved characters as
/// they are, every other UTF-8 byte as an upper-case `%XX`.
fn escapes_itself(s: &str) -> bool {
    let unreserved = |b: u8| b.is_ascii_alphanumeric() || b"-_.!~*'()".contains(&b);
    let bytes = s.as_bytes();
    let mut decoded = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b if unreserved(b) => {
                decoded.push(b);
                i += 1;
            }
            b'%' => {
                let upper_hex = |h: &&str| {
                    h.bytes()
                        .all(|c| c.is_ascii_digit() || (b'A'..=b'F').contains(&c))
                };
                let Some(byte) = s
                    .get(i + 1..i + 3)
                    .filter(upper_hex)
                    .and_then(|h| u8::from_str_radix(h, 16).ok())
                else {
                    return false;
                };
                if unreserved(byte) {
                    return false;
                }
                decoded.push(byte);
                i += 3;
            }
            _ => return false,
        }
    }
    std::str::from_utf8(&decoded).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn url_variants_edit_only_the_port() {
        assert_eq!(
            url_variants("https://h.example/p?q=1:2"),
            vec!["https://h.example/p?q=1:2", "https://h.example:443/p?q=1:2"]
        );
        assert_eq!(
            url_variants("http://h.example:8080/p"),
            vec!["http://h.example:8080/p", "http://h.example/p"]
        );
        assert_eq!(
            url_variants("http://[::1]:8080/p"),
            vec!["http://[::1]:8080/p", "http://[::1]/p"]
        );
        assert_eq!(
            url_variants("http://[::1]/p"),
            vec!["http://[::1]/p", "http://[::1]:80/p"]
        );
        assert_eq!(
            url_variants("https://user:pw@h.example?x"),
            vec!["https://user:pw@h.example?x", "https://user:pw@h.example:443?x"]
        );
        assert_eq!(url_variants("not a url"), vec!["not a url"]);
    }

    #[test]
    fn an_upper_case_scheme_adds_the_lower_case_variants() {
        assert_eq!(
            url_variants("HTTPS://h.example/p?a=1"),
            vec![
                "HTTPS://h.example/p?a=1",
                "HTTPS://h.example:443/p?a=1",
                "https://h.example/p?a=1",
                "https://h.example:443/p?a=1",
            ]
        );
        assert_eq!(
            url_variants("Http://h.example:8080/p"),
            vec![
                "Http://h.example:8080/p",
                "Http://h.example/p",
                "http://h.example:8080/p",
                "http://h.example/p",
            ]
        );
        // Not where the libraries disagree: the host's case, an empty path, a `'` in the query
        // that Node escapes but does not re-encode back, an IPv6 port Python cannot remove.
        assert_eq!(url_variants("HTTPS://H.example/p").len(), 2);
        assert_eq!(url_variants("HTTPS://h.example").len(), 2);
        assert_eq!(url_variants("HTTPS://h.example/p?").len(), 2);
        assert_eq!(url_variants("HTTPS://h.example/caf\u{e9}").len(), 2);
        assert_eq!(
            url_variants("HTTPS://[2001:db8::1]:8443/p")[2..],
            ["https://[2001:db8::1]:8443/p"]
        );
    }

    #[test]
    fn node_legacy_query_encoding() {
        assert!(is_legacy_querystring("a=1&b=x'y&c=%20"));
        assert!(is_legacy_querystring("a=1&a=2&b="));
        assert!(!is_legacy_querystring("a=1&b=2&a=3"), "regrouped");
        assert!(!is_legacy_querystring("b=1&2=x"), "integer keys go first");
        assert!(!is_legacy_querystring("a"), "no '='");
        assert!(!is_legacy_querystring("a=1&&b=2"));
        assert!(!is_legacy_querystring("a=b+c"), "'+' is a space, re-encoded %20");
        assert!(!is_legacy_querystring("a=%2f"), "lower-case escape");
        assert!(!is_legacy_querystring("a=%41"), "escaped unreserved character");
        assert!(!is_legacy_querystring("a=%FF"), "not UTF-8");
        assert!(!is_legacy_querystring("a=/"), "'/' is escaped");
        assert!(is_legacy_querystring("a=%C3%A9"));
    }

    #[derive(serde::Deserialize)]
    struct Fixture {
        auth_token: String,
        params: Vec<(String, String)>,
        vectors: Vec<Vector>,
    }

    #[derive(serde::Deserialize)]
    struct Vector {
        id: String,
        received: String,
        signed: String,
        signature: String,
        python: bool,
        node: bool,
        expect_valid: bool,
    }

    /// The SDK vectors: accepted exactly where both libraries accept, rejected where both
    /// reject, and the earlier rule where they disagree.
    #[test]
    fn helper_library_vectors() {
        use crate::twilio::{
            form::FormParams,
            signature::{compute, validate, Algorithm},
        };
        let fixture: Fixture =
            serde_json::from_str(include_str!("../../tests/fixtures/signature-url-variants.json")).unwrap();
        assert_eq!(fixture.vectors.len(), 61);
        let form = FormParams::from_pairs(fixture.params.clone());
        let key = [fixture.auth_token.as_bytes()];
        let mut agreed = 0;
        for v in &fixture.vectors {
            assert_eq!(
                compute(Algorithm::HmacSha1, key[0], &v.signed, &form),
                v.signature,
                "{}",
                v.id
            );
            if v.python == v.node {
                assert_eq!(v.expect_valid, v.python, "{}: the libraries agree", v.id);
                agreed += 1;
            }
            let valid = validate(Algorithm::HmacSha1, &key, &v.received, &form, &v.signature).is_some();
            assert_eq!(
                valid, v.expect_valid,
                "{}: {} signed as {}",
                v.id, v.received, v.signed
            );
        }
        assert_eq!(agreed, 36);
    }
}
