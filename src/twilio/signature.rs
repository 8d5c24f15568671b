//! `X-Twilio-Signature` computation and validation, as Twilio's official helper libraries do it.
//!
//! The signed string is the URL exactly as received, followed by every form parameter sorted by
//! key bytes, each key directly followed by its value; a repeated key contributes its values
//! sorted and de-duplicated. The HMAC (SHA-1 with the account's auth token, or SHA-256 with a
//! shared key) is base64-encoded. The URL is also tried in the variants Twilio's helper
//! libraries accept ([`url_variants`]): without its port and with the scheme's default port
//! added (proxies and Twilio disagree about default ports), and with an upper-case scheme
//! lower-cased.
use base64::{engine::general_purpose::STANDARD, Engine as _};
use hmac::{Hmac, Mac};
use sha1::Sha1;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::form::FormParams;
pub use super::signed_url::url_variants;

/// The HMAC a webhook is signed with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Algorithm {
    /// HMAC-SHA1 keyed with the account auth token (the default).
    HmacSha1,
    /// HMAC-SHA256 keyed with a customer-managed shared key.
    HmacSha256,
}

impl Algorithm {
    /// Chooses the algorithm from the `X-Twilio-Webhooks-Signature-Settings` header, if any.
    pub fn from_settings_header(header: Option<&str>) -> Self {
        match header {
            Some(h) if h.to_ascii_uppercase().contains("HMAC_SHA256") => Self::HmacSha256,
            _ => Self::HmacSha1,
        }
    }
}

/// The parameter part of the signed string: sorted keys, each followed by its value.
pub fn params_string(params: &FormParams) -> String {
    let mut pairs: Vec<(&str, &str)> = params
        .pairs()
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    // Sorting by (key, value) orders keys by their bytes and a repeated key's values too.
    pairs.sort_unstable();
    pairs.dedup();
    let mut out = String::with_capacity(pairs.iter().map(|(k, v)| k.len() + v.len()).sum());
    for (k, v) in pairs {
        out.push_str(k);
        out.push_str(v);
    }
    out
}

/// Computes the base64 signature of `url` and `params` with `key`.
pub fn compute(algorithm: Algorithm, key: &[u8], url: &str, params: &FormParams) -> String {
    sign(algorithm, key, url, &params_string(params))
}

fn sign(algorithm: Algorithm, key: &[u8], url: &str, params: &str) -> String {
    match algorithm {
        Algorithm::HmacSha1 => {
            let mut mac = Hmac::<Sha1>::new_from_slice(key).expect("HMAC takes any key length");
            mac.update(url.as_bytes());
            mac.update(params.as_bytes());
            STANDARD.encode(mac.finalize().into_bytes())
        }
        Algorithm::HmacSha256 => {
            let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes any key length");
            mac.update(url.as_bytes());
            mac.update(params.as_bytes());
            STANDARD.encode(mac.finalize().into_bytes())
        }
    }
}

/// Which key and URL variant validated a signature.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Verified {
    /// Index into the keys passed to [`validate`]: 0 primary, 1 secondary.
    pub key_index: usize,
}

/// Validates `signature` for `url` and `params` against each key in turn (primary, then
/// secondary), trying every URL variant, comparing in constant time.
pub fn validate(
    algorithm: Algorithm,
    keys: &[&[u8]],
    url: &str,
    params: &FormParams,
    signature: &str,
) -> Option<Verified> {
    if signature.is_empty() {
        return None;
    }
    let params = params_string(params);
    let variants = url_variants(url);
    let mut found = None;
    for (key_index, key) in keys.iter().enumerate() {
        for variant in &variants {
            let expected = sign(algorithm, key, variant, &params);
            // Evaluate every candidate so the time taken does not tell which one matched.
            if bool::from(expected.as_bytes().ct_eq(signature.as_bytes())) && found.is_none() {
                found = Some(Verified { key_index });
            }
        }
    }
    found
}

/// Lower-case hex SHA-256 of a raw body, as in the `bodySHA256` query parameter.
pub fn body_sha256_hex(body: &[u8]) -> String {
    hex::encode(Sha256::digest(body))
}

/// Validates a JSON-body webhook: the URL carries `bodySHA256`, which must match the body, and
/// the signature covers the URL alone.
pub fn validate_json_body(keys: &[&[u8]], url: &str, body: &[u8], signature: &str) -> Option<Verified> {
    let query = url.split_once('?').map(|(_, q)| q).unwrap_or("");
    let query = query.split('#').next().unwrap_or("");
    let claimed = FormParams::parse(query.as_bytes())
        .ok()?
        .get("bodySHA256")?
        .to_owned();
    let actual = body_sha256_hex(body);
    let body_ok = bool::from(actual.as_bytes().ct_eq(claimed.as_bytes()));
    let verified = validate(Algorithm::HmacSha1, keys, url, &FormParams::default(), signature);
    verified.filter(|_| body_ok)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn params_sorted_by_key_bytes_with_repeats_sorted_and_deduplicated() {
        let form = FormParams::from_pairs([
            ("b", "2"),
            ("a", "z"),
            ("a", "y"),
            ("a", "z"),
            ("B", "1"),
            ("ab", ""),
        ]);
        assert_eq!(params_string(&form), "B1aya zab b2".replace(' ', ""));
    }

    #[test]
    fn validates_with_secondary_key_and_reports_it() {
        let form = FormParams::from_pairs([("CallSid", "CA1"), ("To", "+15555551234")]);
        let url = "https://voice.example.com/api/v1/incoming-call";
        let sig = compute(Algorithm::HmacSha1, b"new", url, &form);
        let keys: [&[u8]; 2] = [b"old", b"new"];
        assert_eq!(
            validate(Algorithm::HmacSha1, &keys, url, &form, &sig),
            Some(Verified { key_index: 1 })
        );
        assert_eq!(validate(Algorithm::HmacSha1, &keys[..1], url, &form, &sig), None);
        assert_eq!(validate(Algorithm::HmacSha1, &keys, url, &form, ""), None);
    }

    #[test]
    fn sha256_scheme_is_distinct_from_sha1() {
        let form = FormParams::from_pairs([("CallSid", "CA1")]);
        let url = "https://voice.example.com/x";
        let sig = compute(Algorithm::HmacSha256, b"shared", url, &form);
        assert_eq!(STANDARD.decode(&sig).unwrap().len(), 32);
        assert!(validate(Algorithm::HmacSha256, &[b"shared"], url, &form, &sig).is_some());
        assert!(validate(Algorithm::HmacSha1, &[b"shared"], url, &form, &sig).is_none());
    }

    #[test]
    fn settings_header_selects_algorithm() {
        assert_eq!(Algorithm::from_settings_header(None), Algorithm::HmacSha1);
        assert_eq!(
            Algorithm::from_settings_header(Some("SharedKey, algorithm=HMAC_SHA256")),
            Algorithm::HmacSha256
        );
    }
}

#[cfg(test)]
mod published_vectors {
    use super::*;

    #[derive(serde::Deserialize)]
    struct Vector {
        id: String,
        url: String,
        auth_token: String,
        params: Vec<(String, String)>,
        signature: String,
        expect_valid: bool,
        json_body: Option<String>,
    }

    fn vectors() -> Vec<Vector> {
        serde_json::from_str(include_str!("../../tests/fixtures/twilio-published-vectors.json")).unwrap()
    }

    #[test]
    fn twilio_published_vectors() {
        let vectors = vectors();
        assert_eq!(vectors.len(), 6);
        for v in vectors {
            let key = [v.auth_token.as_bytes()];
            let verified = match &v.json_body {
                Some(body) => validate_json_body(&key, &v.url, body.as_bytes(), &v.signature),
                None => {
                    let form = FormParams::from_pairs(v.params.clone());
                    validate(Algorithm::HmacSha1, &key, &v.url, &form, &v.signature)
                }
            };
            assert_eq!(verified.is_some(), v.expect_valid, "vector {}", v.id);
        }
    }

    #[test]
    fn docs_example_computes_exactly() {
        let v = vectors().into_iter().find(|v| v.id == "docs-example").unwrap();
        let form = FormParams::from_pairs(v.params);
        assert_eq!(
            compute(Algorithm::HmacSha1, v.auth_token.as_bytes(), &v.url, &form),
            v.signature
        );
    }

    #[test]
    fn every_single_byte_change_is_rejected() {
        let v = vectors().into_iter().find(|v| v.id == "sdk-shared").unwrap();
        let form = FormParams::from_pairs(v.params.clone());
        let key = [v.auth_token.as_bytes()];
        for i in 0..v.url.len() {
            let mut url = v.url.clone().into_bytes();
            url[i] ^= 0x01;
            let url = String::from_utf8_lossy(&url).into_owned();
            assert!(
                validate(Algorithm::HmacSha1, &key, &url, &form, &v.signature).is_none(),
                "url byte {i}"
            );
        }
        for i in 0..v.signature.len() {
            let mut sig = v.signature.clone().into_bytes();
            sig[i] ^= 0x01;
            let sig = String::from_utf8_lossy(&sig).into_owned();
            assert!(
                validate(Algorithm::HmacSha1, &key, &v.url, &form, &sig).is_none(),
                "signature byte {i}"
            );
        }
        let mut tampered = v.params.clone();
        tampered[1].1.push('0');
        let form = FormParams::from_pairs(tampered);
        assert!(validate(Algorithm::HmacSha1, &key, &v.url, &form, &v.signature).is_none());
        let body_vector = vectors().into_iter().find(|v| v.json_body.is_some()).unwrap();
        let key = [body_vector.auth_token.as_bytes()];
        let altered = body_vector.json_body.unwrap().replace("true", "false");
        assert!(
            validate_json_body(&key, &body_vector.url, altered.as_bytes(), &body_vector.signature).is_none()
        );
    }
}
