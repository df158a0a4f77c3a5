terraform {
  required_version = ">= 1.10" # the S3 backend's use_lockfile
}
