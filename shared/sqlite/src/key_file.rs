//! The embedded backend's key files: the token key (`bulklink token`, `serve`'s local
//! tokens) and the secrets key (webhook signing secrets at rest). Each is base64url text of
//! at least 32 random bytes, created with mode 0600 when missing and refused when its group
//! or others may read it.

use std::io::Write as _;
use std::path::{Path, PathBuf};

use base64::Engine;

/// Bytes of a new key.
pub const KEY_BYTES: usize = 32;

#[derive(Debug, thiserror::Error)]
pub enum KeyFileError {
    #[error("cannot read the {what} {path}: {source}")]
    Read {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot create the {what} {path}: {source}")]
    Create {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the {what} {path} is readable by others (mode {mode:o}); run chmod 600 on it")]
    TooOpen {
        what: &'static str,
        path: PathBuf,
        mode: u32,
    },
    #[error("the {what} {path} is not a base64 key of at least {KEY_BYTES} bytes")]
    Malformed { what: &'static str, path: PathBuf },
}

/// The key at `path` (`what` names it in errors and logs), or a new one created there
/// (mode 0600) when the file is missing.
pub fn load_or_create(path: &Path, what: &'static str) -> Result<Vec<u8>, KeyFileError> {
    match read(path, what) {
        Err(KeyFileError::Read { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => {
        }
        other => return other,
    }
    let mut key = vec![0u8; KEY_BYTES];
    rand::fill(&mut key[..]);
    let encoded = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(&key);
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    match options.open(path) {
        Ok(mut file) => {
            writeln!(file, "{encoded}")
                .and_then(|()| file.sync_all())
                .map_err(|source| KeyFileError::Create {
                    what,
                    path: path.to_owned(),
                    source,
                })?;
            tracing::info!(path = %path.display(), "created a new {what}");
            Ok(key)
        }
        // Another process created it first: use theirs.
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => read(path, what),
        Err(source) => Err(KeyFileError::Create {
            what,
            path: path.to_owned(),
            source,
        }),
    }
}

fn read(path: &Path, what: &'static str) -> Result<Vec<u8>, KeyFileError> {
    let unreadable = |source| KeyFileError::Read {
        what,
        path: path.to_owned(),
        source,
    };
    let text = std::fs::read_to_string(path).map_err(unreadable)?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(path)
            .map_err(unreadable)?
            .permissions()
            .mode();
        if mode & 0o077 != 0 {
            return Err(KeyFileError::TooOpen {
                what,
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
            what,
            path: path.to_owned(),
        })
}
