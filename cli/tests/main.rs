//! End-to-end tests of the pipeline on the embedded backend: through HTTP, through the real
//! queue loops, and step by step, with faults injected at the port boundary.
// Tests may read the machine's time; production code reads bulklink_core::clock::Clock.
#![allow(clippy::disallowed_methods)]

mod runtime_api;
mod support;

mod access;
mod aws_serve;
mod bench_charts;
mod demo;
mod egress;
mod hardening;
mod held;
mod http_api;
mod imports;
mod kinds;
mod lambda_fixtures;
mod many_brands;
mod migration;
mod openapi;
mod pipeline;
mod rehearsal;
mod reports;
mod rules;
mod shards;
mod throttling;
mod tokens;
mod webhooks;
