//! Runs the real `stateset-voice` binary: CLI subcommands, and servers that can be killed.
use std::{
    collections::{HashMap, HashSet, VecDeque},
    io::{BufRead, BufReader},
    process::{Child, Command, Stdio},
    sync::{Arc, Mutex},
    time::Duration,
};

use entity::{call, call_webhook, outbox_event};
use sea_orm::EntityTrait;
use stateset_voice::{
    db::Pool,
    testkit::{incoming_form, ACCOUNT_SID, ADMIN_TOKEN, AUTH_TOKEN, NUMBER, TOKEN_SECRET},
    twilio::signature::{self, Algorithm},
};

const BIN: &str = env!("CARGO_BIN_EXE_stateset-voice");

/// The public URL every server is configured with, as behind a load balancer: signatures are
/// computed for it, whatever port a process listens on.
pub const PUBLIC_URL: &str = "https://voice.example.test";

/// How long a server may take to start listening.
const START_DEADLINE: Duration = Duration::from_secs(60);

/// Lines of a server's log shown in failure messages.
const LOG_LINES: usize = 200;

/// Lines of a server's output kept, per stream.
const KEPT_LINES: usize = 20_000;

/// The binary with a clean configuration: no `VOICE_*` variable from the caller's environment.
fn command(database_url: &str) -> Command {
    let mut cmd = Command::new(BIN);
    for (name, _) in std::env::vars_os() {
        if name.to_string_lossy().starts_with("VOICE_") {
            cmd.env_remove(name);
        }
    }
    cmd.env("VOICE_DATABASE_URL", database_url)
        .env("VOICE_PUBLIC_URL", PUBLIC_URL)
        .env("VOICE_TOKEN_SECRET", TOKEN_SECRET)
        .env("VOICE_ADMIN_TOKEN", ADMIN_TOKEN)
        .env("NO_COLOR", "1")
        .stdin(Stdio::null());
    cmd
}

/// Runs a subcommand to completion and returns what it exited with and printed.
pub async fn cli_output(database_url: &str, args: &[&str]) -> std::process::Output {
    let mut cmd = command(database_url);
    cmd.args(args);
    tokio::task::spawn_blocking(move || cmd.output())
        .await
        .expect("join")
        .expect("the binary runs")
}

/// Runs a subcommand with extra `VOICE_*` settings until it exits, at most `deadline` (then it
/// is killed and the test fails), and returns what it exited with and printed.
pub async fn cli_output_with(
    database_url: &str,
    args: &[&str],
    settings: &[(&str, &str)],
    deadline: Duration,
) -> std::process::Output {
    let mut cmd = command(database_url);
    cmd.args(args)
        .env("VOICE_BIND", "127.0.0.1:0")
        .envs(settings.iter().copied())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let child = cmd.spawn().expect("the binary runs");
    let pid = child.id();
    let waited = tokio::task::spawn_blocking(move || child.wait_with_output());
    match tokio::time::timeout(deadline, waited).await {
        Ok(output) => output.expect("join").expect("output read"),
        Err(_) => {
            let _ = Command::new("kill").arg("-KILL").arg(pid.to_string()).status();
            panic!("`{}` still ran after {deadline:?}", args.join(" "));
        }
    }
}

/// Runs a subcommand to completion and returns its standard output.
pub async fn cli(database_url: &str, args: &[&str]) -> String {
    let mut cmd = command(database_url);
    cmd.args(args);
    let what = args.join(" ");
    let out = tokio::task::spawn_blocking(move || cmd.output())
        .await
        .expect("join")
        .expect("the binary runs");
    assert!(
        out.status.success(),
        "`{what}` failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("UTF-8 output")
}

/// Creates the standard tenant (with `webhook_url`, if given) and its route for [`NUMBER`]
/// through the CLI; returns the tenant id.
pub async fn seed(database_url: &str, webhook_url: Option<&str>) -> String {
    seed_with(database_url, webhook_url, &[]).await
}

/// [`seed`], with more `route add` flags (e.g. `--fallback JSON`).
pub async fn seed_with(database_url: &str, webhook_url: Option<&str>, route_flags: &[&str]) -> String {
    let mut args = vec![
        "tenant",
        "add",
        "--name",
        "Acme",
        "--account-sid",
        ACCOUNT_SID,
        "--auth-token",
        AUTH_TOKEN,
    ];
    if let Some(url) = webhook_url {
        args.extend(["--webhook-url", url]);
    }
    let tenant = cli(database_url, &args).await.trim().to_owned();
    assert!(!tenant.is_empty(), "tenant add prints the id");
    let mut route = vec!["route", "add", "--tenant", &tenant, "--phone-number", NUMBER];
    route.extend_from_slice(route_flags);
    cli(database_url, &route).await;
    tenant
}

/// A `stateset-voice serve` process on a free loopback port; killed when dropped.
pub struct Server {
    child: Child,
    /// `http://127.0.0.1:PORT`
    pub base: String,
    log: Arc<Mutex<VecDeque<String>>>,
    stdout: Arc<Mutex<VecDeque<String>>>,
    readers: Vec<std::thread::JoinHandle<()>>,
}

/// Appends `line` to `lines`, dropping the oldest beyond [`KEPT_LINES`].
fn keep(lines: &Mutex<VecDeque<String>>, line: String) {
    let mut lines = lines.lock().unwrap();
    if lines.len() == KEPT_LINES {
        lines.pop_front();
    }
    lines.push_back(line);
}

impl Server {
    /// Starts a server on `database_url` with extra `VOICE_*` settings and waits until it
    /// listens.
    pub async fn start(database_url: &str, settings: &[(&str, &str)]) -> Self {
        let mut cmd = command(database_url);
        cmd.arg("serve")
            .env("VOICE_BIND", "127.0.0.1:0")
            .env("VOICE_LOG", "warn,stateset_voice=info")
            .envs(settings.iter().copied())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("the server starts");
        let stderr = child.stderr.take().expect("piped stderr");
        let stdout = child.stdout.take().expect("piped stdout");
        let log = Arc::new(Mutex::new(VecDeque::new()));
        let stdout_lines = Arc::new(Mutex::new(VecDeque::new()));
        let (tx, rx) = tokio::sync::oneshot::channel();
        // Read the output until the process ends, so it never blocks on a full pipe.
        let log_reader = std::thread::spawn({
            let log = log.clone();
            move || {
                let mut tx = Some(tx);
                for line in BufReader::new(stderr).lines() {
                    let Ok(line) = line else { break };
                    if let Some(address) = listening_address(&line) {
                        if let Some(tx) = tx.take() {
                            let _ = tx.send(address);
                        }
                    }
                    keep(&log, line);
                }
            }
        });
        let stdout_reader = std::thread::spawn({
            let lines = stdout_lines.clone();
            move || {
                for line in BufReader::new(stdout).lines() {
                    let Ok(line) = line else { break };
                    keep(&lines, line);
                }
            }
        });
        let mut server = Self {
            child,
            base: String::new(),
            log,
            stdout: stdout_lines,
            readers: vec![log_reader, stdout_reader],
        };
        match tokio::time::timeout(START_DEADLINE, rx).await {
            Ok(Ok(address)) => server.base = format!("http://{address}"),
            _ => panic!(
                "the server did not start listening within {START_DEADLINE:?}; exit: {:?}\n{}",
                server.child.try_wait(),
                server.log()
            ),
        }
        server
    }

    /// Reads calls through the admin API, which first writes the retry counts this process
    /// tallied: after it, the database holds every retry this process answered.
    pub async fn settle(&self, client: &reqwest::Client) {
        let res = client
            .get(format!("{}/api/v1/calls?limit=1", self.base))
            .bearer_auth(ADMIN_TOKEN)
            .send()
            .await
            .expect("the admin API answers");
        assert_eq!(res.status(), 200, "{}", res.text().await.unwrap_or_default());
    }

    /// Sends the process the signal `name` (`TERM`, `INT`, ...) with `kill(1)`.
    pub fn signal(&self, name: &str) {
        let status = Command::new("kill")
            .arg(format!("-{name}"))
            .arg(self.child.id().to_string())
            .status()
            .expect("kill runs");
        assert!(status.success(), "kill -{name} failed: {status}");
    }

    /// Whether the process still runs.
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Waits up to `deadline` for the process to exit and returns its status; `None` if it
    /// still runs then.
    pub async fn exited_within(&mut self, deadline: Duration) -> Option<std::process::ExitStatus> {
        let until = std::time::Instant::now() + deadline;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            if std::time::Instant::now() >= until {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Kills the process with SIGKILL and reaps it.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// The last lines the server logged.
    pub fn log(&self) -> String {
        let log = self.log.lock().unwrap();
        let skip = log.len().saturating_sub(LOG_LINES);
        log.iter().skip(skip).cloned().collect::<Vec<_>>().join("\n")
    }

    /// Waits for the process to exit (after a signal) and returns everything it wrote to
    /// standard output and standard error, once both are closed.
    pub async fn output_after_exit(mut self, deadline: Duration) -> (Vec<String>, Vec<String>) {
        let status = self.exited_within(deadline).await;
        assert!(
            status.is_some(),
            "the server did not exit within {deadline:?}\n{}",
            self.log()
        );
        for reader in std::mem::take(&mut self.readers) {
            tokio::task::spawn_blocking(move || reader.join())
                .await
                .expect("join")
                .expect("the reader ends");
        }
        let lines = |lines: &Mutex<VecDeque<String>>| lines.lock().unwrap().iter().cloned().collect();
        (lines(&self.stdout), lines(&self.log))
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill();
    }
}

/// `127.0.0.1:PORT` from the `listening address=socket://127.0.0.1:PORT ...` log line, or its
/// JSON form (`VOICE_LOG_FORMAT=json`).
fn listening_address(line: &str) -> Option<String> {
    if !line.contains("listening") {
        return None;
    }
    if let Ok(json) = serde_json::from_str::<serde_json::Value>(line) {
        let address = json["address"].as_str()?;
        return Some(address.trim_start_matches("socket://").to_owned());
    }
    let line = strip_ansi(line);
    let rest = &line[line.find("address=")? + "address=".len()..];
    let address = rest.split_whitespace().next()?;
    Some(address.trim_start_matches("socket://").to_owned())
}

/// `line` without terminal colour sequences (`ESC [ ... m`).
fn strip_ansi(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// A signed voice webhook: its path, the encoded form and its `X-Twilio-Signature`.
#[derive(Debug, Clone)]
pub struct Webhook {
    pub call_sid: String,
    /// The path it is posted to.
    pub path: &'static str,
    pub body: String,
    pub signature: String,
}

impl Webhook {
    /// The standard inbound call for `call_sid`, signed for [`PUBLIC_URL`].
    pub fn incoming(call_sid: &str) -> Self {
        Self::signed(call_sid, "/api/v1/incoming-call", incoming_form(call_sid))
    }

    /// Twilio's request to the number's Fallback URL after the voice URL failed.
    pub fn fallback(call_sid: &str) -> Self {
        let mut form = incoming_form(call_sid);
        form.push("ErrorCode", "11200");
        form.push("ErrorUrl", format!("{PUBLIC_URL}/api/v1/incoming-call"));
        Self::signed(call_sid, "/api/v1/incoming-call/fallback", form)
    }

    /// The `<Connect action>` callback of `call_sid`'s stream, signed for [`PUBLIC_URL`].
    pub fn stream_ended(call_sid: &str) -> Self {
        Self::signed(call_sid, "/api/v1/stream-ended", incoming_form(call_sid))
    }

    /// `form` for `call_sid`, posted to `path`.
    fn signed(call_sid: &str, path: &'static str, form: stateset_voice::twilio::form::FormParams) -> Self {
        let url = format!("{PUBLIC_URL}{path}");
        Self {
            call_sid: call_sid.to_owned(),
            path,
            body: form.encode(),
            signature: signature::compute(Algorithm::HmacSha1, AUTH_TOKEN.as_bytes(), &url, &form),
        }
    }

    /// Sends it to the server at `base`; `Err` when no complete answer arrived.
    pub async fn send(&self, client: &reqwest::Client, base: &str) -> Result<(u16, String), String> {
        let res = client
            .post(format!("{base}{}", self.path))
            .header("Content-Type", "application/x-www-form-urlencoded")
            .header("X-Twilio-Signature", &self.signature)
            .body(self.body.clone())
            .send()
            .await
            .map_err(|e| format!("{e:?}"))?;
        let status = res.status().as_u16();
        let body = res.text().await.map_err(|e| format!("{e:?}"))?;
        Ok((status, body))
    }
}

/// An HTTP client whose requests cannot hang a test.
pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .expect("client builds")
}

/// What the database holds about calls, grouped for the checks.
pub struct Stored {
    /// Call rows by CallSid.
    pub calls: HashMap<String, Vec<call::Model>>,
    /// `incoming` answers by call id.
    pub answers: HashMap<String, Vec<call_webhook::Model>>,
    /// `call.received` and `call.fallback` events by the CallSid in their data.
    pub events: HashMap<String, Vec<outbox_event::Model>>,
}

impl Stored {
    /// Reads every call, answer and event.
    pub async fn load(db: &Pool) -> Self {
        let mut calls: HashMap<String, Vec<call::Model>> = HashMap::new();
        for c in call::Entity::find().all(db).await.expect("calls") {
            calls.entry(c.call_sid.clone()).or_default().push(c);
        }
        let mut answers: HashMap<String, Vec<call_webhook::Model>> = HashMap::new();
        for w in call_webhook::Entity::find().all(db).await.expect("answers") {
            if w.kind == entity::states::WebhookKind::Incoming {
                answers.entry(w.call_id.clone()).or_default().push(w);
            }
        }
        let mut events: HashMap<String, Vec<outbox_event::Model>> = HashMap::new();
        for e in outbox_event::Entity::find().all(db).await.expect("events") {
            if matches!(
                e.event_type,
                entity::states::EventType::CallReceived | entity::states::EventType::CallFallback
            ) {
                let payload: serde_json::Value = serde_json::from_str(&e.payload).expect("JSON payload");
                let sid = payload["data"]["call_sid"]
                    .as_str()
                    .expect("data.call_sid")
                    .to_owned();
                events.entry(sid).or_default().push(e);
            }
        }
        Self {
            calls,
            answers,
            events,
        }
    }

    /// Asserts that no CallSid has two call rows, and that every stored call has exactly one
    /// `incoming` answer and one call event: a call is only ever stored together with them.
    pub fn assert_consistent(&self) {
        for (sid, rows) in &self.calls {
            assert_eq!(rows.len(), 1, "CallSid {sid} is stored {} times", rows.len());
            let answers = self.answers.get(&rows[0].id).map_or(0, Vec::len);
            assert_eq!(answers, 1, "call {sid} has {answers} incoming answers");
            let events = self.events.get(sid).map_or(0, Vec::len);
            assert_eq!(events, 1, "call {sid} has {events} call events");
        }
        for sid in self.events.keys() {
            assert!(
                self.calls.contains_key(sid),
                "event for {sid}, which is not stored"
            );
        }
        let stored_ids: HashSet<&str> = self.calls.values().flatten().map(|c| c.id.as_str()).collect();
        for call_id in self.answers.keys() {
            assert!(
                stored_ids.contains(call_id.as_str()),
                "answer of a call not stored"
            );
        }
    }

    /// The one call row of `sid`.
    pub fn call(&self, sid: &str) -> &call::Model {
        match self.calls.get(sid).map(Vec::as_slice) {
            Some([one]) => one,
            other => panic!("CallSid {sid}: expected one call row, found {other:?}"),
        }
    }

    /// Whether the stored `incoming` answer of `sid` is `twiml`: a stream answer is stored as
    /// its token alone (the TwiML is rendered from it), any other answer as its TwiML.
    pub fn answered_with(&self, sid: &str, twiml: &str) -> bool {
        let row = self.answer(sid);
        match &row.stream_token {
            Some(token) => {
                row.twiml.is_empty()
                    && twiml.contains(&format!("<Parameter name=\"stream_token\" value=\"{token}\"/>"))
            }
            None => row.twiml == twiml,
        }
    }

    /// The one `incoming` answer stored for `sid`.
    pub fn answer(&self, sid: &str) -> &call_webhook::Model {
        match self.answers.get(&self.call(sid).id).map(Vec::as_slice) {
            Some([one]) => one,
            other => panic!("CallSid {sid}: expected one incoming answer, found {other:?}"),
        }
    }

    /// The one call event stored for `sid`.
    pub fn event(&self, sid: &str) -> &outbox_event::Model {
        match self.events.get(sid).map(Vec::as_slice) {
            Some([one]) => one,
            other => panic!("CallSid {sid}: expected one call event, found {other:?}"),
        }
    }
}
