# The Prefect server of this cluster (its API is the one URL everything uses:
# http://prefect-server.prefect.svc.cluster.local:4200/api), with basic auth and the chart's
# PostgreSQL on a persistent volume, and the worker of the Kubernetes work pool.
resource "helm_release" "prefect_server" {
  name       = "prefect-server"
  repository = "https://prefecthq.github.io/prefect-helm"
  chart      = "prefect-server"
  version    = var.prefect_chart_version
  namespace  = kubernetes_namespace_v1.prefect.metadata[0].name
  timeout    = 900 # its PostgreSQL's volume is provisioned first

  values = [yamlencode({
    server = {
      basicAuth = { enabled = true, existingSecret = kubernetes_secret_v1.prefect_auth["prefect"].metadata[0].name }
    }
    # The server reads its database URL from our Secret (it takes precedence over the chart's own).
    externalDatabase = {
      existingSecret            = kubernetes_secret_v1.prefect_db.metadata[0].name
      connectionStringSecretKey = "connection-string"
    }
    secret = { create = false }
    postgresql = {
      enabled = true
      auth    = { existingSecret = kubernetes_secret_v1.prefect_db.metadata[0].name, username = "prefect", database = "server" }
      primary = { persistence = {
        enabled      = true
        storageClass = kubernetes_storage_class_v1.gp3.metadata[0].name
        size         = "${var.storage_gib.prefect_db}Gi"
      } }
    }
  })]
}

module "job_template" {
  source    = "../job_template"
  template  = var.base_job_template
  namespace = kubernetes_namespace_v1.system.metadata[0].name
}

resource "helm_release" "prefect_worker" {
  name       = "prefect-worker"
  repository = "https://prefecthq.github.io/prefect-helm"
  chart      = "prefect-worker"
  version    = var.prefect_chart_version
  namespace  = kubernetes_namespace_v1.system.metadata[0].name

  values = [yamlencode({
    worker = {
      apiConfig = "selfHostedServer"
      selfHostedServerApiConfig = {
        apiUrl    = local.prefect_api_url
        basicAuth = { enabled = true, existingSecret = kubernetes_secret_v1.prefect_auth["system"].metadata[0].name }
      }
      config = {
        workPool = var.prefect_work_pool
        type     = "kubernetes"
        # The chart writes this JSON text into a ConfigMap and starts the worker with it: the pool
        # is created with the GPU template, and an existing pool is updated to it.
        baseJobTemplate = { configuration = module.job_template.json }
      }
    }
    serviceAccount = {
      create = false
      name   = kubernetes_service_account_v1.training.metadata[0].name
    }
  })]
  depends_on = [helm_release.prefect_server]
}
