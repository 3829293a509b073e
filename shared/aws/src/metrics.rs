//! Counts AWS requests by service and operation: an SDK interceptor on every client, so the
//! bench can print requests per linked location and tests can assert request economy.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use aws_smithy_runtime_api::box_error::BoxError;
use aws_smithy_runtime_api::client::interceptors::context::{
    BeforeTransmitInterceptorContextRef, FinalizerInterceptorContextRef,
};
use aws_smithy_runtime_api::client::interceptors::Intercept;
use aws_smithy_runtime_api::client::orchestrator::Metadata;
use aws_smithy_runtime_api::client::runtime_components::RuntimeComponents;
use aws_smithy_types::config_bag::ConfigBag;

/// Calls (as the code made them) and HTTP attempts (including SDK retries) per operation.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counts {
    pub calls: u64,
    pub attempts: u64,
}

/// Whether an error type (header or body) names a throttling error.
fn is_throttling(text: &[u8]) -> bool {
    const CODES: [&[u8]; 3] = [
        b"ProvisionedThroughputExceeded",
        b"ThrottlingException",
        b"RequestLimitExceeded",
    ];
    CODES
        .iter()
        .any(|code| text.windows(code.len()).any(|w| w == *code))
}

#[derive(Clone, Debug, Default)]
pub struct RequestCounter {
    counts: Arc<Mutex<BTreeMap<(String, String), Counts>>>,
    throttles: Arc<AtomicU64>,
}

impl RequestCounter {
    pub fn new() -> Self {
        Self::default()
    }

    /// `(service, operation) → counts`, e.g. `("DynamoDB", "PutItem")`.
    pub fn snapshot(&self) -> BTreeMap<(String, String), Counts> {
        self.counts
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    pub fn reset(&self) {
        self.counts
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clear();
    }

    /// Attempts beyond the first of every call so far: the SDK's retries (throttling,
    /// timeouts, server errors).
    pub fn retries(&self) -> u64 {
        self.snapshot()
            .values()
            .map(|c| c.attempts.saturating_sub(c.calls))
            .sum()
    }

    /// Attempts DynamoDB answered with throttling (`ProvisionedThroughputExceededException`,
    /// `ThrottlingException`, `RequestLimitExceeded`), retried or not: the signal the
    /// adaptive write limiter backs off on.
    pub fn throttles(&self) -> u64 {
        self.throttles.load(Ordering::Relaxed)
    }

    fn bump(&self, cfg: &ConfigBag, attempt: bool) {
        let Some(meta) = cfg.load::<Metadata>() else {
            return;
        };
        let mut counts = self.counts.lock().unwrap_or_else(|p| p.into_inner());
        let entry = counts
            .entry((meta.service().to_owned(), meta.name().to_owned()))
            .or_default();
        if attempt {
            entry.attempts += 1;
        } else {
            entry.calls += 1;
        }
    }
}

impl Intercept for RequestCounter {
    fn name(&self) -> &'static str {
        "bulklink-request-counter"
    }

    // The operation's metadata is in the bag from serialization on, so calls are counted
    // when they end (once per call, however many attempts it took).
    fn read_after_execution(
        &self,
        _context: &FinalizerInterceptorContextRef<'_>,
        _runtime_components: &RuntimeComponents,
        cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        self.bump(cfg, false);
        Ok(())
    }

    fn read_after_attempt(
        &self,
        context: &FinalizerInterceptorContextRef<'_>,
        _runtime_components: &RuntimeComponents,
        _cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        if let Some(response) = context.response() {
            if response.status().as_u16() == 400 {
                let named = response
                    .headers()
                    .get("x-amzn-errortype")
                    .map(str::as_bytes);
                let text = named
                    .or_else(|| response.body().bytes())
                    .unwrap_or_default();
                if is_throttling(text) {
                    self.throttles.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
        Ok(())
    }

    fn read_before_transmit(
        &self,
        _context: &BeforeTransmitInterceptorContextRef<'_>,
        _runtime_components: &RuntimeComponents,
        cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        self.bump(cfg, true);
        Ok(())
    }
}
