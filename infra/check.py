"""Offline checks of the infrastructure code; the tests and CI run the same commands.

  python infra/check.py terraform   fmt -check everywhere; init -backend=false + validate for every
                                    module whose providers are available here (the hashicorp/aws
                                    filesystem mirror when it exists, else the registry)
  python infra/check.py manifests   kubectl kustomize each overlay; built-in kinds checked with
                                    kubernetes-validate (strict), the SeldonDeployment against its
                                    CRD schema; the rendered YAML is written to --out
  python infra/check.py checkov     checkov --skip-download over Terraform and the rendered manifests
  python infra/check.py workflows   check-jsonschema on .github/workflows with its bundled schema
  python infra/check.py all

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
KUBERNETES_VERSION = "1.31.0"


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
        env = {**os.environ, "TF_IN_AUTOMATION": "1", "CHECKPOINT_DISABLE": "1"}
        if m:
            rc = Path(tmp) / "terraform.rc"
            (Path(tmp) / "plugin-cache").mkdir()
            rc.write_text(f'plugin_cache_dir = "{Path(tmp) / "plugin-cache"}"\n'
                          'provider_installation {\n  filesystem_mirror {\n'
                          f'    path    = "{m}"\n    include = ["registry.terraform.io/hashicorp/aws"]\n  }}\n'
                          '  direct {\n    exclude = ["registry.terraform.io/hashicorp/aws"]\n  }\n}\n')
            env["TF_CLI_CONFIG_FILE"] = str(rc)
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
    ap.add_argument("what", choices=["terraform", "manifests", "checkov", "workflows", "all"])
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
    except CheckError as exc:
        print(f"FAILED: {exc}", file=sys.stderr)
        return 1
    print(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
