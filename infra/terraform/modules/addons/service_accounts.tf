# The training service account, bound to its IRSA role: the Prefect worker and the flow-run
# Jobs reach the bucket with it. The serving account (mnist-serving) is rendered with the
# SeldonDeployment (`mnistcl deploy render`, role_arn in configs/deploy.yaml), not here.
resource "kubernetes_service_account_v1" "training" {
  metadata {
    name        = "mnist-training"
    namespace   = kubernetes_namespace_v1.system.metadata[0].name
    annotations = { "eks.amazonaws.com/role-arn" = var.training_role_arn }
  }
}
