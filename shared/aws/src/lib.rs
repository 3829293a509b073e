//! The AWS backend: every port on DynamoDB (catalog and jobs tables, DESIGN §4), SQS
//! (fanout and chunk queues with dead-letter queues) and SNS (job events). Clients come from
//! `aws_config` defaults with the standard retry mode; `AWS_ENDPOINT_URL` points them at a
//! local emulator.
// Unit tests may read the machine's time; production code reads bulklink_core::clock::Clock.
#![cfg_attr(test, allow(clippy::disallowed_methods))]

#[cfg(feature = "emulator")]
mod bootstrap;
mod catalog;
#[cfg(feature = "emulator")]
mod emulator;
pub mod estate;
mod events;
mod items;
mod jobs;
mod metrics;
mod queue;
mod read_units;
mod relink;
mod sdk_error;
pub mod sealing;
mod upgrade;
mod uploads;
mod webhooks;

use std::sync::Arc;

use aws_config::retry::RetryConfig;
use aws_config::BehaviorVersion;

// The core's modules, under the paths this crate's code names them by.
use bulklink_core::{clock, config, domain, error, ports, StoreError, StoreResult};

use crate::config::SettingsError;
use crate::ports::Ports;

/// The DynamoDB client (for the bench's measures).
pub use aws_sdk_dynamodb::Client as DynamoClient;
#[cfg(feature = "emulator")]
pub use bootstrap::{bootstrap, Bootstrapped, ResourceNames};
pub use catalog::DynamoCatalog;
#[cfg(feature = "emulator")]
pub use emulator::{EmulatorError, LocalEmulator};
pub use events::SnsEvents;
pub use jobs::DynamoJobs;
pub use jobs::{chunk_marker_units, MarkerUnits};
pub use metrics::{Counts, RequestCounter};
pub use queue::SqsQueue;
pub use read_units::{stored_item_size, ReadUnits};
pub use relink::{migrate_links, Migrated};
pub use sealing::KmsSealer;
pub use upgrade::{upgrade, Upgraded};
pub use uploads::S3Uploads;
pub use webhooks::DynamoWebhooks;

/// Where the backend's resources are: the names Terraform creates and passes as env vars.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AwsNames {
    pub catalog_table: String,
    pub jobs_table: String,
    pub fanout_queue_url: String,
    pub chunk_queue_url: String,
    pub chunk_dlq_url: String,
    pub events_topic_arn: String,
    /// The queue subscribed to the topic (raw), read by the webhook deliverer.
    pub webhook_queue_url: String,
    /// The bucket imports' files are uploaded to (its object-created events go to the
    /// fanout queue).
    pub uploads_bucket: String,
    /// The KMS key webhook signing secrets are sealed under (its ARN, id or alias).
    pub webhook_secrets_key: String,
}

impl AwsNames {
    pub const ENV: [&'static str; 9] = [
        "CATALOG_TABLE",
        "JOBS_TABLE",
        "FANOUT_QUEUE_URL",
        "CHUNK_QUEUE_URL",
        "CHUNK_DLQ_URL",
        "EVENTS_TOPIC_ARN",
        "WEBHOOK_QUEUE_URL",
        "UPLOADS_BUCKET",
        "WEBHOOK_SECRETS_KEY_ID",
    ];

    pub fn from_env() -> Result<Self, SettingsError> {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    /// The environment a process is given to find these resources (`ENV`, each with its
    /// value): what Terraform sets on each function, and `bootstrap` prints.
    pub fn env(&self) -> [(&'static str, &str); 9] {
        [
            ("CATALOG_TABLE", &self.catalog_table),
            ("JOBS_TABLE", &self.jobs_table),
            ("FANOUT_QUEUE_URL", &self.fanout_queue_url),
            ("CHUNK_QUEUE_URL", &self.chunk_queue_url),
            ("CHUNK_DLQ_URL", &self.chunk_dlq_url),
            ("EVENTS_TOPIC_ARN", &self.events_topic_arn),
            ("WEBHOOK_QUEUE_URL", &self.webhook_queue_url),
            ("UPLOADS_BUCKET", &self.uploads_bucket),
            ("WEBHOOK_SECRETS_KEY_ID", &self.webhook_secrets_key),
        ]
    }

    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, SettingsError> {
        let get = |name: &'static str| {
            lookup(name)
                .filter(|v| !v.trim().is_empty())
                .ok_or(SettingsError {
                    name,
                    value: String::new(),
                    why: "is required for the aws backend",
                })
        };
        Ok(AwsNames {
            catalog_table: get("CATALOG_TABLE")?,
            jobs_table: get("JOBS_TABLE")?,
            fanout_queue_url: get("FANOUT_QUEUE_URL")?,
            chunk_queue_url: get("CHUNK_QUEUE_URL")?,
            chunk_dlq_url: get("CHUNK_DLQ_URL")?,
            events_topic_arn: get("EVENTS_TOPIC_ARN")?,
            webhook_queue_url: get("WEBHOOK_QUEUE_URL")?,
            uploads_bucket: get("UPLOADS_BUCKET")?,
            webhook_secrets_key: get("WEBHOOK_SECRETS_KEY_ID")?,
        })
    }
}

/// The three SDK clients, built once, each with the request counter attached.
#[derive(Clone, Debug)]
pub struct AwsClients {
    pub dynamodb: aws_sdk_dynamodb::Client,
    pub sqs: aws_sdk_sqs::Client,
    pub sns: aws_sdk_sns::Client,
    pub s3: aws_sdk_s3::Client,
    pub kms: aws_sdk_kms::Client,
    pub counter: RequestCounter,
    /// What DynamoDB reads cost, measured when switched on (the bench).
    pub read_units: ReadUnits,
    /// What the clients were made from, for a client of another service.
    pub sdk_config: Arc<aws_config::SdkConfig>,
}

/// SDK retry attempts for every call (standard mode: exponential backoff with jitter, and
/// throttling errors retried). Adaptive mode stalls far too long for a Lambda.
pub const SDK_MAX_ATTEMPTS: u32 = 6;
/// One attempt of any call gives up after this; the SDK then retries it. Without it a
/// stalled connection would hold a worker until the Lambda times out.
pub const SDK_ATTEMPT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

impl AwsClients {
    /// Loads the default AWS configuration (env, profile, IMDS; `AWS_ENDPOINT_URL`).
    /// `endpoint` overrides the endpoint. Against a loopback endpoint (an emulator), missing
    /// credentials and region get local placeholders, so no AWS account is needed.
    pub async fn load(endpoint: Option<&str>) -> Self {
        let mut loader = aws_config::defaults(BehaviorVersion::latest())
            .retry_config(RetryConfig::standard().with_max_attempts(SDK_MAX_ATTEMPTS))
            .timeout_config(
                aws_config::timeout::TimeoutConfig::builder()
                    .operation_attempt_timeout(SDK_ATTEMPT_TIMEOUT)
                    .connect_timeout(std::time::Duration::from_secs(3))
                    .build(),
            );
        if let Some(url) = endpoint {
            loader = loader.endpoint_url(url);
        }
        let effective = endpoint
            .map(str::to_owned)
            .or_else(|| std::env::var("AWS_ENDPOINT_URL").ok());
        if effective.as_deref().is_some_and(is_loopback_endpoint) {
            if std::env::var_os("AWS_ACCESS_KEY_ID").is_none() {
                loader = loader.credentials_provider(aws_sdk_dynamodb::config::Credentials::new(
                    "local",
                    "local",
                    None,
                    None,
                    "bulklink-local",
                ));
            }
            if std::env::var_os("AWS_REGION").is_none()
                && std::env::var_os("AWS_DEFAULT_REGION").is_none()
            {
                loader = loader.region(aws_config::Region::new("us-east-1"));
            }
        }
        Self::from_config(&loader.load().await)
    }

    pub fn from_config(config: &aws_config::SdkConfig) -> Self {
        let counter = RequestCounter::new();
        let read_units = ReadUnits::new();
        let dynamodb = aws_sdk_dynamodb::Client::from_conf(
            aws_sdk_dynamodb::config::Builder::from(config)
                .interceptor(counter.clone())
                .interceptor(read_units.clone())
                .build(),
        );
        let sqs = aws_sdk_sqs::Client::from_conf(
            aws_sdk_sqs::config::Builder::from(config)
                .interceptor(counter.clone())
                .build(),
        );
        let sns = aws_sdk_sns::Client::from_conf(
            aws_sdk_sns::config::Builder::from(config)
                .interceptor(counter.clone())
                .build(),
        );
        // An emulator on this machine serves buckets by path, not by host name.
        let path_style = config.endpoint_url().is_some_and(is_loopback_endpoint);
        let s3 = aws_sdk_s3::Client::from_conf(
            aws_sdk_s3::config::Builder::from(config)
                .force_path_style(path_style)
                .interceptor(counter.clone())
                .build(),
        );
        let kms = aws_sdk_kms::Client::from_conf(
            aws_sdk_kms::config::Builder::from(config)
                .interceptor(counter.clone())
                .build(),
        );
        AwsClients {
            dynamodb,
            sqs,
            sns,
            s3,
            kms,
            counter,
            read_units,
            sdk_config: Arc::new(config.clone()),
        }
    }
}

/// The AWS backend's ports; new offers' links are spread over `link_shards` partitions.
pub fn ports(
    clients: &AwsClients,
    names: &AwsNames,
    clock: crate::clock::Clock,
    link_shards: u16,
) -> Ports {
    use crate::ports::TypedQueue;
    let queue = |url: &str, name: &str| -> Arc<dyn crate::ports::Queue> {
        Arc::new(SqsQueue::new(clients.sqs.clone(), url, name))
    };
    let jobs = Arc::new(DynamoJobs::new(
        clients.dynamodb.clone(),
        &names.jobs_table,
        &names.catalog_table,
        clock.clone(),
    ));
    let catalog = Arc::new(DynamoCatalog::new(
        clients.dynamodb.clone(),
        &names.catalog_table,
        clock.clone(),
        link_shards,
    ));
    Ports {
        catalog: catalog.clone(),
        location_imports: catalog,
        imports: jobs.clone(),
        uploads: Arc::new(S3Uploads::new(
            clients.s3.clone(),
            &names.uploads_bucket,
            clock.clone(),
        )),
        jobs: jobs.clone(),
        ledger: jobs.clone(),
        runtime_settings: jobs,
        fanout_queue: TypedQueue::new(queue(&names.fanout_queue_url, "fanout")),
        chunk_queue: TypedQueue::new(queue(&names.chunk_queue_url, "chunks")),
        chunk_dlq: TypedQueue::new(queue(&names.chunk_dlq_url, "chunks-dlq")),
        events: Arc::new(SnsEvents::new(clients.sns.clone(), &names.events_topic_arn)),
        webhooks: Arc::new(DynamoWebhooks::new(
            clients.dynamodb.clone(),
            &names.jobs_table,
            Arc::new(KmsSealer::new(
                clients.kms.clone(),
                &names.webhook_secrets_key,
            )),
        )),
        webhook_queue: TypedQueue::new(queue(&names.webhook_queue_url, "webhooks")),
        health: Arc::new(crate::ports::AlwaysHealthy),
        clock,
        sources: Default::default(),
    }
}

/// Whether `endpoint` is a loopback URL (127.0.0.0/8, ::1, localhost).
pub fn is_loopback_endpoint(endpoint: &str) -> bool {
    let rest = endpoint
        .strip_prefix("http://")
        .or_else(|| endpoint.strip_prefix("https://"))
        .unwrap_or(endpoint);
    let authority = rest.split('/').next().unwrap_or_default();
    let host = if let Some(v6) = authority.strip_prefix('[') {
        v6.split(']').next().unwrap_or_default()
    } else {
        authority.split(':').next().unwrap_or_default()
    };
    host.eq_ignore_ascii_case("localhost")
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// Reads one item by key, strongly consistently.
pub(crate) async fn get_item(
    ddb: &aws_sdk_dynamodb::Client,
    table: &str,
    key: items::Item,
) -> crate::StoreResult<Option<items::Item>> {
    Ok(ddb
        .get_item()
        .table_name(table)
        .set_key(Some(key))
        .consistent_read(true)
        .send()
        .await
        .map_err(|e| sdk_error::classify("GetItem", e))?
        .item)
}

/// Reads items by key (consistently), 100 keys a request, asking again with backoff for
/// the keys DynamoDB leaves unprocessed (it does so when throttled, and answers 200).
pub(crate) async fn batch_get(
    ddb: &aws_sdk_dynamodb::Client,
    table: &str,
    keys: Vec<items::Item>,
) -> crate::StoreResult<Vec<items::Item>> {
    use std::collections::HashMap;

    use aws_sdk_dynamodb::types::KeysAndAttributes;

    use crate::StoreError;

    const MAX_KEYS: usize = 100;
    const MAX_ROUNDS: u32 = 10;
    let mut found = Vec::with_capacity(keys.len());
    for batch in keys.chunks(MAX_KEYS) {
        let request = KeysAndAttributes::builder()
            .set_keys(Some(batch.to_vec()))
            .consistent_read(true)
            .build()
            .map_err(|e| StoreError::internal(e.to_string()))?;
        let mut pending = Some(HashMap::from([(table.to_owned(), request)]));
        let mut round = 0u32;
        while let Some(items) = pending.take().filter(|p| !p.is_empty()) {
            round += 1;
            if round > MAX_ROUNDS {
                return Err(StoreError::unavailable(
                    "BatchGetItem kept returning unprocessed keys",
                ));
            }
            if round > 1 {
                tokio::time::sleep(std::time::Duration::from_millis(50 << round.min(6))).await;
            }
            let out = ddb
                .batch_get_item()
                .set_request_items(Some(items))
                .send()
                .await
                .map_err(|e| sdk_error::classify("BatchGetItem", e))?;
            found.extend(
                out.responses
                    .unwrap_or_default()
                    .remove(table)
                    .unwrap_or_default(),
            );
            pending = out.unprocessed_keys;
        }
    }
    Ok(found)
}
