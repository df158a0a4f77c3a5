"""Local Prefect: a server on 127.0.0.1, the two work pools, the deployments of prefect.yaml, a worker.

  mnistcl prefect up      server + pools + deployments + a process worker (kept running)

Work pools:
  mnistcl-local  process pool (the default): flows run as processes on this machine
  mnistcl-k8s    kubernetes pool (prefect-kubernetes): flows run as Kubernetes Jobs on GPU nodes,
                 base job template infra/k8s/base/prefect-gpu-job-template.json (generated here from
                 prefect-kubernetes's default template: GPU limit, toleration, node selector)
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from deployment.serve import wait_http_ok

ROOT = Path(__file__).resolve().parent.parent
PREFECT_YAML = ROOT / "prefect.yaml"
GPU_TEMPLATE = ROOT / "infra" / "k8s" / "base" / "prefect-gpu-job-template.json"
LOCAL_POOL = "mnistcl-local"
K8S_POOL = "mnistcl-k8s"
GPU_TOLERATION = {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}
GPU_NODE_LABEL = {"mnist-continual/pool": "gpu"}


SETTINGS_CONFIGMAP = "mnistcl-settings"  # MNISTCL_STORAGE_URL, MNISTCL_PUSHGATEWAY_URL (infra/k8s overlays)
SECRETS = "mnistcl-secrets"               # MNISTCL_PREDICTIONS_DB (and MNISTCL_SMTP_PASSWORD, WANDB_API_KEY)


SCRATCH = "/home/mnistcl/scratch"  # MNISTCL_HOME in the training image


def gpu_job_template() -> dict:
    """prefect-kubernetes's default base job template, plus a GPU: limit, toleration, node selector."""
    from prefect_kubernetes.worker import KubernetesWorker

    t = json.loads(json.dumps(KubernetesWorker.get_default_base_job_template()))
    pod = t["job_configuration"]["job_manifest"]["spec"]["template"]["spec"]
    container = pod["containers"][0]
    container["resources"]["limits"]["nvidia.com/gpu"] = "{{ gpu_limit }}"
    # The settings every flow needs on the cluster (registry, prediction log, Pushgateway): the
    # ConfigMap and Secret the Kustomize overlays describe (infra/k8s).
    container["envFrom"] = [{"configMapRef": {"name": SETTINGS_CONFIGMAP}}, {"secretRef": {"name": SECRETS}}]
    # The home is scratch (caches, a check's working copy, W&B runs until copied to the bucket):
    # an emptyDir the size of a few models and datasets. Nothing in it outlives the Job, and
    # nothing needs to: the image sets MNISTCL_REQUIRE_SHARED_STATE (infra/docker/train.Dockerfile).
    container["volumeMounts"] = [{"name": "scratch", "mountPath": SCRATCH}]
    pod["volumes"] = [{"name": "scratch", "emptyDir": {"sizeLimit": "20Gi"}}]
    pod["tolerations"] = [GPU_TOLERATION]
    pod["nodeSelector"] = dict(GPU_NODE_LABEL)
    props = t["variables"]["properties"]
    props["gpu_limit"] = {"type": "integer", "default": 1, "minimum": 0, "title": "GPUs",
                          "description": "NVIDIA GPUs for the flow run's pod (nvidia.com/gpu)."}
    props["image"]["default"] = "ghcr.io/mnist-continual/train:latest"
    props["service_account_name"]["default"] = "mnist-training"  # IRSA: read/write the bucket
    props["namespace"]["default"] = "mnist-prod"  # staging: --job-variable namespace=mnist-staging
    props["cpu_request"]["default"] = "4"
    props["memory_request"]["default"] = "16Gi"
    props["memory_limit"]["default"] = "32Gi"
    props["finished_job_ttl"]["default"] = 3600
    return t


def write_gpu_template(path: Path = GPU_TEMPLATE) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(gpu_job_template(), indent=2) + "\n")
    return path


def prefect_env(api_url: str, home: Path) -> dict[str, str]:
    return {**os.environ, "PREFECT_API_URL": api_url, "PREFECT_HOME": str(home),
            "PREFECT_SERVER_ANALYTICS_ENABLED": "false", "PREFECT_LOGGING_LEVEL": "WARNING",
            "PYTHONPATH": str(ROOT)}


def prefect_bin() -> str:
    return str(Path(sys.executable).parent / "prefect")


def start_server(home: Path, port: int, log: Path) -> subprocess.Popen:
    """``prefect server start`` on 127.0.0.1 with its SQLite database under ``home``."""
    env = {**prefect_env(f"http://127.0.0.1:{port}/api", home)}
    env.pop("PREFECT_API_URL")
    env["PREFECT_SERVER_API_HOST"] = "127.0.0.1"
    env["PREFECT_SERVER_API_PORT"] = str(port)
    env["PREFECT_UI_ENABLED"] = os.environ.get("PREFECT_UI_ENABLED", "true")
    home.mkdir(parents=True, exist_ok=True)
    return subprocess.Popen([prefect_bin(), "server", "start", "--host", "127.0.0.1", "--port", str(port)],
                            env=env, stdout=open(log, "w"), stderr=subprocess.STDOUT, start_new_session=True)


def wait_for_api(api_url: str, timeout: float = 240.0) -> bool:

    return wait_http_ok(f"{api_url}/health", timeout, interval=0.5)


def _prefect(args: list[str], api_url: str, home: Path, check: bool = True) -> subprocess.CompletedProcess:
    out = subprocess.run([prefect_bin(), *args], env=prefect_env(api_url, home), cwd=ROOT, capture_output=True,
                         text=True, timeout=300)
    if check and out.returncode:
        raise RuntimeError(f"prefect {' '.join(args)} failed ({out.returncode}):\n{out.stdout[-3000:]}\n{out.stderr[-3000:]}")
    return out


def create_pools(api_url: str, home: Path, kubernetes: bool = True) -> None:
    _prefect(["work-pool", "create", LOCAL_POOL, "--type", "process", "--overwrite"], api_url, home)
    if kubernetes:
        _prefect(["work-pool", "create", K8S_POOL, "--type", "kubernetes", "--base-job-template", str(GPU_TEMPLATE),
                  "--overwrite"], api_url, home)


def deploy(api_url: str, home: Path, names: list[str] | None = None) -> str:
    """``prefect deploy`` of prefect.yaml's deployments (all local ones by default)."""
    names = names or ["train", "monitor", "retrain", "judge", "retention"]
    args = ["--no-prompt", "deploy", "--prefect-file", str(PREFECT_YAML)]
    for n in names:
        args += ["--name", n]
    return _prefect(args, api_url, home).stdout


def start_worker(api_url: str, home: Path, log: Path, pool: str = LOCAL_POOL,
                 env: dict[str, str] | None = None) -> subprocess.Popen:
    """A worker on ``pool``; ``env`` (e.g. MNISTCL_* settings) reaches every flow run it starts."""
    return subprocess.Popen([prefect_bin(), "worker", "start", "--pool", pool],
                            env={**prefect_env(api_url, home), **(env or {})}, cwd=ROOT,
                            stdout=open(log, "w"), stderr=subprocess.STDOUT, start_new_session=True)
