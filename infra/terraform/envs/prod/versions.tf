terraform {
  required_version = ">= 1.10" # the S3 backend's use_lockfile
  required_providers {
    aws = {
      source  = "hashicorp/aws"
      version = ">= 5.100, < 6.0"
    }
    helm = {
      source  = "hashicorp/helm"
      version = ">= 2.17, < 3.0" # 3.x changed the kubernetes block to an attribute
    }
    kubernetes = {
      source  = "hashicorp/kubernetes"
      version = ">= 2.36, < 3.0"
    }
  }

  # State in S3 with locking; `terraform init -backend-config=backend.hcl` (see the README).
  backend "s3" {}
}
