//! Group commit for the webhook hot path. Concurrent new calls and retry counts queue up while
//! a batch is being written; the next batch writes all of them together (its new calls in one
//! transaction), so the database commits once for many requests. A new call gets its answer
//! only after its rows are committed. A retry's answer is already committed, so a retry's count
//! is queued and not waited for: it is written with the next batch, and [`Writer::settle`]
//! waits for the counts queued before it (reads of `attempts` settle first).
mod postgres;
mod sqlite;

use std::{
    collections::{BTreeMap, HashSet},
    sync::Arc,
};

use entity::{
    call, call_webhook,
    id::{CallId, WebhookId},
    outbox_event,
};
use prometheus_client::metrics::histogram::Histogram;
use sea_orm::{ConnectionTrait, DbBackend, DbErr, EntityTrait, IdenStatic, Iterable};
use tokio::sync::{mpsc, oneshot, Mutex, OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;

use super::Pool;

/// Most requests written in one transaction. Taking the whole queue (4,096) instead kept the
/// p99 of a flood of retries steady but cost ×1.2 more server CPU per retry (quick runs of
/// `cargo xtask bench`); not adopted.
const MAX_BATCH: usize = 256;
/// Requests that may wait for a writer before callers wait to enqueue.
const QUEUE: usize = 4096;
/// Retry counts queued or being written: never the limit (the queue is), so that the lane
/// writing a full batch does not stop retries from queueing the next one.
const UNSETTLED: usize = QUEUE + MAX_BATCH;

/// A new call with its answer and its outbox event: written together or not at all.
#[derive(Debug, Clone)]
pub struct NewCall {
    pub call: call::Model,
    pub answer: call_webhook::Model,
    pub event: outbox_event::Model,
}

enum Job {
    Claim(Arc<NewCall>, oneshot::Sender<Result<bool, DbErr>>),
    /// Nobody waits for a count; its permit is held until its batch is written, which is what
    /// [`Writer::settle`] waits for.
    CountRetry {
        call_id: CallId,
        webhook_id: WebhookId,
        _unsettled: OwnedSemaphorePermit,
    },
}

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
    /// One permit per retry count queued or being written ([`UNSETTLED`] in all).
    unsettled: Arc<Semaphore>,
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
            unsettled: Arc::new(Semaphore::new(UNSETTLED)),
        }
    }

    /// The lane: takes whatever is queued (at least one request) and writes it as a batch,
    /// until `stop` is cancelled. Then the queue closes (later requests fail at once) and it
    /// writes what the queue still holds before it returns.
    pub async fn run_lane(&self, stop: CancellationToken) {
        let mut jobs = Vec::with_capacity(MAX_BATCH);
        let mut unnest = postgres::Unnest::new(&self.db);
        loop {
            let received = {
                let mut queue = self.jobs.lock().await;
                if stop.is_cancelled() {
                    queue.close();
                }
                tokio::select! {
                    received = queue.recv_many(&mut jobs, MAX_BATCH) => received,
                    () = stop.cancelled() => {
                        queue.close();
                        queue.recv_many(&mut jobs, MAX_BATCH).await
                    }
                }
            };
            if received == 0 {
                return;
            }
            self.batch_sizes.observe(received as f64);
            let jobs = std::mem::take(&mut jobs);
            match self.db.get_database_backend() {
                DbBackend::Sqlite => {
                    sqlite::execute(self.db.connection().get_sqlite_connection_pool(), jobs).await
                }
                _ => {
                    execute(&mut unnest, jobs).await;
                    // Nothing waiting: the connection goes back to the pool until the next batch.
                    if self.queue.capacity() == self.queue.max_capacity() {
                        unnest.release();
                    }
                }
            }
        }
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

    /// Queues one more delivery of a call's webhook and of its stored answer, to be counted
    /// with the next batch; does not wait for it to be written. Fails only if the writer
    /// stopped.
    ///
    /// A retry that waited for its count's commit cost ×2.2 the server CPU of a forged request
    /// and waited for an fsync; queued, ×1.2 to ×1.4, and the rate of retries went from ×1.76
    /// to ×3.3 the rate of new calls (`cargo xtask bench`, medians of one run each). A process
    /// killed within a batch of the answer may lose that retry's count, never a call or its
    /// answer.
    pub async fn count_retry(&self, call_id: CallId, webhook_id: WebhookId) -> Result<(), DbErr> {
        let permit = self
            .unsettled
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| stopped())?;
        self.queue
            .send(Job::CountRetry {
                call_id,
                webhook_id,
                _unsettled: permit,
            })
            .await
            .map_err(|_| stopped())
    }

    /// Waits until every retry count queued before this call is written (or failed). Later
    /// counts wait for it, so it cannot be starved.
    pub async fn settle(&self) {
        if let Ok(all) = self.unsettled.acquire_many(UNSETTLED as u32).await {
            drop(all);
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

/// Writes a batch and answers each request. If the batch fails as a whole, each request is
/// written alone, so one bad request cannot fail the others.
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
    for job in jobs {
        let one = [job];
        let result = batches.write(&one).await.map(|claimed| claimed[0]);
        let [job] = one;
        answer(job, result);
    }
}

/// Answers one request. A caller that went away (client disconnected) needs no answer.
fn answer(job: Job, result: Result<bool, DbErr>) {
    match job {
        Job::Claim(_, done) => {
            let _ = done.send(result);
        }
        Job::CountRetry { call_id, .. } => {
            if let Err(e) = result {
                tracing::warn!(error = %e, call_id = %call_id.as_str(), "a retry's count was not stored");
            }
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
            if let Job::CountRetry {
                call_id, webhook_id, ..
            } = job
            {
                *calls.entry(call_id.as_str()).or_default() += 1;
                *answers.entry(webhook_id.as_str()).or_default() += 1;
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
        id::new_id,
        route,
        states::{CallStatus, Outcome, RouteEnvironment, TenantEnvironment, WebhookKind},
        tenant,
    };
    use sea_orm::{EntityTrait, IntoActiveModel};
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
        let now = Utc::now();
        let call = call::Model {
            id: new_id(),
            call_sid: call_sid.to_owned(),
            tenant_id: "t1".to_owned(),
            route_id: "r1".to_owned(),
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
        let event = crate::db::outbox::pending("t1", &crate::events::Event::CallReceived((&call).into()));
        NewCall { call, answer, event }
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
        let (call_id, webhook_id) = (
            CallId(stored.call.id.clone()),
            WebhookId(stored.answer.id.clone()),
        );
        assert!(writer.claim(stored).await.unwrap());
        writer
            .count_retry(call_id.clone(), webhook_id.clone())
            .await
            .unwrap();
        writer
            .count_retry(call_id.clone(), webhook_id.clone())
            .await
            .unwrap();
        writer.settle().await;
        let call = call::Entity::find_by_id(call_id.0)
            .one(&db)
            .await
            .unwrap()
            .unwrap();
        let answer = call_webhook::Entity::find_by_id(webhook_id.0)
            .one(&db)
            .await
            .unwrap()
            .unwrap();
        assert_eq!((call.attempts, answer.attempts), (3, 3));
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
