resource "helm_release" "istio_base" {
  name       = "istio-base"
  repository = "https://istio-release.storage.googleapis.com/charts"
  chart      = "base"
  version    = var.istio_version
  namespace  = kubernetes_namespace_v1.istio.metadata[0].name
}

resource "helm_release" "istiod" {
  name       = "istiod"
  repository = "https://istio-release.storage.googleapis.com/charts"
  chart      = "istiod"
  version    = var.istio_version
  namespace  = kubernetes_namespace_v1.istio.metadata[0].name

  # Authorization policies match the path the sidecar sees; Seldon's executor and the wrapper route
  # on the decoded one. Decoding %2F and %5C and merging slashes first means `/api/v1.0%2Ffeedback`
  # cannot slip past the feedback policy (Istio's recommended setting for path-based policies).
  values = [yamlencode({
    meshConfig = { pathNormalization = { normalization = "DECODE_AND_MERGE_SLASHES" } }
  })]
  depends_on = [helm_release.istio_base]
}

# The ingress gateway's Deployment and Service only: the chart creates no networking.istio.io
# Gateway. Its pods carry `istio: ingressgateway` (the release name without "istio-"), which the
# Gateway in infra/k8s/base/gateway.yaml selects. An internal NLB: the model's predict and
# feedback endpoints are not for the internet (put an authenticated edge in front to open them).
resource "helm_release" "istio_ingress" {
  name       = "istio-ingressgateway"
  repository = "https://istio-release.storage.googleapis.com/charts"
  chart      = "gateway"
  version    = var.istio_version
  namespace  = kubernetes_namespace_v1.istio.metadata[0].name

  values = [yamlencode({
    service = {
      annotations = {
        "service.beta.kubernetes.io/aws-load-balancer-type"     = "nlb"
        "service.beta.kubernetes.io/aws-load-balancer-internal" = "true"
      }
    }
  })]
  depends_on = [helm_release.istiod]
}
