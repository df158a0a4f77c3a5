variable "description" {
  description = "What the key encrypts."
  type        = string
}

variable "allow_cloudwatch_logs" {
  description = "Let CloudWatch Logs in this region use the key (for encrypted log groups)."
  type        = bool
  default     = false
}

variable "alias" {
  description = "An alias name without the alias/ prefix; empty for none."
  type        = string
  default     = ""
}

variable "tags" {
  description = "Tags for every resource."
  type        = map(string)
  default     = {}
}
