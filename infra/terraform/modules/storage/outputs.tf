output "bucket" {
  description = "Bucket name."
  value       = aws_s3_bucket.this.bucket
}

output "bucket_arn" {
  description = "Bucket ARN (for IAM policies)."
  value       = aws_s3_bucket.this.arn
}

output "kms_key_arn" {
  description = "The bucket's KMS key (for IAM policies)."
  value       = module.key.arn
}
