output "api_url" {
  description = "Base URL of the HTTP API (the $default stage)."
  value       = aws_apigatewayv2_stage.default.invoke_url
}

output "topic_arn" {
  description = "SNS topic of job events (EVENTS_TOPIC_ARN)."
  value       = aws_sns_topic.job_events.arn
}

output "catalog_table_name" {
  description = "DynamoDB catalog table (CATALOG_TABLE)."
  value       = aws_dynamodb_table.catalog.name
}

output "jobs_table_name" {
  description = "DynamoDB jobs table (JOBS_TABLE)."
  value       = aws_dynamodb_table.jobs.name
}

output "fanout_queue_url" {
  description = "Fanout queue (FANOUT_QUEUE_URL)."
  value       = aws_sqs_queue.fanout.url
}

output "fanout_dlq_url" {
  description = "Dead-letter queue of the fanout queue."
  value       = aws_sqs_queue.fanout_dlq.url
}

output "chunk_queue_url" {
  description = "Chunk queue (CHUNK_QUEUE_URL)."
  value       = aws_sqs_queue.chunks.url
}

output "chunk_dlq_url" {
  description = "Dead-letter queue of the chunk queue (CHUNK_DLQ_URL)."
  value       = aws_sqs_queue.chunks_dlq.url
}

output "webhook_queue_url" {
  description = "Webhook queue, the job-events topic's raw subscriber (WEBHOOK_QUEUE_URL)."
  value       = aws_sqs_queue.webhooks.url
}

output "webhook_dlq_url" {
  description = "Dead-letter queue of the webhook queue."
  value       = aws_sqs_queue.webhooks_dlq.url
}

output "kms_key_arn" {
  description = "The deployment's customer-managed KMS key."
  value       = aws_kms_key.main.arn
}

output "uploads_bucket" {
  description = "S3 bucket of imports' files (UPLOADS_BUCKET)"
  value       = aws_s3_bucket.uploads.id
}
