resource "aws_cloudwatch_log_group" "flow" {
  name              = "/aws/vpc/${var.name}/flow-logs"
  retention_in_days = 365
  kms_key_id        = module.logs_key.arn
  tags              = var.tags
}

module "logs_key" {
  source                = "../kms"
  description           = "${var.name} VPC flow logs"
  allow_cloudwatch_logs = true
  tags                  = var.tags
}
