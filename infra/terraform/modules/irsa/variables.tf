variable "name" {
  description = "Prefix for the roles (e.g. mnistcl-prod)."
  type        = string
}

variable "oidc_provider_arn" {
  description = "The cluster's OIDC provider (eks module output)."
  type        = string
}

variable "oidc_issuer" {
  description = "The OIDC issuer without https:// (eks module output)."
  type        = string
}

variable "namespace" {
  description = "Kubernetes namespace of the service accounts (mnist-staging or mnist-prod)."
  type        = string
}

variable "bucket_arn" {
  description = "The datasets-and-models bucket."
  type        = string
}

variable "kms_key_arn" {
  description = "The bucket's KMS key."
  type        = string
}

variable "prefix" {
  description = "Key prefix inside the bucket that the system uses."
  type        = string
  default     = "mnistcl"
}

variable "tags" {
  description = "Tags for every resource."
  type        = map(string)
  default     = {}
}
