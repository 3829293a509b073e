//! The README's first command, as a test; and `demo --console`, which keeps serving.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use bulklink::client::ApiClient;
use bulklink::demo::{self, DemoOptions};
use bulklink::runtime::RuntimeConfig;
use reqwest::Method;
use serde_json::Value;

#[tokio::test]
async fn the_demo_links_every_location_exactly_once_and_sends_one_webhook() {
    let outcome = demo::run(DemoOptions {
        locations: 2_000,
        config: RuntimeConfig::default(),
        interactive: false,
        console: false,
    })
    .await
    .unwrap();
    assert_eq!(outcome.problems(), Vec::<String>::new());
    assert_eq!(outcome.stats.brand_locations, 2_000);
    assert_eq!(outcome.event["counters"]["linked"], 2_000);
}

/// The process `demo --console` is; killed if the test ends early.
struct Child(std::process::Child);

impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demo_console_keeps_serving_and_prints_a_console_url_with_the_token_in_its_fragment() {
    let mut child = Child(
        Command::new(env!("CARGO_BIN_EXE_bulklink"))
            .args(["demo", "--console", "--locations", "300"])
            .env("RUST_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let stdout = child.0.stdout.take().unwrap();
    // The demo's output, line by line, up to the console's URL (or the end of its output);
    // read on to the end, so the demo's later lines never meet a closed pipe (on which it
    // would exit, as a command piped into `head` does).
    let (found, url) = tokio::sync::oneshot::channel();
    std::thread::spawn(move || {
        let mut seen = Vec::new();
        let mut found = Some(found);
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            match line.split_once("never sends): ") {
                Some((_, url)) => {
                    if let Some(found) = found.take() {
                        let _ = found.send((Some(url.trim().to_owned()), seen.clone()));
                    }
                }
                None => seen.push(line),
            }
        }
        if let Some(found) = found {
            let _ = found.send((None, seen));
        }
    });
    let (url, seen) = tokio::time::timeout(Duration::from_secs(120), url)
        .await
        .expect("the demo printed its console URL within 120 s")
        .unwrap();
    let url = url.unwrap_or_else(|| panic!("no console URL in the demo's output: {seen:#?}"));
    assert!(
        seen.iter().any(|l| l.starts_with("demo OK")),
        "the demo passed its checks first: {seen:#?}"
    );
    let (page, token) = url
        .split_once("#token=")
        .expect("the token is in the fragment");
    let base = page
        .strip_suffix("/console/")
        .expect("the URL is the console's");
    assert!(base.starts_with("http://127.0.0.1:"), "{base}");

    // The server still serves: the console's page, and the demo brand's job to its token.
    let anonymous = ApiClient::new(base).unwrap();
    let html = reqwest::get(page).await.unwrap();
    assert_eq!(html.status(), 200);
    assert_eq!(
        html.headers()["content-type"],
        "text/html; charset=utf-8",
        "the console page"
    );
    assert!(html.text().await.unwrap().contains("console.js"));
    let jobs = anonymous
        .clone()
        .with_token(token)
        .send(Method::GET, "/jobs", None, &[])
        .await
        .unwrap();
    assert_eq!(jobs.status, 200, "{:?}", jobs.body);
    let items = jobs.body["items"].as_array().unwrap();
    assert_eq!(items.len(), 1, "the demo's one job: {items:?}");
    assert_eq!(items[0]["status"], Value::from("SUCCEEDED"));
    assert_eq!(items[0]["counters"]["linked"], Value::from(300));

    // Ctrl-C (or SIGTERM) stops it cleanly.
    let pid = child.0.id().to_string();
    assert!(Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap()
        .success());
    let status = tokio::task::spawn_blocking(move || child.0.wait().unwrap())
        .await
        .unwrap();
    assert_eq!(status.code(), Some(0), "exit code after SIGTERM");
}
