//! Step 1: nothing in a webhook is trusted until the route's tenant's key verified it.
use entity::{
    route,
    states::{CallStatus, DiagnosticKind},
    tenant,
};

use super::{InboundWebhook, Rejection, WebhookContext};
use crate::{
    db::{
        self,
        cache::{RouteCache, RouteEntry},
    },
    domain::{
        alerts::Occurrence,
        phone::{is_sid, CallSid, E164},
        Error,
    },
    twilio::signature::{self, Algorithm},
};

/// The fields of an authenticated webhook, parsed into types that cannot be wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VoiceForm {
    pub call_sid: CallSid,
    /// `To` as sent (E.164 when it selected the route; any text with `?route_id=`).
    pub to: String,
    pub from: Option<String>,
    pub call_status: Option<CallStatus>,
    pub call_duration: Option<i32>,
    pub error_code: Option<String>,
    pub error_url: Option<String>,
}

impl VoiceForm {
    /// Reads the fields the service uses; AccountSid, CallSid and To are required, and
    /// the schema of the webhook forms (`api::payload`) declares exactly these checks.
    pub fn parse(params: &crate::twilio::form::FormParams) -> Result<Self, String> {
        match params.get("AccountSid") {
            Some(sid) if is_sid(sid, "AC") => {}
            Some(_) => return Err("AccountSid must be AC followed by 32 hex digits".to_owned()),
            None => return Err("missing AccountSid".to_owned()),
        }
        let call_sid = match params.get("CallSid") {
            Some(sid) => CallSid::parse(sid)?,
            None => return Err("missing CallSid".to_owned()),
        };
        let to = match params.get("To") {
            Some("") => return Err("empty To".to_owned()),
            Some(to) => to.to_owned(),
            None => return Err("missing To".to_owned()),
        };
        let call_status = params
            .get("CallStatus")
            .map(|s| CallStatus::parse(s).ok_or_else(|| format!("unknown CallStatus {s:?}")))
            .transpose()?;
        let owned = |key| params.get(key).map(str::to_owned);
        Ok(Self {
            call_sid,
            to,
            from: owned("From"),
            call_status,
            call_duration: params.get("CallDuration").and_then(|d| d.parse().ok()),
            error_code: owned("ErrorCode"),
            error_url: owned("ErrorUrl"),
        })
    }
}

/// An authenticated webhook for a call on a known route.
#[derive(Debug, Clone)]
pub struct Authenticated {
    entry: RouteEntry,
    pub form: VoiceForm,
    /// The route came from the last known configuration: the database is unreachable.
    pub offline: bool,
}

impl Authenticated {
    /// The route the call came in on.
    pub fn route(&self) -> &route::Model {
        &self.entry.0
    }

    /// The route's tenant.
    pub fn tenant(&self) -> &tenant::Model {
        &self.entry.1
    }
}

/// Selects the signing key by route, validates the signature and the account, then parses the
/// form (a `status_callback` needs `CallStatus`, checked here only for unknown numbers). `None`: no route for the called number (counted as a diagnostic; the caller hears the
/// platform message).
pub async fn authenticate(
    ctx: WebhookContext<'_>,
    hook: &InboundWebhook,
    status_callback: bool,
) -> Result<Option<Authenticated>, Rejection> {
    // Nothing in the request is trusted yet: `To` only selects the key.
    let called = hook.params.get("To").map(E164::parse);
    let key = match (&hook.route_hint, &called) {
        (Some(route_id), _) => RouteKey::Id(route_id),
        (None, None) => return Err(Rejection::BadRequest("missing To".to_owned())),
        (None, Some(Ok(number))) => RouteKey::Number(number.as_str()),
        (None, Some(Err(_))) => RouteKey::NotANumber,
    };
    // While the database is known to be away, the last known configuration answers.
    let mut offline = ctx.outage.circuit_open();
    let found = if offline {
        key.known(ctx.routes)
    } else {
        match db::within_deadline(key.load(ctx)).await {
            Ok(found) => found,
            Err(e) if db::is_unavailable(&e) => {
                ctx.outage.failed(&e, ctx.diagnostics);
                offline = true;
                key.known(ctx.routes)
            }
            Err(e) => return Err(e.into()),
        }
    };
    let Some(entry) = found else {
        if offline {
            // Not a number this instance knows: it cannot tell an unknown number from a new one.
            return Err(Rejection::Failed(Error::Unavailable));
        }
        // No key can authenticate this request, so nothing in it is trusted; a form without
        // the fields every webhook carries is malformed (400) and not counted.
        let form = VoiceForm::parse(&hook.params).map_err(Rejection::BadRequest)?;
        if status_callback && form.call_status.is_none() {
            return Err(Rejection::BadRequest("missing CallStatus".to_owned()));
        }
        let key = match key {
            RouteKey::Id(_) => "(unknown route id)",
            RouteKey::Number(number) => number,
            RouteKey::NotANumber => "(not an E.164 number)",
        };
        ctx.metrics.unknown_routes.inc();
        let first = ctx.diagnostics.record(Occurrence {
            kind: DiagnosticKind::UnknownRoute,
            key,
            tenant_id: None,
            route_id: None,
            detail: None,
        });
        if first {
            tracing::info!(called = %key, "no route for called number");
        }
        return Ok(None);
    };
    let (route, tenant) = (&entry.0, &entry.1);
    if let Err(why) = check(hook, tenant) {
        match why {
            Refusal::Signature(why) => {
                // Logged once per route and flush interval (see `alerts`): a flood of forged
                // requests is not a flood of log lines.
                if ctx.diagnostics.signature_failure(route, tenant) {
                    tracing::warn!(route_id = %route.id, "{why}");
                }
                return Err(Rejection::Forbidden(why));
            }
            Refusal::Account => {
                ctx.diagnostics.record(Occurrence {
                    kind: DiagnosticKind::AccountMismatch,
                    key: &route.id,
                    tenant_id: Some(&tenant.id),
                    route_id: Some(&route.id),
                    detail: Some("AccountSid does not match the route's tenant".to_owned()),
                });
                return Err(Rejection::Forbidden(
                    "AccountSid does not match this number's account",
                ));
            }
        }
    }
    // The request is authentic: its fields can be trusted from here on.
    let form = VoiceForm::parse(&hook.params).map_err(Rejection::BadRequest)?;
    Ok(Some(Authenticated { entry, form, offline }))
}

/// What selects the route: the id in the URL, else the called number.
enum RouteKey<'a> {
    Id(&'a str),
    Number(&'a str),
    /// `To` is not a phone number: no route has it.
    NotANumber,
}

impl RouteKey<'_> {
    async fn load(&self, ctx: WebhookContext<'_>) -> Result<Option<RouteEntry>, sea_orm::DbErr> {
        match self {
            Self::Id(id) => ctx.routes.by_id(ctx.db, id).await,
            Self::Number(number) => ctx.routes.by_number(ctx.db, number).await,
            Self::NotANumber => Ok(None),
        }
    }

    fn known(&self, routes: &RouteCache) -> Option<RouteEntry> {
        match self {
            Self::Id(id) => routes.known_by_id(id),
            Self::Number(number) => routes.known_by_number(number),
            Self::NotANumber => None,
        }
    }
}

/// Why an authentic-looking request was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Refusal {
    Signature(&'static str),
    Account,
}

/// The signature, then the account: both must be the tenant's.
fn check(hook: &InboundWebhook, tenant: &tenant::Model) -> Result<(), Refusal> {
    if !signature_valid(hook, tenant) {
        return Err(Refusal::Signature(if hook.signature.is_none() {
            "missing X-Twilio-Signature"
        } else {
            "invalid X-Twilio-Signature"
        }));
    }
    if hook.params.get("AccountSid") != Some(tenant.account_sid.as_str()) {
        return Err(Refusal::Account);
    }
    Ok(())
}

/// Whether the request is signed with one of the tenant's keys for the algorithm it names:
/// the primary or secondary auth token (HMAC-SHA1) or the shared key (HMAC-SHA256).
pub fn signature_valid(hook: &InboundWebhook, tenant: &tenant::Model) -> bool {
    let Some(sig) = hook.signature.as_deref() else {
        return false;
    };
    let algorithm = Algorithm::from_settings_header(hook.signature_settings.as_deref());
    let keys: Vec<&[u8]> = match algorithm {
        Algorithm::HmacSha1 => std::iter::once(tenant.auth_token.as_bytes())
            .chain(tenant.secondary_auth_token.as_deref().map(str::as_bytes))
            .collect(),
        Algorithm::HmacSha256 => tenant
            .shared_key
            .as_deref()
            .map(str::as_bytes)
            .into_iter()
            .collect(),
    };
    signature::validate(algorithm, &keys, &hook.url, &hook.params, sig).is_some()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        domain::webhook::fixtures::{tenant_with, ACCOUNT_SID, AUTH_TOKEN},
        twilio::form::FormParams,
    };

    const URL: &str = "https://voice.example.com/api/v1/incoming-call";

    fn form(extra: &[(&str, &str)]) -> FormParams {
        let mut pairs = vec![
            ("AccountSid", ACCOUNT_SID),
            ("CallSid", "CA0123456789abcdef0123456789abcdef"),
            ("From", "+15555550199"),
            ("To", "+15555550100"),
        ];
        pairs.extend_from_slice(extra);
        FormParams::from_pairs(pairs)
    }

    fn signed(params: FormParams, key: &str) -> InboundWebhook {
        let signature = signature::compute(Algorithm::HmacSha1, key.as_bytes(), URL, &params);
        InboundWebhook {
            url: URL.to_owned(),
            params,
            signature: Some(signature),
            signature_settings: None,
            route_hint: None,
        }
    }

    #[test]
    fn a_request_signed_with_the_primary_or_secondary_token_of_the_account_passes() {
        let mut tenant = tenant_with(None);
        assert_eq!(check(&signed(form(&[]), AUTH_TOKEN), &tenant), Ok(()));
        tenant.secondary_auth_token = Some("next-token".to_owned());
        assert_eq!(check(&signed(form(&[]), "next-token"), &tenant), Ok(()));
    }

    #[test]
    fn a_wrong_or_missing_signature_is_refused_before_the_account_is_looked_at() {
        let tenant = tenant_with(None);
        let forged = signed(form(&[("AccountSid", "AC-other")]), "not-the-token");
        assert_eq!(
            check(&forged, &tenant),
            Err(Refusal::Signature("invalid X-Twilio-Signature"))
        );
        let unsigned = InboundWebhook {
            signature: None,
            ..signed(form(&[]), AUTH_TOKEN)
        };
        assert_eq!(
            check(&unsigned, &tenant),
            Err(Refusal::Signature("missing X-Twilio-Signature"))
        );
        // The body changed after signing.
        let mut tampered = signed(form(&[]), AUTH_TOKEN);
        tampered.params.push("Digits", "1");
        assert!(matches!(check(&tampered, &tenant), Err(Refusal::Signature(_))));
    }

    #[test]
    fn a_valid_signature_from_another_account_is_refused() {
        let tenant = tenant_with(None);
        let mut params = FormParams::from_pairs([("CallSid", "CA1"), ("To", "+15555550100")]);
        params.push("AccountSid", "AC00000000000000000000000000000002");
        assert_eq!(check(&signed(params, AUTH_TOKEN), &tenant), Err(Refusal::Account));
    }

    #[test]
    fn the_sha256_scheme_uses_only_the_shared_key() {
        let mut tenant = tenant_with(None);
        let params = form(&[]);
        let sig = signature::compute(Algorithm::HmacSha256, b"shared-key", URL, &params);
        let hook = InboundWebhook {
            url: URL.to_owned(),
            params,
            signature: Some(sig),
            signature_settings: Some("HMAC_SHA256".to_owned()),
            route_hint: None,
        };
        assert!(!signature_valid(&hook, &tenant), "no shared key configured");
        tenant.shared_key = Some("shared-key".to_owned());
        assert!(signature_valid(&hook, &tenant));
    }

    #[test]
    fn the_form_is_parsed_into_typed_fields() {
        let parsed = VoiceForm::parse(&form(&[
            ("CallStatus", "in-progress"),
            ("CallDuration", "42"),
            ("ErrorCode", "11200"),
        ]))
        .unwrap();
        assert_eq!(parsed.call_sid.as_str(), "CA0123456789abcdef0123456789abcdef");
        assert_eq!(parsed.to, "+15555550100");
        assert_eq!(parsed.from.as_deref(), Some("+15555550199"));
        assert_eq!(parsed.call_status, Some(CallStatus::InProgress));
        assert_eq!(parsed.call_duration, Some(42));
        assert_eq!(parsed.error_code.as_deref(), Some("11200"));
    }

    #[test]
    fn missing_or_malformed_fields_are_named() {
        let without = |key: &str| {
            FormParams::from_pairs(
                form(&[])
                    .pairs()
                    .iter()
                    .filter(|(k, _)| k != key)
                    .cloned()
                    .collect::<Vec<_>>(),
            )
        };
        assert_eq!(
            VoiceForm::parse(&without("CallSid")).unwrap_err(),
            "missing CallSid"
        );
        assert_eq!(VoiceForm::parse(&without("To")).unwrap_err(), "missing To");
        let mut injected = without("CallSid");
        injected.push("CallSid", "CA'; DROP");
        assert!(VoiceForm::parse(&injected).unwrap_err().contains("CallSid"));
        assert_eq!(
            VoiceForm::parse(&form(&[("CallStatus", "exploded")])).unwrap_err(),
            "unknown CallStatus \"exploded\""
        );
    }
}
