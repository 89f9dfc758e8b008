"""The packages import one way: cli -> finetune -> interp -> probes; viz reads artifacts (docs/design.md)."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("cli", "finetune", "interp", "probes", "viz")
# Which packages each one may import (besides itself). finetune's pipeline writes the report, so it may use viz.
ALLOWED = {
    "cli": {"finetune", "interp", "probes", "viz"},
    "finetune": {"interp", "probes", "viz"},
    "interp": {"probes"},
    "probes": set(),
    "viz": {"interp", "probes"},
}
# viz turns artifacts into HTML: of interp it may use only modules that load no model.
VIZ_MAY_USE = {"interp.artifacts", "interp.errors", "interp.neuron_set", "interp.significance", "interp.verdicts"}


def imports_of(path: Path) -> set[str]:
    """Every absolute module imported anywhere in the file (top level or inside functions)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)  # from interp import models
    return found


def project_graph() -> dict[str, set[str]]:
    """module file (relative path) -> the project modules it imports."""
    files = [ROOT / "cli.py", *(p for package in PACKAGES[1:] for p in (ROOT / package).rglob("*.py"))]
    return {
        str(path.relative_to(ROOT)): {name for name in imports_of(path) if name.split(".")[0] in PACKAGES}
        for path in files
    }


def violations(graph: dict[str, set[str]]) -> list[str]:
    wrong = []
    for source, targets in graph.items():
        package = source.split("/")[0].removesuffix(".py")
        for target in targets:
            top = target.split(".")[0]
            if top != package and top not in ALLOWED[package]:
                wrong.append(f"{source} imports {target}")
            is_package = target == top  # "from interp import artifacts" also records "interp" itself
            if package == "viz" and top == "interp" and not is_package and not target.startswith(tuple(VIZ_MAY_USE)):
                wrong.append(f"{source} imports {target} (viz may use only {sorted(VIZ_MAY_USE)} of interp)")
    return sorted(wrong)


def test_packages_import_one_way():
    graph = project_graph()
    assert len(graph) > 60 and "interp/models.py" in graph
    assert violations(graph) == []


def test_a_back_edge_would_fail():
    graph = project_graph()
    graph["probes/emoji.py"] = graph["probes/emoji.py"] | {"interp.models"}
    graph["interp/tokens.py"] = graph["interp/tokens.py"] | {"finetune.dataset"}
    graph["viz/report.py"] = graph["viz/report.py"] | {"interp.models"}
    assert violations(graph) == [
        "interp/tokens.py imports finetune.dataset",
        "probes/emoji.py imports interp.models",
        "viz/report.py imports interp.models (viz may use only "
        "['interp.artifacts', 'interp.errors', 'interp.neuron_set', 'interp.significance', 'interp.verdicts'] of "
        "interp)",
    ]
