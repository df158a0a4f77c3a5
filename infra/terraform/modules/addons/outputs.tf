output "namespace" {
  description = "The system's namespace."
  value       = kubernetes_namespace_v1.system.metadata[0].name
}

output "prefect_work_pool" {
  description = "The Kubernetes work pool the worker polls."
  value       = var.prefect_work_pool
}

output "ingress_gateway" {
  description = "Istio ingress gateway (kubectl -n istio-system get svc istio-ingressgateway for its address)."
  value       = "istio-system/istio-ingressgateway"
}

output "pushgateway_url" {
  description = "MNISTCL_PUSHGATEWAY_URL for the flow Jobs (the mnistcl-settings ConfigMap in infra/k8s)."
  value       = "http://${helm_release.pushgateway.name}.${kubernetes_namespace_v1.monitoring.metadata[0].name}.svc:9091"
}
