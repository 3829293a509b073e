//! Identifier newtypes. Each can only hold a valid value, so everything past the edge
//! (HTTP path, queue message, store row) works with ids that are already checked.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::DomainError;

macro_rules! uuid_id {
    ($(#[$doc:meta])* $name:ident, $label:literal) => {
        $(#[$doc])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(try_from = "String", into = "String")]
        pub struct $name(Uuid);

        impl $name {
            pub const LABEL: &'static str = $label;

            pub fn from_uuid(id: Uuid) -> Self {
                Self(id)
            }

            pub fn as_uuid(&self) -> Uuid {
                self.0
            }
        }

        impl FromStr for $name {
            type Err = DomainError;

            fn from_str(s: &str) -> Result<Self, Self::Err> {
                parse_hyphenated(s).map(Self).ok_or_else(|| DomainError::InvalidId {
                    kind: $label,
                    value: truncate_for_message(s),
                })
            }
        }

        #[cfg(feature = "openapi")]
        impl utoipa::PartialSchema for $name {
            fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
                uuid_schema(concat!("A ", $label, " (UUID)"))
            }
        }

        #[cfg(feature = "openapi")]
        impl utoipa::ToSchema for $name {}

        impl TryFrom<String> for $name {
            type Error = DomainError;

            fn try_from(s: String) -> Result<Self, Self::Error> {
                s.parse()
            }
        }

        impl From<$name> for String {
            fn from(id: $name) -> String {
                id.to_string()
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                // Lower-case hyphenated: the one spelling stores and keys use.
                fmt::Display::fmt(&self.0.hyphenated(), f)
            }
        }
    };
}

/// The one spelling of a UUID the API accepts: 8-4-4-4-12 hex digits.
/// (`$(?!\n)`: the end of the value, also for regex engines whose `$` allows a final newline.)
pub const UUID_PATTERN: &str =
    "^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$(?!\\n)";

/// Only the hyphenated form: `Uuid::try_parse` also takes the simple, braced and URN forms,
/// which the API documents as invalid.
fn parse_hyphenated(s: &str) -> Option<Uuid> {
    let bytes = s.as_bytes();
    let hyphens_ok = bytes.len() == 36
        && bytes
            .iter()
            .enumerate()
            .all(|(i, b)| matches!(i, 8 | 13 | 18 | 23) == (*b == b'-'));
    if !hyphens_ok {
        return None;
    }
    Uuid::try_parse(s).ok()
}

#[cfg(feature = "openapi")]
fn uuid_schema(description: &str) -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
    use utoipa::openapi::schema::{KnownFormat, ObjectBuilder, SchemaFormat, Type};
    ObjectBuilder::new()
        .schema_type(Type::String)
        .format(Some(SchemaFormat::KnownFormat(KnownFormat::Uuid)))
        .pattern(Some(UUID_PATTERN))
        .description(Some(description))
        .examples([serde_json::json!("0190a0b0-c0d0-7e0f-8a0b-0c0d0e0f1011")])
        .into()
}

uuid_id!(
    /// An offer's id (UUID; seed data uses v4).
    OfferId,
    "offerId"
);
uuid_id!(
    /// A store location's id (UUID; seed data uses v4).
    LocationId,
    "locationId"
);
uuid_id!(
    /// A brand's id (UUID).
    BrandId,
    "brandId"
);
uuid_id!(
    /// A job's id: UUID v7, so ids sort by creation time.
    JobId,
    "jobId"
);
uuid_id!(
    /// A webhook subscription's id.
    SubscriptionId,
    "subscriptionId"
);
uuid_id!(
    /// An import's id: UUID v7.
    ImportId,
    "importId"
);

impl OfferId {
    pub fn new_random() -> Self {
        Self(Uuid::new_v4())
    }
}

impl LocationId {
    pub fn new_random() -> Self {
        Self(Uuid::new_v4())
    }
}

impl BrandId {
    pub fn new_random() -> Self {
        Self(Uuid::new_v4())
    }
}

impl JobId {
    pub fn new_v7() -> Self {
        Self(Uuid::now_v7())
    }
}

impl SubscriptionId {
    pub fn new_random() -> Self {
        Self(Uuid::new_v4())
    }

    /// Time-ordered (UUID v7): subscriptions made in one millisecond still list in order.
    pub fn new_v7() -> Self {
        Self(Uuid::now_v7())
    }
}

/// Position of a chunk within its job: derived from the fanout cursor, so a replayed page
/// produces the same sequence numbers and the chunk ledger can dedupe them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct ChunkSeq(pub u32);

impl fmt::Display for ChunkSeq {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:08}", self.0)
    }
}

/// A client's `Idempotency-Key` header: 1..=255 visible ASCII characters.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct IdempotencyKey(String);

impl IdempotencyKey {
    pub const MAX_LEN: usize = 255;

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for IdempotencyKey {
    type Err = DomainError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let visible = s.bytes().all(|b| b.is_ascii_graphic());
        if s.is_empty() || s.len() > Self::MAX_LEN || !visible {
            return Err(DomainError::InvalidIdempotencyKey);
        }
        Ok(Self(s.to_owned()))
    }
}

/// Where webhook events go: an absolute http(s) URL with a host.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct WebhookUrl(String);

impl WebhookUrl {
    pub const MAX_LEN: usize = 2048;

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// The host names a webhook URL may carry, as the API documents them (ECMA-262): labels of
/// letters, digits and hyphens, dot-separated, the last one starting with a letter; then an
/// optional port and path. IP addresses are accepted beyond it only where an operator opened
/// their range (the egress rules decide).
pub const WEBHOOK_URL_PATTERN: &str = concat!(
    r"^https?://(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)+",
    r"[A-Za-z](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.?",
    r"(?::(?:[1-9][0-9]{0,3}|[1-5][0-9]{4}|6[0-4][0-9]{3}|65[0-4][0-9]{2}|655[0-2][0-9]|6553[0-5]))?",
    // RFC 3986 path, query and fragment: unreserved, sub-delims, ":" and "@", percent-escapes.
    r"(?:/(?:[A-Za-z0-9._~!$&'()*+,;=:@/-]|%[0-9A-Fa-f]{2})*)?",
    r"(?:\?(?:[A-Za-z0-9._~!$&'()*+,;=:@/?-]|%[0-9A-Fa-f]{2})*)?",
    r"(?:#(?:[A-Za-z0-9._~!$&'()*+,;=:@/?-]|%[0-9A-Fa-f]{2})*)?$(?!\n)"
);

/// The path, query and fragment by RFC 3986 (what follows the authority).
fn is_uri_tail(tail: &str) -> bool {
    let allowed = |b: u8| b.is_ascii_alphanumeric() || b"-._~!$&'()*+,;=:@/?".contains(&b);
    let (before, fragment) = tail.split_once('#').unwrap_or((tail, ""));
    let part_ok = |part: &str| {
        let bytes = part.as_bytes();
        let mut i = 0;
        while i < bytes.len() {
            if bytes[i] == b'%' {
                let escape = bytes.get(i + 1..i + 3);
                if !escape.is_some_and(|e| e.iter().all(u8::is_ascii_hexdigit)) {
                    return false;
                }
                i += 3;
            } else if allowed(bytes[i]) {
                i += 1;
            } else {
                return false;
            }
        }
        true
    };
    part_ok(before) && part_ok(fragment)
}

/// A webhook URL's host name is at most 253 characters (254 with the root's dot): a second
/// pattern the URL must match, as a look-ahead in the first one made schema-driven test
/// generators crawl.
pub const WEBHOOK_HOST_LENGTH_PATTERN: &str = r"^https?://[^/?#:]{1,253}\.?(?:[/?#:]|$)";

/// A host name by `WEBHOOK_URL_PATTERN`'s rules.
fn is_dns_name(host: &str) -> bool {
    let host = host.strip_suffix('.').unwrap_or(host);
    if host.len() > 253 {
        return false;
    }
    let labels: Vec<&str> = host.split('.').collect();
    let label_ok = |l: &str| {
        (1..=63).contains(&l.len())
            && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
            && !l.starts_with('-')
            && !l.ends_with('-')
    };
    labels.len() >= 2
        && labels.iter().all(|l| label_ok(l))
        && labels
            .last()
            .and_then(|l| l.bytes().next())
            .is_some_and(|b| b.is_ascii_alphabetic())
}

/// A port by `WEBHOOK_URL_PATTERN`'s rules: 1 to 65535, no leading zero.
fn is_port(port: &str) -> bool {
    !port.starts_with('0')
        && port.bytes().all(|b| b.is_ascii_digit())
        && port.parse::<u32>().is_ok_and(|p| (1..=65_535).contains(&p))
}

impl FromStr for WebhookUrl {
    type Err = DomainError;

    /// An absolute `http`/`https` URL of visible ASCII whose host is a DNS name or an IP
    /// address (in any spelling), without user name or password; kept in its
    /// WHATWG-normalised form (`http://0x7f000001/` is stored as `http://127.0.0.1/`), so the
    /// address the egress rules check is the one a delivery connects to.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let invalid = |why: &'static str| DomainError::InvalidUrl {
            value: truncate_for_message(s),
            why,
        };
        if s.chars().count() > Self::MAX_LEN {
            return Err(invalid("longer than 2048 characters"));
        }
        let rest = s
            .strip_prefix("https://")
            .or_else(|| s.strip_prefix("http://"))
            .ok_or_else(|| invalid("must start with http:// or https://"))?;
        if !s.chars().all(|c| c.is_ascii_graphic()) {
            return Err(invalid(
                "contains whitespace, control or non-ASCII characters (percent-encode them)",
            ));
        }
        let authority = &rest[..rest.find(['/', '?', '#']).unwrap_or(rest.len())];
        if !is_uri_tail(&rest[authority.len()..]) {
            return Err(invalid(
                "has characters a URL must percent-encode in its path, query or fragment",
            ));
        }
        if authority.is_empty() {
            return Err(invalid("has no host"));
        }
        if authority.contains('@') {
            return Err(invalid("must not carry a user name or password"));
        }
        let (host, port) = match authority.rfind(':') {
            Some(i) if !authority[i..].contains(']') => {
                (&authority[..i], Some(&authority[i + 1..]))
            }
            _ => (authority, None),
        };
        if host.is_empty() {
            return Err(invalid("has no host"));
        }
        if port.is_some_and(|p| !is_port(p)) {
            return Err(invalid("has an invalid port (1 to 65535)"));
        }
        let url = url::Url::parse(s).map_err(|e| match e {
            url::ParseError::EmptyHost => invalid("has no host"),
            url::ParseError::InvalidPort => invalid("has an invalid port (1 to 65535)"),
            url::ParseError::InvalidIpv4Address | url::ParseError::InvalidIpv6Address => {
                invalid("has an invalid IP address")
            }
            _ => invalid("is not a valid URL"),
        })?;
        match url.host() {
            Some(url::Host::Ipv4(_) | url::Host::Ipv6(_)) => {}
            Some(url::Host::Domain(_)) if is_dns_name(host) => {}
            _ => {
                return Err(invalid(
                    "needs a host name of letters, digits and hyphens, dot-separated, the last \
                     label starting with a letter (or an IP address)",
                ))
            }
        }
        // The host as it will be connected to (an IP address in one spelling, a name in
        // lower case), the port unless it is the scheme's, then the rest exactly as sent (it
        // is RFC 3986 already): never longer than what was sent but for an IPv4 address
        // written short (`1` is `0.0.0.1`).
        let host = url.host_str().unwrap_or_default();
        let port = url.port().map(|p| format!(":{p}")).unwrap_or_default();
        let tail = &rest[authority.len()..];
        let normalised = format!("{}://{host}{port}{tail}", url.scheme());
        if normalised.chars().count() > Self::MAX_LEN {
            return Err(invalid("longer than 2048 characters"));
        }
        Ok(Self(normalised))
    }
}

#[cfg(feature = "openapi")]
impl utoipa::PartialSchema for WebhookUrl {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        use utoipa::openapi::schema::{AllOfBuilder, ObjectBuilder, SchemaFormat, Type};
        let url = ObjectBuilder::new()
            .schema_type(Type::String)
            .format(Some(SchemaFormat::Custom("uri".into())))
            .max_length(Some(WebhookUrl::MAX_LEN))
            .pattern(Some(WEBHOOK_URL_PATTERN));
        let host_length = ObjectBuilder::new()
            .schema_type(Type::String)
            .pattern(Some(WEBHOOK_HOST_LENGTH_PATTERN));
        AllOfBuilder::new()
            .item(url)
            .item(host_length)
            .description(Some(
                "Where deliveries go: http(s) to a public host name (at most 253 characters). An \
                 IP address is accepted only inside a range the operator opened \
                 (`--webhook-allow-cidr`); loopback, private, link-local and other inner \
                 addresses are refused, also when a name resolves to them.",
            ))
            .examples([serde_json::json!("https://hooks.example.com/bulklink")])
            .into()
    }
}

#[cfg(feature = "openapi")]
impl utoipa::ToSchema for WebhookUrl {}

impl TryFrom<String> for WebhookUrl {
    type Error = DomainError;

    fn try_from(s: String) -> Result<Self, Self::Error> {
        s.parse()
    }
}

impl From<WebhookUrl> for String {
    fn from(url: WebhookUrl) -> String {
        url.0
    }
}

impl fmt::Display for WebhookUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Echoing a hostile 1 MB value back in an error helps nobody.
fn truncate_for_message(s: &str) -> String {
    const MAX: usize = 80;
    if s.chars().count() <= MAX {
        s.to_owned()
    } else {
        let cut: String = s.chars().take(MAX).collect();
        format!("{cut}…")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_parse_uuids_and_print_them_lower_case() {
        let id: OfferId = "6F9619FF-8B86-D011-B42D-00C04FC964FF".parse().unwrap();
        assert_eq!(id.to_string(), "6f9619ff-8b86-d011-b42d-00c04fc964ff");
    }

    #[test]
    fn an_invalid_id_names_the_field_and_the_value() {
        let err = "nope".parse::<LocationId>().unwrap_err();
        assert_eq!(err.to_string(), "locationId 'nope' is not a valid UUID");
    }

    #[test]
    fn ids_deserialize_only_from_valid_uuids() {
        assert!(serde_json::from_str::<BrandId>("\"x\"").is_err());
        let id = BrandId::new_random();
        let json = serde_json::to_string(&id).unwrap();
        assert_eq!(serde_json::from_str::<BrandId>(&json).unwrap(), id);
    }

    #[test]
    fn job_ids_sort_by_creation_time() {
        let a = JobId::new_v7();
        let b = JobId::new_v7();
        assert!(a.to_string() < b.to_string());
    }

    #[test]
    fn idempotency_keys_must_be_short_visible_ascii() {
        assert!("abc-123".parse::<IdempotencyKey>().is_ok());
        assert!("".parse::<IdempotencyKey>().is_err());
        assert!("has space".parse::<IdempotencyKey>().is_err());
        assert!("x".repeat(256).parse::<IdempotencyKey>().is_err());
    }

    #[test]
    fn webhook_urls_must_be_absolute_http() {
        assert!("https://example.com/hook".parse::<WebhookUrl>().is_ok());
        assert!("http://127.0.0.1:8080/x".parse::<WebhookUrl>().is_ok());
        assert!("ftp://example.com".parse::<WebhookUrl>().is_err());
        assert!("https:///path".parse::<WebhookUrl>().is_err());
        assert!("https://a b".parse::<WebhookUrl>().is_err());
        assert!("https://user:pw@example.com/"
            .parse::<WebhookUrl>()
            .is_err());
        assert!("https://user@example.com/".parse::<WebhookUrl>().is_err());
        let numeric: WebhookUrl = "http://0x7f000001:8080/hook".parse().unwrap();
        assert_eq!(numeric.as_str(), "http://127.0.0.1:8080/hook");
    }

    #[test]
    fn the_documented_url_pattern_and_the_parser_agree() {
        // The regex crate has no look-ahead; `(?!\n)` only keeps Python's `$` honest.
        let pattern = regex::Regex::new(WEBHOOK_URL_PATTERN.strip_suffix(r"(?!\n)").unwrap());
        let pattern = pattern.unwrap();
        let host_length = regex::Regex::new(WEBHOOK_HOST_LENGTH_PATTERN).unwrap();
        let host_fits = |url: &str| host_length.is_match(url);
        let cases = [
            ("https://hooks.example.com/bulklink", true),
            ("https://hooks.example.com", true),
            ("http://a.example:8080/x?y=1&z=%2F#frag", true),
            ("https://example.com/a:b@c/!$&'()*+,;=~._-", true),
            ("https://example.com/?q=a/b?c", true),
            ("https://example.com./", true),
            ("https://G.e8Gj.:65505/71{0Z8NfX", false),
            ("https://example.com/a[1]", false),
            ("https://example.com/%zz", false),
            ("https://example.com/%4", false),
            ("https://example.com/#a#b", false),
            ("https://example.com/a\\b", false),
            ("https://example.com/a\"b", false),
            ("https://example.com:0/", false),
            ("https://example.com:65536/", false),
            ("https://example.com:080/", false),
            ("https://localhost/", false),
            ("https://example.123/", false),
            ("https://-a.example.com/", false),
            (&long_host(253), true),
            (&long_host(254), false),
            (&format!("{}.", long_host(253)), true),
            (
                &format!("https://a.example/?{}", "q".repeat(2048 - 19)),
                true,
            ),
            (
                &format!("https://a.example/?{}", "q".repeat(2048 - 18)),
                false,
            ),
        ];
        for (url, valid) in cases {
            let by_pattern = pattern.is_match(url) && host_fits(url) && url.len() <= 2048;
            assert_eq!(by_pattern, valid, "pattern on {url}");
            assert_eq!(url.parse::<WebhookUrl>().is_ok(), valid, "parser on {url}");
        }
    }

    /// `https://` and a host name of `len` characters.
    fn long_host(len: usize) -> String {
        let mut host = "a".repeat(62);
        while host.len() + 66 <= len {
            host.push_str(&format!(".{}", "a".repeat(63)));
        }
        host.push('.');
        host.push_str(&"b".repeat(len - host.len()));
        format!("https://{host}")
    }

    #[test]
    fn a_url_is_kept_as_sent_but_for_its_host_and_port() {
        for (sent, kept) in [
            ("https://Hooks.Example.COM", "https://hooks.example.com"),
            (
                "https://a.example:443/x/../y?b=C#D",
                "https://a.example/x/../y?b=C#D",
            ),
            ("http://a.example:80", "http://a.example"),
            ("http://0x7f000001:8080/hook", "http://127.0.0.1:8080/hook"),
            ("http://[0:0:0:0:0:0:0:1]:9/", "http://[::1]:9/"),
        ] {
            let url: WebhookUrl = sent.parse().unwrap();
            assert_eq!(url.as_str(), kept);
            let again: WebhookUrl = kept.parse().unwrap();
            assert_eq!(again.as_str(), kept, "idempotent");
        }
    }

    #[test]
    fn chunk_seqs_print_zero_padded_so_keys_sort() {
        assert_eq!(ChunkSeq(42).to_string(), "00000042");
    }
}
