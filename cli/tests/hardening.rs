//! A server that hostile or careless clients cannot wear down: slow and idle connections,
//! the connection cap, requests hyper refuses by itself, clients that hang up mid-request,
//! graceful shutdown on SIGTERM, a database file that disappears, and Lambda functions that
//! report a bad setting at init.

use chrono::DurationRound;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use bulklink::client::ApiClient;
use bulklink::runtime::{Runtime, RuntimeConfig};
use bulklink::server::ServerLimits;
use bulklink_core::domain::{JobStatus, OfferId};
use bulklink_http::auth::Role;
use bulklink_sqlite::{EmbeddedStore, SeededBrand};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::runtime_api::{function_binary, RuntimeApi};
use crate::support::*;

fn tight_limits() -> ServerLimits {
    ServerLimits {
        header_read_timeout: Duration::from_secs(2),
        idle_timeout: Duration::from_secs(3),
        request_timeout: Duration::from_secs(2),
        max_connections: 1_000,
        shutdown_grace: Duration::from_secs(5),
    }
}

async fn serve_with(env: &Env, limits: ServerLimits) -> Runtime {
    let config = RuntimeConfig {
        consumers: false,
        limits,
        ..env.config()
    };
    env.start(config, |ports| ports).await
}

/// A client that opens a new connection for every request.
fn fresh_connections() -> reqwest::Client {
    reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .timeout(Duration::from_secs(1))
        .build()
        .unwrap()
}

/// Reads until the server closes the connection (EOF or reset); what it sent meanwhile.
async fn until_closed(stream: &mut TcpStream, within: Duration) -> Option<Vec<u8>> {
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    let read_all = async {
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => got.extend_from_slice(&buf[..n]),
            }
        }
    };
    tokio::time::timeout(within, read_all).await.ok()?;
    Some(got)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn held_half_sent_and_idle_connections_are_closed_and_healthz_answers_throughout() {
    let env = Env::new(fast_settings());
    let runtime = serve_with(&env, tight_limits()).await;
    let mut half_sent = Vec::new();
    let mut idle = Vec::new();
    for _ in 0..200 {
        let mut stream = TcpStream::connect(runtime.addr).await.unwrap();
        stream
            .write_all(b"GET /healthz HTTP/1.1\r\nHost: bulklink\r\nX-Slow: ")
            .await
            .unwrap();
        half_sent.push(stream);
        idle.push(TcpStream::connect(runtime.addr).await.unwrap());
    }

    // While all 400 are held, new connections are served at once.
    let http = fresh_connections();
    let url = format!("{}/healthz", runtime.base_url);
    for _ in 0..10 {
        let r = http.get(&url).send().await.expect("healthz within 1 s");
        assert_eq!(r.status(), 200);
    }

    for (what, streams) in [("half-sent", &mut half_sent), ("idle", &mut idle)] {
        for stream in streams.iter_mut() {
            let sent = until_closed(stream, Duration::from_secs(20))
                .await
                .unwrap_or_else(|| panic!("a {what} connection was still open after 20 s"));
            assert!(sent.is_empty(), "{what}: closed without an answer");
        }
    }
    let r = http.get(&url).send().await.unwrap();
    assert_eq!(r.status(), 200);
    runtime.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn past_the_connection_cap_a_client_gets_503_and_the_server_recovers() {
    let env = Env::new(fast_settings());
    let limits = ServerLimits {
        max_connections: 20,
        ..tight_limits()
    };
    let runtime = serve_with(&env, limits).await;
    let mut held = Vec::new();
    for _ in 0..20 {
        let stream = TcpStream::connect(runtime.addr).await.unwrap();
        held.push(stream);
    }
    // The 20 are served (their slots are taken once the server has accepted them).
    let http = fresh_connections();
    let url = format!("{}/healthz", runtime.base_url);
    eventually(Duration::from_secs(5), "a 503 past the cap", || async {
        matches!(http.get(&url).send().await, Ok(r) if r.status() == 503)
    })
    .await;
    let r = http.get(&url).send().await.unwrap();
    assert_eq!(r.status(), 503);
    assert_eq!(r.headers()["content-type"], "application/problem+json");
    assert_eq!(r.headers()["retry-after"], "1");
    let body: Value = r.json().await.unwrap();
    assert!(body["detail"]
        .as_str()
        .unwrap()
        .contains("maximum of 20 connections"));

    // Once the idle ones time out, the server has room again.
    eventually(
        Duration::from_secs(20),
        "healthz after the idle timeout",
        || async { matches!(http.get(&url).send().await, Ok(r) if r.status() == 200) },
    )
    .await;
    drop(held);
    runtime.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_that_never_arrives_is_answered_408() {
    let env = Env::new(fast_settings());
    let seeded = env.seed(0).await;
    let runtime = serve_with(&env, tight_limits()).await;
    let token = runtime
        .token_for("slow", Role::Brand(seeded.brand_id))
        .unwrap();
    let mut stream = TcpStream::connect(runtime.addr).await.unwrap();
    let head = format!(
        "POST /offers HTTP/1.1\r\nHost: b\r\nAuthorization: Bearer {token}\r\n\
         Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{{\"name\":"
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    let answer = until_closed(&mut stream, Duration::from_secs(20))
        .await
        .expect("answered and closed");
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("application/problem+json"), "{answer}");
    assert!(answer.contains("did not arrive within 2 s"), "{answer}");
    runtime.shutdown().await;
}

/// Sends raw bytes, returns the whole answer.
async fn raw_exchange(runtime: &Runtime, request: &[u8]) -> String {
    let mut stream = TcpStream::connect(runtime.addr).await.unwrap();
    // The server may answer and close before reading everything.
    let _ = stream.write_all(request).await;
    let _ = stream.shutdown().await;
    let answer = until_closed(&mut stream, Duration::from_secs(10))
        .await
        .expect("an answer");
    String::from_utf8_lossy(&answer).into_owned()
}

fn assert_problem_answer(answer: &str, status: u16, detail_has: &str) {
    assert!(
        answer.starts_with(&format!("HTTP/1.1 {status} ")),
        "{answer}"
    );
    assert!(
        answer
            .to_ascii_lowercase()
            .contains("content-type: application/problem+json"),
        "{answer}"
    );
    let body = answer.split("\r\n\r\n").nth(1).unwrap_or_default();
    let body: Value = serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {answer}"));
    assert_eq!(body["status"], status);
    assert!(
        body["detail"].as_str().unwrap().contains(detail_has),
        "{answer}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_below_the_handlers_are_problem_json_too() {
    let env = Env::new(fast_settings());
    let runtime = serve_with(&env, tight_limits()).await;

    let answer = raw_exchange(&runtime, b"THIS IS NOT HTTP\r\n\r\n").await;
    assert_problem_answer(&answer, 400, "not valid HTTP/1.1");
    let answer = raw_exchange(
        &runtime,
        b"GET /healthz HTTP/1.1\r\nHost: b\r\nBad Header: x\r\n\r\n",
    )
    .await;
    assert_problem_answer(&answer, 400, "not valid HTTP/1.1");

    // More headers than hyper parses: its own 431, rewritten.
    let many: String = (0..150).map(|i| format!("X-H{i}: v\r\n")).collect();
    let many = format!("GET /healthz HTTP/1.1\r\nHost: b\r\n{many}\r\n");
    let answer = raw_exchange(&runtime, many.as_bytes()).await;
    assert_problem_answer(&answer, 431, "more than 100 headers");
    let medium = format!(
        "GET /healthz HTTP/1.1\r\nHost: b\r\nX-Big: {}\r\n\r\n",
        "a".repeat(20_000)
    );
    let answer = raw_exchange(&runtime, medium.as_bytes()).await;
    assert_problem_answer(&answer, 431, "the limit is 16384");
    let long = format!(
        "GET /jobs?x={} HTTP/1.1\r\nHost: b\r\n\r\n",
        "a".repeat(9_000)
    );
    let answer = raw_exchange(&runtime, long.as_bytes()).await;
    assert_problem_answer(&answer, 414, "the limit is 8192");
    let answer = raw_exchange(&runtime, b"PATCH /healthz HTTP/1.1\r\nHost: b\r\n\r\n").await;
    assert_problem_answer(&answer, 405, "does not support this method");

    let r = fresh_connections()
        .get(format!("{}/healthz", runtime.base_url))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "still serving");
    runtime.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jobs_of_clients_that_hang_up_right_after_posting_all_run_to_the_end() {
    let env = Env::new(fast_settings());
    let seeded = env.seed(40).await;
    let config = RuntimeConfig {
        limits: tight_limits(),
        ..env.config()
    };
    // A slow fanout queue widens the window between writing a job and starting it, where
    // a dropped request used to leave the job PENDING.
    let runtime = env
        .start(config, |mut ports| {
            let mut queue = FaultyQueue::new(ports.fanout_queue.raw().clone());
            queue.send_delay = Duration::from_millis(300);
            ports.fanout_queue = bulklink_core::ports::TypedQueue::new(Arc::new(queue));
            ports
        })
        .await;
    let admin = runtime.api_as(Role::Admin).unwrap();
    let token = runtime
        .token_for("hang-up", Role::Brand(seeded.brand_id))
        .unwrap();
    let mut offers = vec![seeded.offer_id];
    for i in 1..20 {
        let offer: Value = admin
            .post(
                "/offers",
                &json!({ "brandId": seeded.brand_id, "name": format!("o{i}") }),
            )
            .await
            .unwrap();
        offers.push(offer["id"].as_str().unwrap().parse().unwrap());
    }

    for (i, offer) in offers.iter().enumerate() {
        let stream = TcpStream::connect(runtime.addr).await.unwrap();
        let request = format!(
            "POST /offers/{offer}/link-all-locations HTTP/1.1\r\nHost: b\r\n\
             Authorization: Bearer {token}\r\nContent-Length: 0\r\n\r\n"
        );
        let mut stream = stream;
        stream.write_all(request.as_bytes()).await.unwrap();
        // Hang up once the job is written, while it is being started.
        let jobs = runtime.ports.jobs.clone();
        eventually(Duration::from_secs(10), "the job to be written", || async {
            jobs.page_brand_jobs(seeded.brand_id, None, 100)
                .await
                .unwrap()
                .items
                .iter()
                .any(|j| j.offer_id == Some(*offer))
        })
        .await;
        if i % 2 == 0 {
            // A reset rather than a close: the rudest hang-up.
            #[allow(deprecated)]
            stream.set_linger(Some(Duration::ZERO)).unwrap();
            drop(stream);
        } else {
            drop(stream);
        }
    }

    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let mut created = 0;
    for offer in &offers {
        let found = loop {
            let page = runtime
                .ports
                .jobs
                .page_brand_jobs(seeded.brand_id, None, 100)
                .await
                .unwrap();
            let jobs: Vec<_> = page
                .items
                .into_iter()
                .filter(|j| j.offer_id == Some(*offer))
                .collect();
            if jobs.iter().all(|j| j.status.is_terminal()) || tokio::time::Instant::now() > deadline
            {
                break jobs;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        for job in found {
            assert!(
                job.status.is_terminal(),
                "job {} of offer {offer} is still {} 30 s after its client hung up",
                job.id,
                job.status
            );
            assert_eq!(job.status, JobStatus::Succeeded);
            let one = SeededBrand {
                brand_id: seeded.brand_id,
                offer_id: *offer,
                locations: seeded.locations,
            };
            assert_exact(&env, &one, &job).await;
            assert_eq!(job.counters.linked, 40);
            created += 1;
        }
    }
    assert_eq!(created, 20);
    runtime.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn healthz_reports_a_database_file_removed_or_replaced_under_the_server() {
    let env = Env::new(fast_settings());
    let runtime = serve_with(&env, tight_limits()).await;
    let api = ApiClient::new(&runtime.base_url).unwrap();
    assert_eq!(
        api.send(reqwest::Method::GET, "/healthz", None, &[])
            .await
            .unwrap()
            .status,
        200
    );

    std::fs::remove_file(env.db()).unwrap();
    let r = api
        .send(reqwest::Method::GET, "/healthz", None, &[])
        .await
        .unwrap();
    assert_eq!(r.status, 503);
    let detail = r.body["detail"].as_str().unwrap();
    assert!(detail.contains(&env.db().display().to_string()), "{detail}");
    assert!(detail.contains("was removed"), "{detail}");

    std::fs::write(env.db(), b"").unwrap();
    let r = api
        .send(reqwest::Method::GET, "/healthz", None, &[])
        .await
        .unwrap();
    assert_eq!(r.status, 503);
    assert!(r.body["detail"].as_str().unwrap().contains("was replaced"));
    runtime.shutdown().await;
}

/// A `bulklink serve` process on the embedded backend; killed if the test ends early.
struct Serve {
    child: std::process::Child,
    base: String,
}

impl Serve {
    fn start(dir: &std::path::Path, port: u16) -> Serve {
        let child = Command::new(env!("CARGO_BIN_EXE_bulklink"))
            .current_dir(dir)
            .args(["serve", "--db", "bulklink.db", "--listen"])
            .arg(format!("127.0.0.1:{port}"))
            .args(["--write-budget", "1000", "--workers", "2"])
            .env("VISIBILITY_TIMEOUT_SECS", "5")
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        Serve {
            child,
            base: format!("http://127.0.0.1:{port}"),
        }
    }

    async fn ready(&self) {
        let http = ApiClient::new(&self.base).unwrap();
        eventually(Duration::from_secs(30), "serve to answer", || async {
            http.send(reqwest::Method::GET, "/healthz", None, &[])
                .await
                .is_ok_and(|r| r.status == 200)
        })
        .await;
    }
}

impl Serve {
    /// Kills the process with SIGKILL (no shutdown of any kind) and waits until it is gone.
    async fn kill_9(mut self) {
        let pid = self.child.id().to_string();
        assert!(Command::new("kill")
            .args(["-KILL", &pid])
            .status()
            .unwrap()
            .success());
        tokio::task::spawn_blocking(move || {
            self.child.wait().unwrap();
        })
        .await
        .unwrap();
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn cli(dir: &std::path::Path, args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_bulklink"))
        .current_dir(dir)
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_finishes_in_flight_requests_exits_0_and_a_restart_finishes_the_job() {
    let dir = tempfile::tempdir().unwrap();
    let seeded: Value = serde_json::from_str(&cli(
        dir.path(),
        &["seed", "--db", "bulklink.db", "--locations", "3000"],
    ))
    .unwrap();
    let brand = seeded["brandId"].as_str().unwrap().to_owned();
    let offer: OfferId = seeded["offerId"].as_str().unwrap().parse().unwrap();
    let token = cli(dir.path(), &["token", "--brand", &brand]);
    let port = free_port();
    let mut serve = Serve::start(dir.path(), port);
    serve.ready().await;
    let api = ApiClient::new(&serve.base).unwrap().with_token(&token);
    let job = api.create_job(offer, None, None).await.unwrap();
    eventually(
        Duration::from_secs(30),
        "the job to be under way",
        || async {
            api.job(job.id)
                .await
                .is_ok_and(|j| j.counters.processed > 0)
        },
    )
    .await;

    // A request in flight: its headers are read (the server asked for the body with
    // 100 Continue) when SIGTERM arrives; its body comes after.
    let body = json!([{ "address": "1 Late Street" }]).to_string();
    let mut stream = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    let head = format!(
        "POST /locations HTTP/1.1\r\nHost: b\r\nAuthorization: Bearer {token}\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\nExpect: 100-continue\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    let mut buf = [0u8; 64];
    let n = tokio::time::timeout(Duration::from_secs(10), stream.read(&mut buf))
        .await
        .unwrap()
        .unwrap();
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 100"));

    let pid = serve.child.id().to_string();
    assert!(Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap()
        .success());
    stream.write_all(body.as_bytes()).await.unwrap();
    let answer = until_closed(&mut stream, Duration::from_secs(25))
        .await
        .unwrap();
    let answer = String::from_utf8_lossy(&answer);
    assert!(
        answer.starts_with("HTTP/1.1 201"),
        "the in-flight request completed: {answer}"
    );

    let status = tokio::task::spawn_blocking(move || {
        let status = serve.child.wait().unwrap();
        (status, serve)
    })
    .await
    .unwrap()
    .0;
    assert_eq!(status.code(), Some(0), "exit code after SIGTERM");

    let serve = Serve::start(dir.path(), free_port());
    serve.ready().await;
    let api = ApiClient::new(&serve.base).unwrap().with_token(&token);
    let done = api
        .wait_terminal(
            job.id,
            Duration::from_millis(100),
            Duration::from_secs(120),
            |_| {},
        )
        .await
        .unwrap();
    assert_eq!(done.status, JobStatus::Succeeded);
    assert_eq!(done.counters.counters.linked, 3_000);
    let store = EmbeddedStore::open(dir.path().join("bulklink.db")).unwrap();
    let stats = store
        .link_stats(brand.parse().unwrap(), offer)
        .await
        .unwrap();
    assert_eq!(
        (stats.offer_links, stats.offer_locations_total),
        (3_000, 3_000)
    );
    assert_eq!(
        stats.brand_locations, 3_001,
        "the in-flight location was created"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_refuses_to_run_without_auth_off_loopback() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_bulklink"))
        .current_dir(dir.path())
        .args(["serve", "--insecure-no-auth", "--listen", "0.0.0.0:0"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("only runs on a loopback --listen address"),
        "{stderr}"
    );
    assert!(
        !dir.path().join("bulklink.db").exists(),
        "refused before opening anything"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_token_key_is_private_to_its_owner() {
    let dir = tempfile::tempdir().unwrap();
    let token = cli(dir.path(), &["token", "--admin", "--ttl", "5m"]);
    assert_eq!(
        token.split('.').count(),
        3,
        "a JWT alone on stdout: {token}"
    );
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(dir.path().join("bulklink.key"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    std::fs::set_permissions(
        dir.path().join("bulklink.key"),
        std::fs::Permissions::from_mode(0o644),
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_bulklink"))
        .current_dir(dir.path())
        .args(["token", "--admin"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("chmod 600"));
}

#[test]
fn the_secrets_key_is_private_to_its_owner_and_refused_when_others_can_read_it() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("bulklink.db");
    drop(EmbeddedStore::open(&db).unwrap());
    let key = dir.path().join("bulklink-secrets.key");
    let mode = std::fs::metadata(&key).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o640)).unwrap();
    let refused = EmbeddedStore::open(&db).err().expect("refused").to_string();
    assert!(
        refused.contains("secrets key") && refused.contains("chmod 600"),
        "{refused}"
    );
    // Named elsewhere, the key is made there.
    let elsewhere = dir.path().join("keys");
    std::fs::create_dir(&elsewhere).unwrap();
    let named = elsewhere.join("webhooks.key");
    drop(
        EmbeddedStore::open_with(
            dir.path().join("other.db"),
            bulklink_core::Clock::system(),
            &named,
        )
        .unwrap(),
    );
    assert!(named.exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lambda_with_an_invalid_setting_reports_it_to_the_runtime_api_at_init() {
    for (name, value) in [("CHUNK_SIZE", "5000"), ("AUTH_MODE", "maybe")] {
        let api = RuntimeApi::start().await;
        let out = tokio::task::spawn_blocking({
            let host = api.host();
            move || {
                Command::new(function_binary("bulklink-job-api"))
                    .env_clear()
                    .envs(bulklink_aws::AwsNames::ENV.map(|n| (n, "unused")))
                    .env("AWS_LAMBDA_RUNTIME_API", host)
                    .env("LOG_FORMAT", "json")
                    .env(name, value)
                    .output()
                    .unwrap()
            }
        })
        .await
        .unwrap();
        assert_eq!(out.status.code(), Some(1), "{name}");
        let (kind, body) = api
            .init_error(Duration::from_secs(5))
            .await
            .expect("an init error was reported");
        assert_eq!(kind.as_deref(), Some("Runtime.InvalidSetting"));
        assert!(
            body["errorMessage"].as_str().unwrap().contains(name),
            "{body}"
        );
        let stderr = String::from_utf8_lossy(&out.stderr);
        let line: Value = stderr
            .lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .find(|l| l["level"] == "ERROR")
            .unwrap_or_else(|| panic!("no JSON error line: {stderr}"));
        assert_eq!(line["setting"], name, "{line}");
        assert_eq!(line["value"], value, "{line}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn under_a_1024_file_limit_1100_held_connections_do_not_lock_clients_out() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let bin = env!("CARGO_BIN_EXE_bulklink");
    let mut server = Command::new("sh")
        .current_dir(dir.path())
        .arg("-c")
        .arg(format!(
            "ulimit -n 1024 && exec {bin} serve --db bulklink.db --listen 127.0.0.1:{port} \
             --header-read-timeout 2 --idle-timeout 3"
        ))
        .env("RUST_LOG", "error")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let base = format!("http://127.0.0.1:{port}");
    let http = fresh_connections();
    let healthz = format!("{base}/healthz");
    eventually(Duration::from_secs(30), "serve to answer", || async {
        matches!(http.get(&healthz).send().await, Ok(r) if r.status() == 200)
    })
    .await;

    let mut held = Vec::new();
    for i in 0..1_100 {
        let mut stream = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
        if i % 2 == 0 {
            let _ = stream
                .write_all(b"GET /healthz HTTP/1.1\r\nHost: b\r\n")
                .await;
        }
        held.push(stream);
    }
    // Once the held connections' timeouts pass, a client is served within 1 s again, and
    // the server is still accepting.
    eventually(
        Duration::from_secs(30),
        "healthz after the timeouts",
        || async { matches!(http.get(&healthz).send().await, Ok(r) if r.status() == 200) },
    )
    .await;
    for _ in 0..5 {
        let r = http
            .get(&healthz)
            .send()
            .await
            .expect("answered within 1 s");
        assert_eq!(r.status(), 200);
    }
    assert!(
        server.try_wait().unwrap().is_none(),
        "the server is still running"
    );
    drop(held);
    let _ = server.kill();
    let _ = server.wait();
}

/// A real `bulklink serve` killed with SIGKILL in the middle of an undo (writes made,
/// chunks unaccounted); a new one on the same file finishes the undo exactly.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_undo_killed_mid_way_is_exact_after_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let seeded: Value = serde_json::from_str(&cli(
        dir.path(),
        &["seed", "--db", "bulklink.db", "--locations", "1000"],
    ))
    .unwrap();
    let brand = seeded["brandId"].as_str().unwrap().to_owned();
    let offer: OfferId = seeded["offerId"].as_str().unwrap().parse().unwrap();
    let token = cli(dir.path(), &["token", "--brand", &brand]);
    let serve = Serve::start(dir.path(), free_port());
    serve.ready().await;
    let api = ApiClient::new(&serve.base).unwrap().with_token(&token);
    let job = api.create_job(offer, None, None).await.unwrap();
    let wait = |api: ApiClient, id| async move {
        api.wait_terminal(
            id,
            Duration::from_millis(20),
            Duration::from_secs(120),
            |_| {},
        )
        .await
        .unwrap()
    };
    let linked = wait(api.clone(), job.id).await;
    assert_eq!(linked.counters.counters.linked, 1_000);

    let undo = api
        .send(
            reqwest::Method::POST,
            &format!("/jobs/{}/undo", job.id),
            None,
            &[],
        )
        .await
        .unwrap();
    assert_eq!(undo.status, 202, "{}", undo.body);
    let undo_id: bulklink_core::domain::JobId = undo.body["id"].as_str().unwrap().parse().unwrap();
    // At 1,000 writes a second the undo takes seconds: kill it once it is under way.
    eventually(
        Duration::from_secs(30),
        "the undo to be under way",
        || async {
            api.job(undo_id)
                .await
                .is_ok_and(|j| j.counters.counters.unlinked > 0)
        },
    )
    .await;
    serve.kill_9().await;
    let mid = EmbeddedStore::open(dir.path().join("bulklink.db"))
        .unwrap()
        .link_stats(brand.parse().unwrap(), offer)
        .await
        .unwrap();
    assert!(
        mid.offer_links > 0 && mid.offer_links < 1_000,
        "killed mid-undo: {mid:?}"
    );

    let restarted = Serve::start(dir.path(), free_port());
    restarted.ready().await;
    let api = ApiClient::new(&restarted.base).unwrap().with_token(&token);
    let done = wait(api, undo_id).await;
    assert_eq!(done.status, JobStatus::Succeeded);
    assert_eq!(
        (
            done.counters.counters.total,
            done.counters.counters.unlinked
        ),
        (1_000, 1_000)
    );
    let stats = EmbeddedStore::open(dir.path().join("bulklink.db"))
        .unwrap()
        .link_stats(brand.parse().unwrap(), offer)
        .await
        .unwrap();
    assert_eq!(
        (
            stats.offer_links,
            stats.offer_locations_total,
            stats.brand_locations_with_offer
        ),
        (0, 0, 0)
    );
}

/// A real `bulklink serve` killed with SIGKILL in the middle of an import (rows applied,
/// chunks unaccounted); a new one on the same file finishes it with every row counted once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_import_killed_mid_way_is_exact_after_a_restart() {
    use bulklink_core::ports::JobStore;

    let dir = tempfile::tempdir().unwrap();
    let brand = bulklink_core::domain::BrandId::new_random().to_string();
    // Create the store (and its key) before the server does: `token` needs the key.
    let token = cli(dir.path(), &["token", "--brand", &brand]);
    let serve = Serve::start(dir.path(), free_port());
    serve.ready().await;
    let api = ApiClient::new(&serve.base).unwrap().with_token(&token);
    let rows = 3_000;
    let file: String = std::iter::once("externalId,address,tags\n".to_owned())
        .chain((0..rows).map(|i| format!("k-{i},{i} Killed St,t{}\n", i % 4)))
        .collect();
    let import = api.create_import("csv", false).await.unwrap();
    let (status, body) = api
        .upload(import.upload_url.as_deref().unwrap(), file.clone())
        .await
        .unwrap();
    assert_eq!(status, 202, "{body}");
    let job = api
        .import_job(import.id, Duration::from_secs(30))
        .await
        .unwrap();
    // At 1,000 writes a second the import takes seconds: kill it once it is under way.
    eventually(
        Duration::from_secs(30),
        "the import to be under way",
        || async {
            api.job(job)
                .await
                .is_ok_and(|j| j.counters.counters.created > 0)
        },
    )
    .await;
    serve.kill_9().await;
    let mid = EmbeddedStore::open(dir.path().join("bulklink.db"))
        .unwrap()
        .get_job(job)
        .await
        .unwrap()
        .unwrap();
    assert!(
        !mid.status.is_terminal() && mid.counters.created < rows,
        "killed mid-import: {:?} {:?}",
        mid.status,
        mid.counters
    );

    let restarted = Serve::start(dir.path(), free_port());
    restarted.ready().await;
    let api = ApiClient::new(&restarted.base).unwrap().with_token(&token);
    let done = api
        .wait_terminal(
            job,
            Duration::from_millis(20),
            Duration::from_secs(120),
            |_| {},
        )
        .await
        .unwrap();
    assert_eq!(done.status, JobStatus::Succeeded);
    let c = &done.counters.counters;
    assert_eq!(
        (c.total, c.created, c.updated, c.unchanged, c.invalid),
        (rows, rows, 0, 0, 0)
    );
    let mut stores = 0;
    let mut cursor: Option<String> = None;
    loop {
        let path = match &cursor {
            Some(c) => format!("/locations?limit=1000&cursor={c}"),
            None => "/locations?limit=1000".to_owned(),
        };
        let page: Value = api.get(&path).await.unwrap();
        stores += page["items"].as_array().unwrap().len() as u64;
        match page["nextCursor"].as_str() {
            Some(next) => cursor = Some(next.to_owned()),
            None => break,
        }
    }
    assert_eq!(stores, rows, "one store a row");

    // Its report, through the CLI: each row of the file once, none dropped.
    let report = cli(
        dir.path(),
        &[
            "job",
            "report",
            "--api",
            &restarted.base,
            "--token",
            &token,
            &job.to_string(),
        ],
    );
    let mut lines = report.lines();
    assert_eq!(
        lines.next(),
        Some("locationId,externalId,outcome,error,at,line")
    );
    let mut seen = std::collections::BTreeSet::new();
    for row in lines {
        let fields: Vec<&str> = row.split(',').collect();
        assert_eq!(fields[2], "created", "{row}");
        let line: u64 = fields[5].parse().unwrap();
        assert_eq!(fields[1], format!("k-{}", line - 2), "{row}");
        assert!(seen.insert(line), "line {line} twice");
    }
    assert_eq!(seen.len() as u64, rows, "a row for each line");
    assert_eq!(seen.first().copied(), Some(2));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_scheduled_before_a_kill_9_starts_after_the_restart_once() {
    use bulklink_core::ports::JobStore;

    let dir = tempfile::tempdir().unwrap();
    let seeded: Value = serde_json::from_str(&cli(
        dir.path(),
        &["seed", "--db", "bulklink.db", "--locations", "500"],
    ))
    .unwrap();
    let brand = seeded["brandId"].as_str().unwrap().to_owned();
    let offer: OfferId = seeded["offerId"].as_str().unwrap().parse().unwrap();
    let token = cli(dir.path(), &["token", "--brand", &brand]);
    let serve = Serve::start(dir.path(), free_port());
    serve.ready().await;
    let api = ApiClient::new(&serve.base).unwrap().with_token(&token);
    let not_before = chrono::Utc::now() + chrono::Duration::seconds(3);
    let created = api
        .send(
            reqwest::Method::POST,
            &format!("/offers/{offer}/link-all-locations"),
            Some(&json!({ "notBefore": not_before })),
            &[],
        )
        .await
        .unwrap();
    assert_eq!(created.status, 202, "{}", created.body);
    let job: bulklink_core::domain::JobId = created.body["id"].as_str().unwrap().parse().unwrap();
    serve.kill_9().await;
    let store = EmbeddedStore::open(dir.path().join("bulklink.db")).unwrap();
    let held = store.get_job(job).await.unwrap().unwrap();
    assert_eq!(held.status, JobStatus::Scheduled, "killed before its time");
    drop(store);

    let restarted = Serve::start(dir.path(), free_port());
    restarted.ready().await;
    let api = ApiClient::new(&restarted.base).unwrap().with_token(&token);
    let done = api
        .wait_terminal(
            job,
            Duration::from_millis(50),
            Duration::from_secs(120),
            |_| {},
        )
        .await
        .unwrap();
    assert_eq!(done.status, JobStatus::Succeeded);
    let c = &done.counters.counters;
    assert_eq!(
        (c.total, c.linked),
        (500, 500),
        "fanned out once, linked once"
    );
    assert!(
        done.started_at.unwrap()
            >= not_before
                .duration_trunc(chrono::Duration::milliseconds(1))
                .unwrap()
    );
    let store = EmbeddedStore::open(dir.path().join("bulklink.db")).unwrap();
    let stored = store.get_job(job).await.unwrap().unwrap();
    assert_eq!(stored.chunks_total, stored.chunks_done);
    assert_eq!(stored.chunks_total, 5, "500 locations in chunks of 100");
}
