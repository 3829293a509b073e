# Data model: DESIGN.md §4. Both tables are on-demand, encrypted with the deployment's key,
# continuously backed up and protected from deletion. No Scan anywhere: every read is a
# GetItem, a BatchGetItem, or a Query on a key or a keys-only index.

resource "aws_dynamodb_table" "catalog" {
  name                        = "${var.name}-catalog"
  billing_mode                = "PAY_PER_REQUEST"
  hash_key                    = "pk"
  range_key                   = "sk"
  deletion_protection_enabled = true

  attribute {
    name = "pk"
    type = "S"
  }
  attribute {
    name = "sk"
    type = "S"
  }
  attribute {
    name = "gsi1pk"
    type = "S"
  }
  attribute {
    name = "gsi1sk"
    type = "S"
  }

  # Every change to an item, old and new image, for the estate function: a location created
  # or changed is followed by its brand's standing rules (lambda.tf, estate).
  stream_enabled   = true
  stream_view_type = "NEW_AND_OLD_IMAGES"

  # A brand's locations (gsi1pk = BRAND#{brandId}, gsi1sk = LOC#{locationId} while active,
  # LOC#~{locationId} once closed), offers (OFFER#{offerId}) and rules (RULE#{offerId});
  # fanout pages its locations.
  global_secondary_index {
    name            = "gsi1"
    hash_key        = "gsi1pk"
    range_key       = "gsi1sk"
    projection_type = "KEYS_ONLY"
  }

  point_in_time_recovery {
    enabled = true
  }

  server_side_encryption {
    enabled     = true
    kms_key_arn = aws_kms_key.main.arn
  }
}

resource "aws_dynamodb_table" "jobs" {
  name                        = "${var.name}-jobs"
  billing_mode                = "PAY_PER_REQUEST"
  hash_key                    = "pk"
  range_key                   = "sk"
  deletion_protection_enabled = true

  attribute {
    name = "pk"
    type = "S"
  }
  attribute {
    name = "sk"
    type = "S"
  }
  attribute {
    name = "gsi1pk"
    type = "S"
  }
  attribute {
    name = "gsi1sk"
    type = "S"
  }
  attribute {
    name = "gsi2pk"
    type = "S"
  }
  attribute {
    name = "gsi2sk"
    type = "S"
  }

  # A brand's jobs, newest first (gsi1pk = BRAND#{brandId}, gsi1sk = {createdAt}#{jobId}).
  global_secondary_index {
    name            = "gsi1"
    hash_key        = "gsi1pk"
    range_key       = "gsi1sk"
    projection_type = "KEYS_ONLY"
  }

  # Sparse index of jobs not yet notified, read by the sweeper.
  global_secondary_index {
    name            = "gsi2"
    hash_key        = "gsi2pk"
    range_key       = "gsi2sk"
    projection_type = "KEYS_ONLY"
  }

  # Finished jobs and spent idempotency keys expire.
  ttl {
    attribute_name = "expiresAt"
    enabled        = true
  }

  point_in_time_recovery {
    enabled = true
  }

  server_side_encryption {
    enabled     = true
    kms_key_arn = aws_kms_key.main.arn
  }
}
