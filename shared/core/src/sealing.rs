//! Webhook signing secrets at rest. A stored secret is
//! `sealed1.{keyRef}.{nonce}.{ciphertext}` (base64url): AES-256-GCM under a 256-bit data
//! key, with the subscription's id as associated data, so a sealed secret copied onto
//! another subscription does not open. `keyRef` says which data key: on the embedded
//! backend the key file's fingerprint, on AWS the data key as KMS encrypted it (envelope
//! encryption). A stored value without the prefix is a plaintext secret from before
//! sealing: it still reads, and both backends seal it (the embedded store when it opens,
//! `bulklink upgrade` on AWS).

use std::fmt;

use aes_gcm::aead::{Aead, Payload};
use aes_gcm::{Aes256Gcm, KeyInit, Nonce};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use sha2::{Digest, Sha256};

use crate::domain::{SubscriptionId, WebhookSecret};
use crate::error::{StoreError, StoreResult};

/// Bytes of a data key.
pub const KEY_BYTES: usize = 32;
const NONCE_BYTES: usize = 12;
/// What a sealed secret begins with (then a `.`).
pub const SEALED_PREFIX: &str = "sealed1";

/// A 256-bit AES-GCM data key. Its `Debug` shows its fingerprint only.
#[derive(Clone)]
pub struct DataKey([u8; KEY_BYTES]);

impl DataKey {
    pub fn generate() -> Self {
        let mut key = [0u8; KEY_BYTES];
        rand::fill(&mut key[..]);
        DataKey(key)
    }

    /// The key of exactly `KEY_BYTES` bytes.
    pub fn from_bytes(bytes: &[u8]) -> Option<Self> {
        bytes.try_into().ok().map(DataKey)
    }

    /// Names the key without revealing it: 16 hex digits of a SHA-256 of it.
    pub fn fingerprint(&self) -> String {
        let digest = Sha256::new()
            .chain_update(b"bulklink secrets key\0")
            .chain_update(self.0)
            .finalize();
        digest[..8].iter().map(|b| format!("{b:02x}")).collect()
    }

    /// `secret` of subscription `id`, sealed under this key, with `key_ref` naming the key.
    pub fn seal(&self, key_ref: &str, id: SubscriptionId, secret: &WebhookSecret) -> String {
        let mut nonce = [0u8; NONCE_BYTES];
        rand::fill(&mut nonce[..]);
        let aad = associated_data(id);
        let ciphertext = self
            .cipher()
            .encrypt(
                Nonce::from_slice(&nonce),
                Payload {
                    msg: secret.as_str().as_bytes(),
                    aad: aad.as_bytes(),
                },
            )
            .expect("AES-GCM seals any secret of a sane length");
        format!(
            "{SEALED_PREFIX}.{key_ref}.{}.{}",
            URL_SAFE_NO_PAD.encode(nonce),
            URL_SAFE_NO_PAD.encode(ciphertext)
        )
    }

    /// The secret `sealed` holds, if it is subscription `id`'s and this key sealed it.
    pub fn open(&self, id: SubscriptionId, sealed: &Sealed) -> StoreResult<WebhookSecret> {
        let aad = associated_data(id);
        let plain = self
            .cipher()
            .decrypt(
                Nonce::from_slice(&sealed.nonce),
                Payload {
                    msg: &sealed.ciphertext,
                    aad: aad.as_bytes(),
                },
            )
            .map_err(|_| {
                StoreError::internal(format!(
                    "the signing secret of webhook {id} does not open: it was sealed for \
                     another subscription or altered"
                ))
            })?;
        String::from_utf8(plain)
            .map_err(|_| StoreError::internal(format!("webhook {id}'s secret is not text")))?
            .parse()
            .map_err(|e| StoreError::internal(format!("webhook {id}'s secret: {e}")))
    }

    fn cipher(&self) -> Aes256Gcm {
        Aes256Gcm::new_from_slice(&self.0).expect("a 256-bit key")
    }
}

impl fmt::Debug for DataKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "DataKey({})", self.fingerprint())
    }
}

fn associated_data(id: SubscriptionId) -> String {
    format!("bulklink webhook secret {id}")
}

/// A sealed secret as stored, taken apart.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Sealed {
    /// Which data key: the embedded key's fingerprint, or the KMS-encrypted data key.
    pub key_ref: String,
    nonce: [u8; NONCE_BYTES],
    ciphertext: Vec<u8>,
}

/// A stored secret: sealed, or plaintext from before sealing.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Stored {
    Sealed(Sealed),
    Plain(WebhookSecret),
}

impl Stored {
    pub fn parse(id: SubscriptionId, text: &str) -> StoreResult<Stored> {
        let corrupt = || StoreError::internal(format!("webhook {id}'s stored secret is corrupt"));
        let Some(rest) = text
            .strip_prefix(SEALED_PREFIX)
            .and_then(|r| r.strip_prefix('.'))
        else {
            return text.parse().map(Stored::Plain).map_err(|_| corrupt());
        };
        let mut parts = rest.split('.');
        let (Some(key_ref), Some(nonce), Some(ciphertext), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(corrupt());
        };
        let nonce = URL_SAFE_NO_PAD
            .decode(nonce)
            .ok()
            .and_then(|n| <[u8; NONCE_BYTES]>::try_from(n).ok())
            .ok_or_else(corrupt)?;
        let ciphertext = URL_SAFE_NO_PAD.decode(ciphertext).map_err(|_| corrupt())?;
        Ok(Stored::Sealed(Sealed {
            key_ref: key_ref.to_owned(),
            nonce,
            ciphertext,
        }))
    }

    /// Whether a stored value is sealed (what the migrations look for).
    pub fn is_sealed(text: &str) -> bool {
        text.starts_with(SEALED_PREFIX) && text[SEALED_PREFIX.len()..].starts_with('.')
    }
}

/// The embedded backend's sealer: one data key, from a key file.
#[derive(Clone, Debug)]
pub struct LocalSealer {
    key: DataKey,
    fingerprint: String,
}

impl LocalSealer {
    pub fn new(key: DataKey) -> Self {
        let fingerprint = key.fingerprint();
        LocalSealer { key, fingerprint }
    }

    pub fn seal(&self, id: SubscriptionId, secret: &WebhookSecret) -> String {
        self.key.seal(&self.fingerprint, id, secret)
    }

    /// A stored secret of subscription `id`, opened (a plaintext one read as it is).
    pub fn open(&self, id: SubscriptionId, stored: &str) -> StoreResult<WebhookSecret> {
        match Stored::parse(id, stored)? {
            Stored::Plain(secret) => Ok(secret),
            Stored::Sealed(sealed) if sealed.key_ref != self.fingerprint => {
                Err(StoreError::internal(format!(
                    "webhook {id}'s secret was sealed with the secrets key {}, not this one ({}): \
                     start with the key file it was sealed with",
                    sealed.key_ref, self.fingerprint
                )))
            }
            Stored::Sealed(sealed) => self.key.open(id, &sealed),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sealed_secret_opens_with_its_key_and_subscription_only() {
        let id = SubscriptionId::new_random();
        let secret = WebhookSecret::generate();
        let sealer = LocalSealer::new(DataKey::generate());
        let stored = sealer.seal(id, &secret);
        assert!(Stored::is_sealed(&stored));
        assert!(!stored.contains(secret.as_str()));
        assert!(!stored.contains(&secret.as_str()["whsec_".len()..]));
        assert_eq!(sealer.open(id, &stored).unwrap(), secret);
        // Twice sealed, twice different (a fresh nonce each time).
        assert_ne!(sealer.seal(id, &secret), stored);

        let other = sealer
            .open(SubscriptionId::new_random(), &stored)
            .unwrap_err();
        assert!(
            other.to_string().contains("another subscription"),
            "{other}"
        );
        let wrong = LocalSealer::new(DataKey::generate())
            .open(id, &stored)
            .unwrap_err();
        assert!(wrong.to_string().contains("not this one"), "{wrong}");

        let mut altered = stored.clone();
        let last = altered.pop().unwrap();
        altered.push(if last == 'A' { 'B' } else { 'A' });
        assert!(sealer.open(id, &altered).is_err());
        assert!(sealer.open(id, "sealed1.x.y").is_err());
    }

    #[test]
    fn a_plaintext_secret_from_before_sealing_still_reads() {
        let id = SubscriptionId::new_random();
        let secret = WebhookSecret::generate();
        let sealer = LocalSealer::new(DataKey::generate());
        assert!(!Stored::is_sealed(secret.as_str()));
        assert_eq!(sealer.open(id, secret.as_str()).unwrap(), secret);
        assert!(sealer.open(id, "not a secret").is_err());
    }
}
