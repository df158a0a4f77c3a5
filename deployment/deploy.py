"""Render the Kubernetes manifests of the model server: a SeldonDeployment for the champion,
with the challenger as a canary predictor (Seldon turns predictor ``traffic`` into an Istio
VirtualService split), resources, probes and Prometheus scrape settings."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import yaml

from deployment.orchestrate import SETTINGS_CONFIGMAP
from mnistcl.settings import read_yaml

DEFAULT_DEPLOY = Path(__file__).resolve().parent.parent / "configs" / "deploy.yaml"
SCHEMA = Path(__file__).resolve().parent.parent / "serving" / "seldondeployment.schema.json"
HTTP_PORT, METRICS_PORT = 9000, 6000
# Where the model container serves its metrics on the cluster: the Seldon operator (1.17.1) injects
# PREDICTIVE_UNIT_METRICS_ENDPOINT from its executor.prometheus.path, /prometheus by default (set
# explicitly in infra/terraform/modules/addons/helm_seldon.tf), and the wrapper serves that path on
# the port named `metrics`. The PodMonitor scrapes exactly this (deployment/k8s.py).
METRICS_PATH = "/prometheus"


class DeployError(ValueError):
    pass


MODEL_CONTAINER = "classifier"
#: The largest request body the model server takes (serving/server.py --max-bytes' default).
MAX_BODY_BYTES = 2_000_000
#: On every model-server pod (both predictors): what the feedback AuthorizationPolicy selects.
MODEL_SERVER_LABEL = {"mnistcl/component": "model-server"}
#: The feedback routes, as the pod's sidecar sees them (Seldon's executor and the wrapper; REST
#: with any suffix or query, and gRPC's SendFeedback of every service).
FEEDBACK_PATHS = ["/api/v1.0/feedback*", "/api/v0.1/feedback*", "/send-feedback*", "*/SendFeedback"]


def _merge(base: dict, over: dict) -> dict:
    out = copy.deepcopy(base)
    for k, v in (over or {}).items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def load_env(env: str, path: Path | None = None) -> dict:
    raw = read_yaml(Path(path or DEFAULT_DEPLOY), "deploy config", DeployError)
    envs = raw.get("envs") or {}
    if env not in envs:
        raise DeployError(f"unknown environment {env!r}; defined: {', '.join(envs)}")
    return _merge(raw["base"], envs[env])


def _pod_spec(cfg: dict, alias: str) -> dict:
    return {
        "serviceAccountName": cfg["service_account"],
        "securityContext": {"runAsNonRoot": True, "runAsUser": 10001, "fsGroup": 10001},
        "containers": [{
            "name": MODEL_CONTAINER,
            "image": cfg["image"],
            "imagePullPolicy": "IfNotPresent",
            "command": ["python", "-m", "serving.server"],
            # In the pod the wrapper must listen on the pod IP; locally it binds 127.0.0.1.
            "args": ["--host", "0.0.0.0", "--port", str(HTTP_PORT), "--metrics-port", str(METRICS_PORT),
                     "--workers", str(cfg["workers"]), "--threads", str(cfg["threads"])],
            "env": [
                # This environment's registry: its bucket is Terraform's, so Terraform writes the URL.
                {"name": "MNISTCL_STORE_URL",
                 "valueFrom": {"configMapKeyRef": {"name": SETTINGS_CONFIGMAP, "key": "MNISTCL_STORE_URL"}}},
                {"name": "MNISTCL_SERVE_ALIAS", "value": alias},
                # Each predictor also scores every request with the other alias, answering nothing:
                # canary or not, every labelled request pairs the two models (validation/shadow.py).
                {"name": "MNISTCL_SHADOW_ALIAS", "value": "challenger" if alias == "champion" else "champion"},
                {"name": "MNISTCL_MODEL_CACHE", "value": "/tmp/model-cache"},
                {"name": "MNISTCL_PREDICTIONS_DB",
                 "valueFrom": {"secretKeyRef": {"name": cfg["secrets"], "key": "MNISTCL_PREDICTIONS_DB"}}},
                # Who may send feedback (labeller:token entries); without it the server refuses feedback.
                {"name": "MNISTCL_FEEDBACK_TOKENS",
                 "valueFrom": {"secretKeyRef": {"name": cfg["secrets"], "key": "MNISTCL_FEEDBACK_TOKENS"}}},
            ],
            "ports": [{"name": "http", "containerPort": HTTP_PORT, "protocol": "TCP"},
                      {"name": "metrics", "containerPort": METRICS_PORT, "protocol": "TCP"}],
            "resources": cfg["resources"],
            "readinessProbe": {"httpGet": {"path": "/health/status", "port": HTTP_PORT},
                               "initialDelaySeconds": 5, "periodSeconds": 5, "failureThreshold": 3},
            "livenessProbe": {"httpGet": {"path": "/health/ping", "port": HTTP_PORT},
                              "initialDelaySeconds": 30, "periodSeconds": 15, "failureThreshold": 4},
            "securityContext": {"allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True,
                                "capabilities": {"drop": ["ALL"]}},
            "volumeMounts": [{"name": "tmp", "mountPath": "/tmp"}],
        }],
        "volumes": [{"name": "tmp", "emptyDir": {}}],
    }


def hpa_spec(cfg: dict, alias: str) -> dict | None:
    """Seldon's hpaSpec from ``autoscaling`` (None: a fixed number of replicas). The challenger
    (a canary's share of the traffic) starts from one pod."""
    a = cfg.get("autoscaling")
    if not a:
        return None
    lo, hi = int(a["min_replicas"]), int(a["max_replicas"])
    if not 1 <= lo <= hi:
        raise DeployError(f"autoscaling: need 1 <= min_replicas <= max_replicas, got {lo} and {hi}")
    # `metricsv2` (autoscaling/v2 MetricSpecs, which the 1.17 operator passes to the HPA as they are;
    # `metrics` is the older v2beta1 form). The model container's own CPU, not the pod's: Seldon's
    # executor and the Istio sidecar have requests of their own.
    metrics = [{"type": "ContainerResource", "containerResource": {
        "name": "cpu", "container": MODEL_CONTAINER,
        "target": {"type": "Utilization", "averageUtilization": int(a["cpu_utilization"])}}}]
    if a.get("requests_per_pod"):
        metrics.append({"type": "Pods", "pods": {"metric": {"name": "mnist_requests_per_second"}, "target": {
            "type": "AverageValue", "averageValue": str(a["requests_per_pod"])}}})
    return {"minReplicas": 1 if alias == "challenger" else lo, "maxReplicas": hi, "metricsv2": metrics}


def _predictor(cfg: dict, name: str, alias: str, version: str, traffic: int) -> dict:
    hpa = hpa_spec(cfg, alias)
    component = {"spec": _pod_spec(cfg, alias), **({"hpaSpec": hpa} if hpa else {})}
    return {
        "name": name,
        "replicas": hpa["minReplicas"] if hpa else int(cfg["replicas"]),
        "traffic": traffic,
        "labels": {"mnistcl/alias": alias, "mnistcl/model-version": version, **MODEL_SERVER_LABEL},
        "annotations": {"prometheus.io/scrape": "true", "prometheus.io/port": str(METRICS_PORT),
                        "prometheus.io/path": METRICS_PATH},
        "componentSpecs": [component],
        "graph": {"name": "classifier", "type": "MODEL", "endpoint": {"type": "REST", "httpPort": HTTP_PORT},
                  "children": []},
    }


def render(env: str, champion: str, challenger: str | None = None, *, path: Path | None = None,
           image: str | None = None) -> list[dict]:
    """The manifests for ``env``: the SeldonDeployment. Its ServiceAccount (with the IRSA role) and
    the settings it reads are Terraform's (infra/terraform/modules/addons), so that applying this
    never strips them. ``image`` overrides the config's serving image (the tag CI pushed)."""
    cfg = load_env(env, path)
    if image:
        cfg["image"] = image
    canary = int(cfg["canary_traffic"]) if challenger else 0
    predictors = [_predictor(cfg, "champion", "champion", champion, 100 - canary)]
    if challenger:
        predictors.append(_predictor(cfg, "challenger", "challenger", challenger, canary))
    labels = {"app.kubernetes.io/name": cfg["name"], "app.kubernetes.io/part-of": "mnist-continual",
              "mnistcl/env": env}
    sdep = {
        "apiVersion": "machinelearning.seldon.io/v1",
        "kind": "SeldonDeployment",
        "metadata": {"name": cfg["name"], "namespace": cfg["namespace"], "labels": labels,
                     "annotations": {"mnistcl/champion": champion, "mnistcl/challenger": challenger or ""}},
        "spec": {"protocol": "seldon", "transport": "rest", "predictors": predictors},
    }
    return [sdep]


def check_seldon_deployment(doc: dict) -> None:
    """Validate against the SeldonDeployment schema; every PodSpec against Kubernetes' own."""
    import jsonschema
    import kubernetes_validate

    try:
        jsonschema.validate(doc, json.loads(SCHEMA.read_text()))
    except jsonschema.ValidationError as exc:
        raise DeployError(f"SeldonDeployment invalid at {'/'.join(map(str, exc.absolute_path))}: {exc.message}") from None
    for p in doc["spec"]["predictors"]:
        for i, cs in enumerate(p.get("componentSpecs", [])):
            pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": f"{p['name']}-{i}"}, "spec": cs["spec"]}
            try:
                kubernetes_validate.validate(pod, kubernetes_validate.latest_version(), strict=True)
            except kubernetes_validate.ValidationError as exc:
                raise DeployError(f"predictor {p['name']} pod spec invalid: {exc.message}") from None


def dump(docs: list[dict[str, Any]]) -> str:
    return "---\n".join(yaml.safe_dump(d, sort_keys=False) for d in docs)
