# Both workload identities, bound to their IRSA roles (irsa module). The Kustomize overlays and
# `mnistcl deploy render` only name them (serviceAccountName), so a kubectl apply never strips
# the role annotation.
resource "kubernetes_service_account_v1" "training" {
  metadata {
    name        = "mnist-training"
    namespace   = kubernetes_namespace_v1.system.metadata[0].name
    annotations = { "eks.amazonaws.com/role-arn" = var.training_role_arn }
  }
}

resource "kubernetes_service_account_v1" "serving" {
  metadata {
    name        = "mnist-serving"
    namespace   = kubernetes_namespace_v1.system.metadata[0].name
    annotations = { "eks.amazonaws.com/role-arn" = var.serving_role_arn }
  }
}
