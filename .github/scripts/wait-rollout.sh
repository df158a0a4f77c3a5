#!/usr/bin/env bash
# Wait until the Seldon operator has created each predictor's Deployment for the applied spec and
# its rollout is complete: `kubectl wait sdep --for=...Available` returns at once on a
# SeldonDeployment that was already available, before the operator has even seen the change.
#   wait-rollout.sh <namespace> <predictor>...
set -euo pipefail
ns=$1; shift
for predictor in "$@"; do
  # Seldon names it <sdep>-<predictor>-<index>-<containers> (operator/apis/.../seldondeployment_types.go).
  deploy="mnist-continual-${predictor}-0-classifier"
  for _ in $(seq 60); do kubectl -n "$ns" get deploy "$deploy" > /dev/null 2>&1 && break; sleep 5; done
  kubectl -n "$ns" rollout status "deploy/$deploy" --timeout=600s
done
kubectl -n "$ns" wait sdep/mnist-continual --for=jsonpath='{.status.state}'=Available --timeout=300s
