//! DNS resolution through the SSRF guard, for a `reqwest` client: each name is resolved once,
//! refused when any of its addresses is internal, and the client connects to exactly the
//! addresses that were checked. A name that resolves public for the check and private for the
//! connection (DNS rebinding) therefore never reaches the private address. IP-literal URLs are
//! not resolved by `reqwest`; check them with [`ssrf::check_url`].
use std::{
    io,
    net::{IpAddr, SocketAddr},
    sync::Arc,
};

use futures::future::BoxFuture;
use reqwest::dns::{Addrs, Name, Resolve, Resolving};

use super::ssrf::{self, Refused};

/// Looks up the addresses of a host name: the system resolver, or a stub in tests.
pub trait Lookup: Send + Sync + 'static {
    /// Every address `host` resolves to.
    fn lookup(&self, host: String) -> BoxFuture<'static, io::Result<Vec<IpAddr>>>;
}

/// The operating system's resolver (`getaddrinfo`, through tokio).
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemLookup;

impl Lookup for SystemLookup {
    fn lookup(&self, host: String) -> BoxFuture<'static, io::Result<Vec<IpAddr>>> {
        Box::pin(async move {
            let addrs = tokio::net::lookup_host((host.as_str(), 0)).await?;
            Ok(addrs.map(|a| a.ip()).collect())
        })
    }
}

/// A `reqwest` resolver that answers only with addresses the SSRF guard accepted. Install it
/// with `ClientBuilder::dns_resolver`.
#[derive(Clone)]
pub struct GuardedResolver {
    lookup: Arc<dyn Lookup>,
}

impl GuardedResolver {
    /// Resolves with `lookup`.
    pub fn new(lookup: Arc<dyn Lookup>) -> Self {
        Self { lookup }
    }

    /// Resolves with the system resolver.
    pub fn system() -> Self {
        Self::new(Arc::new(SystemLookup))
    }

    /// Resolves `host` once; its addresses, or why they are refused (a failed lookup, no
    /// address, or an internal address among them).
    pub async fn checked(&self, host: &str) -> Result<Vec<IpAddr>, Refused> {
        let resolve_error = |source| Refused::Resolve {
            host: host.to_owned(),
            source,
        };
        let addrs = self.lookup.lookup(host.to_owned()).await.map_err(resolve_error)?;
        if addrs.is_empty() {
            return Err(resolve_error(io::Error::new(
                io::ErrorKind::NotFound,
                "no addresses",
            )));
        }
        ssrf::check_addrs(host, &addrs)?;
        Ok(addrs)
    }
}

impl Resolve for GuardedResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let resolver = self.clone();
        Box::pin(async move {
            let addrs = resolver.checked(name.as_str()).await?;
            // Port 0: reqwest puts in the URL's port.
            let addrs: Addrs = Box::new(addrs.into_iter().map(|ip| SocketAddr::new(ip, 0)));
            Ok(addrs)
        })
    }
}

/// The guard's refusal behind a `reqwest` error, if the guard is why the request failed.
pub fn refusal_in(error: &reqwest::Error) -> Option<&Refused> {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(error);
    while let Some(e) = source {
        if let Some(refused) = e.downcast_ref::<Refused>() {
            return Some(refused);
        }
        source = e.source();
    }
    None
}

#[cfg(test)]
mod tests {
    use std::{
        str::FromStr,
        sync::{
            atomic::{AtomicUsize, Ordering},
            Mutex,
        },
    };

    use super::*;

    /// Answers each lookup with the next of its answers, the last one for good; records the
    /// names looked up.
    struct Scripted {
        answers: Vec<Vec<IpAddr>>,
        calls: AtomicUsize,
        names: Mutex<Vec<String>>,
    }

    impl Scripted {
        fn new(answers: &[&[&str]]) -> Arc<Self> {
            let answers = answers
                .iter()
                .map(|a| a.iter().map(|ip| ip.parse().unwrap()).collect())
                .collect();
            Arc::new(Self {
                answers,
                calls: AtomicUsize::new(0),
                names: Mutex::new(Vec::new()),
            })
        }
    }

    impl Lookup for Scripted {
        fn lookup(&self, host: String) -> BoxFuture<'static, io::Result<Vec<IpAddr>>> {
            self.names.lock().unwrap().push(host);
            let n = self.calls.fetch_add(1, Ordering::SeqCst);
            let answer = self.answers[n.min(self.answers.len() - 1)].clone();
            Box::pin(async move { Ok(answer) })
        }
    }

    struct Failing;

    impl Lookup for Failing {
        fn lookup(&self, _host: String) -> BoxFuture<'static, io::Result<Vec<IpAddr>>> {
            Box::pin(async { Err(io::Error::other("no such host")) })
        }
    }

    async fn resolve(resolver: &GuardedResolver, host: &str) -> Result<Vec<SocketAddr>, String> {
        match resolver.resolve(Name::from_str(host).unwrap()).await {
            Ok(addrs) => Ok(addrs.collect()),
            Err(e) => Err(e.to_string()),
        }
    }

    #[tokio::test]
    async fn public_addresses_are_returned_exactly() {
        let stub = Scripted::new(&[&["93.184.216.34", "2606:4700::1"]]);
        let resolver = GuardedResolver::new(stub.clone());
        assert_eq!(
            resolve(&resolver, "hook.example").await.unwrap(),
            vec![
                "93.184.216.34:0".parse::<SocketAddr>().unwrap(),
                "[2606:4700::1]:0".parse().unwrap()
            ]
        );
        assert_eq!(*stub.names.lock().unwrap(), ["hook.example"]);
    }

    #[tokio::test]
    async fn internal_and_mixed_answers_are_refused() {
        for answer in [
            &["127.0.0.1"][..],
            &["10.0.0.1"],
            &["::1"],
            &["169.254.169.254"],
            &["93.184.216.34", "192.168.1.1"],
            &["2606:4700::1", "fd00::1"],
        ] {
            let resolver = GuardedResolver::new(Scripted::new(&[answer]));
            let refused = resolver.checked("hook.example").await.unwrap_err();
            assert!(
                matches!(refused, Refused::Internal { .. }),
                "{answer:?}: {refused}"
            );
            let error = resolve(&resolver, "hook.example").await.unwrap_err();
            assert!(error.contains("resolves to internal address"), "{error}");
        }
    }

    #[tokio::test]
    async fn each_resolution_is_checked_on_its_own() {
        // Public for the first lookup, loopback for the next: the second is refused, and the
        // first answer is what was returned, not a later one.
        let stub = Scripted::new(&[&["93.184.216.34"], &["127.0.0.1"]]);
        let resolver = GuardedResolver::new(stub.clone());
        assert_eq!(
            resolve(&resolver, "rebind.example").await.unwrap(),
            vec!["93.184.216.34:0".parse::<SocketAddr>().unwrap()]
        );
        assert_eq!(
            resolve(&resolver, "rebind.example").await.unwrap_err(),
            "rebind.example resolves to internal address 127.0.0.1"
        );
        assert_eq!(stub.calls.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn failed_and_empty_lookups_are_refused() {
        let failing = GuardedResolver::new(Arc::new(Failing));
        assert_eq!(
            failing.checked("gone.example").await.unwrap_err().to_string(),
            "resolving gone.example: no such host"
        );
        let empty = GuardedResolver::new(Scripted::new(&[&[]]));
        assert_eq!(
            empty.checked("empty.example").await.unwrap_err().to_string(),
            "resolving empty.example: no addresses"
        );
    }

    #[tokio::test]
    async fn a_refused_request_carries_the_refusal() {
        // The refusal survives reqwest's error wrapping, so callers can say why.
        let client = reqwest::Client::builder()
            .no_proxy()
            .dns_resolver(Arc::new(GuardedResolver::new(Scripted::new(&[&["127.0.0.1"]]))))
            .build()
            .unwrap();
        let error = client.get("http://internal.example:9/").send().await.unwrap_err();
        let refused = refusal_in(&error).expect("the guard's refusal");
        assert_eq!(
            refused.to_string(),
            "internal.example resolves to internal address 127.0.0.1"
        );
    }
}
