//! Sharded links on DynamoDB: a new offer's links spread over `LINK_SHARDS` partitions, and
//! an offer of the release before (its links in its own partition, no shard count) keeps
//! working beside it — listed, linked, unlinked and left by a closing location.

use std::collections::HashMap;
use std::time::Duration;

use aws_sdk_dynamodb::types::AttributeValue;
use bulklink_core::domain::{
    BrandId, JobStatus, LinkedBy, LocationChange, LocationId, LocationStatus, OfferId,
};
use bulklink_core::ports::Ports;
use serde_json::json;

use crate::support::*;

/// Items under one partition key whose sort key begins `LOC#` that are links.
async fn links_under(env: &Env, pk: &str) -> Vec<LocationId> {
    let clients = env.aws_clients().unwrap();
    let table = &env.aws_names().unwrap().catalog_table;
    let mut ids = Vec::new();
    let mut start = None;
    loop {
        let page = clients
            .dynamodb
            .query()
            .table_name(table)
            .key_condition_expression("pk = :o AND begins_with(sk, :l)")
            .expression_attribute_values(":o", AttributeValue::S(pk.to_owned()))
            .expression_attribute_values(":l", AttributeValue::S("LOC#".into()))
            .set_exclusive_start_key(start)
            .send()
            .await
            .unwrap();
        for item in page.items.unwrap_or_default() {
            if item.contains_key("linkedBy") {
                let AttributeValue::S(sk) = &item["sk"] else {
                    panic!("sk")
                };
                ids.push(sk.trim_start_matches("LOC#").parse().unwrap());
            }
        }
        start = page.last_evaluated_key;
        if start.is_none() {
            return ids;
        }
    }
}

/// Every link of the offer through the port, `limit` a page.
async fn listed(ports: &Ports, offer: OfferId, limit: usize) -> Vec<LocationId> {
    let mut ids = Vec::new();
    let mut cursor = None;
    loop {
        let page = ports
            .catalog
            .page_offer_links(offer, cursor.as_ref(), limit)
            .await
            .unwrap();
        ids.extend(page.items.iter().map(|l| l.location_id));
        cursor = page.next;
        if cursor.is_none() {
            return ids;
        }
    }
}

/// An offer and `linked` links to the brand's locations written as the release before wrote
/// them: the offer item without `linkShards`, each Link under `OFFER#{offer}`, each
/// location marked (`offerIds`, `hasOffer`), the count on the offer.
async fn offer_of_the_release_before(env: &Env, brand: BrandId, linked: &[LocationId]) -> OfferId {
    let clients = env.aws_clients().unwrap();
    let table = &env.aws_names().unwrap().catalog_table;
    let offer = OfferId::new_random();
    let s = |v: String| AttributeValue::S(v);
    clients
        .dynamodb
        .put_item()
        .table_name(table)
        .set_item(Some(HashMap::from([
            ("pk".to_owned(), s(format!("OFFER#{offer}"))),
            ("sk".to_owned(), s("#OFFER".into())),
            ("brandId".to_owned(), s(brand.to_string())),
            (
                "name".to_owned(),
                s("made before links were sharded".into()),
            ),
            (
                "locationsTotal".to_owned(),
                AttributeValue::N(linked.len().to_string()),
            ),
            ("gsi1pk".to_owned(), s(format!("BRAND#{brand}"))),
            ("gsi1sk".to_owned(), s(format!("OFFER#{offer}"))),
        ])))
        .send()
        .await
        .unwrap();
    for id in linked {
        clients
            .dynamodb
            .put_item()
            .table_name(table)
            .set_item(Some(HashMap::from([
                ("pk".to_owned(), s(format!("OFFER#{offer}"))),
                ("sk".to_owned(), s(format!("LOC#{id}"))),
                ("linkedBy".to_owned(), s("direct".into())),
                (
                    "linkedAt".to_owned(),
                    AttributeValue::N("1700000000000".into()),
                ),
            ])))
            .send()
            .await
            .unwrap();
        clients
            .dynamodb
            .update_item()
            .table_name(table)
            .key("pk", s(format!("LOC#{id}")))
            .key("sk", s("#LOC".into()))
            .update_expression("SET hasOffer = :t ADD offerIds :o")
            .expression_attribute_values(":t", AttributeValue::Bool(true))
            .expression_attribute_values(":o", AttributeValue::Ss(vec![offer.to_string()]))
            .send()
            .await
            .unwrap();
    }
    offer
}

async fn total(ports: &Ports, offer: OfferId) -> u64 {
    let offer = ports.catalog.get_offer(offer).await.unwrap().unwrap();
    offer.locations_total
}

/// An unlink-all of `offer` through the API: it succeeds having unlinked exactly `linked`,
/// the offer counts none, and none of them carries an offer any more.
async fn unlink_all_exactly(
    pipeline: &bulklink::runtime::Runtime,
    api: &bulklink::client::ApiClient,
    offer: OfferId,
    linked: &[LocationId],
) {
    let unlink: serde_json::Value = api
        .post(&format!("/offers/{offer}/unlink-all-locations"), &json!({}))
        .await
        .unwrap();
    let job = wait_terminal(
        &pipeline.ports,
        unlink["id"].as_str().unwrap().parse().unwrap(),
        Duration::from_secs(120),
    )
    .await;
    assert_eq!(job.status, JobStatus::Succeeded, "{:?}", job.counters);
    assert_eq!(job.counters.unlinked, linked.len() as u64);
    assert_eq!(total(&pipeline.ports, offer).await, 0);
    for id in linked {
        let location = pipeline
            .ports
            .catalog
            .get_location(*id)
            .await
            .unwrap()
            .unwrap();
        assert!(!location.has_offer, "{id} still has an offer");
    }
}

/// A pipeline on `env`, an API client of the seeded brand, and the link-all of its offer
/// run to SUCCEEDED within `within`.
async fn linked_all(
    env: &Env,
    seeded: &bulklink_sqlite::SeededBrand,
    within: Duration,
) -> (
    bulklink::runtime::Runtime,
    bulklink::client::ApiClient,
    bulklink_core::domain::Job,
) {
    let pipeline = env.start(env.config(), |p| p).await;
    let api = pipeline
        .api_as(bulklink_http::auth::Role::Brand(seeded.brand_id))
        .unwrap();
    let job = api.create_job(seeded.offer_id, None, None).await.unwrap();
    let job = wait_terminal(&pipeline.ports, job.id, within).await;
    assert_eq!(job.status, JobStatus::Succeeded, "{:?}", job.counters);
    (pipeline, api, job)
}

async fn brand_ids(ports: &Ports, brand: BrandId) -> Vec<LocationId> {
    ports
        .catalog
        .page_brand_locations(brand, Some(LocationStatus::Active), None, 1_000)
        .await
        .unwrap()
        .items
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_offer_of_the_release_before_is_listed_linked_and_unlinked_in_its_own_partition() {
    let env = Env::of(Kind::Aws, fast_settings()).await;
    let seeded = env.seed(60).await;
    let ports = env.ports();
    let mut ids = brand_ids(&ports, seeded.brand_id).await;
    ids.sort();
    let old = offer_of_the_release_before(&env, seeded.brand_id, &ids[..20]).await;

    // Read as it was written.
    assert_eq!(listed(&ports, old, 7).await, ids[..20].to_vec());
    assert_eq!(
        ports.catalog.existing_links(old, &ids[..2]).await.unwrap(),
        vec![Some(LinkedBy::Direct); 2]
    );

    let pipeline = env.start(env.config(), |p| p).await;
    let api = pipeline
        .api_as(bulklink_http::auth::Role::Brand(seeded.brand_id))
        .unwrap();
    let job = api.create_job(old, None, None).await.unwrap();
    let job = wait_terminal(&pipeline.ports, job.id, Duration::from_secs(120)).await;
    assert_eq!(job.status, JobStatus::Succeeded, "{:?}", job.counters);
    assert_eq!((job.counters.linked, job.counters.already_linked), (40, 20));
    // Every link in the offer's own partition, none in a shard's.
    let mut under = links_under(&env, &format!("OFFER#{old}")).await;
    under.sort();
    assert_eq!(under, ids);
    for shard in 0..8 {
        assert!(links_under(&env, &format!("OFFER#{old}#{shard}"))
            .await
            .is_empty());
    }
    assert_eq!(listed(&pipeline.ports, old, 1_000).await, ids);
    assert_eq!(total(&ports, old).await, 60);

    // The new offer of the same brand spreads its links; one location carries both.
    let direct = ports
        .catalog
        .get_offer(seeded.offer_id)
        .await
        .unwrap()
        .unwrap();
    ports.catalog.link_direct(&direct, ids[0]).await.unwrap();
    let mut shards_holding = 0;
    for shard in 0..8 {
        let pk = format!("OFFER#{}#{shard}", seeded.offer_id);
        shards_holding += usize::from(links_under(&env, &pk).await.contains(&ids[0]));
    }
    assert_eq!(
        shards_holding, 1,
        "the new offer's link is in one of its shards"
    );
    // Closing it leaves both offers, each link found where its offer keeps it.
    let closed = ports
        .catalog
        .update_location(
            ids[0],
            &LocationChange {
                status: Some(LocationStatus::Closed),
                ..Default::default()
            },
        )
        .await
        .unwrap()
        .unwrap();
    assert!(!closed.has_offer);
    assert_eq!(listed(&ports, old, 1_000).await, ids[1..].to_vec());
    assert!(listed(&ports, seeded.offer_id, 100).await.is_empty());
    assert_eq!(
        (
            total(&ports, old).await,
            total(&ports, seeded.offer_id).await
        ),
        (59, 0)
    );

    // Unlink-all takes every link out of its partition and every location's set.
    unlink_all_exactly(&pipeline, &api, old, &ids[1..]).await;
    assert!(links_under(&env, &format!("OFFER#{old}")).await.is_empty());
    pipeline.shutdown().await;
}

/// Both backends hold and list the same links: every link once, in id order, at any page
/// size, and as many as counted — on DynamoDB spread over the offer's eight shards.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sharded_offers_links_list_in_id_order_at_any_page_size_as_counted() {
    for kind in [Kind::Embedded, Kind::Aws] {
        let env = Env::of(kind, fast_settings()).await;
        let seeded = env.seed(300).await;
        let (pipeline, api, job) = linked_all(&env, &seeded, Duration::from_secs(120)).await;
        assert_exact(&env, &seeded, &job).await;
        let mut ids = brand_ids(&pipeline.ports, seeded.brand_id).await;
        ids.sort();
        for limit in [7, 100, 1_000] {
            assert_eq!(
                listed(&pipeline.ports, seeded.offer_id, limit).await,
                ids,
                "{kind:?} {limit}"
            );
        }
        // The API's pages: the same ids, in order, its cursor followed.
        let mut seen = Vec::new();
        let mut path = format!("/offers/{}/locations?limit=50", seeded.offer_id);
        loop {
            let page: serde_json::Value = api.get(&path).await.unwrap();
            for item in page["items"].as_array().unwrap() {
                seen.push(
                    item["locationId"]
                        .as_str()
                        .unwrap()
                        .parse::<LocationId>()
                        .unwrap(),
                );
            }
            match page["nextCursor"].as_str() {
                Some(next) => {
                    path = format!(
                        "/offers/{}/locations?limit=50&cursor={next}",
                        seeded.offer_id
                    )
                }
                None => break,
            }
        }
        assert_eq!(seen, ids, "{kind:?}");
        if kind == Kind::Aws {
            let mut per_shard = Vec::new();
            for shard in 0..8 {
                per_shard.push(
                    links_under(&env, &format!("OFFER#{}#{shard}", seeded.offer_id))
                        .await
                        .len(),
                );
            }
            assert_eq!(per_shard.iter().sum::<usize>(), 300);
            assert!(per_shard.iter().all(|n| *n >= 15), "{per_shard:?}");
        }
        pipeline.shutdown().await;
    }
}

/// `bulklink migrate-links` against this test's tables (a child process).
fn migrate_links(env: &Env, offer: OfferId) -> std::process::Child {
    std::process::Command::new(env!("CARGO_BIN_EXE_bulklink"))
        .args([
            "migrate-links",
            "--offer",
            &offer.to_string(),
            "--shards",
            "8",
            "--grace-secs",
            "2",
            "--endpoint-url",
            emulator().endpoint(),
        ])
        .envs(env.aws_names().unwrap().env())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap()
}

/// The offer item's `linkShards` and `linkShardsTo`.
async fn layout_of(env: &Env, offer: OfferId) -> (Option<String>, Option<String>) {
    let item = env
        .aws_clients()
        .unwrap()
        .dynamodb
        .get_item()
        .table_name(&env.aws_names().unwrap().catalog_table)
        .key("pk", AttributeValue::S(format!("OFFER#{offer}")))
        .key("sk", AttributeValue::S("#OFFER".into()))
        .consistent_read(true)
        .send()
        .await
        .unwrap()
        .item
        .unwrap();
    let number = |name: &str| match item.get(name) {
        Some(AttributeValue::N(v)) => Some(v.clone()),
        _ => None,
    };
    (number("linkShards"), number("linkShardsTo"))
}

async fn links_in_shards(env: &Env, offer: OfferId) -> Vec<LocationId> {
    let mut ids = Vec::new();
    for shard in 0..8 {
        ids.extend(links_under(env, &format!("OFFER#{offer}#{shard}")).await);
    }
    ids.sort();
    ids
}

/// An offer of the release before (half its brand linked, in its own partition) moved to 8
/// shards while a link-all of it runs; the mover killed with SIGKILL part-way and run
/// again. The job, the links and the counts end exact, every link in the new shards; then
/// unlink-all takes them all.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migrate_links_moves_an_old_offer_to_shards_exactly_under_a_job_and_a_kill_9() {
    // moto copies the whole table for every transaction, and during a move every link is
    // one: chunks of 25 with room for that.
    let mut settings = fast_settings();
    settings.chunk_size = 25;
    settings.visibility_timeout = Duration::from_secs(30);
    settings.max_receive_count = 5;
    let env = Env::of(Kind::Aws, settings).await;
    let seeded = env.seed(400).await;
    let ports = env.ports();
    let mut ids = brand_ids(&ports, seeded.brand_id).await;
    ids.sort();
    let old = offer_of_the_release_before(&env, seeded.brand_id, &ids[..200]).await;
    assert_eq!(listed(&ports, old, 100).await, ids[..200].to_vec());

    let pipeline = env.start(env.config(), |p| p).await;
    let api = pipeline
        .api_as(bulklink_http::auth::Role::Brand(seeded.brand_id))
        .unwrap();
    let mut mover = migrate_links(&env, old);
    eventually(Duration::from_secs(30), "the move begins", || async {
        layout_of(&env, old).await.1.as_deref() == Some("8")
    })
    .await;
    // The job's chunks write while the offer is moving: each link to its new key.
    let job = api.create_job(old, None, None).await.unwrap();
    eventually(
        Duration::from_secs(60),
        "the mover has moved some links",
        || async { links_under(&env, &format!("OFFER#{old}")).await.len() <= 150 },
    )
    .await;
    assert_eq!(
        layout_of(&env, old).await,
        (None, Some("8".to_owned())),
        "still moving when killed (the move was too quick to interrupt)"
    );
    mover.kill().unwrap(); // SIGKILL
    assert!(!mover.wait().unwrap().success());
    let left = links_under(&env, &format!("OFFER#{old}")).await.len();
    assert!(left > 0, "the kill left links at their old keys");

    let out = migrate_links(&env, old).wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let migrated: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        (migrated["from"].as_u64(), migrated["to"].as_u64()),
        (Some(1), Some(8))
    );
    assert_eq!(layout_of(&env, old).await, (Some("8".to_owned()), None));

    let job = wait_terminal(&pipeline.ports, job.id, Duration::from_secs(120)).await;
    let failures = pipeline
        .ports
        .ledger
        .page_failures(job.id, None, 3)
        .await
        .unwrap();
    assert_eq!(
        job.status,
        JobStatus::Succeeded,
        "{:?} {:?}",
        job.counters,
        failures.items
    );
    assert_eq!(
        (job.counters.linked, job.counters.already_linked),
        (200, 200)
    );
    assert!(links_under(&env, &format!("OFFER#{old}")).await.is_empty());
    assert_eq!(links_in_shards(&env, old).await, ids);
    assert_eq!(listed(&ports, old, 64).await, ids);
    assert_eq!(total(&ports, old).await, 400);
    // Running it again moves nothing.
    let out = migrate_links(&env, old).wait_with_output().unwrap();
    let again: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(again["moved"], 0, "{again}");

    unlink_all_exactly(&pipeline, &api, old, &ids).await;
    assert!(links_in_shards(&env, old).await.is_empty());
    pipeline.shutdown().await;
}

/// A chunk is one ledger transaction whatever its size: a job in chunks of 1,000 (the
/// largest) is two transactions for 1,200 locations, on both backends, and exact — its
/// report a row per location.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_in_chunks_of_a_thousand_is_a_ledger_transaction_a_chunk_and_exact() {
    for kind in [Kind::Embedded, Kind::Aws] {
        let mut settings = fast_settings();
        settings.chunk_size = 1_000;
        settings.page_size = 10_000;
        settings.visibility_timeout = Duration::from_secs(30);
        let env = Env::of(kind, settings).await;
        let seeded = env.seed(1_200).await;
        let (pipeline, _, job) = linked_all(&env, &seeded, Duration::from_secs(180)).await;
        assert_eq!(
            (job.counters.linked, job.chunks_total),
            (1_200, 2),
            "{kind:?}"
        );
        assert_exact(&env, &seeded, &job).await;
        let chunks = pipeline
            .ports
            .ledger
            .chunks_from(job.id, bulklink_core::domain::ChunkSeq(0), 10)
            .await
            .unwrap();
        let rows: usize = chunks
            .iter()
            .map(|chunk| chunk.outcomes.as_ref().map_or(0, Vec::len))
            .sum();
        assert_eq!(chunks.len(), 2, "{kind:?}");
        assert_eq!(rows, 1_200, "{kind:?}");
        pipeline.shutdown().await;
    }
}
