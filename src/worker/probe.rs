//! Health probes of agent runtimes that never look like calls: an HTTP GET of the route's
//! `agent_health_url`, or, without one, a bare TCP connection to the agent's host and port that
//! is closed at once. No probe sends a WebSocket handshake or any other byte to `agent_url`.
use std::time::Duration;

use tokio::net::TcpStream;
use url::{Host, Url};

pub use crate::metrics::ProbeKind;

/// One health check of an agent runtime.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Probe {
    /// GET this URL; any 2xx answer is healthy.
    Http(String),
    /// Connect to this WebSocket URL's host and port (80 for `ws`, 443 for `wss` by default)
    /// and close the connection without sending anything.
    Tcp(String),
}

/// Why a probe failed.
#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    #[error("no answer within {} ms", .0.as_millis())]
    Timeout(Duration),
    #[error("the agent URL names no host and port: {0}")]
    Address(String),
    #[error("TCP connection refused or failed: {0}")]
    Connect(#[source] std::io::Error),
    #[error("health endpoint answered HTTP {0}")]
    Status(reqwest::StatusCode),
    #[error("health endpoint request failed: {0}")]
    Request(#[source] reqwest::Error),
}

impl Probe {
    /// The check for a route's agent: its health endpoint when it names one, else TCP.
    pub fn for_agent(agent_url: &str, agent_health_url: Option<&str>) -> Self {
        match agent_health_url {
            Some(url) => Self::Http(url.to_owned()),
            None => Self::Tcp(agent_url.to_owned()),
        }
    }

    /// Which kind of check this is.
    pub fn kind(&self) -> ProbeKind {
        match self {
            Self::Http(_) => ProbeKind::Http,
            Self::Tcp(_) => ProbeKind::Tcp,
        }
    }

    /// Runs the check, giving up after `timeout`.
    pub async fn run(&self, client: &reqwest::Client, timeout: Duration) -> Result<(), ProbeError> {
        let check = async {
            match self {
                Self::Http(url) => http(client, url).await,
                Self::Tcp(url) => tcp(url).await,
            }
        };
        tokio::time::timeout(timeout, check)
            .await
            .unwrap_or(Err(ProbeError::Timeout(timeout)))
    }
}

/// The HTTP client of health checks. Redirects are not followed: a health endpoint answers
/// 2xx itself.
pub fn http_client() -> reqwest::Result<reqwest::Client> {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(concat!(
            "stateset-voice/",
            env!("CARGO_PKG_VERSION"),
            " health-check"
        ))
        .build()
}

async fn http(client: &reqwest::Client, url: &str) -> Result<(), ProbeError> {
    // The URL may carry credentials in its query; reasons never repeat it.
    let response = client
        .get(url)
        .send()
        .await
        .map_err(|e| ProbeError::Request(e.without_url()))?;
    let status = response.status();
    if status.is_success() {
        Ok(())
    } else {
        Err(ProbeError::Status(status))
    }
}

/// The host and port a WebSocket URL connects to.
pub fn tcp_address(agent_url: &str) -> Result<(String, u16), ProbeError> {
    let url = Url::parse(agent_url).map_err(|e| ProbeError::Address(e.to_string()))?;
    let port = url
        .port_or_known_default()
        .ok_or_else(|| ProbeError::Address(format!("no port for scheme {}", url.scheme())))?;
    let host = match url.host() {
        Some(Host::Domain(name)) => name.to_owned(),
        Some(Host::Ipv4(ip)) => ip.to_string(),
        Some(Host::Ipv6(ip)) => ip.to_string(),
        None => return Err(ProbeError::Address("no host".to_owned())),
    };
    Ok((host, port))
}

async fn tcp(agent_url: &str) -> Result<(), ProbeError> {
    let (host, port) = tcp_address(agent_url)?;
    let stream = TcpStream::connect((host.as_str(), port))
        .await
        .map_err(ProbeError::Connect)?;
    // Closed at once, before a byte is written.
    drop(stream);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tcp_address_defaults_the_port_by_scheme() {
        let addr = |u: &str| tcp_address(u).unwrap();
        assert_eq!(
            addr("ws://agent.example.com/ws"),
            ("agent.example.com".to_owned(), 80)
        );
        assert_eq!(
            addr("wss://agent.example.com/ws"),
            ("agent.example.com".to_owned(), 443)
        );
        assert_eq!(
            addr("wss://agent.example.com:8765/ws"),
            ("agent.example.com".to_owned(), 8765)
        );
        assert_eq!(addr("ws://127.0.0.1:9000"), ("127.0.0.1".to_owned(), 9000));
        assert_eq!(addr("ws://[::1]:9000/x"), ("::1".to_owned(), 9000));
        assert!(tcp_address("not a url").is_err());
    }

    #[test]
    fn probe_follows_the_route() {
        let http = Probe::for_agent("ws://a/ws", Some("http://a/health"));
        assert_eq!(http, Probe::Http("http://a/health".to_owned()));
        assert_eq!(http.kind(), ProbeKind::Http);
        let tcp = Probe::for_agent("ws://a/ws", None);
        assert_eq!(tcp, Probe::Tcp("ws://a/ws".to_owned()));
        assert_eq!(tcp.kind().as_str(), "tcp");
    }
}
