# Terminal job events (job.succeeded, job.completed_with_errors, job.failed, job.cancelled),
# published once a job finishes, with the message attributes eventType, jobId, brandId and
# offerId. The topic is the job-event bus: bulklink's own webhook queue is one subscriber
# (raw delivery, below); AWS-native consumers (SQS, Lambda, e-mail) may subscribe with filter
# policies on those attributes (terraform/README.md). HTTP webhooks are not SNS
# subscriptions: they are bulklink's own (POST /webhooks), delivered by the webhooks function.
resource "aws_sns_topic" "job_events" {
  name              = "${var.name}-job-events"
  kms_master_key_id = aws_kms_key.main.arn
}

# Every event, unfiltered, with the event JSON as the SQS message body (no SNS envelope).
# The queue policy (sqs.tf) lets this topic, and only it, send to the queue; the key policy
# (kms.tf) lets SNS encrypt to the KMS-encrypted queue.
resource "aws_sns_topic_subscription" "webhooks" {
  topic_arn            = aws_sns_topic.job_events.arn
  protocol             = "sqs"
  endpoint             = aws_sqs_queue.webhooks.arn
  raw_message_delivery = true

  # An event SNS cannot hand to the queue is kept in the webhooks DLQ (and alarms), not lost.
  redrive_policy = jsonencode({
    deadLetterTargetArn = aws_sqs_queue.webhooks_dlq.arn
  })

  depends_on = [aws_sqs_queue_policy.webhooks, aws_sqs_queue_policy.webhooks_dlq]
}
