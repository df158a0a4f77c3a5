variable "name" {
  description = "Prefix for every resource (e.g. mnistcl-prod)."
  type        = string
}

variable "cidr_block" {
  description = "The VPC's address range."
  type        = string
  default     = "10.40.0.0/16"
}

variable "availability_zones" {
  description = "Two or three zones; one public and one private subnet in each."
  type        = list(string)
  validation {
    condition     = length(var.availability_zones) >= 2
    error_message = "EKS needs subnets in at least two availability zones."
  }
}

variable "single_nat_gateway" {
  description = "One NAT gateway for all zones (cheaper, staging) instead of one per zone (prod)."
  type        = bool
  default     = false
}

variable "tags" {
  description = "Tags for every resource."
  type        = map(string)
  default     = {}
}
