//! Where webhooks may go. Every target is checked when it is registered and again on every
//! attempt: no loopback, private, link-local, unique-local, CGNAT, multicast, reserved or
//! unspecified address (in any spelling), unless an operator opened the range explicitly.
//! Deliveries connect only to addresses that passed, never follow redirects and read a
//! bounded response.
// Unit tests may read the machine's time; production code reads bulklink_core::clock::Clock.
#![cfg_attr(test, allow(clippy::disallowed_methods))]

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

// The core's modules, under the paths this crate's code names them by.
use bulklink_core::{clock, config, domain};
use futures::future::BoxFuture;
use ipnet::IpNet;

use crate::domain::WebhookUrl;

/// Each delivery attempt gives up after this, connection included.
pub const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(10);
/// At most this much of a receiver's response is read.
pub const MAX_RESPONSE_BYTES: usize = 64 * 1024;

/// Why a target is refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum EgressError {
    #[error("webhook URL host {host} is {why} ({ip}); webhooks may only reach public addresses")]
    Blocked {
        host: String,
        ip: IpAddr,
        why: &'static str,
    },
    #[error("webhook URL host {host} does not resolve to any address")]
    Unresolvable { host: String },
    #[error(
        "webhook URL host {ip} is an IP address: name the host (IP addresses are accepted \
         only inside ranges opened with --webhook-allow-cidr)"
    )]
    IpAddress { ip: IpAddr },
    #[error("webhook URL {0} cannot be parsed")]
    Unparsable(String),
}

/// Why an address is not a public one; `None` for a public address.
pub fn blocked_reason(ip: IpAddr) -> Option<&'static str> {
    match ip {
        IpAddr::V4(v4) => blocked_v4(v4),
        IpAddr::V6(v6) => blocked_v6(v6),
    }
}

fn in_v4(ip: Ipv4Addr, net: [u8; 4], prefix: u8) -> bool {
    let mask = if prefix == 0 {
        0
    } else {
        u32::MAX << (32 - prefix)
    };
    (u32::from(ip) & mask) == (u32::from(Ipv4Addr::from(net)) & mask)
}

fn blocked_v4(ip: Ipv4Addr) -> Option<&'static str> {
    const RULES: &[([u8; 4], u8, &str)] = &[
        ([0, 0, 0, 0], 8, "unspecified (\"this network\")"),
        ([10, 0, 0, 0], 8, "private (RFC 1918)"),
        ([100, 64, 0, 0], 10, "shared address space (CGNAT)"),
        ([127, 0, 0, 0], 8, "loopback"),
        ([169, 254, 0, 0], 16, "link-local"),
        ([172, 16, 0, 0], 12, "private (RFC 1918)"),
        ([192, 0, 0, 0], 24, "reserved for IETF protocol assignments"),
        ([192, 0, 2, 0], 24, "reserved for documentation"),
        ([192, 88, 99, 0], 24, "6to4 relay anycast"),
        ([192, 168, 0, 0], 16, "private (RFC 1918)"),
        ([198, 18, 0, 0], 15, "reserved for benchmarking"),
        ([198, 51, 100, 0], 24, "reserved for documentation"),
        ([203, 0, 113, 0], 24, "reserved for documentation"),
        ([224, 0, 0, 0], 4, "multicast"),
        ([255, 255, 255, 255], 32, "broadcast"),
        ([240, 0, 0, 0], 4, "reserved"),
    ];
    RULES
        .iter()
        .find(|(net, prefix, _)| in_v4(ip, *net, *prefix))
        .map(|(_, _, why)| *why)
}

fn blocked_v6(ip: Ipv6Addr) -> Option<&'static str> {
    let seg = ip.segments();
    if ip.is_unspecified() {
        return Some("unspecified");
    }
    if ip.is_loopback() {
        return Some("loopback");
    }
    // Forms that carry an IPv4 address: judged by the address they carry.
    if let Some(v4) = embedded_v4(ip) {
        return blocked_v4(v4);
    }
    let first = seg[0];
    match first {
        _ if first & 0xfe00 == 0xfc00 => Some("unique-local"),
        _ if first & 0xffc0 == 0xfe80 => Some("link-local"),
        _ if first & 0xffc0 == 0xfec0 => Some("site-local"),
        _ if first & 0xff00 == 0xff00 => Some("multicast"),
        0x0064 if seg[1] == 0xff9b && seg[2] == 0x0001 => Some("local-use NAT64"),
        0x0100 if seg[1..4] == [0, 0, 0] => Some("discard-only"),
        0x2001 if seg[1] == 0x0db8 => Some("reserved for documentation"),
        0x2001 if seg[1] == 0x0000 => Some("Teredo"),
        0x2001 if seg[1] < 0x0200 => Some("reserved for IETF protocol assignments"),
        _ if first & 0xe000 != 0x2000 => Some("not global unicast"),
        _ => None,
    }
}

/// The IPv4 address inside IPv4-mapped (`::ffff:a.b.c.d`), IPv4-compatible (`::a.b.c.d`),
/// NAT64 (`64:ff9b::a.b.c.d`) and 6to4 (`2002:aabb:ccdd::`) addresses.
fn embedded_v4(ip: Ipv6Addr) -> Option<Ipv4Addr> {
    let seg = ip.segments();
    let tail = Ipv4Addr::new(
        (seg[6] >> 8) as u8,
        seg[6] as u8,
        (seg[7] >> 8) as u8,
        seg[7] as u8,
    );
    match seg {
        [0, 0, 0, 0, 0, 0xffff, _, _] => Some(tail),
        [0, 0, 0, 0, 0, 0, _, _] => Some(tail),
        [0x64, 0xff9b, 0, 0, 0, 0, _, _] => Some(tail),
        [0x2002, a, b, ..] => Some(Ipv4Addr::new(
            (a >> 8) as u8,
            a as u8,
            (b >> 8) as u8,
            b as u8,
        )),
        _ => None,
    }
}

/// Looks host names up. Tests give their own; no test looks up a real name.
pub trait Resolve: Send + Sync {
    fn lookup(&self, host: &str) -> BoxFuture<'_, std::io::Result<Vec<IpAddr>>>;
}

/// The operating system's resolver, except for the names RFC 6761 reserves: `*.invalid`
/// never resolves and `localhost` is the loopback, both without asking any server.
pub struct SystemResolver;

impl Resolve for SystemResolver {
    fn lookup(&self, host: &str) -> BoxFuture<'_, std::io::Result<Vec<IpAddr>>> {
        let host = host.trim_end_matches('.').to_ascii_lowercase();
        Box::pin(async move {
            if host == "invalid" || host.ends_with(".invalid") {
                return Ok(Vec::new());
            }
            if host == "localhost" || host.ends_with(".localhost") {
                return Ok(vec![
                    IpAddr::V4(Ipv4Addr::LOCALHOST),
                    IpAddr::V6(Ipv6Addr::LOCALHOST),
                ]);
            }
            let addrs = tokio::net::lookup_host((host.as_str(), 0)).await?;
            Ok(addrs.map(|a| a.ip()).collect())
        })
    }
}

/// Resolves nothing, asking no server: for closed environments where webhooks only reach
/// IP addresses of opened ranges (`serve --webhook-resolver none`).
pub struct NoResolver;

impl Resolve for NoResolver {
    fn lookup(&self, _host: &str) -> BoxFuture<'_, std::io::Result<Vec<IpAddr>>> {
        Box::pin(async { Ok(Vec::new()) })
    }
}

/// A fixed table of names (tests); any other name does not resolve.
#[derive(Default)]
pub struct StaticResolver(pub HashMap<String, Vec<IpAddr>>);

impl Resolve for StaticResolver {
    fn lookup(&self, host: &str) -> BoxFuture<'_, std::io::Result<Vec<IpAddr>>> {
        let found = self.0.get(&host.to_ascii_lowercase()).cloned();
        Box::pin(async move { Ok(found.unwrap_or_default()) })
    }
}

/// The rules for webhook targets: blocked ranges, minus what the operator opened
/// (`--webhook-allow-cidr`, `WEBHOOK_ALLOW_CIDRS`).
#[derive(Clone)]
pub struct Egress {
    allow: Vec<IpNet>,
    resolver: Arc<dyn Resolve>,
    /// Reads a `Retry-After` date against this clock.
    clock: crate::clock::Clock,
}

impl std::fmt::Debug for Egress {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Egress")
            .field("allow", &self.allow)
            .finish()
    }
}

impl Default for Egress {
    fn default() -> Self {
        Egress::new(Vec::new(), Arc::new(SystemResolver))
    }
}

/// The host of a checked URL.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Host {
    Ip(IpAddr),
    Name(String),
}

impl Egress {
    pub fn new(allow: Vec<IpNet>, resolver: Arc<dyn Resolve>) -> Self {
        Egress {
            allow,
            resolver,
            clock: crate::clock::Clock::system(),
        }
    }

    /// The same rules, with `Retry-After` dates read against `clock`.
    pub fn with_clock(mut self, clock: crate::clock::Clock) -> Self {
        self.clock = clock;
        self
    }

    /// Parses a comma-separated list of CIDRs (`WEBHOOK_ALLOW_CIDRS`).
    pub fn parse_cidrs(list: &str) -> Result<Vec<IpNet>, String> {
        list.split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(|s| {
                s.parse::<IpNet>()
                    .or_else(|_| s.parse::<IpAddr>().map(IpNet::from))
                    .map_err(|_| format!("{s:?} is not a CIDR such as 127.0.0.0/8"))
            })
            .collect()
    }

    /// The rules with `WEBHOOK_ALLOW_CIDRS` opened, resolving through the system.
    pub fn from_env(
        lookup: impl Fn(&str) -> Option<String>,
    ) -> Result<Self, crate::config::SettingsError> {
        let list = lookup("WEBHOOK_ALLOW_CIDRS").unwrap_or_default();
        let allow = Self::parse_cidrs(&list).map_err(|_| crate::config::SettingsError {
            name: "WEBHOOK_ALLOW_CIDRS",
            value: list.clone(),
            why: "must be comma-separated CIDRs such as 127.0.0.0/8",
        })?;
        Ok(Egress::new(allow, Arc::new(SystemResolver)))
    }

    pub fn allowed(&self) -> &[IpNet] {
        &self.allow
    }

    /// `None` if `ip` may be contacted; otherwise why not.
    pub fn refusal(&self, ip: IpAddr) -> Option<&'static str> {
        let ip = canonical(ip);
        if self.allow.iter().any(|net| net.contains(&ip)) {
            return None;
        }
        blocked_reason(ip)
    }

    fn host_of(url: &WebhookUrl) -> Result<(Host, u16), EgressError> {
        let parsed =
            url::Url::parse(url.as_str()).map_err(|_| EgressError::Unparsable(url.to_string()))?;
        let port = parsed
            .port_or_known_default()
            .ok_or_else(|| EgressError::Unparsable(url.to_string()))?;
        let host = match parsed.host() {
            Some(url::Host::Ipv4(v4)) => Host::Ip(IpAddr::V4(v4)),
            Some(url::Host::Ipv6(v6)) => Host::Ip(IpAddr::V6(v6)),
            Some(url::Host::Domain(name)) => Host::Name(name.to_owned()),
            None => return Err(EgressError::Unparsable(url.to_string())),
        };
        Ok((host, port))
    }

    /// At registration: refused if the host is, or resolves to, an address that may not be
    /// contacted. A name that does not resolve (yet) is accepted; every attempt checks again.
    pub async fn check_registration(&self, url: &WebhookUrl) -> Result<(), EgressError> {
        match Self::host_of(url)?.0 {
            Host::Ip(ip) => self.check_literal(ip),
            Host::Name(name) => {
                let addrs = self.resolver.lookup(&name).await.unwrap_or_default();
                for ip in addrs {
                    self.check_ip(&name, ip)?;
                }
                Ok(())
            }
        }
    }

    /// A URL naming an IP address: only one inside an opened range.
    fn check_literal(&self, ip: IpAddr) -> Result<(), EgressError> {
        self.check_ip(&ip.to_string(), ip)?;
        let ip = canonical(ip);
        if self.allow.iter().any(|net| net.contains(&ip)) {
            Ok(())
        } else {
            Err(EgressError::IpAddress { ip })
        }
    }

    fn check_ip(&self, host: &str, ip: IpAddr) -> Result<(), EgressError> {
        match self.refusal(ip) {
            None => Ok(()),
            Some(why) => Err(EgressError::Blocked {
                host: host.to_owned(),
                ip,
                why,
            }),
        }
    }

    /// On every attempt: the addresses this attempt may connect to (those that passed). An
    /// error if none did.
    pub async fn addresses(&self, url: &WebhookUrl) -> Result<Vec<SocketAddr>, EgressError> {
        let (host, port) = Self::host_of(url)?;
        let (name, candidates) = match host {
            Host::Ip(ip) => {
                self.check_literal(ip)?;
                (ip.to_string(), vec![ip])
            }
            Host::Name(name) => {
                let addrs = self.resolver.lookup(&name).await.unwrap_or_default();
                (name, addrs)
            }
        };
        let mut passed = Vec::new();
        let mut first_refusal = None;
        for ip in candidates {
            match self.check_ip(&name, ip) {
                Ok(()) => passed.push(SocketAddr::new(ip, port)),
                Err(e) => {
                    first_refusal.get_or_insert(e);
                }
            }
        }
        if passed.is_empty() {
            return Err(first_refusal.unwrap_or(EgressError::Unresolvable { host: name }));
        }
        Ok(passed)
    }

    /// An HTTP client for deliveries: no redirects, a total timeout per attempt, and a
    /// resolver that hands the connector only addresses that passed these rules, so the
    /// address checked is the address connected to (no DNS-rebinding window).
    pub fn client(&self, user_agent: &str) -> reqwest::Result<reqwest::Client> {
        reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(ATTEMPT_TIMEOUT)
            .connect_timeout(Duration::from_secs(5))
            .no_proxy()
            .user_agent(user_agent)
            .dns_resolver(Arc::new(CheckedResolver(self.clone())))
            .build()
    }

    /// POSTs `body` to `url` with `headers`, after checking the target. 2xx is delivered;
    /// anything else — 3xx included — is a failed attempt. Reads at most 64 KiB back.
    pub async fn post(
        &self,
        client: &reqwest::Client,
        url: &WebhookUrl,
        headers: &[(&str, String)],
        body: String,
    ) -> Result<Attempt, AttemptError> {
        // Literal addresses never reach the resolver: check them here.
        if let (Host::Ip(ip), _) = Self::host_of(url).map_err(AttemptError::Refused)? {
            self.check_literal(ip).map_err(AttemptError::Refused)?;
        }
        let mut request = client.post(url.as_str());
        for (name, value) in headers {
            request = request.header(*name, value);
        }
        let mut response =
            request
                .body(body)
                .send()
                .await
                .map_err(|e| match find_egress_error(&e) {
                    Some(refused) => AttemptError::Refused(refused),
                    None if e.is_timeout() => AttemptError::Timeout,
                    None => AttemptError::Network(error_chain(&e)),
                })?;
        let status = response.status();
        let retry_after = response
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| parse_retry_after(v, self.clock.now()));
        let mut read = Vec::new();
        while read.len() < MAX_RESPONSE_BYTES {
            match response.chunk().await {
                Ok(Some(bytes)) => {
                    let room = MAX_RESPONSE_BYTES - read.len();
                    read.extend_from_slice(&bytes[..bytes.len().min(room)]);
                }
                Ok(None) | Err(_) => break,
            }
        }
        Ok(Attempt {
            status: status.as_u16(),
            retry_after,
            body_excerpt: String::from_utf8_lossy(&read[..read.len().min(200)]).into_owned(),
        })
    }
}

/// What one attempt got back.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Attempt {
    pub status: u16,
    /// The receiver's `Retry-After`, in seconds.
    pub retry_after: Option<u64>,
    /// The start of the response body, for the delivery log.
    pub body_excerpt: String,
}

impl Attempt {
    pub fn delivered(&self) -> bool {
        (200..300).contains(&self.status)
    }
}

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum AttemptError {
    #[error("refused: {0}")]
    Refused(EgressError),
    #[error("timed out after {}s", ATTEMPT_TIMEOUT.as_secs())]
    Timeout,
    #[error("request failed: {0}")]
    Network(String),
}

fn parse_retry_after(value: &str, now: chrono::DateTime<chrono::Utc>) -> Option<u64> {
    if let Ok(secs) = value.trim().parse::<u64>() {
        return Some(secs);
    }
    let at = chrono::DateTime::parse_from_rfc2822(value.trim()).ok()?;
    let secs = (at.with_timezone(&chrono::Utc) - now).num_seconds();
    Some(secs.max(0) as u64)
}

/// IPv4-mapped IPv6 is the IPv4 address for allow-list purposes.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => ip,
        },
        v4 => v4,
    }
}

fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

fn find_egress_error(e: &(dyn std::error::Error + 'static)) -> Option<EgressError> {
    let mut current: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = current {
        if let Some(found) = err.downcast_ref::<EgressError>() {
            return Some(found.clone());
        }
        current = err.source();
    }
    None
}

/// reqwest's resolver hook: resolves through the rules.
struct CheckedResolver(Egress);

impl reqwest::dns::Resolve for CheckedResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let egress = self.0.clone();
        let host = name.as_str().to_owned();
        Box::pin(async move {
            let addrs = egress
                .resolver
                .lookup(&host)
                .await
                .map_err(|e| Box::new(e) as Box<dyn std::error::Error + Send + Sync>)?;
            let mut passed = Vec::new();
            let mut refused = None;
            for ip in addrs {
                match egress.check_ip(&host, ip) {
                    Ok(()) => passed.push(SocketAddr::new(ip, 0)),
                    Err(e) => {
                        refused.get_or_insert(e);
                    }
                }
            }
            if passed.is_empty() {
                let error = refused.unwrap_or(EgressError::Unresolvable { host });
                return Err(Box::new(error) as Box<dyn std::error::Error + Send + Sync>);
            }
            Ok(Box::new(passed.into_iter()) as reqwest::dns::Addrs)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn public_addresses_pass_and_inner_ones_are_named() {
        assert_eq!(blocked_reason("93.184.216.34".parse().unwrap()), None);
        assert_eq!(blocked_reason("2606:4700::1111".parse().unwrap()), None);
        assert_eq!(
            blocked_reason("169.254.169.254".parse().unwrap()),
            Some("link-local")
        );
        assert_eq!(
            blocked_reason("::ffff:10.0.0.1".parse().unwrap()),
            Some("private (RFC 1918)")
        );
        assert_eq!(
            blocked_reason("2002:7f00:1::".parse().unwrap()),
            Some("loopback")
        );
        assert_eq!(
            blocked_reason("fd00::1".parse().unwrap()),
            Some("unique-local")
        );
    }

    #[test]
    fn an_allowed_range_opens_only_itself() {
        let egress = Egress::new(
            Egress::parse_cidrs("127.0.0.0/8").unwrap(),
            Arc::new(StaticResolver::default()),
        );
        assert_eq!(egress.refusal("127.0.0.1".parse().unwrap()), None);
        assert_eq!(egress.refusal("::ffff:127.0.0.1".parse().unwrap()), None);
        assert_eq!(
            egress.refusal("::1".parse().unwrap()),
            Some("loopback"),
            "IPv6 loopback is another range"
        );
        assert!(egress.refusal("10.0.0.1".parse().unwrap()).is_some());
    }

    #[test]
    fn retry_after_reads_seconds_and_dates() {
        let now = chrono::DateTime::parse_from_rfc3339("2015-10-21T07:27:00Z")
            .unwrap()
            .with_timezone(&chrono::Utc);
        assert_eq!(parse_retry_after("120", now), Some(120));
        assert_eq!(
            parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT", now),
            Some(60)
        );
        assert_eq!(
            parse_retry_after("Wed, 21 Oct 2015 07:26:00 GMT", now),
            Some(0)
        );
        assert_eq!(parse_retry_after("soon", now), None);
    }

    #[test]
    fn cidr_lists_name_the_bad_entry() {
        assert!(Egress::parse_cidrs("127.0.0.0/8, ::1").is_ok());
        let err = Egress::parse_cidrs("127.0.0.0/8,nope").unwrap_err();
        assert!(err.contains("nope"));
    }
}
