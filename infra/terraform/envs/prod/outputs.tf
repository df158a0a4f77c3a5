output "cluster_name" {
  description = "aws eks update-kubeconfig --name <this> --region <region>"
  value       = module.eks.cluster_name
}

output "bucket" {
  description = "MNISTCL_STORAGE_URL=s3://<this>/mnistcl"
  value       = module.storage.bucket
}

output "serving_role_arn" {
  description = "Put this in configs/deploy.yaml (envs.<env>.role_arn): the model pods' read-only bucket access."
  value       = module.irsa.serving_role_arn
}

output "training_role_arn" {
  description = "IAM role of the training service account."
  value       = module.irsa.training_role_arn
}

output "store_url" {
  description = "envs.<env>.store_url in configs/deploy.yaml (the registry and datasets of this environment)"
  value       = module.storage.store_url
}
