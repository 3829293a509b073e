//! Brings items written by an earlier release forward, where reading them as they are is
//! not enough. Idempotent and safe while the API and the pipeline run: each item is
//! updated on condition that it still lacks what it is given.

use std::collections::HashMap;

use aws_sdk_dynamodb::error::SdkError;
use aws_sdk_dynamodb::operation::update_item::UpdateItemError;
use aws_sdk_dynamodb::types::AttributeValue;
use serde::Serialize;

use super::items::*;
use super::sdk_error::classify;
use super::sealing::KmsSealer;
use super::webhooks::SUBSCRIPTION_SK;
use super::{AwsClients, AwsNames};
use crate::domain::{BrandId, OfferId, SubscriptionId};
use crate::error::{StoreError, StoreResult};
use bulklink_core::sealing::{Stored, SEALED_PREFIX};

/// What an upgrade changed.
#[derive(Debug, Default, Serialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct Upgraded {
    /// Offers given their brand-index keys (`GET /offers` lists an offer only once it has
    /// them; offers created by this release have them from the start).
    pub offers_indexed: u64,
    /// Webhook subscriptions whose signing secrets were stored in plaintext (before secrets
    /// were sealed) and are now sealed under the webhook secrets key.
    pub secrets_sealed: u64,
    /// Standing rules copied into the rule registry the drift watch reads (rules set by
    /// this release are there from the start).
    pub rules_registered: u64,
}

/// Scans the catalog table for offers without brand-index keys and gives them theirs, and
/// for rules missing from the rule registry and registers them; and the jobs table for
/// webhook subscriptions with plaintext secrets and seals them.
pub async fn upgrade(clients: &AwsClients, names: &AwsNames) -> StoreResult<Upgraded> {
    let mut upgraded = index_offers(clients, names).await?;
    upgraded.rules_registered = register_rules(clients, names).await?;
    upgraded.secrets_sealed = seal_secrets(clients, names).await?;
    Ok(upgraded)
}

/// Copies each rule into the rule registry (`RULES / OFFER#id`), on condition that the
/// registry has no copy yet and the rule is still the one read (set again or removed since:
/// that write kept the registry right).
async fn register_rules(clients: &AwsClients, names: &AwsNames) -> StoreResult<u64> {
    use aws_sdk_dynamodb::types::{ConditionCheck, Put, TransactWriteItem};
    let ddb = &clients.dynamodb;
    let table = &names.catalog_table;
    let mut registered = 0;
    let mut start: Option<Item> = None;
    loop {
        let page = ddb
            .scan()
            .table_name(table)
            .filter_expression("sk = :r")
            .expression_attribute_values(":r", s(RULE_SK))
            .projection_expression("pk, brandId, #w, setAt")
            .expression_attribute_names("#w", "where")
            .set_exclusive_start_key(start.take())
            .send()
            .await
            .map_err(|e| classify("Scan", e))?;
        for item in page.items.unwrap_or_default() {
            let (Some(AttributeValue::S(pk)), Some(set_at)) = (item.get("pk"), item.get("setAt"))
            else {
                return Err(StoreError::internal(format!(
                    "a rule item without pk or setAt: {item:?}"
                )));
            };
            let internal =
                |e: aws_sdk_dynamodb::error::BuildError| StoreError::internal(e.to_string());
            let still = ConditionCheck::builder()
                .table_name(table)
                .set_key(Some(key(pk.clone(), RULE_SK)))
                .condition_expression("setAt = :set")
                .expression_attribute_values(":set", set_at.clone())
                .build()
                .map_err(internal)?;
            let mut copy = item.clone();
            copy.insert("pk".to_owned(), s(RULES_PK));
            copy.insert("sk".to_owned(), s(pk.clone()));
            let put = Put::builder()
                .table_name(table)
                .set_item(Some(copy))
                .condition_expression("attribute_not_exists(pk)")
                .build()
                .map_err(internal)?;
            let result = ddb
                .transact_write_items()
                .transact_items(TransactWriteItem::builder().condition_check(still).build())
                .transact_items(TransactWriteItem::builder().put(put).build())
                .send()
                .await;
            match result {
                Ok(_) => registered += 1,
                Err(e) => {
                    let reasons = super::sdk_error::cancellation(e)?;
                    if !reasons
                        .iter()
                        .any(|r| super::sdk_error::condition_failed(Some(r)))
                    {
                        return Err(super::sdk_error::retryable_cancel(&reasons));
                    }
                }
            }
        }
        match page.last_evaluated_key {
            Some(key) if !key.is_empty() => start = Some(key),
            _ => return Ok(registered),
        }
    }
}

async fn index_offers(clients: &AwsClients, names: &AwsNames) -> StoreResult<Upgraded> {
    let ddb = &clients.dynamodb;
    let table = &names.catalog_table;
    let mut upgraded = Upgraded::default();
    let mut start: Option<Item> = None;
    loop {
        let page = ddb
            .scan()
            .table_name(table)
            .filter_expression("sk = :o AND attribute_not_exists(gsi1pk)")
            .expression_attribute_values(":o", s(OFFER_SK))
            .projection_expression("pk, brandId")
            .set_exclusive_start_key(start.take())
            .send()
            .await
            .map_err(|e| classify("Scan", e))?;
        for item in page.items.unwrap_or_default() {
            let (Some(AttributeValue::S(pk)), Some(AttributeValue::S(brand))) =
                (item.get("pk"), item.get("brandId"))
            else {
                return Err(StoreError::internal(format!(
                    "an offer item without pk or brandId: {item:?}"
                )));
            };
            let offer: OfferId = pk
                .strip_prefix("OFFER#")
                .ok_or_else(|| StoreError::internal(format!("bad offer key '{pk}'")))?
                .parse()?;
            let brand: BrandId = brand.parse()?;
            let result = ddb
                .update_item()
                .table_name(table)
                .set_key(Some(key(pk.clone(), OFFER_SK)))
                .update_expression("SET gsi1pk = :b, gsi1sk = :s")
                .condition_expression("attribute_exists(pk) AND attribute_not_exists(gsi1pk)")
                .set_expression_attribute_values(Some(HashMap::from([
                    (":b".to_owned(), s(brand_key(brand))),
                    (":s".to_owned(), s(brand_index_offer_sk(offer))),
                ])))
                .send()
                .await;
            match result {
                Ok(_) => upgraded.offers_indexed += 1,
                // Deleted, or given its keys by another upgrade, since the scan read it.
                Err(SdkError::ServiceError(e))
                    if matches!(e.err(), UpdateItemError::ConditionalCheckFailedException(_)) => {}
                Err(e) => return Err(classify("UpdateItem", e)),
            }
        }
        match page.last_evaluated_key {
            Some(key) if !key.is_empty() => start = Some(key),
            _ => return Ok(upgraded),
        }
    }
}

/// Seals each subscription's plaintext secrets (`secret`, `previousSecret`), on condition
/// that they are still the values read (a rotation meanwhile stored sealed ones).
async fn seal_secrets(clients: &AwsClients, names: &AwsNames) -> StoreResult<u64> {
    let ddb = &clients.dynamodb;
    let sealer = KmsSealer::new(clients.kms.clone(), &names.webhook_secrets_key);
    let mut sealed = 0;
    let mut start: Option<Item> = None;
    loop {
        let page = ddb
            .scan()
            .table_name(&names.jobs_table)
            .filter_expression(
                "sk = :w AND (NOT begins_with(secret, :sealed) OR \
                 (attribute_exists(previousSecret) AND NOT begins_with(previousSecret, :sealed)))",
            )
            .expression_attribute_values(":w", s(SUBSCRIPTION_SK))
            .expression_attribute_values(":sealed", s(format!("{}.", SEALED_PREFIX)))
            .projection_expression("pk, id, secret, previousSecret")
            .set_exclusive_start_key(start.take())
            .send()
            .await
            .map_err(|e| classify("Scan", e))?;
        for item in page.items.unwrap_or_default() {
            let text = |name: &str| match item.get(name) {
                Some(AttributeValue::S(v)) => Some(v.clone()),
                _ => None,
            };
            let (Some(pk), Some(id), Some(secret)) = (text("pk"), text("id"), text("secret"))
            else {
                return Err(StoreError::internal(format!(
                    "a webhook subscription item without pk, id or secret: {}",
                    text("pk").unwrap_or_default()
                )));
            };
            let id: SubscriptionId = id.parse()?;
            let seal = |stored: String| {
                let sealer = &sealer;
                async move {
                    if Stored::is_sealed(&stored) {
                        return Ok::<_, StoreError>(stored);
                    }
                    sealer.seal(id, &sealer.open(id, &stored).await?).await
                }
            };
            let mut update = ddb
                .update_item()
                .table_name(&names.jobs_table)
                .set_key(Some(key(pk, SUBSCRIPTION_SK)))
                .update_expression("SET secret = :new")
                .condition_expression("secret = :old")
                .expression_attribute_values(":old", s(secret.clone()))
                .expression_attribute_values(":new", s(seal(secret).await?));
            if let Some(previous) = text("previousSecret") {
                update = update
                    .update_expression("SET secret = :new, previousSecret = :newPrevious")
                    .condition_expression("secret = :old AND previousSecret = :oldPrevious")
                    .expression_attribute_values(":oldPrevious", s(previous.clone()))
                    .expression_attribute_values(":newPrevious", s(seal(previous).await?));
            }
            match update.send().await {
                Ok(_) => sealed += 1,
                // Rotated or deleted since the scan read it: what is stored now is sealed.
                Err(SdkError::ServiceError(e))
                    if matches!(e.err(), UpdateItemError::ConditionalCheckFailedException(_)) => {}
                Err(e) => return Err(classify("UpdateItem", e)),
            }
        }
        match page.last_evaluated_key {
            Some(key) if !key.is_empty() => start = Some(key),
            _ => return Ok(sealed),
        }
    }
}
