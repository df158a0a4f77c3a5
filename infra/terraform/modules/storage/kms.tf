resource "aws_kms_key" "bucket" {
  description         = "${var.bucket_name}: datasets and models"
  enable_key_rotation = true
  policy              = data.aws_iam_policy_document.key.json
  tags                = var.tags
}

resource "aws_kms_alias" "bucket" {
  name          = "alias/${var.bucket_name}"
  target_key_id = aws_kms_key.bucket.key_id
}

data "aws_caller_identity" "current" {}

data "aws_iam_policy_document" "key" {
  # KMS key policies: "*" as resource means this key itself, and the account root must administer it.
  #checkov:skip=CKV_AWS_111:A key policy's Resource "*" is the key itself; write access is the account's.
  #checkov:skip=CKV_AWS_356:A key policy's Resource "*" is the key itself, not every resource.
  #checkov:skip=CKV_AWS_109:The account root administers its own key (AWS's default key policy).
  statement {
    sid       = "AccountAdmin"
    actions   = ["kms:*"]
    resources = ["*"]
    principals {
      type        = "AWS"
      identifiers = ["arn:aws:iam::${data.aws_caller_identity.current.account_id}:root"]
    }
  }
}
