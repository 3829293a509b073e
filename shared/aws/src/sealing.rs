//! Webhook signing secrets at rest on AWS: envelope encryption under a KMS key. Sealing a
//! secret asks KMS for a fresh data key (`GenerateDataKey`, AES-256) with the encryption
//! context `bulklink:webhook = {subscription id}`, seals the secret with it
//! ([`bulklink_core::sealing`]) and stores the data key only as KMS encrypted it. Opening
//! one asks KMS to decrypt that data key (same context, so a key copied onto another
//! subscription does not open) and keeps the opened keys for the life of the process, so a
//! warm deliverer asks KMS once per subscription, not per delivery.

use std::collections::HashMap;
use std::sync::Mutex;

use aws_sdk_kms::primitives::Blob;
use aws_sdk_kms::types::DataKeySpec;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use bulklink_core::sealing::{DataKey, Stored};

use super::sdk_error::classify;
use crate::domain::{SubscriptionId, WebhookSecret};
use crate::error::{StoreError, StoreResult};

/// The encryption context's key; its value is the subscription's id.
pub const CONTEXT_KEY: &str = "bulklink:webhook";
/// Opened data keys kept at most (one per subscription seen; the cache starts over when
/// full).
const CACHED_KEYS: usize = 4_096;

pub struct KmsSealer {
    kms: aws_sdk_kms::Client,
    key_id: String,
    opened: Mutex<HashMap<String, DataKey>>,
}

impl KmsSealer {
    /// Seals with the KMS key `key_id` (an id, ARN or alias).
    pub fn new(kms: aws_sdk_kms::Client, key_id: &str) -> Self {
        KmsSealer {
            kms,
            key_id: key_id.to_owned(),
            opened: Mutex::new(HashMap::new()),
        }
    }

    pub async fn seal(&self, id: SubscriptionId, secret: &WebhookSecret) -> StoreResult<String> {
        let out = self
            .kms
            .generate_data_key()
            .key_id(&self.key_id)
            .key_spec(DataKeySpec::Aes256)
            .encryption_context(CONTEXT_KEY, id.to_string())
            .send()
            .await
            .map_err(|e| classify("GenerateDataKey", e))?;
        let (Some(plain), Some(encrypted)) = (out.plaintext, out.ciphertext_blob) else {
            return Err(StoreError::internal(
                "KMS GenerateDataKey answered without the data key",
            ));
        };
        let key = DataKey::from_bytes(plain.as_ref())
            .ok_or_else(|| StoreError::internal("KMS gave a data key that is not 256 bits"))?;
        let key_ref = URL_SAFE_NO_PAD.encode(encrypted.as_ref());
        let sealed = key.seal(&key_ref, id, secret);
        self.keep(key_ref, key);
        Ok(sealed)
    }

    /// A stored secret of subscription `id`, opened (a plaintext one, stored before
    /// sealing, read as it is).
    pub async fn open(&self, id: SubscriptionId, stored: &str) -> StoreResult<WebhookSecret> {
        let sealed = match Stored::parse(id, stored)? {
            Stored::Plain(secret) => return Ok(secret),
            Stored::Sealed(sealed) => sealed,
        };
        let cached = self.opened.lock().unwrap().get(&sealed.key_ref).cloned();
        let key = match cached {
            Some(key) => key,
            None => {
                let encrypted = URL_SAFE_NO_PAD.decode(&sealed.key_ref).map_err(|_| {
                    StoreError::internal(format!("webhook {id}'s sealed secret is corrupt"))
                })?;
                let out = self
                    .kms
                    .decrypt()
                    .ciphertext_blob(Blob::new(encrypted))
                    .encryption_context(CONTEXT_KEY, id.to_string())
                    .send()
                    .await
                    .map_err(|e| classify("Decrypt", e))?;
                let key = out
                    .plaintext
                    .and_then(|p| DataKey::from_bytes(p.as_ref()))
                    .ok_or_else(|| {
                        StoreError::internal("KMS Decrypt answered without a 256-bit data key")
                    })?;
                self.keep(sealed.key_ref.clone(), key.clone());
                key
            }
        };
        key.open(id, &sealed)
    }

    fn keep(&self, key_ref: String, key: DataKey) {
        let mut opened = self.opened.lock().unwrap();
        if opened.len() >= CACHED_KEYS {
            opened.clear();
        }
        opened.insert(key_ref, key);
    }
}
