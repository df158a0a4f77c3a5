# Everything inside the cluster (Helm releases, namespaces, service accounts, secrets). The
# helm and kubernetes providers talk to the cluster main.tf creates; the releases wait for its
# node groups and core add-ons (depends_on), so nothing is scheduled before a node exists.
provider "kubernetes" {
  host                   = module.eks.cluster_endpoint
  cluster_ca_certificate = base64decode(module.eks.cluster_ca)
  exec {
    api_version = "client.authentication.k8s.io/v1beta1"
    command     = "aws"
    args        = ["eks", "get-token", "--cluster-name", module.eks.cluster_name, "--region", var.region]
  }
}

provider "helm" {
  kubernetes {
    host                   = module.eks.cluster_endpoint
    cluster_ca_certificate = base64decode(module.eks.cluster_ca)
    exec {
      api_version = "client.authentication.k8s.io/v1beta1"
      command     = "aws"
      args        = ["eks", "get-token", "--cluster-name", module.eks.cluster_name, "--region", var.region]
    }
  }
}

module "addons" {
  source                      = "../../modules/addons"
  namespace                   = "mnist-prod"
  cluster_name                = module.eks.cluster_name
  region                      = var.region
  training_role_arn           = module.irsa.training_role_arn
  serving_role_arn            = module.irsa.serving_role_arn
  cluster_autoscaler_role_arn = module.eks.cluster_autoscaler_role_arn
  store_url                   = module.storage.store_url
  base_job_template           = file("${path.module}/../../../k8s/prefect-gpu-job-template.json")
  alert_email_from            = var.alert_email_from
  smtp_smarthost              = var.smtp_smarthost
  smtp_username               = var.smtp_username
  smtp_password               = var.smtp_password
  reclaim_policy              = "Retain"
  grafana_admin_password      = var.grafana_admin_password
  prefect_auth_string         = var.prefect_auth_string
  prefect_db_password         = var.prefect_db_password
  # Nothing in the cluster before its nodes and core add-ons exist (the eks module's node groups,
  # vpc-cni, coredns, the EBS CSI driver): Helm would time out on pods with nowhere to run.
  depends_on = [module.eks]
}

output "prefect_api_url" {
  description = "The one Prefect API URL (in-cluster): PREFECT_API_URL of the worker, the relay and the flow Jobs."
  value       = module.addons.prefect_api_url
}

output "prefect_work_pool" {
  description = "The Kubernetes work pool: prefect deploy --name train-k8s --name monitor-k8s --name retrain-k8s"
  value       = module.addons.prefect_work_pool
}

output "ingress_host" {
  description = "Istio ingress gateway service; its load balancer hostname serves /seldon/<ns>/<deployment>/api/v1.0/predictions"
  value       = module.addons.ingress_gateway
}

output "pushgateway_url" {
  description = "Where the monitor Jobs push their gauges: pushgateway_url in configs/deploy.yaml"
  value       = module.addons.pushgateway_url
}
