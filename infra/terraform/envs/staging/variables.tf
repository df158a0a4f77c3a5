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

variable "prefect_api_url" {
  description = "The Prefect API the cluster's worker polls."
  type        = string
}

variable "alert_email_from" {
  description = "Sender address for alerts."
  type        = string
}

variable "smtp_smarthost" {
  description = "SMTP relay (host:port)."
  type        = string
}
