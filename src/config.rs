//! Configuration: defaults in code, environment variables and flags override, validated once.
//!
//! Every bounded setting has one allowed range, checked in [`check_ranges`]: a value outside it
//! is rejected with the variable, the flag, the value and the range, never raised or clamped.
use std::{fmt, ops::RangeInclusive, path::PathBuf, sync::Arc, time::Duration};

use clap::{builder::BoolishValueParser, ArgAction, Args, ValueEnum};

use crate::secrets::{Key, Keyring};

/// A secret string whose `Debug` and `Display` never show it.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret.
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The secret itself; call only where it is used.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret([redacted])")
    }
}

/// Where the stream token goes in the `<Stream url>`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum TokenPlacement {
    /// `wss://HOST/media-stream?stream_token=TOKEN`
    Query,
    /// `wss://HOST/media-stream/TOKEN`
    Path,
}

/// When an SQLite commit is durable (`VOICE_SQLITE_SYNCHRONOUS`). The database runs in WAL
/// mode either way; group commit pays for the sync once per batch of calls.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, ValueEnum)]
pub enum SqliteSynchronous {
    /// The write-ahead log is synced at every commit: an answered call survives a power loss
    /// or an operating-system crash, not only a crash of the process.
    #[default]
    Full,
    /// The log is synced only at checkpoints: an answered call survives a crash of the
    /// process, but the last commits before a power loss or an OS crash can be lost (the
    /// database itself stays consistent).
    Normal,
}

/// How log lines are written (`VOICE_LOG_FORMAT`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines, the spans' fields in front of the message.
    #[default]
    Text,
    /// One JSON object per line, with the fields of the open spans (`call_sid`, `tenant_id`,
    /// `route_id` on the lines about a call).
    Json,
}

/// Flags of `stateset-voice`, each also read from its environment variable.
#[derive(Args, Debug, Clone)]
pub struct ConfigArgs {
    /// Database URL: sqlite://FILE?mode=rwc or postgres://USER@HOST/DB; add ?pgbouncer=true
    /// behind PgBouncer in transaction pooling mode.
    #[arg(
        long,
        global = true,
        env = "VOICE_DATABASE_URL",
        default_value = "sqlite://stateset-voice.db?mode=rwc",
        hide_env_values = true
    )]
    pub database_url: String,
    /// When an SQLite commit is durable: `full` (survives power loss) or `normal` (survives
    /// a process crash). Ignored on PostgreSQL, whose own `synchronous_commit` applies.
    #[arg(
        long,
        global = true,
        env = "VOICE_SQLITE_SYNCHRONOUS",
        value_enum,
        default_value = "full"
    )]
    pub sqlite_synchronous: SqliteSynchronous,
    /// Size of the database connection pool (default: 1 for SQLite, 16 for PostgreSQL).
    #[arg(long, global = true, env = "VOICE_DATABASE_MAX_CONNECTIONS")]
    pub database_max_connections: Option<u32>,
    /// Address to listen on.
    #[arg(long, global = true, env = "VOICE_BIND", default_value = "127.0.0.1:8080")]
    pub bind: String,
    /// Public base URL Twilio calls (scheme, host, optional port and path prefix).
    #[arg(
        long,
        global = true,
        env = "VOICE_PUBLIC_URL",
        default_value = "http://127.0.0.1:8080"
    )]
    pub public_url: String,
    /// Media stream WebSocket URL (default: the public URL with ws(s) and /media-stream).
    #[arg(long, global = true, env = "VOICE_STREAM_URL")]
    pub stream_url: Option<String>,
    /// Where the stream token goes in the stream URL.
    #[arg(
        long,
        global = true,
        env = "VOICE_STREAM_TOKEN_PLACEMENT",
        value_enum,
        default_value = "query"
    )]
    pub stream_token_placement: TokenPlacement,
    /// HS256 secret for stream tokens, shared by all instances (at least 32 bytes).
    #[arg(long, global = true, env = "VOICE_TOKEN_SECRET", hide_env_values = true)]
    pub token_secret: Option<String>,
    /// Stream token lifetime (seconds, or a number with s/m suffix).
    #[arg(long, global = true, env = "VOICE_STREAM_TOKEN_TTL", default_value = "60", value_parser = parse_duration)]
    pub stream_token_ttl: Duration,
    /// Key tenant secrets are stored under: base64 of 32 bytes (`openssl rand -base64 32`).
    /// Without it they are stored in clear.
    #[arg(long, global = true, env = "VOICE_SECRETS_KEY", hide_env_values = true)]
    pub secrets_key: Option<String>,
    /// The key before the current one, while `secrets rotate` moves values off it: it still
    /// decrypts, nothing is encrypted under it.
    #[arg(
        long,
        global = true,
        env = "VOICE_SECRETS_KEY_PREVIOUS",
        hide_env_values = true
    )]
    pub secrets_key_previous: Option<String>,
    /// Bearer token of the admin API; when unset, only tenant API keys are accepted.
    #[arg(long, global = true, env = "VOICE_ADMIN_TOKEN", hide_env_values = true)]
    pub admin_token: Option<String>,
    /// Take scheme and host from X-Forwarded-Proto / X-Forwarded-Host.
    #[arg(long, global = true, env = "VOICE_TRUST_FORWARDED", default_value = "false", action = ArgAction::Set, value_parser = BoolishValueParser::new())]
    pub trust_forwarded: bool,
    /// Concurrent media streams this instance accepts before answering with the fallback.
    #[arg(long, global = true, env = "VOICE_MAX_STREAMS", default_value = "500")]
    pub max_streams: usize,
    /// Signature failures on a production route within the window that raise an alert.
    #[arg(long, global = true, env = "VOICE_ALERT_THRESHOLD", default_value = "5")]
    pub alert_threshold: u32,
    /// Alert window (seconds, or a number with s/m suffix).
    #[arg(long, global = true, env = "VOICE_ALERT_WINDOW", default_value = "300", value_parser = parse_duration)]
    pub alert_window: Duration,
    /// What callers to an unknown number hear before the call is hung up.
    #[arg(
        long,
        global = true,
        env = "VOICE_UNKNOWN_ROUTE_MESSAGE",
        default_value = "We're sorry, the number you have called is not in service. Goodbye."
    )]
    pub unknown_route_message: String,
    /// What callers hear when neither the route nor the tenant configures a fallback.
    #[arg(
        long,
        global = true,
        env = "VOICE_FALLBACK_MESSAGE",
        default_value = "We're sorry, we can't take your call right now. Please try again later. Goodbye."
    )]
    pub fallback_message: String,
    /// How long a media stream may take to present a valid `start` (seconds).
    #[arg(long, global = true, env = "VOICE_STREAM_START_TIMEOUT", default_value = "5", value_parser = parse_duration)]
    pub stream_start_timeout: Duration,
    /// At shutdown (SIGTERM), how long open media streams may go on before they are closed
    /// (seconds, or a number with s/m suffix; 0 closes them at once).
    #[arg(long, global = true, env = "VOICE_STREAM_DRAIN_TIMEOUT", default_value = "300", value_parser = parse_duration)]
    pub stream_drain_timeout: Duration,
    /// How often each agent runtime is health-checked (seconds).
    #[arg(long, global = true, env = "VOICE_AGENT_HEALTH_INTERVAL", default_value = "15", value_parser = parse_duration)]
    pub agent_health_interval: Duration,
    /// Close connections with no traffic for this long (seconds, e.g. 60).
    #[arg(long, global = true, env = "VOICE_IDLE_TIMEOUT", default_value = "60", value_parser = parse_duration)]
    pub idle_timeout: Duration,
    /// Time allowed to receive a request head once its first byte arrived (e.g. 10, 500ms).
    #[arg(long, global = true, env = "VOICE_HEADER_READ_TIMEOUT", default_value = "10", value_parser = parse_duration)]
    pub header_read_timeout: Duration,
    /// Time allowed to receive a webhook body once its headers arrived (e.g. 10, 500ms).
    #[arg(long, global = true, env = "VOICE_BODY_READ_TIMEOUT", default_value = "10", value_parser = parse_duration)]
    pub body_read_timeout: Duration,
    /// Where calls answered while the database is unreachable are spooled until it is back
    /// (default: beside the SQLite file, `FILE-spool`; on PostgreSQL `stateset-voice-spool` in
    /// the working directory). One directory per database; local disk.
    #[arg(long, global = true, env = "VOICE_SPOOL_DIR")]
    pub spool_dir: Option<PathBuf>,
    /// How long route lookups are cached per instance (0 disables; e.g. 2, 500ms).
    #[arg(long, global = true, env = "VOICE_ROUTE_CACHE_TTL", default_value = "2", value_parser = parse_duration)]
    pub route_cache_ttl: Duration,
    /// How often buffered diagnostics (signature failures, unknown numbers) are written.
    #[arg(long, global = true, env = "VOICE_DIAGNOSTICS_FLUSH_INTERVAL", default_value = "1", value_parser = parse_duration)]
    pub diagnostics_flush_interval: Duration,
    /// Deliveries of an event before it is dead-lettered.
    #[arg(long, global = true, env = "VOICE_WEBHOOK_MAX_ATTEMPTS", default_value = "8")]
    pub webhook_max_attempts: i32,
    /// Time allowed for one event delivery (e.g. 10, 10s, 500ms).
    #[arg(long, global = true, env = "VOICE_WEBHOOK_TIMEOUT", default_value = "10", value_parser = parse_duration)]
    pub webhook_timeout: Duration,
    /// First retry delay; doubles per attempt up to an hour, with jitter (e.g. 5, 500ms).
    #[arg(long, global = true, env = "VOICE_WEBHOOK_RETRY_BASE", default_value = "5", value_parser = parse_duration)]
    pub webhook_retry_base: Duration,
    /// How often the outbox is polled when idle (e.g. 1, 250ms).
    #[arg(long, global = true, env = "VOICE_OUTBOX_POLL_INTERVAL", default_value = "1", value_parser = parse_duration)]
    pub outbox_poll_interval: Duration,
    /// Refuse to deliver events to loopback and private addresses.
    #[arg(long, global = true, env = "VOICE_WEBHOOK_DENY_PRIVATE", default_value = "false", action = ArgAction::Set, value_parser = BoolishValueParser::new())]
    pub webhook_deny_private: bool,
    /// Days calls (with their answers, media sessions and events), finished events,
    /// diagnostics and alerts are kept before they are deleted; 0 keeps everything.
    #[arg(long, global = true, env = "VOICE_RETENTION_DAYS", default_value = "90", value_name = "DAYS", allow_hyphen_values = true, value_parser = parse_days)]
    pub retention_days: u32,
    /// Log format: `text` (human-readable) or `json` (one object per line, for log queries).
    #[arg(
        long,
        global = true,
        env = "VOICE_LOG_FORMAT",
        value_enum,
        default_value = "text"
    )]
    pub log_format: LogFormat,
}

/// Validated configuration, grouped by concern. Each field names the variable it comes from.
#[derive(Debug, Clone)]
pub struct Config {
    /// Where records are stored.
    pub database: Database,
    /// The HTTP listener and its connection limits.
    pub http: Http,
    /// The URLs Twilio calls and signs.
    pub urls: PublicUrls,
    /// Stream tokens handed out in the TwiML.
    pub stream_tokens: StreamTokens,
    /// Media streams and the agents behind them.
    pub media: Media,
    /// Buffered diagnostics and the signature-failure alerts they raise.
    pub alerts: Alerts,
    /// Event delivery from the outbox to tenant webhooks.
    pub outbox: Outbox,
    /// The admin API.
    pub admin: Admin,
    /// `VOICE_SECRETS_KEY` and `VOICE_SECRETS_KEY_PREVIOUS`: the keys tenant secrets are
    /// stored under (in clear when there is no current key).
    pub secrets: Arc<Keyring>,
    /// What callers hear when no agent takes the call.
    pub messages: CallerMessages,
    /// How long stored records are kept.
    pub retention: Retention,
    /// How the service logs.
    pub logging: Logging,
}

/// Where records are stored.
#[derive(Debug, Clone)]
pub struct Database {
    /// `VOICE_DATABASE_URL`.
    pub url: Secret,
    /// `VOICE_DATABASE_MAX_CONNECTIONS`, defaulted per backend.
    pub max_connections: u32,
    /// `VOICE_SQLITE_SYNCHRONOUS`.
    pub sqlite_synchronous: SqliteSynchronous,
    /// `VOICE_ROUTE_CACHE_TTL`: how long route lookups are cached; zero disables the cache.
    pub route_cache_ttl: Duration,
    /// `VOICE_SPOOL_DIR`, or its default for the database URL.
    pub spool_dir: PathBuf,
}

/// The HTTP listener and its connection limits.
#[derive(Debug, Clone)]
pub struct Http {
    /// `VOICE_BIND`.
    pub bind: String,
    /// `VOICE_IDLE_TIMEOUT`.
    pub idle_timeout: Duration,
    /// `VOICE_HEADER_READ_TIMEOUT`.
    pub header_read_timeout: Duration,
    /// `VOICE_BODY_READ_TIMEOUT`.
    pub body_read_timeout: Duration,
}

/// The URLs Twilio calls and signs.
#[derive(Debug, Clone)]
pub struct PublicUrls {
    /// `VOICE_PUBLIC_URL`, without a trailing slash.
    pub public: String,
    /// `VOICE_STREAM_URL` (or derived from the public URL), without a trailing slash.
    pub stream: String,
    /// `VOICE_TRUST_FORWARDED`: take scheme and host from `X-Forwarded-*`.
    pub trust_forwarded: bool,
}

impl PublicUrls {
    /// The URL Twilio posts to when a stream ends.
    pub fn stream_ended(&self) -> String {
        format!("{}/api/v1/stream-ended", self.public)
    }
}

/// Stream tokens handed out in the TwiML.
#[derive(Debug, Clone)]
pub struct StreamTokens {
    /// `VOICE_TOKEN_SECRET`, or a random one.
    pub secret: Secret,
    /// True when no secret was configured and one was generated for this process.
    pub secret_generated: bool,
    /// `VOICE_STREAM_TOKEN_TTL`.
    pub ttl: Duration,
    /// `VOICE_STREAM_TOKEN_PLACEMENT`.
    pub placement: TokenPlacement,
}

/// Media streams and the agents behind them.
#[derive(Debug, Clone)]
pub struct Media {
    /// `VOICE_MAX_STREAMS`.
    pub max_streams: usize,
    /// `VOICE_STREAM_START_TIMEOUT`.
    pub start_timeout: Duration,
    /// `VOICE_STREAM_DRAIN_TIMEOUT`: at shutdown, how long open streams may go on.
    pub drain_timeout: Duration,
    /// `VOICE_AGENT_HEALTH_INTERVAL`.
    pub agent_health_interval: Duration,
}

/// Buffered diagnostics and the signature-failure alerts they raise.
#[derive(Debug, Clone)]
pub struct Alerts {
    /// `VOICE_ALERT_THRESHOLD`.
    pub threshold: u32,
    /// `VOICE_ALERT_WINDOW`.
    pub window: Duration,
    /// `VOICE_DIAGNOSTICS_FLUSH_INTERVAL`.
    pub diagnostics_flush_interval: Duration,
}

/// Event delivery from the outbox to tenant webhooks.
#[derive(Debug, Clone)]
pub struct Outbox {
    /// `VOICE_WEBHOOK_MAX_ATTEMPTS`.
    pub max_attempts: i32,
    /// `VOICE_WEBHOOK_TIMEOUT`: one delivery attempt.
    pub timeout: Duration,
    /// `VOICE_WEBHOOK_RETRY_BASE`.
    pub retry_base: Duration,
    /// `VOICE_OUTBOX_POLL_INTERVAL`.
    pub poll_interval: Duration,
    /// `VOICE_WEBHOOK_DENY_PRIVATE`.
    pub deny_private: bool,
}

/// The admin API.
#[derive(Debug, Clone)]
pub struct Admin {
    /// `VOICE_ADMIN_TOKEN`; when `None`, only tenant API keys are accepted.
    pub token: Option<Secret>,
}

/// What callers hear when no agent takes the call.
#[derive(Debug, Clone)]
pub struct CallerMessages {
    /// `VOICE_UNKNOWN_ROUTE_MESSAGE`.
    pub unknown_route: String,
    /// `VOICE_FALLBACK_MESSAGE`.
    pub fallback: String,
}

/// How the service logs (the filter is `VOICE_LOG`, read when logging starts).
#[derive(Debug, Clone)]
pub struct Logging {
    /// `VOICE_LOG_FORMAT`.
    pub format: LogFormat,
}

/// How long stored records are kept, and how the purge deletes them.
#[derive(Debug, Clone)]
pub struct Retention {
    /// `VOICE_RETENTION_DAYS`; 0 keeps everything.
    pub days: u32,
    /// Calls (or other rows) deleted per transaction.
    pub batch_size: u64,
    /// Least pause between two batches, so the writes of new calls are never queued behind a
    /// purge; a slow batch is followed by a longer one (see `domain::retention`).
    pub pause: Duration,
    /// Time between two purge runs (the first runs at start).
    pub interval: Duration,
}

impl Retention {
    /// Calls deleted per transaction by default: about a millisecond of database time, so a
    /// new call's commit waits behind at most one short batch.
    pub const BATCH_SIZE: u64 = 100;
    /// The default pause between batches.
    pub const PAUSE: Duration = Duration::from_millis(50);
    /// The default time between runs.
    pub const INTERVAL: Duration = Duration::from_secs(3600);

    /// How old a record may get, or `None` when everything is kept.
    pub fn max_age(&self) -> Option<Duration> {
        (self.days > 0).then(|| DAY * self.days)
    }
}

/// A configuration value that cannot work.
#[derive(Debug, thiserror::Error)]
#[error("invalid {name} ({flag}): {reason}", flag = flag_of(name))]
pub struct ConfigError {
    /// The environment variable, e.g. `VOICE_IDLE_TIMEOUT`.
    pub name: &'static str,
    /// What is wrong with the value.
    pub reason: String,
}

/// The flag of an environment variable: `VOICE_IDLE_TIMEOUT` is `--idle-timeout`.
fn flag_of(name: &str) -> String {
    let flag = name.strip_prefix("VOICE_").unwrap_or(name);
    format!("--{}", flag.to_ascii_lowercase().replace('_', "-"))
}

fn invalid(name: &'static str, reason: impl Into<String>) -> ConfigError {
    ConfigError {
        name,
        reason: reason.into(),
    }
}

impl ConfigArgs {
    /// Every flag at its default, ignoring the environment.
    pub fn defaults() -> Self {
        #[derive(clap::Parser)]
        struct Defaults {
            #[command(flatten)]
            args: ConfigArgs,
        }
        let mut command = <Defaults as clap::CommandFactory>::command();
        // Drop the environment bindings so the result does not depend on the caller's env.
        let ids: Vec<_> = command.get_arguments().map(|a| a.get_id().clone()).collect();
        for id in ids {
            command = command.mut_arg(id, |a| a.env(None::<&str>));
        }
        let matches = command.get_matches_from(["defaults"]);
        <Defaults as clap::FromArgMatches>::from_arg_matches(&matches)
            .expect("defaults parse")
            .args
    }
}

impl Config {
    /// Validates flags and environment.
    pub fn from_args(args: ConfigArgs) -> Result<Self, ConfigError> {
        let is_sqlite = args.database_url.starts_with("sqlite:");
        if !is_sqlite && !args.database_url.starts_with("postgres") {
            return Err(invalid(
                "VOICE_DATABASE_URL",
                "must start with sqlite: or postgres://",
            ));
        }
        let default_connections = if is_sqlite { 1 } else { 16 };
        let database_max_connections = args.database_max_connections.unwrap_or(default_connections);
        check_ranges(&args, database_max_connections)?;
        let public_url =
            base_url(&args.public_url, &["http", "https"]).map_err(|r| invalid("VOICE_PUBLIC_URL", r))?;
        let stream_url = match &args.stream_url {
            Some(url) => base_url(url, &["ws", "wss"]).map_err(|r| invalid("VOICE_STREAM_URL", r))?,
            None => {
                let rest = public_url.split_once("://").map_or("", |(_, rest)| rest);
                let scheme = if public_url
                    .get(..8)
                    .is_some_and(|s| s.eq_ignore_ascii_case("https://"))
                {
                    "wss"
                } else {
                    "ws"
                };
                format!("{scheme}://{rest}/media-stream")
            }
        };
        let (token_secret, token_secret_generated) = match args.token_secret {
            Some(secret) if secret.len() >= 32 => (Secret::new(secret), false),
            Some(_) => return Err(invalid("VOICE_TOKEN_SECRET", "must be at least 32 bytes")),
            None => (Secret::new(random_token(32)), true),
        };
        let admin_token = match args.admin_token {
            Some(t) if t.trim().is_empty() => None,
            Some(t) => Some(Secret::new(t)),
            None => None,
        };
        let secrets = Keyring::new(
            secrets_key("VOICE_SECRETS_KEY", args.secrets_key.as_deref())?,
            secrets_key("VOICE_SECRETS_KEY_PREVIOUS", args.secrets_key_previous.as_deref())?,
        );
        if secrets.current_id().is_none() && args.secrets_key_previous.is_some() {
            return Err(invalid(
                "VOICE_SECRETS_KEY_PREVIOUS",
                "needs VOICE_SECRETS_KEY: the previous key only decrypts",
            ));
        }
        for (name, message) in [
            ("VOICE_UNKNOWN_ROUTE_MESSAGE", &args.unknown_route_message),
            ("VOICE_FALLBACK_MESSAGE", &args.fallback_message),
        ] {
            if message.trim().is_empty() {
                return Err(invalid(
                    name,
                    "must not be empty: a caller is never left in silence",
                ));
            }
        }
        let spool_dir = args
            .spool_dir
            .clone()
            .unwrap_or_else(|| default_spool_dir(&args.database_url));
        Ok(Self {
            database: Database {
                url: Secret::new(args.database_url),
                max_connections: database_max_connections,
                sqlite_synchronous: args.sqlite_synchronous,
                route_cache_ttl: args.route_cache_ttl,
                spool_dir,
            },
            http: Http {
                bind: args.bind,
                idle_timeout: args.idle_timeout,
                header_read_timeout: args.header_read_timeout,
                body_read_timeout: args.body_read_timeout,
            },
            urls: PublicUrls {
                public: public_url,
                stream: stream_url,
                trust_forwarded: args.trust_forwarded,
            },
            stream_tokens: StreamTokens {
                secret: token_secret,
                secret_generated: token_secret_generated,
                ttl: args.stream_token_ttl,
                placement: args.stream_token_placement,
            },
            media: Media {
                max_streams: args.max_streams,
                start_timeout: args.stream_start_timeout,
                drain_timeout: args.stream_drain_timeout,
                agent_health_interval: args.agent_health_interval,
            },
            alerts: Alerts {
                threshold: args.alert_threshold,
                window: args.alert_window,
                diagnostics_flush_interval: args.diagnostics_flush_interval,
            },
            outbox: Outbox {
                max_attempts: args.webhook_max_attempts,
                timeout: args.webhook_timeout,
                retry_base: args.webhook_retry_base,
                poll_interval: args.outbox_poll_interval,
                deny_private: args.webhook_deny_private,
            },
            admin: Admin { token: admin_token },
            secrets: Arc::new(secrets),
            messages: CallerMessages {
                unknown_route: args.unknown_route_message,
                fallback: args.fallback_message,
            },
            retention: Retention {
                days: args.retention_days,
                batch_size: Retention::BATCH_SIZE,
                pause: Retention::PAUSE,
                interval: Retention::INTERVAL,
            },
            logging: Logging {
                format: args.log_format,
            },
        })
    }
}

/// A key of encryption at rest from its variable; the error names the variable, never the value.
fn secrets_key(name: &'static str, value: Option<&str>) -> Result<Option<Key>, ConfigError> {
    value
        .map(|v| Key::from_base64(v).map_err(|e| invalid(name, e.to_string())))
        .transpose()
}

const ONE_MS: Duration = Duration::from_millis(1);
const TEN_MS: Duration = Duration::from_millis(10);
const SECOND: Duration = Duration::from_secs(1);
const FIVE_MIN: Duration = Duration::from_secs(300);
const HOUR: Duration = Duration::from_secs(3600);
const DAY: Duration = Duration::from_secs(86_400);

/// The longest retention accepted: ten years. Anything longer is a typo (or means "keep
/// everything", which is 0).
const MAX_RETENTION_DAYS: u32 = 3650;

/// The allowed range of every bounded setting. Upper bounds keep deadlines and intervals within
/// what timers and caches accept; lower bounds keep loops and timeouts meaningful.
#[rustfmt::skip]
fn check_ranges(args: &ConfigArgs, database_max_connections: u32) -> Result<(), ConfigError> {
    within("VOICE_DATABASE_MAX_CONNECTIONS",   database_max_connections,        1..=u32::MAX)?;
    within("VOICE_STREAM_TOKEN_TTL",           args.stream_token_ttl,           SECOND..=HOUR)?;
    within("VOICE_ALERT_THRESHOLD",            args.alert_threshold,            1..=u32::MAX)?;
    within("VOICE_ALERT_WINDOW",               args.alert_window,               SECOND..=DAY)?;
    within("VOICE_STREAM_START_TIMEOUT",       args.stream_start_timeout,       SECOND..=FIVE_MIN)?;
    within("VOICE_STREAM_DRAIN_TIMEOUT",       args.stream_drain_timeout,       Duration::ZERO..=HOUR)?;
    within("VOICE_AGENT_HEALTH_INTERVAL",      args.agent_health_interval,      SECOND..=DAY)?;
    within("VOICE_IDLE_TIMEOUT",               args.idle_timeout,               SECOND..=DAY)?;
    within("VOICE_HEADER_READ_TIMEOUT",        args.header_read_timeout,        TEN_MS..=FIVE_MIN)?;
    within("VOICE_BODY_READ_TIMEOUT",          args.body_read_timeout,          TEN_MS..=FIVE_MIN)?;
    within("VOICE_ROUTE_CACHE_TTL",            args.route_cache_ttl,            Duration::ZERO..=HOUR)?;
    within("VOICE_DIAGNOSTICS_FLUSH_INTERVAL", args.diagnostics_flush_interval, TEN_MS..=FIVE_MIN)?;
    within("VOICE_WEBHOOK_MAX_ATTEMPTS",       args.webhook_max_attempts,       1..=50)?;
    within("VOICE_WEBHOOK_TIMEOUT",            args.webhook_timeout,            TEN_MS..=FIVE_MIN)?;
    within("VOICE_WEBHOOK_RETRY_BASE",         args.webhook_retry_base,         ONE_MS..=HOUR)?;
    within("VOICE_OUTBOX_POLL_INTERVAL",       args.outbox_poll_interval,       TEN_MS..=DAY)?;
    within("VOICE_RETENTION_DAYS",             args.retention_days,             0..=MAX_RETENTION_DAYS)?;
    Ok(())
}

/// The type of a bounded setting, and how an error shows its value.
trait Bounded: PartialOrd + Copy {
    /// The largest representable value: a range ending there has no upper bound.
    const MAX: Self;
    fn show(self) -> String;
}

impl Bounded for u32 {
    const MAX: Self = u32::MAX;
    fn show(self) -> String {
        self.to_string()
    }
}

impl Bounded for i32 {
    const MAX: Self = i32::MAX;
    fn show(self) -> String {
        self.to_string()
    }
}

impl Bounded for Duration {
    const MAX: Self = Duration::MAX;
    fn show(self) -> String {
        show_duration(self)
    }
}

/// Accepts `value` when `range` contains it.
fn within<T: Bounded>(name: &'static str, value: T, range: RangeInclusive<T>) -> Result<(), ConfigError> {
    if range.contains(&value) {
        return Ok(());
    }
    let (min, max) = range.into_inner();
    let allowed = if max == T::MAX {
        format!("at least {}", min.show())
    } else {
        format!("{} to {}", min.show(), max.show())
    };
    Err(invalid(
        name,
        format!("{} is out of range (allowed: {allowed})", value.show()),
    ))
}

/// `250 ms`, `10 s`, `5 min`, `24 h`: the largest unit that shows the value exactly.
fn show_duration(d: Duration) -> String {
    if !d.subsec_nanos().is_multiple_of(1_000_000) {
        return format!("{d:?}");
    }
    let millis = d.as_millis();
    let secs = d.as_secs();
    if !millis.is_multiple_of(1000) {
        format!("{millis} ms")
    } else if secs != 0 && secs.is_multiple_of(3600) {
        format!("{} h", secs / 3600)
    } else if secs != 0 && secs.is_multiple_of(60) {
        format!("{} min", secs / 60)
    } else {
        format!("{secs} s")
    }
}

/// Checks an absolute base URL with one of `schemes`, no query or fragment, and returns it
/// without a trailing slash.
fn base_url(input: &str, schemes: &[&str]) -> Result<String, String> {
    let parsed = url::Url::parse(input).map_err(|e| format!("{input:?}: {e}"))?;
    if !schemes.contains(&parsed.scheme()) {
        return Err(format!("{input:?}: scheme must be one of {schemes:?}"));
    }
    if parsed.host_str().is_none() || parsed.query().is_some() || parsed.fragment().is_some() {
        return Err(format!(
            "{input:?}: expected scheme://host[:port][/prefix] with no query"
        ));
    }
    Ok(input.trim_end_matches('/').to_owned())
}

/// Parses `90` (seconds), `90s`, `5m` or `250ms`.
pub fn parse_duration(input: &str) -> Result<Duration, String> {
    let input = input.trim();
    let (digits, millis_per_unit) = if let Some(d) = input.strip_suffix("ms") {
        (d, 1)
    } else if let Some(d) = input.strip_suffix('m') {
        (d, 60_000)
    } else {
        (input.strip_suffix('s').unwrap_or(input), 1000)
    };
    digits
        .parse::<u64>()
        .map(|n| Duration::from_millis(n.saturating_mul(millis_per_unit)))
        .map_err(|_| format!("{input:?} is not a duration (e.g. 60, 60s, 5m, 250ms)"))
}

/// Parses a whole number of days (`90`; `0` keeps everything).
pub fn parse_days(input: &str) -> Result<u32, String> {
    let input = input.trim();
    let problem = match input.parse::<i64>() {
        Ok(days) if days < 0 => format!("{input:?} is negative"),
        Ok(days) => match u32::try_from(days) {
            Ok(days) => return Ok(days),
            Err(_) => format!("{input:?} is out of range (allowed: 0 to {MAX_RETENTION_DAYS})"),
        },
        Err(_) => format!("{input:?} is not a whole number"),
    };
    Err(format!(
        "VOICE_RETENTION_DAYS takes a whole number of days, e.g. 90 (0 keeps everything): {problem}"
    ))
}

/// A random URL-safe token of `bytes` random bytes.
pub fn random_token(bytes: usize) -> String {
    use base64::Engine as _;
    let mut buf = vec![0u8; bytes];
    getrandom::fill(&mut buf).expect("the OS random source is available");
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(buf)
}

/// The spool directory of a database: beside an SQLite file (`FILE-spool`), else
/// `stateset-voice-spool` in the working directory.
fn default_spool_dir(database_url: &str) -> PathBuf {
    let file = database_url
        .strip_prefix("sqlite://")
        .or_else(|| database_url.strip_prefix("sqlite:"))
        .map(|rest| rest.split('?').next().unwrap_or_default())
        .filter(|path| !path.is_empty() && !path.starts_with(':'));
    match file {
        Some(path) => PathBuf::from(format!("{path}-spool")),
        None => PathBuf::from("stateset-voice-spool"),
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        args: ConfigArgs,
    }

    fn parse(argv: &[&str]) -> Result<Config, String> {
        let cli = Cli::try_parse_from([&["x"], argv].concat()).map_err(|e| e.to_string())?;
        Config::from_args(cli.args).map_err(|e| e.to_string())
    }

    #[test]
    fn derives_stream_url_from_public_url() {
        let c = parse(&["--public-url", "https://voice.example.com/tw/"]).unwrap();
        assert_eq!(c.urls.public, "https://voice.example.com/tw");
        assert_eq!(c.urls.stream, "wss://voice.example.com/tw/media-stream");
        assert_eq!(
            c.urls.stream_ended(),
            "https://voice.example.com/tw/api/v1/stream-ended"
        );
        let c = parse(&["--public-url", "http://127.0.0.1:9000"]).unwrap();
        assert_eq!(c.urls.stream, "ws://127.0.0.1:9000/media-stream");
        // The scheme's case does not matter.
        let c = parse(&["--public-url", "HTTPS://voice.example.com"]).unwrap();
        assert_eq!(c.urls.stream, "wss://voice.example.com/media-stream");
    }

    #[test]
    fn rejects_bad_values_with_the_variable_name() {
        let e = parse(&["--public-url", "ftp://x"]).unwrap_err();
        assert!(e.contains("VOICE_PUBLIC_URL"), "{e}");
        let e = parse(&["--token-secret", "short"]).unwrap_err();
        assert!(e.contains("VOICE_TOKEN_SECRET"), "{e}");
        let e = parse(&["--stream-token-ttl", "soon"]).unwrap_err();
        assert!(e.contains("soon"), "{e}");
        let e = parse(&["--alert-threshold", "0"]).unwrap_err();
        assert!(e.contains("alert-threshold"), "{e}");
        assert!(parse(&["--database-url", "mysql://x"]).is_err());
        for (flag, name) in [
            ("--unknown-route-message", "VOICE_UNKNOWN_ROUTE_MESSAGE"),
            ("--fallback-message", "VOICE_FALLBACK_MESSAGE"),
        ] {
            let e = parse(&[flag, "  "]).unwrap_err();
            assert!(e.contains(name) && e.contains("must not be empty"), "{e}");
        }
    }

    /// Flag, a value outside its range, and what the error must say besides the variable.
    const OUT_OF_RANGE: &[(&str, &str, &str)] = &[
        (
            "--database-max-connections",
            "0",
            "0 is out of range (allowed: at least 1)",
        ),
        (
            "--stream-token-ttl",
            "0",
            "0 s is out of range (allowed: 1 s to 1 h)",
        ),
        (
            "--stream-token-ttl",
            "3601",
            "3601 s is out of range (allowed: 1 s to 1 h)",
        ),
        (
            "--alert-threshold",
            "0",
            "0 is out of range (allowed: at least 1)",
        ),
        (
            "--alert-window",
            "0",
            "0 s is out of range (allowed: 1 s to 24 h)",
        ),
        (
            "--alert-window",
            "1441m",
            "1441 min is out of range (allowed: 1 s to 24 h)",
        ),
        (
            "--stream-start-timeout",
            "999ms",
            "999 ms is out of range (allowed: 1 s to 5 min)",
        ),
        (
            "--stream-start-timeout",
            "301",
            "301 s is out of range (allowed: 1 s to 5 min)",
        ),
        (
            "--stream-drain-timeout",
            "61m",
            "61 min is out of range (allowed: 0 s to 1 h)",
        ),
        (
            "--agent-health-interval",
            "0",
            "0 s is out of range (allowed: 1 s to 24 h)",
        ),
        (
            "--agent-health-interval",
            "1441m",
            "1441 min is out of range (allowed: 1 s to 24 h)",
        ),
        (
            "--idle-timeout",
            "500ms",
            "500 ms is out of range (allowed: 1 s to 24 h)",
        ),
        (
            "--idle-timeout",
            "1441m",
            "1441 min is out of range (allowed: 1 s to 24 h)",
        ),
        (
            "--header-read-timeout",
            "9ms",
            "9 ms is out of range (allowed: 10 ms to 5 min)",
        ),
        (
            "--header-read-timeout",
            "6m",
            "6 min is out of range (allowed: 10 ms to 5 min)",
        ),
        (
            "--body-read-timeout",
            "0",
            "0 s is out of range (allowed: 10 ms to 5 min)",
        ),
        (
            "--body-read-timeout",
            "301",
            "301 s is out of range (allowed: 10 ms to 5 min)",
        ),
        (
            "--route-cache-ttl",
            "61m",
            "61 min is out of range (allowed: 0 s to 1 h)",
        ),
        (
            "--diagnostics-flush-interval",
            "5ms",
            "5 ms is out of range (allowed: 10 ms to 5 min)",
        ),
        (
            "--diagnostics-flush-interval",
            "10m",
            "10 min is out of range (allowed: 10 ms to 5 min)",
        ),
        (
            "--webhook-max-attempts",
            "0",
            "0 is out of range (allowed: 1 to 50)",
        ),
        (
            "--webhook-max-attempts",
            "51",
            "51 is out of range (allowed: 1 to 50)",
        ),
        (
            "--webhook-timeout",
            "0",
            "0 s is out of range (allowed: 10 ms to 5 min)",
        ),
        (
            "--webhook-timeout",
            "5001s",
            "5001 s is out of range (allowed: 10 ms to 5 min)",
        ),
        (
            "--webhook-retry-base",
            "0",
            "0 s is out of range (allowed: 1 ms to 1 h)",
        ),
        (
            "--webhook-retry-base",
            "3601",
            "3601 s is out of range (allowed: 1 ms to 1 h)",
        ),
        (
            "--outbox-poll-interval",
            "1ms",
            "1 ms is out of range (allowed: 10 ms to 24 h)",
        ),
        (
            "--outbox-poll-interval",
            "86401",
            "86401 s is out of range (allowed: 10 ms to 24 h)",
        ),
        (
            "--retention-days",
            "3651",
            "3651 is out of range (allowed: 0 to 3650)",
        ),
    ];

    #[test]
    fn out_of_range_values_are_rejected_never_raised() {
        for &(flag, value, expected) in OUT_OF_RANGE {
            let name = format!("VOICE_{}", flag[2..].to_ascii_uppercase().replace('-', "_"));
            let e = parse(&[flag, value]).expect_err(&format!("{flag} {value} is accepted"));
            assert_eq!(e, format!("invalid {name} ({flag}): {expected}"));
        }
    }

    #[test]
    fn range_bounds_and_the_values_tests_use_are_accepted() {
        for (flag, value) in [
            ("--database-max-connections", "1"),
            ("--stream-token-ttl", "1"),
            ("--stream-token-ttl", "3600"),
            ("--alert-threshold", "1"),
            ("--alert-window", "1"),
            ("--alert-window", "1440m"),
            ("--stream-start-timeout", "1"),
            ("--stream-start-timeout", "5m"),
            ("--stream-drain-timeout", "0"),
            ("--stream-drain-timeout", "60m"),
            ("--agent-health-interval", "1"),
            ("--agent-health-interval", "1440m"),
            ("--idle-timeout", "1"),
            ("--idle-timeout", "1440m"),
            ("--header-read-timeout", "10ms"),
            ("--header-read-timeout", "5m"),
            ("--body-read-timeout", "10ms"),
            ("--body-read-timeout", "5m"),
            ("--route-cache-ttl", "0"),
            ("--route-cache-ttl", "60m"),
            ("--diagnostics-flush-interval", "10ms"),
            ("--diagnostics-flush-interval", "5m"),
            ("--webhook-max-attempts", "1"),
            ("--webhook-max-attempts", "50"),
            ("--webhook-timeout", "10ms"),
            ("--webhook-timeout", "5m"),
            ("--webhook-retry-base", "1ms"),
            ("--webhook-retry-base", "60m"),
            ("--outbox-poll-interval", "10ms"),
            ("--outbox-poll-interval", "1440m"),
            ("--retention-days", "0"),
            ("--retention-days", "3650"),
        ] {
            if let Err(e) = parse(&[flag, value]) {
                panic!("{flag} {value}: {e}");
            }
        }
    }

    #[test]
    fn log_format_is_text_or_json() {
        assert_eq!(
            Config::from_args(ConfigArgs::defaults()).unwrap().logging.format,
            LogFormat::Text
        );
        let json = parse(&["--log-format", "json"]).unwrap();
        assert_eq!(json.logging.format, LogFormat::Json);
        let e = parse(&["--log-format", "xml"]).unwrap_err();
        assert!(
            e.contains("invalid value 'xml'") && e.contains("possible values: text, json"),
            "{e}"
        );
    }

    #[test]
    fn sqlite_synchronous_is_full_or_normal() {
        let normal = parse(&["--sqlite-synchronous", "normal"]).unwrap();
        assert_eq!(normal.database.sqlite_synchronous, SqliteSynchronous::Normal);
        assert!(parse(&["--sqlite-synchronous", "off"]).is_err());
    }

    #[test]
    fn defaults_are_valid() {
        let c = Config::from_args(ConfigArgs::defaults()).unwrap();
        assert_eq!(c.database.max_connections, 1);
        assert_eq!(c.database.sqlite_synchronous, SqliteSynchronous::Full);
        assert_eq!(c.database.route_cache_ttl, Duration::from_secs(2));
        assert_eq!(c.http.bind, "127.0.0.1:8080");
        assert_eq!(c.http.idle_timeout, Duration::from_secs(60));
        assert_eq!(c.http.header_read_timeout, Duration::from_secs(10));
        assert_eq!(c.http.body_read_timeout, Duration::from_secs(10));
        assert_eq!(c.urls.public, "http://127.0.0.1:8080");
        assert!(!c.urls.trust_forwarded);
        assert!(c.stream_tokens.secret_generated);
        assert_eq!(c.stream_tokens.ttl, Duration::from_secs(60));
        assert_eq!(c.stream_tokens.placement, TokenPlacement::Query);
        assert_eq!(c.media.max_streams, 500);
        assert_eq!(c.media.start_timeout, Duration::from_secs(5));
        assert_eq!(c.media.drain_timeout, Duration::from_secs(300));
        assert_eq!(c.media.agent_health_interval, Duration::from_secs(15));
        assert_eq!(c.alerts.threshold, 5);
        assert_eq!(c.alerts.window, Duration::from_secs(300));
        assert_eq!(c.alerts.diagnostics_flush_interval, Duration::from_secs(1));
        assert_eq!(c.outbox.max_attempts, 8);
        assert_eq!(c.outbox.timeout, Duration::from_secs(10));
        assert_eq!(c.outbox.retry_base, Duration::from_secs(5));
        assert_eq!(c.outbox.poll_interval, Duration::from_secs(1));
        assert!(!c.outbox.deny_private);
        assert!(c.admin.token.is_none());
        assert_eq!(c.retention.days, 90);
        assert_eq!(c.retention.max_age(), Some(Duration::from_secs(90 * 86_400)));
        assert_eq!(c.retention.interval, Duration::from_secs(3600));
        let postgres = parse(&["--database-url", "postgres://u@h/db"]).unwrap();
        assert_eq!(postgres.database.max_connections, 16);
    }

    #[test]
    fn error_flags_are_the_flags_of_their_variables() {
        let command = <Cli as clap::CommandFactory>::command();
        let mut checked = 0;
        for arg in command.get_arguments() {
            let (Some(env), Some(long)) = (arg.get_env(), arg.get_long()) else {
                continue;
            };
            assert_eq!(flag_of(&env.to_string_lossy()), format!("--{long}"));
            checked += 1;
        }
        assert_eq!(checked, 34);
    }

    #[test]
    fn retention_is_a_whole_number_of_days() {
        assert_eq!(
            parse(&["--retention-days", "0"]).unwrap().retention.max_age(),
            None
        );
        assert_eq!(parse(&["--retention-days", "7"]).unwrap().retention.days, 7);
        for (value, expected) in [
            ("-1", "\"-1\" is negative"),
            ("1.5", "\"1.5\" is not a whole number"),
            ("90d", "\"90d\" is not a whole number"),
            ("", "\"\" is not a whole number"),
            (
                "99999999999",
                "\"99999999999\" is out of range (allowed: 0 to 3650)",
            ),
        ] {
            let e = parse(&["--retention-days", value]).expect_err(value);
            assert!(
                e.contains("--retention-days")
                    && e.contains("VOICE_RETENTION_DAYS takes a whole number of days")
                    && e.ends_with(&format!(": {expected}\n\nFor more information, try '--help'.\n")),
                "{value}: {e}"
            );
        }
    }

    #[test]
    fn durations_show_in_their_largest_exact_unit() {
        for (d, shown) in [
            (Duration::ZERO, "0 s"),
            (Duration::from_millis(250), "250 ms"),
            (Duration::from_millis(1500), "1500 ms"),
            (Duration::from_secs(90), "90 s"),
            (Duration::from_secs(300), "5 min"),
            (Duration::from_secs(7200), "2 h"),
            (Duration::from_micros(1500), "1.5ms"),
        ] {
            assert_eq!(show_duration(d), shown);
        }
    }

    #[test]
    fn the_spool_is_beside_the_sqlite_file_unless_configured() {
        for (url, dir) in [
            ("sqlite://stateset-voice.db?mode=rwc", "stateset-voice.db-spool"),
            ("sqlite:///var/lib/voice/v.db", "/var/lib/voice/v.db-spool"),
            ("sqlite:data/v.db?mode=rwc", "data/v.db-spool"),
            ("sqlite::memory:", "stateset-voice-spool"),
            ("postgres://postgres@db/voice", "stateset-voice-spool"),
        ] {
            assert_eq!(default_spool_dir(url), PathBuf::from(dir), "{url}");
        }
        let c = parse(&["--spool-dir", "/srv/spool"]).unwrap();
        assert_eq!(c.database.spool_dir, PathBuf::from("/srv/spool"));
    }

    #[test]
    fn secrets_keys_are_base64_of_32_bytes_and_errors_never_show_them() {
        use base64::{engine::general_purpose::STANDARD, Engine as _};
        let key = STANDARD.encode([3u8; 32]);
        let previous = STANDARD.encode([4u8; 32]);
        let c = parse(&["--secrets-key", &key, "--secrets-key-previous", &previous]).unwrap();
        let id = c.secrets.current_id().expect("a current key").to_string();
        assert!(!format!("{c:?}").contains(&key) && !format!("{c:?}").contains(&previous));
        assert!(format!("{c:?}").contains(&id));
        assert!(parse(&[]).unwrap().secrets.current_id().is_none());
        let short = STANDARD.encode([3u8; 31]);
        for (args, name, reason) in [
            (
                vec!["--secrets-key", short.as_str()],
                "VOICE_SECRETS_KEY",
                "must encode 32 bytes, not 31",
            ),
            (
                vec!["--secrets-key", "not-base64!"],
                "VOICE_SECRETS_KEY",
                "must be standard base64",
            ),
            (
                vec!["--secrets-key", &key, "--secrets-key-previous", &short],
                "VOICE_SECRETS_KEY_PREVIOUS",
                "must encode 32 bytes",
            ),
            (
                vec!["--secrets-key-previous", &previous],
                "VOICE_SECRETS_KEY_PREVIOUS",
                "needs VOICE_SECRETS_KEY",
            ),
        ] {
            let e = parse(&args).unwrap_err();
            assert!(e.contains(name) && e.contains(reason), "{e}");
            for value in [&key, &previous, &short] {
                assert!(!e.contains(value.as_str()), "{e}");
            }
        }
    }

    #[test]
    fn secrets_do_not_print() {
        let c = parse(&[
            "--admin-token",
            "adm-secret-value",
            "--token-secret",
            &"k".repeat(40),
            "--database-url",
            "postgres://voice:db-password@db.internal/voice",
        ])
        .unwrap();
        let shown = format!("{c:?}");
        for secret in ["adm-secret-value", &"k".repeat(40), "db-password"] {
            assert!(!shown.contains(secret), "{shown}");
        }
        assert!(shown.contains("Secret([redacted])"), "{shown}");
        assert!(
            parse(&["--trust-forwarded", "true"])
                .unwrap()
                .urls
                .trust_forwarded
        );
        assert_eq!(parse_duration("5m"), Ok(Duration::from_secs(300)));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("7"), Ok(Duration::from_secs(7)));
    }
}
