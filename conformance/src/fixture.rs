//! The fixture schema: a recorded Twilio exchange (decoded form fields in arrival order, the
//! signature Twilio sent, headers) and the tenant and route state it expects; the keys the
//! fixtures are signed with; loading them from `fixtures/`.
use std::{collections::BTreeMap, path::PathBuf};

use serde::{Deserialize, Serialize};
use stateset_voice::{
    domain::fallback::FallbackAction,
    twilio::{
        form::FormParams,
        signature::{self, Algorithm},
    },
};

use crate::media_step::MediaStream;

/// The public URL every fixture is signed for.
pub const PUBLIC_URL: &str = "https://voice.example.com";
/// The tenant's primary auth token.
pub const AUTH_TOKEN: &str = "conformance-primary-auth-token";
/// The tenant's secondary auth token, when a fixture asks for one.
pub const SECONDARY_AUTH_TOKEN: &str = "conformance-secondary-auth-token";
/// The tenant's HMAC-SHA256 shared key, when a fixture asks for one.
pub const SHARED_KEY: &str = "conformance-shared-key";

/// One recorded scenario.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Fixture {
    pub description: String,
    #[serde(default)]
    pub setup: Setup,
    pub requests: Vec<Request>,
}

/// The state a fixture expects before its requests.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Setup {
    /// `production` (default) or `sandbox`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tenant_environment: Option<String>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub secondary_auth_token: bool,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub shared_key: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tenant_default_fallback: Option<FallbackAction>,
    /// `production` (default) or `test`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub route_environment: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub route_enabled: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub route_fallback: Option<FallbackAction>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub route_agent_url: Option<String>,
    /// More numbers routed to the same tenant.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub extra_numbers: Vec<String>,
    /// No tenant or route at all.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub no_routes: bool,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub draining: bool,
    /// Media streams already open on the instance.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub open_streams: Option<usize>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub agent_failing: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_streams: Option<usize>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alert_threshold: Option<u32>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub trust_forwarded: bool,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub token_in_path: bool,
}

/// One recorded request.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Request {
    /// Path and raw query, as Twilio requested it.
    pub path: String,
    /// Decoded form fields in arrival order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub form: Vec<(String, String)>,
    /// A raw body (hex) sent instead of the encoded form, for malformed input.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body_hex: Option<String>,
    /// A body of this many `a` bytes, sent instead of the form.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body_size: Option<usize>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content_type: Option<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub headers: BTreeMap<String, String>,
    /// The key Twilio signed with (`primary`, `secondary`, `shared_key`), if it was genuine.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signed_with: Option<String>,
    /// The URL Twilio signed, when not the public URL + path.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signed_url: Option<String>,
    /// The `X-Twilio-Signature` Twilio sent; absent for unsigned requests.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signature: Option<String>,
    /// How many times the request is delivered (retries).
    #[serde(default = "one", skip_serializing_if = "is_one")]
    pub times: usize,
    /// Deliver all `times` copies at once.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub concurrent: bool,
    /// After the answer, open the stream of its `<Stream>` and play it (see `media_step`).
    /// The next request, if any, is Twilio's `<Connect action>` callback.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub media_stream: Option<MediaStream>,
}

fn one() -> usize {
    1
}

fn is_one(n: &usize) -> bool {
    *n == 1
}

impl Request {
    /// The decoded form fields.
    pub(crate) fn form(&self) -> FormParams {
        FormParams::from_pairs(self.form.clone())
    }

    /// The URL Twilio signed.
    pub(crate) fn signed_url(&self) -> String {
        self.signed_url
            .clone()
            .unwrap_or_else(|| format!("{PUBLIC_URL}{}", self.path))
    }

    /// The signature a genuine request carries, computed from the fixture's key.
    pub fn genuine_signature(&self) -> Option<String> {
        let (algorithm, key) = match self.signed_with.as_deref()? {
            "primary" => (Algorithm::HmacSha1, AUTH_TOKEN),
            "secondary" => (Algorithm::HmacSha1, SECONDARY_AUTH_TOKEN),
            "shared_key" => (Algorithm::HmacSha256, SHARED_KEY),
            other => panic!("unknown signing key {other:?}"),
        };
        Some(signature::compute(
            algorithm,
            key.as_bytes(),
            &self.signed_url(),
            &self.form(),
        ))
    }

    /// The body as sent.
    pub(crate) fn body(&self) -> Vec<u8> {
        if let Some(hex_body) = &self.body_hex {
            return hex::decode(hex_body).expect("body_hex is hex");
        }
        if let Some(size) = self.body_size {
            return vec![b'a'; size];
        }
        self.form().encode().into_bytes()
    }
}

impl Fixture {
    /// The media-stream steps of the requests, in order.
    pub(crate) fn media_streams(&self) -> impl Iterator<Item = &MediaStream> {
        self.requests.iter().filter_map(|r| r.media_stream.as_ref())
    }
}

/// The fixtures directory.
pub fn fixtures_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fixtures")
}

/// All fixtures, by name, sorted.
pub fn load_fixtures() -> Vec<(String, Fixture)> {
    let mut out: Vec<(String, Fixture)> = std::fs::read_dir(fixtures_dir())
        .expect("fixtures directory")
        .map(|e| e.expect("dir entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .map(|p| {
            let name = p.file_stem().unwrap().to_string_lossy().into_owned();
            let text = std::fs::read_to_string(&p).expect("fixture readable");
            let fixture = serde_json::from_str(&text).unwrap_or_else(|e| panic!("fixture {name}: {e}"));
            (name, fixture)
        })
        .collect();
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}
