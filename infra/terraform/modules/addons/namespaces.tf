# Terraform owns every namespace (the Kustomize overlays only set `namespace:` on the app's objects).
resource "kubernetes_namespace_v1" "system" {
  metadata {
    name = var.namespace
    labels = {
      "istio-injection" = "enabled"
    }
  }
}

resource "kubernetes_namespace_v1" "istio" {
  metadata {
    name = "istio-system"
  }
}

resource "kubernetes_namespace_v1" "monitoring" {
  metadata {
    name = "monitoring"
  }
}

resource "kubernetes_namespace_v1" "prefect" {
  metadata {
    name = "prefect"
  }
}

# The default StorageClass: encrypted gp3 through the EBS CSI driver (the eks module's add-on).
# EKS's own gp2 class uses the in-tree provisioner, which Kubernetes has removed.
resource "kubernetes_storage_class_v1" "gp3" {
  metadata {
    name        = "gp3"
    annotations = { "storageclass.kubernetes.io/is-default-class" = "true" }
  }
  storage_provisioner    = "ebs.csi.aws.com"
  volume_binding_mode    = "WaitForFirstConsumer"
  allow_volume_expansion = true
  reclaim_policy         = var.reclaim_policy
  parameters = {
    type      = "gp3"
    encrypted = "true"
  }
}
