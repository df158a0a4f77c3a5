"""Infrastructure as code, offline: Terraform fmt/validate (modules with the aws provider from the
local mirror), Kustomize overlays rendered and validated, generated files in sync with their
sources, checkov with every skip explained, and the GitHub workflows against their schema."""

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


def need(binary: str):
    if not (shutil.which(binary) or (INFRA_VENV / binary).exists()):
        pytest.skip(f"{binary} is not installed (make venv-infra / the Debian package)")


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
        assert validated == {"modules/network", "modules/eks", "modules/storage", "modules/irsa", "modules/kms"}
        assert {r["root"] for r in report["fmt_only"]} == {"modules/addons", "envs/staging", "envs/prod"}
    assert not list((ROOT / "infra/terraform").rglob(".terraform*")), "init must not write into the repository"


def test_terraform_layout_one_file_per_kind():
    for module in (ROOT / "infra/terraform/modules").iterdir():
        names = {p.name for p in module.glob("*.tf")}
        assert {"variables.tf", "outputs.tf", "versions.tf"} <= names, module
    import re

    def has(text, pattern):
        return re.search(pattern, text) is not None

    for env in ("staging", "prod"):
        main = (ROOT / f"infra/terraform/envs/{env}/main.tf").read_text()
        for m in ("network", "eks", "storage", "irsa", "addons"):
            assert has(main, rf'source\s*=\s*"\.\./\.\./modules/{m}"'), (env, m)
    eks = (ROOT / "infra/terraform/modules/eks/nodegroups.tf").read_text()
    assert has(eks, r'effect\s*=\s*"NO_SCHEDULE"') and has(eks, r'"mnist-continual/pool"\s*=\s*"gpu"')
    s3 = (ROOT / "infra/terraform/modules/storage/s3.tf").read_text()
    assert has(s3, r"block_public_policy\s*=\s*true") and has(s3, r'status\s*=\s*"Enabled"') and "aws:kms" in s3


def test_kustomize_overlays_render_and_validate(tmp_path):
    need("kubectl")
    report = check.check_manifests(tmp_path)
    for env in ("staging", "prod"):
        assert {"Deployment/mnist-relay", "Service/mnist-relay", "ConfigMap/mnist-prefect-job-template",
                "NetworkPolicy/mnist-relay"} <= set(report[env]["built_in"])
        assert {"SeldonDeployment/mnist-continual", "PrometheusRule/mnist-continual", "PodMonitor/mnist-model-server",
                "AlertmanagerConfig/mnist-continual"} <= set(report[env]["custom"])
        docs = list(yaml.safe_load_all((tmp_path / f"{env}.yaml").read_text()))
        assert {d["metadata"].get("namespace") for d in docs if d["kind"] != "Namespace"} == {f"mnist-{env}"}


def test_flow_jobs_get_the_model_pods_registry_and_the_pushgateway(tmp_path):
    """The Prefect job template's envFrom resolves in every overlay: the flow Jobs read the same
    registry as the model server, the Pushgateway Terraform installs, and the prediction log from
    the Secret the model server reads it from."""
    need("kubectl")
    from deployment.orchestrate import SECRETS, SETTINGS_CONFIGMAP, gpu_job_template

    container = gpu_job_template()["job_configuration"]["job_manifest"]["spec"]["template"]["spec"]["containers"][0]
    assert container["envFrom"] == [{"configMapRef": {"name": SETTINGS_CONFIGMAP}}, {"secretRef": {"name": SECRETS}}]
    addons = "".join(p.read_text() for p in (ROOT / "infra/terraform/modules/addons").glob("*.tf"))
    for env in ("staging", "prod"):
        docs = check.render(env)
        settings = next(d for d in docs if d["kind"] == "ConfigMap" and d["metadata"]["name"] == SETTINGS_CONFIGMAP)
        sdep = next(d for d in docs if d["kind"] == "SeldonDeployment")
        server_env = {e["name"]: e for e in sdep["spec"]["predictors"][0]["componentSpecs"][0]["spec"]["containers"][0]["env"]}
        assert settings["data"]["MNISTCL_STORAGE_URL"] == server_env["MNISTCL_STORE_URL"]["value"]
        assert server_env["MNISTCL_PREDICTIONS_DB"]["valueFrom"]["secretKeyRef"] == {
            "name": SECRETS, "key": "MNISTCL_PREDICTIONS_DB"}
        host = settings["data"]["MNISTCL_PUSHGATEWAY_URL"].split("//")[1].split(".")[0]
        assert f'name       = "{host}"' in addons and 'chart      = "prometheus-pushgateway"' in addons


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


def test_workflows_validate_against_the_github_schema():
    need("check-jsonschema")
    assert check.check_workflows()["valid"] == ["ci.yml", "promote.yml"]
    promote = yaml.safe_load((ROOT / ".github/workflows/promote.yml").read_text())
    triggers = promote[True] if True in promote else promote["on"]  # YAML reads `on` as true
    assert "workflow_dispatch" in triggers and triggers["repository_dispatch"]["types"] == ["promote-model"]
    assert promote["jobs"]["production"]["environment"] == "production"
    assert promote["jobs"]["production"]["needs"] == "staging"
    steps = " ".join(s.get("run", "") for j in promote["jobs"].values() for s in j["steps"])
    for cli in ("mnistcl models validate", "mnistcl models promote", "mnistcl deploy render", "mnistcl smoke"):
        assert cli in steps


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
