# The seven functions, their log groups, their triggers.
#
# Every function runs a Rust `bootstrap` binary on provided.al2023, built by
# `cargo lambda build --release --output-format zip` into <artifacts_dir>/<bin>/bootstrap.zip.
# worker and worker-dlq run the same binary; WORKER_SOURCE tells it which queue it drains.

locals {
  function_names = {
    job_api    = "${var.name}-job-api"
    status     = "${var.name}-status"
    fanout     = "${var.name}-fanout"
    worker     = "${var.name}-worker"
    worker_dlq = "${var.name}-worker-dlq"
    sweeper    = "${var.name}-sweeper"
    webhooks   = "${var.name}-webhooks"
    estate     = "${var.name}-estate"
  }

  bootstrap_zip = {
    for bin in ["bulklink-job-api", "bulklink-status", "bulklink-fanout", "bulklink-worker", "bulklink-sweeper", "bulklink-webhooks", "bulklink-estate"] :
    bin => "${var.artifacts_dir}/${bin}/bootstrap.zip"
  }

  # null until the artifacts are built, so that `terraform validate`/`plan` work without them.
  bootstrap_hash = {
    for bin, zip in local.bootstrap_zip : bin => fileexists(zip) ? filebase64sha256(zip) : null
  }

  # What every function is told (names from shared/aws/src/lib.rs and shared/core/src/config.rs).
  # Each value comes from the resource or variable it describes, never from a copy.
  lambda_env = {
    CATALOG_TABLE             = aws_dynamodb_table.catalog.name
    JOBS_TABLE                = aws_dynamodb_table.jobs.name
    FANOUT_QUEUE_URL          = aws_sqs_queue.fanout.url
    CHUNK_QUEUE_URL           = aws_sqs_queue.chunks.url
    CHUNK_DLQ_URL             = aws_sqs_queue.chunks_dlq.url
    WEBHOOK_QUEUE_URL         = aws_sqs_queue.webhooks.url
    EVENTS_TOPIC_ARN          = aws_sns_topic.job_events.arn
    UPLOADS_BUCKET            = aws_s3_bucket.uploads.id
    WEBHOOK_SECRETS_KEY_ID    = aws_kms_key.webhook_secrets.arn
    MAX_IMPORT_BYTES          = var.max_import_bytes
    IMPORT_UPLOAD_EXPIRY_SECS = var.import_upload_expiry_seconds
    CHUNK_SIZE                = var.chunk_size
    FANOUT_PAGE_SIZE          = var.fanout_page_size
    WRITE_BUDGET_PER_SEC      = var.write_budget_per_sec
    LINK_SHARDS               = var.link_shards
    WORKER_MAX_CONCURRENCY    = var.worker_max_concurrency
    MAX_RECEIVE_COUNT         = var.max_receive_count
    VISIBILITY_TIMEOUT_SECS   = aws_sqs_queue.chunks.visibility_timeout_seconds
    FAILURE_THRESHOLD         = var.failure_threshold
    FAILURE_MIN_SAMPLE        = var.failure_min_sample
    BRAND_CLAIM               = var.brand_claim
    # The webhook queue's own visibility timeout (6 x webhooks_timeout_seconds), and how
    # long failed deliveries are retried.
    WEBHOOK_VISIBILITY_TIMEOUT_SECS = aws_sqs_queue.webhooks.visibility_timeout_seconds
    WEBHOOK_RETRY_HOURS             = var.webhook_retry_hours
    WEBHOOK_DISABLE_AFTER_DAYS      = var.webhook_disable_after_days
    DRIFT_SETTLE_MINUTES            = var.drift_settle_minutes
    # The functions read the caller from the authorizer's claims; without the authorizer
    # they must be told so explicitly, or every request is refused (401).
    AUTH_MODE  = var.authorizer_enabled ? "gateway" : "none"
    LOG_FORMAT = "json"
    RUST_LOG   = "info"
  }

  # The HTTP functions also limit each brand's requests: a token bucket per brand in each
  # function instance (so the effective limit is this times the warm instances). A job's
  # report is answered in parts: API Gateway buffers a Lambda's response, at most 6 MB.
  api_env = merge(local.lambda_env, {
    BRAND_RATE_PER_SEC       = var.brand_requests_per_sec
    BRAND_RATE_BURST         = var.brand_request_burst
    REPORT_ROWS_PER_RESPONSE = var.report_rows_per_response
    APPROVAL_ABOVE_LOCATIONS = var.approval_above_locations
  })
}

# Created here (not by Lambda on first run) so that retention and encryption apply.
resource "aws_cloudwatch_log_group" "lambda" {
  #checkov:skip=CKV_AWS_338:Retention is an operator choice (var.log_retention_days, default 30 days for cost); set 365 or more where a year of logs is required
  for_each = local.function_names

  name              = "/aws/lambda/${each.value}"
  retention_in_days = var.log_retention_days
  kms_key_id        = aws_kms_key.main.arn
}

# --- HTTP functions (behind API Gateway, api.tf) ---------------------------------------------------

resource "aws_lambda_function" "job_api" {
  #checkov:skip=CKV_AWS_116:Invoked synchronously by API Gateway only; a dead-letter queue applies to asynchronous invocations
  #checkov:skip=CKV_AWS_115:Not reserved on purpose: the HTTP functions share the account's unreserved pool; only the worker's concurrency is a design parameter
  #checkov:skip=CKV_AWS_117:Reaches only AWS APIs (DynamoDB, SQS) over their public endpoints with IAM auth; a VPC would add NAT/endpoints for no isolation gain
  #checkov:skip=CKV_AWS_272:Artifacts are built from source by cargo lambda in CI and deployed by terraform; no AWS Signer profile exists for this project
  function_name    = local.function_names.job_api
  description      = "bulklink write side: create/cancel/pause/resume jobs, create offers and locations, link one location, the live write budget"
  role             = aws_iam_role.lambda["job_api"].arn
  runtime          = "provided.al2023"
  handler          = "bootstrap"
  architectures    = [var.lambda_architecture]
  filename         = local.bootstrap_zip["bulklink-job-api"]
  source_code_hash = local.bootstrap_hash["bulklink-job-api"]
  timeout          = var.job_api_timeout_seconds
  memory_size      = var.job_api_memory_mb
  kms_key_arn      = aws_kms_key.main.arn

  environment {
    variables = local.api_env
  }

  tracing_config {
    mode = "Active"
  }

  depends_on = [
    aws_cloudwatch_log_group.lambda["job_api"],
    aws_iam_role_policy.job_api,
    aws_iam_role_policy_attachment.xray["job_api"],
  ]
}

resource "aws_lambda_function" "status" {
  #checkov:skip=CKV_AWS_116:Invoked synchronously by API Gateway only; a dead-letter queue applies to asynchronous invocations
  #checkov:skip=CKV_AWS_115:Not reserved on purpose: the HTTP functions share the account's unreserved pool; only the worker's concurrency is a design parameter
  #checkov:skip=CKV_AWS_117:Reaches only AWS APIs (DynamoDB, SQS) over their public endpoints with IAM auth; a VPC would add NAT/endpoints for no isolation gain
  #checkov:skip=CKV_AWS_272:Artifacts are built from source by cargo lambda in CI and deployed by terraform; no AWS Signer profile exists for this project
  function_name    = local.function_names.status
  description      = "bulklink read side: jobs, failures, offers, locations, webhook subscriptions and deliveries"
  role             = aws_iam_role.lambda["status"].arn
  runtime          = "provided.al2023"
  handler          = "bootstrap"
  architectures    = [var.lambda_architecture]
  filename         = local.bootstrap_zip["bulklink-status"]
  source_code_hash = local.bootstrap_hash["bulklink-status"]
  timeout          = var.status_timeout_seconds
  memory_size      = var.status_memory_mb
  kms_key_arn      = aws_kms_key.main.arn

  environment {
    variables = local.api_env
  }

  tracing_config {
    mode = "Active"
  }

  depends_on = [
    aws_cloudwatch_log_group.lambda["status"],
    aws_iam_role_policy.status,
    aws_iam_role_policy_attachment.xray["status"],
  ]
}

# --- queue functions ---------------------------------------------------------------------------------

resource "aws_lambda_function" "fanout" {
  #checkov:skip=CKV_AWS_116:Invoked by an SQS event source mapping, not asynchronously; failed messages go to the fanout queue's own DLQ (redrive policy)
  #checkov:skip=CKV_AWS_115:Not reserved on purpose: fanout runs once per job at a time and is bounded by the fanout queue; only the worker's concurrency is a design parameter
  #checkov:skip=CKV_AWS_117:Reaches only AWS APIs (DynamoDB, SQS, SNS) over their public endpoints with IAM auth; a VPC would add NAT/endpoints for no isolation gain
  #checkov:skip=CKV_AWS_272:Artifacts are built from source by cargo lambda in CI and deployed by terraform; no AWS Signer profile exists for this project
  function_name    = local.function_names.fanout
  description      = "bulklink fanout: pages a brand's locations into chunk messages"
  role             = aws_iam_role.lambda["fanout"].arn
  runtime          = "provided.al2023"
  handler          = "bootstrap"
  architectures    = [var.lambda_architecture]
  filename         = local.bootstrap_zip["bulklink-fanout"]
  source_code_hash = local.bootstrap_hash["bulklink-fanout"]
  timeout          = var.fanout_timeout_seconds
  memory_size      = var.fanout_memory_mb
  kms_key_arn      = aws_kms_key.main.arn

  environment {
    variables = local.lambda_env
  }

  tracing_config {
    mode = "Active"
  }

  lifecycle {
    precondition {
      condition     = var.fanout_page_size >= var.chunk_size
      error_message = "fanout_page_size must be at least chunk_size (the code refuses to start otherwise)."
    }
  }

  depends_on = [
    aws_cloudwatch_log_group.lambda["fanout"],
    aws_iam_role_policy.fanout,
    aws_iam_role_policy_attachment.xray["fanout"],
  ]
}

resource "aws_lambda_function" "worker" {
  #checkov:skip=CKV_AWS_116:Invoked by an SQS event source mapping, not asynchronously; failed messages go to the chunk queue's own DLQ (redrive policy), which worker-dlq accounts
  #checkov:skip=CKV_AWS_117:Reaches only AWS APIs (DynamoDB, SQS, SNS) over their public endpoints with IAM auth; a VPC would add NAT/endpoints for no isolation gain
  #checkov:skip=CKV_AWS_272:Artifacts are built from source by cargo lambda in CI and deployed by terraform; no AWS Signer profile exists for this project
  function_name    = local.function_names.worker
  description      = "bulklink worker: links the locations of a chunk and ledgers it"
  role             = aws_iam_role.lambda["worker"].arn
  runtime          = "provided.al2023"
  handler          = "bootstrap"
  architectures    = [var.lambda_architecture]
  filename         = local.bootstrap_zip["bulklink-worker"]
  source_code_hash = local.bootstrap_hash["bulklink-worker"]
  timeout          = var.worker_timeout_seconds
  memory_size      = var.worker_memory_mb
  kms_key_arn      = aws_kms_key.main.arn

  # = the chunk mapping's maximum concurrency = WORKER_MAX_CONCURRENCY: N instances, each
  # with 1/N of the write budget.
  reserved_concurrent_executions = var.worker_max_concurrency

  environment {
    variables = merge(local.lambda_env, { WORKER_SOURCE = "chunks" })
  }

  tracing_config {
    mode = "Active"
  }

  lifecycle {
    # Mirrors Settings::validate: a chunk at one worker's share of the budget must take at
    # most half the visibility timeout (2 writes per location), or the code refuses to start.
    # This is the initial budget; one set later through PUT /admin/write-budget replaces it.
    precondition {
      condition     = var.write_budget_per_sec == 0 || 4 * var.chunk_size * var.worker_max_concurrency <= var.write_budget_per_sec * aws_sqs_queue.chunks.visibility_timeout_seconds
      error_message = "With this write budget one chunk takes more than half the chunk queue's visibility timeout (6 * worker_timeout_seconds): raise write_budget_per_sec or worker_timeout_seconds, or lower chunk_size or worker_max_concurrency."
    }
  }

  depends_on = [
    aws_cloudwatch_log_group.lambda["worker"],
    aws_iam_role_policy.worker,
    aws_iam_role_policy_attachment.xray["worker"],
  ]
}

resource "aws_lambda_function" "worker_dlq" {
  #checkov:skip=CKV_AWS_116:Invoked by an SQS event source mapping on the chunk DLQ, not asynchronously; a message it cannot account stays in that queue and alarms
  #checkov:skip=CKV_AWS_115:Not reserved on purpose: it only accounts dead-lettered chunks (no catalog links), so it needs no share of the write budget
  #checkov:skip=CKV_AWS_117:Reaches only AWS APIs (DynamoDB, SQS, SNS) over their public endpoints with IAM auth; a VPC would add NAT/endpoints for no isolation gain
  #checkov:skip=CKV_AWS_272:Artifacts are built from source by cargo lambda in CI and deployed by terraform; no AWS Signer profile exists for this project
  function_name    = local.function_names.worker_dlq
  description      = "bulklink worker on the chunk DLQ: accounts chunks whose deliveries were exhausted"
  role             = aws_iam_role.lambda["worker_dlq"].arn
  runtime          = "provided.al2023"
  handler          = "bootstrap"
  architectures    = [var.lambda_architecture]
  filename         = local.bootstrap_zip["bulklink-worker"]
  source_code_hash = local.bootstrap_hash["bulklink-worker"]
  timeout          = var.worker_dlq_timeout_seconds
  memory_size      = var.worker_dlq_memory_mb
  kms_key_arn      = aws_kms_key.main.arn

  environment {
    variables = merge(local.lambda_env, { WORKER_SOURCE = "dead-letters" })
  }

  tracing_config {
    mode = "Active"
  }

  depends_on = [
    aws_cloudwatch_log_group.lambda["worker_dlq"],
    aws_iam_role_policy.worker_dlq,
    aws_iam_role_policy_attachment.xray["worker_dlq"],
  ]
}

resource "aws_lambda_function" "sweeper" {
  #checkov:skip=CKV_AWS_116:A failed scheduled sweep needs no dead-letter queue: the next scheduled run repeats it (retries are off, see aws_lambda_function_event_invoke_config.sweeper)
  #checkov:skip=CKV_AWS_115:Not reserved on purpose: one scheduled invocation at a time, and sweeps are idempotent
  #checkov:skip=CKV_AWS_117:Reaches only AWS APIs (DynamoDB, SQS, SNS) over their public endpoints with IAM auth; a VPC would add NAT/endpoints for no isolation gain
  #checkov:skip=CKV_AWS_272:Artifacts are built from source by cargo lambda in CI and deployed by terraform; no AWS Signer profile exists for this project
  function_name    = local.function_names.sweeper
  description      = "bulklink sweeper: completes, notifies or restarts jobs an interrupted step left behind; reschedules overdue webhook deliveries"
  role             = aws_iam_role.lambda["sweeper"].arn
  runtime          = "provided.al2023"
  handler          = "bootstrap"
  architectures    = [var.lambda_architecture]
  filename         = local.bootstrap_zip["bulklink-sweeper"]
  source_code_hash = local.bootstrap_hash["bulklink-sweeper"]
  timeout          = var.sweeper_timeout_seconds
  memory_size      = var.sweeper_memory_mb
  kms_key_arn      = aws_kms_key.main.arn

  environment {
    variables = local.lambda_env
  }

  tracing_config {
    mode = "Active"
  }

  depends_on = [
    aws_cloudwatch_log_group.lambda["sweeper"],
    aws_iam_role_policy.sweeper,
    aws_iam_role_policy_attachment.xray["sweeper"],
  ]
}

resource "aws_lambda_function" "webhooks" {
  #checkov:skip=CKV_AWS_116:Invoked by an SQS event source mapping on the webhook queue, not asynchronously; failed messages go to the webhook queue's own DLQ (redrive policy)
  #checkov:skip=CKV_AWS_115:Not reserved on purpose: it writes no catalog items, so it needs no share of the write budget, and scales with the webhook queue; only the worker's concurrency is a design parameter
  #checkov:skip=CKV_AWS_117:POSTs to customers' public HTTPS endpoints (the code refuses private, loopback and link-local targets) and reaches AWS APIs (DynamoDB, SQS) with IAM auth; in a VPC it would need a NAT gateway for that egress, for no isolation gain
  #checkov:skip=CKV_AWS_272:Artifacts are built from source by cargo lambda in CI and deployed by terraform; no AWS Signer profile exists for this project
  function_name    = local.function_names.webhooks
  description      = "bulklink webhooks: signs and POSTs job events to subscribed endpoints, records and retries each delivery"
  role             = aws_iam_role.lambda["webhooks"].arn
  runtime          = "provided.al2023"
  handler          = "bootstrap"
  architectures    = [var.lambda_architecture]
  filename         = local.bootstrap_zip["bulklink-webhooks"]
  source_code_hash = local.bootstrap_hash["bulklink-webhooks"]
  timeout          = var.webhooks_timeout_seconds
  memory_size      = var.webhooks_memory_mb
  kms_key_arn      = aws_kms_key.main.arn

  environment {
    variables = local.lambda_env
  }

  tracing_config {
    mode = "Active"
  }

  depends_on = [
    aws_cloudwatch_log_group.lambda["webhooks"],
    aws_iam_role_policy.webhooks,
    aws_iam_role_policy_attachment.xray["webhooks"],
  ]
}

resource "aws_lambda_function" "estate" {
  #checkov:skip=CKV_AWS_116:Invoked by a DynamoDB stream event source mapping, not asynchronously; what it cannot follow goes to the mapping's on-failure destination (estate-dlq)
  #checkov:skip=CKV_AWS_115:Not reserved on purpose: one invocation per stream shard at a time (parallelization factor 1), so its concurrency is bounded by the table's shards
  #checkov:skip=CKV_AWS_117:Reaches only AWS APIs (DynamoDB) over their public endpoints with IAM auth; a VPC would add NAT/endpoints for no isolation gain
  #checkov:skip=CKV_AWS_272:Artifacts are built from source by cargo lambda in CI and deployed by terraform; no AWS Signer profile exists for this project
  function_name    = local.function_names.estate
  description      = "bulklink estate: follows each location created or changed with its brand's standing rules"
  role             = aws_iam_role.lambda["estate"].arn
  runtime          = "provided.al2023"
  handler          = "bootstrap"
  architectures    = [var.lambda_architecture]
  filename         = local.bootstrap_zip["bulklink-estate"]
  source_code_hash = local.bootstrap_hash["bulklink-estate"]
  timeout          = var.estate_timeout_seconds
  memory_size      = var.estate_memory_mb
  kms_key_arn      = aws_kms_key.main.arn

  environment {
    variables = local.lambda_env
  }

  tracing_config {
    mode = "Active"
  }

  depends_on = [
    aws_cloudwatch_log_group.lambda["estate"],
    aws_iam_role_policy.estate,
    aws_iam_role_policy_attachment.xray["estate"],
  ]
}

# --- triggers ----------------------------------------------------------------------------------------
# Every SQS mapping reports partial batch failures: only the failed messages of a batch
# are redelivered (and, after max_receive_count deliveries, dead-lettered).

resource "aws_lambda_event_source_mapping" "fanout" {
  event_source_arn        = aws_sqs_queue.fanout.arn
  function_name           = aws_lambda_function.fanout.arn
  batch_size              = var.fanout_batch_size
  function_response_types = ["ReportBatchItemFailures"]
}

resource "aws_lambda_event_source_mapping" "chunks" {
  event_source_arn        = aws_sqs_queue.chunks.arn
  function_name           = aws_lambda_function.worker.arn
  batch_size              = var.worker_batch_size
  function_response_types = ["ReportBatchItemFailures"]

  # Without this, Lambda would keep polling with more pollers than the reserved concurrency
  # and throttled batches would burn receive counts; with it, no more than N batches are in
  # flight and the write budget split N ways holds.
  scaling_config {
    maximum_concurrency = var.worker_max_concurrency
  }
}

resource "aws_lambda_event_source_mapping" "chunk_dead_letters" {
  event_source_arn        = aws_sqs_queue.chunks_dlq.arn
  function_name           = aws_lambda_function.worker_dlq.arn
  batch_size              = var.worker_dlq_batch_size
  function_response_types = ["ReportBatchItemFailures"]
}

# New events (from the topic) and scheduled retries (from the function itself). A message
# the function reports failed is redelivered after the visibility timeout and, after
# max_receive_count deliveries, dead-lettered; a delivery's own retries are new messages.
resource "aws_lambda_event_source_mapping" "webhooks" {
  event_source_arn        = aws_sqs_queue.webhooks.arn
  function_name           = aws_lambda_function.webhooks.arn
  batch_size              = var.webhooks_batch_size
  function_response_types = ["ReportBatchItemFailures"]
}

# The catalog table's stream, location items only; a shard's records in order, one batch at
# a time (parallelization factor 1), so one location's changes are followed in the order
# they were made. A record the function cannot follow is reported with the ones after it
# and retried from there; past the retries, the batch's record goes to estate-dlq.
resource "aws_lambda_event_source_mapping" "estate" {
  event_source_arn                   = aws_dynamodb_table.catalog.stream_arn
  function_name                      = aws_lambda_function.estate.arn
  starting_position                  = "LATEST"
  batch_size                         = var.estate_batch_size
  maximum_batching_window_in_seconds = 0
  parallelization_factor             = 1
  bisect_batch_on_function_error     = false
  maximum_retry_attempts             = var.estate_max_retries
  maximum_record_age_in_seconds      = 86400
  function_response_types            = ["ReportBatchItemFailures"]

  filter_criteria {
    filter {
      pattern = jsonencode({ dynamodb = { Keys = { sk = { S = ["#LOC"] } } } })
    }
  }

  destination_config {
    on_failure {
      destination_arn = aws_sqs_queue.estate_dlq.arn
    }
  }
}

resource "aws_cloudwatch_event_rule" "sweep" {
  name                = "${var.name}-sweep"
  description         = "Runs the bulklink sweeper"
  schedule_expression = var.sweep_schedule
}

resource "aws_cloudwatch_event_target" "sweep" {
  rule = aws_cloudwatch_event_rule.sweep.name
  arn  = aws_lambda_function.sweeper.arn
}

resource "aws_lambda_permission" "sweep" {
  statement_id  = "AllowEventBridgeSchedule"
  action        = "lambda:InvokeFunction"
  function_name = aws_lambda_function.sweeper.function_name
  principal     = "events.amazonaws.com"
  source_arn    = aws_cloudwatch_event_rule.sweep.arn
}

# Scheduled jobs: every minute the sweeper function releases the SCHEDULED jobs whose
# notBefore has come (one query of the jobs table's sparse SCHEDULED partition); nothing
# else runs on this tick (docs/architecture.md, Scheduled jobs).
resource "aws_cloudwatch_event_rule" "release_due" {
  name                = "${var.name}-release-due"
  description         = "Starts bulklink jobs whose notBefore has come"
  schedule_expression = "rate(1 minute)"
}

resource "aws_cloudwatch_event_target" "release_due" {
  rule  = aws_cloudwatch_event_rule.release_due.name
  arn   = aws_lambda_function.sweeper.arn
  input = jsonencode({ task = "release-due" })
}

resource "aws_lambda_permission" "release_due" {
  statement_id  = "AllowEventBridgeReleaseDue"
  action        = "lambda:InvokeFunction"
  function_name = aws_lambda_function.sweeper.function_name
  principal     = "events.amazonaws.com"
  source_arn    = aws_cloudwatch_event_rule.release_due.arn
}

# The drift watch: the sweeper counts every standing rule's drift (reading each ruled
# brand's locations whole) and tells a drift that has lasted drift_settle_minutes as
# offer.drift (docs/architecture.md, Drift watch).
resource "aws_cloudwatch_event_rule" "watch_drift" {
  name                = "${var.name}-watch-drift"
  description         = "Counts the drift of every bulklink standing rule"
  schedule_expression = var.drift_watch_schedule
}

resource "aws_cloudwatch_event_target" "watch_drift" {
  rule  = aws_cloudwatch_event_rule.watch_drift.name
  arn   = aws_lambda_function.sweeper.arn
  input = jsonencode({ task = "watch-drift" })
}

resource "aws_lambda_permission" "watch_drift" {
  statement_id  = "AllowEventBridgeWatchDrift"
  action        = "lambda:InvokeFunction"
  function_name = aws_lambda_function.sweeper.function_name
  principal     = "events.amazonaws.com"
  source_arn    = aws_cloudwatch_event_rule.watch_drift.arn
}

# The next scheduled run is the retry; retried runs would only pile up behind it.
resource "aws_lambda_function_event_invoke_config" "sweeper" {
  function_name                = aws_lambda_function.sweeper.function_name
  maximum_retry_attempts       = 0
  maximum_event_age_in_seconds = 300
}
