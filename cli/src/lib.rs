//! `bulklink`: the whole pipeline in one process (API, fanout, workers, dead-letter consumer,
//! webhook delivery, sweeper) on the embedded backend, and the tools around it.

pub mod bench;
pub mod charts;
pub mod client;
pub mod demo;
pub mod faults;
pub mod receiver;
pub mod runtime;
pub mod seed;
pub mod server;
