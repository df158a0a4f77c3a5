"""The house rules, read from the source: every import between the project's folders points down.

    cli          the face: may call anything
    flows        Prefect wiring: calls the stages, never the face
    scenario     the simulator and its report
    retraining   feedback -> dataset -> fine-tune -> gate
    deployment   manifests, work pools, launching servers
    validation   the gate, its statistics, promotion, the shadow judgement
    models, monitoring, serving
    mnistcl      the shared base: imports none of the above

An import (at the top of a file or inside a function) that points up or sideways outside these
rules fails here, with the file and line; so does a cycle between folders.
"""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]
ALLOWED: dict[str, set[str]] = {
    "mnistcl": set(),
    "models": {"mnistcl"},
    "monitoring": {"mnistcl"},
    "serving": {"mnistcl"},
    "validation": {"mnistcl", "models", "monitoring"},
    "deployment": {"mnistcl", "monitoring"},
    "retraining": {"mnistcl", "models", "monitoring", "validation"},
    "scenario": {"mnistcl", "models", "monitoring", "serving", "validation", "retraining", "deployment"},
    "flows": {"mnistcl", "models", "monitoring", "validation", "retraining", "deployment"},
    "cli": {"mnistcl", "models", "monitoring", "serving", "validation", "retraining", "deployment", "scenario",
            "flows"},
}


def project_imports(folder: str) -> list[tuple[str, str]]:
    """(imported project folder, "file:line") for every import in ``folder``."""
    found = []
    for path in sorted((ROOT / folder).rglob("*.py")):
        tree = ast.parse(path.read_text(), filename=str(path))
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            else:
                continue
            for name in names:
                top = name.split(".")[0]
                if top in ALLOWED and top != folder:
                    found.append((top, f"{path.relative_to(ROOT)}:{node.lineno}"))
    return found


def test_every_folder_of_the_rules_exists():
    assert sorted(p.name for p in ROOT.iterdir() if (p / "__init__.py").exists() and p.name in ALLOWED) == \
        sorted(ALLOWED)


@pytest.mark.parametrize("folder", sorted(ALLOWED))
def test_imports_point_down(folder):
    wrong = [f"{where} imports {top}" for top, where in project_imports(folder) if top not in ALLOWED[folder]]
    assert not wrong, f"{folder}/ may import only {sorted(ALLOWED[folder]) or 'nothing of the project'}:\n" + \
        "\n".join(wrong)


@pytest.mark.parametrize("folder", sorted(set(ALLOWED) - {"cli"}))
def test_project_imports_sit_at_the_top_of_the_file(folder):
    """A file's header shows what it depends on; only the CLI imports lazily (to keep --help instant)."""
    lazy = []
    for path in sorted((ROOT / folder).rglob("*.py")):
        tree = ast.parse(path.read_text(), filename=str(path))
        top = {id(n) for n in tree.body}
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module and id(node) not in top \
                    and node.module.split(".")[0] in ALLOWED:
                lazy.append(f"{path.relative_to(ROOT)}:{node.lineno} from {node.module}")
    assert not lazy, "move these imports to the top of the file:\n" + "\n".join(lazy)


def test_no_cycle_between_folders():
    graph = defaultdict(set)
    for folder in ALLOWED:
        for top, _ in project_imports(folder):
            graph[folder].add(top)
    state: dict[str, int] = {}

    def visit(node, path):
        state[node] = 1
        for nxt in graph[node]:
            if state.get(nxt) == 1:
                raise AssertionError("import cycle: " + " -> ".join([*path, node, nxt]))
            if nxt not in state:
                visit(nxt, [*path, node])
        state[node] = 2

    for folder in ALLOWED:
        if folder not in state:
            visit(folder, [])


def test_the_check_sees_a_wrong_arrow(tmp_path, monkeypatch):
    """The rule is not vacuous: a base module importing a flow is reported."""
    fake = tmp_path / "mnistcl"
    fake.mkdir()
    (fake / "__init__.py").write_text("")
    (fake / "bad.py").write_text("def f():\n    from flows.train import run_automl\n")
    monkeypatch.setattr(__import__(__name__, fromlist=["ROOT"]), "ROOT", tmp_path)
    assert project_imports("mnistcl") == [("flows", "mnistcl/bad.py:2")]
