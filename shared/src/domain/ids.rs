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
                Uuid::try_parse(s).map(Self).map_err(|_| DomainError::InvalidId {
                    kind: $label,
                    value: truncate_for_message(s),
                })
            }
        }

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

impl FromStr for WebhookUrl {
    type Err = DomainError;

    /// Absolute `http`/`https` with a host and no userinfo, kept in its WHATWG-normalised
    /// form: `http://0x7f000001/` is stored as `http://127.0.0.1/`, so the address the
    /// egress rules check is the one a delivery connects to.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let invalid = |why: &'static str| DomainError::InvalidUrl {
            value: truncate_for_message(s),
            why,
        };
        if s.len() > Self::MAX_LEN {
            return Err(invalid("longer than 2048 characters"));
        }
        let lower = s.get(..8).unwrap_or(s).to_ascii_lowercase();
        let rest = if lower.starts_with("https://") {
            &s[8..]
        } else if lower.starts_with("http://") {
            &s[7..]
        } else {
            return Err(invalid("must start with http:// or https://"));
        };
        // WHATWG parsing would read `https:///x` as host `x`: the authority must be there.
        let authority = rest.split(['/', '?', '#', '\\']).next().unwrap_or_default();
        if authority.is_empty() || authority.starts_with(':') {
            return Err(invalid("has no host"));
        }
        if s.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(invalid("contains whitespace or control characters"));
        }
        let url = url::Url::parse(s).map_err(|e| match e {
            url::ParseError::EmptyHost => invalid("has no host"),
            url::ParseError::InvalidPort => invalid("has an invalid port"),
            url::ParseError::InvalidIpv4Address | url::ParseError::InvalidIpv6Address => {
                invalid("has an invalid IP address")
            }
            _ => invalid("is not a valid URL"),
        })?;
        if url.host().is_none() {
            return Err(invalid("has no host"));
        }
        if !url.username().is_empty() || url.password().is_some() {
            return Err(invalid("must not carry a user name or password"));
        }
        if url.port() == Some(0) {
            return Err(invalid("has an invalid port"));
        }
        Ok(Self(url.to_string()))
    }
}

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
    fn chunk_seqs_print_zero_padded_so_keys_sort() {
        assert_eq!(ChunkSeq(42).to_string(), "00000042");
    }
}
