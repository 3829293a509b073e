//! Local tokens and their key, what `bulklink serve`, `bulklink token` and the tests mint
//! with: an HS256 key file beside the database (created 0600, refused if others can read
//! it) and tokens signed with it that `bulklink_http::auth::Verifier::hs256` accepts. The
//! HTTP edge only verifies; minting is the CLI's.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use base64::Engine;
use bulklink_core::clock::Clock;
use bulklink_http::auth::{self, Role};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::Map;

/// Bytes of a new local signing key.
const KEY_BYTES: usize = 32;

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

#[derive(Debug, thiserror::Error)]
pub enum KeyFileError {
    #[error("cannot read the token key {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot create the token key {path}: {source}")]
    Create {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the token key {path} is readable by others (mode {mode:o}); run chmod 600 on it")]
    TooOpen { path: PathBuf, mode: u32 },
    #[error("the token key {path} is not a base64 key of at least {KEY_BYTES} bytes")]
    Malformed { path: PathBuf },
}

/// The local HS256 key: read from `path`, or created there (mode 0600) when missing.
pub fn load_or_create_key(path: &Path) -> Result<Vec<u8>, KeyFileError> {
    match read_key(path) {
        Err(KeyFileError::Read { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => {
        }
        other => return other,
    }
    let mut secret = vec![0u8; KEY_BYTES];
    rand::fill(&mut secret[..]);
    let encoded = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(&secret);
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    match options.open(path) {
        Ok(mut file) => {
            writeln!(file, "{encoded}")
                .and_then(|()| file.sync_all())
                .map_err(|source| KeyFileError::Create {
                    path: path.to_owned(),
                    source,
                })?;
            tracing::info!(path = %path.display(), "created a new token key");
            Ok(secret)
        }
        // Another process created it first: use theirs.
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => read_key(path),
        Err(source) => Err(KeyFileError::Create {
            path: path.to_owned(),
            source,
        }),
    }
}

fn read_key(path: &Path) -> Result<Vec<u8>, KeyFileError> {
    let text = std::fs::read_to_string(path).map_err(|source| KeyFileError::Read {
        path: path.to_owned(),
        source,
    })?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(path)
            .map_err(|source| KeyFileError::Read {
                path: path.to_owned(),
                source,
            })?
            .permissions()
            .mode();
        if mode & 0o077 != 0 {
            return Err(KeyFileError::TooOpen {
                path: path.to_owned(),
                mode: mode & 0o777,
            });
        }
    }
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(text.trim())
        .ok()
        .filter(|k| k.len() >= KEY_BYTES)
        .ok_or_else(|| KeyFileError::Malformed {
            path: path.to_owned(),
        })
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
