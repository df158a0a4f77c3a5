# CPU nodes: the model servers, the Prefect worker, Prometheus, Istio.
resource "aws_eks_node_group" "cpu" {
  cluster_name    = aws_eks_cluster.this.name
  node_group_name = "cpu"
  node_role_arn   = aws_iam_role.node.arn
  subnet_ids      = var.subnet_ids
  instance_types  = var.cpu_instance_types
  ami_type        = "AL2023_x86_64_STANDARD"
  disk_size       = var.cpu_disk_gib

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

# GPU nodes (min 0): the cluster-autoscaler adds one when a training Job is pending and removes
# it when idle. Only pods that tolerate nvidia.com/gpu land here (the Prefect Kubernetes work
# pool's job template tolerates it and selects mnist-continual/pool=gpu).
resource "aws_eks_node_group" "gpu" {
  cluster_name    = aws_eks_cluster.this.name
  node_group_name = "gpu"
  node_role_arn   = aws_iam_role.node.arn
  subnet_ids      = var.subnet_ids
  instance_types  = var.gpu_instance_types
  ami_type        = "AL2023_x86_64_NVIDIA"
  disk_size       = var.gpu_disk_gib

  scaling_config {
    min_size     = var.gpu_nodes.min
    desired_size = var.gpu_nodes.desired
    max_size     = var.gpu_nodes.max
  }

  # k8s.amazonaws.com/accelerator: the cluster-autoscaler's GPU label on AWS; with it, a node whose
  # device plugin has not yet offered nvidia.com/gpu counts as that GPU coming, not as a reason
  # to start another node (cloudprovider/aws/README.md).
  labels = {
    "mnist-continual/pool"          = "gpu"
    "nvidia.com/gpu.present"        = "true"
    "k8s.amazonaws.com/accelerator" = var.gpu_accelerator
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

# Scale from zero: with no GPU node running, the cluster-autoscaler learns what a new node would
# offer (its label, taint and GPU) from these tags on the group's Auto Scaling group. EKS does not
# copy node group labels/taints onto the ASG, hence aws_autoscaling_group_tag.
locals {
  gpu_node_template = {
    "k8s.io/cluster-autoscaler/node-template/label/mnist-continual/pool"          = "gpu"
    "k8s.io/cluster-autoscaler/node-template/taint/nvidia.com/gpu"                = "present:NoSchedule"
    "k8s.io/cluster-autoscaler/node-template/resources/nvidia.com/gpu"            = "1"
    "k8s.io/cluster-autoscaler/node-template/label/k8s.amazonaws.com/accelerator" = var.gpu_accelerator
  }
}

resource "aws_autoscaling_group_tag" "gpu_node_template" {
  for_each               = local.gpu_node_template
  autoscaling_group_name = aws_eks_node_group.gpu.resources[0].autoscaling_groups[0].name
  tag {
    key                 = each.key
    value               = each.value
    propagate_at_launch = false
  }
}
