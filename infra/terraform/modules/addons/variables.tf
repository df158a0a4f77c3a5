variable "namespace" {
  description = "Namespace of the system (model server, relay, Prefect worker, training Jobs): mnist-staging or mnist-prod."
  type        = string
}

variable "cluster_name" {
  description = "The EKS cluster (the cluster-autoscaler discovers its node groups by this name)."
  type        = string
}

variable "region" {
  description = "AWS region of the cluster."
  type        = string
}

variable "training_role_arn" {
  description = "IRSA role of the mnist-training service account (irsa module): the Prefect worker and the flow Jobs."
  type        = string
}

variable "serving_role_arn" {
  description = "IRSA role of the mnist-serving service account (irsa module): the model pods, read-only."
  type        = string
}

variable "cluster_autoscaler_role_arn" {
  description = "IRSA role of kube-system/cluster-autoscaler (eks module)."
  type        = string
}

variable "store_url" {
  description = "This environment's registry and datasets (storage module output store_url): MNISTCL_STORAGE_URL of the flow Jobs, MNISTCL_STORE_URL of the model pods."
  type        = string
}

variable "base_job_template" {
  description = "The Kubernetes work pool's base job template (JSON text: infra/k8s/prefect-gpu-job-template.json); its namespace default is set to var.namespace here."
  type        = string
}

variable "gateway_name" {
  description = "The Istio Gateway the SeldonDeployments' VirtualServices bind to (infra/k8s/base/gateway.yaml, in var.namespace)."
  type        = string
  default     = "mnist-gateway"
}

variable "istio_version" {
  description = "Istio charts (base, istiod, gateway): 1.30 supports Kubernetes 1.32-1.36."
  type        = string
  default     = "1.30.3"
}

variable "kube_prometheus_stack_version" {
  description = "kube-prometheus-stack chart (Prometheus, Alertmanager, Grafana, operator CRDs)."
  type        = string
  default     = "88.5.3"
}

variable "pushgateway_version" {
  description = "prometheus-pushgateway chart (where the monitor Jobs push their gauges)."
  type        = string
  default     = "2.15.0"
}

variable "seldon_core_version" {
  description = "Seldon Core operator: 1.17.1 is the last Apache-2.0 release."
  type        = string
  default     = "1.17.1"
  validation {
    condition     = var.seldon_core_version == "1.17.1"
    error_message = "Seldon Core 1.18+ is under the Business Source License; stay on 1.17.1."
  }
}

variable "prefect_chart_version" {
  description = "prefect-server and prefect-worker charts (one release train)."
  type        = string
  default     = "2026.8.18172642"
}

variable "cluster_autoscaler_version" {
  description = "cluster-autoscaler chart (app 1.35, the cluster's minor)."
  type        = string
  default     = "9.59.0"
}

variable "nvidia_device_plugin_version" {
  description = "NVIDIA device plugin chart (exposes nvidia.com/gpu on GPU nodes)."
  type        = string
  default     = "0.20.0"
}

variable "prefect_work_pool" {
  description = "The Kubernetes work pool (prefect.yaml's mnistcl-k8s)."
  type        = string
  default     = "mnistcl-k8s"
}

variable "alert_email_from" {
  description = "Sender of alert emails (also the SMTP user name)."
  type        = string
}

variable "smtp_smarthost" {
  description = "SMTP relay host:port for Alertmanager."
  type        = string
}

variable "smtp_username" {
  description = "Alertmanager's SMTP user name (SES: the SMTP credential's user name, not an address); null: alert_email_from."
  type        = string
  default     = null
}

variable "reclaim_policy" {
  description = "What happens to a gp3 volume (Prometheus, Alertmanager, Grafana, the Prefect database) when its claim goes: Retain (prod: data outlives a mistake) or Delete (staging: destroy leaves nothing)."
  type        = string
  default     = "Retain"
  validation {
    condition     = contains(["Retain", "Delete"], var.reclaim_policy)
    error_message = "reclaim_policy is Retain or Delete."
  }
}

variable "smtp_password" {
  description = "Alertmanager's SMTP password: stored as the Secret monitoring/alertmanager-smtp (key password)."
  type        = string
  sensitive   = true
}

variable "grafana_admin_password" {
  description = "Grafana's admin password: the Secret monitoring/grafana-admin."
  type        = string
  sensitive   = true
}

variable "prefect_auth_string" {
  description = "The Prefect server's basic-auth string user:password; the server checks it and every client (worker, relay, flow Jobs) sends it."
  type        = string
  sensitive   = true
}

variable "prefect_db_password" {
  description = "Password of the Prefect server's PostgreSQL (the chart's bundled database)."
  type        = string
  sensitive   = true
}

variable "storage_gib" {
  description = "Persistent volumes (gp3): Prometheus, Alertmanager, Grafana, the Prefect database."
  type        = object({ prometheus = number, alertmanager = number, grafana = number, prefect_db = number })
  default     = { prometheus = 50, alertmanager = 5, grafana = 5, prefect_db = 20 }
}

variable "metrics_server_version" {
  description = "metrics-server chart (app 0.8.1): the CPU the model servers' autoscalers read."
  type        = string
  default     = "3.13.1"
}
