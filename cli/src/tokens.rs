//! Local tokens and their key, what `bulklink serve`, `bulklink token` and the tests mint
//! with: an HS256 key file beside the database (created 0600, refused if others can read
//! it) and tokens signed with it that `bulklink_http::auth::Verifier::hs256` accepts. The
//! HTTP edge only verifies; minting is the CLI's.

use std::path::Path;
use std::time::Duration;

use bulklink_core::clock::Clock;
use bulklink_http::auth::{self, Role};
use bulklink_sqlite::key_file::{self, KeyFileError};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::Map;

/// Mints a token `bulklink serve` accepts with the same key, issued at `clock`'s time.
pub fn mint_token(
    secret: &[u8],
    principal: &str,
    role: &Role,
    ttl: Duration,
    brand_claim: &str,
    clock: &Clock,
) -> Result<String, jsonwebtoken::errors::Error> {
    let now = clock.now_secs();
    let mut claims = Map::new();
    claims.insert("sub".into(), principal.into());
    claims.insert("iss".into(), auth::LOCAL_ISSUER.into());
    claims.insert("aud".into(), auth::LOCAL_AUDIENCE.into());
    claims.insert("iat".into(), now.into());
    claims.insert("exp".into(), (now + ttl.as_secs() as i64).into());
    match role {
        Role::Admin => {
            claims.insert("scope".into(), auth::ADMIN_SCOPE.into());
        }
        Role::Brand(brand) => {
            claims.insert(brand_claim.into(), brand.to_string().into());
        }
    }
    jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &claims,
        &EncodingKey::from_secret(secret),
    )
}

/// The local HS256 key: read from `path`, or created there (mode 0600) when missing.
pub fn load_or_create_key(path: &Path) -> Result<Vec<u8>, KeyFileError> {
    key_file::load_or_create(path, "token key")
}

/// Parses `24h`, `90m`, `3600s`, `7d` or a number of seconds.
pub fn parse_ttl(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let (digits, unit) = match s.find(|c: char| !c.is_ascii_digit()) {
        Some(i) => s.split_at(i),
        None => (s, "s"),
    };
    let n: u64 = digits
        .parse()
        .map_err(|_| format!("{s:?} is not a duration like 24h, 90m or 3600s"))?;
    let secs = match unit {
        "s" => n,
        "m" => n * 60,
        "h" => n * 3_600,
        "d" => n * 86_400,
        _ => return Err(format!("{s:?}: the unit must be s, m, h or d")),
    };
    if secs == 0 {
        return Err("a token must live at least one second".into());
    }
    Ok(Duration::from_secs(secs))
}
