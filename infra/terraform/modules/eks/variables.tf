variable "name" {
  description = "Cluster name (e.g. mnistcl-prod)."
  type        = string
}

variable "kubernetes_version" {
  description = "EKS Kubernetes version."
  type        = string
  default     = "1.35"
}

variable "vpc_id" {
  description = "VPC from the network module."
  type        = string
}

variable "subnet_ids" {
  description = "Private subnets for the control plane's interfaces and the nodes."
  type        = list(string)
}

variable "public_access_cidrs" {
  description = "Who may reach the Kubernetes API endpoint (empty: private endpoint only)."
  type        = list(string)
  default     = []
}

variable "cpu_instance_types" {
  description = "Instance types of the CPU node group (model servers, Prefect worker, monitoring)."
  type        = list(string)
  default     = ["m6i.xlarge"]
}

variable "cpu_nodes" {
  description = "CPU node group size: min, desired, max."
  type        = object({ min = number, desired = number, max = number })
  default     = { min = 2, desired = 2, max = 6 }
}

variable "gpu_instance_types" {
  description = "Instance types of the GPU node group (training Jobs only: tainted)."
  type        = list(string)
  default     = ["g5.xlarge"]
}

variable "gpu_accelerator" {
  description = "The GPU of gpu_instance_types, as the cluster-autoscaler names it (k8s.amazonaws.com/accelerator): nvidia-a10g for g5."
  type        = string
  default     = "nvidia-a10g"
}

variable "gpu_nodes" {
  description = "GPU node group size: min, desired, max (min 0: scale to zero between trainings)."
  type        = object({ min = number, desired = number, max = number })
  default     = { min = 0, desired = 0, max = 2 }
}

variable "tags" {
  description = "Tags for every resource."
  type        = map(string)
  default     = {}
}

variable "admin_role_arns" {
  description = "IAM roles given cluster-admin access entries, by a name of your choice (e.g. { ci-deploy = \"arn:aws:iam::111122223333:role/mnistcl-ci-deploy\" }). Each role must exist before the apply. Never list the role that runs the apply: the cluster's creator already has an entry (bootstrap_cluster_creator_admin_permissions), and a second one fails."
  type        = map(string)
  default     = {}
}

variable "cpu_disk_gib" {
  description = "Root volume of each CPU node (GiB)."
  type        = number
  default     = 50
}

variable "gpu_disk_gib" {
  description = "Root volume of each GPU node (GiB): the training image (CUDA, torch, TensorFlow) is about 15 GB unpacked, and the kubelet evicts pods above 85% disk use."
  type        = number
  default     = 150
}
