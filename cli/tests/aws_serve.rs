//! `bulklink serve --backend aws` as a real process against moto: a job over HTTP, the
//! tables checked with the AWS SDK afterwards, and the signed webhook delivered from the
//! webhook queue the topic feeds.

use std::collections::HashMap;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use aws_sdk_dynamodb::types::{AttributeValue, KeysAndAttributes};
use bulklink::client::ApiClient;
use bulklink::receiver::Receiver;
use bulklink_aws::{self as aws, AwsClients, ResourceNames};
use bulklink_core::domain::{BrandId, JobStatus, Offer, OfferId};
use bulklink_core::Settings;
use serde_json::{json, Value};

use crate::support::*;

/// Kills the server when the test ends, however it ends.
struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_on_aws_links_every_location_and_delivers_the_signed_webhook() {
    let endpoint = emulator().endpoint().to_owned();
    let settings = Settings::default();
    let clients = AwsClients::load(Some(&endpoint)).await;
    let prefix = format!("s{}", &uuid::Uuid::new_v4().simple().to_string()[..12]);
    let names = aws::bootstrap(&clients, &endpoint, &ResourceNames { prefix }, &settings)
        .await
        .unwrap()
        .names;
    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("bulklink.key");
    let key = key.to_str().unwrap();
    let mut env: HashMap<&str, &str> = HashMap::from(names.env());
    env.insert("AWS_ENDPOINT_URL", endpoint.as_str());
    let _server = Server(
        Command::new(env!("CARGO_BIN_EXE_bulklink"))
            .args([
                "serve",
                "--backend",
                "aws",
                "--listen",
                &format!("127.0.0.1:{port}"),
                "--token-key",
                key,
                "--webhook-allow-cidr",
                "127.0.0.0/8",
            ])
            .envs(&env)
            .env_remove("AWS_ACCESS_KEY_ID")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let health = ApiClient::new(&base).unwrap();
    eventually(Duration::from_secs(30), "the server to answer", || async {
        health.get::<Value>("/healthz").await.is_ok()
    })
    .await;

    // Tokens from `bulklink token` with the server's key: the brand's, and an admin's.
    let brand = bulklink_core::domain::BrandId::new_random().to_string();
    let token = |role: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_bulklink"))
            .args(["token", "--token-key", key])
            .args(role)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap().trim().to_owned()
    };
    let brand_token = token(&["--brand", &brand]);
    let admin_token = token(&["--admin"]);
    let api = ApiClient::new(&base).unwrap().with_token(&brand_token);
    let admin = ApiClient::new(&base).unwrap().with_token(&admin_token);

    let seeded = Command::new(env!("CARGO_BIN_EXE_bulklink"))
        .args(["seed", "--api", &base, "--locations", "500"])
        .env("BULKLINK_TOKEN", &brand_token)
        .output()
        .unwrap();
    assert!(
        seeded.status.success(),
        "{}",
        String::from_utf8_lossy(&seeded.stderr)
    );
    let seeded: Value = serde_json::from_slice(&seeded.stdout).unwrap();
    let offer: OfferId = seeded["offerId"].as_str().unwrap().parse().unwrap();
    assert_eq!(
        seeded["brandId"],
        brand.as_str(),
        "seeded as the token's brand"
    );

    let mut receiver = Receiver::start().await.unwrap();
    let subscription: Value = api
        .post(
            "/webhooks",
            &json!({ "url": receiver.url, "filter": outcomes() }),
        )
        .await
        .unwrap();
    receiver
        .trust(subscription["secret"].as_str().unwrap())
        .unwrap();
    // An administrator may subscribe for another brand; that brand's filter keeps it quiet.
    let mut other_brand = Receiver::start().await.unwrap();
    admin
        .post::<Value>(
            "/webhooks",
            &json!({ "url": other_brand.url, "filter": { "brandId": bulklink_core::domain::BrandId::new_random() } }),
        )
        .await
        .unwrap();
    // SNS stays the event bus: an SQS subscriber of the topic (what an AWS-native consumer
    // would add) shows the attributes every publish carries.
    let probe = attribute_probe(&clients, &names.events_topic_arn).await;
    let job = api.create_job(offer, None, None).await.unwrap();
    let job = api
        .wait_terminal(
            job.id,
            Duration::from_millis(200),
            Duration::from_secs(180),
            |_| {},
        )
        .await
        .unwrap();
    assert_eq!(job.status, JobStatus::Succeeded);
    assert_eq!(job.counters.counters.linked, 500);

    let delivery = tokio::time::timeout(Duration::from_secs(30), receiver.next())
        .await
        .expect("a delivery within 30 s")
        .unwrap();
    assert!(delivery.verified.is_ok(), "signed: {:?}", delivery.verified);
    assert_eq!(
        delivery
            .header("user-agent")
            .map(|ua| ua.starts_with("bulklink/")),
        Some(true)
    );
    let payload = delivery.payload().unwrap();
    assert_eq!(payload["type"], "job.succeeded");
    let event = delivery.event().unwrap();
    assert_eq!(event["jobId"], job.id.to_string());
    assert_eq!(event["counters"]["linked"], 500);

    let carried = probe_envelope(&clients, &probe).await;
    let attr = |name: &str| carried["MessageAttributes"][name]["Value"].clone();
    assert_eq!(attr("eventType"), "job.succeeded");
    assert_eq!(attr("jobId"), job.id.to_string());
    assert_eq!(attr("brandId"), brand.as_str());
    assert_eq!(attr("offerId"), offer.to_string());
    assert!(
        other_brand.messages.try_recv().is_err(),
        "the subscription filtered to another brand received nothing"
    );
    receiver.stop();
    other_brand.stop();

    // The tables themselves, read with the SDK: the links are spread over the offer's
    // eight link partitions, none left beside the offer item.
    let ddb = &clients.dynamodb;
    let table = &names.catalog_table;
    let links_under = |pk: String| async move {
        let mut links = 0;
        let mut start = None;
        loop {
            let page = ddb
                .query()
                .table_name(table)
                .key_condition_expression("pk = :o AND begins_with(sk, :l)")
                .expression_attribute_values(":o", AttributeValue::S(pk.clone()))
                .expression_attribute_values(":l", AttributeValue::S("LOC#".into()))
                .set_exclusive_start_key(start)
                .send()
                .await
                .unwrap();
            links += page.count;
            start = page.last_evaluated_key;
            if start.is_none() {
                return links;
            }
        }
    };
    assert_eq!(links_under(format!("OFFER#{offer}")).await, 0);
    let mut per_shard = Vec::new();
    for shard in 0..8 {
        per_shard.push(links_under(format!("OFFER#{offer}#{shard}")).await);
    }
    assert_eq!(
        per_shard.iter().sum::<i32>(),
        500,
        "Link items: {per_shard:?}"
    );
    assert!(
        per_shard.iter().all(|n| *n >= 30),
        "500 links spread over 8 partitions: {per_shard:?}"
    );
    let offer_item = ddb
        .get_item()
        .table_name(&names.catalog_table)
        .key("pk", AttributeValue::S(format!("OFFER#{offer}")))
        .key("sk", AttributeValue::S("#OFFER".into()))
        .send()
        .await
        .unwrap()
        .item
        .unwrap();
    assert_eq!(
        offer_item["locationsTotal"],
        AttributeValue::N("500".into())
    );

    let mut keys = Vec::new();
    let mut start = None;
    loop {
        let page = ddb
            .query()
            .table_name(&names.catalog_table)
            .index_name("gsi1")
            // The brand's locations (its offers and rules share the index).
            .key_condition_expression("gsi1pk = :b AND begins_with(gsi1sk, :loc)")
            .expression_attribute_values(":b", AttributeValue::S(format!("BRAND#{brand}")))
            .expression_attribute_values(":loc", AttributeValue::S("LOC#".into()))
            .set_exclusive_start_key(start)
            .send()
            .await
            .unwrap();
        for item in page.items.unwrap_or_default() {
            keys.push(HashMap::from([
                ("pk".to_owned(), item["pk"].clone()),
                ("sk".to_owned(), item["sk"].clone()),
            ]));
        }
        start = page.last_evaluated_key;
        if start.is_none() {
            break;
        }
    }
    assert_eq!(keys.len(), 500);
    let mut with_offer = 0;
    for batch in keys.chunks(100) {
        let out = ddb
            .batch_get_item()
            .request_items(
                &names.catalog_table,
                KeysAndAttributes::builder()
                    .set_keys(Some(batch.to_vec()))
                    .build()
                    .unwrap(),
            )
            .send()
            .await
            .unwrap();
        assert!(out.unprocessed_keys.unwrap_or_default().is_empty());
        with_offer += out.responses.unwrap()[&names.catalog_table]
            .iter()
            .filter(|item| item["hasOffer"] == AttributeValue::Bool(true))
            .count();
    }
    assert_eq!(with_offer, 500, "every location hasOffer = true");
}

/// An SQS queue subscribed to the topic (SNS envelopes, not raw): returns its URL.
async fn attribute_probe(clients: &AwsClients, topic: &str) -> String {
    let name = format!("probe-{}", &uuid::Uuid::new_v4().simple().to_string()[..12]);
    let url = clients
        .sqs
        .create_queue()
        .queue_name(&name)
        .send()
        .await
        .unwrap()
        .queue_url
        .unwrap();
    let arn = clients
        .sqs
        .get_queue_attributes()
        .queue_url(&url)
        .attribute_names(aws_sdk_sqs::types::QueueAttributeName::QueueArn)
        .send()
        .await
        .unwrap()
        .attributes
        .unwrap()[&aws_sdk_sqs::types::QueueAttributeName::QueueArn]
        .clone();
    clients
        .sns
        .subscribe()
        .topic_arn(topic)
        .protocol("sqs")
        .endpoint(arn)
        // What an AWS-native consumer of outcomes does: a filter policy on the attribute.
        .attributes(
            "FilterPolicy",
            r#"{"eventType":["job.succeeded","job.completed_with_errors","job.failed","job.cancelled"]}"#,
        )
        .send()
        .await
        .unwrap();
    url
}

async fn probe_envelope(clients: &AwsClients, url: &str) -> Value {
    let out = clients
        .sqs
        .receive_message()
        .queue_url(url)
        .wait_time_seconds(5)
        .send()
        .await
        .unwrap();
    let message = out
        .messages
        .unwrap_or_default()
        .pop()
        .expect("the probe got the event");
    serde_json::from_str(message.body().unwrap()).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upgrade_gives_offers_and_rules_of_an_earlier_release_their_index_keys_and_registry_copies_once(
) {
    let endpoint = emulator().endpoint().to_owned();
    let clients = AwsClients::load(Some(&endpoint)).await;
    let prefix = format!("u{}", &uuid::Uuid::new_v4().simple().to_string()[..12]);
    let names = aws::bootstrap(
        &clients,
        &endpoint,
        &ResourceNames { prefix },
        &Settings::default(),
    )
    .await
    .unwrap()
    .names;
    let ports = aws::ports(
        &clients,
        &names,
        bulklink_core::Clock::system(),
        Settings::default().link_shards,
    );
    let brand = BrandId::new_random();
    let new = Offer {
        id: OfferId::new_random(),
        brand_id: brand,
        name: "made by this release".into(),
        locations_total: 0,
        schedule: None,
    };
    ports.catalog.create_offer(&new).await.unwrap();
    // An offer item as the release before wrote it: no brand-index keys.
    let old = OfferId::new_random();
    clients
        .dynamodb
        .put_item()
        .table_name(&names.catalog_table)
        .item("pk", AttributeValue::S(format!("OFFER#{old}")))
        .item("sk", AttributeValue::S("#OFFER".into()))
        .item("brandId", AttributeValue::S(brand.to_string()))
        .item("name", AttributeValue::S("made before".into()))
        .item("locationsTotal", AttributeValue::N("0".into()))
        .send()
        .await
        .unwrap();
    let listed = || async {
        let page = ports
            .catalog
            .page_brand_offers(brand, None, 100)
            .await
            .unwrap();
        page.items.into_iter().map(|o| o.id).collect::<Vec<_>>()
    };
    assert_eq!(
        listed().await,
        vec![new.id],
        "the old offer is not listed yet"
    );

    let upgrade = || {
        let out = Command::new(env!("CARGO_BIN_EXE_bulklink"))
            .args(["upgrade", "--endpoint-url", &endpoint])
            .envs(names.env())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice::<Value>(&out.stdout).unwrap()
    };
    // A rule set by this release, and one as the release before wrote it: no copy in the
    // rule registry, so the drift watch does not see it yet.
    let rule_of = |offer| bulklink_core::domain::OfferRule {
        offer_id: offer,
        brand_id: brand,
        filter: bulklink_core::domain::LocationFilter::default(),
        set_at: chrono::DateTime::from_timestamp_millis(1_700_000_000_000).unwrap(),
    };
    ports.catalog.put_rule(&rule_of(new.id)).await.unwrap();
    clients
        .dynamodb
        .put_item()
        .table_name(&names.catalog_table)
        .item("pk", AttributeValue::S(format!("OFFER#{old}")))
        .item("sk", AttributeValue::S("#RULE".into()))
        .item("brandId", AttributeValue::S(brand.to_string()))
        .item(
            "where",
            AttributeValue::S(serde_json::to_string(&rule_of(old).filter).unwrap()),
        )
        .item("setAt", AttributeValue::N("1700000000000".into()))
        .item("gsi1pk", AttributeValue::S(format!("BRAND#{brand}")))
        .item("gsi1sk", AttributeValue::S(format!("RULE#{old}")))
        .send()
        .await
        .unwrap();
    let watched = || async {
        let page = ports.catalog.page_rules(None, 100).await.unwrap();
        page.items.into_iter().map(|w| w.rule).collect::<Vec<_>>()
    };
    assert_eq!(watched().await, vec![rule_of(new.id)]);

    assert_eq!(
        upgrade(),
        json!({ "offersIndexed": 1, "secretsSealed": 0, "rulesRegistered": 1 })
    );
    let mut both = vec![new.id, old];
    both.sort();
    assert_eq!(listed().await, both);
    assert_eq!(
        watched().await,
        both.iter().map(|o| rule_of(*o)).collect::<Vec<_>>()
    );
    assert_eq!(
        upgrade(),
        json!({ "offersIndexed": 0, "secretsSealed": 0, "rulesRegistered": 0 }),
        "nothing left to do"
    );
}
