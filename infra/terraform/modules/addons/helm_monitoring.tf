# Prometheus, Alertmanager and the operator. The rules (PrometheusRule) and the routes
# (AlertmanagerConfig) are deployed with the app from infra/k8s, generated from monitoring/.
resource "helm_release" "kube_prometheus_stack" {
  name       = "kube-prometheus-stack"
  repository = "https://prometheus-community.github.io/helm-charts"
  chart      = "kube-prometheus-stack"
  version    = var.kube_prometheus_stack_version
  namespace  = kubernetes_namespace_v1.monitoring.metadata[0].name

  values = [yamlencode({
    prometheus = {
      prometheusSpec = {
        # pick up the app's PodMonitor and PrometheusRule in any namespace
        podMonitorSelectorNilUsesHelmValues     = false
        ruleSelectorNilUsesHelmValues           = false
        serviceMonitorSelectorNilUsesHelmValues = false
      }
    }
    alertmanager = {
      alertmanagerSpec = {
        secrets                           = [var.smtp_auth_secret]
        alertmanagerConfigMatcherStrategy = { type = "None" }
        alertmanagerConfigSelector        = { matchLabels = { "app.kubernetes.io/part-of" = "mnist-continual" } }
      }
      config = {
        global = {
          smtp_smarthost          = var.smtp_smarthost
          smtp_from               = var.alert_email_from
          smtp_require_tls        = true
          smtp_auth_username      = var.alert_email_from
          smtp_auth_password_file = "/etc/alertmanager/secrets/${var.smtp_auth_secret}/password"
        }
        route     = { receiver = "null" }
        receivers = [{ name = "null" }]
      }
    }
  })]
}
