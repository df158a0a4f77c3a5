# Least privilege per workload, each bound to one Kubernetes service account:
#   mnist-training  (Prefect worker + its flow-run Jobs): read and write datasets and models
#   mnist-serving   (the Seldon model pods): read the registry only
locals {
  accounts = {
    training = { service_account = "mnist-training", write = true }
    serving  = { service_account = "mnist-serving", write = false }
  }
  objects = "${var.bucket_arn}/${var.prefix}/*"
}

data "aws_iam_policy_document" "assume" {
  for_each = local.accounts
  statement {
    actions = ["sts:AssumeRoleWithWebIdentity"]
    principals {
      type        = "Federated"
      identifiers = [var.oidc_provider_arn]
    }
    condition {
      test     = "StringEquals"
      variable = "${var.oidc_issuer}:sub"
      values   = ["system:serviceaccount:${var.namespace}:${each.value.service_account}"]
    }
    condition {
      test     = "StringEquals"
      variable = "${var.oidc_issuer}:aud"
      values   = ["sts.amazonaws.com"]
    }
  }
}

resource "aws_iam_role" "this" {
  for_each           = local.accounts
  name               = "${var.name}-${each.key}"
  assume_role_policy = data.aws_iam_policy_document.assume[each.key].json
  tags               = var.tags
}

data "aws_iam_policy_document" "access" {
  for_each = local.accounts
  statement {
    sid       = "List"
    actions   = ["s3:ListBucket"]
    resources = [var.bucket_arn]
    condition {
      test     = "StringLike"
      variable = "s3:prefix"
      values   = ["${var.prefix}/*"]
    }
  }
  statement {
    sid       = "Objects"
    actions   = each.value.write ? ["s3:GetObject", "s3:PutObject", "s3:DeleteObject"] : ["s3:GetObject"]
    resources = [local.objects]
  }
  statement {
    sid       = "Key"
    actions   = each.value.write ? ["kms:Decrypt", "kms:GenerateDataKey"] : ["kms:Decrypt"]
    resources = [var.kms_key_arn]
  }
}

resource "aws_iam_role_policy" "this" {
  for_each = local.accounts
  name     = "bucket-access"
  role     = aws_iam_role.this[each.key].id
  policy   = data.aws_iam_policy_document.access[each.key].json
}
