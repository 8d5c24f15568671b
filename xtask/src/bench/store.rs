//! The benchmark's databases: created fresh, measured (bytes stored per call), prefilled with
//! clones of a real call, and dropped afterwards. SQLite is read with the `sqlite3` shell,
//! PostgreSQL with `psql`, so the figures come from the database's own accounting.
use std::{
    path::{Path, PathBuf},
    process::{Command, Stdio},
};

/// Calls written per prefill transaction.
const PREFILL_CHUNK: u64 = 100_000;

/// One benchmark database.
pub enum Store {
    Sqlite(PathBuf),
    Postgres(String),
}

/// How much a store holds.
#[derive(Clone, Debug)]
pub struct Size {
    pub bytes: u64,
    pub calls: u64,
}

/// Bytes stored per call, and what they were measured over.
#[derive(Clone, Debug)]
pub struct PerCall {
    pub bytes: f64,
    pub calls: u64,
    pub over: String,
}

impl Size {
    /// The bytes per call added between `self` and `later`.
    pub fn per_call_until(&self, later: &Size, over: &str) -> PerCall {
        let calls = later.calls.saturating_sub(self.calls);
        PerCall {
            bytes: later.bytes.saturating_sub(self.bytes) as f64 / calls.max(1) as f64,
            calls,
            over: over.to_owned(),
        }
    }
}

impl Store {
    /// A new, empty database named after `name`.
    pub fn create(postgres: bool, dir: &Path, name: &str) -> Result<Self, String> {
        if !postgres {
            let path = dir.join(format!("{name}.db"));
            for suffix in ["", "-wal", "-shm"] {
                let _ = std::fs::remove_file(format!("{}{suffix}", path.display()));
            }
            return Ok(Store::Sqlite(path));
        }
        let db = format!("voice_{name}_{}", std::process::id());
        psql("postgres", &format!("create database {db}"))?;
        Ok(Store::Postgres(db))
    }

    /// The service's `VOICE_DATABASE_URL`.
    pub fn url(&self) -> String {
        match self {
            Store::Sqlite(path) => format!("sqlite://{}?mode=rwc", path.display()),
            Store::Postgres(db) => format!("postgres://postgres@127.0.0.1:5432/{db}"),
        }
    }

    fn query(&self, sql: &str) -> Result<String, String> {
        match self {
            Store::Sqlite(path) => sqlite(path, sql),
            Store::Postgres(db) => psql(db, sql),
        }
    }

    /// The bytes in use and the calls stored.
    pub fn size(&self) -> Result<Size, String> {
        let bytes = match self {
            // Pages in use, the write-ahead log included (the shell reads through it).
            Store::Sqlite(_) => self.query(
                "select (page_count - freelist_count) * page_size from pragma_page_count, pragma_freelist_count, pragma_page_size",
            )?,
            Store::Postgres(_) => self.query("select pg_database_size(current_database())")?,
        };
        let calls = self.query("select count(*) from calls")?;
        let number = |text: &str| {
            text.trim()
                .parse::<u64>()
                .map_err(|e| format!("reading a store size ({text:?}): {e}"))
        };
        Ok(Size {
            bytes: number(&bytes)?,
            calls: number(&calls)?,
        })
    }

    /// Adds `calls` clones of the newest call stored (its answer and its event too), with
    /// fresh ids older than any real one (so the clone source stays the newest) and random
    /// CallSids, as real traffic leaves them.
    pub fn prefill(&self, calls: u64) -> Result<(), String> {
        self.prefill_aged(calls, None)
    }

    /// [`Store::prefill`], with the calls and their events dated `age_days` ago when given
    /// (older than a retention window, for the purge benchmark).
    pub fn prefill_aged(&self, calls: u64, age_days: Option<u32>) -> Result<(), String> {
        let mut first = 1;
        while first <= calls {
            let last = (first + PREFILL_CHUNK - 1).min(calls);
            self.query(&self.prefill_sql(first, last, age_days))?;
            eprintln!("    {last} of {calls}");
            first = last + 1;
        }
        match self {
            Store::Postgres(_) => {
                self.query("vacuum analyze")?;
            }
            // The shell's large transactions leave hundreds of MiB of write-ahead log (the
            // service's own checkpoints keep it near 16 MiB). Checkpointed here, so the rounds
            // measure a store of that size as a running service keeps it, not the first
            // checkpoint of the bulk load: the service is idle, so nothing holds the log.
            Store::Sqlite(_) => {
                let result = self.query("pragma wal_checkpoint(TRUNCATE)")?;
                if !result.trim().starts_with("0|") {
                    return Err(format!(
                        "checkpointing the prefilled store: busy, log and checkpointed pages {result}"
                    ));
                }
            }
        }
        Ok(())
    }

    /// The bytes of the database's files on disk (SQLite: the file and its write-ahead log).
    pub fn file_bytes(&self) -> Option<u64> {
        let Store::Sqlite(path) = self else {
            return None;
        };
        let len = |suffix: &str| {
            std::fs::metadata(format!("{}{suffix}", path.display()))
                .map(|m| m.len())
                .unwrap_or(0)
        };
        Some(len("") + len("-wal"))
    }

    fn prefill_sql(&self, first: u64, last: u64, age_days: Option<u32>) -> String {
        let created = |column: &str| match (self, age_days) {
            (_, None) => column.to_owned(),
            (Store::Sqlite(_), Some(days)) => {
                format!("strftime('%Y-%m-%dT%H:%M:%f', 'now', '-{days} days') || '+00:00'")
            }
            (Store::Postgres(_), Some(days)) => format!("now() - interval '{days} days'"),
        };
        let (call_created, event_created) = (created("c.created_at"), created("e.created_at"));
        let (series, id, sid): (String, fn(&str) -> String, &str) = match self {
            Store::Sqlite(_) => (
                format!(
                    "with recursive n(i) as (select {first} union all select i + 1 from n where i < {last})"
                ),
                |prefix: &str| format!("printf('00000000-0000-7000-{prefix}-%012x', n.i)"),
                "'CA' || lower(hex(randomblob(16)))",
            ),
            Store::Postgres(_) => (
                format!("with n(i) as (select generate_series({first}::bigint, {last}::bigint))"),
                |prefix: &str| format!("'00000000-0000-7000-{prefix}-' || lpad(to_hex(n.i), 12, '0')"),
                "'CA' || md5(random()::text || n.i::text)",
            ),
        };
        let (call_id, webhook_id, event_id) = (id("8000"), id("9000"), id("a000"));
        format!(
            "begin;
{series}
insert into calls (id, call_sid, tenant_id, route_id, from_number, to_number, status, outcome,
  fallback_reason, attempts, error_code, error_url, duration_secs, created_at, updated_at, ended_at)
select {call_id}, {sid}, c.tenant_id, c.route_id, c.from_number, c.to_number, c.status, c.outcome,
  c.fallback_reason, c.attempts, c.error_code, c.error_url, c.duration_secs, {call_created},
  c.updated_at, c.ended_at
from calls c, n where c.id = (select max(id) from calls);
{series}
insert into call_webhooks (id, call_id, kind, attempts, twiml, stream_token, token_jti,
  token_expires_at, created_at, updated_at)
select {webhook_id}, {call_id}, w.kind, w.attempts, w.twiml, w.stream_token, w.token_jti,
  w.token_expires_at, w.created_at, w.updated_at
from call_webhooks w, n where w.call_id = (select max(id) from calls);
{series}
insert into outbox_events (id, tenant_id, event_type, payload, status, attempts, next_attempt_at,
  last_error, created_at, delivered_at)
select {event_id}, e.tenant_id, e.event_type, e.payload, 'delivered', 1, e.next_attempt_at,
  null, {event_created}, {event_created}
from outbox_events e, n where e.id = (select max(id) from outbox_events);
commit;"
        )
    }
}

impl Drop for Store {
    fn drop(&mut self) {
        if let Store::Postgres(db) = self {
            let _ = psql("postgres", &format!("drop database if exists {db} with (force)"));
        }
    }
}

fn sqlite(path: &Path, sql: &str) -> Result<String, String> {
    output(
        "sqlite3",
        Command::new("sqlite3")
            .arg("-batch")
            .arg("-cmd")
            .arg(".timeout 30000")
            .arg(path)
            .arg(sql),
    )
}

fn psql(db: &str, sql: &str) -> Result<String, String> {
    output(
        "psql",
        Command::new("psql").args([
            "-h",
            "127.0.0.1",
            "-U",
            "postgres",
            "-X",
            "-q",
            "-A",
            "-t",
            "-v",
            "ON_ERROR_STOP=1",
            "-c",
            sql,
            db,
        ]),
    )
}

fn output(what: &str, cmd: &mut Command) -> Result<String, String> {
    let out = cmd
        .stderr(Stdio::piped())
        .output()
        .map_err(|e| format!("{what}: {e}"))?;
    if !out.status.success() {
        return Err(format!("{what} failed: {}", String::from_utf8_lossy(&out.stderr)));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}
