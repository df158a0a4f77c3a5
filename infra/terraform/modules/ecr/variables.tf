variable "prefix" {
  description = "Repository name prefix (repositories are <prefix>/serving and <prefix>/train)."
  type        = string
  default     = "mnist-continual"
}

variable "repositories" {
  description = "Images CI pushes."
  type        = list(string)
  default     = ["serving", "train"]
}

variable "force_delete" {
  description = "Let `terraform destroy` delete repositories that still hold images (staging)."
  type        = bool
  default     = false
}

variable "tags" {
  description = "Tags for every resource."
  type        = map(string)
  default     = {}
}
