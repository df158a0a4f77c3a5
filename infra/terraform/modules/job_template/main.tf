# The Kubernetes work pool's base job template for one environment: the generated template
# (infra/k8s/prefect-gpu-job-template.json, deployment.orchestrate.gpu_job_template) with the
# environment's namespace as the flow Jobs' default. No provider: the tests apply this module for
# real (tests/integration/test_infra.py).
locals {
  template = jsondecode(var.template)
  properties = merge(local.template.variables.properties, {
    namespace = merge(local.template.variables.properties.namespace, { default = var.namespace })
  })
  for_environment = merge(local.template, {
    variables = merge(local.template.variables, { properties = local.properties })
  })
}
