# Production: a NAT gateway per zone, three zones, more CPU nodes, GPU nodes up to 4.
locals {
  name = "mnistcl-prod"
  tags = { project = "mnist-continual", environment = "prod" }
}

module "network" {
  source             = "../../modules/network"
  name               = local.name
  availability_zones = var.availability_zones
  single_nat_gateway = false
  tags               = local.tags
}

module "eks" {
  source              = "../../modules/eks"
  name                = local.name
  vpc_id              = module.network.vpc_id
  subnet_ids          = module.network.private_subnet_ids
  public_access_cidrs = var.api_access_cidrs
  admin_role_arns     = var.admin_role_arns
  cpu_nodes           = { min = 3, desired = 3, max = 10 }
  gpu_nodes           = { min = 0, desired = 0, max = 4 }
  tags                = local.tags
}

module "storage" {
  source      = "../../modules/storage"
  bucket_name = var.bucket_name
  tags        = local.tags
}

module "irsa" {
  source            = "../../modules/irsa"
  name              = local.name
  oidc_provider_arn = module.eks.oidc_provider_arn
  oidc_issuer       = module.eks.oidc_issuer
  bucket_arn        = module.storage.bucket_arn
  kms_key_arn       = module.storage.kms_key_arn
  namespace         = "mnist-prod"
  tags              = local.tags
}

# No ECR here: the account's image repositories are made once, by envs/staging (one build per
# commit, which both clusters pull; the node role may pull from any repository of the account).
# Production in another account: add the ecr module here and let CI push to both registries.
