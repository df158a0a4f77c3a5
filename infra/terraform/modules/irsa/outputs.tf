output "training_role_arn" {
  description = "Annotate the mnist-training service account with this (eks.amazonaws.com/role-arn)."
  value       = aws_iam_role.this["training"].arn
}

output "serving_role_arn" {
  description = "Annotate the mnist-serving service account with this (configs/deploy.yaml role_arn)."
  value       = aws_iam_role.this["serving"].arn
}
