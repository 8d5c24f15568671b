//! Signature validation over HTTP: how the signed URL is reconstructed and which keys count.
use stateset_voice::{
    domain::admin::{NewRoute, NewTenant},
    twilio::{
        form::FormParams,
        signature::{compute, Algorithm},
    },
};

use stateset_voice::{backend_test, testkit::*};

async fn post_with_signature(
    app: &TestApp,
    path: &str,
    form: &FormParams,
    sig: &str,
    extra: &[(&str, &str)],
) -> u16 {
    let mut headers = vec![("X-Twilio-Signature", sig)];
    headers.extend_from_slice(extra);
    app.post_raw(path, form.encode().into_bytes(), &headers)
        .await
        .status()
        .as_u16()
}

backend_test!(public_url_not_host_header_is_signed_with_port_variants, |a| {
    a.public_url = "https://voice.example.com/tw".to_owned();
});
async fn public_url_not_host_header_is_signed_with_port_variants(app: TestApp) {
    app.seed().await;
    let form = incoming_form(&call_sid());
    let sign = |url: &str| compute(Algorithm::HmacSha1, AUTH_TOKEN.as_bytes(), url, &form);
    let path = "/api/v1/incoming-call";
    // The service is reached at 127.0.0.1:PORT but Twilio signed the public URL.
    assert_eq!(
        post_with_signature(
            &app,
            path,
            &form,
            &sign("https://voice.example.com/tw/api/v1/incoming-call"),
            &[]
        )
        .await,
        200
    );
    assert_eq!(
        post_with_signature(
            &app,
            path,
            &form,
            &sign("https://voice.example.com:443/tw/api/v1/incoming-call"),
            &[]
        )
        .await,
        200
    );
    assert_eq!(
        post_with_signature(&app, path, &form, &sign(&format!("{}{path}", app.base)), &[]).await,
        403
    );
    assert_eq!(
        post_with_signature(
            &app,
            path,
            &form,
            &sign("http://voice.example.com/tw/api/v1/incoming-call"),
            &[]
        )
        .await,
        403
    );
}

backend_test!(an_upper_case_scheme_accepts_the_lower_case_signature, |a| {
    a.public_url = "HTTPS://voice.example.com/tw".to_owned();
});
async fn an_upper_case_scheme_accepts_the_lower_case_signature(app: TestApp) {
    // As Twilio's helper libraries do: the scheme's case does not matter, the host's does.
    app.seed().await;
    let path = "/api/v1/incoming-call";
    for (signed, status) in [
        ("https://voice.example.com/tw/api/v1/incoming-call", 200),
        ("https://voice.example.com:443/tw/api/v1/incoming-call", 200),
        ("HTTPS://voice.example.com/tw/api/v1/incoming-call", 200),
        ("https://Voice.example.com/tw/api/v1/incoming-call", 403),
        ("http://voice.example.com/tw/api/v1/incoming-call", 403),
    ] {
        let form = incoming_form(&call_sid());
        let sig = compute(Algorithm::HmacSha1, AUTH_TOKEN.as_bytes(), signed, &form);
        assert_eq!(
            post_with_signature(&app, path, &form, &sig, &[]).await,
            status,
            "{signed}"
        );
    }
}

backend_test!(
    a_forwarded_upper_case_scheme_accepts_the_lower_case_signature,
    |a| {
        a.trust_forwarded = true;
    }
);
async fn a_forwarded_upper_case_scheme_accepts_the_lower_case_signature(app: TestApp) {
    app.seed().await;
    let form = incoming_form(&call_sid());
    let sig = compute(
        Algorithm::HmacSha1,
        AUTH_TOKEN.as_bytes(),
        "https://proxy.example.net/api/v1/incoming-call",
        &form,
    );
    let headers = [
        ("X-Forwarded-Proto", "HTTPS"),
        ("X-Forwarded-Host", "proxy.example.net"),
    ];
    assert_eq!(
        post_with_signature(&app, "/api/v1/incoming-call", &form, &sig, &headers).await,
        200
    );
}

backend_test!(raw_query_string_is_part_of_the_signed_url);
async fn raw_query_string_is_part_of_the_signed_url(app: TestApp) {
    app.seed().await;
    let form = incoming_form(&call_sid());
    let path = "/api/v1/incoming-call?b=2&a=%20x+y&empty=";
    let sig = compute(
        Algorithm::HmacSha1,
        AUTH_TOKEN.as_bytes(),
        &app.public(path),
        &form,
    );
    assert_eq!(post_with_signature(&app, path, &form, &sig, &[]).await, 200);
    // The same query re-encoded is a different URL.
    let reencoded = "/api/v1/incoming-call?b=2&a=%20x%20y&empty=";
    assert_eq!(post_with_signature(&app, reencoded, &form, &sig, &[]).await, 403);
}

backend_test!(forwarded_headers_count_only_when_trusted, |a| {
    a.trust_forwarded = false;
});
async fn forwarded_headers_count_only_when_trusted(untrusting: TestApp) {
    let trusting = untrusting.another(|a| a.trust_forwarded = true).await;
    for (trusted, app) in [(false, untrusting), (true, trusting)] {
        app.seed().await;
        let form = incoming_form(&call_sid());
        let sig = compute(
            Algorithm::HmacSha1,
            AUTH_TOKEN.as_bytes(),
            "https://proxy.example.net/api/v1/incoming-call",
            &form,
        );
        let headers = [
            ("X-Forwarded-Proto", "https"),
            ("X-Forwarded-Host", "proxy.example.net"),
        ];
        let status = post_with_signature(&app, "/api/v1/incoming-call", &form, &sig, &headers).await;
        assert_eq!(status, if trusted { 200 } else { 403 }, "trusted={trusted}");
    }
}

backend_test!(secondary_token_is_accepted_during_rotation);
async fn secondary_token_is_accepted_during_rotation(app: TestApp) {
    app.seed_with(
        NewTenant {
            secondary_auth_token: Some("next-token-abc".to_owned()),
            ..Default::default()
        },
        NewRoute::default(),
    )
    .await;
    assert_eq!(
        app.post_signed(
            "/api/v1/incoming-call",
            &incoming_form(&call_sid()),
            "next-token-abc"
        )
        .await
        .status(),
        200
    );
    assert_eq!(
        app.post_signed("/api/v1/incoming-call", &incoming_form(&call_sid()), AUTH_TOKEN)
            .await
            .status(),
        200
    );
}

backend_test!(shared_key_sha256_when_twilio_says_so);
async fn shared_key_sha256_when_twilio_says_so(app: TestApp) {
    app.seed_with(
        NewTenant {
            shared_key: Some("customer-shared-key".to_owned()),
            ..Default::default()
        },
        NewRoute::default(),
    )
    .await;
    let form = incoming_form(&call_sid());
    let url = app.public("/api/v1/incoming-call");
    let settings = [(
        "X-Twilio-Webhooks-Signature-Settings",
        "SharedKey, algorithm=HMAC_SHA256",
    )];
    let sha256 = compute(Algorithm::HmacSha256, b"customer-shared-key", &url, &form);
    assert_eq!(
        post_with_signature(&app, "/api/v1/incoming-call", &form, &sha256, &settings).await,
        200
    );
    // The auth-token SHA-1 signature does not satisfy the SHA-256 scheme, nor the reverse.
    let sha1 = compute(Algorithm::HmacSha1, AUTH_TOKEN.as_bytes(), &url, &form);
    assert_eq!(
        post_with_signature(&app, "/api/v1/incoming-call", &form, &sha1, &settings).await,
        403
    );
    assert_eq!(
        post_with_signature(&app, "/api/v1/incoming-call", &form, &sha256, &[]).await,
        403
    );
}

backend_test!(unicode_plus_and_repeated_fields_are_signed_decoded);
async fn unicode_plus_and_repeated_fields_are_signed_decoded(app: TestApp) {
    app.seed().await;
    let mut form = incoming_form(&call_sid());
    form.push("CallerName", "José Ünïcødé + Søn");
    form.push("SpeechResult", "a+b=c&d");
    form.push("Digits", "2");
    form.push("Digits", "1");
    form.push("Empty", "");
    assert_eq!(
        app.post_signed("/api/v1/incoming-call", &form, AUTH_TOKEN)
            .await
            .status(),
        200
    );
    // `+` in a raw body is a space: a body spelling the plus literally signs differently.
    let body = form.encode().replace("SpeechResult=a%2Bb", "SpeechResult=a+b");
    assert!(body.contains("SpeechResult=a+b%3Dc%26d"), "{body}");
    let sig = compute(
        Algorithm::HmacSha1,
        AUTH_TOKEN.as_bytes(),
        &app.public("/api/v1/incoming-call"),
        &form,
    );
    let res = app
        .post_raw(
            "/api/v1/incoming-call",
            body.into_bytes(),
            &[("X-Twilio-Signature", &sig)],
        )
        .await;
    assert_eq!(res.status(), 403);
}
