//! The SSRF guard: refuses URLs whose host resolves to a loopback, private, link-local or
//! otherwise internal address, so a tenant-supplied URL cannot reach the service's own network.
use std::net::IpAddr;

/// Why a URL was refused.
#[derive(Debug, thiserror::Error)]
pub enum Refused {
    #[error("{0}")]
    Url(#[from] url::ParseError),
    #[error("the URL has no host")]
    NoHost,
    #[error("resolving {host}: {source}")]
    Resolve {
        host: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{host} resolves to internal address {ip}")]
    Internal { host: String, ip: IpAddr },
}

/// Refuses `url` when its host is, or resolves to, an internal address.
pub async fn check(url: &str) -> Result<(), Refused> {
    let parsed = url::Url::parse(url)?;
    let host = parsed
        .host_str()
        .ok_or(Refused::NoHost)?
        .trim_matches(['[', ']'])
        .to_owned();
    let port = parsed.port_or_known_default().unwrap_or(443);
    let addrs: Vec<IpAddr> = match host.parse::<IpAddr>() {
        Ok(ip) => vec![ip],
        Err(_) => {
            let resolved: std::io::Result<Vec<IpAddr>> = tokio::net::lookup_host((host.as_str(), port))
                .await
                .map(|addrs| addrs.map(|a| a.ip()).collect());
            match resolved {
                Ok(addrs) => addrs,
                Err(source) => return Err(Refused::Resolve { host, source }),
            }
        }
    };
    match addrs.into_iter().find(is_internal) {
        Some(ip) => Err(Refused::Internal { host, ip }),
        None => Ok(()),
    }
}

/// Whether `ip` is loopback, private, link-local, unspecified, broadcast, multicast, shared
/// address space (100.64/10) or unique-local, directly or as an IPv4-mapped IPv6 address.
pub fn is_internal(ip: &IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            v4.is_loopback()
                || v4.is_private()
                || v4.is_link_local()
                || v4.is_unspecified()
                || v4.is_broadcast()
                || v4.is_multicast()
                || v4.octets()[0] == 100 && (v4.octets()[1] & 0xc0) == 64
        }
        IpAddr::V6(v6) => {
            v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_multicast()
                || (v6.segments()[0] & 0xfe00) == 0xfc00
                || (v6.segments()[0] & 0xffc0) == 0xfe80
                || v6.to_ipv4_mapped().is_some_and(|v4| is_internal(&IpAddr::V4(v4)))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn ssrf_guard() {
        for url in [
            "http://127.0.0.1/x",
            "http://10.1.2.3/",
            "http://192.168.0.1",
            "http://[::1]:8080/",
            "http://169.254.169.254/latest",
            "http://100.64.0.1/",
        ] {
            assert!(check(url).await.is_err(), "{url}");
        }
        assert!(check("https://93.184.216.34/hook").await.is_ok());
    }

    #[tokio::test]
    async fn refusals_say_why() {
        assert!(matches!(check("not a url").await, Err(Refused::Url(_))));
        assert!(matches!(check("unix:/run/socket").await, Err(Refused::NoHost)));
        let internal = check("http://10.0.0.1:8080/").await.unwrap_err();
        assert_eq!(
            internal.to_string(),
            "10.0.0.1 resolves to internal address 10.0.0.1"
        );
        assert!(is_internal(&"::ffff:10.0.0.1".parse().unwrap()), "IPv4-mapped");
        assert!(!is_internal(&"2606:4700::1".parse().unwrap()));
    }
}
