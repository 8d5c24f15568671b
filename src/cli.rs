//! The `stateset-voice` command line.
use std::process::ExitCode;

use clap::{builder::TypedValueParser as _, Args, Parser, Subcommand};
use entity::states::{RouteEnvironment, TenantEnvironment};

use crate::{
    config::{Config, ConfigArgs},
    db,
    domain::{
        admin::{self, NewRoute, NewTenant},
        fallback::FallbackAction,
        secrets_at_rest::{self, AtStart},
    },
    twilio::{
        form::FormParams,
        signature::{self, Algorithm},
    },
};

/// stateset-voice: answers Twilio Voice webhooks for many tenants.
#[derive(Parser, Debug)]
#[command(name = "stateset-voice", version, about)]
pub struct Cli {
    #[command(flatten)]
    pub config: ConfigArgs,
    #[command(subcommand)]
    pub command: Command,
}

/// Subcommands.
#[derive(Subcommand, Debug)]
pub enum Command {
    /// Migrate the database and serve HTTP.
    Serve {
        /// Seed a demo tenant and route and print a signed curl command.
        #[arg(long)]
        demo: bool,
    },
    /// Apply database migrations and exit.
    Migrate,
    /// Write a consistent copy of the live SQLite database to FILE (which must not exist);
    /// the service keeps serving. On PostgreSQL use pg_dump.
    Backup {
        /// Where the copy goes; refused when it already exists.
        file: std::path::PathBuf,
    },
    /// Manage tenants.
    #[command(subcommand)]
    Tenant(TenantCommand),
    /// Manage phone routes.
    #[command(subcommand)]
    Route(RouteCommand),
    /// Print the X-Twilio-Signature of a form, or check one with --check.
    Sign(SignArgs),
    /// Manage the encryption of tenant secrets at rest.
    #[command(subcommand)]
    Secrets(SecretsCommand),
    /// Place a test call without a phone: play Twilio's part against a deployment.
    Call(CallArgs),
    /// Print the OpenAPI document (YAML).
    #[command(hide = true)]
    Openapi,
    /// Print the AsyncAPI document of the media streams (YAML).
    #[command(hide = true)]
    Asyncapi,
    /// Write the docs portal (the pages /docs serves, and the documents) into DIR.
    Docs {
        /// The directory to write (created if missing; existing pages are replaced).
        #[arg(value_name = "DIR")]
        dir: std::path::PathBuf,
    },
}

/// `tenant` subcommands.
#[derive(Subcommand, Debug)]
pub enum TenantCommand {
    /// Create a tenant.
    Add {
        #[arg(long)]
        name: String,
        #[arg(long)]
        account_sid: String,
        /// Twilio auth token (or set VOICE_TENANT_AUTH_TOKEN).
        #[arg(long, env = "VOICE_TENANT_AUTH_TOKEN", hide_env_values = true)]
        auth_token: String,
        #[arg(long, value_parser = state_parser(TenantEnvironment::ALL, TenantEnvironment::as_str, TenantEnvironment::parse))]
        environment: Option<TenantEnvironment>,
        #[arg(long)]
        webhook_url: Option<String>,
        /// Webhook signing secret, `whsec_` + base64 of at least 24 bytes (or set
        /// VOICE_TENANT_WEBHOOK_SECRET); generated and printed once when not given.
        #[arg(long, env = "VOICE_TENANT_WEBHOOK_SECRET", hide_env_values = true)]
        webhook_secret: Option<String>,
        /// Default fallback as JSON, e.g. '{"type":"say","message":"Sorry"}'.
        #[arg(long)]
        default_fallback: Option<String>,
    },
    /// List tenants.
    List,
}

/// `secrets` subcommands.
#[derive(Subcommand, Debug)]
pub enum SecretsCommand {
    /// Re-encrypt every tenant secret under VOICE_SECRETS_KEY (values in clear or under
    /// VOICE_SECRETS_KEY_PREVIOUS), in batches; prints how many tenants changed.
    Rotate,
}

/// `route` subcommands.
#[derive(Subcommand, Debug)]
pub enum RouteCommand {
    /// Create a route.
    Add {
        /// Tenant id.
        #[arg(long)]
        tenant: String,
        /// Called number, E.164.
        #[arg(long)]
        phone_number: String,
        #[arg(long)]
        label: Option<String>,
        #[arg(long, value_parser = state_parser(RouteEnvironment::ALL, RouteEnvironment::as_str, RouteEnvironment::parse))]
        environment: Option<RouteEnvironment>,
        /// Create the route disabled.
        #[arg(long)]
        disabled: bool,
        /// Fallback as JSON, e.g. '{"type":"dial","number":"+15550001111"}'.
        #[arg(long)]
        fallback: Option<String>,
        /// ws(s):// URL of the agent runtime.
        #[arg(long)]
        agent_url: Option<String>,
        /// http(s):// URL of the agent's health endpoint (GET, 2xx = healthy); without it the
        /// health check only opens a TCP connection to the agent's host and port.
        #[arg(long)]
        agent_health_url: Option<String>,
    },
    /// List routes.
    List {
        /// Only this tenant's routes.
        #[arg(long)]
        tenant: Option<String>,
    },
}

/// `sign` arguments.
#[derive(Args, Debug)]
pub struct SignArgs {
    /// The full URL Twilio requests, query string included.
    #[arg(long)]
    pub url: String,
    /// The auth token (or shared key with --algorithm sha256).
    #[arg(long)]
    pub token: String,
    /// Check this signature instead of printing one: exit 0 when valid, 1 when not.
    #[arg(long)]
    pub check: Option<String>,
    /// HMAC algorithm.
    #[arg(long, value_parser = ["sha1", "sha256"], default_value = "sha1")]
    pub algorithm: String,
    /// Decoded form fields, KEY=VALUE; repeated keys allowed.
    #[arg(value_name = "KEY=VALUE")]
    pub fields: Vec<String>,
}

/// The help heading of `call`'s own flags (the service options are not used by `call`).
const CALL_HEADING: &str = "Call options (the service options above are not used)";

/// `call` arguments.
#[derive(Args, Debug)]
#[command(
    after_help = "Steps are printed as they happen; the last line is a one-line summary. \
Exit status: 0 when the call went as the TwiML said, 1 when it did not (the summary says why), \
2 for usage errors (bad flags, unreadable or unsupported WAV)."
)]
pub struct CallArgs {
    /// The deployment's public base URL (VOICE_PUBLIC_URL), or its full webhook URL ending in
    /// /api/v1/incoming-call.
    #[arg(help_heading = CALL_HEADING, long)]
    pub url: String,
    /// The tenant's Twilio auth token: signs every request.
    #[arg(help_heading = CALL_HEADING, long, env = "VOICE_CALL_AUTH_TOKEN", hide_env_values = true)]
    pub token: String,
    /// The tenant's Twilio account SID (AC...).
    #[arg(help_heading = CALL_HEADING, long)]
    pub account_sid: String,
    /// The called number (the route's number), E.164.
    #[arg(help_heading = CALL_HEADING, long)]
    pub to: String,
    /// The caller number.
    #[arg(help_heading = CALL_HEADING, long, default_value = crate::call::DEFAULT_FROM)]
    pub from: String,
    /// The caller's audio: a WAV file, 8 kHz mono, 16-bit PCM or mu-law [default: 6.4 s of
    /// built-in speech].
    #[arg(help_heading = CALL_HEADING, long, value_name = "WAV")]
    pub audio: Option<std::path::PathBuf>,
    /// Write what the agent played to this WAV file (8 kHz mono 16-bit PCM).
    #[arg(help_heading = CALL_HEADING, long, value_name = "WAV")]
    pub record: Option<std::path::PathBuf>,
    /// Key presses sent during the audio, spread through it (0-9, *, #).
    #[arg(help_heading = CALL_HEADING, long, value_name = "DIGITS")]
    pub dtmf: Option<String>,
    /// Write a JSON report of the call to this file.
    #[arg(help_heading = CALL_HEADING, long, value_name = "FILE")]
    pub report: Option<std::path::PathBuf>,
    /// The CallSid to use [default: a fresh CA + 32 hex digits].
    #[arg(help_heading = CALL_HEADING, long)]
    pub call_sid: Option<String>,
    /// Seconds to keep listening after the audio was sent, before sending stop.
    #[arg(
        help_heading = CALL_HEADING,
        long,
        value_name = "SECS",
        default_value = "2",
        value_parser = parse_seconds
    )]
    pub tail: std::time::Duration,
}

fn parse_seconds(value: &str) -> Result<std::time::Duration, String> {
    value
        .parse::<f64>()
        .ok()
        .filter(|s| s.is_finite() && (0.0..=3600.0).contains(s))
        .map(std::time::Duration::from_secs_f64)
        .ok_or_else(|| format!("{value:?} is not a number of seconds (0 to 3600)"))
}

/// Runs `call`: prints each step, writes the report, exits 0 when the call went as the TwiML
/// said and 1 when not.
pub async fn call(args: &CallArgs) -> Result<ExitCode, CliError> {
    let mut options = crate::call::CallOptions::new(&args.url, &args.token, &args.account_sid, &args.to);
    options.from = args.from.clone();
    options.call_sid = args.call_sid.clone();
    options.audio = args.audio.clone();
    options.record = args.record.clone();
    options.dtmf = args.dtmf.clone().unwrap_or_default();
    options.tail = args.tail;
    options.on_step = Some(std::sync::Arc::new(|line: &str| println!("{line}")));
    let report = crate::call::run(options)
        .await
        .map_err(|e| CliError::Usage(e.to_string()))?;
    if let Some(path) = &args.report {
        let json = serde_json::to_string_pretty(&report).expect("reports serialise");
        std::fs::write(path, json + "\n")
            .map_err(|e| CliError::Usage(format!("--report {}: {e}", path.display())))?;
    }
    Ok(if report.ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// Runs `backup`: copies the SQLite database to `file` with `VACUUM INTO`, into a temporary
/// file beside it that is synced and then linked to `file` (which fails if `file` appeared
/// meanwhile), so `file` is never overwritten and never holds a partial copy.
pub async fn backup(config: &Config, file: &std::path::Path) -> Result<(), CliError> {
    let url = config.database.url.expose();
    let Some(source) = db::backup::sqlite_file(url) else {
        return Err(CliError::Usage(if url.starts_with("postgres") {
            "backup copies SQLite databases; back up PostgreSQL with pg_dump \
             (e.g. `pg_dump --format=custom --file=voice.dump DATABASE_URL`, restored with \
             pg_restore; see README, Backups and restore)"
                .to_owned()
        } else {
            "backup needs a database file (VOICE_DATABASE_URL=sqlite://FILE)".to_owned()
        }));
    };
    if std::fs::symlink_metadata(file).is_ok() {
        return Err(CliError::Usage(format!(
            "{} already exists; refusing to overwrite it (choose a new file name)",
            file.display()
        )));
    }
    if !source.is_file() {
        return Err(CliError::Usage(format!(
            "the database file {} does not exist",
            source.display()
        )));
    }
    let dir = match file.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir.to_owned(),
        _ => std::path::PathBuf::from("."),
    };
    let name = file
        .file_name()
        .ok_or_else(|| CliError::Usage(format!("{} is not a file name", file.display())))?;
    let partial = dir.join(format!(
        ".{}.partial-{}",
        name.to_string_lossy(),
        std::process::id()
    ));
    let _ = std::fs::remove_file(&partial);
    let pool = db::connect_url(url, 1, config.database.sqlite_synchronous, None).await?;
    let copied = db::backup::vacuum_into(&pool, &partial).await;
    let _ = pool.close().await;
    let writing = |e: std::io::Error| CliError::Usage(format!("writing {}: {e}", file.display()));
    let linked = copied.map_err(CliError::from).and_then(|()| {
        std::fs::File::open(&partial)
            .and_then(|f| f.sync_all())
            .map_err(writing)?;
        std::fs::hard_link(&partial, file).map_err(|e| match e.kind() {
            std::io::ErrorKind::AlreadyExists => CliError::Usage(format!(
                "{} already exists; refusing to overwrite it (choose a new file name)",
                file.display()
            )),
            _ => writing(e),
        })?;
        if let Ok(dir) = std::fs::File::open(&dir) {
            let _ = dir.sync_all();
        }
        Ok(())
    });
    let _ = std::fs::remove_file(&partial);
    linked?;
    let bytes = std::fs::metadata(file).map(|m| m.len()).unwrap_or_default();
    println!("backup written to {} ({bytes} bytes)", file.display());
    Ok(())
}

/// Errors of the command line.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    #[error("database: {0}")]
    Db(#[from] sea_orm::DbErr),
    #[error(transparent)]
    Domain(#[from] crate::domain::Error),
    #[error("{0}")]
    Usage(String),
    #[error("server: {0}")]
    Io(#[from] std::io::Error),
}

/// Runs `sign`: prints the signature, or checks one.
pub fn sign(args: &SignArgs) -> Result<ExitCode, CliError> {
    let mut form = FormParams::default();
    for field in &args.fields {
        let (k, v) = field
            .split_once('=')
            .ok_or_else(|| CliError::Usage(format!("{field:?} is not KEY=VALUE")))?;
        form.push(k, v);
    }
    let algorithm = if args.algorithm == "sha256" {
        Algorithm::HmacSha256
    } else {
        Algorithm::HmacSha1
    };
    match &args.check {
        None => {
            println!(
                "{}",
                signature::compute(algorithm, args.token.as_bytes(), &args.url, &form)
            );
            Ok(ExitCode::SUCCESS)
        }
        Some(sig) => {
            let valid =
                signature::validate(algorithm, &[args.token.as_bytes()], &args.url, &form, sig).is_some();
            println!("{}", if valid { "valid" } else { "invalid" });
            Ok(if valid {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            })
        }
    }
}

fn parse_fallback(json: Option<String>) -> Result<Option<FallbackAction>, CliError> {
    json.map(|j| FallbackAction::from_json(&j).map_err(|e| CliError::Usage(format!("fallback JSON: {e}"))))
        .transpose()
}

/// Runs a command.
pub async fn run(cli: Cli) -> Result<ExitCode, CliError> {
    match &cli.command {
        Command::Sign(args) => return sign(args),
        Command::Call(args) => return call(args).await,
        Command::Openapi => {
            print!("{}", crate::openapi_yaml());
            return Ok(ExitCode::SUCCESS);
        }
        Command::Asyncapi => {
            print!("{}", crate::asyncapi_yaml());
            return Ok(ExitCode::SUCCESS);
        }
        Command::Docs { dir } => {
            let portal = crate::portal::Portal::from_code();
            portal
                .write_to(dir)
                .map_err(|e| CliError::Usage(format!("writing the docs portal to {}: {e}", dir.display())))?;
            for file in portal.files() {
                println!("{}", dir.join(file.name).display());
            }
            return Ok(ExitCode::SUCCESS);
        }
        _ => {}
    }
    let config = Config::from_args(cli.config)?;
    match cli.command {
        Command::Sign(_) | Command::Call(_) | Command::Openapi | Command::Asyncapi | Command::Docs { .. } => {
            unreachable!("handled above")
        }
        Command::Serve { demo } => {
            if config.stream_tokens.secret_generated {
                tracing::warn!(
                    "VOICE_TOKEN_SECRET is not set: using a random secret for this process; \
                     stream tokens will not verify on other instances or after a restart"
                );
            }
            if config.admin.token.is_none() {
                tracing::info!("VOICE_ADMIN_TOKEN is not set: the admin API accepts only tenant API keys");
            }
            let (state, at_start) = crate::prepare(config).await?;
            match at_start {
                AtStart::InClear => tracing::warn!(
                    "VOICE_SECRETS_KEY is not set: tenant secrets are stored in clear in the database"
                ),
                AtStart::Encrypted { key_id, sealed_now } => tracing::info!(
                    key_id = %key_id,
                    tenants_encrypted_now = sealed_now,
                    "tenant secrets are encrypted at rest"
                ),
            }
            if demo {
                let tenant = crate::demo::seed(&state.db, &state.config.secrets).await?;
                tracing::info!(tenant_id = %tenant.id, number = crate::demo::DEMO_NUMBER, "demo tenant ready");
                println!("{}", crate::demo::curl_command(&state.config, &tenant));
                // stdout stays the one curl command; the whole-call command goes to stderr.
                eprintln!(
                    "\nFor a whole test call (media stream to the echo agent, recorded to out.wav), \
                     run:\n\n{}\n",
                    crate::demo::call_command(&state.config, &tenant)
                );
            }
            let runtime = state.runtime.clone();
            crate::server::serve(state, stop_signals(runtime)?).await?;
        }
        Command::Backup { file } => backup(&config, &file).await?,
        Command::Migrate => {
            let db = db::connect(&config).await?;
            db::migrate(&db).await?;
            println!("migrations applied");
        }
        Command::Secrets(SecretsCommand::Rotate) => {
            let db = db::connect(&config).await?;
            db::migrate(&db).await?;
            let rotation = secrets_at_rest::rotate(&db, &config.secrets).await?;
            println!(
                "tenants re-encrypted under key {}: {}",
                rotation.key_id, rotation.rows_changed
            );
        }
        Command::Tenant(cmd) => {
            let (state, _) = crate::prepare(config).await?;
            match cmd {
                TenantCommand::Add {
                    name,
                    account_sid,
                    auth_token,
                    environment,
                    webhook_url,
                    webhook_secret,
                    default_fallback,
                } => {
                    let created = admin::create_tenant(
                        &state.db,
                        &state.config.secrets,
                        NewTenant {
                            name,
                            account_sid,
                            auth_token,
                            environment,
                            webhook_url,
                            webhook_secret,
                            default_fallback: parse_fallback(default_fallback)?,
                            ..NewTenant::default()
                        },
                    )
                    .await?;
                    println!("{}", created.tenant.id);
                    if let Some(secret) = created.generated_webhook_secret {
                        eprintln!("webhook secret (shown once): {secret}");
                    }
                }
                TenantCommand::List => {
                    let mut cursor = None;
                    loop {
                        let page =
                            db::tenants::list(&state.db, &state.config.secrets, cursor.as_deref(), 100)
                                .await?;
                        for t in &page.items {
                            println!("{}\t{}\t{}\t{}", t.id, t.account_sid, t.environment, t.name);
                        }
                        match page.next_cursor {
                            Some(next) => cursor = Some(next),
                            None => break,
                        }
                    }
                }
            }
        }
        Command::Route(cmd) => {
            let (state, _) = crate::prepare(config).await?;
            match cmd {
                RouteCommand::Add {
                    tenant,
                    phone_number,
                    label,
                    environment,
                    disabled,
                    fallback,
                    agent_url,
                    agent_health_url,
                } => {
                    let route = admin::create_route(
                        &state.db,
                        &db::Scope::Platform,
                        &tenant,
                        NewRoute {
                            phone_number,
                            label,
                            environment,
                            enabled: Some(!disabled),
                            fallback: parse_fallback(fallback)?,
                            agent_url,
                            agent_health_url,
                        },
                    )
                    .await?;
                    println!("{}\t{}", route.id, route.phone_number);
                }
                RouteCommand::List { tenant } => {
                    let scope = match tenant {
                        Some(id) => db::Scope::Tenant(entity::id::TenantId(id)),
                        None => db::Scope::Platform,
                    };
                    let mut cursor = None;
                    loop {
                        let page = db::routes::list(&state.db, &scope, cursor.as_deref(), 100).await?;
                        for r in &page.items {
                            let state = if r.enabled { "enabled" } else { "disabled" };
                            println!(
                                "{}\t{}\t{}\t{}\t{}",
                                r.id, r.phone_number, r.tenant_id, r.environment, state
                            );
                        }
                        match page.next_cursor {
                            Some(next) => cursor = Some(next),
                            None => break,
                        }
                    }
                }
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// A signal that stops `serve`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum StopSignal {
    /// SIGTERM: what orchestrators send at a rolling deploy.
    Terminate,
    /// SIGINT: Ctrl-C.
    Interrupt,
}

impl StopSignal {
    fn name(self) -> &'static str {
        match self {
            Self::Terminate => "SIGTERM",
            Self::Interrupt => "SIGINT",
        }
    }

    /// The exit status when a second signal ends the process: 128 + the signal's number, as
    /// shells report a process killed by it.
    fn exit_status(self) -> i32 {
        match self {
            Self::Terminate => 128 + 15,
            Self::Interrupt => 128 + 2,
        }
    }
}

/// Listens for SIGTERM and SIGINT from now on (so neither kills the process outright).
struct StopSignals {
    #[cfg(unix)]
    terminate: tokio::signal::unix::Signal,
    #[cfg(unix)]
    interrupt: tokio::signal::unix::Signal,
}

impl StopSignals {
    fn listen() -> std::io::Result<Self> {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{signal, SignalKind};
            Ok(Self {
                terminate: signal(SignalKind::terminate())?,
                interrupt: signal(SignalKind::interrupt())?,
            })
        }
        #[cfg(not(unix))]
        Ok(Self {})
    }

    /// The next stop signal.
    async fn next(&mut self) -> StopSignal {
        #[cfg(unix)]
        {
            tokio::select! {
                _ = self.terminate.recv() => StopSignal::Terminate,
                _ = self.interrupt.recv() => StopSignal::Interrupt,
            }
        }
        #[cfg(not(unix))]
        {
            let _ = tokio::signal::ctrl_c().await;
            StopSignal::Interrupt
        }
    }
}

/// Completes at the first SIGTERM or SIGINT, which starts the drain; a second one ends the
/// process at once, with 128 + its number, whatever is still open.
fn stop_signals(
    runtime: std::sync::Arc<crate::domain::runtime::Runtime>,
) -> std::io::Result<impl std::future::Future<Output = ()>> {
    let mut signals = StopSignals::listen()?;
    let (first, first_received) = tokio::sync::oneshot::channel();
    tokio::spawn(async move {
        let signal = signals.next().await;
        tracing::info!(
            signal = signal.name(),
            "stop signal received; a second one exits at once"
        );
        let _ = first.send(());
        let signal = signals.next().await;
        tracing::warn!(
            signal = signal.name(),
            open_streams = runtime.active_streams(),
            "second stop signal: exiting now"
        );
        std::process::exit(signal.exit_status());
    });
    Ok(async move {
        let _ = first_received.await;
    })
}

/// A flag taking one of a state enum's names (listed in `--help`).
fn state_parser<T: Copy + Send + Sync + 'static>(
    all: &'static [T],
    name: fn(T) -> &'static str,
    parse: fn(&str) -> Option<T>,
) -> impl clap::builder::TypedValueParser<Value = T> {
    clap::builder::PossibleValuesParser::new(all.iter().map(move |v| name(*v)))
        .try_map(move |name| parse(&name).ok_or("unknown value"))
}
