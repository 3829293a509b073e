//! Webhook targets that could reach inside (SSRF) are refused at registration and on every
//! attempt; loopback receivers need an explicit allow; redirects are not followed. Names
//! resolve through a test table: no test looks up a real host or leaves this machine.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::http::StatusCode;
use bulklink::receiver::Receiver;
use bulklink::runtime::{Runtime, RuntimeConfig};
use bulklink_egress::{Egress, Resolve};
use bulklink_http::auth::Role;
use futures::future::BoxFuture;
use reqwest::Method;
use serde_json::{json, Value};

use crate::support::*;

/// A name table the test can change while the server runs. A name may have a sequence of
/// answers: each lookup takes the next, the last one stays (a DNS-rebinding name).
#[derive(Clone, Default)]
struct TestResolver(Arc<Mutex<HashMap<String, Vec<Vec<IpAddr>>>>>);

impl TestResolver {
    fn set(&self, name: &str, ips: &[&str]) {
        self.answer_in_turn(name, &[ips]);
    }

    fn answer_in_turn(&self, name: &str, answers: &[&[&str]]) {
        let answers = answers
            .iter()
            .map(|ips| ips.iter().map(|ip| ip.parse().unwrap()).collect())
            .collect();
        self.0.lock().unwrap().insert(name.to_owned(), answers);
    }
}

impl Resolve for TestResolver {
    fn lookup(&self, host: &str) -> BoxFuture<'_, std::io::Result<Vec<IpAddr>>> {
        let mut table = self.0.lock().unwrap();
        let found = match table.get_mut(host) {
            Some(answers) if answers.len() > 1 => answers.remove(0),
            Some(answers) => answers[0].clone(),
            None => Vec::new(),
        };
        Box::pin(async move { Ok(found) })
    }
}

async fn start(env: &Env, allow: &[&str], resolver: &TestResolver) -> Runtime {
    let config = RuntimeConfig {
        egress: Egress::new(
            allow.iter().map(|c| c.parse().unwrap()).collect(),
            Arc::new(resolver.clone()),
        ),
        ..env.config()
    };
    env.start(config, |ports| ports).await
}

/// The first delivery of a subscription, once it has been attempted.
async fn first_attempt(api: &bulklink::client::ApiClient, sub: &str) -> Value {
    let path = format!("/webhooks/{sub}/deliveries");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let log: Value = api.get(&path).await.unwrap();
        let first = log["items"][0].clone();
        if first["attempts"].as_u64().unwrap_or(0) > 0 {
            return first;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no attempt within 20 s: {log}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhook_targets_that_reach_inside_are_refused_at_registration() {
    let env = Env::new(fast_settings());
    let seeded = env.seed(1).await;
    let resolver = TestResolver::default();
    resolver.set("intranet.example.invalid", &["10.20.30.40"]);
    resolver.set("metadata.example.invalid", &["169.254.169.254"]);
    resolver.set("split.example.invalid", &["8.8.8.8", "192.168.1.10"]);
    resolver.set("v6.example.invalid", &["fd12:3456::1"]);
    let runtime = start(&env, &[], &resolver).await;
    let api = runtime.api_as(Role::Brand(seeded.brand_id)).unwrap();

    let refused = [
        ("http://127.0.0.1/hook", "loopback"),
        ("http://127.1/hook", "loopback"),
        ("http://0x7f000001/hook", "loopback"),
        ("http://2130706433/hook", "loopback"),
        ("http://017700000001/hook", "loopback"),
        ("http://0/hook", "unspecified"),
        ("http://0.0.0.0:8080/hook", "unspecified"),
        ("http://10.0.0.1/hook", "private"),
        ("http://172.16.5.4/hook", "private"),
        ("http://192.168.0.1/hook", "private"),
        ("http://169.254.169.254/latest/meta-data/", "link-local"),
        ("http://100.64.0.1/hook", "CGNAT"),
        ("http://224.0.0.1/hook", "multicast"),
        ("http://255.255.255.255/hook", "broadcast"),
        ("http://240.0.0.1/hook", "reserved"),
        ("http://[::1]/hook", "loopback"),
        ("http://[::]/hook", "unspecified"),
        ("http://[fd00::1]/hook", "unique-local"),
        ("http://[fe80::1]/hook", "link-local"),
        ("http://[ff02::1]/hook", "multicast"),
        ("http://[::ffff:127.0.0.1]/hook", "loopback"),
        ("http://[::ffff:a9fe:a9fe]/hook", "link-local"),
        ("http://[::7f00:1]/hook", "loopback"),
        ("http://[64:ff9b::a00:1]/hook", "private"),
        ("http://[2002:c0a8:101::1]/hook", "private"),
        ("http://intranet.example.invalid/hook", "private"),
        ("http://metadata.example.invalid/hook", "link-local"),
        ("http://split.example.invalid/hook", "private"),
        ("http://v6.example.invalid/hook", "unique-local"),
        (
            "https://user:secret@hooks.example.invalid/",
            "user name or password",
        ),
        (
            "https://user@hooks.example.invalid/",
            "user name or password",
        ),
    ];
    assert!(refused.len() >= 25);
    let link_all = format!("/offers/{}/link-all-locations", seeded.offer_id);
    for (url, rule) in refused {
        for (path, body) in [
            ("/webhooks", json!({ "url": url })),
            (link_all.as_str(), json!({ "callbackUrl": url })),
        ] {
            let r = api
                .send(Method::POST, path, Some(&body), &[])
                .await
                .unwrap();
            assert_eq!(
                r.status,
                StatusCode::BAD_REQUEST,
                "{url} at {path}: {}",
                r.body
            );
            assert_eq!(r.content_type.as_deref(), Some("application/problem+json"));
            let detail = r.body["detail"].as_str().unwrap();
            assert!(
                detail.contains(rule),
                "{url}: {detail:?} does not name {rule:?}"
            );
        }
    }
    // A public name, and one that does not resolve (yet), are accepted; each attempt checks.
    resolver.set("public.example.invalid", &["93.184.216.34"]);
    for url in [
        "https://public.example.invalid/h",
        "https://nowhere.example.invalid/h",
    ] {
        let r = api
            .send(Method::POST, "/webhooks", Some(&json!({ "url": url })), &[])
            .await
            .unwrap();
        assert_eq!(r.status, StatusCode::CREATED, "{url}: {}", r.body);
        let id = r.body["id"].as_str().unwrap();
        let gone = api
            .send(Method::DELETE, &format!("/webhooks/{id}"), None, &[])
            .await
            .unwrap();
        assert_eq!(gone.status, StatusCode::NO_CONTENT);
    }
    runtime.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_loopback_receiver_gets_its_event_only_when_loopback_is_allowed() {
    let env = Env::new(fast_settings());
    let seeded = env.seed(20).await;
    let resolver = TestResolver::default();

    let closed = start(&env, &[], &resolver).await;
    let receiver = Receiver::start().await.unwrap();
    let api = closed.api_as(Role::Brand(seeded.brand_id)).unwrap();
    let r = api
        .send(
            Method::POST,
            "/webhooks",
            Some(&json!({ "url": receiver.url, "filter": outcomes() })),
            &[],
        )
        .await
        .unwrap();
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.body);
    assert!(r.body["detail"].as_str().unwrap().contains("loopback"));
    closed.shutdown().await;

    let open = start(&env, &["127.0.0.0/8"], &resolver).await;
    let mut receiver = receiver;
    let api = open.api_as(Role::Brand(seeded.brand_id)).unwrap();
    let body = json!({ "callbackUrl": receiver.url });
    let job: Value = api
        .post(
            &format!("/offers/{}/link-all-locations", seeded.offer_id),
            &body,
        )
        .await
        .unwrap();
    let delivery = tokio::time::timeout(Duration::from_secs(30), receiver.next())
        .await
        .expect("the event within 30 s")
        .unwrap();
    assert_eq!(delivery.event().unwrap()["jobId"], job["id"]);
    open.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_name_that_resolves_inside_when_delivering_is_never_contacted() {
    let env = Env::new(fast_settings());
    let seeded = env.seed(20).await;
    let resolver = TestResolver::default();
    let mut receiver = Receiver::start().await.unwrap();
    let port = receiver.url.rsplit(':').next().unwrap().to_owned();
    // At registration the name points at the (allowed) loopback receiver, at every later
    // lookup at a private address.
    resolver.answer_in_turn("rebind.example.invalid", &[&["127.0.0.1"], &["10.9.8.7"]]);
    let runtime = start(&env, &["127.0.0.0/8"], &resolver).await;
    let api = runtime.api_as(Role::Brand(seeded.brand_id)).unwrap();
    let url = format!("http://rebind.example.invalid:{port}");
    let sub: Value = api
        .post("/webhooks", &json!({ "url": url, "filter": outcomes() }))
        .await
        .unwrap();
    api.create_job(seeded.offer_id, None, None).await.unwrap();

    let delivery = first_attempt(&api, sub["id"].as_str().unwrap()).await;
    let error = delivery["lastError"].as_str().unwrap();
    assert!(
        error.contains("10.9.8.7") && error.contains("private"),
        "{error}"
    );
    assert!(
        delivery.get("lastStatusCode").is_none(),
        "never connected: {delivery}"
    );
    assert!(
        receiver.messages.try_recv().is_err(),
        "the receiver was never contacted"
    );
    receiver.stop();
    runtime.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redirecting_receiver_gets_one_attempt_and_the_redirect_is_not_followed() {
    let env = Env::new(fast_settings());
    let seeded = env.seed(20).await;
    let resolver = TestResolver::default();
    let target = Receiver::start().await.unwrap();
    let hits = Arc::new(Mutex::new(0u32));
    let app = {
        let (hits, to) = (hits.clone(), target.url.clone());
        axum::Router::new().route(
            "/hook",
            axum::routing::post(move || {
                let (hits, to) = (hits.clone(), to.clone());
                async move {
                    *hits.lock().unwrap() += 1;
                    (StatusCode::TEMPORARY_REDIRECT, [("location", to)])
                }
            }),
        )
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    let runtime = start(&env, &["127.0.0.0/8"], &resolver).await;
    let api = runtime.api_as(Role::Brand(seeded.brand_id)).unwrap();
    let sub: Value = api
        .post("/webhooks", &json!({ "url": url, "filter": outcomes() }))
        .await
        .unwrap();
    api.create_job(seeded.offer_id, None, None).await.unwrap();

    let delivery = first_attempt(&api, sub["id"].as_str().unwrap()).await;
    assert_eq!(delivery["attempts"], 1, "{delivery}");
    assert_eq!(delivery["lastStatusCode"], 307);
    assert_eq!(
        delivery["status"], "pending",
        "a failed attempt, retried later: {delivery}"
    );
    assert_eq!(*hits.lock().unwrap(), 1);
    let mut target = target;
    assert!(
        target.messages.try_recv().is_err(),
        "the redirect target got nothing"
    );
    runtime.shutdown().await;
}
