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

output "store_url" {
  description = "The registry and datasets URL for this environment (configs/deploy.yaml envs.<env>.store_url): inside the prefix the IRSA roles may use."
  value       = "s3://${aws_s3_bucket.this.bucket}/${var.prefix}/store"
}
