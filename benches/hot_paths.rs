//! Micro-benchmarks of the webhook's hot paths.
use criterion::{criterion_group, criterion_main, Criterion};
use entity::id::{RouteId, TenantId};
use stateset_voice::{
    domain::{phone::CallSid, token::TokenIssuer},
    twilio::{
        form::FormParams,
        signature::{compute, validate, Algorithm},
        twiml::{render, Verb},
    },
};

fn form() -> FormParams {
    let examples: serde_json::Value =
        serde_json::from_str(include_str!("../tests/fixtures/twilio-callback-examples.json")).unwrap();
    FormParams::from_pairs(examples["incoming_call"].as_array().unwrap().iter().map(|p| {
        (
            p[0].as_str().unwrap().to_owned(),
            p[1].as_str().unwrap().to_owned(),
        )
    }))
}

fn benches(c: &mut Criterion) {
    let form = form();
    let body = form.encode();
    let url = "https://voice.example.com/api/v1/incoming-call";
    let sig = compute(
        Algorithm::HmacSha1,
        b"0123456789abcdef0123456789abcdef",
        url,
        &form,
    );
    c.bench_function("form_parse_27_fields", |b| {
        b.iter(|| FormParams::parse(body.as_bytes()).unwrap())
    });
    c.bench_function("signature_validate_valid", |b| {
        b.iter(|| {
            validate(
                Algorithm::HmacSha1,
                &[b"0123456789abcdef0123456789abcdef"],
                url,
                &form,
                &sig,
            )
            .unwrap()
        })
    });
    c.bench_function("signature_validate_forged_two_keys", |b| {
        b.iter(|| validate(Algorithm::HmacSha1, &[b"k1", b"k2"], url, &form, &sig).is_none())
    });
    let issuer = TokenIssuer::new(
        b"bench-token-secret-0123456789abcdef0123",
        std::time::Duration::from_secs(60),
    );
    let call_sid = CallSid::parse("CAa1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1").expect("a CallSid");
    let tenant_id = TenantId("01a20e67-6fdf-7552-87b9-f623a69facb6".to_owned());
    let route_id = RouteId("01a20e67-6fe0-7572-aa46-4be3bb53ad28".to_owned());
    c.bench_function("token_mint", |b| {
        b.iter(|| issuer.mint(&call_sid, &tenant_id, &route_id))
    });
    let token = issuer.mint(&call_sid, &tenant_id, &route_id).token;
    c.bench_function("twiml_render_connect_stream", |b| {
        b.iter(|| {
            render(&[Verb::ConnectStream {
                action: "https://voice.example.com/api/v1/stream-ended".to_owned(),
                stream_url: format!("wss://voice.example.com/media-stream?stream_token={token}"),
                parameters: vec![("stream_token".to_owned(), token.clone())],
            }])
        })
    });
}

criterion_group!(hot_paths, benches);
criterion_main!(hot_paths);
