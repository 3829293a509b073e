//! Creates the AWS resources on a *local* endpoint (an emulator), with the same shapes and
//! numbers Terraform uses: tables with their GSIs and TTL, queues with redrive to their
//! dead-letter queues, the topic. It refuses any endpoint that is not loopback: creating
//! real infrastructure is Terraform's job.

use std::collections::HashMap;

use aws_sdk_dynamodb::types::{
    AttributeDefinition, BillingMode, GlobalSecondaryIndex, KeySchemaElement, KeyType, Projection,
    ProjectionType, ScalarAttributeType, StreamSpecification, StreamViewType,
    TimeToLiveSpecification,
};
use aws_sdk_sqs::types::QueueAttributeName;

use super::sdk_error::classify;
use super::{is_loopback_endpoint, AwsClients, AwsNames};
use crate::config::Settings;
use crate::error::{StoreError, StoreResult};

/// Resource names derive from one prefix, as Terraform derives them from its `name` variable.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ResourceNames {
    pub prefix: String,
}

impl ResourceNames {
    pub fn catalog_table(&self) -> String {
        format!("{}-catalog", self.prefix)
    }
    pub fn jobs_table(&self) -> String {
        format!("{}-jobs", self.prefix)
    }
    pub fn queue(&self, name: &str) -> String {
        format!("{}-{name}", self.prefix)
    }
    pub fn topic(&self) -> String {
        format!("{}-job-events", self.prefix)
    }
    pub fn uploads_bucket(&self) -> String {
        format!("{}-uploads", self.prefix)
    }
    /// The webhook secrets key's alias (Terraform's `aws_kms_alias.webhook_secrets`).
    pub fn webhook_secrets_alias(&self) -> String {
        format!("alias/{}-webhook-secrets", self.prefix)
    }
}

#[derive(Clone, Debug)]
pub struct Bootstrapped {
    pub names: AwsNames,
    pub fanout_dlq_url: String,
}

fn internal(e: impl std::fmt::Display) -> StoreError {
    StoreError::internal(e.to_string())
}

/// Creates (or finds) every resource under `prefix` on the local `endpoint`.
pub async fn bootstrap(
    clients: &AwsClients,
    endpoint: &str,
    names: &ResourceNames,
    settings: &Settings,
) -> StoreResult<Bootstrapped> {
    if !is_loopback_endpoint(endpoint) {
        return Err(StoreError::Invalid(format!(
            "bootstrap only creates resources on a local endpoint, not {endpoint}; use Terraform for AWS"
        )));
    }
    // The catalog's stream feeds the rules' estate follower (as in terraform/dynamodb.tf).
    create_table(clients, &names.catalog_table(), &["gsi1"], true).await?;
    create_table(clients, &names.jobs_table(), &["gsi1", "gsi2"], false).await?;
    match clients
        .dynamodb
        .update_time_to_live()
        .table_name(names.jobs_table())
        .time_to_live_specification(
            TimeToLiveSpecification::builder()
                .enabled(true)
                .attribute_name("expiresAt")
                .build()
                .map_err(internal)?,
        )
        .send()
        .await
    {
        Ok(_) => {}
        // Already enabled by an earlier bootstrap.
        Err(e) if format!("{e:?}").contains("TimeToLive is already enabled") => {}
        Err(e) => return Err(classify("UpdateTimeToLive", e)),
    }
    let fanout_dlq = create_queue(clients, &names.queue("fanout-dlq"), settings, None).await?;
    let fanout = create_queue(clients, &names.queue("fanout"), settings, Some(&fanout_dlq)).await?;
    let chunk_dlq = create_queue(clients, &names.queue("chunks-dlq"), settings, None).await?;
    let chunks = create_queue(clients, &names.queue("chunks"), settings, Some(&chunk_dlq)).await?;
    let webhooks_dlq = create_queue(clients, &names.queue("webhooks-dlq"), settings, None).await?;
    let webhooks = create_queue_with(
        clients,
        &names.queue("webhooks"),
        settings.webhook_visibility_timeout,
        settings.max_receive_count,
        Some(&webhooks_dlq),
    )
    .await?;
    let topic = clients
        .sns
        .create_topic()
        .name(names.topic())
        .send()
        .await
        .map_err(|e| classify("CreateTopic", e))?
        .topic_arn
        .ok_or_else(|| internal("CreateTopic returned no ARN"))?;
    // The webhook queue hears every event, raw (the event JSON is the message body).
    clients
        .sns
        .subscribe()
        .topic_arn(&topic)
        .protocol("sqs")
        .endpoint(queue_arn(clients, &webhooks).await?)
        .attributes("RawMessageDelivery", "true")
        .send()
        .await
        .map_err(|e| classify("Subscribe", e))?;
    let bucket = create_uploads_bucket(clients, &names.uploads_bucket(), &fanout).await?;
    let secrets_key = create_key(clients, &names.webhook_secrets_alias()).await?;
    Ok(Bootstrapped {
        names: AwsNames {
            catalog_table: names.catalog_table(),
            jobs_table: names.jobs_table(),
            fanout_queue_url: fanout,
            chunk_queue_url: chunks,
            chunk_dlq_url: chunk_dlq.clone(),
            events_topic_arn: topic,
            webhook_queue_url: webhooks,
            uploads_bucket: bucket,
            webhook_secrets_key: secrets_key,
        },
        fanout_dlq_url: fanout_dlq,
    })
}

/// The ARN of the symmetric key under `alias`, created (with the alias) when there is none.
async fn create_key(clients: &AwsClients, alias: &str) -> StoreResult<String> {
    match clients.kms.describe_key().key_id(alias).send().await {
        Ok(found) => {
            if let Some(arn) = found.key_metadata.and_then(|m| m.arn) {
                return Ok(arn);
            }
        }
        Err(e)
            if e.as_service_error()
                .is_some_and(|e| e.is_not_found_exception()) => {}
        Err(e) => return Err(classify("DescribeKey", e)),
    }
    let created = clients
        .kms
        .create_key()
        .description("webhook signing secrets (envelope keys)")
        .send()
        .await
        .map_err(|e| classify("CreateKey", e))?
        .key_metadata
        .ok_or_else(|| internal("CreateKey returned no key"))?;
    clients
        .kms
        .create_alias()
        .alias_name(alias)
        .target_key_id(created.key_id())
        .send()
        .await
        .map_err(|e| classify("CreateAlias", e))?;
    created
        .arn
        .ok_or_else(|| internal("CreateKey returned no ARN"))
}

/// The imports' bucket, its object-created events under `imports/` sent to the fanout queue
/// (as terraform/s3.tf does).
async fn create_uploads_bucket(
    clients: &AwsClients,
    bucket: &str,
    fanout_queue_url: &str,
) -> StoreResult<String> {
    use aws_sdk_s3::types::{
        Event, FilterRule, FilterRuleName, NotificationConfiguration,
        NotificationConfigurationFilter, QueueConfiguration, S3KeyFilter,
    };
    match clients.s3.create_bucket().bucket(bucket).send().await {
        Ok(_) => {}
        Err(e)
            if e.as_service_error().is_some_and(|s| {
                s.is_bucket_already_owned_by_you() || s.is_bucket_already_exists()
            }) => {}
        Err(e) => return Err(classify("CreateBucket", e)),
    }
    let imports = NotificationConfigurationFilter::builder()
        .key(
            S3KeyFilter::builder()
                .filter_rules(
                    FilterRule::builder()
                        .name(FilterRuleName::Prefix)
                        .value("imports/")
                        .build(),
                )
                .build(),
        )
        .build();
    let to_fanout = QueueConfiguration::builder()
        .queue_arn(queue_arn(clients, fanout_queue_url).await?)
        .events(Event::from("s3:ObjectCreated:*"))
        .filter(imports)
        .build()
        .map_err(internal)?;
    clients
        .s3
        .put_bucket_notification_configuration()
        .bucket(bucket)
        .notification_configuration(
            NotificationConfiguration::builder()
                .queue_configurations(to_fanout)
                .build(),
        )
        .send()
        .await
        .map_err(|e| classify("PutBucketNotificationConfiguration", e))?;
    // S3 tells the queue with a test event that it may send to it; fanout ignores one, but
    // a fresh queue is kept empty for whoever reads it first.
    let received = clients
        .sqs
        .receive_message()
        .queue_url(fanout_queue_url)
        .max_number_of_messages(10)
        .send()
        .await
        .map_err(|e| classify("ReceiveMessage", e))?;
    for message in received.messages.unwrap_or_default() {
        let test_event = message
            .body
            .as_deref()
            .is_some_and(|b| b.contains("\"s3:TestEvent\""));
        if let (true, Some(receipt)) = (test_event, message.receipt_handle) {
            clients
                .sqs
                .delete_message()
                .queue_url(fanout_queue_url)
                .receipt_handle(receipt)
                .send()
                .await
                .map_err(|e| classify("DeleteMessage", e))?;
        }
    }
    Ok(bucket.to_owned())
}

async fn create_table(
    clients: &AwsClients,
    table: &str,
    indexes: &[&str],
    stream: bool,
) -> StoreResult<()> {
    let attr = |name: &str| {
        AttributeDefinition::builder()
            .attribute_name(name)
            .attribute_type(ScalarAttributeType::S)
            .build()
            .map_err(internal)
    };
    let key = |name: &str, kind: KeyType| {
        KeySchemaElement::builder()
            .attribute_name(name)
            .key_type(kind)
            .build()
            .map_err(internal)
    };
    let mut request = clients
        .dynamodb
        .create_table()
        .table_name(table)
        .billing_mode(BillingMode::PayPerRequest)
        .attribute_definitions(attr("pk")?)
        .attribute_definitions(attr("sk")?)
        .key_schema(key("pk", KeyType::Hash)?)
        .key_schema(key("sk", KeyType::Range)?);
    for index in indexes {
        let (pk, sk) = (format!("{index}pk"), format!("{index}sk"));
        request = request
            .attribute_definitions(attr(&pk)?)
            .attribute_definitions(attr(&sk)?)
            .global_secondary_indexes(
                GlobalSecondaryIndex::builder()
                    .index_name(*index)
                    .key_schema(key(&pk, KeyType::Hash)?)
                    .key_schema(key(&sk, KeyType::Range)?)
                    // Keys only: paging reads ~100 bytes an item, and counter updates of the
                    // base item never write to the index.
                    .projection(
                        Projection::builder()
                            .projection_type(ProjectionType::KeysOnly)
                            .build(),
                    )
                    .build()
                    .map_err(internal)?,
            );
    }
    if stream {
        request = request.stream_specification(
            StreamSpecification::builder()
                .stream_enabled(true)
                .stream_view_type(StreamViewType::NewAndOldImages)
                .build()
                .map_err(internal)?,
        );
    }
    match request.send().await {
        Ok(_) => Ok(()),
        Err(e)
            if e.as_service_error()
                .is_some_and(|s| s.is_resource_in_use_exception()) =>
        {
            Ok(())
        }
        Err(e) => Err(classify("CreateTable", e)),
    }
}

async fn queue_arn(clients: &AwsClients, url: &str) -> StoreResult<String> {
    clients
        .sqs
        .get_queue_attributes()
        .queue_url(url)
        .attribute_names(QueueAttributeName::QueueArn)
        .send()
        .await
        .map_err(|e| classify("GetQueueAttributes", e))?
        .attributes
        .and_then(|mut a| a.remove(&QueueAttributeName::QueueArn))
        .ok_or_else(|| internal("queue without an ARN"))
}

async fn create_queue(
    clients: &AwsClients,
    name: &str,
    settings: &Settings,
    dead_letter_url: Option<&str>,
) -> StoreResult<String> {
    create_queue_with(
        clients,
        name,
        settings.visibility_timeout,
        settings.max_receive_count,
        dead_letter_url,
    )
    .await
}

async fn create_queue_with(
    clients: &AwsClients,
    name: &str,
    visibility_timeout: std::time::Duration,
    max_receive_count: u32,
    dead_letter_url: Option<&str>,
) -> StoreResult<String> {
    let mut attributes = HashMap::from([(
        QueueAttributeName::VisibilityTimeout,
        visibility_timeout.as_secs().max(1).to_string(),
    )]);
    if let Some(dlq_url) = dead_letter_url {
        let dlq_arn = queue_arn(clients, dlq_url).await?;
        attributes.insert(
            QueueAttributeName::RedrivePolicy,
            serde_json::json!({
                "deadLetterTargetArn": dlq_arn,
                "maxReceiveCount": max_receive_count,
            })
            .to_string(),
        );
    } else {
        // Dead letters are kept as long as SQS allows: 14 days.
        attributes.insert(QueueAttributeName::MessageRetentionPeriod, "1209600".into());
    }
    clients
        .sqs
        .create_queue()
        .queue_name(name)
        .set_attributes(Some(attributes))
        .send()
        .await
        .map_err(|e| classify("CreateQueue", e))?
        .queue_url
        .ok_or_else(|| internal("CreateQueue returned no URL"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_loopback_endpoints_are_local() {
        assert!(is_loopback_endpoint("http://127.0.0.1:5000"));
        assert!(is_loopback_endpoint("http://localhost:4566/"));
        assert!(is_loopback_endpoint("http://[::1]:5000"));
        assert!(is_loopback_endpoint("http://127.9.9.9"));
        assert!(!is_loopback_endpoint(
            "https://dynamodb.eu-west-1.amazonaws.com"
        ));
        assert!(!is_loopback_endpoint("http://10.0.0.5:5000"));
        assert!(!is_loopback_endpoint("http://127.0.0.1.example.com"));
    }
}
