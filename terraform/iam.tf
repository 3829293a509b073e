# One role per function, each allowed exactly the calls its code makes (shared/aws/*).
#
# DynamoDB has no IAM action for TransactWriteItems: each item of a transaction is
# authorised as the PutItem, UpdateItem, DeleteItem or ConditionCheckItem it is. So a
# function whose transactions put, update and delete (e.g. the completion transaction:
# update the job + delete the offer's active lock) is granted those item actions.
#
# No statement has a wildcard action, and no resource is "*": X-Ray's PutTraceSegments and
# PutTelemetryRecords take no resource, so they come from the AWS managed policy
# AWSXRayDaemonWriteAccess; logs go to the function's own log group.

data "aws_iam_policy_document" "lambda_assume" {
  statement {
    effect  = "Allow"
    actions = ["sts:AssumeRole"]
    principals {
      type        = "Service"
      identifiers = ["lambda.amazonaws.com"]
    }
    condition {
      test     = "StringEquals"
      variable = "aws:SourceAccount"
      values   = [local.account_id]
    }
  }
}

resource "aws_iam_role" "lambda" {
  for_each = local.function_names

  name               = "${each.value}-lambda"
  description        = "Execution role of the ${each.value} function"
  assume_role_policy = data.aws_iam_policy_document.lambda_assume.json
}

resource "aws_iam_role_policy_attachment" "xray" {
  for_each = local.function_names

  role       = aws_iam_role.lambda[each.key].name
  policy_arn = "arn:${local.partition}:iam::aws:policy/AWSXRayDaemonWriteAccess"
}

locals {
  catalog_indexes = "${aws_dynamodb_table.catalog.arn}/index/*"
  jobs_indexes    = "${aws_dynamodb_table.jobs.arn}/index/*"
  jobs_gsi1       = "${aws_dynamodb_table.jobs.arn}/index/gsi1"
}

# Webhooks are bulklink's own (subscriptions and deliveries are items of the jobs table,
# shared/aws/webhooks.rs), not SNS subscriptions: no role has any sns:Subscribe,
# Unsubscribe, GetSubscriptionAttributes or ConfirmSubscription. The functions that finish
# jobs publish to the topic; its raw subscriber, the webhook queue, feeds the webhooks
# function.

# --- job-api: jobs (create, cancel, pause, resume), offers, locations, direct links, the write budget ---

data "aws_iam_policy_document" "job_api" {
  statement {
    sid       = "OwnLogGroup"
    actions   = ["logs:CreateLogStream", "logs:PutLogEvents"]
    resources = ["${aws_cloudwatch_log_group.lambda["job_api"].arn}:*"]
  }

  # create_offer (PutItem), create_locations (transaction of puts with the external-id
  # claims), get_offer/get_location, link_direct (transaction: update location + put link +
  # update offer); deleting or closing a location (read its links with BatchGetItem, then a
  # transaction that deletes or updates it, deletes its links and claim, updates each
  # offer's count and puts a closing mark); a standing rule (transaction: ConditionCheck of
  # the offer + PutItem; DeleteItem); a dry run reads the job's source as fanout does
  # (Query the brand index or an offer's links, BatchGetItem the locations of a filter).
  statement {
    sid       = "CatalogOffersLocationsLinksRules"
    actions   = ["dynamodb:BatchGetItem", "dynamodb:ConditionCheckItem", "dynamodb:DeleteItem", "dynamodb:GetItem", "dynamodb:PutItem", "dynamodb:Query", "dynamodb:UpdateItem"]
    resources = [aws_dynamodb_table.catalog.arn]
  }

  statement {
    sid       = "DryRunBrandIndex"
    actions   = ["dynamodb:Query"]
    resources = ["${aws_dynamodb_table.catalog.arn}/index/gsi1"]
  }

  # create_job (transaction: idempotency claim + active lock + job, all puts), request_cancel,
  # pause and resume (conditional UpdateItem), re-reads of the job; a link-all request's
  # callbackUrl becomes a webhook subscription of that job (conditional PutItem, which returns
  # the existing item). The live write budget is one item of this table: GET reads it
  # (GetItem), PUT writes it (PutItem / UpdateItem).
  statement {
    sid       = "JobsCreateCancelRead"
    actions   = ["dynamodb:GetItem", "dynamodb:PutItem", "dynamodb:Query", "dynamodb:UpdateItem"]
    resources = [aws_dynamodb_table.jobs.arn]
  }

  # A new job's fanout; a resumed job's fanout message, which re-sends its parked chunks.
  statement {
    sid       = "StartFanout"
    actions   = ["sqs:SendMessage"]
    resources = [aws_sqs_queue.fanout.arn]
  }

  # POST /imports presigns the client's PUT of its file: S3 authorizes that PUT as this role.
  # A job created AWAITING_APPROVAL announces itself (job.awaiting_approval) to the brand's
  # webhook subscribers.
  statement {
    sid       = "PublishAwaitingApproval"
    actions   = ["sns:Publish"]
    resources = [aws_sns_topic.job_events.arn]
  }

  statement {
    sid       = "PresignImportUploads"
    actions   = ["s3:PutObject"]
    resources = ["${aws_s3_bucket.uploads.arn}/imports/*"]
  }

  statement {
    sid       = "UseDeploymentKey"
    actions   = ["kms:Decrypt", "kms:GenerateDataKey"]
    resources = [aws_kms_key.main.arn]
  }

  # Seals a new or rotated subscription's signing secret and reads stored ones back (kms.tf),
  # only under a webhook's encryption context.
  statement {
    sid       = "SealWebhookSecrets"
    actions   = ["kms:Decrypt", "kms:GenerateDataKey"]
    resources = [aws_kms_key.webhook_secrets.arn]
    condition {
      test     = "StringLike"
      variable = "kms:EncryptionContext:bulklink:webhook"
      values   = ["*"]
    }
  }
}

resource "aws_iam_role_policy" "job_api" {
  name   = "job-api"
  role   = aws_iam_role.lambda["job_api"].id
  policy = data.aws_iam_policy_document.job_api.json
}

# --- status: reads, webhook subscriptions and their delivery log ---------------------------------------

data "aws_iam_policy_document" "status" {
  statement {
    sid       = "OwnLogGroup"
    actions   = ["logs:CreateLogStream", "logs:PutLogEvents"]
    resources = ["${aws_cloudwatch_log_group.lambda["status"].arn}:*"]
  }

  # Jobs of a brand (gsi1 keys, then BatchGetItem), a job, its failures; offers, locations,
  # an offer's links.
  statement {
    sid     = "ReadCatalogAndJobs"
    actions = ["dynamodb:BatchGetItem", "dynamodb:GetItem", "dynamodb:Query"]
    resources = [
      aws_dynamodb_table.catalog.arn,
      local.catalog_indexes,
      aws_dynamodb_table.jobs.arn,
      local.jobs_indexes,
    ]
  }

  # Webhook subscriptions and deliveries are items of the jobs table. Their reads come from
  # the statement above: a subscription or delivery (GetItem), a brand's subscriptions and a
  # job's deliveries (gsi1 keys, then BatchGetItem), a subscription's deliveries and the
  # brand's events a replay counts (Query). Writes: create (conditional PutItem),
  # rotate-secret (UpdateItem), delete (DeleteItem), redeliver (conditional PutItem of the
  # delivery's new state), a test send's delivery (conditional PutItem).
  statement {
    sid       = "ManageWebhooks"
    actions   = ["dynamodb:DeleteItem", "dynamodb:PutItem", "dynamodb:UpdateItem"]
    resources = [aws_dynamodb_table.jobs.arn]
  }

  # Redeliver and test sends: the delivery's attempt, now, on the webhook queue; a replay's
  # first step.
  statement {
    sid       = "ScheduleRedelivery"
    actions   = ["sqs:SendMessage"]
    resources = [aws_sqs_queue.webhooks.arn]
  }

  statement {
    sid       = "UseDeploymentKey"
    actions   = ["kms:Decrypt", "kms:GenerateDataKey"]
    resources = [aws_kms_key.main.arn]
  }

  # Seals a new or rotated subscription's signing secret and reads stored ones back (kms.tf),
  # only under a webhook's encryption context.
  statement {
    sid       = "SealWebhookSecrets"
    actions   = ["kms:Decrypt", "kms:GenerateDataKey"]
    resources = [aws_kms_key.webhook_secrets.arn]
    condition {
      test     = "StringLike"
      variable = "kms:EncryptionContext:bulklink:webhook"
      values   = ["*"]
    }
  }
}

resource "aws_iam_role_policy" "status" {
  name   = "status"
  role   = aws_iam_role.lambda["status"].id
  policy = data.aws_iam_policy_document.status.json
}

# --- fanout: page a brand, enqueue chunks, checkpoint ------------------------------------------------

data "aws_iam_policy_document" "fanout" {
  statement {
    sid       = "OwnLogGroup"
    actions   = ["logs:CreateLogStream", "logs:PutLogEvents"]
    resources = ["${aws_cloudwatch_log_group.lambda["fanout"].arn}:*"]
  }

  statement {
    sid       = "PageBrandLocations"
    actions   = ["dynamodb:Query"]
    resources = ["${aws_dynamodb_table.catalog.arn}/index/gsi1"]
  }

  # The offer; an unlink-all's or undo's source, the offer's links (Query on its
  # partition); a filtered job's locations, read to match them (BatchGetItem).
  statement {
    sid       = "ReadCatalog"
    actions   = ["dynamodb:BatchGetItem", "dynamodb:GetItem", "dynamodb:Query"]
    resources = [aws_dynamodb_table.catalog.arn]
  }

  # start_job/advance_fanout (conditional UpdateItem); completing an empty job (transaction:
  # update job + delete active lock); mark_notified. A resumed job: its parked chunks (Query
  # on the job's partition), re-sent to the chunk queue, then removed with the job's update
  # (transactions of DeleteItem + UpdateItem).
  # An import's file arriving: the import's job (PutItem), its start on the import record
  # (UpdateItem); a file refused as a whole is one ledgered failure (transaction: put the
  # chunk marker, update the job).
  statement {
    sid       = "JobsStartAdvanceComplete"
    actions   = ["dynamodb:DeleteItem", "dynamodb:GetItem", "dynamodb:PutItem", "dynamodb:Query", "dynamodb:UpdateItem"]
    resources = [aws_dynamodb_table.jobs.arn]
  }

  # An import's file: copied from imports/ to taken/ (GetObject of the source, PutObject of
  # the copy), then read in ranges (HeadObject and GetObject are s3:GetObject).
  statement {
    sid       = "TakeAndReadImportFiles"
    actions   = ["s3:GetObject"]
    resources = ["${aws_s3_bucket.uploads.arn}/imports/*", "${aws_s3_bucket.uploads.arn}/taken/*"]
  }

  statement {
    sid       = "KeepImportFiles"
    actions   = ["s3:PutObject"]
    resources = ["${aws_s3_bucket.uploads.arn}/taken/*"]
  }

  # Chunks to the workers (a resumed job's parked ones too); a hand-over message to itself
  # near its deadline.
  statement {
    sid       = "EnqueueChunksAndHandOver"
    actions   = ["sqs:SendMessage"]
    resources = [aws_sqs_queue.chunks.arn, aws_sqs_queue.fanout.arn]
  }

  statement {
    sid       = "ConsumeFanoutQueue"
    actions   = ["sqs:ChangeMessageVisibility", "sqs:DeleteMessage", "sqs:GetQueueAttributes", "sqs:ReceiveMessage"]
    resources = [aws_sqs_queue.fanout.arn]
  }

  statement {
    sid       = "PublishJobEvents"
    actions   = ["sns:Publish"]
    resources = [aws_sns_topic.job_events.arn]
  }

  statement {
    sid       = "UseDeploymentKey"
    actions   = ["kms:Decrypt", "kms:GenerateDataKey"]
    resources = [aws_kms_key.main.arn]
  }
}

resource "aws_iam_role_policy" "fanout" {
  name   = "fanout"
  role   = aws_iam_role.lambda["fanout"].id
  policy = data.aws_iam_policy_document.fanout.json
}

# --- estate: follow location changes with the standing rules ---------------------------------------

data "aws_iam_policy_document" "estate" {
  statement {
    sid       = "OwnLogGroup"
    actions   = ["logs:CreateLogStream", "logs:PutLogEvents"]
    resources = ["${aws_cloudwatch_log_group.lambda["estate"].arn}:*"]
  }

  # The mapping reads the catalog table's stream with the function's role.
  statement {
    sid       = "ReadCatalogStream"
    actions   = ["dynamodb:DescribeStream", "dynamodb:GetRecords", "dynamodb:GetShardIterator", "dynamodb:ListStreams"]
    resources = [aws_dynamodb_table.catalog.stream_arn]
  }

  # The location and its link (GetItem), the brand's rules (gsi1 keys, then GetItem); each
  # decision one transaction: the location marked or unmarked (UpdateItem), the link put or
  # deleted (PutItem / DeleteItem), the offer's count (UpdateItem); hasOffer cleared after.
  statement {
    sid       = "FollowRules"
    actions   = ["dynamodb:DeleteItem", "dynamodb:GetItem", "dynamodb:PutItem", "dynamodb:UpdateItem"]
    resources = [aws_dynamodb_table.catalog.arn]
  }

  statement {
    sid       = "BrandRules"
    actions   = ["dynamodb:Query"]
    resources = ["${aws_dynamodb_table.catalog.arn}/index/gsi1"]
  }

  # The mapping's on-failure destination.
  statement {
    sid       = "RecordUnfollowedBatches"
    actions   = ["sqs:SendMessage"]
    resources = [aws_sqs_queue.estate_dlq.arn]
  }

  statement {
    sid       = "UseDeploymentKey"
    actions   = ["kms:Decrypt", "kms:GenerateDataKey"]
    resources = [aws_kms_key.main.arn]
  }
}

resource "aws_iam_role_policy" "estate" {
  name   = "estate"
  role   = aws_iam_role.lambda["estate"].id
  policy = data.aws_iam_policy_document.estate.json
}

# --- worker and worker-dlq: link, ledger, complete -----------------------------------------------------
# Both run the worker binary; they differ only in the queue they consume.

data "aws_iam_policy_document" "worker" {
  statement {
    sid       = "OwnLogGroup"
    actions   = ["logs:CreateLogStream", "logs:PutLogEvents"]
    resources = ["${aws_cloudwatch_log_group.lambda["worker"].arn}:*"]
  }

  # Link a location (UpdateItem location, PutItem link), existing links (BatchGetItem),
  # the ledger transaction's `ADD locationsTotal` on the offer (UpdateItem). An import's
  # rows: a location and its external id's claim created (transaction of PutItem), changed
  # or marked (UpdateItem); closing one the file did not name takes it out of its offers
  # (transaction: UpdateItem location, DeleteItem links, UpdateItem offers, PutItem marks).
  statement {
    sid       = "LinkLocations"
    actions   = ["dynamodb:BatchGetItem", "dynamodb:DeleteItem", "dynamodb:GetItem", "dynamodb:PutItem", "dynamodb:UpdateItem"]
    resources = [aws_dynamodb_table.catalog.arn]
  }

  # Ledger transaction (put CHUNK# marker + update job counters), FAIL# items
  # (BatchWriteItem), mark_failing, completion transaction (update job + delete lock). The
  # live write budget item, re-read at most every 5 s (GetItem). A paused job's chunk is
  # parked: one transaction puts the parked-chunk item and updates the job (PutItem +
  # UpdateItem).
  statement {
    sid       = "LedgerAndCompleteJobs"
    actions   = ["dynamodb:BatchWriteItem", "dynamodb:DeleteItem", "dynamodb:GetItem", "dynamodb:PutItem", "dynamodb:Query", "dynamodb:UpdateItem"]
    resources = [aws_dynamodb_table.jobs.arn]
  }

  # An import's rows: ranges of the file its job took.
  statement {
    sid       = "ReadImportFiles"
    actions   = ["s3:GetObject"]
    resources = ["${aws_s3_bucket.uploads.arn}/taken/*"]
  }

  statement {
    sid       = "ConsumeChunkQueue"
    actions   = ["sqs:ChangeMessageVisibility", "sqs:DeleteMessage", "sqs:GetQueueAttributes", "sqs:ReceiveMessage"]
    resources = [aws_sqs_queue.chunks.arn]
  }

  statement {
    sid       = "PublishJobEvents"
    actions   = ["sns:Publish"]
    resources = [aws_sns_topic.job_events.arn]
  }

  statement {
    sid       = "UseDeploymentKey"
    actions   = ["kms:Decrypt", "kms:GenerateDataKey"]
    resources = [aws_kms_key.main.arn]
  }
}

resource "aws_iam_role_policy" "worker" {
  name   = "worker"
  role   = aws_iam_role.lambda["worker"].id
  policy = data.aws_iam_policy_document.worker.json
}

data "aws_iam_policy_document" "worker_dlq" {
  statement {
    sid       = "OwnLogGroup"
    actions   = ["logs:CreateLogStream", "logs:PutLogEvents"]
    resources = ["${aws_cloudwatch_log_group.lambda["worker_dlq"].arn}:*"]
  }

  # The same grants as the worker's (same binary). Accounting a dead chunk reads which of
  # its locations this job already linked (BatchGetItem links) and ledgers it (the
  # transaction's `ADD locationsTotal` on the offer).
  statement {
    sid       = "LinkLocations"
    actions   = ["dynamodb:BatchGetItem", "dynamodb:DeleteItem", "dynamodb:GetItem", "dynamodb:PutItem", "dynamodb:UpdateItem"]
    resources = [aws_dynamodb_table.catalog.arn]
  }

  statement {
    sid       = "LedgerAndCompleteJobs"
    actions   = ["dynamodb:BatchWriteItem", "dynamodb:DeleteItem", "dynamodb:GetItem", "dynamodb:PutItem", "dynamodb:Query", "dynamodb:UpdateItem"]
    resources = [aws_dynamodb_table.jobs.arn]
  }

  # An import's rows a dead-lettered chunk held, read again to account them.
  statement {
    sid       = "ReadImportFiles"
    actions   = ["s3:GetObject"]
    resources = ["${aws_s3_bucket.uploads.arn}/taken/*"]
  }

  statement {
    sid       = "ConsumeChunkDeadLetterQueue"
    actions   = ["sqs:ChangeMessageVisibility", "sqs:DeleteMessage", "sqs:GetQueueAttributes", "sqs:ReceiveMessage"]
    resources = [aws_sqs_queue.chunks_dlq.arn]
  }

  statement {
    sid       = "PublishJobEvents"
    actions   = ["sns:Publish"]
    resources = [aws_sns_topic.job_events.arn]
  }

  statement {
    sid       = "UseDeploymentKey"
    actions   = ["kms:Decrypt", "kms:GenerateDataKey"]
    resources = [aws_kms_key.main.arn]
  }
}

resource "aws_iam_role_policy" "worker_dlq" {
  name   = "worker-dlq"
  role   = aws_iam_role.lambda["worker_dlq"].id
  policy = data.aws_iam_policy_document.worker_dlq.json
}

# --- sweeper: find unsettled jobs, complete/notify/restart them -----------------------------------------

data "aws_iam_policy_document" "sweeper" {
  statement {
    sid       = "OwnLogGroup"
    actions   = ["logs:CreateLogStream", "logs:PutLogEvents"]
    resources = ["${aws_cloudwatch_log_group.lambda["sweeper"].arn}:*"]
  }

  # Unsettled jobs: gsi2 keys (Query), then the jobs (BatchGetItem); completion transaction
  # (update job + delete active lock); mark_notified (UpdateItem). Overdue webhook deliveries:
  # gsi2 keys (the sparse PENDING_DELIVERIES partition), then the deliveries (BatchGetItem).
  statement {
    sid       = "SettleJobs"
    actions   = ["dynamodb:BatchGetItem", "dynamodb:DeleteItem", "dynamodb:GetItem", "dynamodb:Query", "dynamodb:UpdateItem"]
    resources = [aws_dynamodb_table.jobs.arn, local.jobs_indexes]
  }

  statement {
    sid       = "RestartFanout"
    actions   = ["sqs:SendMessage"]
    resources = [aws_sqs_queue.fanout.arn]
  }

  # A pending delivery whose scheduled attempt was lost is scheduled again.
  statement {
    sid       = "RescheduleOverdueDeliveries"
    actions   = ["sqs:SendMessage"]
    resources = [aws_sqs_queue.webhooks.arn]
  }

  statement {
    sid       = "PublishJobEvents"
    actions   = ["sns:Publish"]
    resources = [aws_sns_topic.job_events.arn]
  }

  # The drift watch (its own schedule): the rule registry (Query of the RULES partition),
  # each rule's offer (GetItem), its brand's locations (gsi1 keys, then BatchGetItem) and
  # their links (BatchGetItem); what it saw noted on the registry item only (UpdateItem,
  # leading key RULES). offer.drift goes to the webhook queue (statement above).
  statement {
    sid       = "WatchDrift"
    actions   = ["dynamodb:BatchGetItem", "dynamodb:GetItem", "dynamodb:Query"]
    resources = [aws_dynamodb_table.catalog.arn, "${aws_dynamodb_table.catalog.arn}/index/gsi1"]
  }

  statement {
    sid       = "NoteDrift"
    actions   = ["dynamodb:UpdateItem"]
    resources = [aws_dynamodb_table.catalog.arn]

    condition {
      test     = "ForAllValues:StringEquals"
      variable = "dynamodb:LeadingKeys"
      values   = ["RULES"]
    }
  }

  statement {
    sid       = "UseDeploymentKey"
    actions   = ["kms:Decrypt", "kms:GenerateDataKey"]
    resources = [aws_kms_key.main.arn]
  }
}

resource "aws_iam_role_policy" "sweeper" {
  name   = "sweeper"
  role   = aws_iam_role.lambda["sweeper"].id
  policy = data.aws_iam_policy_document.sweeper.json
}

# --- webhooks: deliver job events to subscribed endpoints, record and retry each delivery ---------------

data "aws_iam_policy_document" "webhooks" {
  statement {
    sid       = "OwnLogGroup"
    actions   = ["logs:CreateLogStream", "logs:PutLogEvents"]
    resources = ["${aws_cloudwatch_log_group.lambda["webhooks"].arn}:*"]
  }

  # The event's matching subscriptions (gsi1 keys of the brand, then BatchGetItem), a
  # subscription or delivery (GetItem), a delivery's record and each new state (conditional
  # PutItem), the brand's event log (PutItem; a replay's Query of it), disabling a
  # subscription whose endpoint is gone (UpdateItem).
  statement {
    sid     = "DeliverAndRecordWebhooks"
    actions = ["dynamodb:BatchGetItem", "dynamodb:GetItem", "dynamodb:PutItem", "dynamodb:Query", "dynamodb:UpdateItem"]
    resources = [
      aws_dynamodb_table.jobs.arn,
      local.jobs_gsi1,
    ]
  }

  statement {
    sid       = "ConsumeWebhookQueue"
    actions   = ["sqs:ChangeMessageVisibility", "sqs:DeleteMessage", "sqs:GetQueueAttributes", "sqs:ReceiveMessage"]
    resources = [aws_sqs_queue.webhooks.arn]
  }

  # A delivery's next attempt is a delayed message on the same queue; so is the rest of a
  # replay.
  statement {
    sid       = "ScheduleAttempts"
    actions   = ["sqs:SendMessage"]
    resources = [aws_sqs_queue.webhooks.arn]
  }

  statement {
    sid       = "UseDeploymentKey"
    actions   = ["kms:Decrypt", "kms:GenerateDataKey"]
    resources = [aws_kms_key.main.arn]
  }

  # Opens subscriptions' signing secrets to sign with (kms.tf); it never seals one.
  statement {
    sid       = "OpenWebhookSecrets"
    actions   = ["kms:Decrypt"]
    resources = [aws_kms_key.webhook_secrets.arn]
    condition {
      test     = "StringLike"
      variable = "kms:EncryptionContext:bulklink:webhook"
      values   = ["*"]
    }
  }
}

resource "aws_iam_role_policy" "webhooks" {
  name   = "webhooks"
  role   = aws_iam_role.lambda["webhooks"].id
  policy = data.aws_iam_policy_document.webhooks.json
}
