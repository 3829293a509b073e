# Three work queues, each with its dead-letter queue: fanout, chunks, and the webhook queue
# (the job-events topic's raw subscriber, sns.tf). A message is dead-lettered after
# var.max_receive_count deliveries. Each queue consumed by a function keeps a message
# invisible for 6 times that function's timeout (AWS's advice for SQS event sources: room
# for the function's own retries of a batch), so a delivery always ends before the message
# can be delivered again.

locals {
  main_queue_retention_seconds = 4 * 24 * 3600  # SQS default
  dlq_retention_seconds        = 14 * 24 * 3600 # SQS maximum: a dead-letter outlives its source
}

resource "aws_sqs_queue" "fanout_dlq" {
  name                              = "${var.name}-fanout-dlq"
  message_retention_seconds         = local.dlq_retention_seconds
  kms_master_key_id                 = aws_kms_key.main.arn
  kms_data_key_reuse_period_seconds = 300
}

resource "aws_sqs_queue" "fanout" {
  name                              = "${var.name}-fanout"
  visibility_timeout_seconds        = 6 * var.fanout_timeout_seconds
  message_retention_seconds         = local.main_queue_retention_seconds
  kms_master_key_id                 = aws_kms_key.main.arn
  kms_data_key_reuse_period_seconds = 300

  redrive_policy = jsonencode({
    deadLetterTargetArn = aws_sqs_queue.fanout_dlq.arn
    maxReceiveCount     = var.max_receive_count
  })
}

resource "aws_sqs_queue_redrive_allow_policy" "fanout_dlq" {
  queue_url = aws_sqs_queue.fanout_dlq.id
  redrive_allow_policy = jsonencode({
    redrivePermission = "byQueue"
    sourceQueueArns   = [aws_sqs_queue.fanout.arn]
  })
}

# The chunk DLQ is consumed too: worker-dlq accounts every chunk that lands here.
resource "aws_sqs_queue" "chunks_dlq" {
  name                              = "${var.name}-chunks-dlq"
  visibility_timeout_seconds        = 6 * var.worker_dlq_timeout_seconds
  message_retention_seconds         = local.dlq_retention_seconds
  kms_master_key_id                 = aws_kms_key.main.arn
  kms_data_key_reuse_period_seconds = 300
}

# Where the estate function's stream mapping sends what it could not follow after its
# retries: a record of the failed batch (shard and sequence numbers) for an operator, who
# reconciles the offers concerned (PUT their rules again).
resource "aws_sqs_queue" "estate_dlq" {
  name                              = "${var.name}-estate-dlq"
  message_retention_seconds         = local.dlq_retention_seconds
  kms_master_key_id                 = aws_kms_key.main.arn
  kms_data_key_reuse_period_seconds = 300
}

resource "aws_sqs_queue" "chunks" {
  name                              = "${var.name}-chunks"
  visibility_timeout_seconds        = 6 * var.worker_timeout_seconds
  message_retention_seconds         = local.main_queue_retention_seconds
  kms_master_key_id                 = aws_kms_key.main.arn
  kms_data_key_reuse_period_seconds = 300

  redrive_policy = jsonencode({
    deadLetterTargetArn = aws_sqs_queue.chunks_dlq.arn
    maxReceiveCount     = var.max_receive_count
  })
}

resource "aws_sqs_queue_redrive_allow_policy" "chunks_dlq" {
  queue_url = aws_sqs_queue.chunks_dlq.id
  redrive_allow_policy = jsonencode({
    redrivePermission = "byQueue"
    sourceQueueArns   = [aws_sqs_queue.chunks.arn]
  })
}

# The webhook queue hears every job event (its SNS subscription is raw, so a message body is
# the event JSON) and carries the deliverer's own retries: the webhooks function schedules a
# delivery's next attempt by sending a delayed message back onto this queue.
resource "aws_sqs_queue" "webhooks_dlq" {
  name                              = "${var.name}-webhooks-dlq"
  message_retention_seconds         = local.dlq_retention_seconds
  kms_master_key_id                 = aws_kms_key.main.arn
  kms_data_key_reuse_period_seconds = 300
}

resource "aws_sqs_queue" "webhooks" {
  name                              = "${var.name}-webhooks"
  visibility_timeout_seconds        = 6 * var.webhooks_timeout_seconds
  message_retention_seconds         = local.main_queue_retention_seconds
  kms_master_key_id                 = aws_kms_key.main.arn
  kms_data_key_reuse_period_seconds = 300

  redrive_policy = jsonencode({
    deadLetterTargetArn = aws_sqs_queue.webhooks_dlq.arn
    maxReceiveCount     = var.max_receive_count
  })
}

resource "aws_sqs_queue_redrive_allow_policy" "webhooks_dlq" {
  queue_url = aws_sqs_queue.webhooks_dlq.id
  redrive_allow_policy = jsonencode({
    redrivePermission = "byQueue"
    sourceQueueArns   = [aws_sqs_queue.webhooks.arn]
  })
}

# SNS may send to the webhook queue for the job-events topic only. (The functions send to it
# through their IAM roles; a queue policy is needed for the service principal alone.)
resource "aws_sqs_queue_policy" "webhooks" {
  queue_url = aws_sqs_queue.webhooks.id
  policy    = data.aws_iam_policy_document.webhooks_queue.json
}

data "aws_iam_policy_document" "webhooks_queue" {
  statement {
    sid     = "JobEventsTopicSendsToWebhookQueue"
    effect  = "Allow"
    actions = ["sqs:SendMessage"]
    principals {
      type        = "Service"
      identifiers = ["sns.amazonaws.com"]
    }
    resources = [aws_sqs_queue.webhooks.arn]
    condition {
      test     = "ArnEquals"
      variable = "aws:SourceArn"
      values   = [aws_sns_topic.job_events.arn]
    }
  }
}

# ...and to its dead-letter queue, the SNS subscription's redrive target.
resource "aws_sqs_queue_policy" "webhooks_dlq" {
  queue_url = aws_sqs_queue.webhooks_dlq.id
  policy    = data.aws_iam_policy_document.webhooks_dlq.json
}

data "aws_iam_policy_document" "webhooks_dlq" {
  statement {
    sid     = "JobEventsTopicDeadLettersToWebhookDlq"
    effect  = "Allow"
    actions = ["sqs:SendMessage"]
    principals {
      type        = "Service"
      identifiers = ["sns.amazonaws.com"]
    }
    resources = [aws_sqs_queue.webhooks_dlq.arn]
    condition {
      test     = "ArnEquals"
      variable = "aws:SourceArn"
      values   = [aws_sns_topic.job_events.arn]
    }
  }
}
