"""The package layers import downwards only, and the README's code map matches the tree."""

import ast
import re
from pathlib import Path

from conftest import ROOT

SRC = ROOT / "src" / "sia"
# lowest first; a module may import its own package and any package of a lower rank, never a sibling of its rank
LAYERS = [("errors", "paths", "values"), ("task",), ("harness", "policy", "store"), ("evaluation",), ("weights",), ("agents",), ("loop",),
          ("api",), ("cli", "__init__")]
RANK = {name: i for i, names in enumerate(LAYERS) for name in names}


def _part(module: str) -> str:
    """The layer of a dotted module under sia: its first component after `sia`."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def _modules():
    """sia's modules; task folders (builtin ones included) and the zoo's plugin files (copied into task folders) are loaded
    by path, above every layer."""
    for path in sorted(SRC.rglob("*.py")):
        if {"builtin", "plugins"} & set(path.relative_to(SRC).parts):
            continue
        rel = path.relative_to(SRC.parent).with_suffix("")
        yield ".".join(p for p in rel.parts if p != "__init__") if rel.name == "__init__" else ".".join(rel.parts), path


def _imports(path: Path):
    tree = ast.parse(path.read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            yield from ((a.name, node.lineno) for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module == "sia":
                yield from ((f"sia.{a.name}", node.lineno) for a in node.names)
            else:
                yield node.module, node.lineno


def test_every_import_goes_down_a_layer():
    bad = []
    for module, path in _modules():
        here = _part(module) if module != "sia" else "__init__"
        assert here in RANK, f"{module}: package {here!r} has no layer; add it to LAYERS and the architecture page"
        for target, line in _imports(path):
            if not target.startswith("sia.") or target == "sia":
                continue
            there = _part(target)
            if there == here:
                continue
            if RANK[there] >= RANK[here]:
                bad.append(f"{path.relative_to(ROOT)}:{line}: {module} ({here}) imports {target} ({there})")
    assert not bad, "imports that run up or across a layer:\n" + "\n".join(bad)


def test_the_readme_code_map_matches_the_tree():
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## Code map", 1)[1].split("\n## ", 1)[0]
    listed = set(re.findall(r"`(sia/[\w/.]+\.py)`", section))
    actual = {str(p.relative_to(SRC.parent)) for p in SRC.rglob("*.py")
              if p.name != "__init__.py" and not {"builtin", "plugins"} & set(p.relative_to(SRC).parts)}
    assert listed == actual, f"missing from the code map: {sorted(actual - listed)}; listed but absent: {sorted(listed - actual)}"


def test_the_repository_links_nothing_outside_itself():
    for doc in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]:
        text = doc.read_text()
        for target in re.findall(r"\]\(([^)#]+)", text):
            assert not target.startswith(("http://", "https://", "../")), f"{doc.name} links outside the repository: {target}"
            assert (doc.parent / target).exists(), f"{doc.name} links to {target}, which does not exist"
