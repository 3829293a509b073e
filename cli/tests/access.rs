//! Who may do what: every route of the API × {own brand, other brand, administrator, no
//! token, expired token, token signed with another key}, on both backends; and idempotency
//! keys that belong to their principal.

use std::time::Duration;

use bulklink::client::{ApiClient, ApiResponse};
use bulklink::runtime::{AuthSetup, Runtime, RuntimeConfig};
use bulklink_core::domain::{BrandId, LocationId, OfferId};
use bulklink_http::auth::Role;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use crate::support::*;

crate::on_both_backends!(
    every_route_answers_each_caller_by_the_rules,
    idempotency_keys_belong_to_their_principal,
);

const KEY: &[u8] = b"the matrix test's own signing key!";

/// A token signed with `key`, of `brand`, expiring `exp_offset` seconds from now.
fn raw_token(key: &[u8], brand: BrandId, exp_offset: i64) -> String {
    let now = chrono::Utc::now().timestamp();
    let claims = json!({
        "sub": "raw", "iss": "bulklink", "aud": "bulklink",
        "iat": now, "exp": now + exp_offset, "brand_id": brand.to_string(),
    });
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(key),
    )
    .unwrap()
}

async fn api_runtime(env: &Env) -> Runtime {
    let config = RuntimeConfig {
        consumers: false,
        auth: AuthSetup::LocalKey(KEY.to_vec()),
        ..env.config()
    };
    env.start(config, |ports| ports).await
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Who {
    Own,
    Other,
    Admin,
}

/// One route: its request per caller and the status each caller must get.
struct Case {
    what: &'static str,
    method: Method,
    path: Box<dyn Fn(Who) -> String + Send + Sync>,
    body: Option<Value>,
    expect: [(Who, u16); 3],
}

fn case(
    what: &'static str,
    method: Method,
    path: impl Fn(Who) -> String + Send + Sync + 'static,
    body: Option<Value>,
    other: u16,
    own: u16,
    admin: u16,
) -> Case {
    Case {
        what,
        method,
        path: Box::new(path),
        body,
        // In this order: another brand first (it must change nothing), then the owner,
        // then an administrator.
        expect: [(Who::Other, other), (Who::Own, own), (Who::Admin, admin)],
    }
}

async fn every_route_answers_each_caller_by_the_rules(kind: Kind) {
    let env = Env::of(kind, fast_settings()).await;
    let a = env.seed(3).await;
    let b = env.seed(3).await;
    let runtime = api_runtime(&env).await;
    let ports = runtime.ports.clone();
    let own = runtime.api_as(Role::Brand(a.brand_id)).unwrap();
    let other = runtime.api_as(Role::Brand(b.brand_id)).unwrap();
    let admin = runtime.api_as(Role::Admin).unwrap();

    // Brand A's resources: a second offer, a location, a job, two webhooks.
    let second: Value = admin
        .post(
            "/offers",
            &json!({ "brandId": a.brand_id, "name": "second" }),
        )
        .await
        .unwrap();
    let a2: OfferId = second["id"].as_str().unwrap().parse().unwrap();
    let third: Value = own
        .post("/offers", &json!({ "name": "third" }))
        .await
        .unwrap();
    let a3 = third["id"].as_str().unwrap().to_owned();
    let location = ports
        .catalog
        .page_brand_locations(a.brand_id, None, None, 1)
        .await
        .unwrap()
        .items[0];
    let job = own
        .create_job(a3.parse().unwrap(), None, None)
        .await
        .unwrap();
    let hook = |n: u16| json!({ "url": format!("https://hooks-{n}.example.invalid/h") });
    let w_own: Value = own.post("/webhooks", &hook(1)).await.unwrap();
    let w_admin: Value = own.post("/webhooks", &hook(2)).await.unwrap();
    let (w_own, w_admin) = (
        w_own["id"].as_str().unwrap().to_owned(),
        w_admin["id"].as_str().unwrap().to_owned(),
    );
    let (a1, j, loc, ab) = (a.offer_id, job.id, location, a.brand_id);
    // A delivery of the first webhook, for the routes that read or redeliver one.
    let hook_sub = ports
        .webhooks
        .get_subscription(w_own.parse().unwrap())
        .await
        .unwrap()
        .unwrap();
    let mut finished = ports.jobs.get_job(j).await.unwrap().unwrap();
    finished.status = bulklink_core::domain::JobStatus::Succeeded;
    let event = bulklink_core::domain::JobEvent::of_status(&finished).unwrap();
    let delivery = ports
        .webhooks
        .create_delivery(&bulklink_core::domain::Delivery::new(
            &event.into(),
            &hook_sub,
            chrono::Utc::now(),
        ))
        .await
        .unwrap()
        .id;

    let cases = vec![
        case(
            "create a link-all job",
            Method::POST,
            move |who| {
                format!(
                    "/offers/{}/link-all-locations",
                    if who == Who::Admin { a2 } else { a1 }
                )
            },
            None,
            404,
            202,
            202,
        ),
        case(
            "read a job",
            Method::GET,
            move |_| format!("/jobs/{j}"),
            None,
            404,
            200,
            200,
        ),
        case(
            "a job's failures",
            Method::GET,
            move |_| format!("/jobs/{j}/failures"),
            None,
            404,
            200,
            200,
        ),
        case(
            "list a brand's jobs",
            Method::GET,
            move |_| format!("/jobs?brandId={ab}"),
            None,
            403,
            200,
            200,
        ),
        case(
            "list the caller's jobs",
            Method::GET,
            |_| "/jobs".to_owned(),
            None,
            200,
            200,
            400,
        ),
        case(
            "cancel a job",
            Method::POST,
            move |_| format!("/jobs/{j}/cancel"),
            None,
            404,
            202,
            202,
        ),
        case(
            "create an offer",
            Method::POST,
            |_| "/offers".to_owned(),
            Some(json!({ "brandId": ab, "name": "new" })),
            403,
            201,
            201,
        ),
        case(
            "read an offer",
            Method::GET,
            move |_| format!("/offers/{a1}"),
            None,
            404,
            200,
            200,
        ),
        case(
            "create a location",
            Method::POST,
            |_| "/locations".to_owned(),
            Some(json!({ "brandId": ab, "address": "9 Elm St" })),
            403,
            201,
            201,
        ),
        case(
            "create locations",
            Method::POST,
            |_| "/locations".to_owned(),
            Some(json!([{ "brandId": ab, "address": "1 Oak St" }])),
            403,
            201,
            201,
        ),
        case(
            "read a location",
            Method::GET,
            move |_| format!("/locations/{loc}"),
            None,
            404,
            200,
            200,
        ),
        case(
            "link one location",
            Method::PUT,
            move |_| format!("/offers/{a1}/locations/{loc}"),
            None,
            404,
            201,
            200,
        ),
        case(
            "an offer's links",
            Method::GET,
            move |_| format!("/offers/{a1}/locations"),
            None,
            404,
            200,
            200,
        ),
        case(
            "subscribe a webhook",
            Method::POST,
            |_| "/webhooks".to_owned(),
            Some(json!({ "url": "https://hooks.example.invalid/x", "filter": { "brandId": ab } })),
            403,
            201,
            201,
        ),
        case(
            "read a webhook",
            Method::GET,
            {
                let w = w_own.clone();
                move |_| format!("/webhooks/{w}")
            },
            None,
            404,
            200,
            200,
        ),
        case(
            "list a brand's webhooks",
            Method::GET,
            move |_| format!("/webhooks?brandId={ab}"),
            None,
            403,
            200,
            200,
        ),
        case(
            "the webhook event catalog",
            Method::GET,
            |_| "/webhooks/event-types".to_owned(),
            None,
            200,
            200,
            200,
        ),
        case(
            "list the caller's webhooks",
            Method::GET,
            |_| "/webhooks".to_owned(),
            None,
            200,
            200,
            400,
        ),
        case(
            "rotate a webhook's secret",
            Method::POST,
            {
                let w = w_own.clone();
                move |_| format!("/webhooks/{w}/rotate-secret")
            },
            None,
            404,
            200,
            200,
        ),
        case(
            "a webhook's deliveries",
            Method::GET,
            {
                let w = w_own.clone();
                move |_| format!("/webhooks/{w}/deliveries")
            },
            None,
            404,
            200,
            200,
        ),
        case(
            "redeliver a delivery",
            Method::POST,
            {
                let w = w_own.clone();
                move |_| format!("/webhooks/{w}/deliveries/{delivery}/redeliver")
            },
            None,
            404,
            202,
            202,
        ),
        case(
            "send a webhook a test event",
            Method::POST,
            {
                let w = w_own.clone();
                move |_| format!("/webhooks/{w}/test")
            },
            None,
            404,
            202,
            202,
        ),
        case(
            "replay a webhook's last hour",
            Method::POST,
            {
                let w = w_own.clone();
                move |_| format!("/webhooks/{w}/replay?dryRun=true")
            },
            Some(
                json!({ "since": (chrono::Utc::now() - chrono::Duration::hours(1)).to_rfc3339() }),
            ),
            404,
            200,
            200,
        ),
        case(
            "enable a webhook",
            Method::POST,
            {
                let w = w_own.clone();
                move |_| format!("/webhooks/{w}/enable")
            },
            None,
            404,
            200,
            200,
        ),
        case(
            "a job's deliveries",
            Method::GET,
            move |_| format!("/jobs/{j}/deliveries"),
            None,
            404,
            200,
            200,
        ),
        case(
            "delete a webhook",
            Method::DELETE,
            move |who| {
                format!(
                    "/webhooks/{}",
                    if who == Who::Admin { &w_admin } else { &w_own }
                )
            },
            None,
            404,
            204,
            204,
        ),
        case(
            "liveness",
            Method::GET,
            |_| "/healthz".to_owned(),
            None,
            200,
            200,
            200,
        ),
    ];

    let w_own_id = hook_sub.id.to_string();
    let a_ids = [
        a.brand_id.to_string(),
        a1.to_string(),
        a3.clone(),
        j.to_string(),
        w_own_id,
        delivery.to_string(),
    ];
    for c in &cases {
        for (who, status) in c.expect {
            let client = match who {
                Who::Own => &own,
                Who::Other => &other,
                Who::Admin => &admin,
            };
            let path = (c.path)(who);
            let r = client
                .send(c.method.clone(), &path, c.body.as_ref(), &[])
                .await
                .unwrap();
            assert_eq!(
                r.status.as_u16(),
                status,
                "{} ({} {path}) as {who:?}: {}",
                c.what,
                c.method,
                r.body
            );
            if !r.status.is_success() {
                assert_eq!(r.content_type.as_deref(), Some("application/problem+json"));
            }
            if who == Who::Other {
                // Nothing of brand A beyond the ids the request itself named.
                let text = r.body.to_string();
                let asked = format!(
                    "{path} {}",
                    c.body.as_ref().map(|b| b.to_string()).unwrap_or_default()
                );
                for id in a_ids.iter().filter(|id| !asked.contains(id.as_str())) {
                    assert!(
                        !text.contains(id.as_str()),
                        "{}: brand B saw {id}: {text}",
                        c.what
                    );
                }
            }
        }
    }

    // Without a valid token, every route but /healthz is 401 with a Bearer challenge.
    let base = ApiClient::new(&runtime.base_url).unwrap();
    let expired = base.clone().with_token(raw_token(KEY, a.brand_id, -3_600));
    let forged = base.clone().with_token(raw_token(
        b"somebody else's key, not ours!!!",
        a.brand_id,
        3_600,
    ));
    let garbage = base.clone().with_token("not.a.jwt");
    for (label, client) in [
        ("no token", &base),
        ("expired", &expired),
        ("another key", &forged),
        ("malformed", &garbage),
    ] {
        for c in cases.iter().filter(|c| c.what != "liveness") {
            let path = (c.path)(Who::Own);
            let r = client
                .send(c.method.clone(), &path, c.body.as_ref(), &[])
                .await
                .unwrap();
            assert_unauthorized(&r, &format!("{} ({path}) with {label}", c.what));
        }
    }
    let r = expired
        .send(Method::GET, &format!("/jobs/{j}"), None, &[])
        .await
        .unwrap();
    assert!(r.body["detail"].as_str().unwrap().contains("expired"));
    runtime.shutdown().await;
}

fn assert_unauthorized(r: &ApiResponse, what: &str) {
    assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{what}: {}", r.body);
    assert_eq!(
        r.content_type.as_deref(),
        Some("application/problem+json"),
        "{what}"
    );
    assert!(
        r.www_authenticate
            .as_deref()
            .is_some_and(|c| c.starts_with("Bearer")),
        "{what}: WWW-Authenticate {:?}",
        r.www_authenticate
    );
}

async fn idempotency_keys_belong_to_their_principal(kind: Kind) {
    let env = Env::of(kind, fast_settings()).await;
    let a = env.seed(3).await;
    let runtime = api_runtime(&env).await;
    let brand = Role::Brand(a.brand_id);
    let as_sub = |sub: &str| {
        ApiClient::new(&runtime.base_url)
            .unwrap()
            .with_token(runtime.token_for(sub, brand.clone()).unwrap())
    };
    let (alice, bob) = (as_sub("alice"), as_sub("bob"));
    let other_offer: Value = alice
        .post("/offers", &json!({ "name": "b" }))
        .await
        .unwrap();
    let other_offer: OfferId = other_offer["id"].as_str().unwrap().parse().unwrap();
    let key = [("idempotency-key", "same-key")];
    let link_all = |offer: OfferId| format!("/offers/{offer}/link-all-locations");

    let first = alice
        .send(Method::POST, &link_all(a.offer_id), None, &key)
        .await
        .unwrap();
    assert_eq!(first.status, StatusCode::ACCEPTED);
    // Bob's same key is his own: on the busy offer it is a new request (409), not Alice's
    // replay; on another offer a new job, not "key reused".
    let bob_same = bob
        .send(Method::POST, &link_all(a.offer_id), None, &key)
        .await
        .unwrap();
    assert_eq!(bob_same.status, StatusCode::CONFLICT, "{}", bob_same.body);
    let bob_other = bob
        .send(Method::POST, &link_all(other_offer), None, &key)
        .await
        .unwrap();
    assert_eq!(bob_other.status, StatusCode::ACCEPTED, "{}", bob_other.body);
    assert_ne!(bob_other.body["id"], first.body["id"]);
    // Alice with a fresh token (same sub) retrying: the same job.
    let refreshed = ApiClient::new(&runtime.base_url).unwrap().with_token(
        bulklink::tokens::mint_token(
            KEY,
            "alice",
            &brand,
            Duration::from_secs(7_200),
            "brand_id",
            &runtime.clock,
        )
        .unwrap(),
    );
    let again = refreshed
        .send(Method::POST, &link_all(a.offer_id), None, &key)
        .await
        .unwrap();
    assert_eq!(again.status, StatusCode::ACCEPTED);
    assert_eq!(again.body["id"], first.body["id"]);
    runtime.shutdown().await;
}

#[tokio::test]
async fn a_brand_token_cannot_reach_another_brands_location_through_its_own_offer() {
    let env = Env::new(fast_settings());
    let a = env.seed(1).await;
    let b = env.seed(1).await;
    let runtime = api_runtime(&env).await;
    let own = runtime.api_as(Role::Brand(a.brand_id)).unwrap();
    let theirs = runtime
        .ports
        .catalog
        .page_brand_locations(b.brand_id, None, None, 1)
        .await
        .unwrap()
        .items[0];
    let r = own
        .send(
            Method::PUT,
            &format!("/offers/{}/locations/{theirs}", a.offer_id),
            None,
            &[],
        )
        .await
        .unwrap();
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    assert_eq!(
        r.body["detail"],
        format!("location {theirs} does not exist"),
        "the same answer as a location that does not exist"
    );
    let missing = LocationId::new_random();
    let r = own
        .send(
            Method::PUT,
            &format!("/offers/{}/locations/{missing}", a.offer_id),
            None,
            &[],
        )
        .await
        .unwrap();
    assert_eq!(
        r.body["detail"],
        format!("location {missing} does not exist")
    );
    let untouched = runtime.ports.catalog.get_location(theirs).await.unwrap();
    assert!(
        !untouched.unwrap().has_offer,
        "brand B's location was not touched"
    );
    runtime.shutdown().await;
}

fn jwks_fixture(name: &str) -> String {
    let path = format!("{}/tests/fixtures/jwks/{name}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// A token as an OIDC issuer would sign it.
fn issuer_token(
    alg: jsonwebtoken::Algorithm,
    kid: &str,
    key: &jsonwebtoken::EncodingKey,
    claims: &Value,
) -> String {
    let mut header = jsonwebtoken::Header::new(alg);
    header.kid = Some(kid.to_owned());
    jsonwebtoken::encode(&header, claims, key).unwrap()
}

#[tokio::test]
async fn with_a_jwks_rs256_and_es256_tokens_of_the_issuer_are_accepted_and_nothing_else() {
    const ISS: &str = "https://issuer.example.invalid/";
    const AUD: &str = "bulklink-api";
    let env = Env::new(fast_settings());
    let a = env.seed(1).await;
    let config = RuntimeConfig {
        consumers: false,
        auth: AuthSetup::Jwks {
            json: jwks_fixture("jwks.json"),
            issuer: ISS.to_owned(),
            audience: AUD.to_owned(),
        },
        ..env.config()
    };
    let runtime = env.start(config, |ports| ports).await;
    let now = chrono::Utc::now().timestamp();
    let claims = |iss: &str, aud: &str| {
        json!({ "sub": "oidc-user", "iss": iss, "aud": aud, "iat": now, "exp": now + 600,
                "brand_id": a.brand_id.to_string() })
    };
    let ec = jsonwebtoken::EncodingKey::from_ec_pem(jwks_fixture("test-ec-private.pem").as_bytes())
        .unwrap();
    let rsa =
        jsonwebtoken::EncodingKey::from_rsa_pem(jwks_fixture("test-rsa-private.pem").as_bytes())
            .unwrap();
    use jsonwebtoken::Algorithm::{ES256, HS256, RS256};
    let offer = format!("/offers/{}", a.offer_id);
    let get = |token: String| {
        let client = ApiClient::new(&runtime.base_url).unwrap().with_token(token);
        let offer = offer.clone();
        async move { client.send(Method::GET, &offer, None, &[]).await.unwrap() }
    };

    for token in [
        issuer_token(ES256, "test-ec", &ec, &claims(ISS, AUD)),
        issuer_token(RS256, "test-rsa", &rsa, &claims(ISS, AUD)),
    ] {
        let r = get(token).await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.body);
        assert_eq!(r.body["brandId"], a.brand_id.to_string());
    }
    let refused = [
        (
            "another issuer",
            issuer_token(
                ES256,
                "test-ec",
                &ec,
                &claims("https://evil.example.invalid/", AUD),
            ),
        ),
        (
            "another audience",
            issuer_token(RS256, "test-rsa", &rsa, &claims(ISS, "someone-else")),
        ),
        (
            "a key id the set lacks",
            issuer_token(ES256, "other-kid", &ec, &claims(ISS, AUD)),
        ),
        // The public key set as an HMAC secret: the algorithm-confusion forgery.
        (
            "HS256",
            issuer_token(
                HS256,
                "test-rsa",
                &jsonwebtoken::EncodingKey::from_secret(jwks_fixture("jwks.json").as_bytes()),
                &claims(ISS, AUD),
            ),
        ),
        ("a local token", runtime_free_local_token(a.brand_id)),
    ];
    for (what, token) in refused {
        let r = get(token).await;
        assert_unauthorized(&r, what);
    }
    runtime.shutdown().await;
}

/// A perfectly valid local HS256 token — of a server that uses a JWKS instead.
fn runtime_free_local_token(brand: BrandId) -> String {
    bulklink::tokens::mint_token(
        KEY,
        "local",
        &Role::Brand(brand),
        Duration::from_secs(600),
        "brand_id",
        &bulklink_core::Clock::system(),
    )
    .unwrap()
}
