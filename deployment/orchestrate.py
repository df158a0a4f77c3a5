"""Local Prefect: a server on 127.0.0.1, the two work pools, the deployments of prefect.yaml, a worker.

  mnistcl prefect up      server + pools + deployments + a process worker (kept running)

Work pools:
  mnistcl-local  process pool (the default): flows run as processes on this machine
  mnistcl-k8s    kubernetes pool (prefect-kubernetes): flows run as Kubernetes Jobs on GPU nodes,
                 base job template infra/k8s/prefect-gpu-job-template.json (generated here from
                 prefect-kubernetes's default template: GPU limit, toleration, node selector)
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
from pathlib import Path

from deployment.serve import wait_http_ok
from mnistcl.credentials import local_secret

ROOT = Path(__file__).resolve().parent.parent
PREFECT_YAML = ROOT / "prefect.yaml"
GPU_TEMPLATE = ROOT / "infra" / "k8s" / "prefect-gpu-job-template.json"
LOCAL_POOL = "mnistcl-local"
K8S_POOL = "mnistcl-k8s"
GPU_TOLERATION = {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}
GPU_NODE_LABEL = {"mnist-continual/pool": "gpu"}


SETTINGS_CONFIGMAP = "mnistcl-settings"  # Terraform (modules/addons): registry, Pushgateway, Prefect API URL, namespace
SECRETS = "mnistcl-secrets"               # the operator: MNISTCL_PREDICTIONS_DB, MNISTCL_EXPERIMENTS_DB, relay token, ...
PREFECT_AUTH_SECRET = "prefect-auth"      # Terraform: PREFECT_API_AUTH_STRING, what the cluster's Prefect server checks
TRAIN_IMAGE_ENV = "MNISTCL_TRAIN_IMAGE"   # prefect.yaml's -k8s deployments run this image (<registry>/mnist-continual/train:<sha>)


SCRATCH = "/home/mnistcl/scratch"  # MNISTCL_HOME in the training image
# What a g5.xlarge (4 vCPU, 16 GiB, 1 A10G) offers a pod once the kubelet's reservation and the
# daemonsets (aws-node, kube-proxy, ebs-csi-node, the device plugin, eks-pod-identity-agent) have
# theirs: about 3.9 CPU and 14.5 GiB allocatable, ~0.4 CPU and ~0.6 GiB of it to daemonsets. A
# request must fit what is left, or the Job never schedules.
JOB_CPU_REQUEST, JOB_MEMORY_REQUEST, JOB_MEMORY_LIMIT = "3", "12Gi", "13Gi"


def gpu_job_template() -> dict:
    """prefect-kubernetes's default base job template, plus a GPU (limit, toleration, node
    selector), the cluster's settings, a scratch home, no Istio sidecar, and requests that fit a
    g5.xlarge. The namespace default is the environment's: Terraform sets it when it hands this
    template to the worker chart (modules/job_template)."""
    from prefect_kubernetes.worker import KubernetesWorker

    t = json.loads(json.dumps(KubernetesWorker.get_default_base_job_template()))
    job = t["job_configuration"]["job_manifest"]["spec"]
    pod = job["template"]["spec"]
    # prefect-kubernetes puts these two Job fields inside the pod spec, where Kubernetes drops them.
    for key in ("completions", "parallelism"):
        if key in pod:
            job[key] = pod.pop(key)
    # The flow-run namespace has Istio injection (the model pods need it): a sidecar would keep the
    # Job's pod running after the flow ends, so the Job never completes.
    job["template"]["metadata"] = {"annotations": {"sidecar.istio.io/inject": "false"}}
    container = pod["containers"][0]
    container["resources"]["limits"]["nvidia.com/gpu"] = "{{ gpu_limit }}"
    # The settings every flow needs on the cluster (registry, prediction log, Pushgateway, Prefect):
    # the ConfigMap and the Secrets Terraform and the operator create (docs/kubernetes.md).
    container["envFrom"] = [{"configMapRef": {"name": SETTINGS_CONFIGMAP}}, {"secretRef": {"name": SECRETS}},
                            {"secretRef": {"name": PREFECT_AUTH_SECRET}}]
    # The home is scratch (caches, a check's working copy, W&B runs until copied to the bucket):
    # an emptyDir the size of a few models and datasets. Nothing in it outlives the Job, and
    # nothing needs to: the image sets MNISTCL_REQUIRE_SHARED_STATE (infra/docker/train.Dockerfile).
    container["volumeMounts"] = [{"name": "scratch", "mountPath": SCRATCH}]
    pod["volumes"] = [{"name": "scratch", "emptyDir": {"sizeLimit": "20Gi"}}]
    # GPU flows (training, retraining) land on the tainted GPU nodes; the others (monitor, judge,
    # retention: prefect.yaml) set these to the CPU pool, so that a check every 5 minutes never
    # starts or keeps a GPU node.
    pod["tolerations"] = "{{ tolerations }}"
    pod["nodeSelector"] = "{{ node_selector }}"
    props = t["variables"]["properties"]
    props["gpu_limit"] = {"type": "integer", "default": 1, "minimum": 0, "title": "GPUs",
                          "description": "NVIDIA GPUs for the flow run's pod (nvidia.com/gpu)."}
    props["node_selector"] = {"type": "object", "default": dict(GPU_NODE_LABEL), "title": "Node selector",
                              "description": "Which node pool runs the flow (mnist-continual/pool: gpu or cpu)."}
    props["tolerations"] = {"type": "array", "default": [GPU_TOLERATION], "title": "Tolerations",
                            "description": "The GPU nodes' taint is tolerated by GPU flows only."}
    props["service_account_name"]["default"] = "mnist-training"  # IRSA: read/write the bucket
    props["cpu_request"]["default"] = JOB_CPU_REQUEST
    props["memory_request"]["default"] = JOB_MEMORY_REQUEST
    props["memory_limit"]["default"] = JOB_MEMORY_LIMIT
    props["finished_job_ttl"]["default"] = 3600
    return t


def write_gpu_template(path: Path = GPU_TEMPLATE) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(gpu_job_template(), indent=2) + "\n")
    return path


LOCAL_AUTH_SECRET = "prefect-auth"  # the local server's: <prefect home>/secrets/prefect-auth


def auth_string(home: Path) -> str:
    """The local server's basic-auth ``admin:<random>``, generated once into ``<home>/secrets``
    (the server, the worker, every flow run and the CLI read it from there)."""
    return local_secret(home, LOCAL_AUTH_SECRET, make=lambda: "admin:" + secrets.token_urlsafe(24))


def api_http(api_url: str, home: Path, timeout: float = 10.0):
    """An httpx client for plain HTTP calls to the local server kept in ``home``, as every client
    must talk to it: its basic-auth string and a CSRF token."""
    import uuid

    import httpx

    auth = tuple(auth_string(home).split(":", 1))
    cid = uuid.uuid4().hex
    token = httpx.get(f"{api_url.rstrip('/')}/csrf-token", params={"client": cid}, auth=auth, timeout=timeout)
    token.raise_for_status()  # fetched apart: a client used once cannot be entered with `with` afterwards
    return httpx.Client(auth=auth, timeout=timeout,
                        headers={"Prefect-Csrf-Token": token.json()["token"], "Prefect-Csrf-Client": cid})


def prefect_env(api_url: str, home: Path) -> dict[str, str]:
    """A Prefect client's environment for the local server kept in ``home``: its API, its auth
    string, CSRF tokens fetched (the server enforces them)."""
    return {**os.environ, "PREFECT_API_URL": api_url, "PREFECT_HOME": str(home),
            "PREFECT_API_AUTH_STRING": auth_string(home), "PREFECT_CLIENT_CSRF_SUPPORT_ENABLED": "true",
            "PREFECT_SERVER_ANALYTICS_ENABLED": "false", "PREFECT_LOGGING_LEVEL": "WARNING",
            "PYTHONPATH": str(ROOT)}


def prefect_bin() -> str:
    return str(Path(sys.executable).parent / "prefect")


def start_server(home: Path, port: int, log: Path) -> subprocess.Popen:
    """``prefect server start`` on 127.0.0.1 with its SQLite database under ``home``, requiring
    the basic-auth string of :func:`auth_string` on every API call but the health probe, and with
    CSRF protection on (a web page cannot drive it through the browser of whoever has it open)."""
    env = {**prefect_env(f"http://127.0.0.1:{port}/api", home)}
    env.pop("PREFECT_API_URL")
    env["PREFECT_SERVER_API_AUTH_STRING"] = env["PREFECT_API_AUTH_STRING"]
    env["PREFECT_SERVER_CSRF_PROTECTION_ENABLED"] = "true"
    env["PREFECT_SERVER_API_HOST"] = "127.0.0.1"
    env["PREFECT_SERVER_API_PORT"] = str(port)
    env["PREFECT_UI_ENABLED"] = os.environ.get("PREFECT_UI_ENABLED", "true")
    home.mkdir(parents=True, exist_ok=True)
    return subprocess.Popen([prefect_bin(), "server", "start", "--host", "127.0.0.1", "--port", str(port)],
                            env=env, stdout=open(log, "w"), stderr=subprocess.STDOUT, start_new_session=True)


def wait_for_api(api_url: str, timeout: float = 240.0) -> bool:

    return wait_http_ok(f"{api_url}/health", timeout, interval=0.5)


def _prefect(args: list[str], api_url: str, home: Path, check: bool = True,
            extra_env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    out = subprocess.run([prefect_bin(), *args], env={**prefect_env(api_url, home), **(extra_env or {})}, cwd=ROOT,
                         capture_output=True,
                         text=True, timeout=300)
    if check and out.returncode:
        raise RuntimeError(f"prefect {' '.join(args)} failed ({out.returncode}):\n{out.stdout[-3000:]}\n{out.stderr[-3000:]}")
    return out


def create_pools(api_url: str, home: Path, kubernetes: bool = True) -> None:
    _prefect(["work-pool", "create", LOCAL_POOL, "--type", "process", "--overwrite"], api_url, home)
    if kubernetes:
        _prefect(["work-pool", "create", K8S_POOL, "--type", "kubernetes", "--base-job-template", str(GPU_TEMPLATE),
                  "--overwrite"], api_url, home)


def deploy(api_url: str, home: Path, names: list[str] | None = None, *, train_image: str | None = None) -> str:
    """``prefect deploy`` of prefect.yaml's deployments (all local ones by default). The -k8s ones
    run the training image named by ``train_image`` (or $MNISTCL_TRAIN_IMAGE): refused without it,
    since prefect.yaml would otherwise store the placeholder as the image."""
    names = names or ["train", "trial", "monitor", "retrain", "judge", "retention"]
    image = train_image or os.environ.get(TRAIN_IMAGE_ENV, "")
    if any(n.endswith("-k8s") for n in names) and not image:
        raise ValueError(f"the -k8s deployments need the training image: set {TRAIN_IMAGE_ENV}="
                         "<registry>/mnist-continual/train:<commit> (the tag CI pushed)")
    args = ["--no-prompt", "deploy", "--prefect-file", str(PREFECT_YAML)]
    for n in names:
        args += ["--name", n]
    return _prefect(args, api_url, home, extra_env={TRAIN_IMAGE_ENV: image} if image else None).stdout


def start_worker(api_url: str, home: Path, log: Path, pool: str = LOCAL_POOL,
                 env: dict[str, str] | None = None, limit: int | None = None) -> subprocess.Popen:
    """A worker on ``pool``; ``env`` (e.g. MNISTCL_* settings) reaches every flow run it starts;
    ``limit``: at most this many of its flow runs at once (None: no limit)."""
    return subprocess.Popen([prefect_bin(), "worker", "start", "--pool", pool,
                             *(["--limit", str(limit)] if limit else [])],
                            env={**prefect_env(api_url, home), **(env or {})}, cwd=ROOT,
                            stdout=open(log, "w"), stderr=subprocess.STDOUT, start_new_session=True)
