//! Jobs held before they start, on both backends: `notBefore` (SCHEDULED until then, started
//! by the scheduler within its bound, cancellable, holding the offer's one active job) and
//! approval (AWAITING_APPROVAL until a second caller approves it; the creator's approval is
//! 403; a reject cancels it; webhooks hear `job.awaiting_approval`).

use std::time::Duration;

use bulklink::client::ApiClient;
use bulklink::receiver::Receiver;
use bulklink_core::domain::{JobStatus, OfferId};
use bulklink_http::auth::Role;
use bulklink_http::views::JobView;
use chrono::{DateTime, DurationRound, Utc};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use crate::support::*;

crate::on_both_backends!(
    a_job_not_before_a_time_is_scheduled_until_then_and_starts_within_two_seconds,
    a_job_awaiting_approval_starts_when_a_second_caller_approves_it_and_not_before,
    a_rejected_job_ends_cancelled_having_touched_nothing,
    a_job_larger_than_the_approval_limit_awaits_approval,
    an_offer_live_for_5_seconds_is_linked_at_its_start_and_unlinked_at_its_end_exactly,
    an_offer_with_a_rule_follows_it_only_between_its_start_and_its_end,
    an_offers_schedule_moves_until_each_part_is_made,
);

/// The job the offer's schedule records under `field` (`startJobId`, `endJobId`), once made.
async fn job_of(api: &ApiClient, offer: &str, field: &str) -> bulklink_core::domain::JobId {
    eventually(WAIT, &format!("the offer's {field}"), || async {
        let read: Value = api.get(&format!("/offers/{offer}")).await.unwrap();
        read["schedule"][field].is_string()
    })
    .await;
    let read: Value = api.get(&format!("/offers/{offer}")).await.unwrap();
    read["schedule"][field].as_str().unwrap().parse().unwrap()
}

/// A new active location of the brand.
async fn new_location(api: &ApiClient, address: &str) -> bulklink_core::domain::LocationId {
    let made = api
        .send(
            Method::POST,
            "/locations",
            Some(&json!({ "address": address })),
            &[],
        )
        .await
        .unwrap();
    assert_eq!(made.status, StatusCode::CREATED, "{}", made.body);
    made.body["id"].as_str().unwrap().parse().unwrap()
}

/// A time to the millisecond, as the API keeps it.
fn ms(at: DateTime<Utc>) -> DateTime<Utc> {
    at.duration_trunc(chrono::Duration::milliseconds(1))
        .unwrap()
}

/// `POST /offers` of an offer live from `starts_at` to `ends_at`: the offer (201 asserted).
async fn scheduled_offer(
    api: &ApiClient,
    name: &str,
    starts_at: DateTime<Utc>,
    ends_at: DateTime<Utc>,
) -> Value {
    let made = api
        .send(
            Method::POST,
            "/offers",
            Some(&json!({ "name": name, "startsAt": starts_at, "endsAt": ends_at })),
            &[],
        )
        .await
        .unwrap();
    assert_eq!(made.status, StatusCode::CREATED, "{}", made.body);
    made.body
}

const WAIT: Duration = Duration::from_secs(60);

/// POSTs a link-all with `body`: the answer's status and job.
async fn link_all(api: &ApiClient, offer: OfferId, body: Value) -> (StatusCode, Value) {
    let answer = api
        .send(
            Method::POST,
            &format!("/offers/{offer}/link-all-locations"),
            Some(&body),
            &[],
        )
        .await
        .unwrap();
    (answer.status, answer.body)
}

fn view(body: Value) -> JobView {
    serde_json::from_value(body).unwrap()
}

async fn a_job_not_before_a_time_is_scheduled_until_then_and_starts_within_two_seconds(kind: Kind) {
    let env = Env::of(kind, fast_settings()).await;
    let n = kind.scale(300, 100);
    let seeded = env.seed(n).await;
    let runtime = env.start(env.config(), |ports| ports).await;
    let api = runtime.api_as(Role::Brand(seeded.brand_id)).unwrap();
    // Kept to the millisecond, as every time bulklink stores.
    let not_before = (Utc::now() + chrono::Duration::seconds(3))
        .duration_trunc(chrono::Duration::milliseconds(1))
        .unwrap();

    let (status, body) = link_all(&api, seeded.offer_id, json!({ "notBefore": not_before })).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    let job = view(body);
    assert_eq!(job.status, JobStatus::Scheduled);
    assert_eq!(job.not_before, Some(not_before));
    assert_eq!(
        job.allowed_actions,
        [bulklink_core::domain::OwnerAction::Cancel]
    );
    // It holds the offer's one active job.
    let (busy, _) = link_all(&api, seeded.offer_id, json!({})).await;
    assert_eq!(busy, StatusCode::CONFLICT);

    let done = api
        .wait_terminal(job.id, Duration::from_millis(50), WAIT, |_| {})
        .await
        .unwrap();
    assert_eq!(done.status, JobStatus::Succeeded);
    assert_eq!(done.counters.counters.linked, n);
    let started: DateTime<Utc> = done.started_at.unwrap();
    assert!(
        started >= not_before,
        "started {started}, not before {not_before}"
    );
    assert!(
        started - not_before <= chrono::Duration::seconds(2),
        "started {} after its time",
        started - not_before
    );

    // A scheduled job can be cancelled: it ends CANCELLED having started nothing.
    let other = env.seed(5).await;
    let api = runtime.api_as(Role::Brand(other.brand_id)).unwrap();
    let later = Utc::now() + chrono::Duration::hours(1);
    let (_, body) = link_all(&api, other.offer_id, json!({ "notBefore": later })).await;
    let scheduled = view(body);
    let cancel = api
        .send(
            Method::POST,
            &format!("/jobs/{}/cancel", scheduled.id),
            None,
            &[],
        )
        .await
        .unwrap();
    assert_eq!(cancel.status, StatusCode::ACCEPTED, "{}", cancel.body);
    let cancelled = api
        .wait_terminal(scheduled.id, Duration::from_millis(50), WAIT, |_| {})
        .await
        .unwrap();
    assert_eq!(cancelled.status, JobStatus::Cancelled);
    assert_eq!(cancelled.counters.counters.total, 0);
    assert_eq!(cancelled.started_at, None);
    // A time too far ahead is the caller's error.
    let (far, body) = link_all(
        &api,
        other.offer_id,
        json!({ "notBefore": Utc::now() + chrono::Duration::days(400) }),
    )
    .await;
    assert_eq!(far, StatusCode::BAD_REQUEST, "{body}");
    runtime.shutdown().await;
}

async fn a_job_awaiting_approval_starts_when_a_second_caller_approves_it_and_not_before(
    kind: Kind,
) {
    let env = Env::of(kind, fast_settings()).await;
    let n = kind.scale(200, 60);
    let seeded = env.seed(n).await;
    let runtime = env.start(env.config(), |ports| ports).await;
    let brand = Role::Brand(seeded.brand_id);
    let creator = runtime.api_as(brand.clone()).unwrap();
    let second = ApiClient::new(&runtime.base_url)
        .unwrap()
        .with_token(runtime.token_for("second-operator", brand).unwrap());
    let mut receiver = Receiver::start().await.unwrap();
    let subscribed = creator
        .send(
            Method::POST,
            "/webhooks",
            Some(&json!({ "url": receiver.url, "filter": outcomes() })),
            &[],
        )
        .await
        .unwrap();
    assert_eq!(
        subscribed.status,
        StatusCode::CREATED,
        "{}",
        subscribed.body
    );

    let (status, body) = link_all(
        &creator,
        seeded.offer_id,
        json!({ "requireApproval": true }),
    )
    .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    let job = view(body);
    assert_eq!(job.status, JobStatus::AwaitingApproval);
    use bulklink_core::domain::OwnerAction::{Approve, Cancel, Reject};
    assert_eq!(job.allowed_actions, [Cancel, Approve, Reject]);
    assert!(job.created_by.is_some());

    // The brand's webhooks hear that it waits.
    let heard = tokio::time::timeout(WAIT, receiver.next())
        .await
        .expect("a delivery")
        .unwrap();
    let event = heard.event().unwrap();
    assert_eq!(event["type"], "job.awaiting_approval", "{event}");
    assert_eq!(event["jobId"], job.id.to_string());
    assert_eq!(event["status"], "AWAITING_APPROVAL");

    // Nothing happens while it waits.
    let still = creator.job(job.id).await.unwrap();
    assert_eq!(
        (still.status, still.started_at),
        (JobStatus::AwaitingApproval, None)
    );

    // Its creator may not approve it.
    let own = creator
        .send(
            Method::POST,
            &format!("/jobs/{}/approve", job.id),
            None,
            &[],
        )
        .await
        .unwrap();
    assert_eq!(own.status, StatusCode::FORBIDDEN, "{}", own.body);
    assert_eq!(
        own.content_type.as_deref(),
        Some("application/problem+json")
    );
    // Another brand's caller finds no such job.
    let stranger = runtime
        .api_as(Role::Brand(env.seed(1).await.brand_id))
        .unwrap();
    let hidden = stranger
        .send(
            Method::POST,
            &format!("/jobs/{}/approve", job.id),
            None,
            &[],
        )
        .await
        .unwrap();
    assert_eq!(hidden.status, StatusCode::NOT_FOUND);

    // A second caller of the brand does: it runs to the end.
    let approved = second
        .send(
            Method::POST,
            &format!("/jobs/{}/approve", job.id),
            None,
            &[],
        )
        .await
        .unwrap();
    assert_eq!(approved.status, StatusCode::ACCEPTED, "{}", approved.body);
    let done = creator
        .wait_terminal(job.id, Duration::from_millis(50), WAIT, |_| {})
        .await
        .unwrap();
    assert_eq!(done.status, JobStatus::Succeeded);
    assert_eq!(done.counters.counters.linked, n);
    assert_eq!(done.approved_by.as_deref(), Some("second-operator"));
    let heard = tokio::time::timeout(WAIT, receiver.next())
        .await
        .expect("a delivery")
        .unwrap();
    assert_eq!(heard.event().unwrap()["type"], "job.succeeded");
    // Approved once: a second approval finds nothing to approve.
    let again = second
        .send(
            Method::POST,
            &format!("/jobs/{}/approve", job.id),
            None,
            &[],
        )
        .await
        .unwrap();
    assert_eq!(again.status, StatusCode::CONFLICT);

    // Approved before its notBefore: SCHEDULED until then.
    let unlink_body =
        json!({ "requireApproval": true, "notBefore": Utc::now() + chrono::Duration::hours(1) });
    let unlink = creator
        .send(
            Method::POST,
            &format!("/offers/{}/unlink-all-locations", seeded.offer_id),
            Some(&unlink_body),
            &[],
        )
        .await
        .unwrap();
    let unlink = view(unlink.body);
    assert_eq!(unlink.status, JobStatus::AwaitingApproval);
    let approved = second
        .send(
            Method::POST,
            &format!("/jobs/{}/approve", unlink.id),
            None,
            &[],
        )
        .await
        .unwrap();
    assert_eq!(view(approved.body).status, JobStatus::Scheduled);
    runtime.shutdown().await;
}

async fn a_rejected_job_ends_cancelled_having_touched_nothing(kind: Kind) {
    let env = Env::of(kind, fast_settings()).await;
    let seeded = env.seed(30).await;
    let runtime = env.start(env.config(), |ports| ports).await;
    let api = runtime.api_as(Role::Brand(seeded.brand_id)).unwrap();
    let (_, body) = link_all(&api, seeded.offer_id, json!({ "requireApproval": true })).await;
    let job = view(body);
    // Its creator may reject (withdraw) it.
    let rejected = api
        .send(Method::POST, &format!("/jobs/{}/reject", job.id), None, &[])
        .await
        .unwrap();
    assert_eq!(rejected.status, StatusCode::ACCEPTED, "{}", rejected.body);
    let done = api
        .wait_terminal(job.id, Duration::from_millis(50), WAIT, |_| {})
        .await
        .unwrap();
    assert_eq!(done.status, JobStatus::Cancelled);
    assert_eq!((done.counters.counters.total, done.started_at), (0, None));
    assert_eq!(env.link_stats(&seeded).await.brand_locations_with_offer, 0);
    let again = api
        .send(Method::POST, &format!("/jobs/{}/reject", job.id), None, &[])
        .await
        .unwrap();
    assert_eq!(again.status, StatusCode::CONFLICT);
    // The offer is free again.
    let (status, body) = link_all(&api, seeded.offer_id, json!({})).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    runtime.shutdown().await;
}

async fn a_job_larger_than_the_approval_limit_awaits_approval(kind: Kind) {
    let mut settings = fast_settings();
    settings.approval_above_locations = Some(10);
    let env = Env::of(kind, settings).await;
    let runtime = env.start(env.config(), |ports| ports).await;
    let large = env.seed(11).await;
    let small = env.seed(10).await;
    let api = runtime.api_as(Role::Brand(large.brand_id)).unwrap();
    let (_, body) = link_all(&api, large.offer_id, json!({})).await;
    assert_eq!(view(body).status, JobStatus::AwaitingApproval);
    let api = runtime.api_as(Role::Brand(small.brand_id)).unwrap();
    let (_, body) = link_all(&api, small.offer_id, json!({})).await;
    assert_ne!(
        view(body).status,
        JobStatus::AwaitingApproval,
        "10 is not above 10"
    );
    runtime.shutdown().await;
}

async fn an_offer_live_for_5_seconds_is_linked_at_its_start_and_unlinked_at_its_end_exactly(
    kind: Kind,
) {
    let env = Env::of(kind, fast_settings()).await;
    let n = kind.scale(200, 60);
    let seeded = env.seed(n).await;
    let runtime = env.start(env.config(), |ports| ports).await;
    let api = runtime.api_as(Role::Brand(seeded.brand_id)).unwrap();
    let starts_at = ms(Utc::now() + chrono::Duration::seconds(2));
    let ends_at = starts_at + chrono::Duration::seconds(5);
    let made = scheduled_offer(&api, "Five seconds", starts_at, ends_at).await;
    let offer = made["id"].as_str().unwrap().to_owned();
    let schedule = &made["schedule"];
    assert_eq!(schedule["startsAt"], json!(starts_at));
    assert_eq!(schedule["endsAt"], json!(ends_at));
    assert!(
        schedule["startJobId"].is_null(),
        "made at its time: {schedule}"
    );
    let start = job_of(&api, &offer, "startJobId").await;

    let linked = api
        .wait_terminal(start, Duration::from_millis(50), WAIT, |_| {})
        .await
        .unwrap();
    assert_eq!(linked.status, JobStatus::Succeeded);
    assert_eq!(linked.counters.counters.linked, n);
    assert!(linked.started_at.unwrap() >= starts_at);
    // The start's job made the end's as it ended (before announcing its end), SCHEDULED at
    // endsAt.
    let end = job_of(&api, &offer, "endJobId").await;
    let ending = api.job(end).await.unwrap();
    assert_eq!(
        ending.kind,
        bulklink_core::domain::JobKind::UnlinkAllLocations
    );
    assert_eq!(ending.not_before, Some(ends_at));

    let unlinked = api
        .wait_terminal(end, Duration::from_millis(50), WAIT, |_| {})
        .await
        .unwrap();
    assert_eq!(unlinked.status, JobStatus::Succeeded);
    assert_eq!(unlinked.counters.counters.unlinked, n);
    assert!(unlinked.started_at.unwrap() >= ends_at);
    let read: Value = api.get(&format!("/offers/{offer}")).await.unwrap();
    assert_eq!(read["locationsTotal"], 0, "{read}");
    assert_eq!(
        env.link_stats(&seeded).await.brand_locations_with_offer,
        0,
        "no hasOffer left"
    );
    // An end before its start is the caller's error.
    let backwards = api
        .send(
            Method::POST,
            "/offers",
            Some(&json!({ "name": "Backwards", "startsAt": ends_at, "endsAt": starts_at })),
            &[],
        )
        .await
        .unwrap();
    assert_eq!(
        backwards.status,
        StatusCode::BAD_REQUEST,
        "{}",
        backwards.body
    );
    runtime.shutdown().await;
}

async fn an_offer_with_a_rule_follows_it_only_between_its_start_and_its_end(kind: Kind) {
    use bulklink_core::domain::{JobKind, LinkOutcome, OfferId};
    let env = Env::of(kind, fast_settings()).await;
    let n = kind.scale(100, 40);
    let seeded = env.seed(n).await;
    let runtime = env.start(env.config(), |ports| ports).await;
    let ports = runtime.ports.clone();
    let api = runtime.api_as(Role::Brand(seeded.brand_id)).unwrap();
    let starts_at = ms(Utc::now() + chrono::Duration::seconds(3));
    let ends_at = starts_at + chrono::Duration::seconds(4);
    let offer = scheduled_offer(&api, "Ruled", starts_at, ends_at).await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let offer_id: OfferId = offer.parse().unwrap();
    let set = api
        .send(
            Method::PUT,
            &format!("/offers/{offer}/rule"),
            Some(&json!({ "where": {} })),
            &[],
        )
        .await
        .unwrap();
    assert_eq!(set.status, StatusCode::OK, "{}", set.body);
    assert!(
        set.body["job"].is_null(),
        "no reconcile before the start: {}",
        set.body
    );

    // Before its start a new store is not linked: the rule waits (what the estate follower
    // does for every change, called here so that nothing races it).
    let early = new_location(&api, "1 Early Street").await;
    let followed = bulklink_core::rules::follow(&ports, early).await.unwrap();
    assert!(
        !followed.iter().any(|(o, _)| *o == offer_id),
        "{followed:?}"
    );

    // At its start the rule's reconcile links every active store.
    let start = job_of(&api, &offer, "startJobId").await;
    let started = api
        .wait_terminal(start, Duration::from_millis(50), WAIT, |_| {})
        .await
        .unwrap();
    assert_eq!(started.kind, JobKind::Reconcile);
    assert_eq!(started.status, JobStatus::Succeeded);
    assert_eq!(started.counters.counters.linked, n + 1);
    assert!(started.started_at.unwrap() >= starts_at);
    // While live, the rule follows the estate.
    if Utc::now() < ends_at - chrono::Duration::seconds(1) {
        let during = new_location(&api, "2 Live Street").await;
        let followed = bulklink_core::rules::follow(&ports, during).await.unwrap();
        assert!(
            followed.contains(&(offer_id, LinkOutcome::Linked)),
            "{followed:?}"
        );
    }

    // At its end every link goes, and the rule no longer links.
    let end = job_of(&api, &offer, "endJobId").await;
    let ended = api
        .wait_terminal(end, Duration::from_millis(50), WAIT, |_| {})
        .await
        .unwrap();
    assert_eq!(ended.status, JobStatus::Succeeded);
    assert!(ended.started_at.unwrap() >= ends_at);
    let late = new_location(&api, "3 Late Street").await;
    let followed = bulklink_core::rules::follow(&ports, late).await.unwrap();
    assert!(
        !followed.iter().any(|(o, _)| *o == offer_id),
        "{followed:?}"
    );
    let read: Value = api.get(&format!("/offers/{offer}")).await.unwrap();
    assert_eq!(read["locationsTotal"], 0, "{read}");
    runtime.shutdown().await;
}

async fn an_offers_schedule_moves_until_each_part_is_made(kind: Kind) {
    let env = Env::of(kind, fast_settings()).await;
    let n = kind.scale(50, 20);
    let seeded = env.seed(n).await;
    let runtime = env.start(env.config(), |ports| ports).await;
    let api = runtime.api_as(Role::Brand(seeded.brand_id)).unwrap();
    let hour = chrono::Duration::hours(1);
    let patch = |body: Value, offer: String| {
        let api = api.clone();
        async move {
            api.send(Method::PATCH, &format!("/offers/{offer}"), Some(&body), &[])
                .await
                .unwrap()
        }
    };
    let offer = scheduled_offer(
        &api,
        "Moving",
        ms(Utc::now() + hour),
        ms(Utc::now() + hour * 2),
    )
    .await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let later_end = ms(Utc::now() + hour * 3);
    let moved = patch(json!({ "endsAt": later_end }), offer.clone()).await;
    assert_eq!(moved.status, StatusCode::OK, "{}", moved.body);
    assert_eq!(moved.body["schedule"]["endsAt"], json!(later_end));
    // Both moved to the next seconds: it starts, then ends, at the new times.
    let starts_at = ms(Utc::now() + chrono::Duration::seconds(1));
    let ends_at = starts_at + chrono::Duration::seconds(3);
    let moved = patch(
        json!({ "startsAt": starts_at, "endsAt": ends_at }),
        offer.clone(),
    )
    .await;
    assert_eq!(moved.status, StatusCode::OK, "{}", moved.body);
    let backwards = patch(json!({ "endsAt": starts_at - hour }), offer.clone()).await;
    assert_eq!(
        backwards.status,
        StatusCode::BAD_REQUEST,
        "{}",
        backwards.body
    );
    let start = job_of(&api, &offer, "startJobId").await;
    assert!(api.job(start).await.unwrap().started_at.unwrap() >= starts_at);
    let too_late = patch(json!({ "startsAt": ms(Utc::now() + hour) }), offer.clone()).await;
    assert_eq!(too_late.status, StatusCode::CONFLICT, "{}", too_late.body);
    let end = job_of(&api, &offer, "endJobId").await;
    assert_eq!(api.job(end).await.unwrap().not_before, Some(ends_at));
    let end_made = patch(json!({ "endsAt": ms(Utc::now() + hour) }), offer.clone()).await;
    assert_eq!(end_made.status, StatusCode::CONFLICT, "{}", end_made.body);
    assert_eq!(end_made.location, Some(format!("/jobs/{end}")));
    let ended = api
        .wait_terminal(end, Duration::from_millis(50), WAIT, |_| {})
        .await
        .unwrap();
    assert_eq!(ended.counters.counters.unlinked, n);
    let renamed = patch(json!({ "name": "Moved" }), offer.clone()).await;
    assert_eq!(renamed.body["name"], "Moved");
    runtime.shutdown().await;
}
