//! Two server processes on one PostgreSQL schema, as two instances behind a load balancer:
//! duplicates split across them make one call, and their delivery workers send each event once.
use std::{
    collections::HashMap,
    time::{Duration, Instant},
};

use entity::outbox_event;
use sea_orm::EntityTrait;
use stateset_voice::testkit::*;
use wiremock::{
    matchers::{method, path},
    Mock, MockServer, ResponseTemplate,
};

use crate::support::{self, Server, Stored, Webhook};

/// Duplicate deliveries of one call.
const DUPLICATES: usize = 40;
/// Distinct calls whose events are delivered.
const DISTINCT: usize = 24;
/// Bound of event delivery.
const DELIVERY_DEADLINE: Duration = Duration::from_secs(30);
/// Polling of the outbox, so deliveries and repeats show quickly.
const POLL: &str = "100ms";
/// After every event arrived: ten polling rounds in which a repeat would show.
const REPEAT_WINDOW: Duration = Duration::from_secs(1);

/// Requests per `webhook-id` the receiver got.
async fn deliveries(receiver: &MockServer) -> HashMap<String, Vec<serde_json::Value>> {
    let mut out: HashMap<String, Vec<serde_json::Value>> = HashMap::new();
    for request in receiver.received_requests().await.expect("recording") {
        let id = request
            .headers
            .get("webhook-id")
            .expect("webhook-id header")
            .to_str()
            .unwrap()
            .to_owned();
        out.entry(id)
            .or_default()
            .push(serde_json::from_slice(&request.body).expect("JSON body"));
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_processes_on_one_postgres_schema() {
    let started = Instant::now();
    let Some(fresh) = fresh_database(Backend::Postgres, 2).await else {
        return;
    };
    let receiver = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/events"))
        .respond_with(ResponseTemplate::new(204))
        .mount(&receiver)
        .await;
    let url = fresh.process_url();
    support::seed(&url, Some(&format!("{}/events", receiver.uri()))).await;
    let settings = [
        ("VOICE_OUTBOX_POLL_INTERVAL", POLL),
        // The receiver is on loopback.
        ("VOICE_WEBHOOK_DENY_PRIVATE", "false"),
        ("VOICE_STREAM_TOKEN_TTL", "3600"),
    ];
    let (one, two) = tokio::join!(Server::start(&url, &settings), Server::start(&url, &settings));
    let bases = [one.base.as_str(), two.base.as_str()];
    let client = support::client();

    // Concurrent retries of one call, alternating between the processes.
    let hook = Webhook::incoming(&call_sid());
    let answers = futures::future::join_all((0..DUPLICATES).map(|i| hook.send(&client, bases[i % 2]))).await;
    let first = answers[0].as_ref().expect("answered").1.clone();
    assert!(first.contains("<Stream url="), "{first}");
    for (i, answer) in answers.iter().enumerate() {
        assert_eq!(
            answer.as_ref().map(|(s, b)| (*s, b.as_str())),
            Ok((200, first.as_str())),
            "duplicate {i} (process {})",
            i % 2 + 1
        );
    }
    one.settle(&client).await;
    two.settle(&client).await;
    let stored = Stored::load(&fresh.db).await;
    stored.assert_consistent();
    assert_eq!(stored.calls.len(), 1);
    assert_eq!(stored.call(&hook.call_sid).attempts, DUPLICATES as i32);
    assert!(stored.answered_with(&hook.call_sid, &first), "{first}");

    // Distinct calls on both processes.
    let hooks: Vec<Webhook> = (0..DISTINCT).map(|_| Webhook::incoming(&call_sid())).collect();
    let answers = futures::future::join_all(
        hooks
            .iter()
            .enumerate()
            .map(|(i, h)| h.send(&client, bases[i % 2])),
    )
    .await;
    for (h, answer) in hooks.iter().zip(&answers) {
        assert!(
            matches!(answer, Ok((200, body)) if body.contains("<Stream url=")),
            "{}: {answer:?}",
            h.call_sid
        );
    }
    let stored = Stored::load(&fresh.db).await;
    stored.assert_consistent();
    assert_eq!(stored.calls.len(), DISTINCT + 1);
    let events: HashMap<String, outbox_event::Model> = outbox_event::Entity::find()
        .all(&fresh.db)
        .await
        .unwrap()
        .into_iter()
        .map(|e| (e.id.clone(), e))
        .collect();
    assert_eq!(events.len(), DISTINCT + 1, "one call.received per call");

    // Both delivery workers poll the same outbox; every event arrives.
    let deadline = Instant::now() + DELIVERY_DEADLINE;
    loop {
        let received = deliveries(&receiver).await;
        let delivered = outbox_event::Entity::find()
            .all(&fresh.db)
            .await
            .unwrap()
            .iter()
            .filter(|e| e.status == entity::states::OutboxStatus::Delivered)
            .count();
        if events.keys().all(|id| received.contains_key(id)) && delivered == events.len() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "after {DELIVERY_DEADLINE:?}: {} of {} events received, {delivered} marked delivered\n\
             process 1:\n{}\nprocess 2:\n{}",
            received.len(),
            events.len(),
            one.log(),
            two.log()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // A second delivery of any event would arrive within a few polling rounds.
    tokio::time::sleep(REPEAT_WINDOW).await;
    let received = deliveries(&receiver).await;
    assert_eq!(received.len(), events.len(), "only stored events are sent");
    for (id, bodies) in &received {
        let event = events.get(id).expect("a stored event");
        assert_eq!(bodies.len(), 1, "event {id} delivered {} times", bodies.len());
        let payload: serde_json::Value = serde_json::from_str(&event.payload).unwrap();
        assert_eq!(bodies[0], payload, "event {id} is delivered as stored");
    }
    eprintln!(
        "{DUPLICATES} duplicates and {DISTINCT} calls on two processes, {} events delivered once; {:.1?}",
        events.len(),
        started.elapsed()
    );
}
