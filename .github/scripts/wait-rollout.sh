#!/usr/bin/env bash
# Wait until the Seldon operator has applied the SeldonDeployment's spec to each predictor's
# Deployment and that rollout is complete. `kubectl wait sdep --for=...Available` alone returns at
# once on a SeldonDeployment that was already Available, before the operator has seen the change,
# and so can `rollout status` on a Deployment the operator has not updated yet: so first wait for
# the Deployment to exist and to carry the predictor's labels from the applied spec (the operator
# copies predictor labels onto the pod template: operator/controllers/seldondeployment_controller.go).
#   wait-rollout.sh <namespace> <predictor>...
set -euo pipefail
ns=$1; shift
for predictor in "$@"; do
  # Seldon names it <sdep>-<predictor>-<index>-<containers> (operator/apis/.../seldondeployment_types.go).
  deploy="mnist-continual-${predictor}-0-classifier"
  want=$(kubectl -n "$ns" get sdep mnist-continual \
    -o jsonpath="{.spec.predictors[?(@.name=='${predictor}')].labels.mnistcl/model-version}")
  for _ in $(seq 120); do
    have=$(kubectl -n "$ns" get deploy "$deploy" \
      -o jsonpath='{.spec.template.metadata.labels.mnistcl/model-version}' 2>/dev/null || true)
    [ -n "$want" ] && [ "$have" = "$want" ] && break
    sleep 5
  done
  [ "$have" = "$want" ] || { echo "deploy/$deploy never took model-version $want (has '$have')"; exit 1; }
  kubectl -n "$ns" rollout status "deploy/$deploy" --timeout=600s
done
kubectl -n "$ns" wait sdep/mnist-continual --for=jsonpath='{.status.state}'=Available --timeout=300s
