"""Offline checks of the infrastructure code; the tests and CI run the same commands.

  python infra/check.py terraform   fmt -check everywhere; init -backend=false + validate for every
                                    module whose providers are available here (the hashicorp/aws
                                    filesystem mirror when it exists, else the registry)
  python infra/check.py manifests   kubectl kustomize each overlay; built-in kinds checked with
                                    kubernetes-validate (strict), the SeldonDeployment against its
                                    CRD schema; the rendered YAML is written to --out
  python infra/check.py checkov     checkov --skip-download over Terraform and the rendered manifests
  python infra/check.py workflows   check-jsonschema on .github/workflows with its bundled schema
  python infra/check.py apply       a real `terraform apply` of an environment's AWS side (envs/<env>
                                    without cluster.tf) against moto's server on 127.0.0.1, then
                                    plan (must show no changes) and destroy (must leave nothing)
  python infra/check.py all         everything above

Tools: terraform and kubectl on PATH; checkov and check-jsonschema from .venv-infra
(`make venv-infra`) or PATH. Exit status 1 with the reason when a check fails.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
TF = ROOT / "infra" / "terraform"
K8S = ROOT / "infra" / "k8s"
OVERLAYS = ("staging", "prod")
MIRROR_CANDIDATES = [Path(os.environ["TF_PLUGIN_MIRROR"])] if os.environ.get("TF_PLUGIN_MIRROR") else [
    Path("/opt/tf-plugins"), Path.home() / ".terraform.d" / "plugins"]
KUBERNETES_VERSION = "1.35.0"  # the clusters' minor (modules/eks kubernetes_version)


class CheckError(RuntimeError):
    pass


def tool(name: str) -> str:
    local = ROOT / ".venv-infra" / "bin" / name
    if local.exists():
        return str(local)
    found = shutil.which(name)
    if not found:
        raise CheckError(f"{name} not found: run `make venv-infra` (or install it)")
    return found


def run(cmd: list[str], **kw) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, capture_output=True, text=True, **kw)


# ------------------------------------------------------------------ terraform
def providers(module: Path) -> set[str]:
    """Provider names a module (and the modules it calls) requires, from the .tf text."""
    import re

    names = set()
    for tf in module.glob("*.tf"):
        text = tf.read_text()
        names |= set(re.findall(r'source\s*=\s*"hashicorp/([a-z0-9-]+)"', text))
        for src in re.findall(r'source\s*=\s*"(\.\./[^"]+)"', text):
            names |= providers((module / src).resolve())
    return names


def tf_env(**extra: str) -> dict[str, str]:
    """The environment every terraform command here runs in."""
    return {**os.environ, "TF_IN_AUTOMATION": "1", "CHECKPOINT_DISABLE": "1", **extra}


def cli_config(tmp: Path, m: Path) -> Path:
    """A Terraform CLI config that takes hashicorp/aws from the filesystem mirror."""
    rc = tmp / "terraform.rc"
    (tmp / "plugin-cache").mkdir(exist_ok=True)
    rc.write_text(f'plugin_cache_dir = "{tmp / "plugin-cache"}"\n'
                  'provider_installation {\n  filesystem_mirror {\n'
                  f'    path    = "{m}"\n    include = ["registry.terraform.io/hashicorp/aws"]\n  }}\n'
                  '  direct {\n    exclude = ["registry.terraform.io/hashicorp/aws"]\n  }\n}\n')
    return rc


def mirror() -> Path | None:
    for m in MIRROR_CANDIDATES:
        if (m / "registry.terraform.io" / "hashicorp" / "aws").exists():
            return m
    return None


def terraform_roots() -> list[Path]:
    return sorted([*TF.glob("modules/*"), *TF.glob("envs/*")])


def check_terraform() -> dict:
    tf = shutil.which("terraform")
    if not tf:
        raise CheckError("terraform not found on PATH")
    out = run([tf, "fmt", "-check", "-recursive", "-diff", str(TF)])
    if out.returncode:
        raise CheckError(f"terraform fmt -check failed:\n{out.stdout}{out.stderr}")
    m = mirror()
    report = {"fmt": "ok", "validated": [], "fmt_only": [], "mirror": str(m) if m else None}
    with tempfile.TemporaryDirectory() as tmp:
        env = tf_env(TF_CLI_CONFIG_FILE=str(cli_config(Path(tmp), m))) if m else tf_env()
        offline = {"aws"} if m else None
        for root in terraform_roots():
            need = providers(root)
            rel = str(root.relative_to(TF))
            if offline is not None and not need <= offline:
                report["fmt_only"].append({"root": rel, "needs": sorted(need - offline)})
                continue
            # A copy, so that init's .terraform/ and lock file never land in the repository.
            if not (Path(tmp) / "tree").exists():
                shutil.copytree(TF, Path(tmp) / "tree")
            work = Path(tmp) / "tree" / rel
            init = run([tf, f"-chdir={work}", "init", "-backend=false", "-input=false", "-no-color"], env=env)
            if init.returncode:
                raise CheckError(f"terraform init failed in {rel}:\n{init.stdout[-2000:]}{init.stderr[-2000:]}")
            val = run([tf, f"-chdir={work}", "validate", "-no-color", "-json"], env=env)
            result = json.loads(val.stdout or "{}")
            if not result.get("valid"):
                raise CheckError(f"terraform validate failed in {rel}: {json.dumps(result.get('diagnostics'), indent=1)}")
            report["validated"].append({"root": rel, "warnings": result.get("warning_count", 0)})
    return report


def job_template_for(namespace: str, template: str | None = None) -> dict:
    """modules/job_template applied for real (it needs no provider): the work pool's base job
    template as Terraform hands it to the prefect-worker chart for ``namespace``."""
    tf = shutil.which("terraform")
    if not tf:
        raise CheckError("terraform not found on PATH")
    sys.path.insert(0, str(ROOT))
    from deployment.orchestrate import GPU_TEMPLATE

    template = template if template is not None else GPU_TEMPLATE.read_text()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp) / "job_template"
        shutil.copytree(TF / "modules" / "job_template", work)
        (work / "test.auto.tfvars.json").write_text(json.dumps({"template": template, "namespace": namespace}))
        env = tf_env()
        for args in (["init", "-input=false"], ["apply", "-auto-approve", "-input=false"]):
            out = run([tf, f"-chdir={work}", *args, "-no-color"], env=env)
            if out.returncode:
                raise CheckError(f"terraform {args[0]} of modules/job_template failed:\n{out.stdout[-2000:]}{out.stderr[-2000:]}")
        out = run([tf, f"-chdir={work}", "output", "-raw", "json"], env=env)
        return json.loads(out.stdout)


# ------------------------------------------------------------------ apply against moto
# What moto's server (5.x) cannot do, and so what the apply leaves out, in the copy only:
#   EKS add-ons and access entries: no such API (CreateAddon / CreateAccessEntry answer 404);
#   the GPU group's Auto Scaling tags: moto's node groups name an Auto Scaling group that does
#   not exist in its autoscaling backend;
#   aws_eks_cluster.access_config: moto does not echo it back, so every plan would show a change;
#   the node groups' remote_access: moto invents one (an SSH key) that forces a replacement.
MOTO_EXCLUDED = {
    "eks": """
resource "aws_eks_addon" "core" {
  for_each = {}
}
resource "aws_eks_access_entry" "admin" {
  for_each = {}
}
resource "aws_eks_access_policy_association" "admin" {
  for_each = {}
}
resource "aws_autoscaling_group_tag" "gpu_node_template" {
  for_each = {}
}
resource "aws_eks_cluster" "this" {
  lifecycle {
    ignore_changes = [access_config]
  }
}
resource "aws_eks_node_group" "cpu" {
  lifecycle {
    ignore_changes = [scaling_config[0].desired_size, remote_access]
  }
}
resource "aws_eks_node_group" "gpu" {
  lifecycle {
    ignore_changes = [scaling_config[0].desired_size, remote_access]
  }
}
""",
}
MOTO_SERVICES = ("ec2", "iam", "kms", "s3", "eks", "sts", "cloudwatchlogs", "ecr", "autoscaling")
# Values for the root's variables that have no default (the cluster side is not applied).
MOTO_VARS = {"bucket_name": "mnistcl-moto-{env}", "alert_email_from": "alerts@example.com",
             "smtp_smarthost": "smtp.example.com:587", "smtp_password": "x", "grafana_admin_password": "x",
             "prefect_auth_string": "admin:x", "prefect_db_password": "x"}


def moto_server(port: int) -> subprocess.Popen:
    """moto's server as its own process (AWS managed policies loaded: the roots attach them)."""
    sys.path.insert(0, str(ROOT))
    from deployment.serve import wait_http_ok

    exe = Path(sys.executable).parent / "moto_server"
    cmd = [str(exe)] if exe.exists() else [sys.executable, "-m", "moto.server"]
    proc = subprocess.Popen([*cmd, "-H", "127.0.0.1", "-p", str(port)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, env={**os.environ, "MOTO_IAM_LOAD_MANAGED_POLICIES": "true"})
    if not wait_http_ok(f"http://127.0.0.1:{port}/moto-api/", 30):
        proc.kill()
        raise CheckError("moto's server did not start")
    return proc


def moto_copy(tree: Path, env_name: str, endpoint: str) -> Path:
    """The environment root as it is, less cluster.tf (helm/kubernetes), with the aws provider
    pointed at moto and the state local."""
    work = tree / "envs" / env_name
    (work / "cluster.tf").unlink()
    (work / "versions.tf").write_text(
        'terraform {\n  required_providers {\n    aws = {\n      source = "hashicorp/aws"\n    }\n  }\n'
        '  backend "local" {}\n}\n')
    endpoints = "\n".join(f'    {s} = "{endpoint}"' for s in MOTO_SERVICES)
    (work / "moto_override.tf").write_text(
        'provider "aws" {\n  access_key = "test"\n  secret_key = "test"\n  skip_credentials_validation = true\n'
        '  skip_metadata_api_check = true\n  s3_use_path_style = true\n'
        f'  endpoints {{\n{endpoints}\n  }}\n}}\n')
    for module, text in MOTO_EXCLUDED.items():
        (tree / "modules" / module / "moto_override.tf").write_text(text)
    (work / "moto.auto.tfvars.json").write_text(json.dumps({k: v.format(env=env_name) for k, v in MOTO_VARS.items()}))
    return work


def managed(state: list[str]) -> list[str]:
    return [r for r in state if not r.startswith("data.") and ".data." not in r]


def check_apply(env_name: str = "staging") -> dict:
    """apply, plan (no changes), destroy of envs/<env_name>'s AWS side against moto's server."""
    import time

    tf = shutil.which("terraform")
    m = mirror()
    if not tf or not m:
        raise CheckError("terraform and the hashicorp/aws filesystem mirror are needed (TF_PLUGIN_MIRROR)")
    sys.path.insert(0, str(ROOT))
    from deployment.serve import free_port

    port = free_port()
    server = moto_server(port)
    report: dict = {"env": env_name, "excluded": ["aws_eks_addon", "aws_eks_access_entry",
                                                   "aws_eks_access_policy_association", "aws_autoscaling_group_tag",
                                                   "aws_eks_cluster.access_config (ignored in plan)",
                                                   "aws_eks_node_group.remote_access (ignored in plan)"]}
    try:
        with tempfile.TemporaryDirectory() as tmp:
            shutil.copytree(TF, Path(tmp) / "tree", ignore=shutil.ignore_patterns(".terraform*", "*.tfstate*"))
            work = moto_copy(Path(tmp) / "tree", env_name, f"http://127.0.0.1:{port}")
            env = tf_env(TF_CLI_CONFIG_FILE=str(cli_config(Path(tmp), m)), AWS_EC2_METADATA_DISABLED="true")

            def step(name, *args, ok=(0,)):
                t0 = time.monotonic()
                out = run([tf, f"-chdir={work}", *args, "-input=false", "-no-color"], env=env)
                report[f"{name}_seconds"] = round(time.monotonic() - t0, 1)
                if out.returncode not in ok:
                    raise CheckError(f"terraform {name} against moto failed ({out.returncode}):\n"
                                     f"{out.stdout[-4000:]}{out.stderr[-4000:]}")
                return out

            def state() -> list[str]:
                return managed(run([tf, f"-chdir={work}", "state", "list"], env=env).stdout.split())

            step("init", "init")
            step("apply", "apply", "-auto-approve", "-parallelism=20")
            report["resources"] = len(state())
            plan = step("plan", "plan", "-detailed-exitcode", ok=(0, 2))
            if plan.returncode == 2:
                changes = [line.strip() for line in plan.stdout.splitlines() if line.strip().startswith("#")]
                raise CheckError("a second plan after apply is not empty:\n  " + "\n  ".join(changes[:40]))
            report["plan_after_apply"] = "no changes"
            step("destroy", "destroy", "-auto-approve", "-parallelism=20")
            if state():
                raise CheckError(f"destroy left resources in the state: {state()}")
            report["destroyed"] = True
    finally:
        server.terminate()
        server.wait(timeout=10)
    return report


# ------------------------------------------------------------------ manifests
def render(overlay: str) -> list[dict]:
    kubectl = shutil.which("kubectl")
    if not kubectl:
        raise CheckError("kubectl not found on PATH")
    out = run([kubectl, "kustomize", str(K8S / "overlays" / overlay)])
    if out.returncode:
        raise CheckError(f"kubectl kustomize {overlay} failed:\n{out.stderr}")
    return [d for d in yaml.safe_load_all(out.stdout) if d]


def check_manifests(out_dir: Path | None = None) -> dict:
    import kubernetes_validate

    sys.path.insert(0, str(ROOT))
    from deployment.deploy import check_seldon_deployment

    report = {}
    for overlay in OVERLAYS:
        docs = render(overlay)
        builtin, custom = [], []
        for d in docs:
            group = d["apiVersion"].split("/")[0] if "/" in d["apiVersion"] else ""
            if not (group in ("", "apps", "batch", "policy", "autoscaling") or group.endswith(".k8s.io")):
                custom.append(d)
                if d["kind"] == "SeldonDeployment":
                    check_seldon_deployment(d)
            else:
                try:
                    kubernetes_validate.validate(d, KUBERNETES_VERSION, strict=True)
                except kubernetes_validate.ValidationError as exc:
                    raise CheckError(f"{overlay}: {d['kind']}/{d['metadata']['name']} invalid: {exc.message}") from None
                builtin.append(d)
        if out_dir is not None:
            out_dir.mkdir(parents=True, exist_ok=True)
            (out_dir / f"{overlay}.yaml").write_text(yaml.safe_dump_all(docs, sort_keys=False))
        report[overlay] = {"built_in": sorted(f"{d['kind']}/{d['metadata']['name']}" for d in builtin),
                           "custom": sorted(f"{d['kind']}/{d['metadata']['name']}" for d in custom)}
    return report


# ------------------------------------------------------------------ checkov
def check_checkov(rendered: Path) -> dict:
    checkov = tool("checkov")
    results = {}
    for name, args in (("terraform", ["--framework", "terraform", "-d", str(TF)]),
                       ("kubernetes", ["--framework", "kubernetes", *sum((["-f", str(p)] for p in
                                                                             sorted(rendered.glob("*.yaml"))), [])])):
        out = run([checkov, "--skip-download", "--compact", "-o", "json", *args], cwd=ROOT)
        data = json.loads(out.stdout) if out.stdout.strip() else {}
        data = data if isinstance(data, list) else [data]
        failed = [f"{c['check_id']} {c.get('resource')} ({c.get('file_path')})" for d in data
                  for c in (d.get("results") or {}).get("failed_checks", [])]
        skipped = [f"{c['check_id']} {c.get('resource')}: {(c.get('check_result') or {}).get('suppress_comment', '')}"
                   for d in data for c in (d.get("results") or {}).get("skipped_checks", [])]
        summary = [d.get("summary") or {} for d in data]
        if not summary or any(s.get("parsing_errors") for s in summary) or not sum(s.get("resource_count", 0) for s in summary):
            raise CheckError(f"checkov {name} checked nothing or could not parse: {summary}\n{out.stderr[-2000:]}")
        if failed:
            raise CheckError(f"checkov {name}: {len(failed)} failed checks:\n  " + "\n  ".join(failed))
        results[name] = {"passed": sum(s.get("passed", 0) for s in summary), "failed": 0,
                         "resources": sum(s.get("resource_count", 0) for s in summary), "skipped": sorted(set(skipped))}
    return results


# ------------------------------------------------------------------ workflows
def check_workflows() -> dict:
    files = sorted(str(p) for p in (ROOT / ".github" / "workflows").glob("*.yml"))
    out = run([tool("check-jsonschema"), "--builtin-schema", "vendor.github-workflows", *files])
    if out.returncode:
        raise CheckError(f"check-jsonschema failed:\n{out.stdout}{out.stderr}")
    return {"valid": [Path(f).name for f in files]}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("what", choices=["terraform", "manifests", "checkov", "workflows", "apply", "all"])
    ap.add_argument("--env", default="staging", choices=["staging", "prod"], help="the root `apply` applies")
    ap.add_argument("--out", type=Path, default=None, help="where rendered manifests are written")
    args = ap.parse_args(argv)
    out = args.out or Path(tempfile.mkdtemp(prefix="mnistcl-manifests-"))
    try:
        report = {}
        if args.what in ("terraform", "all"):
            report["terraform"] = check_terraform()
        if args.what in ("manifests", "checkov", "all"):
            report["manifests"] = check_manifests(out)
        if args.what in ("checkov", "all"):
            report["checkov"] = check_checkov(out)
        if args.what in ("workflows", "all"):
            report["workflows"] = check_workflows()
        if args.what in ("apply", "all"):
            report["apply"] = check_apply(args.env)
    except CheckError as exc:
        print(f"FAILED: {exc}", file=sys.stderr)
        return 1
    print(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
