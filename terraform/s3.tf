# Imports' files. A client PUTs its file straight to a presigned URL (imports/<importId>; API
# Gateway's 10 MB limit never sees it); the object-created event goes to the fanout queue,
# whose function copies the object to taken/<importId> (what the job reads: a later PUT to
# the same URL changes nothing) and starts the import job. Private, encrypted with the
# deployment's key, TLS only; files expire after var.import_retention_days.

resource "aws_s3_bucket" "uploads" {
  #checkov:skip=CKV_AWS_18:Access logging would log every upload and ranged read of files that expire within days; the functions' requests are in CloudTrail data events where an account enables them
  #checkov:skip=CKV_AWS_144:Cross-region replication of short-lived upload files (they expire after var.import_retention_days) buys nothing; the imported locations live in DynamoDB
  #checkov:skip=CKV_AWS_21:Versioning is off on purpose: an object is read once by its import job (after being copied to taken/), and a later PUT to the same presigned URL must not be kept
  #checkov:skip=CKV2_AWS_62:Event notifications are configured (aws_s3_bucket_notification.uploads: object-created under imports/ to the fanout queue)
  bucket_prefix = "${var.name}-uploads-"
  force_destroy = false
}

resource "aws_s3_bucket_public_access_block" "uploads" {
  bucket                  = aws_s3_bucket.uploads.id
  block_public_acls       = true
  block_public_policy     = true
  ignore_public_acls      = true
  restrict_public_buckets = true
}

resource "aws_s3_bucket_ownership_controls" "uploads" {
  bucket = aws_s3_bucket.uploads.id
  rule {
    object_ownership = "BucketOwnerEnforced"
  }
}

resource "aws_s3_bucket_server_side_encryption_configuration" "uploads" {
  bucket = aws_s3_bucket.uploads.id
  rule {
    apply_server_side_encryption_by_default {
      sse_algorithm     = "aws:kms"
      kms_master_key_id = aws_kms_key.main.arn
    }
    bucket_key_enabled = true
  }
}

resource "aws_s3_bucket_lifecycle_configuration" "uploads" {
  bucket = aws_s3_bucket.uploads.id
  rule {
    id     = "files-expire"
    status = "Enabled"
    filter {}
    expiration {
      days = var.import_retention_days
    }
    abort_incomplete_multipart_upload {
      days_after_initiation = 1
    }
  }
}

# TLS only.
resource "aws_s3_bucket_policy" "uploads" {
  bucket = aws_s3_bucket.uploads.id
  policy = data.aws_iam_policy_document.uploads_bucket.json
}

data "aws_iam_policy_document" "uploads_bucket" {
  statement {
    sid     = "TlsOnly"
    effect  = "Deny"
    actions = ["s3:*"]
    principals {
      type        = "*"
      identifiers = ["*"]
    }
    resources = [aws_s3_bucket.uploads.arn, "${aws_s3_bucket.uploads.arn}/*"]
    condition {
      test     = "Bool"
      variable = "aws:SecureTransport"
      values   = ["false"]
    }
  }
}

# An upload's arrival goes to the fanout queue (its function starts the import job).
resource "aws_s3_bucket_notification" "uploads" {
  bucket = aws_s3_bucket.uploads.id
  queue {
    queue_arn     = aws_sqs_queue.fanout.arn
    events        = ["s3:ObjectCreated:*"]
    filter_prefix = "imports/"
  }
  depends_on = [aws_sqs_queue_policy.fanout]
}

# S3 may send this bucket's events to the fanout queue (and nothing else may, but the
# functions through their roles).
resource "aws_sqs_queue_policy" "fanout" {
  queue_url = aws_sqs_queue.fanout.id
  policy    = data.aws_iam_policy_document.fanout_queue.json
}

data "aws_iam_policy_document" "fanout_queue" {
  statement {
    sid     = "UploadsBucketSendsToFanoutQueue"
    effect  = "Allow"
    actions = ["sqs:SendMessage"]
    principals {
      type        = "Service"
      identifiers = ["s3.amazonaws.com"]
    }
    resources = [aws_sqs_queue.fanout.arn]
    condition {
      test     = "ArnEquals"
      variable = "aws:SourceArn"
      values   = [aws_s3_bucket.uploads.arn]
    }
    condition {
      test     = "StringEquals"
      variable = "aws:SourceAccount"
      values   = [local.account_id]
    }
  }
}
