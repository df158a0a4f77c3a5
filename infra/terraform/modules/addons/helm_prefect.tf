resource "helm_release" "prefect_worker" {
  name       = "prefect-worker"
  repository = "https://prefecthq.github.io/prefect-helm"
  chart      = "prefect-worker"
  version    = var.prefect_worker_version
  namespace  = kubernetes_namespace_v1.system.metadata[0].name

  values = [yamlencode({
    worker = {
      apiConfig = "server"
      config = {
        workPool = var.prefect_work_pool
        type     = "kubernetes"
      }
      serverApiConfig = { apiUrl = var.prefect_api_url }
    }
    serviceAccount = {
      create = false
      name   = kubernetes_service_account_v1.training.metadata[0].name
    }
  })]
}
