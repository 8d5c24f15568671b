//! `FormParams::parse` on arbitrary bytes: never panics, reports escape errors where a `%`
//! stands, and whatever it accepts survives `encode` and a second parse unchanged.
#![no_main]

use libfuzzer_sys::fuzz_target;
use stateset_voice::twilio::form::{FormError, FormParams, MAX_FIELDS};

fuzz_target!(|body: &[u8]| {
    let form = match FormParams::parse(body) {
        Ok(form) => form,
        Err(FormError::InvalidEscape(at)) => {
            assert_eq!(body.get(at), Some(&b'%'), "escape error must point at a '%'");
            return;
        }
        Err(_) => return,
    };
    assert!(form.pairs().len() <= MAX_FIELDS);
    for (key, value) in form.pairs() {
        assert!(!key.contains('\0') && !value.contains('\0'));
    }

    let encoded = form.encode();
    assert!(
        encoded
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-._*+%=&".contains(&b)),
        "encoding leaves only unreserved characters: {encoded:?}"
    );
    let again = FormParams::parse(encoded.as_bytes()).expect("an encoded form parses");
    assert_eq!(again.pairs(), form.pairs());
    assert_eq!(again.encode(), encoded, "encoding is canonical");
});
