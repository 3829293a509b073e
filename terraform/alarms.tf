# Alarms: anything dead-lettered, work waiting too long, functions erroring. They notify
# var.alarm_sns_topic_arn when it is set.

locals {
  alarm_actions = var.alarm_sns_topic_arn == null ? [] : [var.alarm_sns_topic_arn]

  dead_letter_queues = {
    fanout_dlq   = aws_sqs_queue.fanout_dlq.name
    chunks_dlq   = aws_sqs_queue.chunks_dlq.name
    webhooks_dlq = aws_sqs_queue.webhooks_dlq.name
    estate_dlq   = aws_sqs_queue.estate_dlq.name
  }

  oldest_message_limits = {
    fanout   = { queue = aws_sqs_queue.fanout.name, seconds = var.fanout_age_alarm_seconds }
    chunks   = { queue = aws_sqs_queue.chunks.name, seconds = var.chunk_age_alarm_seconds }
    webhooks = { queue = aws_sqs_queue.webhooks.name, seconds = var.webhooks_age_alarm_seconds }
  }

  erroring_functions = {
    fanout   = aws_lambda_function.fanout.function_name
    worker   = aws_lambda_function.worker.function_name
    webhooks = aws_lambda_function.webhooks.function_name
    estate   = aws_lambda_function.estate.function_name
  }
}

# Location changes waiting to be followed: the age of the newest record the estate
# function has read when it read it. Standing rules lag the estate by this much.
resource "aws_cloudwatch_metric_alarm" "estate_iterator_age" {
  alarm_name          = "${aws_lambda_function.estate.function_name}-iterator-age"
  alarm_description   = "Standing rules follow location changes more than ${var.estate_age_alarm_seconds} s late."
  namespace           = "AWS/Lambda"
  metric_name         = "IteratorAge"
  dimensions          = { FunctionName = aws_lambda_function.estate.function_name }
  statistic           = "Maximum"
  period              = 60
  evaluation_periods  = 5
  comparison_operator = "GreaterThanThreshold"
  threshold           = var.estate_age_alarm_seconds * 1000
  treat_missing_data  = "notBreaching"
  actions_enabled     = true
  alarm_actions       = local.alarm_actions
  ok_actions          = local.alarm_actions
}

# A fanout message here is a job that stopped fanning out (the sweeper restarts it); a chunk
# here is accounted as failed by worker-dlq, so a chunk DLQ that stays non-empty means
# worker-dlq itself is failing; a webhook-queue message here is one the webhooks function
# failed on (a DynamoDB or SQS error) max_receive_count times: an event or an attempt that
# may not have been delivered. Receivers that answer with errors do not land here: their
# retries are new messages, and giving up is recorded in the delivery log.
resource "aws_cloudwatch_metric_alarm" "dlq_depth" {
  for_each = local.dead_letter_queues

  alarm_name          = "${each.value}-not-empty"
  alarm_description   = "Messages are waiting in the dead-letter queue ${each.value}."
  namespace           = "AWS/SQS"
  metric_name         = "ApproximateNumberOfMessagesVisible"
  dimensions          = { QueueName = each.value }
  statistic           = "Maximum"
  period              = 60
  evaluation_periods  = 1
  comparison_operator = "GreaterThanThreshold"
  threshold           = 0
  treat_missing_data  = "notBreaching"
  actions_enabled     = true
  alarm_actions       = local.alarm_actions
  ok_actions          = local.alarm_actions
}

resource "aws_cloudwatch_metric_alarm" "oldest_message_age" {
  for_each = local.oldest_message_limits

  alarm_name          = "${each.value.queue}-oldest-message-age"
  alarm_description   = "The oldest message in ${each.value.queue} has waited more than ${each.value.seconds} s."
  namespace           = "AWS/SQS"
  metric_name         = "ApproximateAgeOfOldestMessage"
  dimensions          = { QueueName = each.value.queue }
  statistic           = "Maximum"
  period              = 60
  evaluation_periods  = 5
  comparison_operator = "GreaterThanThreshold"
  threshold           = each.value.seconds
  treat_missing_data  = "notBreaching"
  actions_enabled     = true
  alarm_actions       = local.alarm_actions
  ok_actions          = local.alarm_actions
}

resource "aws_cloudwatch_metric_alarm" "function_errors" {
  for_each = local.erroring_functions

  alarm_name          = "${each.value}-errors"
  alarm_description   = "The ${each.value} function failed invocations (whole batches, not reported item failures)."
  namespace           = "AWS/Lambda"
  metric_name         = "Errors"
  dimensions          = { FunctionName = each.value }
  statistic           = "Sum"
  period              = 300
  evaluation_periods  = 1
  comparison_operator = "GreaterThanThreshold"
  threshold           = 0
  treat_missing_data  = "notBreaching"
  actions_enabled     = true
  alarm_actions       = local.alarm_actions
  ok_actions          = local.alarm_actions
}

# The deliverer's own metric (EMF, namespace bulklink): a subscription disabled because
# every delivery to it failed for var.webhook_disable_after_days. Its owner should look.
resource "aws_cloudwatch_metric_alarm" "webhooks_disabled" {
  alarm_name          = "${aws_lambda_function.webhooks.function_name}-subscriptions-disabled"
  alarm_description   = "A webhook subscription was disabled: every delivery to it failed for ${var.webhook_disable_after_days} days."
  namespace           = "bulklink"
  metric_name         = "WebhooksDisabled"
  dimensions          = { Function = "webhooks" }
  statistic           = "Sum"
  period              = 300
  evaluation_periods  = 1
  comparison_operator = "GreaterThanThreshold"
  threshold           = 0
  treat_missing_data  = "notBreaching"
  actions_enabled     = true
  alarm_actions       = local.alarm_actions
  ok_actions          = local.alarm_actions
}
