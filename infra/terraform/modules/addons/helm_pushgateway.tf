# The monitor flow runs as a short Kubernetes Job that Prometheus cannot scrape; it pushes its
# window gauges (mnistcl_drift_share, ...) here (MNISTCL_PUSHGATEWAY_URL), and Prometheus scrapes
# the Pushgateway through its ServiceMonitor, keeping the pushed job label (honorLabels).
resource "helm_release" "pushgateway" {
  name       = "prometheus-pushgateway"
  repository = "https://prometheus-community.github.io/helm-charts"
  chart      = "prometheus-pushgateway"
  version    = var.pushgateway_version
  namespace  = kubernetes_namespace_v1.monitoring.metadata[0].name

  values = [yamlencode({
    serviceMonitor = {
      enabled          = true
      honorLabels      = true
      additionalLabels = { release = "kube-prometheus-stack" }
    }
  })]

  depends_on = [helm_release.kube_prometheus_stack] # the ServiceMonitor CRD
}
