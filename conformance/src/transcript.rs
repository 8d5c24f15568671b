//! The transcript a replay renders for its snapshot: each request, its distinct answers, and
//! the stored calls, media sessions, events, diagnostics and alerts afterwards.
use std::{collections::BTreeMap, fmt::Write as _};

use sea_orm::{EntityTrait, QueryOrder};
use stateset_voice::testkit::TestApp;

use crate::fixture::Request;

/// The line introducing `request`: path, how it was signed, how many deliveries.
pub(crate) fn request_heading(request: &Request) -> String {
    format!(
        "\n>>> POST {} ({}{})\n",
        request.path,
        request
            .signed_with
            .as_deref()
            .map_or_else(|| describe_unsigned(request), |k| format!("signed: {k}")),
        if request.times > 1 {
            format!(
                ", {} deliveries{}",
                request.times,
                if request.concurrent { " at once" } else { "" }
            )
        } else {
            String::new()
        }
    )
}

fn describe_unsigned(request: &Request) -> String {
    match &request.signature {
        Some(_) => "forged signature".to_owned(),
        None => "no signature".to_owned(),
    }
}

/// The answers to the deliveries of one request, as (status, content type, redacted body);
/// identical answers are written once, with their count.
pub(crate) fn answers(answers: Vec<(u16, String, String)>) -> String {
    let mut distinct: Vec<(u16, String, String, usize)> = Vec::new();
    for (status, content_type, body) in answers {
        match distinct
            .iter_mut()
            .find(|d| d.0 == status && d.1 == content_type && d.2 == body)
        {
            Some(d) => d.3 += 1,
            None => distinct.push((status, content_type, body, 1)),
        }
    }
    let mut out = String::new();
    for (status, content_type, body, count) in distinct {
        let times = if count > 1 {
            format!(" (x{count})")
        } else {
            String::new()
        };
        let _ = write!(out, "<<< {status} {content_type}{times}\n{body}");
        if !body.ends_with('\n') {
            out.push('\n');
        }
    }
    out
}

/// The stored state after the requests, seeded routes shown by `route_names`; `streams` adds
/// the media sessions.
pub(crate) async fn stored_state(
    app: &TestApp,
    route_names: Option<&BTreeMap<String, String>>,
    streams: bool,
) -> String {
    app.flush().await;
    // Retry counts are queued, not waited for: write them before reading.
    app.state.writer.settle().await;
    let db = &app.state.db;
    let name_route = |id: &str| {
        route_names
            .and_then(|names| names.get(id).cloned())
            .unwrap_or_else(|| id.to_owned())
    };
    let mut out = String::from("\n=== stored\ncalls:\n");
    let calls = entity::call::Entity::find()
        .order_by_asc(entity::call::Column::Id)
        .all(db)
        .await
        .expect("calls");
    if calls.is_empty() {
        out.push_str("  (none)\n");
    }
    let call_sids: BTreeMap<String, String> =
        calls.iter().map(|c| (c.id.clone(), c.call_sid.clone())).collect();
    for c in calls {
        let _ = writeln!(
            out,
            "  {} {} -> {} on {}: status={} outcome={} reason={} attempts={} error={}",
            c.call_sid,
            c.from_number,
            c.to_number,
            name_route(&c.route_id),
            c.status,
            c.outcome,
            c.fallback_reason.map_or("-", |r| r.as_str()),
            c.attempts,
            c.error_code.as_deref().unwrap_or("-"),
        );
    }
    if streams {
        out.push_str(&media_sessions(app, &call_sids).await);
    }
    let events = entity::outbox_event::Entity::find()
        .order_by_asc(entity::outbox_event::Column::Id)
        .all(db)
        .await
        .expect("events");
    let types: Vec<String> = events.into_iter().map(|e| e.event_type.to_string()).collect();
    let _ = writeln!(
        out,
        "events: {}",
        if types.is_empty() {
            "(none)".to_owned()
        } else {
            types.join(", ")
        }
    );
    out.push_str("diagnostics:\n");
    let mut diags = entity::diagnostic::Entity::find()
        .all(db)
        .await
        .expect("diagnostics");
    diags.sort_by(|a, b| (a.kind.as_str(), &a.key).cmp(&(b.kind.as_str(), &b.key)));
    if diags.is_empty() {
        out.push_str("  (none)\n");
    }
    for d in diags {
        let _ = writeln!(out, "  {} {}: {}", d.kind, name_route(&d.key), d.count);
    }
    let alerts = entity::alert::Entity::find().all(db).await.expect("alerts");
    let _ = writeln!(out, "alerts: {}", alerts.len());
    for a in alerts {
        let _ = writeln!(
            out,
            "  {} on {}: {} failures",
            a.kind,
            name_route(a.route_id.as_deref().unwrap_or("-")),
            a.failure_count
        );
    }
    out
}

/// The stored media sessions, by call.
async fn media_sessions(app: &TestApp, call_sids: &BTreeMap<String, String>) -> String {
    let mut sessions = entity::media_session::Entity::find()
        .all(&app.state.db)
        .await
        .expect("media sessions");
    let call_sid = |s: &entity::media_session::Model| call_sids.get(&s.call_id).cloned().unwrap_or_default();
    sessions.sort_by_key(|s| (call_sid(s), s.started_at));
    let mut out = String::from("media sessions:\n");
    if sessions.is_empty() {
        out.push_str("  (none)\n");
    }
    for s in sessions {
        let _ = writeln!(
            out,
            "  {} stream {}: status={} end_reason={} received_stop={} inbound={} outbound={} malformed={}",
            call_sid(&s),
            s.stream_sid.as_deref().unwrap_or("-"),
            s.status,
            s.end_reason.map_or("-", |r| r.as_str()),
            s.received_stop,
            s.inbound_frames,
            s.outbound_frames,
            s.malformed_frames,
        );
    }
    out
}
