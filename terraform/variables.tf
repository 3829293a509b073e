# Inputs of the deployment. Numbers that the Rust code also reads (chunk size, budget,
# concurrency, receive count, ...) reach it only through the functions' environment, which
# is built from these variables in lambda.tf: there is one source for each of them.

# --- naming and placement ----------------------------------------------------------------

variable "name" {
  description = "Prefix of every resource name (tables, queues, topic, functions, API)."
  type        = string
  default     = "bulklink"

  validation {
    condition     = can(regex("^[A-Za-z0-9-]{1,40}$", var.name))
    error_message = "name must be 1-40 letters, digits or hyphens (it prefixes queue, table and function names)."
  }
}

variable "aws_region" {
  description = "AWS region to deploy into, e.g. \"eu-west-1\"."
  type        = string
}

# --- Lambda artifacts ----------------------------------------------------------------------

variable "lambda_architecture" {
  description = "Instruction set of every function: \"x86_64\" or \"arm64\". Must match the target the artifacts were built for (cargo lambda build --arm64 for arm64)."
  type        = string
  default     = "x86_64"

  validation {
    condition     = contains(["x86_64", "arm64"], var.lambda_architecture)
    error_message = "lambda_architecture must be \"x86_64\" or \"arm64\"."
  }
}

variable "artifacts_dir" {
  description = "Directory holding <bin>/bootstrap.zip for each Lambda binary, as written by `cargo lambda build --release --output-format zip` (scripts/package.sh). Relative paths are relative to the directory terraform runs in (terraform/ with -chdir=terraform)."
  type        = string
  default     = "../target/lambda"
}

# --- per-function timeout and memory ---------------------------------------------------------

variable "job_api_timeout_seconds" {
  description = "Timeout of the job-api function (write side of the HTTP API). API Gateway stops waiting after 30 s."
  type        = number
  default     = 10

  validation {
    condition     = var.job_api_timeout_seconds >= 1 && var.job_api_timeout_seconds <= 30
    error_message = "job_api_timeout_seconds must be 1-30 (the HTTP API integration timeout is 30 s)."
  }
}

variable "job_api_memory_mb" {
  description = "Memory of the job-api function, in MB (CPU scales with it)."
  type        = number
  default     = 256
}

variable "status_timeout_seconds" {
  description = "Timeout of the status function (read side of the HTTP API, webhook subscriptions and their delivery log). API Gateway stops waiting after 30 s."
  type        = number
  default     = 10

  validation {
    condition     = var.status_timeout_seconds >= 1 && var.status_timeout_seconds <= 30
    error_message = "status_timeout_seconds must be 1-30 (the HTTP API integration timeout is 30 s)."
  }
}

variable "status_memory_mb" {
  description = "Memory of the status function, in MB."
  type        = number
  default     = 256
}

variable "fanout_timeout_seconds" {
  description = "Timeout of the fanout function. Fanout hands over to a fresh invocation before it runs out, so this bounds one invocation, not one job. The fanout queue's visibility timeout is 6 times this."
  type        = number
  default     = 120

  validation {
    condition     = var.fanout_timeout_seconds >= 30 && var.fanout_timeout_seconds <= 900
    error_message = "fanout_timeout_seconds must be 30-900 (it must leave room for the 10 s hand-over margin)."
  }
}

variable "fanout_memory_mb" {
  description = "Memory of the fanout function, in MB."
  type        = number
  default     = 256
}

variable "worker_timeout_seconds" {
  description = "Timeout of the worker function (one batch of chunks). The chunk queue's visibility timeout is 6 times this, so a delivery always ends before its message can be redelivered."
  type        = number
  default     = 60

  validation {
    condition     = var.worker_timeout_seconds >= 1 && var.worker_timeout_seconds <= 900
    error_message = "worker_timeout_seconds must be 1-900."
  }
}

variable "worker_memory_mb" {
  description = "Memory of the worker function, in MB."
  type        = number
  default     = 256
}

variable "worker_dlq_timeout_seconds" {
  description = "Timeout of the worker-dlq function (accounts chunks that reached the chunk dead-letter queue). The chunk DLQ's visibility timeout is 6 times this."
  type        = number
  default     = 60

  validation {
    condition     = var.worker_dlq_timeout_seconds >= 1 && var.worker_dlq_timeout_seconds <= 900
    error_message = "worker_dlq_timeout_seconds must be 1-900."
  }
}

variable "estate_timeout_seconds" {
  description = "Timeout of the estate function (one batch of catalog-stream records, each location followed by its brand's rules)."
  type        = number
  default     = 60

  validation {
    condition     = var.estate_timeout_seconds >= 1 && var.estate_timeout_seconds <= 900
    error_message = "estate_timeout_seconds must be 1-900."
  }
}

variable "estate_memory_mb" {
  description = "Memory of the estate function, in MB."
  type        = number
  default     = 256
}

variable "estate_batch_size" {
  description = "Catalog-stream records per estate invocation."
  type        = number
  default     = 100

  validation {
    condition     = var.estate_batch_size >= 1 && var.estate_batch_size <= 1000
    error_message = "estate_batch_size must be 1-1000."
  }
}

variable "estate_max_retries" {
  description = "Times the estate mapping retries a batch from its first failed record before sending it to estate-dlq."
  type        = number
  default     = 10

  validation {
    condition     = var.estate_max_retries >= 0 && var.estate_max_retries <= 10000
    error_message = "estate_max_retries must be 0-10000."
  }
}

variable "estate_age_alarm_seconds" {
  description = "Alarm when standing rules follow location changes later than this (the estate function's IteratorAge)."
  type        = number
  default     = 60
}

variable "worker_dlq_memory_mb" {
  description = "Memory of the worker-dlq function, in MB."
  type        = number
  default     = 256
}

variable "webhooks_timeout_seconds" {
  description = "Timeout of the webhooks function (one batch of webhook-queue messages, attempted side by side; one delivery attempt gives up after 10 s). The webhook queue's visibility timeout is 6 times this, and is also WEBHOOK_VISIBILITY_TIMEOUT_SECS."
  type        = number
  default     = 60

  validation {
    condition     = var.webhooks_timeout_seconds >= 15 && var.webhooks_timeout_seconds <= 900
    error_message = "webhooks_timeout_seconds must be 15-900 (a delivery attempt alone may take 10 s)."
  }
}

variable "webhooks_memory_mb" {
  description = "Memory of the webhooks function, in MB."
  type        = number
  default     = 256
}

variable "sweeper_timeout_seconds" {
  description = "Timeout of the sweeper function (one scheduled sweep)."
  type        = number
  default     = 60

  validation {
    condition     = var.sweeper_timeout_seconds >= 1 && var.sweeper_timeout_seconds <= 900
    error_message = "sweeper_timeout_seconds must be 1-900."
  }
}

variable "sweeper_memory_mb" {
  description = "Memory of the sweeper function, in MB."
  type        = number
  default     = 256
}

# --- throughput --------------------------------------------------------------------------------

variable "worker_max_concurrency" {
  description = "Worker instances at most. One number feeds the worker's reserved concurrency, the chunk event source mapping's maximum concurrency and WORKER_MAX_CONCURRENCY (each worker takes 1/N of the write budget). AWS requires at least 2 for an SQS event source mapping."
  type        = number
  default     = 4

  validation {
    condition     = var.worker_max_concurrency >= 2 && var.worker_max_concurrency <= 1000 && floor(var.worker_max_concurrency) == var.worker_max_concurrency
    error_message = "worker_max_concurrency must be a whole number 2-1000 (the SQS event source mapping's maximum_concurrency range)."
  }
}

variable "write_budget_per_sec" {
  description = "The initial write budget: catalog writes per second across all workers (about 2 per location: one on the offer's partition, one on the location item), used until an operator sets one at runtime with PUT /admin/write-budget (stored in the jobs table, re-read by every worker within 5 s). 0 = unlimited. Each worker gets budget / worker_max_concurrency. The default, 1000, is derived in docs/scaling.md: it keeps one offer's link partition at about half of DynamoDB's 1,000 writes/s per partition, even when that offer's job is the only one running."
  type        = number
  default     = 1000

  validation {
    condition     = var.write_budget_per_sec >= 0
    error_message = "write_budget_per_sec must be >= 0 (0 = unlimited)."
  }
}

variable "chunk_size" {
  description = "Location ids per chunk message, at most 1,000. Each chunk is one ledger transaction on its job's and its offer's items, which take about 65 a second (docs/scaling.md): above a write budget of ~13,000 writes/s raise it to 200 or more so that the ledger does not pace the job; a larger chunk takes longer per delivery (mind worker_batch_size and worker_timeout_seconds)."
  type        = number
  default     = 100

  validation {
    condition     = var.chunk_size >= 1 && var.chunk_size <= 1000
    error_message = "chunk_size must be 1-1000."
  }
}

variable "link_shards" {
  description = "Partitions of the catalog table a new offer's links are spread over (LINK_SHARDS): one offer's job can write about 980 locations/s per shard (docs/scaling.md). Offers keep the count they were made with; a page of an offer's links queries every shard."
  type        = number
  default     = 8

  validation {
    condition     = var.link_shards >= 1 && var.link_shards <= 64 && floor(var.link_shards) == var.link_shards
    error_message = "link_shards must be a whole number 1-64."
  }
}

variable "fanout_page_size" {
  description = "Location ids read per brand page by fanout (a keys-only GSI page of about 1 MB holds about 10,000). Must be at least chunk_size."
  type        = number
  default     = 10000

  validation {
    condition     = var.fanout_page_size >= 1
    error_message = "fanout_page_size must be >= 1."
  }
}

variable "fanout_batch_size" {
  description = "Fanout messages per fanout invocation. Each message may run until the function's deadline, so 1 is the sensible value."
  type        = number
  default     = 1

  validation {
    condition     = var.fanout_batch_size >= 1 && var.fanout_batch_size <= 10
    error_message = "fanout_batch_size must be 1-10."
  }
}

variable "worker_batch_size" {
  description = "Chunk messages per worker invocation. An invocation must finish its whole batch within worker_timeout_seconds; when a write budget is set, one chunk takes about 2 * chunk_size * worker_max_concurrency / write_budget_per_sec seconds, so operators may have to lower this (or raise the timeout) for small budgets."
  type        = number
  default     = 10

  validation {
    condition     = var.worker_batch_size >= 1 && var.worker_batch_size <= 10
    error_message = "worker_batch_size must be 1-10."
  }
}

variable "worker_dlq_batch_size" {
  description = "Dead-lettered chunk messages per worker-dlq invocation."
  type        = number
  default     = 10

  validation {
    condition     = var.worker_dlq_batch_size >= 1 && var.worker_dlq_batch_size <= 10
    error_message = "worker_dlq_batch_size must be 1-10."
  }
}

variable "webhooks_batch_size" {
  description = "Webhook-queue messages per webhooks invocation (their attempts run side by side, so a slow receiver holds only its own message)."
  type        = number
  default     = 10

  validation {
    condition     = var.webhooks_batch_size >= 1 && var.webhooks_batch_size <= 10
    error_message = "webhooks_batch_size must be 1-10."
  }
}

# --- failure handling ---------------------------------------------------------------------------

variable "max_receive_count" {
  description = "Deliveries of a fanout, chunk or webhook-queue message before SQS moves it to the queue's dead-letter queue (also MAX_RECEIVE_COUNT for the code). AWS recommends at least 5 for Lambda consumers, so that throttled deliveries do not dead-letter messages."
  type        = number
  default     = 5

  validation {
    condition     = var.max_receive_count >= 5 && var.max_receive_count <= 1000
    error_message = "max_receive_count must be 5-1000."
  }
}

variable "webhook_disable_after_days" {
  description = "A webhook subscription whose every delivery has failed for this many days is disabled (its brand's other subscriptions hear webhook.disabled; the alarm webhooks-disabled counts it) (WEBHOOK_DISABLE_AFTER_DAYS)."
  type        = number
  default     = 5

  validation {
    condition     = var.webhook_disable_after_days >= 1 && var.webhook_disable_after_days <= 90
    error_message = "webhook_disable_after_days must be 1 to 90."
  }
}

variable "webhook_retry_hours" {
  description = "Failed webhook deliveries are retried (with backoff, as delayed messages on the webhook queue) for this long after their first attempt, then given up (WEBHOOK_RETRY_HOURS)."
  type        = number
  default     = 24

  validation {
    condition     = var.webhook_retry_hours > 0 && var.webhook_retry_hours <= 336
    error_message = "webhook_retry_hours must be > 0 and at most 336 (14 days)."
  }
}

variable "failure_threshold" {
  description = "Share (0-1) of attempted locations that failed at which a job is failed, once failure_min_sample locations were attempted."
  type        = number
  default     = 0.25

  validation {
    condition     = var.failure_threshold >= 0 && var.failure_threshold <= 1
    error_message = "failure_threshold must be between 0 and 1."
  }
}

variable "failure_min_sample" {
  description = "Locations a job must have attempted before failure_threshold can fail it."
  type        = number
  default     = 1000

  validation {
    condition     = var.failure_min_sample >= 0
    error_message = "failure_min_sample must be >= 0."
  }
}

variable "sweep_schedule" {
  description = "EventBridge schedule expression of the sweeper, which completes, notifies or restarts jobs an interrupted step left behind."
  type        = string
  default     = "rate(5 minutes)"
}

variable "drift_watch_schedule" {
  description = "EventBridge schedule expression of the drift watch, which counts every standing rule's drift (reading each ruled brand's locations: about one read unit per location per rule)."
  type        = string
  default     = "rate(15 minutes)"
}

variable "drift_settle_minutes" {
  description = "A standing rule's drift that has lasted this long is told to its brand as offer.drift, once per stretch (DRIFT_SETTLE_MINUTES)."
  type        = number
  default     = 30

  validation {
    condition     = var.drift_settle_minutes >= 1 && var.drift_settle_minutes <= 10080
    error_message = "drift_settle_minutes must be 1-10080."
  }
}

# --- observability ------------------------------------------------------------------------------

variable "log_retention_days" {
  description = "Retention of every log group (functions and API access log), in days."
  type        = number
  default     = 30

  validation {
    condition     = contains([1, 3, 5, 7, 14, 30, 60, 90, 120, 150, 180, 365, 400, 545, 731, 1096, 1827, 2192, 2557, 2922, 3288, 3653], var.log_retention_days)
    error_message = "log_retention_days must be one of the values CloudWatch Logs accepts (1, 3, 5, 7, 14, 30, 60, 90, 120, 150, 180, 365, 400, 545, 731, 1096, 1827, 2192, 2557, 2922, 3288, 3653)."
  }
}

variable "alarm_sns_topic_arn" {
  description = "SNS topic that alarms notify (alarm and OK). null = alarms without actions."
  type        = string
  default     = null
}

variable "fanout_age_alarm_seconds" {
  description = "Alarm when the oldest fanout message is older than this (fanout should pick up a job within seconds)."
  type        = number
  default     = 900
}

variable "chunk_age_alarm_seconds" {
  description = "Alarm when the oldest chunk message is older than this. A large job under a small write budget keeps chunks queued for long: raise this to the longest expected job."
  type        = number
  default     = 3600
}

variable "webhooks_age_alarm_seconds" {
  description = "Alarm when the oldest webhook-queue message is older than this. A new event is picked up within seconds; a retry is a fresh message delayed by at most 15 minutes (SQS's limit), so a healthy queue stays near or below 900 s."
  type        = number
  default     = 900
}

# --- API request limits ---------------------------------------------------------------------------

variable "brand_requests_per_sec" {
  description = "Requests per second one brand may make to the API (BRAND_RATE_PER_SEC of the job-api and status functions): a token bucket per brand, refilled at this rate; beyond it the API answers 429 problem+json with Retry-After. Administrators are not limited. Each function instance keeps its own buckets, so the effective limit is this times the warm instances (an upper bound; see docs/scaling.md)."
  type        = number
  default     = 20

  validation {
    condition     = var.brand_requests_per_sec > 0
    error_message = "brand_requests_per_sec must be > 0."
  }
}

variable "approval_above_locations" {
  description = "A new job of more locations than this is created AWAITING_APPROVAL and starts only once a second caller of its brand approves it (APPROVAL_ABOVE_LOCATIONS of the HTTP functions); 0 = only jobs whose request asks for it (requireApproval)."
  type        = number
  default     = 0

  validation {
    condition     = var.approval_above_locations >= 0 && floor(var.approval_above_locations) == var.approval_above_locations
    error_message = "approval_above_locations must be a whole number >= 0 (0 = off)."
  }
}

variable "report_rows_per_response" {
  description = "Most rows of a job's report (GET /jobs/{jobId}/report) in one response (REPORT_ROWS_PER_RESPONSE of the HTTP functions); a longer report ends each part with a Link to the next. A row is about 130 bytes: the default keeps a part well under the 6 MB a Lambda response may be."
  type        = number
  default     = 30000

  validation {
    condition     = var.report_rows_per_response >= 1 && var.report_rows_per_response <= 40000 && floor(var.report_rows_per_response) == var.report_rows_per_response
    error_message = "report_rows_per_response must be a whole number 1 to 40000 (a Lambda response is at most 6 MB)."
  }
}

variable "brand_request_burst" {
  description = "Requests one brand may make at once before brand_requests_per_sec applies: the size of its token bucket (BRAND_RATE_BURST of the job-api and status functions)."
  type        = number
  default     = 40

  validation {
    condition     = var.brand_request_burst > 0 && floor(var.brand_request_burst) == var.brand_request_burst
    error_message = "brand_request_burst must be a whole number > 0 (a count of requests)."
  }
}

variable "api_throttle_rate_limit" {
  description = "Steady requests per second of the HTTP API stage's default route throttling: every route without settings of its own, all callers together (API Gateway knows no brands). Best effort, and at most the account's regional limit (10,000 per second by default)."
  type        = number
  default     = 500

  validation {
    condition     = var.api_throttle_rate_limit > 0
    error_message = "api_throttle_rate_limit must be > 0 (0 would refuse every request)."
  }
}

variable "api_throttle_burst_limit" {
  description = "Burst (bucket size) of the HTTP API stage's default route throttling, all callers together. At most the account's regional burst (5,000 by default)."
  type        = number
  default     = 1000

  validation {
    condition     = var.api_throttle_burst_limit >= 1 && floor(var.api_throttle_burst_limit) == var.api_throttle_burst_limit
    error_message = "api_throttle_burst_limit must be a whole number >= 1."
  }
}

# --- API authentication --------------------------------------------------------------------------

variable "authorizer_enabled" {
  description = "Put a JWT authorizer on every HTTP route except GET /healthz. Turned off only by setting it to false explicitly."
  type        = bool
  default     = true
  nullable    = false
}

variable "jwt_issuer" {
  description = "Issuer URL of the JWT authorizer (the iss claim, e.g. https://cognito-idp.<region>.amazonaws.com/<pool-id>). Required while authorizer_enabled is true."
  type        = string
  default     = null
}

variable "brand_claim" {
  description = "The JWT claim that names a caller's brand (one brand UUID). The scope bulklink:admin makes a caller an administrator of every brand instead. See terraform/README.md for issuing such tokens with Cognito or another OIDC provider."
  type        = string
  default     = "brand_id"
  nullable    = false

  validation {
    condition     = can(regex("^[A-Za-z0-9_:.-]+$", var.brand_claim))
    error_message = "brand_claim must be a claim name: letters, digits, _ : . - and no spaces."
  }
}

variable "jwt_audience" {
  description = "Accepted audiences of the JWT authorizer (the aud claim, or the client id for Cognito access tokens). Required (non-empty) while authorizer_enabled is true."
  type        = list(string)
  default     = []
  nullable    = false
}

variable "max_import_bytes" {
  description = "The largest import file taken (bytes); a larger one fails its import job without a row applied (MAX_IMPORT_BYTES)"
  type        = number
  default     = 1073741824
  validation {
    condition     = var.max_import_bytes >= 1024 && var.max_import_bytes <= 5368709120
    error_message = "max_import_bytes must be 1 KiB to 5 GiB (the largest object one S3 copy takes)."
  }
}

variable "import_upload_expiry_seconds" {
  description = "How long an import's presigned upload URL works (IMPORT_UPLOAD_EXPIRY_SECS); at most the signing role's session allows"
  type        = number
  default     = 900
  validation {
    condition     = var.import_upload_expiry_seconds >= 60 && var.import_upload_expiry_seconds <= 3600
    error_message = "import_upload_expiry_seconds must be 60 to 3600 (a Lambda role's credentials last about an hour)."
  }
}

variable "import_retention_days" {
  description = "Days an import's file is kept in the uploads bucket before it expires"
  type        = number
  default     = 7
  validation {
    condition     = var.import_retention_days >= 1
    error_message = "import_retention_days must be at least 1."
  }
}
