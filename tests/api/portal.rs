//! The docs portal: the committed `asyncapi.yaml` is what the code generates; `/docs` serves
//! exactly the files `stateset-voice docs DIR` writes; and the pages, opened in headless
//! Chromium, render with no console message, request nothing outside the served origin, and
//! show every operation of the spec and every event type.
use std::{collections::BTreeSet, path::Path, process::Command};

use entity::states::EventType;
use serde_json::Value;
use stateset_voice::{portal::Portal, testkit::*};

#[test]
fn committed_asyncapi_yaml_matches_the_code() {
    let committed = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/asyncapi.yaml"))
        .expect("asyncapi.yaml");
    assert!(
        committed == stateset_voice::asyncapi_yaml(),
        "asyncapi.yaml is stale: run `cargo run -q -- asyncapi > asyncapi.yaml` and commit the result"
    );
}

#[test]
fn asyncapi_documents_every_frame_the_code_parses_and_sends() {
    let doc: Value = serde_yaml::from_str(&stateset_voice::asyncapi_yaml()).unwrap();
    assert_eq!(doc["asyncapi"], "3.0.0");
    // serde names every variant it knows when it meets an unknown one.
    let known =
        |err: String| -> BTreeSet<String> { err.split('`').skip(3).step_by(2).map(str::to_owned).collect() };
    let inbound = known(
        serde_json::from_str::<stateset_voice::twilio::media::Inbound>(r#"{"event":"?"}"#)
            .unwrap_err()
            .to_string(),
    );
    let outbound = known(
        serde_json::from_str::<stateset_voice::twilio::media::Outbound>(r#"{"event":"?"}"#)
            .unwrap_err()
            .to_string(),
    );
    assert!(
        inbound.contains("connected") && outbound.contains("clear"),
        "{inbound:?} {outbound:?}"
    );
    let messages = doc["components"]["messages"].as_object().unwrap();
    for (prefix, names) in [("from_twilio", &inbound), ("to_twilio", &outbound)] {
        for name in names {
            let message = &messages[&format!("{prefix}.{name}")];
            assert_eq!(message["name"], name.as_str());
            assert!(
                message["payload"]["properties"]["event"].is_object(),
                "{prefix}.{name}"
            );
        }
    }
    assert_eq!(messages.len(), inbound.len() + outbound.len());
    let channels = doc["channels"].as_object().unwrap();
    let addresses: BTreeSet<&str> = channels.values().filter_map(|c| c["address"].as_str()).collect();
    assert_eq!(
        addresses,
        BTreeSet::from(["/media-stream", "/media-stream/{token}"])
    );
    assert!(channels["agent"]["description"]
        .as_str()
        .unwrap()
        .contains("1000 or 1001"));
    assert_eq!(
        doc["components"]["securitySchemes"]["agentJwt"]["bearerFormat"],
        "JWT"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn docs_serves_exactly_what_the_docs_command_writes() {
    let app = spawn_app(Backend::Sqlite)
        .await
        .expect("SQLite is always available");
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_stateset-voice"))
        .arg("docs")
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let portal = Portal::from_code();
    assert!(portal.files().len() >= 7);
    for file in portal.files() {
        let written = std::fs::read_to_string(dir.path().join(file.name)).unwrap();
        let served = app
            .client
            .get(format!("{}/docs/{}", app.base, file.name))
            .send()
            .await
            .unwrap();
        assert_eq!(served.status(), 200, "{}", file.name);
        let content_type = served.headers()["content-type"].to_str().unwrap().to_owned();
        assert_eq!(content_type, file.content_type, "{}", file.name);
        assert!(served.text().await.unwrap() == written, "{} differs", file.name);
    }
    for (path, file) in [
        ("/openapi.yaml", "openapi.yaml"),
        ("/asyncapi.yaml", "asyncapi.yaml"),
        ("/docs/", "index.html"),
    ] {
        let served = app
            .client
            .get(format!("{}{path}", app.base))
            .send()
            .await
            .unwrap();
        assert_eq!(served.status(), 200, "{path}");
        assert!(
            served.text().await.unwrap() == portal.file(file).unwrap().body,
            "{path}"
        );
    }
    let asyncapi = app
        .client
        .get(format!("{}/asyncapi.yaml", app.base))
        .send()
        .await
        .unwrap();
    assert_eq!(asyncapi.headers()["content-type"], "application/yaml");
    let no_page = app
        .client
        .get(format!("{}/docs/nope.html", app.base))
        .send()
        .await
        .unwrap();
    assert_eq!(no_page.status(), 404);
    // Without the slash, relative links would miss: redirected.
    let bare = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
        .get(format!("{}/docs", app.base))
        .send()
        .await
        .unwrap();
    assert_eq!(bare.status(), 308);
    assert_eq!(bare.headers()["location"], "docs/");
}

/// What headless Chromium saw of one page.
struct Rendered {
    dom: String,
    /// Console messages the page logged.
    console: Vec<String>,
    /// URLs the page requested (the browser's own requests excluded).
    requested: Vec<String>,
    /// Every URL requested, the navigation and the browser's own requests included.
    all: Vec<String>,
}

/// The Chromium binary, or `None` when it is missing and the test may be skipped: outside CI
/// with `VOICE_TEST_SKIP_CHROMIUM=1`. Otherwise a missing Chromium fails.
fn chromium() -> Option<String> {
    let binary = std::env::var("VOICE_TEST_CHROMIUM").unwrap_or_else(|_| "chromium".to_owned());
    if Command::new(&binary)
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
    {
        return Some(binary);
    }
    let ci = std::env::var("CI").is_ok_and(|v| v == "true");
    let skip = std::env::var("VOICE_TEST_SKIP_CHROMIUM").is_ok_and(|v| v == "1");
    assert!(
        skip && !ci,
        "{binary} not found: install it (apt-get install chromium), or set VOICE_TEST_SKIP_CHROMIUM=1 outside CI"
    );
    eprintln!("SKIPPED: the docs portal in Chromium ({binary} not found, VOICE_TEST_SKIP_CHROMIUM=1)");
    None
}

/// Opens `url` in headless Chromium with every host but 127.0.0.1 unresolvable.
fn render(binary: &str, url: &str, work: &Path) -> Rendered {
    let netlog = work.join("net.json");
    let out = Command::new(binary)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-extensions",
            "--enable-logging=stderr",
            "--v=0",
            "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
        ])
        .arg(format!("--user-data-dir={}", work.join("profile").display()))
        .arg(format!("--log-net-log={}", netlog.display()))
        .arg("--dump-dom")
        .arg(url)
        .output()
        .expect("chromium runs");
    assert!(
        out.status.success(),
        "chromium failed on {url}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let console = String::from_utf8_lossy(&out.stderr)
        .lines()
        .filter(|l| l.contains(":CONSOLE"))
        .map(str::to_owned)
        .collect();
    let log: Value = serde_json::from_slice(&std::fs::read(&netlog).expect("chromium wrote its net log"))
        .expect("the net log is JSON");
    let start_job = log["constants"]["logEventTypes"]["URL_REQUEST_START_JOB"].clone();
    let jobs: Vec<&Value> = log["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["type"] == start_job)
        .collect();
    let url = |e: &&Value| e["params"]["url"].as_str().map(str::to_owned);
    Rendered {
        dom: String::from_utf8_lossy(&out.stdout).into_owned(),
        console,
        requested: jobs
            .iter()
            .filter(|e| e["params"]["initiator"] != "not an origin")
            .filter_map(url)
            .collect(),
        all: jobs.iter().filter_map(url).collect(),
    }
}

// Chromium is run while the server answers it: a runtime with worker threads.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_portal_renders_in_chromium_showing_every_operation_and_event() {
    let Some(binary) = chromium() else { return };
    let app = spawn_app(Backend::Sqlite)
        .await
        .expect("SQLite is always available");
    let origin = format!("{}/", app.base);

    // The checks see what they look for: a console message and a request elsewhere.
    let probe = tempfile::tempdir().unwrap();
    let seen = render(
        &binary,
        "data:text/html,<img src='http://elsewhere.invalid/x.png'><script>console.error('probe')</script>",
        probe.path(),
    );
    assert!(
        seen.console.iter().any(|l| l.contains("probe")),
        "{:?}",
        seen.console
    );
    assert!(
        seen.requested.iter().any(|u| u.contains("elsewhere.invalid")),
        "{:?}",
        seen.requested
    );

    let spec: Value = serde_yaml::from_str(&stateset_voice::openapi_yaml()).unwrap();
    let mut text = String::new();
    for page in ["", "reference.html", "events.html", "streaming.html"] {
        let work = tempfile::tempdir().unwrap();
        let url = format!("{}/docs/{page}", app.base);
        let rendered = render(&binary, &url, work.path());
        assert!(rendered.dom.contains("<h1>"), "{url} rendered: {}", rendered.dom);
        assert!(
            rendered.console.is_empty(),
            "{url} logged: {:?}",
            rendered.console
        );
        assert!(
            rendered.all.contains(&url),
            "{url}: the net log saw the page: {:?}",
            rendered.all
        );
        let elsewhere: Vec<_> = rendered
            .requested
            .iter()
            .filter(|u| !u.starts_with(&origin))
            .collect();
        assert!(elsewhere.is_empty(), "{url} requested {elsewhere:?}");
        if page == "reference.html" {
            let voice = rendered.dom.find("id=\"tag-Voice\"").expect("a Voice section");
            let tenants = rendered
                .dom
                .find("id=\"tag-Tenants\"")
                .expect("a Tenants section");
            assert!(voice < tenants, "Voice comes first");
        }
        text.push_str(&rendered.dom);
    }
    let mut operations = 0;
    for item in spec["paths"].as_object().unwrap().values() {
        for op in item.as_object().unwrap().values() {
            let id = op["operationId"].as_str().expect("every operation has an id");
            assert!(
                text.contains(&format!("<code>{id}</code>")),
                "operation {id} shown"
            );
            let summary = op["summary"]
                .as_str()
                .unwrap_or_else(|| panic!("{id} has a summary"));
            assert!(
                text.contains(&as_shown(summary)),
                "summary of {id} shown: {summary}"
            );
            operations += 1;
        }
    }
    assert!(operations >= 20, "{operations} operations");
    for event_type in EventType::ALL {
        assert!(
            text.contains(&format!("id=\"event-{}\"", event_type.as_str())),
            "event {event_type} shown"
        );
    }
    for frame in ["connected", "start", "media", "dtmf", "mark", "stop", "clear"] {
        assert!(
            text.contains(&format!("<code>{frame}</code> <span")),
            "frame {frame} shown"
        );
    }
}

/// Text as Chromium serialises it once rendered: `&`, `<`, `>` escaped, `code` spans as tags.
fn as_shown(text: &str) -> String {
    let escaped = text
        .replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;");
    escaped
        .split('`')
        .enumerate()
        .map(|(i, part)| {
            if i % 2 == 1 {
                format!("<code>{part}</code>")
            } else {
                part.to_owned()
            }
        })
        .collect()
}
