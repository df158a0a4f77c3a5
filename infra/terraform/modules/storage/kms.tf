module "key" {
  source      = "../kms"
  description = "${var.bucket_name}: datasets and models"
  alias       = var.bucket_name
  tags        = var.tags
}
