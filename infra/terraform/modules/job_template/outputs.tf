output "json" {
  description = "The template for this environment (JSON text), as the prefect-worker chart's baseJobTemplate.configuration takes it."
  value       = jsonencode(local.for_environment)
}
