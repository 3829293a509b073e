//! Typed settings. One source of truth for every number two places must agree on (chunk
//! size, budget, concurrency, receive count): read from the environment that Terraform sets,
//! overridable by CLI flags.

use std::time::Duration;

use crate::domain::{DEFAULT_CHUNK_SIZE, MAX_CHUNK_SIZE};

#[derive(Clone, Debug, PartialEq)]
pub struct Settings {
    /// Location ids per chunk message (≤ 1,000): one ledger transaction each.
    pub chunk_size: usize,
    /// Location ids per brand page read by fanout.
    pub page_size: usize,
    /// Catalog writes per second across all workers; `None` = unlimited.
    pub write_budget_per_sec: Option<f64>,
    /// Worker instances (Lambda reserved concurrency / local worker tasks).
    pub worker_concurrency: usize,
    /// Deliveries of a message before it moves to the dead-letter queue.
    pub max_receive_count: u32,
    /// How long a received message stays invisible to other consumers.
    pub visibility_timeout: Duration,
    /// Failed share of attempted locations that fails the job...
    pub failure_threshold: f64,
    /// ...once at least this many locations were attempted.
    pub failure_min_sample: u64,
    /// Fanout hands over to a fresh invocation when less than this is left before its deadline.
    pub fanout_deadline_margin: Duration,
    /// Jobs untouched this long are looked at by the sweeper.
    pub sweep_idle_after: Duration,
    /// A job still PENDING this long after its last change was never started (its
    /// request died between writing it and starting it): the sweeper starts it.
    pub sweep_pending_after: Duration,
    /// Failed webhook deliveries are retried for this long after their first attempt.
    pub webhook_retry_window: Duration,
    /// A subscription whose every attempt has failed for this long is disabled.
    pub webhook_disable_after: Duration,
    /// How long a received webhook-queue message stays hidden (the local runner; on AWS the
    /// queue's own setting, from Terraform).
    pub webhook_visibility_timeout: Duration,
    /// Webhook attempts in flight at once, per deliverer.
    pub webhook_concurrency: usize,
    /// …and per receiving host (scheme, host and port).
    pub webhook_host_concurrency: usize,
    /// How often a worker re-reads the live write budget (`PUT /admin/write-budget`).
    pub budget_refresh: Duration,
    /// API requests per second each brand may make (a token bucket per brand; the
    /// administrator is not limited).
    pub brand_rate_per_sec: f64,
    /// …and the bucket's size: requests a brand may make at once.
    pub brand_rate_burst: u32,
    /// The largest import file taken (bytes): a larger upload is refused, its import job
    /// fails without a row applied.
    pub max_import_bytes: u64,
    /// How long an import's upload URL works.
    pub import_upload_expiry: Duration,
    /// Most rows of a job's report in one response (`None`: the whole report, streamed).
    /// On Lambda behind API Gateway, whose responses are buffered and at most 6 MB, a larger
    /// report is answered a part at a time, each with a `Link` to the next.
    pub report_rows_per_response: Option<usize>,
    /// A new job of more locations than this is created AWAITING_APPROVAL (`None`: only
    /// when its request asks for an approval).
    pub approval_above_locations: Option<u64>,
    /// Partitions a new offer's links are spread over on DynamoDB (its `linkShards`): one
    /// offer's job can write about 980 locations/s per shard. The embedded backend has no
    /// partitions and ignores it.
    pub link_shards: u16,
    /// A rule's drift that lasts this long is told to its brand (`offer.drift`).
    pub drift_settle: Duration,
}

/// Most link shards an offer may have: reading one page of its links queries every shard.
pub const MAX_LINK_SHARDS: u16 = 64;

impl Default for Settings {
    fn default() -> Self {
        Settings {
            chunk_size: DEFAULT_CHUNK_SIZE,
            page_size: 10_000,
            write_budget_per_sec: None,
            worker_concurrency: 4,
            max_receive_count: 5,
            visibility_timeout: Duration::from_secs(30),
            failure_threshold: 0.25,
            failure_min_sample: 1_000,
            fanout_deadline_margin: Duration::from_secs(10),
            sweep_idle_after: Duration::from_secs(300),
            sweep_pending_after: Duration::from_secs(20),
            webhook_retry_window: Duration::from_secs(24 * 3_600),
            webhook_disable_after: Duration::from_secs(5 * 86_400),
            webhook_visibility_timeout: Duration::from_secs(60),
            webhook_concurrency: 64,
            webhook_host_concurrency: 8,
            budget_refresh: Duration::from_secs(5),
            brand_rate_per_sec: 20.0,
            brand_rate_burst: 40,
            max_import_bytes: 1 << 30,
            import_upload_expiry: Duration::from_secs(15 * 60),
            report_rows_per_response: None,
            approval_above_locations: None,
            link_shards: 8,
            drift_settle: Duration::from_secs(30 * 60),
        }
    }
}

#[derive(Debug, thiserror::Error, PartialEq)]
#[error("setting {name}={value:?} is invalid: {why}")]
pub struct SettingsError {
    pub name: &'static str,
    pub value: String,
    pub why: &'static str,
}

impl Settings {
    /// Names of the environment variables, shared with Terraform.
    pub const ENV: [&'static str; 24] = [
        "CHUNK_SIZE",
        "FANOUT_PAGE_SIZE",
        "WRITE_BUDGET_PER_SEC",
        "WORKER_MAX_CONCURRENCY",
        "MAX_RECEIVE_COUNT",
        "VISIBILITY_TIMEOUT_SECS",
        "FAILURE_THRESHOLD",
        "FAILURE_MIN_SAMPLE",
        "FANOUT_DEADLINE_MARGIN_SECS",
        "SWEEP_IDLE_AFTER_SECS",
        "SWEEP_PENDING_AFTER_SECS",
        "WEBHOOK_RETRY_HOURS",
        "WEBHOOK_VISIBILITY_TIMEOUT_SECS",
        "WEBHOOK_CONCURRENCY",
        "WEBHOOK_HOST_CONCURRENCY",
        "WRITE_BUDGET_REFRESH_SECS",
        "BRAND_RATE_PER_SEC",
        "BRAND_RATE_BURST",
        "MAX_IMPORT_BYTES",
        "IMPORT_UPLOAD_EXPIRY_SECS",
        "REPORT_ROWS_PER_RESPONSE",
        "APPROVAL_ABOVE_LOCATIONS",
        "LINK_SHARDS",
        "DRIFT_SETTLE_MINUTES",
    ];

    pub fn from_env() -> Result<Self, SettingsError> {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    /// Reads settings through `lookup` (the environment in production, a map in tests).
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, SettingsError> {
        let mut s = Settings::default();
        if let Some(v) = lookup("CHUNK_SIZE") {
            s.chunk_size = parse("CHUNK_SIZE", &v)?;
        }
        if let Some(v) = lookup("FANOUT_PAGE_SIZE") {
            s.page_size = parse("FANOUT_PAGE_SIZE", &v)?;
        }
        if let Some(v) = lookup("WRITE_BUDGET_PER_SEC") {
            let budget: f64 = parse("WRITE_BUDGET_PER_SEC", &v)?;
            s.write_budget_per_sec = (budget > 0.0).then_some(budget);
        }
        if let Some(v) = lookup("WORKER_MAX_CONCURRENCY") {
            s.worker_concurrency = parse("WORKER_MAX_CONCURRENCY", &v)?;
        }
        if let Some(v) = lookup("MAX_RECEIVE_COUNT") {
            s.max_receive_count = parse("MAX_RECEIVE_COUNT", &v)?;
        }
        if let Some(v) = lookup("VISIBILITY_TIMEOUT_SECS") {
            s.visibility_timeout = Duration::from_secs_f64(parse("VISIBILITY_TIMEOUT_SECS", &v)?);
        }
        if let Some(v) = lookup("FAILURE_THRESHOLD") {
            s.failure_threshold = parse("FAILURE_THRESHOLD", &v)?;
        }
        if let Some(v) = lookup("FAILURE_MIN_SAMPLE") {
            s.failure_min_sample = parse("FAILURE_MIN_SAMPLE", &v)?;
        }
        if let Some(v) = lookup("FANOUT_DEADLINE_MARGIN_SECS") {
            s.fanout_deadline_margin =
                Duration::from_secs_f64(parse("FANOUT_DEADLINE_MARGIN_SECS", &v)?);
        }
        if let Some(v) = lookup("SWEEP_IDLE_AFTER_SECS") {
            s.sweep_idle_after = Duration::from_secs_f64(parse("SWEEP_IDLE_AFTER_SECS", &v)?);
        }
        if let Some(v) = lookup("SWEEP_PENDING_AFTER_SECS") {
            s.sweep_pending_after = Duration::from_secs_f64(parse("SWEEP_PENDING_AFTER_SECS", &v)?);
        }
        if let Some(v) = lookup("WEBHOOK_RETRY_HOURS") {
            let hours: f64 = parse("WEBHOOK_RETRY_HOURS", &v)?;
            if !(hours.is_finite() && hours > 0.0 && hours <= 24.0 * 14.0) {
                return Err(SettingsError {
                    name: "WEBHOOK_RETRY_HOURS",
                    value: v,
                    why: "must be more than 0 and at most 336 (14 days)",
                });
            }
            s.webhook_retry_window = Duration::from_secs_f64(hours * 3_600.0);
        }
        if let Some(v) = lookup("WEBHOOK_DISABLE_AFTER_DAYS") {
            let days: f64 = parse("WEBHOOK_DISABLE_AFTER_DAYS", &v)?;
            if !(days.is_finite() && (1.0..=90.0).contains(&days)) {
                return Err(SettingsError {
                    name: "WEBHOOK_DISABLE_AFTER_DAYS",
                    value: v,
                    why: "must be 1 to 90 days",
                });
            }
            s.webhook_disable_after = Duration::from_secs_f64(days * 86_400.0);
        }
        if let Some(v) = lookup("DRIFT_SETTLE_MINUTES") {
            let minutes: f64 = parse("DRIFT_SETTLE_MINUTES", &v)?;
            if !(minutes.is_finite() && (1.0..=10_080.0).contains(&minutes)) {
                return Err(SettingsError {
                    name: "DRIFT_SETTLE_MINUTES",
                    value: v,
                    why: "must be 1 to 10080 minutes (7 days)",
                });
            }
            s.drift_settle = Duration::from_secs_f64(minutes * 60.0);
        }
        if let Some(v) = lookup("WEBHOOK_VISIBILITY_TIMEOUT_SECS") {
            s.webhook_visibility_timeout =
                Duration::from_secs_f64(parse("WEBHOOK_VISIBILITY_TIMEOUT_SECS", &v)?);
        }
        if let Some(v) = lookup("WEBHOOK_CONCURRENCY") {
            s.webhook_concurrency = parse("WEBHOOK_CONCURRENCY", &v)?;
        }
        if let Some(v) = lookup("WEBHOOK_HOST_CONCURRENCY") {
            s.webhook_host_concurrency = parse("WEBHOOK_HOST_CONCURRENCY", &v)?;
        }
        if let Some(v) = lookup("WRITE_BUDGET_REFRESH_SECS") {
            s.budget_refresh = Duration::from_secs_f64(parse("WRITE_BUDGET_REFRESH_SECS", &v)?);
        }
        if let Some(v) = lookup("BRAND_RATE_PER_SEC") {
            s.brand_rate_per_sec = parse("BRAND_RATE_PER_SEC", &v)?;
        }
        if let Some(v) = lookup("BRAND_RATE_BURST") {
            s.brand_rate_burst = parse("BRAND_RATE_BURST", &v)?;
        }
        if let Some(v) = lookup("MAX_IMPORT_BYTES") {
            s.max_import_bytes = parse("MAX_IMPORT_BYTES", &v)?;
        }
        if let Some(v) = lookup("APPROVAL_ABOVE_LOCATIONS") {
            // 0 (Terraform's default) is off, as unset.
            let above: u64 = parse("APPROVAL_ABOVE_LOCATIONS", &v)?;
            s.approval_above_locations = (above > 0).then_some(above);
        }
        if let Some(v) = lookup("LINK_SHARDS") {
            s.link_shards = parse("LINK_SHARDS", &v)?;
        }
        if let Some(v) = lookup("REPORT_ROWS_PER_RESPONSE") {
            let rows: usize = parse("REPORT_ROWS_PER_RESPONSE", &v)?;
            if rows == 0 {
                return Err(SettingsError {
                    name: "REPORT_ROWS_PER_RESPONSE",
                    value: v,
                    why: "must be at least 1 (leave it unset for whole reports)",
                });
            }
            s.report_rows_per_response = Some(rows);
        }
        if let Some(v) = lookup("IMPORT_UPLOAD_EXPIRY_SECS") {
            let secs: u64 = parse("IMPORT_UPLOAD_EXPIRY_SECS", &v)?;
            // A presigned S3 URL lives at most 7 days.
            if secs == 0 || secs > 7 * 24 * 3_600 {
                return Err(SettingsError {
                    name: "IMPORT_UPLOAD_EXPIRY_SECS",
                    value: v,
                    why: "must be 1 to 604800 (7 days)",
                });
            }
            s.import_upload_expiry = Duration::from_secs(secs);
        }
        s.validate()?;
        Ok(s)
    }

    pub fn validate(&self) -> Result<(), SettingsError> {
        let fail = |name, value: String, why| Err(SettingsError { name, value, why });
        if self.chunk_size == 0 || self.chunk_size > MAX_CHUNK_SIZE {
            return fail(
                "CHUNK_SIZE",
                self.chunk_size.to_string(),
                "must be 1..=1000",
            );
        }
        if self.page_size < self.chunk_size {
            return fail(
                "FANOUT_PAGE_SIZE",
                self.page_size.to_string(),
                "must be at least CHUNK_SIZE",
            );
        }
        if self.worker_concurrency == 0 {
            return fail("WORKER_MAX_CONCURRENCY", "0".into(), "must be at least 1");
        }
        if self.webhook_concurrency == 0 || self.webhook_host_concurrency == 0 {
            return fail(
                "WEBHOOK_CONCURRENCY",
                self.webhook_concurrency.to_string(),
                "WEBHOOK_CONCURRENCY and WEBHOOK_HOST_CONCURRENCY must be at least 1",
            );
        }
        if self.webhook_visibility_timeout < Duration::from_secs(15) {
            return fail(
                "WEBHOOK_VISIBILITY_TIMEOUT_SECS",
                self.webhook_visibility_timeout.as_secs_f64().to_string(),
                "must be at least 15 s: longer than an attempt's 10 s timeout",
            );
        }
        if self.budget_refresh.is_zero() || self.budget_refresh > Duration::from_secs(5) {
            return fail(
                "WRITE_BUDGET_REFRESH_SECS",
                self.budget_refresh.as_secs_f64().to_string(),
                "must be more than 0 and at most 5: a budget change applies within 5 s",
            );
        }
        if !(self.brand_rate_per_sec.is_finite() && self.brand_rate_per_sec > 0.0) {
            return fail(
                "BRAND_RATE_PER_SEC",
                self.brand_rate_per_sec.to_string(),
                "must be more than 0",
            );
        }
        if self.brand_rate_burst == 0 {
            return fail("BRAND_RATE_BURST", "0".into(), "must be at least 1");
        }
        if self.link_shards == 0 || self.link_shards > MAX_LINK_SHARDS {
            return fail(
                "LINK_SHARDS",
                self.link_shards.to_string(),
                "must be 1..=64: a page of an offer's links queries every shard",
            );
        }
        if self.max_receive_count == 0 {
            return fail("MAX_RECEIVE_COUNT", "0".into(), "must be at least 1");
        }
        if !(0.0..=1.0).contains(&self.failure_threshold) {
            return fail(
                "FAILURE_THRESHOLD",
                self.failure_threshold.to_string(),
                "must be between 0 and 1",
            );
        }
        if let Some(budget) = self.write_budget_per_sec {
            if !budget.is_finite() || budget < 0.0 {
                return fail("WRITE_BUDGET_PER_SEC", budget.to_string(), "must be ≥ 0");
            }
        }
        if let Some(per_worker) = self.per_worker_write_budget() {
            // Two writes per location; a chunk must fit in most of its visibility timeout.
            let chunk_secs = 2.0 * self.chunk_size as f64 / per_worker;
            if chunk_secs > 0.5 * self.visibility_timeout.as_secs_f64() {
                return fail(
                    "VISIBILITY_TIMEOUT_SECS",
                    self.visibility_timeout.as_secs_f64().to_string(),
                    "must be at least twice the time one chunk takes at a worker's share of the \
                     write budget (2 × CHUNK_SIZE × WORKER_MAX_CONCURRENCY / WRITE_BUDGET_PER_SEC)",
                );
            }
        }
        Ok(())
    }

    /// The sweeper's thresholds at `now`: (idle since, pending since).
    pub fn sweep_thresholds(
        &self,
        now: chrono::DateTime<chrono::Utc>,
    ) -> (chrono::DateTime<chrono::Utc>, chrono::DateTime<chrono::Utc>) {
        let ago =
            |d: Duration| now - chrono::Duration::from_std(d).unwrap_or(chrono::Duration::MAX);
        (ago(self.sweep_idle_after), ago(self.sweep_pending_after))
    }

    /// Each worker instance's share of the write budget (DESIGN §5.5).
    pub fn per_worker_write_budget(&self) -> Option<f64> {
        self.write_budget_per_sec
            .map(|budget| budget / self.worker_concurrency as f64)
    }
}

fn parse<T: std::str::FromStr>(name: &'static str, value: &str) -> Result<T, SettingsError> {
    value.trim().parse().map_err(|_| SettingsError {
        name,
        value: value.to_owned(),
        why: "not a number of the right kind",
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn from(pairs: &[(&str, &str)]) -> Result<Settings, SettingsError> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Settings::from_lookup(|k| map.get(k).cloned())
    }

    #[test]
    fn defaults_apply_when_nothing_is_set() {
        assert_eq!(from(&[]).unwrap(), Settings::default());
    }

    #[test]
    fn the_write_budget_is_split_across_workers() {
        let s = from(&[
            ("WRITE_BUDGET_PER_SEC", "1000"),
            ("WORKER_MAX_CONCURRENCY", "4"),
        ])
        .unwrap();
        assert_eq!(s.per_worker_write_budget(), Some(250.0));
    }

    #[test]
    fn a_zero_budget_means_unlimited() {
        let s = from(&[("WRITE_BUDGET_PER_SEC", "0")]).unwrap();
        assert_eq!(s.write_budget_per_sec, None);
    }

    #[test]
    fn a_chunk_must_fit_its_visibility_timeout_at_the_write_budget() {
        // 100 locations × 2 writes at 10 writes/s per worker = 20 s a chunk.
        let tight = from(&[
            ("WRITE_BUDGET_PER_SEC", "40"),
            ("WORKER_MAX_CONCURRENCY", "4"),
            ("VISIBILITY_TIMEOUT_SECS", "30"),
        ]);
        assert_eq!(tight.unwrap_err().name, "VISIBILITY_TIMEOUT_SECS");
        let roomy = from(&[
            ("WRITE_BUDGET_PER_SEC", "40"),
            ("WORKER_MAX_CONCURRENCY", "4"),
            ("VISIBILITY_TIMEOUT_SECS", "60"),
        ]);
        assert!(roomy.is_ok());
    }

    #[test]
    fn webhook_settings_are_read_and_checked() {
        let s = from(&[
            ("WEBHOOK_RETRY_HOURS", "1.5"),
            ("WEBHOOK_VISIBILITY_TIMEOUT_SECS", "360"),
            ("WEBHOOK_CONCURRENCY", "16"),
            ("WEBHOOK_HOST_CONCURRENCY", "2"),
            ("WEBHOOK_DISABLE_AFTER_DAYS", "7"),
        ])
        .unwrap();
        assert_eq!(s.webhook_disable_after, Duration::from_secs(7 * 86_400));
        assert_eq!(
            from(&[("WEBHOOK_DISABLE_AFTER_DAYS", "0.5")])
                .unwrap_err()
                .name,
            "WEBHOOK_DISABLE_AFTER_DAYS"
        );
        assert_eq!(s.webhook_retry_window, Duration::from_secs(5_400));
        assert_eq!(s.webhook_visibility_timeout, Duration::from_secs(360));
        assert_eq!((s.webhook_concurrency, s.webhook_host_concurrency), (16, 2));
        assert_eq!(
            from(&[("WEBHOOK_RETRY_HOURS", "0")]).unwrap_err().name,
            "WEBHOOK_RETRY_HOURS"
        );
        assert_eq!(
            from(&[("WEBHOOK_VISIBILITY_TIMEOUT_SECS", "5")])
                .unwrap_err()
                .name,
            "WEBHOOK_VISIBILITY_TIMEOUT_SECS"
        );
    }

    #[test]
    fn link_shards_are_read_and_bounded() {
        assert_eq!(Settings::default().link_shards, 8);
        assert_eq!(from(&[("LINK_SHARDS", "16")]).unwrap().link_shards, 16);
        assert_eq!(
            from(&[("DRIFT_SETTLE_MINUTES", "90")])
                .unwrap()
                .drift_settle,
            Duration::from_secs(5_400)
        );
        for refused in ["0", "10081", "soon"] {
            assert_eq!(
                from(&[("DRIFT_SETTLE_MINUTES", refused)]).unwrap_err().name,
                "DRIFT_SETTLE_MINUTES"
            );
        }
        assert_eq!(from(&[("LINK_SHARDS", "1")]).unwrap().link_shards, 1);
        for bad in ["0", "65", "eight"] {
            assert_eq!(
                from(&[("LINK_SHARDS", bad)]).unwrap_err().name,
                "LINK_SHARDS",
                "{bad}"
            );
        }
    }

    #[test]
    fn bad_values_name_the_variable() {
        let err = from(&[("CHUNK_SIZE", "1001")]).unwrap_err();
        assert_eq!(err.name, "CHUNK_SIZE");
        assert_eq!(from(&[("CHUNK_SIZE", "1000")]).unwrap().chunk_size, 1_000);
        let err = from(&[("CHUNK_SIZE", "0")]).unwrap_err();
        assert_eq!(err.name, "CHUNK_SIZE");
        let err = from(&[("MAX_RECEIVE_COUNT", "many")]).unwrap_err();
        assert_eq!(err.name, "MAX_RECEIVE_COUNT");
    }
}
