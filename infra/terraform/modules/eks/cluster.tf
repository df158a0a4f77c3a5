resource "aws_cloudwatch_log_group" "cluster" {
  name              = "/aws/eks/${var.name}/cluster"
  retention_in_days = 365
  kms_key_id        = module.key.arn
  tags              = var.tags
}

resource "aws_eks_cluster" "this" {
  name     = var.name
  version  = var.kubernetes_version
  role_arn = aws_iam_role.cluster.arn

  vpc_config {
    subnet_ids              = var.subnet_ids
    endpoint_private_access = true
    endpoint_public_access  = length(var.public_access_cidrs) > 0
    public_access_cidrs     = length(var.public_access_cidrs) > 0 ? var.public_access_cidrs : null
  }

  encryption_config {
    resources = ["secrets"]
    provider {
      key_arn = module.key.arn
    }
  }

  # Access entries only (no aws-auth ConfigMap). Whoever runs the first apply gets cluster admin
  # (the helm/kubernetes providers need it in the same run); CI's roles get entries below.
  access_config {
    authentication_mode                         = "API"
    bootstrap_cluster_creator_admin_permissions = true
  }

  enabled_cluster_log_types = ["api", "audit", "authenticator", "controllerManager", "scheduler"]
  tags                      = var.tags
  depends_on                = [aws_iam_role_policy_attachment.cluster, aws_cloudwatch_log_group.cluster]
}

# Core add-ons, installed once the CPU nodes exist (coredns needs somewhere to run).
#   vpc-cni with network policy enforcement on: the relay's NetworkPolicy is enforced (the default
#   vpc-cni ignores NetworkPolicy objects);
#   aws-ebs-csi-driver: the gp3 volumes of Prometheus, Alertmanager, Grafana and the Prefect database.
locals {
  core_addons = {
    "vpc-cni"                = { configuration = jsonencode({ enableNetworkPolicy = "true" }), role = null }
    "coredns"                = { configuration = null, role = null }
    "kube-proxy"             = { configuration = null, role = null }
    "eks-pod-identity-agent" = { configuration = null, role = null }
    "aws-ebs-csi-driver"     = { configuration = null, role = aws_iam_role.ebs_csi.arn }
  }
}

resource "aws_eks_addon" "core" {
  for_each                    = local.core_addons
  cluster_name                = aws_eks_cluster.this.name
  addon_name                  = each.key
  configuration_values        = each.value.configuration
  service_account_role_arn    = each.value.role
  resolve_conflicts_on_create = "OVERWRITE"
  resolve_conflicts_on_update = "OVERWRITE"
  tags                        = var.tags
  depends_on                  = [aws_eks_node_group.cpu]
}

# Who may use kubectl besides the creator: CI's deploy and plan roles, an operators' SSO role.
resource "aws_eks_access_entry" "admin" {
  for_each      = var.admin_role_arns
  cluster_name  = aws_eks_cluster.this.name
  principal_arn = each.value
  type          = "STANDARD"
  tags          = var.tags
}

resource "aws_eks_access_policy_association" "admin" {
  for_each      = var.admin_role_arns
  cluster_name  = aws_eks_cluster.this.name
  principal_arn = aws_eks_access_entry.admin[each.key].principal_arn
  policy_arn    = "arn:aws:eks::aws:cluster-access-policy/AmazonEKSClusterAdminPolicy"
  access_scope {
    type = "cluster"
  }
}
