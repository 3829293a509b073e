//! Catalog contracts: offers and locations are created once, brand pages are complete and
//! ordered, and links are conditional writes whose replays are recognised.

use bulklink_core::domain::{BrandId, JobId, LinkOutcome, LinkedBy, LocationId, OfferId};
use bulklink_core::ports::Cursor;
use bulklink_core::StoreError;

use crate::support::{ids, locations, offer, seed, Fixture};

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
            .page_brand_locations(brand, cursor.as_ref(), 10)
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
