# The resource metrics API (metrics.k8s.io) the model servers' HorizontalPodAutoscalers read their
# CPU from (Seldon's hpaSpec, configs/deploy.yaml `autoscaling`). EKS does not install it.
resource "helm_release" "metrics_server" {
  name       = "metrics-server"
  repository = "https://kubernetes-sigs.github.io/metrics-server/"
  chart      = "metrics-server"
  version    = var.metrics_server_version
  namespace  = "kube-system"

  # Two replicas and a disruption budget: the cluster autoscaler may drain a node that holds one
  # (skip-nodes-with-system-pods is off), and the autoscalers would lose their CPU figures meanwhile.
  values = [yamlencode({
    replicas            = 2
    podDisruptionBudget = { enabled = true, minAvailable = 1 }
  })]
}
