//! The README's first command, as a test.

use bulklink::demo::{self, DemoOptions};
use bulklink::runtime::RuntimeConfig;

#[tokio::test]
async fn the_demo_links_every_location_exactly_once_and_sends_one_webhook() {
    let outcome = demo::run(DemoOptions {
        locations: 2_000,
        config: RuntimeConfig::default(),
        interactive: false,
    })
    .await
    .unwrap();
    assert_eq!(outcome.problems(), Vec::<String>::new());
    assert_eq!(outcome.stats.brand_locations, 2_000);
    assert_eq!(outcome.event["counters"]["linked"], 2_000);
}
