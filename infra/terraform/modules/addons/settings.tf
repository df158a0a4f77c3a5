# What every pod of the system reads (the flow Jobs through the work pool's envFrom, the model
# pods and the relay by key): this environment's registry, the Pushgateway and the one Prefect
# API URL. Terraform writes it because Terraform knows the bucket and the services it installs.
locals {
  prefect_api_url = "http://prefect-server.${kubernetes_namespace_v1.prefect.metadata[0].name}.svc.cluster.local:4200/api"
  pushgateway_url = "http://${helm_release.pushgateway.name}.${kubernetes_namespace_v1.monitoring.metadata[0].name}.svc:9091"
}

resource "kubernetes_config_map_v1" "settings" {
  metadata {
    name      = "mnistcl-settings"
    namespace = kubernetes_namespace_v1.system.metadata[0].name
  }
  data = {
    MNISTCL_STORAGE_URL     = var.store_url
    MNISTCL_STORE_URL       = var.store_url
    MNISTCL_PUSHGATEWAY_URL = local.pushgateway_url
    MNISTCL_K8S_NAMESPACE   = var.namespace
    PREFECT_API_URL         = local.prefect_api_url
  }
}

# Secrets Terraform can write (their values are TF_VAR_* inputs, kept in the encrypted state).
# The app's own Secret, mnistcl-secrets (database URLs, the relay token), is created by the
# operator: docs/kubernetes.md, step 5.
resource "kubernetes_secret_v1" "prefect_auth" {
  for_each = { system = kubernetes_namespace_v1.system, prefect = kubernetes_namespace_v1.prefect }
  metadata {
    name      = "prefect-auth"
    namespace = each.value.metadata[0].name
  }
  data = {
    "auth-string"           = var.prefect_auth_string # the prefect-server / prefect-worker charts' key
    PREFECT_API_AUTH_STRING = var.prefect_auth_string # envFrom of the flow Jobs and the relay
  }
}

resource "kubernetes_secret_v1" "alertmanager_smtp" {
  metadata {
    name      = "alertmanager-smtp"
    namespace = kubernetes_namespace_v1.monitoring.metadata[0].name
  }
  data = { password = var.smtp_password }
}

resource "kubernetes_secret_v1" "grafana_admin" {
  metadata {
    name      = "grafana-admin"
    namespace = kubernetes_namespace_v1.monitoring.metadata[0].name
  }
  data = {
    "admin-user"     = "admin"
    "admin-password" = var.grafana_admin_password
  }
}

resource "kubernetes_secret_v1" "prefect_db" {
  metadata {
    name      = "prefect-db"
    namespace = kubernetes_namespace_v1.prefect.metadata[0].name
  }
  data = {
    # The bitnami PostgreSQL subchart's keys (auth.existingSecret), and the server's connection string.
    "password"          = var.prefect_db_password
    "postgres-password" = var.prefect_db_password
    "connection-string" = "postgresql+asyncpg://prefect:${var.prefect_db_password}@prefect-server-postgresql.${kubernetes_namespace_v1.prefect.metadata[0].name}:5432/server"
  }
}
