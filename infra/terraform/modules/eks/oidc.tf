# IAM roles for service accounts: the cluster's OIDC issuer as an identity provider. AWS
# verifies the EKS issuer against its own trust store, so no thumbprint is pinned here.
resource "aws_iam_openid_connect_provider" "this" {
  url            = aws_eks_cluster.this.identity[0].oidc[0].issuer
  client_id_list = ["sts.amazonaws.com"]
  tags           = var.tags
}
