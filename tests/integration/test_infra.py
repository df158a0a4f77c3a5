"""Infrastructure as code, offline, and every wiring fact a first `terraform apply` and
`kubectl apply -k` depend on, checked on the rendered output:

- Terraform fmt/validate (modules with the aws provider from the local mirror), and a real
  `terraform apply`, plan (no changes) and destroy of an environment's AWS side against moto's
  server on 127.0.0.1;
- Kustomize overlays rendered and validated; generated files in sync with their sources;
- the Istio Gateway exists and is the one the Seldon operator binds VirtualServices to, selecting
  the ingress pods the gateway chart labels; the PodMonitor scrapes the path the operator injects;
- the flow Jobs' pod template has no Istio sidecar and runs in the environment's namespace;
- the AlertmanagerConfig keeps the relay's token after Kustomize; every image is one CI pushes;
  every Secret, ConfigMap and ServiceAccount a pod or chart names is created (or documented);
- checkov with every skip explained, and the GitHub workflows against their schema.

What cannot be checked here (no cluster, no AWS account) is listed in docs/kubernetes.md.
"""

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "infra"))
import check  # noqa: E402  (infra/check.py: the same code CI runs)

pytestmark = [pytest.mark.integration, pytest.mark.slow]

INFRA_VENV = ROOT / ".venv-infra" / "bin"
TF = ROOT / "infra" / "terraform"
ADDONS = TF / "modules" / "addons"
ENVS = ("staging", "prod")


def need(binary: str):
    if not (shutil.which(binary) or (INFRA_VENV / binary).exists()):
        pytest.skip(f"{binary} is not installed (make venv-infra / the Debian package)")


def addons_text() -> str:
    return "".join(p.read_text() for p in sorted(ADDONS.glob("*.tf")))


def tf_default(module: Path, variable: str) -> str:
    """A variable's string default, read from the module's variables.tf."""
    text = (module / "variables.tf").read_text()
    block = re.search(rf'variable "{variable}" {{(.*?)\n}}', text, re.S)
    assert block, f"{module.name}: no variable {variable}"
    return re.search(r'default\s*=\s*"([^"]*)"', block.group(1)).group(1)


def rendered(env: str) -> list[dict]:
    need("kubectl")
    return check.render(env)


def pods_of(docs: list[dict]) -> list[tuple[str, dict]]:
    """(owner, pod spec) for every pod template in the rendered overlay, the SeldonDeployment's too."""
    out = []
    for d in docs:
        if d["kind"] in ("Deployment", "StatefulSet", "Job"):
            out.append((f"{d['kind']}/{d['metadata']['name']}", d["spec"]["template"]["spec"]))
        elif d["kind"] == "SeldonDeployment":
            for p in d["spec"]["predictors"]:
                for cs in p["componentSpecs"]:
                    out.append((f"SeldonDeployment/{p['name']}", cs["spec"]))
    return out


def env_of(container: dict) -> list[dict]:
    env = container.get("env")
    return env if isinstance(env, list) else []  # the job template's env is "{{ env }}"


def job_pod(template: dict) -> dict:
    return template["job_configuration"]["job_manifest"]["spec"]["template"]


# ------------------------------------------------------------------ generated files, Terraform
def test_generated_kubernetes_files_match_their_sources():
    from deployment import k8s

    stale = [str(p.relative_to(ROOT)) for p, text in k8s.generated().items() if not p.exists() or p.read_text() != text]
    assert not stale, f"run `python -m deployment.k8s`; stale: {stale}"
    rule = yaml.safe_load((ROOT / "infra/k8s/base/prometheusrule.yaml").read_text())
    assert rule["spec"]["groups"] == yaml.safe_load((ROOT / "monitoring/prometheus/rules.yml").read_text())["groups"]


def test_terraform_fmt_and_offline_validate():
    need("terraform")
    report = check.check_terraform()
    validated = {r["root"] for r in report["validated"]}
    if report["mirror"]:
        assert validated == {"modules/network", "modules/eks", "modules/storage", "modules/irsa", "modules/kms",
                             "modules/ecr", "modules/job_template"}
        assert {r["root"] for r in report["fmt_only"]} == {"modules/addons", "envs/staging", "envs/prod"}
    assert not list(TF.rglob(".terraform")), "init must not write into the repository"


def test_terraform_layout_one_file_per_kind():
    for module in (TF / "modules").iterdir():
        names = {p.name for p in module.glob("*.tf")}
        assert {"variables.tf", "outputs.tf", "versions.tf"} <= names, module
    for env in ENVS:
        text = "".join(p.read_text() for p in (TF / "envs" / env).glob("*.tf"))
        for m in ("network", "eks", "storage", "irsa", "addons"):
            assert re.search(rf'source\s*=\s*"\.\./\.\./modules/{m}"', text), (env, m)
        # The account's image repositories are made by one root only: two would clash on their names.
        assert bool(re.search(r'source\s*=\s*"\.\./\.\./modules/ecr"', text)) is (env == "staging"), env
        # Nothing in the cluster before its node groups and core add-ons exist.
        assert re.search(r'module "addons" \{.*?depends_on\s*=\s*\[module\.eks\]', text, re.S), env
        # Each environment's pods read its own bucket, the one Terraform creates.
        assert "store_url                   = module.storage.store_url" in text, env
    eks = (TF / "modules/eks/nodegroups.tf").read_text()
    assert re.search(r'effect\s*=\s*"NO_SCHEDULE"', eks) and re.search(r'"mnist-continual/pool"\s*=\s*"gpu"', eks)
    s3 = (TF / "modules/storage/s3.tf").read_text()
    assert re.search(r"block_public_policy\s*=\s*true", s3) and re.search(r'status\s*=\s*"Enabled"', s3) and "aws:kms" in s3


def test_eks_version_and_istio_release_are_supported_together():
    """EKS 1.31's extended support ended 2026-11-26; Istio 1.30 supports Kubernetes 1.32-1.36."""
    k8s_minor = int(tf_default(TF / "modules/eks", "kubernetes_version").split(".")[1])
    istio = tuple(int(x) for x in tf_default(ADDONS, "istio_version").split(".")[:2])
    assert k8s_minor >= 33
    supported = {(1, 29): range(31, 36), (1, 30): range(32, 37), (1, 31): range(32, 37)}  # istio.io release notes
    assert k8s_minor in supported[istio], (istio, k8s_minor)


def test_terraform_applies_plans_clean_and_destroys_against_moto():
    """A real `terraform apply` of an environment's AWS side (network, kms, storage, irsa, eks, ecr:
    envs/staging less cluster.tf) against moto's server on 127.0.0.1, a second plan with no changes,
    then destroy leaving nothing. moto has no EKS add-on or access-entry API (listed in the report)."""
    need("terraform")
    pytest.importorskip("moto")
    if not check.mirror():
        pytest.skip("the hashicorp/aws provider's filesystem mirror is not on this machine")
    report = check.check_apply("staging")
    assert report["resources"] >= 50, report
    assert report["plan_after_apply"] == "no changes" and report["destroyed"] is True
    assert {"aws_eks_addon", "aws_eks_access_entry"} <= set(report["excluded"])


# ------------------------------------------------------------------ rendered manifests
def test_kustomize_overlays_render_and_validate(tmp_path):
    need("kubectl")
    report = check.check_manifests(tmp_path)
    for env in ENVS:
        assert {"Deployment/mnist-relay", "Service/mnist-relay", "NetworkPolicy/mnist-relay",
                "ConfigMap/mnist-grafana-dashboard"} <= set(report[env]["built_in"])
        assert {"SeldonDeployment/mnist-continual", "PrometheusRule/mnist-continual", "PodMonitor/mnist-model-server",
                "AlertmanagerConfig/mnist-continual", "Gateway/mnist-gateway"} <= set(report[env]["custom"])
        docs = list(yaml.safe_load_all((tmp_path / f"{env}.yaml").read_text()))
        assert {d["metadata"].get("namespace") for d in docs} == {f"mnist-{env}"}
        # Terraform owns the namespaces (with Istio injection): the overlays never create one.
        assert not [d for d in docs if d["kind"] == "Namespace"]


def test_the_gateway_seldon_binds_to_exists_and_selects_the_ingress_pods():
    """Seldon's istio.gateway names <namespace>/<name> of a Gateway the overlay creates; its
    selector is the label the istio `gateway` chart gives a release named istio-ingressgateway
    (`istio: <release name without istio->`, manifests/charts/gateway/templates/_helpers.tpl)."""
    seldon = (ADDONS / "helm_seldon.tf").read_text()
    assert 'gateway = "${var.namespace}/${var.gateway_name}"' in seldon
    release = re.search(r'resource "helm_release" "istio_ingress" \{\s*name\s*=\s*"([^"]+)"', addons_text()).group(1)
    for env in ENVS:
        (gw,) = [d for d in rendered(env) if d["kind"] == "Gateway"]
        assert (gw["metadata"]["namespace"], gw["metadata"]["name"]) == (f"mnist-{env}", tf_default(ADDONS, "gateway_name"))
        assert gw["spec"]["selector"] == {"istio": release.removeprefix("istio-")}
        assert any(s["port"]["protocol"] == "HTTP" and "*" in s["hosts"] for s in gw["spec"]["servers"])


def test_podmonitor_scrapes_the_endpoint_the_operator_injects():
    """Seldon's operator injects PREDICTIVE_UNIT_METRICS_ENDPOINT=<executor.prometheus.path> into
    the model container, whose wrapper serves metrics there on the port named `metrics`."""
    from deployment.deploy import METRICS_PATH

    helm_path = re.search(r'executor\s*=\s*\{\s*prometheus\s*=\s*\{\s*path\s*=\s*"([^"]+)"', addons_text()).group(1)
    assert helm_path == METRICS_PATH == "/prometheus"
    for env in ENVS:
        docs = rendered(env)
        (pm,) = [d for d in docs if d["kind"] == "PodMonitor"]
        (sdep,) = [d for d in docs if d["kind"] == "SeldonDeployment"]
        (endpoint,) = pm["spec"]["podMetricsEndpoints"]
        assert endpoint["path"] == METRICS_PATH
        container = sdep["spec"]["predictors"][0]["componentSpecs"][0]["spec"]["containers"][0]
        assert endpoint["port"] in {p["name"] for p in container["ports"]}
        assert pm["spec"]["selector"]["matchLabels"] == {"seldon-deployment-id": sdep["metadata"]["name"]}
        # If the container set the endpoint itself, the scrape path would have to follow it.
        assert "PREDICTIVE_UNIT_METRICS_ENDPOINT" not in {e["name"] for e in container["env"]}


def test_flow_jobs_have_no_sidecar_fit_a_gpu_node_and_run_in_their_environment():
    """The template Terraform gives the worker chart: modules/job_template applied for real."""
    need("terraform")
    from deployment.orchestrate import GPU_TEMPLATE, gpu_job_template

    assert json.loads(GPU_TEMPLATE.read_text()) == gpu_job_template()
    for env in ENVS:
        t = check.job_template_for(f"mnist-{env}")
        pod = job_pod(t)
        assert pod["metadata"]["annotations"]["sidecar.istio.io/inject"] == "false"
        job = t["job_configuration"]["job_manifest"]
        assert job["metadata"]["namespace"] == "{{ namespace }}"
        assert t["variables"]["properties"]["namespace"]["default"] == f"mnist-{env}"
        assert "completions" not in pod["spec"] and job["spec"]["completions"] == 1
        props = t["variables"]["properties"]
        # A g5.xlarge offers ~3.9 CPU and ~14.5 GiB allocatable, some of it to daemonsets.
        assert float(props["cpu_request"]["default"]) <= 3.5
        assert int(props["memory_limit"]["default"].removesuffix("Gi")) <= 14
    text = (TF / "envs/prod/cluster.tf").read_text()
    assert 'file("${path.module}/../../../k8s/prefect-gpu-job-template.json")' in text
    assert "baseJobTemplate = { configuration = module.job_template.json }" in addons_text()


def test_flows_without_a_gpu_run_on_the_cpu_nodes():
    """The job as prefect-kubernetes fills it in (Prefect's own templating): training (each AutoML
    trial, a retraining) asks for the GPU pool; the sweep that fans its trials out, monitor (every
    5 minutes), judge and retention ask for the CPU pool and little CPU, so they never start or keep
    a GPU node."""
    from prefect.utilities.templating import apply_values

    from deployment.orchestrate import gpu_job_template

    t = gpu_job_template()
    defaults = {k: v["default"] for k, v in t["variables"]["properties"].items() if "default" in v}
    deployments = {d["name"]: d for d in yaml.safe_load((ROOT / "prefect.yaml").read_text())["deployments"]}
    for name, gpu in (("trial-k8s", True), ("retrain-k8s", True), ("train-k8s", False), ("monitor-k8s", False),
                      ("judge-k8s", False), ("retention-k8s", False)):
        values = {**defaults, **deployments[name]["work_pool"].get("job_variables", {}), "image": "x"}
        pod = apply_values(t["job_configuration"], values)["job_manifest"]["spec"]["template"]["spec"]
        container = pod["containers"][0]
        assert pod["nodeSelector"] == {"mnist-continual/pool": "gpu" if gpu else "cpu"}, name
        assert bool(pod["tolerations"]) is gpu and (container["resources"]["limits"]["nvidia.com/gpu"] > 0) is gpu, name
        if not gpu:
            assert container["resources"]["requests"]["cpu"] == ("2" if name == "train-k8s" else "500m"), name


def test_every_aggregated_alert_keeps_its_namespace():
    """With OnNamespace routing, an alert without a namespace label reaches no receiver: every
    sum in the rules keeps `namespace`."""
    rules = [r for g in yaml.safe_load((ROOT / "monitoring/prometheus/rules.yml").read_text())["groups"]
             for r in g["rules"]]
    for r in rules:
        for clause in re.findall(r"\bsum\b\s*(by\s*\([^)]*\))?", r["expr"]):
            assert "namespace" in clause, (r.get("record") or r.get("alert"), r["expr"])


def test_alertmanager_config_keeps_the_relay_token_and_routes_only_its_namespace():
    for env in ENVS:
        (amc,) = [d for d in rendered(env) if d["kind"] == "AlertmanagerConfig"]
        receivers = {r["name"]: r for r in amc["spec"]["receivers"]}
        (hook,) = receivers["prefect-relay"]["webhookConfigs"]
        assert hook["httpConfig"]["authorization"] == {
            "type": "Bearer", "credentials": {"name": "mnistcl-secrets", "key": "MNISTCL_RELAY_TOKEN"}}
        # Alertmanager runs in `monitoring`: the relay by its cluster DNS name, in this environment.
        assert hook["url"] == f"http://mnist-relay.mnist-{env}.svc:9095/"
        assert receivers["data-scientist-email"]["emailConfigs"][0]["to"]
    # OnNamespace: this environment's AlertmanagerConfig only sees alerts labelled with its namespace.
    assert 'alertmanagerConfigMatcherStrategy = { type = "OnNamespace" }' in addons_text()


def test_every_image_is_one_ci_pushes():
    """Overlays name the ECR repositories (modules/ecr); ci.yml builds and pushes both with the
    commit as the tag, and deploy.yml sets exactly that tag before applying."""
    prefix = tf_default(TF / "modules/ecr", "prefix")
    repos = set(re.search(r'default\s*=\s*\[([^\]]*)\]', (TF / "modules/ecr/variables.tf").read_text().split(
        'variable "repositories"')[1]).group(1).replace('"', "").replace(" ", "").split(","))
    assert repos == {"serving", "train"}
    for env in ENVS:
        images = {c["image"] for _, pod in pods_of(rendered(env)) for c in pod["containers"]}
        assert images == {f"{prefix}/serving:unreleased", f"{prefix}/train:unreleased"}, images
    ci = (ROOT / ".github/workflows/ci.yml").read_text()
    assert "for image in serving train; do" in ci and 'ref="${ECR_REGISTRY:-local}/mnist-continual/${image}:${{ github.sha }}"' in ci
    assert 'docker push "$ref"' in ci
    deploy = (ROOT / ".github/workflows/deploy.yml").read_text()
    for repo in repos:
        assert f'"{prefix}/{repo}=$ECR_REGISTRY/{prefix}/{repo}:$IMAGE_TAG"' in deploy
        assert f'--repository-name "{prefix}/$image"' in deploy
    assert "MNISTCL_TRAIN_IMAGE: ${{ vars.ECR_REGISTRY }}/mnist-continual/train:${{ env.IMAGE_TAG }}" in deploy
    prefect = yaml.safe_load((ROOT / "prefect.yaml").read_text())
    k8s_images = {d["work_pool"]["job_variables"]["image"] for d in prefect["deployments"] if d["name"].endswith("-k8s")}
    assert k8s_images == {"{{ $MNISTCL_TRAIN_IMAGE }}"}
    tracked = subprocess.run(["git", "ls-files", "infra", ".github", "configs", "prefect.yaml"], cwd=ROOT,
                             capture_output=True, text=True).stdout.split()
    assert not [f for f in tracked if ":latest" in (ROOT / f).read_text(errors="ignore")]


def secret_refs(docs: list[dict], template: dict) -> set[str]:
    names = set()
    for _, pod in [*pods_of(docs), ("job", job_pod(template)["spec"])]:
        for c in pod["containers"]:
            names |= {e["valueFrom"]["secretKeyRef"]["name"] for e in env_of(c) if "secretKeyRef" in e.get("valueFrom", {})}
            names |= {e["secretRef"]["name"] for e in c.get("envFrom", []) if "secretRef" in e}
        names |= {v["secret"]["secretName"] for v in pod.get("volumes", []) if "secret" in v}
    for d in docs:
        if d["kind"] == "AlertmanagerConfig":
            names |= {w["httpConfig"]["authorization"]["credentials"]["name"] for r in d["spec"]["receivers"]
                      for w in r.get("webhookConfigs", [])}
    return names


def test_every_secret_configmap_and_service_account_named_is_created_or_documented():
    from deployment.orchestrate import gpu_job_template

    addons = addons_text()
    made_secrets = set(re.findall(r'resource "kubernetes_secret_v1" "\w+" \{.*?name\s*=\s*"([^"]+)"', addons, re.S))
    made_configmaps = set(re.findall(r'resource "kubernetes_config_map_v1" "\w+" \{.*?name\s*=\s*"([^"]+)"', addons, re.S))
    made_accounts = set(re.findall(r'resource "kubernetes_service_account_v1" "\w+" \{.*?name\s*=\s*"([^"]+)"', addons, re.S))
    runbook = (ROOT / "docs/kubernetes.md").read_text()
    settings_keys = set(re.findall(r"^\s+([A-Z_]+)\s*=", addons.split('resource "kubernetes_config_map_v1" "settings"')[1]
                                   .split("\n}\n")[0], re.M))
    for env in ENVS:
        docs = rendered(env)
        for name in secret_refs(docs, gpu_job_template()):
            # Terraform's (values from TF_VAR_*), or the operator's, named with its keys in the runbook.
            assert name in made_secrets or f"`{name}`" in runbook, f"Secret {name} is created by nothing"
        for owner, pod in [*pods_of(docs), ("job", job_pod(gpu_job_template())["spec"])]:
            for c in pod["containers"]:
                for e in env_of(c):
                    ref = e.get("valueFrom", {}).get("configMapKeyRef")
                    if ref:
                        assert ref["name"] in made_configmaps and ref["key"] in settings_keys, (owner, ref)
                for e in c.get("envFrom", []):
                    if "configMapRef" in e:
                        assert e["configMapRef"]["name"] in made_configmaps, owner
            account = pod.get("serviceAccountName")
            if account and not account.startswith("{{"):
                assert account in made_accounts, (owner, account)
    assert "mnist-training" in made_accounts and gpu_job_template()["variables"]["properties"][
        "service_account_name"]["default"] == "mnist-training"
    # Every Secret a chart is told to use is one Terraform creates.
    for ref in re.findall(r"existingSecret\s*=\s*kubernetes_secret_v1\.(\w+)", addons):
        assert f'resource "kubernetes_secret_v1" "{ref}"' in addons
    assert "secrets = [kubernetes_secret_v1.alertmanager_smtp.metadata[0].name]" in addons
    # Both service accounts carry their IRSA role, whose trust names this namespace and account.
    irsa = (TF / "modules/irsa/iam.tf").read_text()
    for account in ("mnist-training", "mnist-serving"):
        assert f'service_account = "{account}"' in irsa


# ------------------------------------------------------------------ failure detection, tools, workflows
def test_a_broken_manifest_is_caught(tmp_path, monkeypatch):
    need("kubectl")
    bad = tmp_path / "k8s"
    shutil.copytree(ROOT / "infra/k8s", bad)
    relay = bad / "base/relay.yaml"
    relay.write_text(relay.read_text().replace("containerPort: 9095", "containerPort: nine"))
    monkeypatch.setattr(check, "K8S", bad)
    with pytest.raises(check.CheckError, match="mnist-relay invalid"):
        check.check_manifests(tmp_path / "out")


def test_checkov_passes_with_every_skip_explained(tmp_path):
    need("checkov")
    need("kubectl")
    check.check_manifests(tmp_path)
    report = check.check_checkov(tmp_path)
    for framework in ("terraform", "kubernetes"):
        assert report[framework]["failed"] == 0 and report[framework]["passed"] > 50
        for skip in report[framework]["skipped"]:
            assert len(skip.split(": ", 1)[1]) > 30, f"a skip without a reason: {skip}"


def test_workflows_validate_and_promotion_waits_smokes_and_rolls_back():
    need("check-jsonschema")
    assert check.check_workflows()["valid"] == ["ci.yml", "deploy.yml", "promote.yml"]
    promote = yaml.safe_load((ROOT / ".github/workflows/promote.yml").read_text())
    triggers = promote[True] if True in promote else promote["on"]  # YAML reads `on` as true
    assert "workflow_dispatch" in triggers and triggers["repository_dispatch"]["types"] == ["promote-model"]
    jobs = promote["jobs"]
    assert jobs["production"]["environment"] == "production" and jobs["production"]["needs"] == "staging"
    runs = {name: [s.get("run", "") for s in job["steps"]] for name, job in jobs.items()}
    # Waits for the operator's rollout, not only for a SeldonDeployment that may already be Available.
    for job in ("staging", "production"):
        assert any("wait-rollout.sh" in r for r in runs[job]), job
    script = (ROOT / ".github/scripts/wait-rollout.sh").read_text()
    assert "rollout status" in script and "mnist-continual-${predictor}-0-classifier" in script
    # The canary itself answers, from this version only.
    canary = next(r for r in runs["staging"] if "svc/mnist-continual-challenger" in r)
    assert '--expect-version "$MODEL_VERSION"' in canary
    # Production: copy, gate, canary, then the champion alias, smoke; a failure restores the champion.
    steps = [s.get("name", "") for s in jobs["production"]["steps"]]
    order = [next(i for i, n in enumerate(steps) if n.startswith(p)) for p in (
        "Copy the version", "Gate against production", "Canary in production", "Champion alias", "Smoke test", "Roll back")]
    assert order == sorted(order)
    rollback = jobs["production"]["steps"][order[-1]]
    assert "failure()" in rollback["if"] and "steps.canary.conclusion != 'skipped'" in rollback["if"]
    assert 'previous="${{ steps.copy.outputs.previous }}"' in rollback["run"]
    assert '"$previous" --alias champion' in rollback["run"] and "models unset" in rollback["run"]
    # The staging canary is removed afterwards, whatever happened, and both workflows share one lock.
    removal = next(s for s in jobs["staging"]["steps"] if s.get("name", "").startswith("Remove the canary"))
    assert "always()" in removal["if"] and "models unset" in removal["run"]
    deploy = yaml.safe_load((ROOT / ".github/workflows/deploy.yml").read_text())
    assert promote["concurrency"]["group"] == deploy["concurrency"]["group"]
    assert any("mnistcl models import" in r for r in runs["production"])
    # The plan can authenticate: OIDC permission and the credentials step.
    ci = yaml.safe_load((ROOT / ".github/workflows/ci.yml").read_text())
    plan = ci["jobs"]["terraform"]
    assert plan["permissions"]["id-token"] == "write"
    assert any(s.get("uses", "").startswith("aws-actions/configure-aws-credentials") for s in plan["steps"])
    assert ci["jobs"]["images"]["permissions"]["id-token"] == "write"


def test_serving_image_copies_every_module_the_server_imports():
    serve_python = ROOT / ".venv-serve" / "bin" / "python"
    if not serve_python.exists():
        pytest.skip("the serving environment is missing")
    out = subprocess.run([str(serve_python), "-c", "import sys, serving.server, serving.model, mnistcl.registry, "
                          "mnistcl.storage; print(' '.join(sorted(m for m in sys.modules if m.startswith('mnistcl.'))))"],
                         cwd=ROOT, capture_output=True, text=True, env={"PYTHONPATH": str(ROOT)})
    imported = {m.split(".")[1] + ".py" for m in out.stdout.split()}
    dockerfile = (ROOT / "infra/docker/serve.Dockerfile").read_text()
    copied = {w.split("/")[-1] for line in dockerfile.splitlines() if line.startswith("COPY mnistcl/")
              for w in line.split()[1:-1]}
    assert imported and imported <= copied, imported - copied


def _istio_match(pattern: str, value: str) -> bool:
    """Istio's string match for principals and paths: exact, prefix `abc*`, suffix `*abc`, presence `*`
    (istio.io, reference/config/security/authorization-policy)."""
    if pattern == "*":
        return bool(value)
    if pattern.endswith("*"):
        return value.startswith(pattern[:-1])
    if pattern.startswith("*"):
        return value.endswith(pattern[1:])
    return value == pattern


def _denied(policy: dict, principal: str, path: str, method: str = "POST") -> bool:
    """Whether a DENY policy refuses a request (a rule matches when all its fields match; a field
    with several entries when one matches; not* fields when none matches)."""
    assert policy["spec"]["action"] == "DENY"

    def operation(op: dict) -> bool:
        return (("paths" not in op or any(_istio_match(p, path.split("?")[0]) for p in op["paths"]))
                and ("methods" not in op or method in op["methods"]))

    for rule in policy["spec"]["rules"]:
        src_ok = all(not any(_istio_match(p, principal) for p in f["source"].get("notPrincipals", [])) and
                     (not f["source"].get("principals") or any(_istio_match(p, principal) for p in f["source"]["principals"]))
                     for f in rule.get("from", [])) if rule.get("from") else True
        to_ok = any(operation(t["operation"]) for t in rule.get("to", [])) if rule.get("to") else True
        if src_ok and to_ok:
            return True
    return False


def test_feedback_reaches_the_model_servers_only_from_the_labelling_account():
    """The rendered AuthorizationPolicy selects both predictors' pods and refuses feedback (REST,
    every route the wrapper serves it on, and gRPC) from anyone but the environment's labelling
    ServiceAccount, leaving predictions and probes alone; the pods get the feedback tokens from the
    Secret the runbook documents."""
    from deployment.deploy import load_env, render
    from serving.edge import FEEDBACK_ROUTES

    for env in ENVS:
        docs = rendered(env)
        (policy,) = [d for d in docs if d["kind"] == "AuthorizationPolicy"]
        assert policy["apiVersion"] == "security.istio.io/v1" and policy["metadata"]["namespace"] == f"mnist-{env}"
        account = load_env(env)["feedback_service_account"]
        assert [d for d in docs if d["kind"] == "ServiceAccount" and d["metadata"]["name"] == account]
        labeller = f"cluster.local/ns/mnist-{env}/sa/{account}"
        for challenger in (None, "m2"):  # both predictors carry the label the policy selects
            (sdep,) = render(env, "m1", challenger)
            for p in sdep["spec"]["predictors"]:
                assert policy["spec"]["selector"]["matchLabels"].items() <= p["labels"].items(), p["name"]
                env_names = {e["name"] for e in p["componentSpecs"][0]["spec"]["containers"][0]["env"]}
                assert "MNISTCL_FEEDBACK_TOKENS" in env_names
        others = ["cluster.local/ns/istio-system/sa/istio-ingressgateway", f"cluster.local/ns/mnist-{env}/sa/mnist-serving",
                  "cluster.local/ns/evil/sa/mnist-labeller", ""]
        feedback = [*sorted(FEEDBACK_ROUTES), "/api/v1.0/feedback?x=1", "/api/v1.0/feedback/",
                    "/seldon.protos.Seldon/SendFeedback", "/seldon.protos.Model/SendFeedback"]
        for path in feedback:
            assert not _denied(policy, labeller, path), path
            for who in others:
                assert _denied(policy, who, path), (who, path)
        for path in ("/api/v1.0/predictions", "/predict", "/health/status", "/prometheus",
                     "/seldon.protos.Seldon/Predict"):
            for who in [labeller, *others]:
                assert not _denied(policy, who, path), (who, path)
                assert _denied(policy, who, path, "OPTIONS"), (who, path)  # no CORS preflight succeeds
        # The sidecar refuses bodies over the server's own limit before Seldon's executor reads them.
        (limit,) = [d for d in docs if d["kind"] == "EnvoyFilter"]
        assert limit["spec"]["workloadSelector"]["labels"] == policy["spec"]["selector"]["matchLabels"]
        (patch,) = limit["spec"]["configPatches"]
        assert patch["match"]["context"] == "SIDECAR_INBOUND"
        assert patch["patch"]["value"]["typed_config"]["max_request_bytes"] == int(re.search(
            r'"--max-bytes", type=int, default=([\d_]+)', (ROOT / "serving/server.py").read_text()).group(1))
    assert "MNISTCL_FEEDBACK_TOKENS" in (ROOT / "docs/kubernetes.md").read_text()
    # Policies match the path the sidecar sees; the mesh decodes %2F and merges slashes first, so an
    # encoded feedback path (`/api/v1.0%2Ffeedback`, which the executor and Flask decode) is matched.
    istio = (ADDONS / "helm_istio.tf").read_text()
    assert 'pathNormalization = { normalization = "DECODE_AND_MERGE_SLASHES" }' in istio


def test_the_model_servers_autoscaler_has_its_metrics_and_bounds():
    """The hpaSpec rendered for each environment reads CPU from metrics-server, which Terraform
    installs (EKS has none), and production scales further than staging."""
    metrics_server = (ADDONS / "helm_metrics_server.tf").read_text()
    assert 'chart      = "metrics-server"' in metrics_server and "kubernetes-sigs.github.io/metrics-server" in metrics_server
    assert tf_default(ADDONS, "metrics_server_version")
    bounds = {}
    for env in ENVS:
        (sdep,) = [d for d in rendered(env) if d["kind"] == "SeldonDeployment"]
        (hpa,) = [cs["hpaSpec"] for p in sdep["spec"]["predictors"] for cs in p["componentSpecs"]]
        assert hpa["metricsv2"][0]["containerResource"] == {**hpa["metricsv2"][0]["containerResource"],
                                                           "name": "cpu", "container": "classifier"}
        # The HPA's utilisation is a share of the CPU request: the container must have one.
        (pod,) = [cs["spec"] for p in sdep["spec"]["predictors"] for cs in p["componentSpecs"]]
        assert pod["containers"][0]["resources"]["requests"]["cpu"]
        bounds[env] = (hpa["minReplicas"], hpa["maxReplicas"])
    assert bounds["prod"][1] > bounds["staging"][1] and bounds["prod"][0] >= bounds["staging"][0]
