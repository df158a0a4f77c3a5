output "cluster_name" {
  description = "aws eks update-kubeconfig --name <this> --region <region>"
  value       = module.eks.cluster_name
}

output "bucket" {
  description = "MNISTCL_STORAGE_URL=s3://<this>/mnistcl"
  value       = module.storage.bucket
}

output "prefect_work_pool" {
  description = "The Kubernetes work pool: prefect deploy --name train-k8s --name monitor-k8s --name retrain-k8s"
  value       = module.addons.prefect_work_pool
}

output "ingress_host" {
  description = "Istio ingress gateway service; its load balancer hostname serves /seldon/<ns>/<deployment>/api/v1.0/predictions"
  value       = module.addons.ingress_gateway
}

output "serving_role_arn" {
  description = "Put this in configs/deploy.yaml (envs.<env>.role_arn): the model pods' read-only bucket access."
  value       = module.irsa.serving_role_arn
}

output "training_role_arn" {
  description = "IAM role of the training service account."
  value       = module.irsa.training_role_arn
}

output "pushgateway_url" {
  description = "Where the monitor Jobs push their gauges: pushgateway_url in configs/deploy.yaml"
  value       = module.addons.pushgateway_url
}
