"""Deployment: Kubernetes manifests, Prefect work pools and deployments, launching local servers."""
