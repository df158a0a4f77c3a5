output "namespace" {
  description = "The system's namespace."
  value       = kubernetes_namespace_v1.system.metadata[0].name
}

output "prefect_work_pool" {
  description = "The Kubernetes work pool the worker polls."
  value       = var.prefect_work_pool
}

output "prefect_api_url" {
  description = "The one Prefect API URL (in-cluster; PREFECT_API_URL in the mnistcl-settings ConfigMap). From a laptop: kubectl -n prefect port-forward svc/prefect-server 4200."
  value       = local.prefect_api_url
}

output "ingress_gateway" {
  description = "Istio ingress gateway (kubectl -n istio-system get svc istio-ingressgateway for its internal NLB)."
  value       = "istio-system/istio-ingressgateway"
}

output "seldon_gateway" {
  description = "The Gateway the SeldonDeployments bind to (infra/k8s/base/gateway.yaml)."
  value       = "${var.namespace}/${var.gateway_name}"
}

output "pushgateway_url" {
  description = "MNISTCL_PUSHGATEWAY_URL of the flow Jobs (in the mnistcl-settings ConfigMap)."
  value       = local.pushgateway_url
}
