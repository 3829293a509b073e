# Terminal job events (job.succeeded, job.completed_with_errors, job.failed, job.cancelled),
# published once a job finishes. Webhooks are HTTP/S subscriptions made
# through the API, each with a filter policy on the message attributes.
resource "aws_sns_topic" "job_events" {
  name              = "${var.name}-job-events"
  kms_master_key_id = aws_kms_key.main.arn
}
