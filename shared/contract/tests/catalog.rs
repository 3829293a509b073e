//! Catalog contracts: offers and locations are created once, brand pages are complete and
//! ordered, and links are conditional writes whose replays are recognised.

use bulklink_core::domain::{
    AttributesChange, BrandId, JobId, LinkOutcome, LinkedBy, Location, LocationAttributes,
    LocationChange, LocationFilter, LocationId, LocationStatus, OfferId, OfferRule, OfferSchedule,
    Upserted,
};
use bulklink_core::ports::Cursor;
use bulklink_core::StoreError;

use crate::support::{ids, locations, now_ms, offer, seed, Fixture};

/// A store with every attribute set.
fn described(location: &mut Location) {
    location.attributes = LocationAttributes {
        name: Some("Soho".into()),
        city: Some("London".into()),
        region: Some("Greater London".into()),
        postcode: Some("W1D 3QU".into()),
        country: Some("GB".parse().unwrap()),
        tags: vec!["drive-thru".into(), "24h".into()],
    };
}

pub async fn an_offer_is_created_once(fx: &Fixture) {
    let catalog = &fx.ports.catalog;
    let first = offer(BrandId::new_random());
    let mut again = offer(BrandId::new_random());
    again.id = first.id;
    again.name = "Something else".to_owned();

    catalog.create_offer(&first).await.unwrap();
    let second = catalog.create_offer(&again).await;

    assert!(matches!(second, Err(StoreError::Conflict(_))), "{second:?}");
    assert_eq!(catalog.get_offer(first.id).await.unwrap(), Some(first));
}

pub async fn unknown_offers_and_locations_read_as_none(fx: &Fixture) {
    let catalog = &fx.ports.catalog;
    seed(&fx.ports, 3).await;

    assert_eq!(
        catalog.get_offer(OfferId::new_random()).await.unwrap(),
        None
    );
    assert_eq!(
        catalog
            .get_location(LocationId::new_random())
            .await
            .unwrap(),
        None
    );
}

pub async fn a_location_batch_reads_back_without_an_offer(fx: &Fixture) {
    let batch = locations(BrandId::new_random(), 5);

    fx.ports.catalog.create_locations(&batch).await.unwrap();

    for location in batch {
        let stored = fx.ports.catalog.get_location(location.id).await.unwrap();
        assert_eq!(stored, Some(location));
    }
}

pub async fn a_location_batch_sent_again_whole_is_already_created(fx: &Fixture) {
    // What an SDK retry of an applied attempt looks like.
    let batch = locations(BrandId::new_random(), 3);
    fx.ports.catalog.create_locations(&batch).await.unwrap();

    let again = fx.ports.catalog.create_locations(&batch).await;

    assert!(again.is_ok(), "{again:?}");
    for location in batch {
        assert_eq!(
            fx.ports.catalog.get_location(location.id).await.unwrap(),
            Some(location)
        );
    }
}

pub async fn a_location_batch_with_an_existing_id_creates_nothing(fx: &Fixture) {
    let catalog = &fx.ports.catalog;
    let brand = BrandId::new_random();
    let existing = locations(brand, 1);
    catalog.create_locations(&existing).await.unwrap();
    let fresh = locations(brand, 2);
    // The duplicate sits between new ids, so a partial write would leave the first one behind.
    let batch = vec![fresh[0].clone(), existing[0].clone(), fresh[1].clone()];

    let result = catalog.create_locations(&batch).await;

    assert!(matches!(result, Err(StoreError::Conflict(_))), "{result:?}");
    for location in &fresh {
        assert_eq!(catalog.get_location(location.id).await.unwrap(), None);
    }
    assert_eq!(
        catalog.get_location(existing[0].id).await.unwrap(),
        Some(existing[0].clone())
    );
}

pub async fn brand_locations_page_in_id_order_exactly_once(fx: &Fixture) {
    let catalog = &fx.ports.catalog;
    let brand = BrandId::new_random();
    let mine = locations(brand, 25);
    catalog.create_locations(&mine).await.unwrap();
    let others = locations(BrandId::new_random(), 5);
    catalog.create_locations(&others).await.unwrap();

    let mut sizes = Vec::new();
    let mut seen = Vec::new();
    let mut cursor: Option<Cursor> = None;
    loop {
        let page = catalog
            .page_brand_locations(brand, None, cursor.as_ref(), 10)
            .await
            .unwrap();
        sizes.push(page.items.len());
        seen.extend(page.items);
        match page.next {
            Some(next) => cursor = Some(next),
            None => break,
        }
        assert!(sizes.len() < 10, "paging does not end");
    }

    let mut expected = ids(&mine);
    expected.sort();
    assert_eq!(sizes, vec![10, 10, 5]);
    assert_eq!(seen, expected);
}

pub async fn linking_a_fresh_location_marks_it_as_having_the_offer(fx: &Fixture) {
    let catalog = &fx.ports.catalog;
    let (offer, ids) = seed(&fx.ports, 2).await;
    let job = JobId::new_v7();

    let outcomes = catalog
        .link_locations(offer.id, offer.brand_id, LinkedBy::Job(job), &ids[..1])
        .await
        .unwrap();

    assert_eq!(outcomes, vec![LinkOutcome::Linked]);
    let linked = catalog.get_location(ids[0]).await.unwrap().unwrap();
    let untouched = catalog.get_location(ids[1]).await.unwrap().unwrap();
    assert!(linked.has_offer);
    assert!(!untouched.has_offer);
}

pub async fn relinking_by_the_same_job_counts_as_linked_again(fx: &Fixture) {
    let catalog = &fx.ports.catalog;
    let (offer, ids) = seed(&fx.ports, 3).await;
    let by = LinkedBy::Job(JobId::new_v7());
    catalog
        .link_locations(offer.id, offer.brand_id, by, &ids)
        .await
        .unwrap();

    let replay = catalog
        .link_locations(offer.id, offer.brand_id, by, &ids)
        .await
        .unwrap();

    assert_eq!(replay, vec![LinkOutcome::Linked; 3]);
    let links = catalog.page_offer_links(offer.id, None, 100).await.unwrap();
    assert_eq!(links.items.len(), 3);
    assert!(links.items.iter().all(|link| link.linked_by == by));
}

pub async fn a_location_linked_by_one_job_is_already_linked_for_anyone_else(fx: &Fixture) {
    let catalog = &fx.ports.catalog;
    let (offer, ids) = seed(&fx.ports, 1).await;
    let first = LinkedBy::Job(JobId::new_v7());
    catalog
        .link_locations(offer.id, offer.brand_id, first, &ids)
        .await
        .unwrap();

    let other_job = catalog
        .link_locations(
            offer.id,
            offer.brand_id,
            LinkedBy::Job(JobId::new_v7()),
            &ids,
        )
        .await
        .unwrap();
    let direct_batch = catalog
        .link_locations(offer.id, offer.brand_id, LinkedBy::Direct, &ids)
        .await
        .unwrap();
    let direct = catalog.link_direct(&offer, ids[0]).await.unwrap();

    assert_eq!(other_job, vec![LinkOutcome::AlreadyLinked]);
    assert_eq!(direct_batch, vec![LinkOutcome::AlreadyLinked]);
    assert_eq!(direct, LinkOutcome::AlreadyLinked);
    assert_eq!(
        catalog.existing_links(offer.id, &ids).await.unwrap(),
        vec![Some(first)]
    );
    assert_eq!(
        catalog
            .get_offer(offer.id)
            .await
            .unwrap()
            .unwrap()
            .locations_total,
        0
    );
}

pub async fn locations_of_another_brand_or_unknown_ids_are_not_found_and_not_linked(fx: &Fixture) {
    let catalog = &fx.ports.catalog;
    let (offer, _) = seed(&fx.ports, 1).await;
    let (_, foreign) = seed(&fx.ports, 1).await;
    let targets = vec![foreign[0], LocationId::new_random()];

    let outcomes = catalog
        .link_locations(
            offer.id,
            offer.brand_id,
            LinkedBy::Job(JobId::new_v7()),
            &targets,
        )
        .await
        .unwrap();
    let direct = catalog.link_direct(&offer, foreign[0]).await.unwrap();

    assert_eq!(outcomes, vec![LinkOutcome::NotFound; 2]);
    assert_eq!(direct, LinkOutcome::NotFound);
    assert_eq!(
        catalog.existing_links(offer.id, &targets).await.unwrap(),
        vec![None, None]
    );
    assert!(catalog
        .page_offer_links(offer.id, None, 10)
        .await
        .unwrap()
        .items
        .is_empty());
    assert!(
        !catalog
            .get_location(foreign[0])
            .await
            .unwrap()
            .unwrap()
            .has_offer
    );
    assert_eq!(catalog.get_location(targets[1]).await.unwrap(), None);
    assert_eq!(
        catalog
            .get_offer(offer.id)
            .await
            .unwrap()
            .unwrap()
            .locations_total,
        0
    );
}

pub async fn linking_for_a_job_leaves_the_offer_total_alone(fx: &Fixture) {
    let catalog = &fx.ports.catalog;
    let (offer, ids) = seed(&fx.ports, 3).await;

    let outcomes = catalog
        .link_locations(
            offer.id,
            offer.brand_id,
            LinkedBy::Job(JobId::new_v7()),
            &ids,
        )
        .await
        .unwrap();

    assert_eq!(outcomes, vec![LinkOutcome::Linked; 3]);
    assert_eq!(
        catalog
            .get_offer(offer.id)
            .await
            .unwrap()
            .unwrap()
            .locations_total,
        0
    );
}

pub async fn a_direct_link_counts_on_the_offer_exactly_once(fx: &Fixture) {
    let catalog = &fx.ports.catalog;
    let (offer, ids) = seed(&fx.ports, 1).await;

    let first = catalog.link_direct(&offer, ids[0]).await.unwrap();
    let second = catalog.link_direct(&offer, ids[0]).await.unwrap();

    assert_eq!(first, LinkOutcome::Linked);
    assert_eq!(second, LinkOutcome::AlreadyLinked);
    assert_eq!(
        catalog
            .get_offer(offer.id)
            .await
            .unwrap()
            .unwrap()
            .locations_total,
        1
    );
    assert!(
        catalog
            .get_location(ids[0])
            .await
            .unwrap()
            .unwrap()
            .has_offer
    );
    assert_eq!(
        catalog.existing_links(offer.id, &ids).await.unwrap(),
        vec![Some(LinkedBy::Direct)]
    );
}

pub async fn existing_links_report_who_linked_each_location(fx: &Fixture) {
    let catalog = &fx.ports.catalog;
    let (offer, ids) = seed(&fx.ports, 3).await;
    let job = LinkedBy::Job(JobId::new_v7());
    catalog
        .link_locations(offer.id, offer.brand_id, job, &ids[2..])
        .await
        .unwrap();
    catalog.link_direct(&offer, ids[0]).await.unwrap();

    let owners = catalog.existing_links(offer.id, &ids).await.unwrap();

    assert_eq!(owners, vec![Some(LinkedBy::Direct), None, Some(job)]);
}

pub async fn offer_links_page_through_every_link_of_that_offer_once(fx: &Fixture) {
    let catalog = &fx.ports.catalog;
    let (offer, ids) = seed(&fx.ports, 12).await;
    let mut other = crate::support::offer(offer.brand_id);
    other.name = "Another offer".to_owned();
    catalog.create_offer(&other).await.unwrap();
    let job = LinkedBy::Job(JobId::new_v7());
    catalog
        .link_locations(offer.id, offer.brand_id, job, &ids)
        .await
        .unwrap();
    catalog
        .link_locations(other.id, other.brand_id, LinkedBy::Direct, &ids[..4])
        .await
        .unwrap();

    let mut sizes = Vec::new();
    let mut links = Vec::new();
    let mut cursor: Option<Cursor> = None;
    loop {
        let page = catalog
            .page_offer_links(offer.id, cursor.as_ref(), 5)
            .await
            .unwrap();
        sizes.push(page.items.len());
        links.extend(page.items);
        match page.next {
            Some(next) => cursor = Some(next),
            None => break,
        }
        assert!(sizes.len() < 10, "paging does not end");
    }

    let mut expected = ids.clone();
    expected.sort();
    let seen: Vec<LocationId> = links.iter().map(|link| link.location_id).collect();
    assert_eq!(sizes, vec![5, 5, 2]);
    assert_eq!(seen, expected);
    assert!(links
        .iter()
        .all(|link| link.offer_id == offer.id && link.linked_by == job));
}

pub async fn a_location_keeps_its_attributes_and_times(fx: &Fixture) {
    let mut batch = locations(BrandId::new_random(), 2);
    described(&mut batch[0]);

    fx.ports.catalog.create_locations(&batch).await.unwrap();

    for location in batch {
        let stored = fx.ports.catalog.get_location(location.id).await.unwrap();
        assert_eq!(stored, Some(location));
    }
}

pub async fn a_batch_sent_again_later_is_already_created_but_other_attributes_conflict(
    fx: &Fixture,
) {
    let mut batch = locations(BrandId::new_random(), 2);
    described(&mut batch[1]);
    fx.ports.catalog.create_locations(&batch).await.unwrap();

    // A client's retry: the same locations, stamped by the server again.
    let later = now_ms() + chrono::Duration::seconds(5);
    let mut again = batch.clone();
    for location in &mut again {
        location.created_at = Some(later);
        location.updated_at = Some(later);
    }
    let retried = fx.ports.catalog.create_locations(&again).await;
    assert!(retried.is_ok(), "{retried:?}");

    again[1].attributes.city = Some("Leeds".into());
    let other = fx.ports.catalog.create_locations(&again).await;
    assert!(matches!(other, Err(StoreError::Conflict(_))), "{other:?}");
    let stored = fx.ports.catalog.get_location(batch[1].id).await.unwrap();
    assert_eq!(stored, Some(batch[1].clone()), "nothing changed");
}

pub async fn a_location_change_applies_what_it_names_and_moves_updated_at_only_if_it_changes(
    fx: &Fixture,
) {
    let catalog = &fx.ports.catalog;
    let brand = BrandId::new_random();
    let offer = offer(brand);
    catalog.create_offer(&offer).await.unwrap();
    // Made an hour ago, so a change now is later by any clock's resolution.
    let mut made = locations(brand, 1);
    let an_hour_ago = now_ms() - chrono::Duration::hours(1);
    made[0].created_at = Some(an_hour_ago);
    made[0].updated_at = Some(an_hour_ago);
    catalog.create_locations(&made).await.unwrap();
    let ids = vec![made[0].id];
    let id = ids[0];
    let linked = catalog
        .link_locations(offer.id, offer.brand_id, LinkedBy::Direct, &ids)
        .await
        .unwrap();
    assert_eq!(linked, vec![LinkOutcome::Linked]);
    let before = catalog.get_location(id).await.unwrap().unwrap();

    let change = LocationChange {
        status: None,
        address: Some("2 New Road".into()),
        attributes: AttributesChange {
            city: Some(Some("London".into())),
            tags: Some(vec!["drive-thru".into()]),
            ..Default::default()
        },
    };
    let changed = catalog.update_location(id, &change).await.unwrap().unwrap();
    assert_eq!(changed.address, "2 New Road");
    assert_eq!(changed.attributes.city.as_deref(), Some("London"));
    assert_eq!(changed.attributes.tags, vec!["drive-thru".to_owned()]);
    assert!(changed.has_offer, "a change leaves the links alone");
    assert_eq!(changed.created_at, before.created_at);
    assert!(changed.updated_at > before.updated_at, "{changed:?}");
    assert_eq!(
        catalog.get_location(id).await.unwrap().as_ref(),
        Some(&changed)
    );

    // Past the first change's millisecond, so a second write would show in `updatedAt`.
    let first_ms = changed.updated_at.unwrap();
    while now_ms() <= first_ms {
        tokio::task::yield_now().await;
    }
    let same = catalog.update_location(id, &change).await.unwrap().unwrap();
    assert_eq!(
        same, changed,
        "the same change again changes nothing, not even updatedAt"
    );

    let cleared = LocationChange {
        status: None,
        address: None,
        attributes: AttributesChange {
            city: Some(None),
            tags: Some(vec![]),
            ..Default::default()
        },
    };
    let after = catalog
        .update_location(id, &cleared)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(after.attributes, LocationAttributes::default());
    assert_eq!(after.address, "2 New Road");
    assert_eq!(catalog.get_location(id).await.unwrap(), Some(after));

    let unknown = catalog
        .update_location(LocationId::new_random(), &change)
        .await
        .unwrap();
    assert_eq!(unknown, None);
}

/// A new location of `brand` with the external id `external_id`.
fn store(brand: BrandId, external_id: &str) -> Location {
    let mut location = locations(brand, 1).remove(0);
    location.external_id = Some(external_id.to_owned());
    location
}

pub async fn an_external_id_is_unique_in_its_brand_and_free_in_another(fx: &Fixture) {
    let catalog = &fx.ports.catalog;
    let brand = BrandId::new_random();
    let first = store(brand, "store-1");
    catalog
        .create_locations(std::slice::from_ref(&first))
        .await
        .unwrap();
    let retried = catalog.create_locations(std::slice::from_ref(&first)).await;
    assert!(retried.is_ok(), "a retry is already done: {retried:?}");

    // The same external id again in the brand, in a batch: nothing of the batch is made.
    let other = locations(brand, 1).remove(0);
    let duplicate = store(brand, "store-1");
    let refused = catalog
        .create_locations(&[other.clone(), duplicate.clone()])
        .await;
    assert!(
        matches!(&refused, Err(StoreError::Conflict(d)) if d.contains("store-1")),
        "{refused:?}"
    );
    for id in [other.id, duplicate.id] {
        assert_eq!(catalog.get_location(id).await.unwrap(), None);
    }
    let elsewhere = store(BrandId::new_random(), "store-1");
    catalog
        .create_locations(std::slice::from_ref(&elsewhere))
        .await
        .unwrap();

    let found = catalog.find_by_external_id(brand, "store-1").await.unwrap();
    assert_eq!(found, Some(first));
    let found = catalog
        .find_by_external_id(elsewhere.brand_id, "store-1")
        .await
        .unwrap();
    assert_eq!(found, Some(elsewhere));
    assert_eq!(
        catalog.find_by_external_id(brand, "store-2").await.unwrap(),
        None
    );
}

pub async fn an_upsert_creates_then_changes_nothing_then_updates_in_place(fx: &Fixture) {
    let catalog = &fx.ports.catalog;
    let brand = BrandId::new_random();
    let offer = offer(brand);
    catalog.create_offer(&offer).await.unwrap();
    let mut sent = store(brand, "store-9");
    described(&mut sent);
    let an_hour_ago = now_ms() - chrono::Duration::hours(1);
    sent.created_at = Some(an_hour_ago);
    sent.updated_at = Some(an_hour_ago);

    let made = catalog.upsert_by_external_id(&sent).await.unwrap();
    assert_eq!(made, Upserted::Created(sent.clone()));
    let linked = catalog
        .link_locations(offer.id, brand, LinkedBy::Direct, &[sent.id])
        .await
        .unwrap();
    assert_eq!(linked, vec![LinkOutcome::Linked]);
    let stored = catalog.get_location(sent.id).await.unwrap().unwrap();

    // The same body again, under a new candidate id: nothing changes.
    let mut again = store(brand, "store-9");
    described(&mut again);
    let same = catalog.upsert_by_external_id(&again).await.unwrap();
    assert_eq!(same, Upserted::Unchanged(stored.clone()));

    // Another body: the same location takes it whole (an attribute left out is removed).
    let mut moved = store(brand, "store-9");
    moved.address = "9 New Road".into();
    moved.attributes.city = Some("Leeds".into());
    let Upserted::Updated(updated) = catalog.upsert_by_external_id(&moved).await.unwrap() else {
        panic!("an update");
    };
    assert_eq!(updated.id, sent.id);
    assert_eq!(updated.address, "9 New Road");
    assert_eq!(updated.attributes, moved.attributes);
    assert_eq!(updated.created_at, Some(an_hour_ago));
    assert!(updated.updated_at > Some(an_hour_ago));
    assert!(updated.has_offer, "its links are kept");
    assert_eq!(catalog.get_location(sent.id).await.unwrap(), Some(updated));
    assert_eq!(catalog.get_location(again.id).await.unwrap(), None);
}

pub async fn concurrent_upserts_of_one_new_external_id_make_one_location(fx: &Fixture) {
    let brand = BrandId::new_random();
    let candidates: Vec<Location> = (0..4).map(|_| store(brand, "store-race")).collect();
    let results = futures::future::join_all(
        candidates
            .iter()
            .map(|c| fx.ports.catalog.upsert_by_external_id(c)),
    )
    .await;
    let mut created = Vec::new();
    for result in results {
        match result.unwrap() {
            Upserted::Created(l) => created.push(l.id),
            Upserted::Unchanged(_) | Upserted::Updated(_) => {}
        }
    }
    assert_eq!(created.len(), 1, "exactly one creates it");
    let found = fx
        .ports
        .catalog
        .find_by_external_id(brand, "store-race")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(found.id, created[0]);
    let made = fx
        .ports
        .catalog
        .page_brand_locations(brand, None, None, 100)
        .await
        .unwrap();
    assert_eq!(
        made.items,
        vec![found.id],
        "and no other location of the brand"
    );
}

pub async fn deleting_a_location_frees_its_external_id(fx: &Fixture) {
    let catalog = &fx.ports.catalog;
    let brand = BrandId::new_random();
    let first = store(brand, "store-5");
    catalog
        .create_locations(std::slice::from_ref(&first))
        .await
        .unwrap();
    catalog.delete_location(first.id).await.unwrap().unwrap();
    assert_eq!(
        catalog.find_by_external_id(brand, "store-5").await.unwrap(),
        None
    );
    let reopened = store(brand, "store-5");
    let made = catalog.upsert_by_external_id(&reopened).await.unwrap();
    assert_eq!(made, Upserted::Created(reopened));
}

pub async fn external_ids_name_each_location_in_order(fx: &Fixture) {
    let catalog = &fx.ports.catalog;
    let mut batch = locations(BrandId::new_random(), 3);
    batch[0].external_id = Some("S-1".into());
    batch[2].external_id = Some("S-3".into());
    catalog.create_locations(&batch).await.unwrap();
    let asked = [
        batch[2].id,
        LocationId::new_random(),
        batch[1].id,
        batch[0].id,
    ];
    let names = catalog.external_ids(&asked).await.unwrap();
    assert_eq!(
        names,
        [Some("S-3".to_owned()), None, None, Some("S-1".to_owned())]
    );
    let many: Vec<LocationId> = (0..150).map(|_| batch[0].id).collect();
    assert_eq!(catalog.external_ids(&many).await.unwrap().len(), 150);
}

pub async fn locations_matching_are_the_brands_matching_ones_in_order(fx: &Fixture) {
    let catalog = &fx.ports.catalog;
    let brand = BrandId::new_random();
    let mut batch = locations(brand, 4);
    described(&mut batch[1]); // London, GB, drive-thru
    described(&mut batch[3]);
    batch[3].attributes.city = Some("Leeds".into());
    batch[3].external_id = Some("S-4".into());
    catalog.create_locations(&batch).await.unwrap();
    let mut foreign = locations(BrandId::new_random(), 1);
    described(&mut foreign[0]);
    catalog.create_locations(&foreign).await.unwrap();

    // Asked in an order of the caller's, with an unknown id and another brand's.
    let asked = vec![
        batch[3].id,
        foreign[0].id,
        LocationId::new_random(),
        batch[0].id,
        batch[1].id,
    ];
    let gb = LocationFilter {
        country: vec!["GB".parse().unwrap()],
        ..Default::default()
    };
    let kept = catalog
        .locations_matching(brand, &asked, &gb)
        .await
        .unwrap();
    let kept: Vec<LocationId> = kept.iter().map(|l| l.id).collect();
    assert_eq!(kept, vec![batch[3].id, batch[1].id]);
    let london_or_s4 = LocationFilter {
        city: vec!["London".into()],
        ..Default::default()
    };
    let kept = catalog
        .locations_matching(brand, &asked, &london_or_s4)
        .await
        .unwrap();
    assert_eq!(kept, vec![batch[1].clone()], "whole locations, as stored");
    let by_store_id = LocationFilter {
        external_ids: vec!["S-4".into()],
        tags: vec!["drive-thru".into()],
        ..Default::default()
    };
    let kept = catalog
        .locations_matching(brand, &asked, &by_store_id)
        .await
        .unwrap();
    assert_eq!(kept, vec![batch[3].clone()]);
    let everything = LocationFilter::default();
    let kept = catalog
        .locations_matching(brand, &asked, &everything)
        .await
        .unwrap();
    assert_eq!(
        kept,
        vec![batch[3].clone(), batch[0].clone(), batch[1].clone()]
    );
}

fn closing() -> LocationChange {
    to_status(LocationStatus::Closed)
}

fn reopening() -> LocationChange {
    to_status(LocationStatus::Active)
}

fn to_status(status: LocationStatus) -> LocationChange {
    LocationChange {
        status: Some(status),
        ..Default::default()
    }
}

async fn total(fx: &Fixture, offer: OfferId) -> u64 {
    let offer = fx.ports.catalog.get_offer(offer).await.unwrap().unwrap();
    offer.locations_total
}

pub async fn closing_a_location_leaves_every_offer_and_nothing_links_it_until_it_reopens(
    fx: &Fixture,
) {
    let catalog = &fx.ports.catalog;
    let (first, ids) = seed(&fx.ports, 2).await;
    let second = offer(first.brand_id);
    catalog.create_offer(&second).await.unwrap();
    let (store, other) = (ids[0], ids[1]);
    for offer in [&first, &second] {
        for id in [store, other] {
            assert_eq!(
                catalog.link_direct(offer, id).await.unwrap(),
                LinkOutcome::Linked
            );
        }
    }
    let mut described_store = catalog.get_location(store).await.unwrap().unwrap();
    described(&mut described_store);
    catalog
        .update_location(store, &LocationChange::replacing_with(&described_store))
        .await
        .unwrap();

    let closed = catalog
        .update_location(store, &closing())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(closed.status, LocationStatus::Closed);
    assert!(!closed.has_offer);
    assert_eq!(
        closed.attributes, described_store.attributes,
        "it keeps them"
    );
    assert_eq!(catalog.get_location(store).await.unwrap().unwrap(), closed);
    for offer in [first.id, second.id] {
        assert_eq!(total(fx, offer).await, 1, "only the other store is left");
        assert_eq!(
            catalog
                .existing_links(offer, &[store, other])
                .await
                .unwrap(),
            vec![None, Some(LinkedBy::Direct)]
        );
    }
    // Closing it again changes nothing.
    let again = catalog
        .update_location(store, &closing())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(again.updated_at, closed.updated_at);
    assert_eq!(total(fx, first.id).await, 1);

    // No job and no direct link makes it carry anything while it is closed.
    let job = LinkedBy::Job(JobId::new_v7());
    assert_eq!(
        catalog
            .link_locations(first.id, first.brand_id, job, &[store])
            .await
            .unwrap(),
        vec![LinkOutcome::NotFound]
    );
    assert_eq!(
        catalog.link_direct(&first, store).await.unwrap(),
        LinkOutcome::NotFound
    );
    assert!(
        !catalog
            .get_location(store)
            .await
            .unwrap()
            .unwrap()
            .has_offer
    );
    assert_eq!(total(fx, first.id).await, 1);

    let reopened = catalog
        .update_location(store, &reopening())
        .await
        .unwrap()
        .unwrap();
    assert!(reopened.is_active() && !reopened.has_offer);
    assert_eq!(
        catalog
            .link_locations(first.id, first.brand_id, job, &[store])
            .await
            .unwrap(),
        vec![LinkOutcome::Linked]
    );
    assert_eq!(
        catalog.link_direct(&second, store).await.unwrap(),
        LinkOutcome::Linked
    );
    assert!(
        catalog
            .get_location(store)
            .await
            .unwrap()
            .unwrap()
            .has_offer
    );
    assert_eq!(total(fx, second.id).await, 2);
}

pub async fn an_upsert_that_closes_a_store_leaves_its_offers(fx: &Fixture) {
    let catalog = &fx.ports.catalog;
    let (offer, _) = seed(&fx.ports, 0).await;
    let mut sent = store(offer.brand_id, "store-9");
    catalog.upsert_by_external_id(&sent).await.unwrap();
    catalog.link_direct(&offer, sent.id).await.unwrap();
    assert_eq!(total(fx, offer.id).await, 1);

    sent.status = LocationStatus::Closed;
    let Upserted::Updated(closed) = catalog.upsert_by_external_id(&sent).await.unwrap() else {
        panic!("closing is a change")
    };
    assert!(!closed.is_active() && !closed.has_offer);
    assert_eq!(total(fx, offer.id).await, 0);
    assert_eq!(
        catalog.existing_links(offer.id, &[sent.id]).await.unwrap(),
        vec![None]
    );
    assert!(matches!(
        catalog.upsert_by_external_id(&sent).await.unwrap(),
        Upserted::Unchanged(_)
    ));

    // A store the brand sends closed the first time is made closed.
    let mut never_opened = store(offer.brand_id, "store-10");
    never_opened.status = LocationStatus::Closed;
    let Upserted::Created(made) = catalog.upsert_by_external_id(&never_opened).await.unwrap()
    else {
        panic!("it is new")
    };
    assert!(!made.is_active());
    assert_eq!(
        catalog.link_direct(&offer, made.id).await.unwrap(),
        LinkOutcome::NotFound
    );
}

pub async fn brand_locations_page_by_status_and_all_of_them_active_first(fx: &Fixture) {
    let catalog = &fx.ports.catalog;
    let brand = BrandId::new_random();
    let stores = locations(brand, 6);
    catalog.create_locations(&stores).await.unwrap();
    catalog
        .create_locations(&locations(BrandId::new_random(), 2))
        .await
        .unwrap();
    let mut active = ids(&stores);
    active.sort();
    let mut closed: Vec<LocationId> = vec![active.remove(4), active.remove(1)];
    closed.sort();
    for id in &closed {
        catalog.update_location(*id, &closing()).await.unwrap();
    }

    async fn every(
        fx: &Fixture,
        brand: BrandId,
        status: Option<LocationStatus>,
        limit: usize,
    ) -> Vec<LocationId> {
        let mut seen = Vec::new();
        let mut cursor: Option<Cursor> = None;
        for _ in 0..20 {
            let page = fx
                .ports
                .catalog
                .page_brand_locations(brand, status, cursor.as_ref(), limit)
                .await
                .unwrap();
            seen.extend(page.items);
            match page.next {
                Some(next) => cursor = Some(next),
                None => return seen,
            }
        }
        panic!("paging does not end")
    }
    for limit in [1, 3, 100] {
        assert_eq!(
            every(fx, brand, Some(LocationStatus::Active), limit).await,
            active,
            "limit {limit}"
        );
        assert_eq!(
            every(fx, brand, Some(LocationStatus::Closed), limit).await,
            closed,
            "limit {limit}"
        );
        let all: Vec<LocationId> = active.iter().chain(&closed).copied().collect();
        assert_eq!(every(fx, brand, None, limit).await, all, "limit {limit}");
    }
}

pub async fn links_made_while_stores_close_do_not_outlive_the_closing_nor_block_a_reopening(
    fx: &Fixture,
) {
    use futures::StreamExt;
    let catalog = &fx.ports.catalog;
    let (offer, ids) = seed(&fx.ports, 60).await;
    let job = LinkedBy::Job(JobId::new_v7());
    // A job links every store while each of them closes: whichever comes first, a closed
    // store carries nothing once both are done.
    let linking = catalog.link_locations(offer.id, offer.brand_id, job, &ids);
    let close = closing();
    let closing_all = futures::stream::iter(ids.iter().rev())
        .map(|id| catalog.update_location(*id, &close))
        .buffer_unordered(8)
        .collect::<Vec<_>>();
    let (linked, closed) = tokio::join!(linking, closing_all);
    for outcome in linked.unwrap() {
        assert!(matches!(
            outcome,
            LinkOutcome::Linked | LinkOutcome::NotFound
        ));
    }
    assert!(closed.iter().all(|c| c.as_ref().is_ok_and(Option::is_some)));
    assert_eq!(
        catalog.existing_links(offer.id, &ids).await.unwrap(),
        vec![None; ids.len()]
    );
    for id in &ids {
        let location = catalog.get_location(*id).await.unwrap().unwrap();
        assert!(!location.is_active() && !location.has_offer, "{id}");
    }

    // Reopened, every one links again (a closing's mark does not outlive the reopening).
    for id in &ids {
        catalog.update_location(*id, &reopening()).await.unwrap();
    }
    assert_eq!(
        catalog
            .link_locations(offer.id, offer.brand_id, job, &ids)
            .await
            .unwrap(),
        vec![LinkOutcome::Linked; ids.len()]
    );
}

pub async fn an_offers_schedule_is_kept_with_it_and_changes_in_place(fx: &Fixture) {
    let catalog = &fx.ports.catalog;
    let brand = BrandId::new_random();
    let at = now_ms() + chrono::Duration::hours(1);
    let mut scheduled = offer(brand);
    scheduled.schedule = Some(OfferSchedule {
        starts_at: Some(at),
        ends_at: Some(at + chrono::Duration::hours(1)),
        ..Default::default()
    });
    catalog.create_offer(&scheduled).await.unwrap();
    assert_eq!(
        catalog.get_offer(scheduled.id).await.unwrap(),
        Some(scheduled.clone())
    );

    let mut schedule = scheduled.schedule.clone().unwrap();
    schedule.start_job_id = Some(JobId::new_v7());
    schedule.end_job_id = Some(JobId::new_v7());
    assert!(catalog
        .set_offer_schedule(scheduled.id, &schedule)
        .await
        .unwrap());
    let read = catalog.get_offer(scheduled.id).await.unwrap().unwrap();
    assert_eq!(read.schedule, Some(schedule.clone()));
    let listed = catalog.page_brand_offers(brand, None, 10).await.unwrap();
    assert_eq!(listed.items, vec![read]);
    assert!(!catalog
        .set_offer_schedule(OfferId::new_random(), &schedule)
        .await
        .unwrap());
}

pub async fn a_brands_offers_page_in_id_order_and_no_other_brands(fx: &Fixture) {
    let catalog = &fx.ports.catalog;
    let brand = BrandId::new_random();
    let mut mine = Vec::new();
    for _ in 0..5 {
        let made = offer(brand);
        catalog.create_offer(&made).await.unwrap();
        mine.push(made);
    }
    catalog
        .create_offer(&offer(BrandId::new_random()))
        .await
        .unwrap();
    // Its locations share the brand's index and are never listed as offers.
    catalog
        .create_locations(&locations(brand, 3))
        .await
        .unwrap();
    let linked = LocationId::new_random();
    let store = Location::new(linked, brand, "1 High St".into(), now_ms());
    catalog.create_locations(&[store]).await.unwrap();
    catalog.link_direct(&mine[0], linked).await.unwrap();
    mine[0].locations_total = 1;
    mine.sort_by_key(|o| o.id);

    let mut seen = Vec::new();
    let mut cursor: Option<Cursor> = None;
    for _ in 0..10 {
        let page = catalog
            .page_brand_offers(brand, cursor.as_ref(), 2)
            .await
            .unwrap();
        seen.extend(page.items);
        match page.next {
            Some(next) => cursor = Some(next),
            None => break,
        }
    }
    assert_eq!(seen, mine);
}

pub async fn an_offers_rule_is_set_replaced_read_removed_and_goes_with_the_offer(fx: &Fixture) {
    let catalog = &fx.ports.catalog;
    let (offer, _) = seed(&fx.ports, 0).await;
    assert_eq!(catalog.get_rule(offer.id).await.unwrap(), None);
    let at = now_ms();
    let mut rule = OfferRule {
        offer_id: offer.id,
        brand_id: offer.brand_id,
        filter: LocationFilter {
            country: vec!["GB".parse().unwrap()],
            ..Default::default()
        },
        set_at: at,
    };
    catalog.put_rule(&rule).await.unwrap();
    assert_eq!(
        catalog.get_rule(offer.id).await.unwrap(),
        Some(rule.clone())
    );
    rule.filter = LocationFilter::default();
    catalog.put_rule(&rule).await.unwrap();
    assert_eq!(
        catalog.get_rule(offer.id).await.unwrap(),
        Some(rule.clone())
    );
    assert!(catalog.delete_rule(offer.id).await.unwrap());
    assert!(!catalog.delete_rule(offer.id).await.unwrap());
    assert_eq!(catalog.get_rule(offer.id).await.unwrap(), None);

    // No rule for an offer that does not exist; an offer's deletion takes its rule along.
    let nobody = OfferRule {
        offer_id: OfferId::new_random(),
        ..rule.clone()
    };
    assert!(matches!(
        catalog.put_rule(&nobody).await,
        Err(StoreError::Invalid(_))
    ));
    catalog.put_rule(&rule).await.unwrap();
    assert_eq!(
        fx.ports.jobs.delete_offer(offer.id).await.unwrap(),
        bulklink_core::ports::OfferDeletion::Deleted
    );
    assert_eq!(catalog.get_rule(offer.id).await.unwrap(), None);
}

fn rule_of(offer: &bulklink_core::domain::Offer, countries: &[&str]) -> OfferRule {
    OfferRule {
        offer_id: offer.id,
        brand_id: offer.brand_id,
        filter: LocationFilter {
            country: countries.iter().map(|c| c.parse().unwrap()).collect(),
            ..Default::default()
        },
        set_at: now_ms(),
    }
}

fn in_country(location: &mut Location, country: &str) -> LocationChange {
    let change = LocationChange {
        attributes: AttributesChange {
            country: Some(Some(country.parse().unwrap())),
            ..Default::default()
        },
        ..Default::default()
    };
    location.attributes.country = Some(country.parse().unwrap());
    change
}

pub async fn following_a_rule_links_what_it_wants_unlinks_the_rest_and_counts_each_once(
    fx: &Fixture,
) {
    let catalog = &fx.ports.catalog;
    let (offer, ids) = seed(&fx.ports, 4).await;
    let (gb, ie, closed_gb, later) = (ids[0], ids[1], ids[2], ids[3]);
    for (id, country) in [(gb, "GB"), (ie, "IE"), (closed_gb, "GB"), (later, "GB")] {
        let mut location = catalog.get_location(id).await.unwrap().unwrap();
        catalog
            .update_location(id, &in_country(&mut location, country))
            .await
            .unwrap();
    }
    catalog
        .update_location(closed_gb, &closing())
        .await
        .unwrap();
    catalog.link_direct(&offer, ie).await.unwrap();
    let rule = rule_of(&offer, &["GB"]);
    catalog.put_rule(&rule).await.unwrap();

    let asked = [gb, ie, closed_gb, LocationId::new_random()];
    assert_eq!(
        catalog
            .follow_rule(&rule, &asked, LinkedBy::Rule)
            .await
            .unwrap(),
        vec![
            LinkOutcome::Linked,
            LinkOutcome::Unlinked,
            LinkOutcome::NotLinked,
            LinkOutcome::NotFound
        ]
    );
    assert_eq!(
        total(fx, offer.id).await,
        1,
        "counted on the offer as written"
    );
    assert_eq!(
        catalog.existing_links(offer.id, &[gb, ie]).await.unwrap(),
        vec![Some(LinkedBy::Rule), None]
    );
    assert!(!catalog.get_location(ie).await.unwrap().unwrap().has_offer);
    assert!(catalog.get_location(gb).await.unwrap().unwrap().has_offer);
    assert_eq!(
        catalog
            .follow_rule(&rule, &asked, LinkedBy::Rule)
            .await
            .unwrap(),
        vec![
            LinkOutcome::AlreadyLinked,
            LinkOutcome::NotLinked,
            LinkOutcome::NotLinked,
            LinkOutcome::NotFound
        ],
        "followed again, nothing changes"
    );
    assert_eq!(total(fx, offer.id).await, 1);

    // A job sees its own links and removals again when a chunk is delivered twice.
    let job = LinkedBy::Job(JobId::new_v7());
    for _ in 0..2 {
        assert_eq!(
            catalog.follow_rule(&rule, &[later], job).await.unwrap(),
            vec![LinkOutcome::Linked]
        );
    }
    let mut moved = catalog.get_location(later).await.unwrap().unwrap();
    catalog
        .update_location(later, &in_country(&mut moved, "FR"))
        .await
        .unwrap();
    for _ in 0..2 {
        assert_eq!(
            catalog.follow_rule(&rule, &[later], job).await.unwrap(),
            vec![LinkOutcome::Unlinked]
        );
    }
    assert_eq!(total(fx, offer.id).await, 1, "made once, removed once");
    assert!(
        !catalog
            .get_location(later)
            .await
            .unwrap()
            .unwrap()
            .has_offer
    );
}

pub async fn a_brands_rules_are_those_of_its_offers_only(fx: &Fixture) {
    let catalog = &fx.ports.catalog;
    let (first, _) = seed(&fx.ports, 0).await;
    let second = offer(first.brand_id);
    let without = offer(first.brand_id);
    let (other, _) = seed(&fx.ports, 0).await;
    for made in [&second, &without] {
        catalog.create_offer(made).await.unwrap();
    }
    let mut expected = vec![rule_of(&first, &["GB"]), rule_of(&second, &[])];
    for rule in expected.iter().chain([&rule_of(&other, &["IE"])]) {
        catalog.put_rule(rule).await.unwrap();
    }
    expected.sort_by_key(|r| r.offer_id);
    let mut rules = catalog.brand_rules(first.brand_id).await.unwrap();
    rules.sort_by_key(|r| r.offer_id);
    assert_eq!(rules, expected);
    catalog.delete_rule(second.id).await.unwrap();
    let first_rule: Vec<OfferRule> = expected
        .into_iter()
        .filter(|r| r.offer_id == first.id)
        .collect();
    assert_eq!(
        catalog.brand_rules(first.brand_id).await.unwrap(),
        first_rule
    );
}

/// Every rule of `offers`, as `page_rules` lists them (the store's other rules left out),
/// reading every page.
async fn watched(fx: &Fixture, offers: &[OfferId]) -> Vec<bulklink_core::domain::WatchedRule> {
    let mut found = Vec::new();
    let mut cursor = None;
    loop {
        let page = fx
            .ports
            .catalog
            .page_rules(cursor.as_ref(), 2)
            .await
            .unwrap();
        found.extend(
            page.items
                .into_iter()
                .filter(|w| offers.contains(&w.rule.offer_id)),
        );
        cursor = page.next;
        if cursor.is_none() {
            return found;
        }
    }
}

/// `page_rules` lists every brand's rules in offer-id order, each once, with its drift
/// watch; a note is written only on the rule and watch it was read with; setting the rule
/// again starts the watch afresh; removing the rule, or the offer, takes it off the list.
pub async fn every_rule_is_listed_with_its_drift_watch_and_notes_are_conditional(fx: &Fixture) {
    use bulklink_core::domain::DriftWatch;
    let catalog = &fx.ports.catalog;
    let (first, _) = seed(&fx.ports, 0).await;
    let second = offer(first.brand_id);
    catalog.create_offer(&second).await.unwrap();
    let (other, _) = seed(&fx.ports, 0).await;
    let mut rules = vec![
        rule_of(&first, &["GB"]),
        rule_of(&second, &[]),
        rule_of(&other, &["IE"]),
    ];
    for rule in &rules {
        catalog.put_rule(rule).await.unwrap();
    }
    rules.sort_by_key(|r| r.offer_id);
    let offers: Vec<OfferId> = rules.iter().map(|r| r.offer_id).collect();
    let listed = watched(fx, &offers).await;
    assert_eq!(
        listed.iter().map(|w| w.rule.clone()).collect::<Vec<_>>(),
        rules,
        "every brand's, in offer-id order"
    );
    assert!(listed.iter().all(|w| w.watch == DriftWatch::default()));

    let rule = rules[0].clone();
    let since = now_ms();
    let drifting = DriftWatch {
        since: Some(since),
        notified: false,
    };
    let told = DriftWatch {
        since: Some(since),
        notified: true,
    };
    assert!(catalog
        .note_drift(&rule, DriftWatch::default(), drifting)
        .await
        .unwrap());
    // Another watch that read the rule before: its note is refused.
    assert!(!catalog
        .note_drift(&rule, DriftWatch::default(), drifting)
        .await
        .unwrap());
    assert!(catalog.note_drift(&rule, drifting, told).await.unwrap());
    assert!(!catalog.note_drift(&rule, drifting, told).await.unwrap());
    let seen = watched(fx, &[rule.offer_id]).await;
    assert_eq!(seen[0].watch, told);
    assert!(catalog
        .note_drift(&rule, told, DriftWatch::default())
        .await
        .unwrap());
    assert_eq!(
        watched(fx, &[rule.offer_id]).await[0].watch,
        DriftWatch::default()
    );

    // Set again: a fresh watch, and a note on the rule as it was is refused.
    assert!(catalog
        .note_drift(&rule, DriftWatch::default(), drifting)
        .await
        .unwrap());
    let again = OfferRule {
        set_at: rule.set_at + chrono::Duration::seconds(1),
        ..rule.clone()
    };
    catalog.put_rule(&again).await.unwrap();
    let seen = watched(fx, &[rule.offer_id]).await;
    assert_eq!(
        (seen[0].rule.clone(), seen[0].watch),
        (again.clone(), DriftWatch::default())
    );
    assert!(!catalog
        .note_drift(&rule, DriftWatch::default(), drifting)
        .await
        .unwrap());

    // Removed, or gone with its offer: no longer listed, and nothing can be noted.
    assert!(catalog.delete_rule(second.id).await.unwrap());
    assert_eq!(
        fx.ports.jobs.delete_offer(other.id).await.unwrap(),
        bulklink_core::ports::OfferDeletion::Deleted
    );
    let left = watched(fx, &offers).await;
    assert_eq!(
        left.iter().map(|w| w.rule.offer_id).collect::<Vec<_>>(),
        vec![first.id]
    );
    let removed = rules.iter().find(|r| r.offer_id == second.id).unwrap();
    assert!(!catalog
        .note_drift(removed, DriftWatch::default(), drifting)
        .await
        .unwrap());
}
