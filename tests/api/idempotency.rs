//! Provider retries: one call record, the same answer, attempts counted, also under
//! concurrent duplicates.
use entity::{call, call_webhook, outbox_event};
use sea_orm::{ActiveModelTrait, Set};
use stateset_voice::domain::admin::NewRoute;

use stateset_voice::{backend_test, testkit::*};

backend_test!(retry_returns_the_same_answer);
async fn retry_returns_the_same_answer(app: TestApp) {
    app.seed().await;
    let sid = call_sid();
    let first = app.incoming(&sid).await.text().await.unwrap();
    let second = app.incoming(&sid).await;
    assert_eq!(second.status(), 200);
    assert_eq!(
        second.text().await.unwrap(),
        first,
        "same stream target and token"
    );
    assert_eq!(app.call(&sid).await.unwrap().attempts, 2);
    assert_eq!(app.count(call::Entity).await, 1);
    assert_eq!(app.count(outbox_event::Entity).await, 1);
}

backend_test!(retry_after_token_expiry_gets_a_fresh_token);
async fn retry_after_token_expiry_gets_a_fresh_token(app: TestApp) {
    app.seed().await;
    let sid = call_sid();
    let first = app.incoming(&sid).await.text().await.unwrap();
    // Age the stored answer past its token's expiry.
    let stored = app.call(&sid).await.unwrap();
    let hook =
        stateset_voice::db::calls::webhook(&app.state.db, &stored.id, entity::states::WebhookKind::Incoming)
            .await
            .unwrap()
            .unwrap();
    let old_jti = hook.token_jti.clone();
    let mut active: call_webhook::ActiveModel = hook.into();
    active.token_expires_at = Set(Some(chrono::Utc::now() - chrono::Duration::seconds(1)));
    active.update(&app.state.db).await.unwrap();
    // Like a retry reaching another instance: nothing cached about this call.
    app.state.answers.invalidate();

    let second = app.incoming(&sid).await.text().await.unwrap();
    assert_ne!(second, first);
    let token = stream_token(&second);
    let claims = app.state.tokens.verify(token).unwrap();
    assert_eq!(claims.sub, sid, "the fresh token is for the same call");
    assert_ne!(Some(claims.jti), old_jti);
    let third = app.incoming(&sid).await.text().await.unwrap();
    assert_eq!(third, second, "the fresh token is reused while valid");
    assert_eq!(app.call(&sid).await.unwrap().attempts, 3);
    assert_eq!(app.count(outbox_event::Entity).await, 1);
}

backend_test!(fifty_concurrent_duplicates_make_one_call);
async fn fifty_concurrent_duplicates_make_one_call(app: TestApp) {
    app.seed().await;
    let sid = call_sid();
    let responses = futures::future::join_all((0..50).map(|_| async {
        let res = app.incoming(&sid).await;
        (res.status().as_u16(), res.text().await.unwrap())
    }))
    .await;
    let first = &responses[0].1;
    for (status, body) in &responses {
        assert_eq!(*status, 200, "{body}");
        assert_eq!(body, first, "every duplicate gets the same decision");
    }
    assert!(first.contains("<Stream url="));
    assert_eq!(app.count(call::Entity).await, 1);
    assert_eq!(app.count(call_webhook::Entity).await, 1);
    assert_eq!(app.count(outbox_event::Entity).await, 1);
    assert_eq!(app.call(&sid).await.unwrap().attempts, 50);
}

backend_test!(concurrent_duplicates_across_two_instances);
async fn concurrent_duplicates_across_two_instances(one: TestApp) {
    // Two services on one database, as two stateless instances behind a load balancer.
    one.seed().await;
    if one.backend == Backend::Sqlite {
        return; // SQLite is the single-instance store.
    }
    let two = one.second_instance().await;
    let sid = call_sid();
    let form = incoming_form(&sid);
    let sig = stateset_voice::twilio::signature::compute(
        stateset_voice::twilio::signature::Algorithm::HmacSha1,
        AUTH_TOKEN.as_bytes(),
        &one.public("/api/v1/incoming-call"),
        &form,
    );
    let bases = [one.base.clone(), two.base.clone()];
    let responses = futures::future::join_all((0..40).map(|i| {
        let url = format!("{}/api/v1/incoming-call", bases[i % 2]);
        let body = form.encode();
        let sig = sig.clone();
        let client = one.client.clone();
        async move {
            let res = client
                .post(url)
                .header("Content-Type", "application/x-www-form-urlencoded")
                .header("X-Twilio-Signature", sig)
                .body(body)
                .send()
                .await
                .unwrap();
            (res.status().as_u16(), res.text().await.unwrap())
        }
    }))
    .await;
    assert!(
        responses.iter().all(|(s, b)| *s == 200 && *b == responses[0].1),
        "{responses:?}"
    );
    assert_eq!(one.count(call::Entity).await, 1);
    // Each instance counts its retries within a second; this one settles before it reads.
    two.state.writer.settle().await;
    assert_eq!(one.call(&sid).await.unwrap().attempts, 40);
}

backend_test!(same_call_on_another_route_conflicts);
async fn same_call_on_another_route_conflicts(app: TestApp) {
    let (tenant, _) = app.seed().await;
    app.seed_route(
        &tenant.id,
        NewRoute {
            phone_number: "+15555550000".to_owned(),
            ..Default::default()
        },
    )
    .await;
    let sid = call_sid();
    assert_eq!(app.incoming(&sid).await.status(), 200);
    let other = incoming_form_with(&sid, "To", "+15555550000");
    let res = app.post_signed("/api/v1/incoming-call", &other, AUTH_TOKEN).await;
    assert_eq!(res.status(), 409);
    let problem: serde_json::Value = res.json().await.unwrap();
    assert_eq!(problem["status"], 409);
    assert_eq!(app.count(call::Entity).await, 1);
    assert_eq!(
        app.call(&sid).await.unwrap().attempts,
        1,
        "a conflicting delivery is not a retry"
    );
    let diags = app.diagnostics("call_route_conflict").await;
    assert_eq!((diags.len(), diags[0].key.as_str()), (1, sid.as_str()));
}

backend_test!(a_burst_of_new_calls_and_their_duplicates_is_stored_exactly_once);
async fn a_burst_of_new_calls_and_their_duplicates_is_stored_exactly_once(app: TestApp) {
    // Concurrent new calls are written in shared transactions; duplicates of a call may land
    // in the same batch as the call itself, or in the next one.
    app.seed().await;
    let sids: Vec<String> = (0..50).map(|_| call_sid()).collect();
    let burst = || {
        futures::future::join_all((0..200).map(|i| {
            let sid = sids[i % sids.len()].clone();
            let app = &app;
            async move {
                let res = app.incoming(&sid).await;
                (sid, res.status().as_u16(), res.text().await.unwrap())
            }
        }))
    };
    let mut answers = std::collections::HashMap::new();
    for (sid, status, body) in burst().await.into_iter().chain(burst().await) {
        assert_eq!(status, 200, "{body}");
        let first = answers.entry(sid).or_insert_with(|| body.clone());
        assert_eq!(*first, body, "every copy of a call gets the same answer");
    }
    assert_eq!(app.count(call::Entity).await, 50);
    assert_eq!(app.count(call_webhook::Entity).await, 50);
    assert_eq!(app.events("call.received").await.len(), 50);
    for sid in &sids {
        let stored = app.call(sid).await.unwrap();
        assert_eq!(stored.attempts, 8, "4 copies in each of two bursts");
        let answer = stateset_voice::db::calls::webhook(
            &app.state.db,
            &stored.id,
            entity::states::WebhookKind::Incoming,
        )
        .await
        .unwrap()
        .unwrap();
        assert_eq!(answer.attempts, 8);
        // A stream answer is stored as its token alone and rendered from it.
        assert!(answer.twiml.is_empty(), "{}", answer.twiml);
        assert!(answer.stream_token.is_some());
        assert_eq!(
            &stateset_voice::domain::webhook::stored_twiml(&answer, &app.state.voice),
            &answers[sid]
        );
    }
}

backend_test!(one_failing_write_does_not_fail_the_others_in_its_batch);
async fn one_failing_write_does_not_fail_the_others_in_its_batch(app: TestApp) {
    let (tenant, route) = app.seed().await;
    let writer = &app.state.writer;
    let new_call = |route_id: &str| new_call(&tenant.id, route_id);
    // A route that does not exist breaks the foreign key of one call among many.
    let mut calls: Vec<_> = (0..30).map(|_| new_call(&route.id)).collect();
    calls.insert(15, new_call("no-such-route"));
    let results = futures::future::join_all(calls.iter().map(|c| writer.claim(c.clone()))).await;
    for (c, result) in calls.iter().zip(&results) {
        if c.call.route_id == route.id {
            assert!(matches!(result, Ok(true)), "{result:?}");
        } else {
            assert!(result.is_err(), "the broken call is refused: {result:?}");
        }
    }
    assert_eq!(app.count(call::Entity).await, 30);
    assert_eq!(app.count(call_webhook::Entity).await, 30);
    assert_eq!(app.count(outbox_event::Entity).await, 30);
}

/// A new call of `tenant_id` on `route_id` on a fresh CallSid, with its answer and event.
fn new_call(tenant_id: &str, route_id: &str) -> stateset_voice::db::writer::NewCall {
    stateset_voice::db::writer::NewCall::example(&call_sid(), tenant_id, route_id)
}

/// `given` as the database gives it back: PostgreSQL keeps microseconds, and finer digits are
/// cut, as sqlx cuts them.
fn as_stored(
    backend: Backend,
    given: &stateset_voice::db::writer::NewCall,
) -> stateset_voice::db::writer::NewCall {
    use chrono::SubsecRound;
    let mut cut = given.clone();
    if backend == Backend::Sqlite {
        return cut;
    }
    for time in [
        Some(&mut cut.call.created_at),
        Some(&mut cut.call.updated_at),
        cut.call.ended_at.as_mut(),
        Some(&mut cut.answer.created_at),
        Some(&mut cut.answer.updated_at),
        cut.answer.token_expires_at.as_mut(),
        Some(&mut cut.event.next_attempt_at),
        Some(&mut cut.event.created_at),
        cut.event.delivered_at.as_mut(),
    ]
    .into_iter()
    .flatten()
    {
        *time = time.trunc_subsecs(6);
    }
    cut
}

/// The rows of `given` as stored, if they are.
async fn stored_rows(
    app: &TestApp,
    given: &stateset_voice::db::writer::NewCall,
) -> (
    Option<call::Model>,
    Option<call_webhook::Model>,
    Option<outbox_event::Model>,
) {
    use sea_orm::EntityTrait;
    let db = &app.state.db;
    (
        call::Entity::find_by_id(given.call.id.clone())
            .one(db)
            .await
            .unwrap(),
        call_webhook::Entity::find_by_id(given.answer.id.clone())
            .one(db)
            .await
            .unwrap(),
        outbox_event::Entity::find_by_id(given.event.id.clone())
            .one(db)
            .await
            .unwrap(),
    )
}

backend_test!(calls_written_together_are_each_stored_as_given);
/// Concurrent new calls go into one transaction, on PostgreSQL as one array per column: a row
/// whose optional columns are empty beside rows whose are set, and the other way round, is
/// stored as given, and of two requests for one CallSid in the same batch one stores it.
async fn calls_written_together_are_each_stored_as_given(app: TestApp) {
    use chrono::Duration;
    let (tenant, route) = app.seed().await;
    let calls: Vec<_> = (0..16)
        .map(|i| {
            let mut c = new_call(&tenant.id, &route.id);
            if i % 2 == 1 {
                let t = c.call.created_at + Duration::seconds(i);
                c.call.fallback_reason = Some(entity::states::FallbackReason::AgentUnhealthy);
                c.call.error_code = Some(format!("1120{i}"));
                c.call.duration_secs = Some(i as i32);
                c.call.ended_at = Some(t);
                c.answer.stream_token = Some(format!("token-{i}"));
                c.answer.token_jti = Some(format!("jti-{i}"));
                c.answer.token_expires_at = Some(t);
                c.event.last_error = Some(format!("error {i}"));
                c.event.delivered_at = Some(t);
            }
            c
        })
        .collect();
    let mut twin = new_call(&tenant.id, &route.id);
    twin.call.call_sid = calls[3].call.call_sid.clone();
    let claims = calls
        .iter()
        .chain([&twin])
        .map(|c| app.state.writer.claim(c.clone()));
    let claimed: Vec<bool> = futures::future::join_all(claims)
        .await
        .into_iter()
        .map(Result::unwrap)
        .collect();

    assert_eq!(claimed.iter().filter(|&&c| c).count(), 16, "{claimed:?}");
    let (first, second) = (claimed[3], claimed[16]);
    assert!(first != second, "one of the two requests for a CallSid stores it");
    let (winner, loser) = if first {
        (&calls[3], &twin)
    } else {
        (&twin, &calls[3])
    };
    for given in calls
        .iter()
        .filter(|c| c.call.id != loser.call.id)
        .chain([winner])
    {
        let expected = as_stored(app.backend, given);
        let (call, answer, event) = stored_rows(&app, given).await;
        assert_eq!(call.as_ref(), Some(&expected.call));
        assert_eq!(answer.as_ref(), Some(&expected.answer));
        assert_eq!(event.as_ref(), Some(&expected.event));
    }
    assert_eq!(stored_rows(&app, loser).await, (None, None, None));
}

backend_test!(the_writer_stores_every_column_as_given);
async fn the_writer_stores_every_column_as_given(app: TestApp) {
    use chrono::{Duration, SubsecRound};
    let (tenant, route) = app.seed().await;
    // Every nullable column set, text that needs escaping, and times finer than a microsecond.
    let t = chrono::Utc::now().trunc_subsecs(0) + Duration::nanoseconds(123_456_789);
    let mut stored = new_call(&tenant.id, &route.id);
    stored.call.status = entity::states::CallStatus::Completed;
    stored.call.outcome = entity::states::Outcome::Fallback;
    stored.call.fallback_reason = Some(entity::states::FallbackReason::AgentUnhealthy);
    stored.call.error_code = Some("11200".to_owned());
    stored.call.error_url = Some("https://example.com/a?b=\"c\"&d=\\é\u{1}\n".to_owned());
    stored.call.duration_secs = Some(-7);
    (stored.call.created_at, stored.call.ended_at) = (t, Some(t + Duration::seconds(3)));
    stored.answer.twiml = "<Response><Say>\"quoted\" ünïcode \u{7f}</Say></Response>".to_owned();
    stored.answer.stream_token = Some("tok.en".to_owned());
    stored.answer.token_jti = Some("jti".to_owned());
    stored.answer.token_expires_at = Some(t + Duration::nanoseconds(999));
    stored.event.last_error = Some("{\"json\": [1, 2]}".to_owned());
    stored.event.delivered_at = Some(t);
    assert!(app.state.writer.claim(stored.clone()).await.unwrap());

    let expected = as_stored(app.backend, &stored);
    let (call, answer, event) = stored_rows(&app, &stored).await;
    assert_eq!(call.as_ref(), Some(&expected.call));
    assert_eq!(answer.as_ref(), Some(&expected.answer));
    assert_eq!(event.as_ref(), Some(&expected.event));

    // The same CallSid again stores nothing more, and its retry counts reach both rows.
    let mut again = new_call(&tenant.id, &route.id);
    again.call.call_sid = stored.call.call_sid.clone();
    assert!(!app.state.writer.claim(again.clone()).await.unwrap());
    assert_eq!(stored_rows(&app, &again).await, (None, None, None));
    let ids = (
        entity::id::CallId(stored.call.id.clone()),
        entity::id::WebhookId(stored.answer.id.clone()),
    );
    for _ in 0..3 {
        app.state
            .writer
            .count_retry(ids.0.clone(), ids.1.clone())
            .unwrap();
    }
    app.state.writer.settle().await;
    let (call, answer, _) = stored_rows(&app, &stored).await;
    let (call, answer) = (call.unwrap(), answer.unwrap());
    assert_eq!((call.attempts, answer.attempts), (4, 4));
    assert!(call.updated_at > expected.call.updated_at && answer.updated_at > expected.answer.updated_at);
}

/// On PostgreSQL the writer has a connection of its own: new calls are stored while every
/// connection of the pool is taken (by slow admin reads, say), instead of failing to acquire one.
#[tokio::test]
async fn on_postgresql_the_writer_stores_while_the_whole_pool_is_taken() {
    use sea_orm::TransactionTrait;
    let Some(app) = spawn_app_with(Backend::Postgres, |a| a.database_max_connections = Some(2)).await else {
        return;
    };
    let (tenant, route) = app.seed().await;
    let taken = [
        app.state.db.begin().await.unwrap(),
        app.state.db.begin().await.unwrap(),
    ];
    let stored = new_call(&tenant.id, &route.id);
    assert!(app.state.writer.claim(stored.clone()).await.unwrap());
    drop(taken);
    let call = app.call(&stored.call.call_sid).await.unwrap();
    assert_eq!(call.id, stored.call.id);
}
