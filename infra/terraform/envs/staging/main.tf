# Staging: the same modules as prod, smaller and cheaper (one NAT gateway, GPU nodes from zero).
locals {
  name = "mnistcl-staging"
  tags = { project = "mnist-continual", environment = "staging" }
}

module "network" {
  source             = "../../modules/network"
  name               = local.name
  availability_zones = var.availability_zones
  single_nat_gateway = true
  tags               = local.tags
}

module "eks" {
  source              = "../../modules/eks"
  name                = local.name
  vpc_id              = module.network.vpc_id
  subnet_ids          = module.network.private_subnet_ids
  public_access_cidrs = var.api_access_cidrs
  admin_role_arns     = var.admin_role_arns
  cpu_nodes           = { min = 2, desired = 2, max = 4 }
  gpu_nodes           = { min = 0, desired = 0, max = 1 }
  tags                = local.tags
}

module "storage" {
  source        = "../../modules/storage"
  bucket_name   = var.bucket_name
  force_destroy = true
  tags          = local.tags
}

module "irsa" {
  source            = "../../modules/irsa"
  name              = local.name
  oidc_provider_arn = module.eks.oidc_provider_arn
  oidc_issuer       = module.eks.oidc_issuer
  bucket_arn        = module.storage.bucket_arn
  kms_key_arn       = module.storage.kms_key_arn
  namespace         = "mnist-staging"
  tags              = local.tags
}

# The account's image repositories, for both environments (envs/prod makes none: two roots
# creating mnist-continual/serving would clash). Kept when staging is destroyed.
module "ecr" {
  source       = "../../modules/ecr"
  force_delete = false
  tags         = local.tags
}
