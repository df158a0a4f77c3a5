output "repository_urls" {
  description = "Image names by repository (serving, train): <account>.dkr.ecr.<region>.amazonaws.com/mnist-continual/<name>."
  value       = { for k, r in aws_ecr_repository.this : k => r.repository_url }
}

output "registry" {
  description = "The registry host (docker login / CI's ECR_REGISTRY)."
  value       = split("/", values(aws_ecr_repository.this)[0].repository_url)[0]
}
