//! What the tasks that start processes share: a kill-on-drop child, free loopback ports,
//! readiness waits, and Python virtual environments under `target/` that are reinstalled only
//! when their requirements change.
use std::{
    io::{Read as _, Write as _},
    net::{TcpListener, TcpStream},
    path::{Path, PathBuf},
    process::{Child, Command},
    time::{Duration, Instant},
};

use crate::{root, run};

/// A child process killed and reaped when dropped, on every path out.
pub struct Killed(pub Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A port on 127.0.0.1 that nothing listens on right now.
pub fn free_port() -> Result<u16, String> {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(|e| format!("no free port: {e}"))
}

/// Waits up to a minute until something accepts connections on `port`.
pub fn wait_for_port(port: u16, what: &str) -> Result<(), String> {
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline {
        if TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    Err(format!("{what} did not start listening on port {port}"))
}

/// Sends `GET path` (HTTP/1.1, `Connection: close`) and returns the connection to read from.
fn get(port: u16, path: &str) -> Option<TcpStream> {
    let mut tcp = TcpStream::connect(("127.0.0.1", port)).ok()?;
    tcp.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(
        tcp,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    Some(tcp)
}

/// Waits up to a minute until the service started as `server` answers 200 on `/readyz` at
/// `port`; when it exits first, the error holds the end of its `log`.
pub fn wait_for_service(mut server: Killed, port: u16, log: &Path) -> Result<Killed, String> {
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline {
        if get_status(port, "/readyz") == Some(200) {
            return Ok(server);
        }
        if let Ok(Some(status)) = server.0.try_wait() {
            let text = std::fs::read_to_string(log).unwrap_or_default();
            let lines: Vec<&str> = text.lines().collect();
            let tail = lines[lines.len().saturating_sub(30)..].join("\n");
            return Err(format!("the server exited ({status}):\n{tail}"));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    Err("the server was not ready within 60 s".to_owned())
}

/// Sends `method path` with `headers` and `body` (HTTP/1.1, `Connection: close`) and returns
/// the status code and the body (not unchunked), or `None` when nothing answers.
pub fn request(
    port: u16,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> Option<(u16, String)> {
    let mut tcp = TcpStream::connect(("127.0.0.1", port)).ok()?;
    tcp.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    let mut head = format!(
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    write!(tcp, "{head}\r\n{body}").ok()?;
    let mut response = String::new();
    tcp.read_to_string(&mut response).ok()?;
    let status = response.get(9..12)?.parse().ok()?;
    let body = response.split_once("\r\n\r\n").map_or("", |(_, b)| b);
    Some((status, body.to_owned()))
}

/// The status code of `GET path`, or `None` when nothing answers.
pub fn get_status(port: u16, path: &str) -> Option<u16> {
    let mut tcp = get(port, path)?;
    let mut head = [0u8; 12];
    tcp.read_exact(&mut head).ok()?;
    std::str::from_utf8(&head[9..12]).ok()?.parse().ok()
}

/// The body of `GET path` (HTTP/1.1, `Connection: close`), or `None` unless it answers 200.
pub fn get_body(port: u16, path: &str) -> Option<String> {
    let mut tcp = get(port, path)?;
    let mut response = String::new();
    tcp.read_to_string(&mut response).ok()?;
    let (head, body) = response.split_once("\r\n\r\n")?;
    if !head.starts_with("HTTP/1.1 200") {
        return None;
    }
    if head
        .lines()
        .any(|l| l.eq_ignore_ascii_case("transfer-encoding: chunked"))
    {
        return Some(unchunk(body));
    }
    Some(body.to_owned())
}

/// The payload of a chunked body.
fn unchunk(mut body: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = body.split_once("\r\n") {
        let Ok(size) = usize::from_str_radix(size.trim(), 16) else {
            break;
        };
        if size == 0 || rest.len() < size {
            break;
        }
        out.push_str(&rest[..size]);
        body = rest[size..].trim_start_matches("\r\n");
    }
    out
}

/// FNV-1a, 64 bits: a stable fingerprint for install stamps (not for security).
pub fn fingerprint(bytes: &[u8]) -> String {
    let hash = bytes.iter().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3)
    });
    format!("{hash:016x}")
}

/// A virtual environment at `target/NAME` with `requirements` (pip requirements-file text)
/// installed. The stamp file `target/NAME/.requirements` holds the fingerprint of what was
/// installed last; while it matches and the interpreter runs, nothing is reinstalled.
/// Returns the venv's `bin` directory.
pub fn python_venv(name: &str, requirements: &str) -> Result<PathBuf, String> {
    let venv = root().join("target").join(name);
    let bin = venv.join("bin");
    let python = bin.join("python");
    let stamp = venv.join(".requirements");
    let wanted = fingerprint(requirements.as_bytes());
    let runs = |python: &Path| {
        Command::new(python)
            .args(["-c", "import sys"])
            .output()
            .is_ok_and(|o| o.status.success())
    };
    if runs(&python) && std::fs::read_to_string(&stamp).is_ok_and(|s| s.trim() == wanted) {
        eprintln!("==> target/{name} is up to date");
        return Ok(bin);
    }
    if !runs(&python) {
        let _ = std::fs::remove_dir_all(&venv);
        run(
            &format!("create target/{name}"),
            Command::new("python3").arg("-m").arg("venv").arg(&venv),
        )?;
    }
    let file = venv.join("requirements.txt");
    std::fs::write(&file, requirements).map_err(|e| format!("{}: {e}", file.display()))?;
    let started = Instant::now();
    run(
        &format!("pip install -r requirements into target/{name}"),
        Command::new(&python)
            .args([
                "-m",
                "pip",
                "install",
                "--quiet",
                "--disable-pip-version-check",
                "--no-input",
                "-r",
            ])
            .arg(&file),
    )?;
    eprintln!("==> pip install took {:.1} s", started.elapsed().as_secs_f64());
    std::fs::write(&stamp, &wanted).map_err(|e| format!("{}: {e}", stamp.display()))?;
    Ok(bin)
}
