# Prometheus, Alertmanager, Grafana and the operator. The rules (PrometheusRule), the routes
# (AlertmanagerConfig) and the dashboard (ConfigMap labelled grafana_dashboard) are deployed with
# the app from infra/k8s, generated from monitoring/.
resource "helm_release" "kube_prometheus_stack" {
  name       = "kube-prometheus-stack"
  repository = "https://prometheus-community.github.io/helm-charts"
  chart      = "kube-prometheus-stack"
  version    = var.kube_prometheus_stack_version
  namespace  = kubernetes_namespace_v1.monitoring.metadata[0].name
  timeout    = 900 # a fresh cluster: three volumes to provision, CRDs, the operator's webhook

  values = [yamlencode({
    prometheus = {
      prometheusSpec = {
        # pick up the app's PodMonitor and PrometheusRule in any namespace
        podMonitorSelectorNilUsesHelmValues     = false
        ruleSelectorNilUsesHelmValues           = false
        serviceMonitorSelectorNilUsesHelmValues = false
        retention                               = "30d"
        storageSpec = { volumeClaimTemplate = { spec = {
          storageClassName = kubernetes_storage_class_v1.gp3.metadata[0].name
          accessModes      = ["ReadWriteOnce"]
          resources        = { requests = { storage = "${var.storage_gib.prometheus}Gi" } }
        } } }
      }
    }
    alertmanager = {
      alertmanagerSpec = {
        secrets = [kubernetes_secret_v1.alertmanager_smtp.metadata[0].name]
        # OnNamespace (the operator's default, stated): an AlertmanagerConfig in mnist-<env> only
        # routes alerts whose namespace label is mnist-<env>, never the cluster's own (Watchdog,
        # control-plane targets).
        alertmanagerConfigMatcherStrategy = { type = "OnNamespace" }
        alertmanagerConfigSelector        = { matchLabels = { "app.kubernetes.io/part-of" = "mnist-continual" } }
        storage = { volumeClaimTemplate = { spec = {
          storageClassName = kubernetes_storage_class_v1.gp3.metadata[0].name
          accessModes      = ["ReadWriteOnce"]
          resources        = { requests = { storage = "${var.storage_gib.alertmanager}Gi" } }
        } } }
      }
      config = {
        global = {
          smtp_smarthost          = var.smtp_smarthost
          smtp_from               = var.alert_email_from
          smtp_require_tls        = true
          smtp_auth_username      = coalesce(var.smtp_username, var.alert_email_from)
          smtp_auth_password_file = "/etc/alertmanager/secrets/${kubernetes_secret_v1.alertmanager_smtp.metadata[0].name}/password"
        }
        route     = { receiver = "null" }
        receivers = [{ name = "null" }]
      }
    }
    grafana = {
      admin = {
        existingSecret = kubernetes_secret_v1.grafana_admin.metadata[0].name
        userKey        = "admin-user"
        passwordKey    = "admin-password"
      }
      deploymentStrategy = { type = "Recreate" } # its ReadWriteOnce volume cannot be on two pods at once
      persistence = {
        enabled          = true
        storageClassName = kubernetes_storage_class_v1.gp3.metadata[0].name
        size             = "${var.storage_gib.grafana}Gi"
      }
      # The dashboards sidecar loads every ConfigMap labelled grafana_dashboard="1", in every
      # namespace: infra/k8s ships the model's dashboard that way.
      sidecar = { dashboards = { enabled = true, label = "grafana_dashboard", labelValue = "1", searchNamespace = "ALL" } }
    }
  })]
}
