//! `bulklink`: the whole pipeline in one process (API, fanout, workers, dead-letter consumer,
//! webhook delivery, sweeper) on the embedded backend, and the tools around it.
// Unit tests may read the machine's time; production code reads bulklink_core::clock::Clock.
#![cfg_attr(test, allow(clippy::disallowed_methods))]

pub mod bench;
pub mod charts;
pub mod client;
pub mod demo;
pub mod faults;
pub mod proxy;
pub mod receiver;
pub mod runtime;
pub mod seed;
pub mod server;
pub mod tokens;
