variable "template" {
  description = "The generated base job template (JSON text)."
  type        = string
}

variable "namespace" {
  description = "The environment's namespace (mnist-staging, mnist-prod): where the flow Jobs run."
  type        = string
}
