//! A server killed with SIGKILL while answering new calls keeps every call it answered,
//! stores nothing twice, and after a restart answers retries with the TwiML it first gave.
use std::{
    sync::{
        atomic::{AtomicBool, AtomicUsize, Ordering::SeqCst},
        Arc,
    },
    time::{Duration, Instant},
};

use stateset_voice::{backend_test, testkit::*};

use crate::support::{self, Server, Stored, Webhook};

/// Answered calls before the kill.
const ANSWERED_BEFORE_KILL: usize = 300;
/// Requests kept in flight.
const IN_FLIGHT: usize = 24;
/// Bound of the load phase.
const LOAD_DEADLINE: Duration = Duration::from_secs(90);
/// Stream tokens outlive the test, so a replay must be the stored answer byte for byte (an
/// expired token is re-minted instead: `retry_after_token_expiry_gets_a_fresh_token`).
const SETTINGS: &[(&str, &str)] = &[("VOICE_STREAM_TOKEN_TTL", "3600")];

/// One request of the load and what came back.
struct Sent {
    hook: Webhook,
    result: Result<(u16, String), String>,
    /// Started before the kill was decided.
    started_before_kill: bool,
    /// Ended after the kill was decided.
    ended_after_kill: bool,
    /// Order of completion across all workers.
    seq: usize,
}

impl Sent {
    fn answered(&self) -> Option<&str> {
        match &self.result {
            Ok((200, body)) => Some(body),
            _ => None,
        }
    }
}

/// Keeps sending new calls until a request fails after the kill, or the deadline.
async fn load_worker(
    client: reqwest::Client,
    base: String,
    killed: Arc<AtomicBool>,
    answered: Arc<AtomicUsize>,
    completed: Arc<AtomicUsize>,
) -> Vec<Sent> {
    let deadline = Instant::now() + LOAD_DEADLINE;
    let mut sent = Vec::new();
    while Instant::now() < deadline {
        let hook = Webhook::incoming(&call_sid());
        let started_before_kill = !killed.load(SeqCst);
        let result = hook.send(&client, &base).await;
        let ended_after_kill = killed.load(SeqCst);
        if matches!(result, Ok((200, _))) {
            answered.fetch_add(1, SeqCst);
        }
        let stop = result.is_err() && ended_after_kill;
        sent.push(Sent {
            hook,
            result,
            started_before_kill,
            ended_after_kill,
            seq: completed.fetch_add(1, SeqCst),
        });
        if stop {
            break;
        }
    }
    sent
}

backend_test!(sigkill_mid_load_loses_no_answered_call);
async fn sigkill_mid_load_loses_no_answered_call(fresh: FreshDatabase) {
    let started = Instant::now();
    let url = fresh.process_url();
    support::seed(&url, None).await;
    let mut server = Server::start(&url, SETTINGS).await;

    let killed = Arc::new(AtomicBool::new(false));
    let answered = Arc::new(AtomicUsize::new(0));
    let completed = Arc::new(AtomicUsize::new(0));
    let client = support::client();
    let workers: Vec<_> = (0..IN_FLIGHT)
        .map(|_| {
            tokio::spawn(load_worker(
                client.clone(),
                server.base.clone(),
                killed.clone(),
                answered.clone(),
                completed.clone(),
            ))
        })
        .collect();
    let deadline = Instant::now() + LOAD_DEADLINE;
    while answered.load(SeqCst) < ANSWERED_BEFORE_KILL {
        assert!(
            Instant::now() < deadline,
            "only {} calls answered within {LOAD_DEADLINE:?}\n{}",
            answered.load(SeqCst),
            server.log()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    killed.store(true, SeqCst);
    server.kill();
    let log_before_kill = server.log();
    let mut sent = Vec::new();
    for worker in workers {
        sent.extend(worker.await.expect("load worker"));
    }
    sent.sort_by_key(|s| s.seq);

    for s in &sent {
        match &s.result {
            Ok((status, body)) => assert_eq!(*status, 200, "{}: {body}", s.hook.call_sid),
            Err(e) => assert!(
                s.ended_after_kill,
                "{} failed before the kill: {e}\n{log_before_kill}",
                s.hook.call_sid
            ),
        }
    }
    let answered: Vec<&Sent> = sent.iter().filter(|s| s.answered().is_some()).collect();
    let interrupted: Vec<&Sent> = sent
        .iter()
        .filter(|s| s.result.is_err() && s.started_before_kill)
        .collect();
    assert!(answered.len() >= ANSWERED_BEFORE_KILL);
    assert!(
        !interrupted.is_empty(),
        "the kill interrupted no request in flight"
    );

    // Restart on the same database and check what the crash left.
    let server = Server::start(&url, SETTINGS).await;
    let stored = Stored::load(&fresh.db).await;
    stored.assert_consistent();
    for s in &answered {
        let sid = &s.hook.call_sid;
        assert!(
            stored.answered_with(sid, s.answered().unwrap()),
            "{sid}: the stored answer is the one returned"
        );
        assert_eq!(stored.call(sid).attempts, 1, "{sid}");
        let event = stored.event(sid);
        assert!(
            ["call.received", "call.fallback"].contains(&event.event_type.as_str()),
            "{sid}: {}",
            event.event_type
        );
    }
    let stored_interrupted = interrupted
        .iter()
        .filter(|s| stored.calls.contains_key(&s.hook.call_sid))
        .count();
    // Retried below: those stored before the kill first.
    let mut interrupted_retries = interrupted.clone();
    interrupted_retries.sort_by_key(|s| !stored.calls.contains_key(&s.hook.call_sid));
    interrupted_retries.truncate(8);

    // Provider retries after the restart: the first answered calls, the last ones before the
    // kill, and the interrupted ones (stored or not).
    let client = support::client();
    let mut retries: Vec<&Sent> = answered[..2].to_vec();
    retries.extend(&answered[answered.len() - 4..]);
    for s in &retries {
        let (status, body) = s.hook.send(&client, &server.base).await.expect("answered");
        assert_eq!(status, 200);
        assert_eq!(
            body,
            s.answered().unwrap(),
            "{}: a retry after the restart gets the first answer",
            s.hook.call_sid
        );
    }
    for s in &interrupted_retries {
        let (status, body) = s.hook.send(&client, &server.base).await.expect("answered");
        assert_eq!(status, 200, "{body}");
        if stored.calls.contains_key(&s.hook.call_sid) {
            assert!(
                stored.answered_with(&s.hook.call_sid, &body),
                "stored before the kill: {body}"
            );
        }
    }
    server.settle(&client).await;
    let after = Stored::load(&fresh.db).await;
    after.assert_consistent();
    for s in &retries {
        assert_eq!(after.call(&s.hook.call_sid).attempts, 2);
    }
    for s in &interrupted_retries {
        let sid = &s.hook.call_sid;
        if stored.calls.contains_key(sid) {
            assert_eq!(after.call(sid).attempts, stored.call(sid).attempts + 1, "{sid}");
            let answer = |s: &Stored| (s.answer(sid).twiml.clone(), s.answer(sid).stream_token.clone());
            assert_eq!(answer(&after), answer(&stored), "{sid}");
        } else {
            assert_eq!(after.call(sid).attempts, 1, "{sid}");
        }
    }
    // And new calls are answered as before.
    let (status, body) = Webhook::incoming(&call_sid())
        .send(&client, &server.base)
        .await
        .expect("answered");
    assert_eq!(status, 200);
    assert!(body.contains("<Stream url="), "{body}");

    eprintln!(
        "{:?}: {} answered before the kill, {} interrupted ({stored_interrupted} of them stored), \
         {} calls stored; {:.1?}",
        fresh.backend,
        answered.len(),
        interrupted.len(),
        stored.calls.len(),
        started.elapsed()
    );
}
