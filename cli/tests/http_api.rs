//! The HTTP API over real HTTP: idempotent creation, catalog routes, and bad input that
//! gets a problem+json naming the problem while the server keeps serving.

use std::time::Duration;

use bulklink::client::{ApiClient, ApiResponse};
use bulklink::runtime::{Runtime, RuntimeConfig};
use bulklink_core::domain::{BrandId, LocationId, OfferId};
use bulklink_http::auth::Role;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use crate::support::*;

/// The API without consumers, and a client acting as `brand`.
async fn api_only(env: &Env, brand: BrandId) -> (Runtime, ApiClient) {
    let config = RuntimeConfig {
        consumers: false,
        ..env.config()
    };
    let runtime = env.start(config, |ports| ports).await;
    let api = runtime.api_as(Role::Brand(brand)).unwrap();
    (runtime, api)
}

crate::on_both_backends!(
    two_concurrent_posts_with_the_same_idempotency_key_create_one_job,
    the_same_idempotency_key_with_a_different_body_gets_422,
    a_second_job_for_an_offer_with_a_running_one_gets_409_with_its_location,
);

async fn two_concurrent_posts_with_the_same_idempotency_key_create_one_job(kind: Kind) {
    let env = Env::of(kind, fast_settings()).await;
    let seeded = env.seed(10).await;
    let (runtime, api) = api_only(&env, seeded.brand_id).await;
    let path = format!("/offers/{}/link-all-locations", seeded.offer_id);
    let headers = [("idempotency-key", "order-42")];

    let (a, b) = tokio::join!(
        api.send(Method::POST, &path, None, &headers),
        api.send(Method::POST, &path, None, &headers)
    );
    let (a, b) = (a.unwrap(), b.unwrap());
    assert_eq!(
        (a.status, b.status),
        (StatusCode::ACCEPTED, StatusCode::ACCEPTED)
    );
    assert_eq!(a.body["id"], b.body["id"]);
    assert_eq!(
        a.location,
        Some(format!("/jobs/{}", a.body["id"].as_str().unwrap()))
    );
    let jobs: Value = api
        .get(&format!("/jobs?brandId={}", seeded.brand_id))
        .await
        .unwrap();
    assert_eq!(jobs["items"].as_array().unwrap().len(), 1);
    runtime.shutdown().await;
}

async fn the_same_idempotency_key_with_a_different_body_gets_422(kind: Kind) {
    let env = Env::of(kind, fast_settings()).await;
    let seeded = env.seed(10).await;
    let (runtime, api) = api_only(&env, seeded.brand_id).await;
    let path = format!("/offers/{}/link-all-locations", seeded.offer_id);
    let headers = [("idempotency-key", "k1")];
    let first = api.send(Method::POST, &path, None, &headers).await.unwrap();
    assert_eq!(first.status, StatusCode::ACCEPTED);

    let body = json!({ "callbackUrl": "https://hooks.example.invalid/hook" });
    let second = api
        .send(Method::POST, &path, Some(&body), &headers)
        .await
        .unwrap();
    assert_problem(
        &second,
        StatusCode::UNPROCESSABLE_ENTITY,
        "different request",
    );
    runtime.shutdown().await;
}

async fn a_second_job_for_an_offer_with_a_running_one_gets_409_with_its_location(kind: Kind) {
    let env = Env::of(kind, fast_settings()).await;
    let seeded = env.seed(10).await;
    let (runtime, api) = api_only(&env, seeded.brand_id).await;
    let first = api.create_job(seeded.offer_id, None, None).await.unwrap();

    let path = format!("/offers/{}/link-all-locations", seeded.offer_id);
    let second = api.send(Method::POST, &path, None, &[]).await.unwrap();
    assert_problem(&second, StatusCode::CONFLICT, "already has an active job");
    assert_eq!(second.location, Some(format!("/jobs/{}", first.id)));
    runtime.shutdown().await;
}

#[tokio::test]
async fn bad_input_gets_a_problem_naming_it_and_the_server_keeps_serving() {
    let env = Env::new(fast_settings());
    let seeded = env.seed(10).await;
    let (runtime, api) = api_only(&env, seeded.brand_id).await;
    let http = reqwest::Client::new();
    let base = runtime.base_url.clone();
    let token = runtime
        .token_for("raw", Role::Brand(seeded.brand_id))
        .unwrap();

    let r = api
        .send(Method::GET, "/jobs/not-a-uuid", None, &[])
        .await
        .unwrap();
    assert_problem(
        &r,
        StatusCode::BAD_REQUEST,
        "jobId 'not-a-uuid' is not a valid UUID",
    );
    let r = api
        .send(Method::POST, "/offers/123/link-all-locations", None, &[])
        .await
        .unwrap();
    assert_problem(
        &r,
        StatusCode::BAD_REQUEST,
        "offerId '123' is not a valid UUID",
    );
    let unknown = OfferId::new_random();
    let r = api
        .send(
            Method::POST,
            &format!("/offers/{unknown}/link-all-locations"),
            None,
            &[],
        )
        .await
        .unwrap();
    assert_problem(
        &r,
        StatusCode::NOT_FOUND,
        &format!("offer {unknown} does not exist"),
    );

    let raw = |path: &str, content_type: &str, body: Vec<u8>| {
        http.post(format!("{base}{path}"))
            .bearer_auth(&token)
            .header("content-type", content_type)
            .body(body)
            .send()
    };
    let to_api = |resp: reqwest::Response| async move {
        let status = resp.status();
        let content_type = resp
            .headers()
            .get("content-type")
            .map(|v| v.to_str().unwrap().to_owned());
        let body: Value = resp.json().await.unwrap();
        ApiResponse {
            status,
            location: None,
            content_type,
            www_authenticate: None,
            retry_after: None,
            body,
        }
    };
    let r = to_api(
        raw("/offers", "application/json", b"{\"brandId\": ".to_vec())
            .await
            .unwrap(),
    )
    .await;
    assert_problem(&r, StatusCode::BAD_REQUEST, "not valid JSON");
    let r = to_api(
        raw(
            "/offers",
            "application/json",
            b"{\"brandId\": \"x\", \"name\": \"n\"}".to_vec(),
        )
        .await
        .unwrap(),
    )
    .await;
    assert_problem(
        &r,
        StatusCode::BAD_REQUEST,
        "brandId 'x' is not a valid UUID",
    );
    let r = to_api(raw("/offers", "text/plain", b"{}".to_vec()).await.unwrap()).await;
    assert_problem(
        &r,
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        "Content-Type: application/json",
    );
    let huge = format!(
        "{{\"brandId\": \"{}\", \"name\": \"{}\"}}",
        BrandId::new_random(),
        "x".repeat(100_000)
    );
    let r = to_api(
        raw("/offers", "application/json", huge.into_bytes())
            .await
            .unwrap(),
    )
    .await;
    assert_problem(
        &r,
        StatusCode::PAYLOAD_TOO_LARGE,
        "larger than the 65536-byte limit",
    );
    let link_all = format!("/offers/{}/link-all-locations", seeded.offer_id);
    let r = to_api(
        raw(&link_all, "text/plain", b"hello".to_vec())
            .await
            .unwrap(),
    )
    .await;
    assert_problem(&r, StatusCode::UNSUPPORTED_MEDIA_TYPE, "must be JSON");
    let r = to_api(
        raw(
            &link_all,
            "application/json",
            b"{\"callbackUrl\": \"ftp://x\"}".to_vec(),
        )
        .await
        .unwrap(),
    )
    .await;
    assert_problem(
        &r,
        StatusCode::BAD_REQUEST,
        "must start with http:// or https://",
    );
    let r = to_api(
        raw(&link_all, "application/json", b"{\"surprise\": 1}".to_vec())
            .await
            .unwrap(),
    )
    .await;
    assert_problem(&r, StatusCode::BAD_REQUEST, "unknown field `surprise`");

    let long_key = "k".repeat(300);
    let r = api
        .send(
            Method::POST,
            &link_all,
            None,
            &[("idempotency-key", &long_key)],
        )
        .await
        .unwrap();
    assert_problem(&r, StatusCode::BAD_REQUEST, "Idempotency-Key");
    let too_many: Vec<Value> = (0..101)
        .map(|i| json!({ "brandId": seeded.brand_id, "address": format!("{i} Road") }))
        .collect();
    let r = api
        .send(Method::POST, "/locations", Some(&json!(too_many)), &[])
        .await
        .unwrap();
    assert_problem(
        &r,
        StatusCode::BAD_REQUEST,
        "send 1 to 100 locations, not 101",
    );
    let r = api
        .send(Method::GET, "/jobs?brandId=nope", None, &[])
        .await
        .unwrap();
    assert_problem(
        &r,
        StatusCode::BAD_REQUEST,
        "brandId 'nope' is not a valid UUID",
    );
    let admin = runtime.api_as(Role::Admin).unwrap();
    let r = admin.send(Method::GET, "/jobs", None, &[]).await.unwrap();
    assert_problem(&r, StatusCode::BAD_REQUEST, "brandId is required");
    let r = api
        .send(
            Method::POST,
            "/offers",
            Some(&json!({ "name": "a\u{0}b" })),
            &[],
        )
        .await
        .unwrap();
    assert_problem(&r, StatusCode::BAD_REQUEST, "control character U+0000");
    let r = api
        .send(
            Method::POST,
            "/locations",
            Some(&json!([{ "address": "ok" }, { "address": "bell\u{7}" }])),
            &[],
        )
        .await
        .unwrap();
    assert_problem(
        &r,
        StatusCode::BAD_REQUEST,
        "[1].address contains the control character",
    );
    let r = api
        .send(
            Method::GET,
            &format!("/jobs?brandId={}&cursor=%25%25", seeded.brand_id),
            None,
            &[],
        )
        .await
        .unwrap();
    assert_problem(&r, StatusCode::BAD_REQUEST, "cursor is not valid");
    let r = api
        .send(Method::GET, "/no/such/route", None, &[])
        .await
        .unwrap();
    assert_problem(&r, StatusCode::NOT_FOUND, "no route for /no/such/route");
    let r = api
        .send(Method::DELETE, "/offers", None, &[])
        .await
        .unwrap();
    assert_problem(
        &r,
        StatusCode::METHOD_NOT_ALLOWED,
        "does not support this method",
    );

    let health: Value = api.get("/healthz").await.unwrap();
    assert_eq!(health["status"], "ok");
    let job = api.create_job(seeded.offer_id, None, None).await.unwrap();
    assert_eq!(
        job.offer_id,
        Some(seeded.offer_id),
        "still serving real requests"
    );
    runtime.shutdown().await;
}

#[tokio::test]
async fn catalog_routes_create_read_and_link() {
    let env = Env::new(fast_settings());
    let brand = BrandId::new_random();
    let (runtime, api) = api_only(&env, brand).await;
    let offer = api
        .send(
            Method::POST,
            "/offers",
            Some(&json!({ "brandId": brand, "name": "10% off" })),
            &[],
        )
        .await
        .unwrap();
    assert_eq!(offer.status, StatusCode::CREATED);
    let offer_id = offer.body["id"].as_str().unwrap().to_owned();
    assert_eq!(offer.location, Some(format!("/offers/{offer_id}")));
    let again = json!({ "id": offer_id, "brandId": brand, "name": "dup" });
    let r = api
        .send(Method::POST, "/offers", Some(&again), &[])
        .await
        .unwrap();
    assert_problem(&r, StatusCode::CONFLICT, "already exists");

    let one = api
        .send(
            Method::POST,
            "/locations",
            Some(&json!({ "brandId": brand, "address": "1 High St" })),
            &[],
        )
        .await
        .unwrap();
    assert_eq!(one.status, StatusCode::CREATED);
    assert_eq!(one.body["hasOffer"], false);
    let many = api
        .send(
            Method::POST,
            "/locations",
            Some(&json!([{ "brandId": brand, "address": "2 High St" }, { "brandId": brand, "address": "3 High St" }])),
            &[],
        )
        .await
        .unwrap();
    assert_eq!(many.status, StatusCode::CREATED);
    assert_eq!(many.body.as_array().unwrap().len(), 2);
    let location = one.body["id"].as_str().unwrap().to_owned();

    let link = format!("/offers/{offer_id}/locations/{location}");
    let first = api.send(Method::PUT, &link, None, &[]).await.unwrap();
    assert_eq!(first.status, StatusCode::CREATED);
    let second = api.send(Method::PUT, &link, None, &[]).await.unwrap();
    assert_eq!(second.status, StatusCode::OK);
    let read: Value = api.get(&format!("/offers/{offer_id}")).await.unwrap();
    assert_eq!(read["locationsTotal"], 1);
    let loc: Value = api.get(&format!("/locations/{location}")).await.unwrap();
    assert_eq!(loc["hasOffer"], true);
    let links: Value = api
        .get(&format!("/offers/{offer_id}/locations"))
        .await
        .unwrap();
    assert_eq!(links["items"][0]["locationId"], location);
    assert_eq!(links["items"][0]["linkedBy"], "direct");
    assert!(links.get("nextCursor").is_none());

    // Another brand's location: not there for this brand, a brand mismatch for an
    // administrator who can see both.
    let admin = runtime.api_as(Role::Admin).unwrap();
    let other_brand = admin
        .send(
            Method::POST,
            "/locations",
            Some(&json!({ "brandId": BrandId::new_random(), "address": "x" })),
            &[],
        )
        .await
        .unwrap();
    let foreign = other_brand.body["id"].as_str().unwrap();
    let foreign_link = format!("/offers/{offer_id}/locations/{foreign}");
    let r = api
        .send(Method::PUT, &foreign_link, None, &[])
        .await
        .unwrap();
    assert_problem(&r, StatusCode::NOT_FOUND, "does not exist");
    let r = admin
        .send(Method::PUT, &foreign_link, None, &[])
        .await
        .unwrap();
    assert_problem(&r, StatusCode::CONFLICT, "belongs to brand");
    let r = api
        .send(
            Method::PUT,
            &format!("/offers/{offer_id}/locations/{}", LocationId::new_random()),
            None,
            &[],
        )
        .await
        .unwrap();
    assert_problem(&r, StatusCode::NOT_FOUND, "does not exist");

    // The brand's offers, its own only: an administrator names the brand.
    let second: Value = api
        .post("/offers", &json!({ "name": "second" }))
        .await
        .unwrap();
    admin
        .post::<Value>(
            "/offers",
            &json!({ "brandId": BrandId::new_random(), "name": "another brand's" }),
        )
        .await
        .unwrap();
    let mut expected = vec![read.clone(), second];
    expected.sort_by_key(|o| o["id"].as_str().unwrap().to_owned());
    let first_page: Value = api.get("/offers?limit=1").await.unwrap();
    assert_eq!(first_page["items"], json!([expected[0]]));
    let cursor = first_page["nextCursor"].as_str().unwrap();
    let second_page: Value = api
        .get(&format!("/offers?limit=1&cursor={cursor}"))
        .await
        .unwrap();
    assert_eq!(second_page["items"], json!([expected[1]]));
    assert!(second_page.get("nextCursor").is_none());
    let as_admin: Value = admin
        .get(&format!("/offers?brandId={brand}"))
        .await
        .unwrap();
    assert_eq!(as_admin["items"], json!(expected));
    let r = admin.send(Method::GET, "/offers", None, &[]).await.unwrap();
    assert_problem(&r, StatusCode::BAD_REQUEST, "brandId");
    runtime.shutdown().await;
}

#[tokio::test]
async fn a_location_is_described_by_attributes_and_patched_field_by_field() {
    let env = Env::new(fast_settings());
    let brand = BrandId::new_random();
    let (runtime, api) = api_only(&env, brand).await;
    let sent = json!({
        "address": "1 High St", "name": " Soho ", "city": "London", "postcode": "W1D 3QU",
        "country": "GB", "tags": ["drive-thru", "24h", "drive-thru "], "region": null
    });
    let made = api
        .send(Method::POST, "/locations", Some(&sent), &[])
        .await
        .unwrap();
    assert_eq!(made.status, StatusCode::CREATED, "{:?}", made.body);
    let path = made.location.clone().unwrap();
    let read: Value = api.get(&path).await.unwrap();
    assert_eq!(read, made.body);
    assert_eq!(
        read["name"], "Soho",
        "kept without the white space at its ends"
    );
    assert_eq!(
        read["tags"],
        json!(["drive-thru", "24h"]),
        "a tag sent twice is kept once"
    );
    assert!(
        read.get("region").is_none(),
        "null is the same as leaving it out"
    );
    assert_eq!(read["createdAt"], read["updatedAt"]);

    // Only what the PATCH names changes; null removes an attribute.
    let patched = api
        .send(
            Method::PATCH,
            &path,
            Some(&json!({ "city": null, "tags": ["kiosk"] })),
            &[],
        )
        .await
        .unwrap();
    assert_eq!(patched.status, StatusCode::OK, "{:?}", patched.body);
    assert!(patched.body.get("city").is_none());
    assert_eq!(patched.body["tags"], json!(["kiosk"]));
    assert_eq!(patched.body["address"], "1 High St");
    assert_eq!(patched.body["country"], "GB");
    assert_eq!(patched.body["createdAt"], read["createdAt"]);
    assert_eq!(api.get::<Value>(&path).await.unwrap(), patched.body);

    for (body, detail) in [
        (
            json!({ "country": "UK" }),
            "country 'UK' is not an ISO 3166-1 alpha-2 code",
        ),
        (
            json!({ "country": "gb" }),
            "country 'gb' is not an ISO 3166-1 alpha-2 code",
        ),
        (
            json!({ "tags": vec!["t"; 21].iter().enumerate().map(|(i, _)| i.to_string()).collect::<Vec<_>>() }),
            "tags holds 21 tags; at most 20",
        ),
        (
            json!({ "tags": ["x".repeat(51)] }),
            "tags[0] is longer than 50 characters",
        ),
        (json!({ "address": null }), "address cannot be removed"),
        (json!({ "city": "" }), "city must not be empty"),
    ] {
        let r = api
            .send(Method::PATCH, &path, Some(&body), &[])
            .await
            .unwrap();
        assert_problem(&r, StatusCode::BAD_REQUEST, detail);
    }
    let r = api
        .send(
            Method::POST,
            "/locations",
            Some(&json!([{ "address": "2 High St" }, { "address": "3 High St", "country": "ZZ" }])),
            &[],
        )
        .await
        .unwrap();
    assert_problem(
        &r,
        StatusCode::BAD_REQUEST,
        "country 'ZZ' is not an ISO 3166-1",
    );
    assert_eq!(
        api.get::<Value>(&path).await.unwrap(),
        patched.body,
        "nothing changed"
    );
    runtime.shutdown().await;
}

#[tokio::test]
async fn a_brands_own_store_ids_name_one_location_each_and_upserts_follow_them() {
    let env = Env::new(fast_settings());
    let brand = BrandId::new_random();
    let (runtime, api) = api_only(&env, brand).await;
    let made = api
        .send(
            Method::POST,
            "/locations",
            Some(&json!({ "address": "1 High St", "externalId": "S-001" })),
            &[],
        )
        .await
        .unwrap();
    assert_eq!(made.status, StatusCode::CREATED, "{:?}", made.body);
    assert_eq!(made.body["externalId"], "S-001");
    let first = made.location.clone().unwrap();

    // The same store id again: 409 pointing at the location that has it.
    let again = api
        .send(
            Method::POST,
            "/locations",
            Some(&json!({ "address": "2 High St", "externalId": "S-001" })),
            &[],
        )
        .await
        .unwrap();
    assert_problem(
        &again,
        StatusCode::CONFLICT,
        "externalId 'S-001' already exists",
    );
    assert_eq!(again.location.as_deref(), Some(first.as_str()));

    // PUT by the store id: updates that location, then the same body changes nothing.
    let path = "/locations/by-external-id/S-001";
    let body = json!({ "address": "1 High St", "city": "York", "tags": ["kiosk"] });
    let updated = api.send(Method::PUT, path, Some(&body), &[]).await.unwrap();
    assert_eq!(updated.status, StatusCode::OK, "{:?}", updated.body);
    assert_eq!(
        format!("/locations/{}", updated.body["id"].as_str().unwrap()),
        first
    );
    assert_eq!(updated.body["city"], "York");
    let same = api.send(Method::PUT, path, Some(&body), &[]).await.unwrap();
    assert_eq!(same.status, StatusCode::OK);
    assert_eq!(same.body, updated.body, "updatedAt unchanged");
    // A new store id creates a location.
    let created = api
        .send(
            Method::PUT,
            "/locations/by-external-id/S%2F002",
            Some(&json!({ "address": "5 Low St" })),
            &[],
        )
        .await
        .unwrap();
    assert_eq!(created.status, StatusCode::CREATED, "{:?}", created.body);
    assert_eq!(created.body["externalId"], "S/002");
    let read: Value = api.get(created.location.as_deref().unwrap()).await.unwrap();
    assert_eq!(read, created.body);

    // An administrator names the brand; a brand cannot name another.
    let admin = runtime.api_as(Role::Admin).unwrap();
    let r = admin
        .send(Method::PUT, path, Some(&body), &[])
        .await
        .unwrap();
    assert_problem(&r, StatusCode::BAD_REQUEST, "brandId is required");
    let r = admin
        .send(
            Method::PUT,
            &format!("{path}?brandId={brand}"),
            Some(&body),
            &[],
        )
        .await
        .unwrap();
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    let r = api
        .send(
            Method::PUT,
            &format!("{path}?brandId={}", BrandId::new_random()),
            Some(&body),
            &[],
        )
        .await
        .unwrap();
    assert_eq!(r.status, StatusCode::FORBIDDEN);

    // Batches: one store id twice, or more than 50 locations with store ids, are refused.
    let twice = json!([
        { "address": "a", "externalId": "S-7" },
        { "address": "b", "externalId": "S-7" }
    ]);
    let r = api
        .send(Method::POST, "/locations", Some(&twice), &[])
        .await
        .unwrap();
    assert_problem(
        &r,
        StatusCode::BAD_REQUEST,
        "externalId 'S-7' appears twice",
    );
    let many: Vec<Value> = (0..51)
        .map(|i| json!({ "address": "x", "externalId": format!("B-{i}") }))
        .collect();
    let r = api
        .send(Method::POST, "/locations", Some(&json!(many)), &[])
        .await
        .unwrap();
    assert_problem(&r, StatusCode::BAD_REQUEST, "at most 50 locations");
    let long = format!("/locations/by-external-id/{}", "x".repeat(101));
    let r = api
        .send(Method::PUT, &long, Some(&body), &[])
        .await
        .unwrap();
    assert_problem(&r, StatusCode::BAD_REQUEST, "externalId is longer than 100");
    runtime.shutdown().await;
}

#[tokio::test]
async fn a_brands_locations_are_listed_in_id_order_narrowed_by_attribute_and_paged() {
    let env = Env::new(fast_settings());
    let brand = BrandId::new_random();
    let (runtime, api) = api_only(&env, brand).await;
    let batch = json!([
        { "address": "1 A St", "city": "London", "country": "GB", "tags": ["drive-thru"] },
        { "address": "2 A St", "city": "London", "country": "GB", "externalId": "S-2" },
        { "address": "3 A St", "city": "Leeds", "country": "GB", "tags": ["drive-thru", "24h"] },
        { "address": "4 A St", "city": "Dublin", "country": "IE" },
        { "address": "5 A St" }
    ]);
    let made = api
        .send(Method::POST, "/locations", Some(&batch), &[])
        .await
        .unwrap();
    assert_eq!(made.status, StatusCode::CREATED, "{:?}", made.body);
    let mut ids: Vec<String> = made
        .body
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["id"].as_str().unwrap().to_owned())
        .collect();
    let by_address = |address: &str| -> String {
        made.body
            .as_array()
            .unwrap()
            .iter()
            .find(|l| l["address"] == address)
            .unwrap()["id"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    ids.sort();
    // Another brand's location is never listed.
    let admin = runtime.api_as(Role::Admin).unwrap();
    let other = admin
        .send(
            Method::POST,
            "/locations",
            Some(&json!({ "brandId": BrandId::new_random(), "address": "x", "city": "London" })),
            &[],
        )
        .await
        .unwrap();
    assert_eq!(other.status, StatusCode::CREATED);

    let list = |query: &str| {
        let api = api.clone();
        let query = query.to_owned();
        async move {
            let page: Value = api.get(&format!("/locations{query}")).await.unwrap();
            page["items"]
                .as_array()
                .unwrap()
                .iter()
                .map(|l| l["id"].as_str().unwrap().to_owned())
                .collect::<Vec<_>>()
        }
    };
    assert_eq!(list("").await, ids, "all of them, in id order");
    let mut london = vec![by_address("1 A St"), by_address("2 A St")];
    london.sort();
    assert_eq!(list("?city=London").await, london);
    let mut drive_thru = vec![by_address("1 A St"), by_address("3 A St")];
    drive_thru.sort();
    assert_eq!(list("?tag=drive-thru").await, drive_thru);
    assert_eq!(
        list("?country=GB&tag=24h").await,
        vec![by_address("3 A St")]
    );
    assert_eq!(list("?externalId=S-2").await, vec![by_address("2 A St")]);
    assert_eq!(list("?country=IE&city=London").await, Vec::<String>::new());
    let whole: Value = api.get("/locations?externalId=S-2").await.unwrap();
    assert_eq!(whole["items"][0]["city"], "London", "whole locations");

    // Two at a time, by the cursor: every one once, in order.
    let mut paged = Vec::new();
    let mut next: Option<String> = None;
    loop {
        let query = match &next {
            Some(cursor) => format!("/locations?limit=2&cursor={cursor}"),
            None => "/locations?limit=2".to_owned(),
        };
        let page: Value = api.get(&query).await.unwrap();
        paged.extend(
            page["items"]
                .as_array()
                .unwrap()
                .iter()
                .map(|l| l["id"].as_str().unwrap().to_owned()),
        );
        match page.get("nextCursor").and_then(Value::as_str) {
            Some(cursor) => next = Some(cursor.to_owned()),
            None => break,
        }
    }
    assert_eq!(paged, ids);
    let r = api
        .send(Method::GET, "/locations?town=x", None, &[])
        .await
        .unwrap();
    assert_problem(&r, StatusCode::BAD_REQUEST, "town");
    let r = api
        .send(Method::GET, "/locations?tag=", None, &[])
        .await
        .unwrap();
    assert_problem(&r, StatusCode::BAD_REQUEST, "tag must not be empty");
    runtime.shutdown().await;
}

#[tokio::test]
async fn a_brands_jobs_are_listed_newest_first_and_paged() {
    let env = Env::new(fast_settings());
    let seeded = env.seed(0).await;
    let config = RuntimeConfig {
        settings: env.settings.clone(),
        ..Default::default()
    };
    let runtime = Runtime::start_embedded(&env.db(), config).await.unwrap();
    let api = runtime.api_as(Role::Brand(seeded.brand_id)).unwrap();
    let mut created = Vec::new();
    for _ in 0..3 {
        // An empty brand's job ends at once, freeing the offer for the next.
        let job = api.create_job(seeded.offer_id, None, None).await.unwrap();
        api.wait_terminal(
            job.id,
            Duration::from_millis(10),
            Duration::from_secs(10),
            |_| {},
        )
        .await
        .unwrap();
        created.push(job.id.to_string());
    }
    let page1: Value = api
        .get(&format!("/jobs?brandId={}&limit=2", seeded.brand_id))
        .await
        .unwrap();
    let cursor = page1["nextCursor"].as_str().unwrap();
    let page2: Value = api
        .get(&format!(
            "/jobs?brandId={}&limit=2&cursor={cursor}",
            seeded.brand_id
        ))
        .await
        .unwrap();
    let ids: Vec<&str> = page1["items"]
        .as_array()
        .unwrap()
        .iter()
        .chain(page2["items"].as_array().unwrap())
        .map(|j| j["id"].as_str().unwrap())
        .collect();
    created.reverse();
    assert_eq!(ids, created);
    assert!(page2.get("nextCursor").is_none());
    runtime.shutdown().await;
}

#[tokio::test]
async fn cancelling_over_http_answers_202_then_409_once_terminal() {
    let env = Env::new(fast_settings());
    let seeded = env.seed(10).await;
    let (runtime, api) = api_only(&env, seeded.brand_id).await;
    let job = api.create_job(seeded.offer_id, None, None).await.unwrap();
    let cancelling = api.cancel(job.id).await.unwrap();
    assert_eq!(
        cancelling.status,
        bulklink_core::domain::JobStatus::Cancelling
    );
    // Fanout sees the cancel and closes the job.
    let ports = runtime.ports.clone();
    fan_out(&ports, &env.settings, job.id).await;
    let r = api
        .send(Method::POST, &format!("/jobs/{}/cancel", job.id), None, &[])
        .await
        .unwrap();
    assert_problem(&r, StatusCode::CONFLICT, "is CANCELLED");
    let r = api
        .send(
            Method::POST,
            &format!("/jobs/{}/cancel", bulklink_core::domain::JobId::new_v7()),
            None,
            &[],
        )
        .await
        .unwrap();
    assert_problem(&r, StatusCode::NOT_FOUND, "does not exist");
    runtime.shutdown().await;
}

#[tokio::test]
async fn the_console_is_served_without_a_token_self_contained_and_locked_to_this_origin() {
    let env = Env::of(Kind::Embedded, fast_settings()).await;
    let (runtime, _) = api_only(&env, BrandId::new_random()).await;
    let anonymous = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let get = |path: &str| anonymous.get(format!("{}{path}", runtime.base_url)).send();

    let redirect = get("/console").await.unwrap();
    assert_eq!(redirect.status(), StatusCode::PERMANENT_REDIRECT);
    assert_eq!(
        redirect.headers()["location"],
        "console/",
        "relative: works under a stage path"
    );

    let mut bodies = Vec::new();
    for (path, content_type) in [
        ("/console/", "text/html; charset=utf-8"),
        ("/console/index.html", "text/html; charset=utf-8"),
        ("/console/console.js", "text/javascript; charset=utf-8"),
        ("/console/console.css", "text/css; charset=utf-8"),
    ] {
        let response = get(path).await.unwrap();
        assert_eq!(response.status(), StatusCode::OK, "{path}");
        let headers = response.headers().clone();
        assert_eq!(headers["content-type"], content_type, "{path}");
        let csp = headers["content-security-policy"].to_str().unwrap();
        for directive in [
            "default-src 'none'",
            "script-src 'self'",
            "connect-src 'self'",
            "frame-ancestors 'none'",
        ] {
            assert!(csp.contains(directive), "{path}: {csp} lacks {directive}");
        }
        assert_eq!(headers["x-content-type-options"], "nosniff");
        assert_eq!(headers["referrer-policy"], "no-referrer");
        bodies.push((path, response.text().await.unwrap()));
    }
    // Nothing is fetched from elsewhere: no absolute URL in the page, its script or its style
    // (the SVG namespace is a name, never fetched).
    for (path, body) in &bodies {
        let outside: Vec<&str> = body
            .match_indices("//")
            .map(|(at, _)| &body[at.saturating_sub(6)..(at + 30).min(body.len())])
            .filter(|near| near.contains("http:") || near.contains("https:"))
            .filter(|near| !near.contains("www.w3.org/2000/svg"))
            .collect();
        assert!(outside.is_empty(), "{path} refers elsewhere: {outside:?}");
    }
    assert!(bodies[0].1.contains(r#"<script src="console.js" defer>"#));
    assert!(bodies[0]
        .1
        .contains(r#"<link rel="stylesheet" href="console.css">"#));

    // Any other path under /console/ is the API's own 404; the data still needs a token.
    let missing = get("/console/nothing-here.js").await.unwrap();
    assert_eq!(missing.status(), StatusCode::NOT_FOUND);
    assert_eq!(
        missing.headers()["content-type"],
        "application/problem+json"
    );
    assert_eq!(
        get("/jobs").await.unwrap().status(),
        StatusCode::UNAUTHORIZED
    );
    runtime.shutdown().await;
}
