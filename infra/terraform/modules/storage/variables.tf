variable "bucket_name" {
  description = "The bucket for dataset versions, model artifacts and reports (MNISTCL_STORAGE_URL=s3://<bucket>/mnistcl)."
  type        = string
}

variable "noncurrent_days" {
  description = "Days to keep overwritten or deleted object versions (the store itself never overwrites)."
  type        = number
  default     = 90
}

variable "force_destroy" {
  description = "Allow `terraform destroy` to delete a non-empty bucket (staging only)."
  type        = bool
  default     = false
}

variable "tags" {
  description = "Tags for every resource."
  type        = map(string)
  default     = {}
}

variable "prefix" {
  description = "Key prefix the system uses inside the bucket (the irsa module grants exactly this prefix)."
  type        = string
  default     = "mnistcl"
}
