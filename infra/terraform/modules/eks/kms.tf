module "key" {
  source                = "../kms"
  description           = "${var.name}: Kubernetes secrets envelope encryption and control-plane logs"
  allow_cloudwatch_logs = true
  tags                  = var.tags
}
