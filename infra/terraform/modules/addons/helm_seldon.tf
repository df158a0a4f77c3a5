resource "helm_release" "seldon_core" {
  name             = "seldon-core"
  repository       = "https://storage.googleapis.com/seldon-charts"
  chart            = "seldon-core-operator"
  version          = var.seldon_core_version
  namespace        = "seldon-system"
  create_namespace = true

  values = [yamlencode({
    istio = {
      enabled = true
      # <namespace>/<name> of the Gateway every SeldonDeployment's VirtualService binds to: the one
      # infra/k8s/base/gateway.yaml creates in the app's namespace (the chart creates none).
      gateway = "${var.namespace}/${var.gateway_name}"
    }
    # The model containers' metrics: port `metrics` (6000), path /prometheus, injected as
    # PREDICTIVE_UNIT_METRICS_ENDPOINT; the PodMonitor in infra/k8s scrapes exactly that.
    executor     = { prometheus = { path = "/prometheus" } }
    usageMetrics = { enabled = false }
  })]
  depends_on = [helm_release.istiod]
}
