"""Lock an environment: every installed distribution pinned, with the SHA-256 of each of its
release files on the package index, so `pip install --require-hashes --no-deps` rebuilds it
exactly (Makefile: venv, venv-serve, venv-infra).

    make lock                                          # every environment, freshly resolved
    python requirements/lock.py VENV requirements/X.lock   # one environment as it is installed

Hashes come from the index's JSON API (PEP 691, https://pypi.org/simple/); a distribution the
index does not have (torch's CPU build, from PyTorch's own index) is hashed from the wheel that pip
can find locally (--find-links) or must be given with --wheel.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import subprocess
import sys
import urllib.request
from pathlib import Path

from packaging.utils import canonicalize_name, parse_sdist_filename, parse_wheel_filename
from packaging.version import Version

INDEX = "https://pypi.org/simple"


def index_hashes(name: str, version: str) -> list[str]:
    req = urllib.request.Request(f"{INDEX}/{canonicalize_name(name)}/",
                                 headers={"Accept": "application/vnd.pypi.simple.v1+json"})
    with urllib.request.urlopen(req, timeout=60) as r:
        files = json.load(r)["files"]
    want, out = Version(version), []
    for f in files:
        fn = f["filename"]
        try:
            v = parse_wheel_filename(fn)[1] if fn.endswith(".whl") else parse_sdist_filename(fn)[1]
        except Exception:  # noqa: BLE001 - eggs, exes and odd names are not installable by pip here
            continue
        if v == want and "sha256" in f.get("hashes", {}):
            out.append(f["hashes"]["sha256"])
    return sorted(set(out))


def local_hashes(name: str, version: str, dirs: list[Path]) -> list[str]:
    out = []
    for d in dirs:
        for p in d.glob("*.whl"):
            n, v, *_ = parse_wheel_filename(p.name)
            if n == canonicalize_name(name) and str(v) == version:
                out.append(hashlib.sha256(p.read_bytes()).hexdigest())
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("venv", type=Path)
    ap.add_argument("out", type=Path)
    ap.add_argument("--find-links", type=Path, action="append", default=[],
                    help="folders of wheels the index lacks (default: pip's configured find-links)")
    args = ap.parse_args()
    links = args.find_links or [Path(p) for p in subprocess.run(
        [sys.executable, "-m", "pip", "config", "get", "global.find-links"], capture_output=True, text=True
    ).stdout.split() if Path(p).is_dir()]
    frozen = subprocess.run([str(args.venv / "bin" / "python"), "-m", "pip", "freeze", "--exclude-editable",
                             "--all"], capture_output=True, text=True, check=True).stdout.split()
    lines = [f"# Locked by requirements/lock.py (make lock): pip install --require-hashes --no-deps -r"
             f" {args.out.as_posix()}"]
    for pin in sorted(frozen, key=str.lower):
        if "==" not in pin:
            raise SystemExit(f"cannot lock {pin!r}: not a pinned release")
        name, version = pin.split("==")
        hashes = index_hashes(name, version) if "+" not in version else []
        hashes = hashes or local_hashes(name, version, links)
        if not hashes:
            raise SystemExit(f"no release file with a hash for {pin}")
        lines.append(f"{name}=={version} \\\n" + " \\\n".join(f"    --hash=sha256:{h}" for h in hashes))
        print(f"{pin}: {len(hashes)} files", flush=True)
    args.out.write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
