//! `X-Twilio-Signature` validation on arbitrary URLs, parameters, keys and signatures.
//!
//! Beyond not panicking: a signature is accepted exactly when it equals one that `compute`
//! gives for some key and URL variant, and then the first such key is reported; a computed
//! signature is always accepted and one with a byte changed is not. The JSON-body scheme
//! accepts only a body whose SHA-256 the URL names, under a signature of that URL.
//!
//! Input: a few derived header bytes, then newline-separated `url`, primary key, secondary key,
//! signature and a form body (as posted), then the JSON body (rest of the input).
#![no_main]

use arbitrary::{Arbitrary, Unstructured};
use libfuzzer_sys::fuzz_target;
use stateset_voice::twilio::{
    form::FormParams,
    signature::{self, Algorithm, Verified},
};

#[derive(Arbitrary, Debug)]
struct Input {
    /// HMAC-SHA256 with a shared key instead of HMAC-SHA1 with the auth token.
    sha256: bool,
    /// Pass the secondary key too.
    two_keys: bool,
    /// Chooses the computed signature to corrupt and the byte to change.
    flip: u16,
    case: Case,
}

#[derive(Debug)]
struct Case {
    url: String,
    keys: [Vec<u8>; 2],
    signature: String,
    form: FormParams,
    json_body: Vec<u8>,
}

impl Case {
    fn from_bytes(data: &[u8]) -> Self {
        let mut fields = data.splitn(6, |b| *b == b'\n');
        let mut next = || fields.next().unwrap_or_default();
        let text = |bytes: &[u8]| String::from_utf8_lossy(bytes).into_owned();
        let url = text(next());
        let keys = [next().to_vec(), next().to_vec()];
        let signature = text(next());
        // A body the strict parser refuses never reaches validation; keep no parameters then.
        let form = FormParams::parse(next()).unwrap_or_default();
        Self {
            url,
            keys,
            signature,
            form,
            json_body: next().to_vec(),
        }
    }
}

impl<'a> Arbitrary<'a> for Case {
    fn arbitrary(u: &mut Unstructured<'a>) -> arbitrary::Result<Self> {
        let len = u.arbitrary_len::<u8>()?;
        Ok(Self::from_bytes(u.bytes(len)?))
    }

    fn arbitrary_take_rest(u: Unstructured<'a>) -> arbitrary::Result<Self> {
        Ok(Self::from_bytes(u.take_rest()))
    }
}

fuzz_target!(|input: Input| {
    let Case {
        url,
        keys,
        signature: claimed,
        form,
        json_body,
    } = &input.case;
    let (algorithm, other) = if input.sha256 {
        (Algorithm::HmacSha256, Algorithm::HmacSha1)
    } else {
        (Algorithm::HmacSha1, Algorithm::HmacSha256)
    };
    let keys: Vec<&[u8]> = keys[..1 + usize::from(input.two_keys)]
        .iter()
        .map(Vec::as_slice)
        .collect();

    let variants = signature::url_variants(url);
    // The URL and its port variant; with an upper-case scheme, up to two lower-case-scheme
    // variants too, and those differ from the URL received only in the scheme's case and port.
    let upper_case_scheme = url
        .bytes()
        .take_while(|b| *b != b':')
        .any(|b| b.is_ascii_uppercase());
    let most = if upper_case_scheme { 4 } else { 2 };
    assert!((1..=most).contains(&variants.len()), "{variants:?}");
    assert_eq!(variants[0], url.as_str(), "the URL as received is tried first");
    for variant in variants.iter().skip(2) {
        let (scheme, _) = variant
            .split_once("://")
            .expect("a lower-cased scheme variant has ://");
        assert!(
            !scheme.bytes().any(|b| b.is_ascii_uppercase()),
            "{variant:?} keeps an upper-case scheme"
        );
        assert!(
            scheme.eq_ignore_ascii_case(&url[..scheme.len()]),
            "{variant:?} from {url:?}"
        );
    }

    // Every signature Twilio could have sent for these inputs, per key.
    let computed: Vec<Vec<String>> = keys
        .iter()
        .map(|key| {
            variants
                .iter()
                .map(|variant| signature::compute(algorithm, key, variant, form))
                .collect()
        })
        .collect();
    let expected = |candidate: &str| {
        computed
            .iter()
            .position(|sigs| sigs.iter().any(|s| s == candidate))
            .filter(|_| !candidate.is_empty())
            .map(|key_index| Verified { key_index })
    };
    let validate = |candidate: &str| signature::validate(algorithm, &keys, url, form, candidate);

    assert_eq!(
        validate(claimed),
        expected(claimed),
        "arbitrary signature {claimed:?}"
    );
    for sigs in &computed {
        for sig in sigs {
            assert!(validate(sig).is_some(), "computed signature refused");
            assert_eq!(validate(sig), expected(sig));
            assert!(
                signature::validate(other, &keys, url, form, sig).is_none(),
                "accepted under the other algorithm"
            );
        }
    }

    let all: Vec<&String> = computed.iter().flatten().collect();
    let mut corrupted = all[usize::from(input.flip) % all.len()].clone().into_bytes();
    let at = usize::from(input.flip >> 8) % corrupted.len();
    corrupted[at] ^= 0x01;
    let corrupted = String::from_utf8(corrupted).expect("base64 stays ASCII");
    assert_eq!(validate(&corrupted), expected(&corrupted), "corrupted signature");

    // JSON bodies: the signature covers the URL alone and the URL names the body's digest.
    let accepted = signature::validate_json_body(&keys, url, json_body, claimed);
    if let Some(verified) = accepted {
        let url_only = signature::validate(Algorithm::HmacSha1, &keys, url, &FormParams::default(), claimed);
        assert_eq!(url_only, Some(verified));
        let query = url.split_once('?').map_or("", |(_, q)| q);
        let query = FormParams::parse(query.split('#').next().unwrap_or("").as_bytes());
        let digest = signature::body_sha256_hex(json_body);
        assert_eq!(
            query.ok().as_ref().and_then(|q| q.get("bodySHA256")),
            Some(digest.as_str())
        );
    }
    if !url.contains(['?', '#']) {
        let signed_url = format!("{url}?bodySHA256={}", signature::body_sha256_hex(json_body));
        let sig = signature::compute(Algorithm::HmacSha1, keys[0], &signed_url, &FormParams::default());
        assert_eq!(
            signature::validate_json_body(&keys, &signed_url, json_body, &sig),
            Some(Verified { key_index: 0 })
        );
        let mut altered = json_body.clone();
        altered.push(b' ');
        assert_eq!(
            signature::validate_json_body(&keys, &signed_url, &altered, &sig),
            None
        );
    }
});
