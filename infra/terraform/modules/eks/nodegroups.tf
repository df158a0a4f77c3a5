# CPU nodes: the model servers, the Prefect worker, Prometheus, Istio.
resource "aws_eks_node_group" "cpu" {
  cluster_name    = aws_eks_cluster.this.name
  node_group_name = "cpu"
  node_role_arn   = aws_iam_role.node.arn
  subnet_ids      = var.subnet_ids
  instance_types  = var.cpu_instance_types
  ami_type        = "AL2023_x86_64_STANDARD"

  scaling_config {
    min_size     = var.cpu_nodes.min
    desired_size = var.cpu_nodes.desired
    max_size     = var.cpu_nodes.max
  }

  labels = { "mnist-continual/pool" = "cpu" }
  tags   = var.tags

  lifecycle {
    ignore_changes = [scaling_config[0].desired_size]
  }
  depends_on = [aws_iam_role_policy_attachment.node]
}

# GPU nodes: only pods that tolerate nvidia.com/gpu land here (the Prefect Kubernetes work
# pool's job template tolerates it and selects mnist-continual/pool=gpu).
resource "aws_eks_node_group" "gpu" {
  cluster_name    = aws_eks_cluster.this.name
  node_group_name = "gpu"
  node_role_arn   = aws_iam_role.node.arn
  subnet_ids      = var.subnet_ids
  instance_types  = var.gpu_instance_types
  ami_type        = "AL2023_x86_64_NVIDIA"

  scaling_config {
    min_size     = var.gpu_nodes.min
    desired_size = var.gpu_nodes.desired
    max_size     = var.gpu_nodes.max
  }

  labels = {
    "mnist-continual/pool"   = "gpu"
    "nvidia.com/gpu.present" = "true"
  }

  taint {
    key    = "nvidia.com/gpu"
    value  = "present"
    effect = "NO_SCHEDULE"
  }

  tags = var.tags
  lifecycle {
    ignore_changes = [scaling_config[0].desired_size]
  }
  depends_on = [aws_iam_role_policy_attachment.node]
}
