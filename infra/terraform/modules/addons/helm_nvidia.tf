resource "helm_release" "nvidia_device_plugin" {
  name       = "nvidia-device-plugin"
  repository = "https://nvidia.github.io/k8s-device-plugin"
  chart      = "nvidia-device-plugin"
  version    = var.nvidia_device_plugin_version
  namespace  = "kube-system"

  values = [yamlencode({
    nodeSelector = { "mnist-continual/pool" = "gpu" }
    tolerations  = [{ key = "nvidia.com/gpu", operator = "Exists", effect = "NoSchedule" }]
  })]
}

# Scales the GPU group from zero when a training Job is pending (and back when idle), and the CPU
# group with the model servers' replicas. It finds both groups by the tags EKS puts on managed
# node groups' Auto Scaling groups; the GPU group's node template (label, taint, GPU) is tagged
# by the eks module for scale-from-zero.
resource "helm_release" "cluster_autoscaler" {
  name       = "cluster-autoscaler"
  repository = "https://kubernetes.github.io/autoscaler"
  chart      = "cluster-autoscaler"
  version    = var.cluster_autoscaler_version
  namespace  = "kube-system"

  values = [yamlencode({
    cloudProvider = "aws"
    awsRegion     = var.region
    autoDiscovery = { clusterName = var.cluster_name }
    rbac = { serviceAccount = {
      create      = true
      name        = "cluster-autoscaler" # the IRSA trust names kube-system:cluster-autoscaler
      annotations = { "eks.amazonaws.com/role-arn" = var.cluster_autoscaler_role_arn }
    } }
    extraArgs = {
      "balance-similar-node-groups" = true
      "skip-nodes-with-system-pods" = false
      "scale-down-unneeded-time"    = "10m"
      "scale-down-delay-after-add"  = "5m"
      "expander"                    = "least-waste"
    }
  })]
}
