variable "region" {
  description = "AWS region."
  type        = string
  default     = "eu-west-1"
}

variable "availability_zones" {
  description = "Zones for the subnets."
  type        = list(string)
  default     = ["eu-west-1a", "eu-west-1b"]
}

variable "bucket_name" {
  description = "Datasets and models bucket (globally unique)."
  type        = string
}

variable "api_access_cidrs" {
  description = "Who may reach the Kubernetes API (your office or VPN); empty: private only."
  type        = list(string)
  default     = []
}

variable "alert_email_from" {
  description = "Sender address for alerts."
  type        = string
}

variable "smtp_smarthost" {
  description = "SMTP relay (host:port)."
  type        = string
}

variable "admin_role_arns" {
  description = "IAM roles that get cluster-admin access entries (CI's deploy and plan roles, an operators' role), by name. They must exist first (docs/kubernetes.md, step 0); never list the role that runs this apply (it has its entry as the cluster's creator)."
  type        = map(string)
  default     = {}
}

variable "smtp_username" {
  description = "Alertmanager's SMTP user name (SES: the SMTP credential's user name); null: alert_email_from."
  type        = string
  default     = null
}

variable "smtp_password" {
  description = "Alertmanager's SMTP password (TF_VAR_smtp_password; stored as the Secret monitoring/alertmanager-smtp and in the encrypted state)."
  type        = string
  sensitive   = true
}

variable "grafana_admin_password" {
  description = "Grafana's admin password (TF_VAR_grafana_admin_password; Secret monitoring/grafana-admin)."
  type        = string
  sensitive   = true
}

variable "prefect_auth_string" {
  description = "The Prefect server's basic-auth string user:password (TF_VAR_prefect_auth_string; Secret prefect/prefect-auth, and PREFECT_API_AUTH_STRING of every client)."
  type        = string
  sensitive   = true
}

variable "prefect_db_password" {
  description = "The Prefect server's PostgreSQL password (TF_VAR_prefect_db_password; Secret prefect/prefect-db)."
  type        = string
  sensitive   = true
}
