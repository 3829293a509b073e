//! Import contracts: a row of an import's file is an upsert by external id that writes the
//! import's mark in the same write, so a replayed row answers as it did the first time and a
//! second row of one store is a duplicate; closing what a file did not name closes each
//! active, unnamed store once; an import starts once; its file is taken once and read by
//! byte range until it is deleted.

use bulklink_core::domain::{
    BrandId, Import, ImportFormat, ImportId, ImportMark, ImportState, JobId, LinkOutcome, LinkedBy,
    Location, LocationChange, LocationId, LocationStatus, OfferId, RawRow, RowOutcome,
};
use bulklink_core::ports::ByteStream;
use bulklink_core::StoreError;
use chrono::{DateTime, Duration, Utc};

use crate::support::{locations, offer, Fixture};

/// The fixture's time, to the millisecond (what stores keep).
fn now(fx: &Fixture) -> DateTime<Utc> {
    let at = fx.ports.clock.now();
    DateTime::from_timestamp_millis(at.timestamp_millis()).expect("a valid time")
}

/// A row of a file: the store `external_id`, in `city`.
fn raw(external_id: &str, city: &str) -> RawRow {
    RawRow {
        external_id: Some(external_id.to_owned()),
        name: Some("Soho".to_owned()),
        address: Some("1 Dean Street".to_owned()),
        city: Some(city.to_owned()),
        postcode: Some("W1D 3QU".to_owned()),
        country: Some("GB".to_owned()),
        tags: Some(vec!["drive-thru".to_owned(), "late".to_owned()]),
        ..RawRow::default()
    }
}

/// What a worker makes of a row: the brand's location it describes, under a fresh id (a
/// redelivered chunk reads it under another), with times of `at`.
fn row(brand: BrandId, raw: RawRow, at: DateTime<Utc>) -> Location {
    raw.into_location(brand, at).expect("a valid row")
}

/// The mark a worker sends with the row at `line` of `job`'s file; the store fills in the
/// outcome.
fn mark(job: JobId, line: u64) -> ImportMark {
    ImportMark {
        job,
        line,
        outcome: RowOutcome::Created,
    }
}

fn marked(job: JobId, line: u64, outcome: RowOutcome) -> Option<ImportMark> {
    Some(ImportMark { job, line, outcome })
}

/// The mark `close_unimported` leaves.
fn closed_by(job: JobId) -> Option<ImportMark> {
    marked(job, 0, RowOutcome::Closed)
}

async fn marks(fx: &Fixture, ids: &[LocationId]) -> Vec<Option<ImportMark>> {
    fx.ports.location_imports.import_marks(ids).await.unwrap()
}

async fn stored(fx: &Fixture, id: LocationId) -> Location {
    let location = fx.ports.catalog.get_location(id).await.unwrap();
    location.unwrap_or_else(|| panic!("location {id} exists"))
}

async fn total(fx: &Fixture, offer: OfferId) -> u64 {
    let offer = fx.ports.catalog.get_offer(offer).await.unwrap().unwrap();
    offer.locations_total
}

pub async fn a_new_row_creates_its_location_and_a_replay_answers_from_the_mark(fx: &Fixture) {
    let (catalog, imports) = (&fx.ports.catalog, &fx.ports.location_imports);
    let brand = BrandId::new_random();
    let job = JobId::new_v7();
    let an_hour_ago = now(fx) - Duration::hours(1);
    let sent = row(brand, raw("s-1", "London"), an_hour_ago);

    let made = imports.import_row(&sent, mark(job, 2)).await.unwrap();

    assert_eq!(made.outcome, RowOutcome::Created);
    assert_eq!(made.location, sent.id);
    let found = catalog.find_by_external_id(brand, "s-1").await.unwrap();
    assert_eq!(
        found,
        Some(sent.clone()),
        "made as the row says: its id, attributes and times"
    );
    assert_eq!(
        marks(fx, &[sent.id]).await,
        vec![marked(job, 2, RowOutcome::Created)]
    );

    // The same row again, read under a new id by a redelivered chunk: the mark answers.
    let again = row(brand, raw("s-1", "London"), now(fx));
    let replay = imports.import_row(&again, mark(job, 2)).await.unwrap();

    assert_eq!(replay.outcome, RowOutcome::Created);
    assert_eq!(
        replay.location, sent.id,
        "the location the first delivery made"
    );
    let found = catalog.find_by_external_id(brand, "s-1").await.unwrap();
    assert_eq!(found, Some(sent.clone()), "nothing changed");
    assert_eq!(catalog.get_location(again.id).await.unwrap(), None);
    assert_eq!(
        marks(fx, &[sent.id, again.id]).await,
        vec![marked(job, 2, RowOutcome::Created), None]
    );

    // Another brand's store of the same external id is a location of its own.
    let elsewhere = row(BrandId::new_random(), raw("s-1", "Leeds"), an_hour_ago);
    let other_job = JobId::new_v7();
    let outcome = imports
        .import_row(&elsewhere, mark(other_job, 2))
        .await
        .unwrap()
        .outcome;
    assert_eq!(outcome, RowOutcome::Created);
    assert_eq!(stored(fx, elsewhere.id).await, elsewhere);
    assert_eq!(stored(fx, sent.id).await, sent);

    // A row is applied by its external id: a location without one is refused, unmade.
    let mut nameless = row(brand, raw("s-2", "London"), an_hour_ago);
    nameless.external_id = None;
    let refused = imports.import_row(&nameless, mark(job, 3)).await;
    assert!(
        matches!(refused, Err(StoreError::Invalid(_))),
        "{refused:?}"
    );
    assert_eq!(catalog.get_location(nameless.id).await.unwrap(), None);
}

pub async fn another_row_of_the_same_store_in_one_file_is_a_duplicate_and_changes_nothing(
    fx: &Fixture,
) {
    let imports = &fx.ports.location_imports;
    let brand = BrandId::new_random();
    let job = JobId::new_v7();
    let sent = row(brand, raw("s-1", "London"), now(fx) - Duration::hours(1));
    imports.import_row(&sent, mark(job, 2)).await.unwrap();

    let later_line = row(brand, raw("s-1", "Leeds"), now(fx));
    let outcome = imports
        .import_row(&later_line, mark(job, 7))
        .await
        .unwrap()
        .outcome;

    assert_eq!(outcome, RowOutcome::Duplicate { first_line: 2 });
    assert_eq!(stored(fx, sent.id).await, sent, "the location is unchanged");
    assert_eq!(
        marks(fx, &[sent.id]).await,
        vec![marked(job, 2, RowOutcome::Created)],
        "the first row's mark stays"
    );
    assert_eq!(
        fx.ports.catalog.get_location(later_line.id).await.unwrap(),
        None
    );
}

pub async fn a_later_import_of_the_same_row_is_unchanged_and_leaves_its_own_mark(fx: &Fixture) {
    let imports = &fx.ports.location_imports;
    let brand = BrandId::new_random();
    let (first, second) = (JobId::new_v7(), JobId::new_v7());
    let sent = row(brand, raw("s-1", "London"), now(fx) - Duration::hours(1));
    imports.import_row(&sent, mark(first, 2)).await.unwrap();

    let same = row(brand, raw("s-1", "London"), now(fx));
    let outcome = imports
        .import_row(&same, mark(second, 5))
        .await
        .unwrap()
        .outcome;

    assert_eq!(outcome, RowOutcome::Unchanged);
    assert_eq!(stored(fx, sent.id).await, sent, "updatedAt did not move");
    assert_eq!(
        marks(fx, &[sent.id]).await,
        vec![marked(second, 5, RowOutcome::Unchanged)],
        "the mark is the later import's"
    );

    // That mark answers the later import's replay, and makes its second row of the store a
    // duplicate, changed or not.
    let replay = imports
        .import_row(&same, mark(second, 5))
        .await
        .unwrap()
        .outcome;
    assert_eq!(replay, RowOutcome::Unchanged);
    let changed = row(brand, raw("s-1", "Leeds"), now(fx));
    let duplicate = imports
        .import_row(&changed, mark(second, 9))
        .await
        .unwrap()
        .outcome;
    assert_eq!(duplicate, RowOutcome::Duplicate { first_line: 5 });
    assert_eq!(stored(fx, sent.id).await, sent);
    assert_eq!(
        marks(fx, &[sent.id]).await,
        vec![marked(second, 5, RowOutcome::Unchanged)]
    );
}

pub async fn a_changed_row_updates_the_location_in_place_and_keeps_its_links(fx: &Fixture) {
    let (catalog, imports) = (&fx.ports.catalog, &fx.ports.location_imports);
    let brand = BrandId::new_random();
    let offer = offer(brand);
    catalog.create_offer(&offer).await.unwrap();
    let an_hour_ago = now(fx) - Duration::hours(1);
    let sent = row(brand, raw("s-1", "London"), an_hour_ago);
    imports
        .import_row(&sent, mark(JobId::new_v7(), 2))
        .await
        .unwrap();
    assert_eq!(
        catalog.link_direct(&offer, sent.id).await.unwrap(),
        LinkOutcome::Linked
    );
    let job = JobId::new_v7();

    let moved = row(brand, raw("s-1", "Leeds"), an_hour_ago);
    let outcome = imports
        .import_row(&moved, mark(job, 4))
        .await
        .unwrap()
        .outcome;

    assert_eq!(outcome, RowOutcome::Updated);
    let updated = stored(fx, sent.id).await;
    assert_eq!(updated.attributes.city.as_deref(), Some("Leeds"));
    assert_eq!(updated.attributes, moved.attributes);
    assert_eq!(updated.created_at, Some(an_hour_ago));
    assert!(updated.updated_at > Some(an_hour_ago), "{updated:?}");
    assert!(updated.has_offer, "its links are kept");
    assert_eq!(
        catalog.existing_links(offer.id, &[sent.id]).await.unwrap(),
        vec![Some(LinkedBy::Direct)]
    );
    assert_eq!(total(fx, offer.id).await, 1);
    assert_eq!(
        catalog.find_by_external_id(brand, "s-1").await.unwrap(),
        Some(updated.clone())
    );
    assert_eq!(catalog.get_location(moved.id).await.unwrap(), None);
    assert_eq!(
        marks(fx, &[sent.id]).await,
        vec![marked(job, 4, RowOutcome::Updated)]
    );

    // Its replay answers Updated and moves nothing.
    let replay = imports
        .import_row(&moved, mark(job, 4))
        .await
        .unwrap()
        .outcome;
    assert_eq!(replay, RowOutcome::Updated);
    assert_eq!(stored(fx, sent.id).await, updated);

    // A row is the store whole: what it leaves out, the location loses.
    let mut bare = raw("s-1", "Leeds");
    bare.name = None;
    bare.tags = None;
    let next = JobId::new_v7();
    let outcome = imports
        .import_row(&row(brand, bare, now(fx)), mark(next, 2))
        .await
        .unwrap()
        .outcome;
    assert_eq!(outcome, RowOutcome::Updated);
    let bared = stored(fx, sent.id).await;
    assert_eq!(bared.attributes.name, None);
    assert!(bared.attributes.tags.is_empty());
    assert_eq!(bared.attributes.city.as_deref(), Some("Leeds"));
}

pub async fn a_row_that_closes_a_store_takes_it_out_of_its_offers(fx: &Fixture) {
    let (catalog, imports) = (&fx.ports.catalog, &fx.ports.location_imports);
    let brand = BrandId::new_random();
    let offer = offer(brand);
    catalog.create_offer(&offer).await.unwrap();
    let an_hour_ago = now(fx) - Duration::hours(1);
    let sent = row(brand, raw("s-1", "London"), an_hour_ago);
    imports
        .import_row(&sent, mark(JobId::new_v7(), 2))
        .await
        .unwrap();
    let neighbour = locations(brand, 1).remove(0);
    catalog
        .create_locations(std::slice::from_ref(&neighbour))
        .await
        .unwrap();
    for id in [sent.id, neighbour.id] {
        assert_eq!(
            catalog.link_direct(&offer, id).await.unwrap(),
            LinkOutcome::Linked
        );
    }
    assert!(stored(fx, sent.id).await.has_offer);
    assert_eq!(total(fx, offer.id).await, 2);
    let job = JobId::new_v7();

    let mut closing = raw("s-1", "London");
    closing.status = Some("closed".to_owned());
    let closing = row(brand, closing, now(fx));
    let outcome = imports
        .import_row(&closing, mark(job, 3))
        .await
        .unwrap()
        .outcome;

    assert_eq!(outcome, RowOutcome::Updated);
    let closed = stored(fx, sent.id).await;
    assert_eq!(closed.status, LocationStatus::Closed);
    assert!(!closed.has_offer, "{closed:?}");
    assert!(closed.updated_at > Some(an_hour_ago));
    assert_eq!(
        catalog
            .existing_links(offer.id, &[sent.id, neighbour.id])
            .await
            .unwrap(),
        vec![None, Some(LinkedBy::Direct)]
    );
    assert_eq!(total(fx, offer.id).await, 1, "one store left the offer");
    assert_eq!(
        marks(fx, &[sent.id]).await,
        vec![marked(job, 3, RowOutcome::Updated)]
    );

    // Its replay leaves the offer alone.
    let replay = imports
        .import_row(&closing, mark(job, 3))
        .await
        .unwrap()
        .outcome;
    assert_eq!(replay, RowOutcome::Updated);
    assert_eq!(total(fx, offer.id).await, 1);
    assert_eq!(stored(fx, sent.id).await, closed);
    assert_eq!(
        catalog.link_direct(&offer, sent.id).await.unwrap(),
        LinkOutcome::NotFound,
        "a closed store is not linked"
    );

    // A later file naming it active reopens it, carrying nothing but linkable again.
    let reopening = row(brand, raw("s-1", "London"), now(fx));
    let outcome = imports
        .import_row(&reopening, mark(JobId::new_v7(), 2))
        .await
        .unwrap()
        .outcome;
    assert_eq!(outcome, RowOutcome::Updated);
    let reopened = stored(fx, sent.id).await;
    assert!(reopened.is_active() && !reopened.has_offer, "{reopened:?}");
    assert_eq!(
        catalog.link_direct(&offer, sent.id).await.unwrap(),
        LinkOutcome::Linked
    );
    assert_eq!(total(fx, offer.id).await, 2);
}

pub async fn closing_what_a_file_did_not_name_closes_each_active_unnamed_store_once(fx: &Fixture) {
    let (catalog, imports) = (&fx.ports.catalog, &fx.ports.location_imports);
    let brand = BrandId::new_random();
    let (job, earlier) = (JobId::new_v7(), JobId::new_v7());
    let an_hour_ago = now(fx) - Duration::hours(1);
    // A: named by the job's file.
    let a = row(brand, raw("s-a", "London"), an_hour_ago);
    imports.import_row(&a, mark(job, 2)).await.unwrap();
    // B: active, never imported; C: closed already; D: deleted.
    let mut made = locations(brand, 3);
    for location in &mut made {
        location.created_at = Some(an_hour_ago);
        location.updated_at = Some(an_hour_ago);
    }
    catalog.create_locations(&made).await.unwrap();
    let (b, c, d) = (made[0].id, made[1].id, made[2].id);
    let close = LocationChange {
        status: Some(LocationStatus::Closed),
        ..LocationChange::default()
    };
    catalog.update_location(c, &close).await.unwrap().unwrap();
    catalog.delete_location(d).await.unwrap().unwrap();
    // E: named by an earlier import's file, not by this one. X: never was.
    let e = row(brand, raw("s-e", "York"), an_hour_ago);
    imports.import_row(&e, mark(earlier, 2)).await.unwrap();
    let x = LocationId::new_random();
    let ids = [a.id, b, c, d, e.id, x];
    let (a_before, c_before) = (stored(fx, a.id).await, stored(fx, c).await);

    let outcomes = imports.close_unimported(job, &ids).await.unwrap();

    use RowOutcome::{Closed, Gone};
    assert_eq!(outcomes, vec![Gone, Closed, Gone, Gone, Closed, Gone]);
    let expected_marks = vec![
        marked(job, 2, RowOutcome::Created),
        closed_by(job),
        None,
        None,
        closed_by(job),
        None,
    ];
    assert_eq!(marks(fx, &ids).await, expected_marks);
    let (b_after, e_after) = (stored(fx, b).await, stored(fx, e.id).await);
    for closed in [&b_after, &e_after] {
        assert_eq!(closed.status, LocationStatus::Closed, "{closed:?}");
        assert!(closed.updated_at > Some(an_hour_ago), "{closed:?}");
    }
    assert_eq!(
        stored(fx, a.id).await,
        a_before,
        "named by the file: left alone"
    );
    assert_eq!(stored(fx, c).await, c_before, "closed already: left alone");
    assert_eq!(catalog.get_location(d).await.unwrap(), None);
    assert_eq!(catalog.get_location(x).await.unwrap(), None);

    // Again (a redelivered chunk): the same answers, and nothing changes.
    let again = imports.close_unimported(job, &ids).await.unwrap();

    assert_eq!(again, vec![Gone, Closed, Gone, Gone, Closed, Gone]);
    assert_eq!(marks(fx, &ids).await, expected_marks);
    assert_eq!(stored(fx, b).await, b_after);
    assert_eq!(stored(fx, e.id).await, e_after);

    // Another import finds them closed by someone else: gone, and the marks stay.
    let other = imports
        .close_unimported(JobId::new_v7(), &[b, e.id])
        .await
        .unwrap();
    assert_eq!(other, vec![Gone, Gone]);
    assert_eq!(
        marks(fx, &[b, e.id]).await,
        vec![closed_by(job), closed_by(job)]
    );
}

pub async fn closing_an_unnamed_store_takes_it_out_of_every_offer_once(fx: &Fixture) {
    let (catalog, imports) = (&fx.ports.catalog, &fx.ports.location_imports);
    let brand = BrandId::new_random();
    let (first, second) = (offer(brand), offer(brand));
    catalog.create_offer(&first).await.unwrap();
    catalog.create_offer(&second).await.unwrap();
    let job = JobId::new_v7();
    let unnamed = locations(brand, 1).remove(0);
    catalog
        .create_locations(std::slice::from_ref(&unnamed))
        .await
        .unwrap();
    let named = row(brand, raw("s-1", "London"), now(fx) - Duration::hours(1));
    imports.import_row(&named, mark(job, 2)).await.unwrap();
    for (offer, id) in [
        (&first, unnamed.id),
        (&second, unnamed.id),
        (&first, named.id),
    ] {
        assert_eq!(
            catalog.link_direct(offer, id).await.unwrap(),
            LinkOutcome::Linked
        );
    }
    assert_eq!(
        (total(fx, first.id).await, total(fx, second.id).await),
        (2, 1)
    );

    let ids = [unnamed.id, named.id];
    let outcomes = imports.close_unimported(job, &ids).await.unwrap();

    assert_eq!(outcomes, vec![RowOutcome::Closed, RowOutcome::Gone]);
    assert_eq!(
        (total(fx, first.id).await, total(fx, second.id).await),
        (1, 0)
    );
    assert_eq!(
        catalog.existing_links(first.id, &ids).await.unwrap(),
        vec![None, Some(LinkedBy::Direct)]
    );
    assert_eq!(
        catalog
            .existing_links(second.id, &[unnamed.id])
            .await
            .unwrap(),
        vec![None]
    );
    let closed = stored(fx, unnamed.id).await;
    assert!(!closed.is_active() && !closed.has_offer, "{closed:?}");
    assert!(stored(fx, named.id).await.has_offer);

    // A replay takes nothing off the offers again.
    let again = imports.close_unimported(job, &ids).await.unwrap();
    assert_eq!(again, vec![RowOutcome::Closed, RowOutcome::Gone]);
    assert_eq!(
        (total(fx, first.id).await, total(fx, second.id).await),
        (1, 0)
    );
}

/// A new import of the fixture's time: waiting 15 minutes for its file.
fn import(fx: &Fixture) -> Import {
    let created = now(fx);
    Import {
        id: ImportId::new_v7(),
        brand_id: BrandId::new_random(),
        format: ImportFormat::Csv,
        close_missing: true,
        created_at: created,
        expires_at: created + Duration::minutes(15),
        job_id: JobId::new_v7(),
        started_at: None,
        token_hash: None,
        principal: Some("brand-admin".to_owned()),
    }
}

pub async fn an_import_reads_back_as_created_waiting_for_its_file(fx: &Fixture) {
    let imports = &fx.ports.imports;
    let mut made = import(fx);
    made.format = ImportFormat::Ndjson;
    made.token_hash = Some("ab".repeat(32));

    imports.create_import(&made).await.unwrap();

    let read = imports.get_import(made.id).await.unwrap();
    assert_eq!(read.as_ref(), Some(&made));
    let read = read.unwrap();
    assert_eq!(read.started_at, None);
    assert_eq!(read.state(made.created_at), ImportState::Waiting);
    assert_eq!(
        read.state(made.expires_at - Duration::milliseconds(1)),
        ImportState::Waiting
    );
    assert_eq!(read.state(made.expires_at), ImportState::Expired);
    assert_eq!(imports.get_import(ImportId::new_v7()).await.unwrap(), None);
}

pub async fn an_import_starts_once_at_the_first_time_recorded(fx: &Fixture) {
    let imports = &fx.ports.imports;
    let made = import(fx);
    imports.create_import(&made).await.unwrap();
    let arrived = made.created_at + Duration::minutes(1);

    let started = imports.mark_started(made.id, arrived).await.unwrap();

    let expected = Import {
        started_at: Some(arrived),
        ..made.clone()
    };
    assert_eq!(started.as_ref(), Some(&expected));
    // A second arrival (a replayed event) keeps the first time.
    let later = imports
        .mark_started(made.id, arrived + Duration::minutes(5))
        .await
        .unwrap();
    assert_eq!(later.as_ref(), Some(&expected));
    assert_eq!(imports.get_import(made.id).await.unwrap(), Some(expected));
    let read = later.unwrap();
    assert_eq!(read.state(arrived), ImportState::Started);
    assert_eq!(
        read.state(made.expires_at + Duration::hours(1)),
        ImportState::Started,
        "a started import does not expire"
    );

    let unknown = ImportId::new_v7();
    assert_eq!(imports.mark_started(unknown, arrived).await.unwrap(), None);
    assert_eq!(
        imports.get_import(unknown).await.unwrap(),
        None,
        "marking makes no import"
    );
}

/// The most bytes the tests' uploads take.
const LIMIT: u64 = 1024 * 1024;

fn body(pieces: &[&[u8]]) -> ByteStream {
    let pieces: Vec<Result<Vec<u8>, String>> = pieces.iter().map(|p| Ok(p.to_vec())).collect();
    Box::pin(futures::stream::iter(pieces))
}

/// A PUT of `file` to an upload URL of S3 (the emulator, on this machine); its status.
async fn put(url: &str, file: Vec<u8>) -> reqwest::StatusCode {
    assert!(url.starts_with("http://127.0.0.1:"), "{url}");
    let http = reqwest::Client::builder().no_proxy().build().unwrap();
    let response = http.put(url).body(file).send().await.unwrap();
    response.status()
}

/// Sends the import's file as its client does: through the server's own route in pieces
/// (embedded), or by a PUT to its presigned URL (AWS).
async fn upload(fx: &Fixture, import: &Import, pieces: &[&[u8]]) {
    let uploads = &fx.ports.uploads;
    let file = pieces.concat();
    if fx.is_embedded() {
        let kept = uploads.receive(import.id, body(pieces), LIMIT).await;
        assert_eq!(kept.unwrap(), file.len() as u64);
    } else {
        let url = uploads.upload_url(import, None).await.unwrap();
        let status = put(&url, file).await;
        assert!(status.is_success(), "{status}");
    }
}

const FILE: [&[u8]; 3] = [
    b"externalId,address\n",
    b"s-1,1 Dean Street\n",
    b"s-2,2 High Street\n",
];

pub async fn a_taken_file_reads_back_by_byte_range_until_deleted(fx: &Fixture) {
    let uploads = &fx.ports.uploads;
    let import = import(fx);
    let file = FILE.concat();
    let len = file.len() as u64;
    upload(fx, &import, &FILE).await;

    uploads.take(import.id).await.unwrap();

    assert_eq!(uploads.size(import.id).await.unwrap(), Some(len));
    for (start, end) in [
        (0, 10),
        (10, 30),
        (0, len),
        (len - 5, len),
        (len - 5, len + 100),
    ] {
        let read = uploads.read(import.id, start, end).await.unwrap();
        let wanted = &file[start as usize..end.min(len) as usize];
        assert_eq!(read, wanted, "bytes {start}..{end}");
    }
    // An empty range, or one at or past the end, has none of the file's bytes.
    for (start, end) in [(7, 7), (len, len + 10), (len + 5, len + 10)] {
        let read = uploads.read(import.id, start, end).await.unwrap();
        assert_eq!(read, Vec::<u8>::new(), "bytes {start}..{end}");
    }

    uploads.delete(import.id).await.unwrap();

    assert_eq!(uploads.size(import.id).await.unwrap(), None);
    let gone = uploads.read(import.id, 0, 10).await;
    assert!(matches!(gone, Err(StoreError::Invalid(_))), "{gone:?}");
    uploads.delete(import.id).await.unwrap();
    assert_eq!(uploads.size(import.id).await.unwrap(), None);
}

pub async fn a_file_taken_is_the_imports_own_and_a_later_upload_changes_nothing(fx: &Fixture) {
    let uploads = &fx.ports.uploads;
    let import = import(fx);
    let file = FILE.concat();
    upload(fx, &import, &FILE).await;
    uploads.take(import.id).await.unwrap();

    let second = b"externalId,address\nother,9 Other Road\n".to_vec();
    if fx.is_embedded() {
        // The server's route takes one file only.
        let refused = uploads.receive(import.id, body(&[&second]), LIMIT).await;
        assert!(
            matches!(refused, Err(StoreError::Conflict(_))),
            "{refused:?}"
        );
    } else {
        // A presigned PUT works until it expires: S3 takes it, the import does not.
        let url = uploads.upload_url(&import, None).await.unwrap();
        let status = put(&url, second).await;
        assert!(status.is_success(), "{status}");
    }
    uploads.take(import.id).await.unwrap();

    assert_eq!(
        uploads.size(import.id).await.unwrap(),
        Some(file.len() as u64)
    );
    assert_eq!(uploads.read(import.id, 0, LIMIT).await.unwrap(), file);
}

/// The server receives a file itself only on the embedded backend; on AWS every `receive` is
/// refused (the file goes to S3). Either way a refused file leaves nothing.
pub async fn a_received_file_over_the_limit_or_broken_off_is_refused_and_nothing_kept(
    fx: &Fixture,
) {
    let uploads = &fx.ports.uploads;
    let import = import(fx);
    let pieces: [&[u8]; 3] = [&[b'a'; 10], &[b'b'; 10], &[b'c'; 10]];

    let over = uploads.receive(import.id, body(&pieces), 25).await;

    assert!(matches!(over, Err(StoreError::Invalid(_))), "{over:?}");
    assert_eq!(uploads.size(import.id).await.unwrap(), None);

    if !fx.is_embedded() {
        let within = uploads.receive(import.id, body(&pieces), LIMIT).await;
        assert!(matches!(within, Err(StoreError::Invalid(_))), "{within:?}");
        assert_eq!(uploads.size(import.id).await.unwrap(), None);
        return;
    }
    let broken: ByteStream = Box::pin(futures::stream::iter(vec![
        Ok(b"externalId,address\n".to_vec()),
        Err("the connection closed".to_owned()),
    ]));
    let broken = uploads.receive(import.id, broken, LIMIT).await;
    assert!(matches!(broken, Err(StoreError::Invalid(_))), "{broken:?}");
    assert_eq!(uploads.size(import.id).await.unwrap(), None);

    // Nothing was kept, so the import still takes its file: exactly the limit is allowed.
    let kept = uploads.receive(import.id, body(&pieces), 30).await.unwrap();
    assert_eq!(kept, 30);
    uploads.take(import.id).await.unwrap();
    assert_eq!(uploads.size(import.id).await.unwrap(), Some(30));
    assert_eq!(
        uploads.read(import.id, 0, LIMIT).await.unwrap(),
        pieces.concat()
    );
}
