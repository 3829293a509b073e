//! The backends the contract suite runs against, and the few builders every port's tests use.
//! A fixture is one fresh backend: its `Ports`, the settings they were built with, and
//! whatever must stay alive while a test runs.

use std::sync::OnceLock;
use std::time::Duration;

use bulklink_aws::{self as aws, AwsClients, LocalEmulator, ResourceNames};
use bulklink_core::domain::{BrandId, Job, Location, LocationId, Offer, OfferId};
use bulklink_core::ports::IdempotencyClaim;
use bulklink_core::{Ports, Settings};
use bulklink_sqlite::{self as embedded, EmbeddedStore};
use chrono::{DateTime, Utc};
use tempfile::TempDir;

const SQLITE_FILE: &str = "bulklink.db";

pub struct Fixture {
    pub ports: Ports,
    /// What the ports were built with; queue tests derive their waits from it.
    pub settings: Settings,
    /// Declared last so it is dropped last: the temporary directory outlives the store.
    backend: Backend,
}

enum Backend {
    Embedded {
        _dir: TempDir,
    },
    /// Resources under a prefix of their own on the process's one emulator.
    Aws,
}

/// One moto server for the whole test process; it exits when the process does.
static EMULATOR: OnceLock<LocalEmulator> = OnceLock::new();

fn emulator() -> &'static LocalEmulator {
    EMULATOR.get_or_init(|| {
        let workspace = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
        LocalEmulator::start(&workspace).expect("the moto emulator starts")
    })
}

impl Fixture {
    /// A fresh SQLite file in a temporary directory.
    pub async fn embedded() -> Fixture {
        // Small queue numbers keep redelivery and dead-letter tests to a second or two.
        let settings = Settings {
            max_receive_count: 3,
            visibility_timeout: Duration::from_millis(300),
            ..Settings::default()
        };
        let dir = tempfile::tempdir().expect("a temporary directory");
        let store = EmbeddedStore::open(dir.path().join(SQLITE_FILE)).expect("the store opens");
        let ports = embedded::ports(&store, &settings);
        Fixture {
            ports,
            settings,
            backend: Backend::Embedded { _dir: dir },
        }
    }

    /// Fresh tables, queues and a topic on a moto server, over the real SDK wire protocol.
    pub async fn aws() -> Fixture {
        // SQS counts visibility in whole seconds.
        let settings = Settings {
            max_receive_count: 3,
            visibility_timeout: Duration::from_secs(1),
            ..Settings::default()
        };
        let endpoint = emulator().endpoint().to_owned();
        let clients = AwsClients::load(Some(&endpoint)).await;
        let prefix = format!("t{}", &uuid::Uuid::new_v4().simple().to_string()[..12]);
        let resources = aws::bootstrap(&clients, &endpoint, &ResourceNames { prefix }, &settings)
            .await
            .expect("bootstrap on moto");
        Fixture {
            ports: aws::ports(
                &clients,
                &resources.names,
                bulklink_core::Clock::system(),
                settings.link_shards,
            ),
            settings,
            backend: Backend::Aws,
        }
    }

    /// How long to wait for a message that should arrive, redeliveries included: a bound,
    /// not a delay, since a long poll returns as soon as one does.
    pub fn arrival_wait(&self) -> Duration {
        self.settings.visibility_timeout * 10
    }

    /// How long to watch for a message that must not arrive: past any visibility timeout.
    pub fn quiet_wait(&self) -> Duration {
        self.settings.visibility_timeout * 3
    }

    /// Whether this is the embedded backend (whose server receives imports' files itself;
    /// on AWS they go to S3 by a presigned PUT).
    pub fn is_embedded(&self) -> bool {
        matches!(self.backend, Backend::Embedded { .. })
    }
}

pub fn offer(brand: BrandId) -> Offer {
    Offer {
        id: OfferId::new_random(),
        brand_id: brand,
        name: "Two for one".to_owned(),
        locations_total: 0,
        schedule: None,
    }
}

pub fn locations(brand: BrandId, n: usize) -> Vec<Location> {
    (0..n)
        .map(|i| {
            Location::new(
                LocationId::new_random(),
                brand,
                format!("{} Main Street", i + 1),
                now_ms(),
            )
        })
        .collect()
}

pub fn ids(locations: &[Location]) -> Vec<LocationId> {
    locations.iter().map(|l| l.id).collect()
}

/// A brand with an offer and `n` locations, stored.
pub async fn seed(ports: &Ports, n: usize) -> (Offer, Vec<LocationId>) {
    let brand = BrandId::new_random();
    let offer = offer(brand);
    ports.catalog.create_offer(&offer).await.expect("offer");
    let locations = locations(brand, n);
    for batch in locations.chunks(100) {
        ports
            .catalog
            .create_locations(batch)
            .await
            .expect("locations");
    }
    (offer, ids(&locations))
}

pub fn job_for(offer: &Offer) -> Job {
    Job::new(offer.brand_id, offer.id, None, now_ms())
}

pub fn claim(key: &str, request: &str) -> IdempotencyClaim {
    IdempotencyClaim {
        key_hash: format!("key-{key}"),
        request_hash: format!("request-{request}"),
    }
}

/// Stores keep milliseconds; a time they can hand back unchanged.
pub fn now_ms() -> DateTime<Utc> {
    DateTime::from_timestamp_millis(Utc::now().timestamp_millis()).expect("a valid time")
}
