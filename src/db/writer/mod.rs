//! Group commit for the webhook hot path. Concurrent new calls and retry counts queue up while
//! a batch is being written; the next batch writes all of them together (its new calls in one
//! transaction), so the database commits once for many requests. A new call gets its answer
//! only after its rows are committed. A retry's answer is already committed, so a retry's count
//! is tallied in memory and not waited for: the lane writes the tally once per
//! [`COUNT_WINDOW`], and [`Writer::settle`] writes it at once (reads of `attempts` settle
//! first).
mod postgres;
mod sqlite;

use std::{
    collections::{BTreeMap, HashMap, HashSet},
    sync::Arc,
    time::Duration,
};

use entity::{
    call, call_webhook,
    id::{CallId, WebhookId},
    outbox_event,
};
use prometheus_client::metrics::histogram::Histogram;
use sea_orm::{ConnectionTrait, DbBackend, DbErr, EntityTrait, IdenStatic, Iterable};
use tokio::{
    sync::{mpsc, oneshot, Mutex},
    time::MissedTickBehavior,
};
use tokio_util::sync::CancellationToken;

use super::Pool;

/// Most requests written in one transaction. Taking the whole queue (4,096) instead kept the
/// p99 of a flood of retries steady but cost ×1.2 more server CPU per retry (quick runs of
/// `cargo xtask bench`); not adopted.
const MAX_BATCH: usize = 256;
/// Requests that may wait for a writer before callers wait to enqueue.
const QUEUE: usize = 4096;
/// Longest a retry's count waits in memory before the lane writes it.
///
/// A provider retrying many calls at once (the benchmark's flood: 20,000 calls retried at
/// about 30,000 a second) updated two rows per retry in every batch, each on a page of its own
/// written to the WAL and synced: a retry cost ×1.4 the server CPU of a forged request. Tallied
/// for a second, a call retried again within it is one update, and a second's counts one
/// transaction. What this costs: a process killed (not stopped) loses at most this window's
/// counts, never a call or its answer; another instance reading `attempts` may see them up to
/// this late (this one settles first).
pub const COUNT_WINDOW: Duration = Duration::from_secs(1);

/// A new call with its answer and its outbox event: written together or not at all.
#[derive(Debug, Clone)]
pub struct NewCall {
    pub call: call::Model,
    pub answer: call_webhook::Model,
    pub event: outbox_event::Model,
}

#[cfg(any(test, feature = "testkit"))]
impl NewCall {
    /// A streamed new call of `call_sid` on a tenant's route, with its answer and its
    /// `call.received` event, as the webhook makes them (tests).
    pub fn example(call_sid: &str, tenant_id: &str, route_id: &str) -> Self {
        use entity::{
            id::new_id,
            states::{CallStatus, Outcome, WebhookKind},
        };
        let now = chrono::Utc::now();
        let call = call::Model {
            id: new_id(),
            call_sid: call_sid.to_owned(),
            tenant_id: tenant_id.to_owned(),
            route_id: route_id.to_owned(),
            from_number: "+15555550199".to_owned(),
            to_number: "+15555550100".to_owned(),
            status: CallStatus::Ringing,
            outcome: Outcome::Streamed,
            fallback_reason: None,
            attempts: 1,
            error_code: None,
            error_url: None,
            duration_secs: None,
            created_at: now,
            updated_at: now,
            ended_at: None,
        };
        let answer = call_webhook::Model {
            id: new_id(),
            call_id: call.id.clone(),
            kind: WebhookKind::Incoming,
            attempts: 1,
            twiml: "<Response/>".to_owned(),
            stream_token: None,
            token_jti: None,
            token_expires_at: None,
            created_at: now,
            updated_at: now,
        };
        let event = super::outbox::pending(tenant_id, &crate::events::Event::CallReceived((&call).into()));
        Self { call, answer, event }
    }
}

enum Job {
    Claim(Arc<NewCall>, oneshot::Sender<Result<bool, DbErr>>),
    /// `by` more deliveries of a webhook answer and of its call, taken from the tally; nobody
    /// waits for it.
    Count {
        call_id: CallId,
        webhook_id: WebhookId,
        by: i32,
    },
    /// Writes the tally with this batch; answered once it is written (or failed).
    Settle(oneshot::Sender<()>),
}

/// Retry counts not written yet: for each webhook answer, its call and how many.
type Tally = HashMap<WebhookId, (CallId, i32)>;

/// Batches hot-path writes. Its lane (the task that writes the batches, [`Writer::run_lane`])
/// must be running for requests to be answered.
///
/// One lane on either database, so a batch grows with the load. On PostgreSQL the lane writes
/// on a connection of its own ([`Pool::writer`]), most likely a gain because sqlx caches
/// prepared statements per connection, and a batch on any of the pool's 16 connections found
/// its statements (then one text per batch size; now one per table) prepared only now and
/// then. Against the earlier rule (lanes on a quarter of the pool, four), this took ×1.50
/// less server CPU per new call, ×1.20 the throughput and p99 from 23.7 to 13.5 ms (`cargo
/// xtask bench --against --postgres`, three interleaved rounds of 5 s). Measured apart: one
/// lane instead of two ×1.17 less CPU; with one lane, a pool of 4 connections instead of 16
/// (what led to a connection of its own), ×1.10.
pub struct Writer {
    db: Pool,
    batch_sizes: Histogram,
    queue: mpsc::Sender<Job>,
    jobs: Mutex<mpsc::Receiver<Job>>,
    /// Counted retries the lane has not taken yet. Bounded by the answers retried within one
    /// [`COUNT_WINDOW`]: only authentic retries of stored calls are counted.
    tally: std::sync::Mutex<Tally>,
}

impl Writer {
    /// A writer on `db` (on its [`Pool::writer`]). `batch_sizes` observes how many requests
    /// each transaction writes.
    pub fn new(db: &Pool, batch_sizes: Histogram) -> Self {
        let (queue, jobs) = mpsc::channel(QUEUE);
        Self {
            db: db.writer(),
            batch_sizes,
            queue,
            jobs: Mutex::new(jobs),
            tally: std::sync::Mutex::default(),
        }
    }

    /// The lane: takes whatever is queued (at least one request) and writes it as a batch,
    /// with the tally every [`COUNT_WINDOW`] and when asked to settle, until `stop` is
    /// cancelled. Then the queue closes (later requests fail at once) and it writes what the
    /// queue and the tally still hold before it returns. One lane per writer: a settle relies
    /// on no other lane writing a tally it took.
    pub async fn run_lane(&self, stop: CancellationToken) {
        let mut jobs = Vec::with_capacity(MAX_BATCH);
        let mut unnest = postgres::Unnest::new(&self.db);
        let mut window = tokio::time::interval(COUNT_WINDOW);
        window.set_missed_tick_behavior(MissedTickBehavior::Delay);
        loop {
            let received = {
                let mut queue = self.jobs.lock().await;
                if stop.is_cancelled() {
                    queue.close();
                }
                tokio::select! {
                    received = queue.recv_many(&mut jobs, MAX_BATCH) => Some(received),
                    () = stop.cancelled() => {
                        queue.close();
                        Some(queue.recv_many(&mut jobs, MAX_BATCH).await)
                    }
                    _ = window.tick() => None,
                }
            };
            let tallied = match received {
                // Closed and drained: the last counts, then done.
                Some(0) => {
                    let last: Vec<Job> = self.take_tally().collect();
                    if !last.is_empty() {
                        self.write(&mut unnest, last).await;
                    }
                    return;
                }
                Some(received) => {
                    self.batch_sizes.observe(received as f64);
                    jobs.iter().any(|job| matches!(job, Job::Settle(_)))
                }
                None => true,
            };
            if tallied {
                jobs.extend(self.take_tally());
            }
            if jobs.iter().all(|job| matches!(job, Job::Settle(_))) {
                // Nothing to write (an admin read settling an empty tally): no transaction.
                jobs.drain(..).for_each(|job| answer(job, Ok(false)));
            } else {
                self.write(&mut unnest, std::mem::take(&mut jobs)).await;
            }
        }
    }

    /// Writes one batch on the writer's database.
    async fn write(&self, unnest: &mut postgres::Unnest<'_>, jobs: Vec<Job>) {
        match self.db.get_database_backend() {
            DbBackend::Sqlite => {
                sqlite::execute(self.db.connection().get_sqlite_connection_pool(), jobs).await
            }
            _ => {
                execute(unnest, jobs).await;
                // Nothing waiting: the connection goes back to the pool until the next batch.
                if self.queue.capacity() == self.queue.max_capacity() {
                    unnest.release();
                }
            }
        }
    }

    /// The tally's counts as jobs, leaving it empty.
    fn take_tally(&self) -> impl Iterator<Item = Job> {
        let tally = std::mem::take(&mut *self.lock_tally());
        tally.into_iter().map(|(webhook_id, (call_id, by))| Job::Count {
            call_id,
            webhook_id,
            by,
        })
    }

    /// The tally; a panic while it was held loses nothing worth stopping for.
    fn lock_tally(&self) -> std::sync::MutexGuard<'_, Tally> {
        self.tally
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    async fn submit<T>(
        &self,
        job: impl FnOnce(oneshot::Sender<Result<T, DbErr>>) -> Job,
    ) -> Result<T, DbErr> {
        let (tx, rx) = oneshot::channel();
        self.queue.send(job(tx)).await.map_err(|_| stopped())?;
        rx.await.map_err(|_| stopped())?
    }

    /// Stores a new call, its answer and its event unless a call with the same CallSid exists
    /// (or is being stored by an earlier request). True when this request stored it; the
    /// database's unique index decides, so concurrent duplicates cannot both store. Shared
    /// (`Arc`), so a caller that keeps the rows for its answer need not copy them.
    pub async fn claim(&self, new_call: impl Into<Arc<NewCall>>) -> Result<bool, DbErr> {
        let new_call = new_call.into();
        self.submit(|done| Job::Claim(new_call, done)).await
    }

    /// Counts one more delivery of a call's webhook and of its stored answer, written within
    /// [`COUNT_WINDOW`]; does not wait for it. Fails only if the writer stopped.
    ///
    /// A retry that waited for its count's commit cost ×2.2 the server CPU of a forged request
    /// and waited for an fsync; queued for the next batch, ×1.2 to ×1.4 (`cargo xtask bench`,
    /// medians of one run each). A process killed within the window loses its counts, never a
    /// call or its answer.
    pub fn count_retry(&self, call_id: CallId, webhook_id: WebhookId) -> Result<(), DbErr> {
        if self.queue.is_closed() {
            return Err(stopped());
        }
        self.lock_tally().entry(webhook_id).or_insert((call_id, 0)).1 += 1;
        Ok(())
    }

    /// Writes every retry count tallied before this call, and waits until it is written (or
    /// failed). Returns at once if the writer stopped (its lane wrote the tally last).
    pub async fn settle(&self) {
        let (done, written) = oneshot::channel();
        if self.queue.send(Job::Settle(done)).await.is_ok() {
            let _ = written.await;
        }
    }
}

/// The error of a request made after the writer stopped.
fn stopped() -> DbErr {
    DbErr::Custom("the database writer stopped".to_owned())
}

/// Writes batches of jobs: [`postgres::Unnest`] with one array per column (PostgreSQL),
/// [`sqlite::Handle`] on the SQLite connection's own handle.
trait Batches {
    /// Writes `jobs`, the new calls among them in one transaction; for each job, whether it
    /// stored a new call.
    async fn write(&mut self, jobs: &[Job]) -> Result<Vec<bool>, DbErr>;
}

/// Writes a batch and answers each request. If the batch fails as a whole, it is written again
/// in parts: each new call alone, so one bad request cannot fail the others; the retry counts
/// together, since an update of a count fails only with the database and a tally can hold
/// thousands (one by one they would be as many transactions, each waiting out a busy
/// database); the settles last, once the counts are written.
async fn execute(batches: &mut impl Batches, jobs: Vec<Job>) {
    if jobs.len() > 1 {
        match batches.write(&jobs).await {
            Ok(claimed) => {
                for (job, claimed) in jobs.into_iter().zip(claimed) {
                    answer(job, Ok(claimed));
                }
                return;
            }
            Err(e) => {
                tracing::warn!(error = %e, size = jobs.len(), "batch write failed; writing its requests one by one")
            }
        }
    }
    let (mut counts, mut settles) = (Vec::new(), Vec::new());
    for job in jobs {
        match job {
            Job::Claim(..) => {
                let one = [job];
                let result = batches.write(&one).await.map(|claimed| claimed[0]);
                let [job] = one;
                answer(job, result);
            }
            Job::Count { .. } => counts.push(job),
            Job::Settle(_) => settles.push(job),
        }
    }
    if !counts.is_empty() {
        if let Err(e) = batches.write(&counts).await {
            counts_lost(&counts, &e);
        }
    }
    for settle in settles {
        answer(settle, Ok(false));
    }
}

/// Logs, in one line, that the retry counts among `jobs` were not stored.
fn counts_lost(jobs: &[Job], e: &DbErr) {
    let lost = jobs.iter().filter(|job| matches!(job, Job::Count { .. })).count();
    if lost > 0 {
        tracing::warn!(error = %e, answers = lost, "retry counts were not stored");
    }
}

/// Answers one request. A caller that went away (client disconnected) needs no answer; nor
/// does a count (its failure is logged once for its batch, [`counts_lost`]).
fn answer(job: Job, result: Result<bool, DbErr>) {
    match job {
        Job::Claim(_, done) => {
            let _ = done.send(result);
        }
        Job::Count { .. } => {}
        Job::Settle(done) => {
            let _ = done.send(());
        }
    }
}

/// `INSERT INTO "table" ("column", ...) ` over all of an entity's columns, in the order of
/// `Column::iter()` (the order both lanes bind values in), followed by what `rows` makes of
/// those quoted column names: the start of each lane's insert statements.
fn insert_into<E: EntityTrait>(rows: impl FnOnce(&[String]) -> String) -> String {
    let columns: Vec<String> = E::Column::iter().map(|c| format!("\"{}\"", c.as_str())).collect();
    format!(
        "INSERT INTO \"{}\" ({}) {}",
        E::default().table_name(),
        columns.join(", "),
        rows(&columns)
    )
}

/// What one batch writes.
struct Plan<'a> {
    /// One candidate per CallSid (the first request's, with its index in the batch), in
    /// CallSid order, so that concurrent batches on PostgreSQL take the unique-index locks in
    /// the same order.
    candidates: Vec<(usize, &'a NewCall)>,
    /// Retry counts to add to calls, grouped by how much to add (usually all by one).
    calls: BTreeMap<i32, Vec<&'a str>>,
    /// The same for the calls' webhook answers.
    answers: BTreeMap<i32, Vec<&'a str>>,
}

impl<'a> Plan<'a> {
    fn of(jobs: &'a [Job]) -> Self {
        let mut seen = HashSet::new();
        let mut candidates: Vec<(usize, &NewCall)> = jobs
            .iter()
            .enumerate()
            .filter_map(|(i, job)| match job {
                Job::Claim(new_call, _) if seen.insert(new_call.call.call_sid.as_str()) => {
                    Some((i, &**new_call))
                }
                _ => None,
            })
            .collect();
        candidates.sort_by(|a, b| a.1.call.call_sid.cmp(&b.1.call.call_sid));

        let mut calls: BTreeMap<&str, i32> = BTreeMap::new();
        let mut answers: BTreeMap<&str, i32> = BTreeMap::new();
        for job in jobs {
            if let Job::Count {
                call_id,
                webhook_id,
                by,
            } = job
            {
                *calls.entry(call_id.as_str()).or_default() += by;
                *answers.entry(webhook_id.as_str()).or_default() += by;
            }
        }
        Self {
            candidates,
            calls: by_count(&calls),
            answers: by_count(&answers),
        }
    }
}

/// Rows grouped by how much to add to them.
fn by_count<'a>(counts: &BTreeMap<&'a str, i32>) -> BTreeMap<i32, Vec<&'a str>> {
    let mut grouped: BTreeMap<i32, Vec<&str>> = BTreeMap::new();
    for (&id, &n) in counts {
        grouped.entry(n).or_default().push(id);
    }
    grouped
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use chrono::Utc;
    use entity::{
        route,
        states::{RouteEnvironment, TenantEnvironment},
        tenant,
    };
    use sea_orm::{EntityTrait, IntoActiveModel, PaginatorTrait};
    use tokio_util::sync::CancellationToken;

    use super::*;

    async fn database() -> Pool {
        let db = crate::db::connect_url("sqlite::memory:", 1, Default::default(), None)
            .await
            .unwrap();
        crate::db::migrate(&db).await.unwrap();
        let now = Utc::now();
        let tenant = tenant::Model {
            id: "t1".to_owned(),
            name: "Acme".to_owned(),
            account_sid: "AC00000000000000000000000000000001".to_owned(),
            auth_token: "token".to_owned(),
            secondary_auth_token: None,
            shared_key: None,
            environment: TenantEnvironment::Production,
            webhook_url: None,
            webhook_secret: "whsec_x".to_owned(),
            default_fallback: None,
            created_at: now,
            updated_at: now,
        };
        crate::db::tenants::insert(&db, &Default::default(), tenant.into_active_model())
            .await
            .unwrap();
        let route = route::Model {
            id: "r1".to_owned(),
            tenant_id: "t1".to_owned(),
            phone_number: "+15555550100".to_owned(),
            label: None,
            environment: RouteEnvironment::Production,
            enabled: true,
            fallback: None,
            agent_url: None,
            agent_health_url: None,
            created_at: now,
            updated_at: now,
        };
        crate::db::routes::insert(&db, route.into_active_model())
            .await
            .unwrap();
        db
    }

    fn new_call(call_sid: &str) -> NewCall {
        NewCall::example(call_sid, "t1", "r1")
    }

    fn start(db: &Pool) -> (Arc<Writer>, CancellationToken, tokio::task::JoinHandle<()>) {
        let writer = Arc::new(Writer::new(db, Histogram::new([1.0])));
        let stop = CancellationToken::new();
        let lane = tokio::spawn({
            let (writer, stop) = (writer.clone(), stop.clone());
            async move { writer.run_lane(stop).await }
        });
        (writer, stop, lane)
    }

    /// The ids a retry of `stored` is counted by: its call's and its answer's.
    fn ids(stored: &NewCall) -> (CallId, WebhookId) {
        (
            CallId(stored.call.id.clone()),
            WebhookId(stored.answer.id.clone()),
        )
    }

    /// The stored `attempts` of a call and of its answer.
    async fn attempts(db: &Pool, (call_id, webhook_id): &(CallId, WebhookId)) -> (i32, i32) {
        let call = call::Entity::find_by_id(call_id.0.clone())
            .one(db)
            .await
            .unwrap()
            .expect("the call is stored");
        let answer = call_webhook::Entity::find_by_id(webhook_id.0.clone())
            .one(db)
            .await
            .unwrap()
            .expect("its answer is stored");
        (call.attempts, answer.attempts)
    }

    #[tokio::test]
    async fn concurrent_claims_of_one_call_sid_store_it_once_with_its_answer_and_event() {
        let db = database().await;
        let (writer, stop, lane) = start(&db);
        let (a, b, c) = tokio::join!(
            writer.claim(new_call("CA1")),
            writer.claim(new_call("CA1")),
            writer.claim(new_call("CA2")),
        );
        let mut first_two = [a.unwrap(), b.unwrap()];
        first_two.sort();
        assert_eq!(first_two, [false, true], "exactly one claim of CA1 wins");
        assert!(c.unwrap());
        assert_eq!(call::Entity::find().all(&db).await.unwrap().len(), 2);
        assert_eq!(call_webhook::Entity::find().all(&db).await.unwrap().len(), 2);
        assert_eq!(outbox_event::Entity::find().all(&db).await.unwrap().len(), 2);
        stop.cancel();
        lane.await.unwrap();
    }

    #[tokio::test]
    async fn retries_are_counted_on_the_call_and_on_its_answer() {
        let db = database().await;
        let (writer, stop, lane) = start(&db);
        let stored = new_call("CA1");
        let (call_id, webhook_id) = ids(&stored);
        assert!(writer.claim(stored).await.unwrap());
        writer.count_retry(call_id.clone(), webhook_id.clone()).unwrap();
        writer.count_retry(call_id.clone(), webhook_id.clone()).unwrap();
        writer.settle().await;
        assert_eq!(attempts(&db, &(call_id, webhook_id)).await, (3, 3));
        stop.cancel();
        lane.await.unwrap();
    }

    #[tokio::test]
    async fn a_retry_count_is_tallied_in_memory_and_written_by_the_lane_as_one_sum() {
        let db = database().await;
        let (writer, stop, lane) = start(&db);
        let (one, two) = (new_call("CA1"), new_call("CA2"));
        let ((call_one, answer_one), (call_two, answer_two)) = (ids(&one), ids(&two));
        assert!(writer.claim(one).await.unwrap());
        assert!(writer.claim(two).await.unwrap());
        for _ in 0..3 {
            writer.count_retry(call_one.clone(), answer_one.clone()).unwrap();
        }
        writer.count_retry(call_two.clone(), answer_two.clone()).unwrap();
        // One job per answer, with its sum: one update per row, however often it was retried.
        let mut tallied: Vec<(String, i32)> = writer
            .take_tally()
            .map(|job| match job {
                Job::Count { webhook_id, by, .. } => (webhook_id.0, by),
                _ => unreachable!("the tally holds counts only"),
            })
            .collect();
        tallied.sort();
        let mut expected = vec![(answer_one.0.clone(), 3), (answer_two.0.clone(), 1)];
        expected.sort();
        assert_eq!(tallied, expected);
        assert!(
            writer.take_tally().next().is_none(),
            "taking the tally empties it"
        );

        // Counted again; the lane writes them when it stops, unsettled.
        writer.count_retry(call_one.clone(), answer_one.clone()).unwrap();
        writer.count_retry(call_one.clone(), answer_one.clone()).unwrap();
        stop.cancel();
        lane.await.unwrap();
        let one = (call_one, answer_one);
        assert_eq!(
            attempts(&db, &one).await,
            (3, 3),
            "the last tally is written at stop"
        );
        let err = writer.count_retry(one.0, one.1).unwrap_err();
        assert!(err.to_string().contains("writer stopped"), "{err}");
    }

    #[tokio::test]
    async fn a_steady_stream_of_batches_still_lets_the_pools_other_users_in() {
        // One connection, as on SQLite by default: the lane borrows it for its batches, and the
        // pool's other users must get it between them however many follow.
        let db = database().await;
        let (writer, stop, lane) = start(&db);
        let busy = CancellationToken::new();
        let claimers: Vec<_> = (0..8)
            .map(|i| {
                let (writer, busy) = (writer.clone(), busy.clone());
                tokio::spawn(async move {
                    let mut stored = 0;
                    while !busy.is_cancelled() {
                        let claimed = writer.claim(new_call(&format!("CA{i}-{stored}"))).await;
                        assert!(claimed.expect("stored"));
                        stored += 1;
                    }
                    stored
                })
            })
            .collect();
        for _ in 0..20 {
            // A lane that kept the connection would fail this read with the pool's timeout.
            call::Entity::find()
                .count(&db)
                .await
                .expect("a read gets the connection between batches");
        }
        busy.cancel();
        let mut stored = 0;
        for claimer in claimers {
            stored += claimer.await.unwrap();
        }
        assert!(stored > 0, "the claims went on meanwhile");
        stop.cancel();
        lane.await.unwrap();
        assert_eq!(call::Entity::find().count(&db).await.unwrap(), stored);
    }

    #[tokio::test]
    async fn the_lane_writes_the_tally_within_its_window_without_a_settle() {
        let db = database().await;
        let (writer, stop, lane) = start(&db);
        let stored = new_call("CA1");
        let one = ids(&stored);
        assert!(writer.claim(stored).await.unwrap());
        writer.count_retry(one.0.clone(), one.1.clone()).unwrap();
        // Polled, with a bound far above the window: fails only if the tally is never written.
        let deadline = tokio::time::Instant::now() + COUNT_WINDOW * 10;
        while attempts(&db, &one).await.0 != 2 {
            assert!(
                tokio::time::Instant::now() < deadline,
                "the tally was not written"
            );
            tokio::time::sleep(COUNT_WINDOW / 10).await;
        }
        stop.cancel();
        lane.await.unwrap();
    }

    /// Every stored column of `E`'s rows, as SQLite quotes it (which shows its type too).
    async fn stored<E: EntityTrait>(db: &Pool) -> Vec<String> {
        use sea_orm::{ConnectionTrait, IdenStatic, Iterable, Statement};
        let columns: Vec<String> = E::Column::iter()
            .map(|c| format!("quote(\"{}\")", c.as_str()))
            .collect();
        let sql = format!(
            "SELECT {} AS row FROM \"{}\" ORDER BY 1",
            columns.join(" || '|' || "),
            E::default().table_name()
        );
        let rows = db
            .query_all(Statement::from_string(db.get_database_backend(), sql))
            .await
            .unwrap();
        rows.iter()
            .map(|r| r.try_get::<String>("", "row").unwrap())
            .collect()
    }

    #[tokio::test]
    async fn the_sqlite_lane_stores_the_rows_sea_orm_stores() {
        let mut stored_call = new_call("CA1");
        stored_call.call.fallback_reason = Some(entity::states::FallbackReason::AgentUnhealthy);
        stored_call.call.duration_secs = Some(7);
        stored_call.answer.token_expires_at = Some(Utc::now());
        let (lane, orm) = (database().await, database().await);
        let (writer, stop, running) = start(&lane);
        assert!(writer.claim(stored_call.clone()).await.unwrap());
        stop.cancel();
        running.await.unwrap();
        let NewCall { call, answer, event } = stored_call;
        call::Entity::insert(call.into_active_model())
            .exec(&orm)
            .await
            .unwrap();
        call_webhook::Entity::insert(answer.into_active_model())
            .exec(&orm)
            .await
            .unwrap();
        outbox_event::Entity::insert(event.into_active_model())
            .exec(&orm)
            .await
            .unwrap();
        assert_eq!(
            stored::<call::Entity>(&lane).await,
            stored::<call::Entity>(&orm).await
        );
        assert_eq!(
            stored::<call_webhook::Entity>(&lane).await,
            stored::<call_webhook::Entity>(&orm).await
        );
        assert_eq!(
            stored::<outbox_event::Entity>(&lane).await,
            stored::<outbox_event::Entity>(&orm).await
        );
        assert_eq!(stored::<call::Entity>(&lane).await.len(), 1);
    }

    #[tokio::test]
    async fn a_bad_request_fails_alone_and_an_unwritable_database_is_unavailable() {
        let db = database().await;
        let (writer, stop, lane) = start(&db);
        let mut unknown_route = new_call("CA1");
        unknown_route.call.route_id = "no-such-route".to_owned();
        let (bad, good) = tokio::join!(writer.claim(unknown_route), writer.claim(new_call("CA2")));
        let bad = bad.unwrap_err();
        assert!(!crate::db::is_unavailable(&bad), "{bad}");
        assert!(bad.to_string().contains("FOREIGN KEY"), "{bad}");
        assert!(good.unwrap());

        sea_orm::ConnectionTrait::execute_unprepared(&db, "PRAGMA query_only = 1")
            .await
            .unwrap();
        let err = writer.claim(new_call("CA3")).await.unwrap_err();
        assert!(crate::db::is_unavailable(&err), "{err}");
        sea_orm::ConnectionTrait::execute_unprepared(&db, "PRAGMA query_only = 0")
            .await
            .unwrap();
        assert!(writer.claim(new_call("CA3")).await.unwrap());
        assert_eq!(call::Entity::find().all(&db).await.unwrap().len(), 2);
        stop.cancel();
        lane.await.unwrap();
    }

    #[tokio::test]
    async fn a_failed_batch_still_writes_its_counts_and_fails_only_its_bad_call() {
        let db = database().await;
        let (writer, stop, lane) = start(&db);
        let stored = new_call("CA1");
        let one = ids(&stored);
        assert!(writer.claim(stored).await.unwrap());
        writer.count_retry(one.0.clone(), one.1.clone()).unwrap();
        // Answers no call has: their updates change nothing and fail nothing.
        for i in 0..2000 {
            writer
                .count_retry(CallId(format!("call-{i}")), WebhookId(format!("answer-{i}")))
                .unwrap();
        }
        let mut unknown_route = new_call("CA2");
        unknown_route.call.route_id = "no-such-route".to_owned();
        // Queued together: the settle brings the tally into the bad call's batch, which fails
        // as a whole and is written again in parts.
        let (bad, ()) = tokio::join!(writer.claim(unknown_route), writer.settle());
        let bad = bad.unwrap_err();
        assert!(bad.to_string().contains("FOREIGN KEY"), "{bad}");
        assert_eq!(
            attempts(&db, &one).await.0,
            2,
            "the counts are written though their batch failed"
        );
        stop.cancel();
        lane.await.unwrap();
    }

    #[tokio::test]
    async fn a_stopped_writer_refuses_new_work_instead_of_hanging() {
        let db = database().await;
        let (writer, stop, lane) = start(&db);
        stop.cancel();
        lane.await.unwrap();
        let err = writer.claim(new_call("CA1")).await.unwrap_err();
        assert!(err.to_string().contains("writer stopped"), "{err}");
        assert!(call::Entity::find().all(&db).await.unwrap().is_empty());
    }
}
