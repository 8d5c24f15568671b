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

/// Checks what can be checked without resolving a name: `url` parses, names a host, and an
/// IP-literal host is not internal. A host name is checked where it is resolved, by
/// [`GuardedResolver`](super::resolver::GuardedResolver), so that the address checked is the
/// address connected to.
pub fn check_url(url: &str) -> Result<(), Refused> {
    let parsed = url::Url::parse(url)?;
    match parsed.host().ok_or(Refused::NoHost)? {
        url::Host::Domain(_) => Ok(()),
        url::Host::Ipv4(ip) => check_addrs(&ip.to_string(), &[IpAddr::V4(ip)]),
        url::Host::Ipv6(ip) => check_addrs(&ip.to_string(), &[IpAddr::V6(ip)]),
    }
}

/// Refuses `host` when any of its addresses is internal.
pub fn check_addrs(host: &str, addrs: &[IpAddr]) -> Result<(), Refused> {
    match addrs.iter().find(|ip| is_internal(ip)) {
        Some(ip) => Err(Refused::Internal {
            host: host.to_owned(),
            ip: *ip,
        }),
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

    #[test]
    fn ip_literals_are_checked_without_dns() {
        for url in [
            "http://127.0.0.1/x",
            "http://10.1.2.3/",
            "http://192.168.0.1",
            "http://[::1]:8080/",
            "http://[::ffff:10.0.0.1]/",
            "http://169.254.169.254/latest",
            "http://100.64.0.1/",
            "http://0.0.0.0/",
            // Spelled as numbers, parsed as reqwest parses them.
            "http://0x7f000001/",
            "http://2130706433:8080/",
        ] {
            assert!(matches!(check_url(url), Err(Refused::Internal { .. })), "{url}");
        }
        assert!(check_url("https://93.184.216.34/hook").is_ok());
        assert!(check_url("https://[2606:4700::1]/hook").is_ok());
        // A name is left to the resolver: nothing is looked up here.
        assert!(check_url("https://localhost/hook").is_ok());
    }

    #[test]
    fn refusals_say_why() {
        assert!(matches!(check_url("not a url"), Err(Refused::Url(_))));
        assert!(matches!(check_url("unix:/run/socket"), Err(Refused::NoHost)));
        let internal = check_url("http://10.0.0.1:8080/").unwrap_err();
        assert_eq!(
            internal.to_string(),
            "10.0.0.1 resolves to internal address 10.0.0.1"
        );
        assert!(is_internal(&"::ffff:10.0.0.1".parse().unwrap()), "IPv4-mapped");
        assert!(!is_internal(&"2606:4700::1".parse().unwrap()));
    }

    #[test]
    fn one_internal_address_refuses_the_host() {
        let public: IpAddr = "93.184.216.34".parse().unwrap();
        let private: IpAddr = "10.0.0.7".parse().unwrap();
        assert!(check_addrs("h.example", &[public]).is_ok());
        let refused = check_addrs("h.example", &[public, private]).unwrap_err();
        assert_eq!(
            refused.to_string(),
            "h.example resolves to internal address 10.0.0.7"
        );
    }
}
