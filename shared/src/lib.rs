//! bulklink's shared core: the domain, the ports every backend implements, the embedded
//! (SQLite) backend, settings, the HTTP error mapping and the job lifecycle steps that the
//! worker, fanout and sweeper have in common.
// Unit tests may read the machine's time; production code reads shared::clock::Clock.
#![cfg_attr(test, allow(clippy::disallowed_methods))]

pub mod auth;
pub mod aws;
pub mod budget;
pub mod clock;
pub mod config;
pub mod domain;
pub mod egress;
#[cfg(feature = "embedded")]
pub mod embedded;
pub mod error;
pub mod estimate;
pub mod http;
pub mod kinds;
pub mod lambda;
pub mod lifecycle;
pub mod openapi;
pub mod ports;
pub mod telemetry;
pub mod views;

pub use clock::Clock;
pub use config::Settings;
pub use error::{StoreError, StoreResult};
pub use ports::Ports;
