# One customer-managed key encrypts everything at rest: both tables, all queues, the topic,
# every log group and the functions' environment variables.

resource "aws_kms_key" "main" {
  description             = "${var.name}: DynamoDB tables, SQS queues, SNS topic, CloudWatch log groups, Lambda environment"
  key_usage               = "ENCRYPT_DECRYPT"
  enable_key_rotation     = true
  deletion_window_in_days = 30
  policy                  = data.aws_iam_policy_document.kms.json
}

resource "aws_kms_alias" "main" {
  name          = "alias/${var.name}"
  target_key_id = aws_kms_key.main.key_id
}

# In a key policy "*" as the resource means "this key"; it is the only form KMS accepts.
data "aws_iam_policy_document" "kms" {
  #checkov:skip=CKV_AWS_109:Key policy, not an identity policy: its Resource "*" is this key alone, and the account root must keep PutKeyPolicy/CreateGrant on it (KMS refuses a policy that would lock the account out)
  #checkov:skip=CKV_AWS_111:Key policy, not an identity policy: its Resource "*" is this key alone; write actions go to the account root (delegating to IAM) and to AWS services constrained by source account or log-group encryption context
  #checkov:skip=CKV_AWS_356:Key policy, not an identity policy: KMS accepts only "*" as the resource of a key policy statement, meaning this key

  # The account administers and uses the key through IAM policies (the function roles get
  # kms:Decrypt/GenerateDataKey on this key in iam.tf). The actions are listed, not kms:*:
  # everything a symmetric encryption key supports, nothing for asymmetric/HMAC keys.
  statement {
    sid    = "AccountAdministersAndUsesKeyThroughIam"
    effect = "Allow"
    principals {
      type        = "AWS"
      identifiers = ["arn:${local.partition}:iam::${local.account_id}:root"]
    }
    actions = [
      "kms:CancelKeyDeletion",
      "kms:CreateAlias",
      "kms:CreateGrant",
      "kms:Decrypt",
      "kms:DeleteAlias",
      "kms:DescribeKey",
      "kms:DisableKey",
      "kms:DisableKeyRotation",
      "kms:EnableKey",
      "kms:EnableKeyRotation",
      "kms:Encrypt",
      "kms:GenerateDataKey",
      "kms:GenerateDataKeyWithoutPlaintext",
      "kms:GetKeyPolicy",
      "kms:GetKeyRotationStatus",
      "kms:ListGrants",
      "kms:ListKeyPolicies",
      "kms:ListKeyRotations",
      "kms:ListResourceTags",
      "kms:PutKeyPolicy",
      "kms:ReEncryptFrom",
      "kms:ReEncryptTo",
      "kms:RetireGrant",
      "kms:RevokeGrant",
      "kms:RotateKeyOnDemand",
      "kms:ScheduleKeyDeletion",
      "kms:TagResource",
      "kms:UntagResource",
      "kms:UpdateAlias",
      "kms:UpdateKeyDescription",
    ]
    resources = ["*"]
  }

  # SQS and SNS encrypt/decrypt messages of this account's queues and topic. SNS also
  # delivers the topic's events to the KMS-encrypted webhook queue (sns.tf), and S3 the
  # uploads bucket's object-created events to the KMS-encrypted fanout queue (s3.tf): for
  # that each needs kms:GenerateDataKey (the SQS data key; the only GenerateDataKey* action
  # SQS server-side encryption calls) and kms:Decrypt, both granted here.
  statement {
    sid    = "SqsAndSnsUseKeyForThisAccount"
    effect = "Allow"
    principals {
      type        = "Service"
      identifiers = ["sqs.amazonaws.com", "sns.amazonaws.com", "s3.amazonaws.com"]
    }
    actions   = ["kms:Decrypt", "kms:GenerateDataKey"]
    resources = ["*"]
    condition {
      test     = "StringEquals"
      variable = "aws:SourceAccount"
      values   = [local.account_id]
    }
  }

  # CloudWatch Logs encrypts this account's log groups in this region (and only those).
  statement {
    sid    = "CloudWatchLogsUsesKeyForThisAccountsLogGroups"
    effect = "Allow"
    principals {
      type        = "Service"
      identifiers = ["logs.${var.aws_region}.amazonaws.com"]
    }
    actions = [
      "kms:Decrypt",
      "kms:DescribeKey",
      "kms:Encrypt",
      "kms:GenerateDataKey",
      "kms:GenerateDataKeyWithoutPlaintext",
      "kms:ReEncryptFrom",
      "kms:ReEncryptTo",
    ]
    resources = ["*"]
    condition {
      test     = "ArnLike"
      variable = "kms:EncryptionContext:aws:logs:arn"
      values   = ["arn:${local.partition}:logs:${var.aws_region}:${local.account_id}:log-group:*"]
    }
  }

  # DynamoDB reads the key's metadata; it encrypts the tables through grants that the
  # principal creating a table makes (allowed through IAM by the first statement).
  statement {
    sid    = "DynamoDbReadsKeyMetadata"
    effect = "Allow"
    principals {
      type        = "Service"
      identifiers = ["dynamodb.amazonaws.com"]
    }
    actions = [
      "kms:DescribeKey",
      "kms:GetKeyPolicy",
      "kms:GetKeyRotationStatus",
      "kms:ListGrants",
      "kms:ListKeyPolicies",
      "kms:ListResourceTags",
    ]
    resources = ["*"]
  }
}

# Webhook signing secrets are sealed with data keys of their own key (envelope encryption,
# shared/aws/src/sealing.rs): reading the jobs table, even with the deployment key, reveals
# no secret. Each data key is bound to its subscription by the encryption context
# bulklink:webhook = {subscription id}. The API functions seal (GenerateDataKey) and read
# back (Decrypt) a subscription's secrets; the deliverer only opens them (iam.tf).
resource "aws_kms_key" "webhook_secrets" {
  description             = "${var.name}: webhook signing secrets (envelope keys)"
  key_usage               = "ENCRYPT_DECRYPT"
  enable_key_rotation     = true
  deletion_window_in_days = 30
  policy                  = data.aws_iam_policy_document.webhook_secrets_key.json
}

resource "aws_kms_alias" "webhook_secrets" {
  name          = "alias/${var.name}-webhook-secrets"
  target_key_id = aws_kms_key.webhook_secrets.key_id
}

# Only the account administers it, and uses it only through IAM: no service principal.
data "aws_iam_policy_document" "webhook_secrets_key" {
  #checkov:skip=CKV_AWS_109:Key policy, not an identity policy: its Resource "*" is this key alone, and the account root must keep PutKeyPolicy/CreateGrant on it (KMS refuses a policy that would lock the account out)
  #checkov:skip=CKV_AWS_111:Key policy, not an identity policy: its Resource "*" is this key alone; its write actions go to the account root, which delegates to IAM
  #checkov:skip=CKV_AWS_356:Key policy, not an identity policy: KMS accepts only "*" as the resource of a key policy statement, meaning this key
  statement {
    sid    = "AccountAdministersAndUsesKeyThroughIam"
    effect = "Allow"
    principals {
      type        = "AWS"
      identifiers = ["arn:${local.partition}:iam::${local.account_id}:root"]
    }
    actions = [
      "kms:CancelKeyDeletion",
      "kms:CreateAlias",
      "kms:CreateGrant",
      "kms:Decrypt",
      "kms:DeleteAlias",
      "kms:DescribeKey",
      "kms:DisableKey",
      "kms:DisableKeyRotation",
      "kms:EnableKey",
      "kms:EnableKeyRotation",
      "kms:GenerateDataKey",
      "kms:GetKeyPolicy",
      "kms:GetKeyRotationStatus",
      "kms:ListGrants",
      "kms:ListKeyPolicies",
      "kms:ListKeyRotations",
      "kms:ListResourceTags",
      "kms:PutKeyPolicy",
      "kms:RetireGrant",
      "kms:RevokeGrant",
      "kms:RotateKeyOnDemand",
      "kms:ScheduleKeyDeletion",
      "kms:TagResource",
      "kms:UntagResource",
      "kms:UpdateAlias",
      "kms:UpdateKeyDescription",
    ]
    resources = ["*"]
  }
}
