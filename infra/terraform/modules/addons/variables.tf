variable "namespace" {
  description = "Namespace of the system (model server, relay, Prefect worker, training Jobs): mnist-staging or mnist-prod."
  type        = string
}

variable "training_role_arn" {
  description = "IRSA role of the mnist-training service account (irsa module)."
  type        = string
}

variable "istio_version" {
  description = "Istio charts (base, istiod, gateway)."
  type        = string
  default     = "1.24.2"
}

variable "kube_prometheus_stack_version" {
  description = "kube-prometheus-stack chart (Prometheus, Alertmanager, operator CRDs)."
  type        = string
  default     = "66.3.1"
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

variable "prefect_worker_version" {
  description = "prefect-worker chart."
  type        = string
  default     = "2025.1.28174701"
}

variable "nvidia_device_plugin_version" {
  description = "NVIDIA device plugin chart (exposes nvidia.com/gpu on GPU nodes)."
  type        = string
  default     = "0.17.0"
}

variable "prefect_api_url" {
  description = "Prefect API the worker polls (a self-hosted server or Prefect Cloud)."
  type        = string
}

variable "prefect_work_pool" {
  description = "The Kubernetes work pool (prefect.yaml's mnistcl-k8s)."
  type        = string
  default     = "mnistcl-k8s"
}

variable "alert_email_from" {
  description = "Sender of alert emails."
  type        = string
}

variable "smtp_smarthost" {
  description = "SMTP relay host:port for Alertmanager."
  type        = string
}

variable "smtp_auth_secret" {
  description = "Name of a Secret in the monitoring namespace holding the SMTP password under key `password`."
  type        = string
  default     = "alertmanager-smtp"
}

variable "relay_url" {
  description = "The Alertmanager-to-Prefect relay inside the cluster (infra/k8s deploys it)."
  type        = string
  default     = "http://mnist-relay:9095/"
}
