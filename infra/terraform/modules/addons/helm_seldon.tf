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
      gateway = "istio-system/istio-ingressgateway"
    }
    usageMetrics = { enabled = false }
  })]
  depends_on = [helm_release.istiod]
}
