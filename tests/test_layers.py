"""The package layers import downwards only, no two modules import each other, and the code map matches the tree.

Every file under src/sia is checked, plugins included; the checks are also run on planted trees, so a test that
could never fail is caught too.
"""

import ast
import re
from pathlib import Path

from conftest import ROOT

SRC = ROOT / "src" / "sia"
# lowest first; a module may import its own package and any package of a lower rank, never a sibling of its rank
LAYERS = [("errors", "paths", "values"), ("task",), ("harness", "policy", "store"), ("evaluation",), ("weights",), ("agents",), ("loop",),
          ("api",), ("cli", "__init__"), ("plugins",)]
RANK = {name: i for i, names in enumerate(LAYERS) for name in names}


def _part(module: str) -> str:
    """The layer of a dotted module under sia: its first component after `sia`."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def modules(src: Path) -> dict[str, Path]:
    """Every module of the package at `src` (a folder named like the package), by dotted name."""
    out = {}
    for path in sorted(src.rglob("*.py")):
        rel = path.relative_to(src.parent).with_suffix("")
        out[".".join(p for p in rel.parts if p != "__init__") if rel.name == "__init__" else ".".join(rel.parts)] = path
    return out


def imports(path: Path, known: dict[str, Path]):
    """(module imported, line) for every import in the file, in functions and TYPE_CHECKING blocks too: `from a import b`
    counts as importing `a.b` when that is a module, else `a`."""
    tree = ast.parse(path.read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            yield from ((a.name, node.lineno) for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            subs = [f"{node.module}.{a.name}" for a in node.names]
            yield from ((t, node.lineno) for t in subs if t in known)
            if any(t not in known for t in subs):
                yield node.module, node.lineno


def upward(src: Path) -> list[str]:
    """Imports that run up or across a layer."""
    known, bad = modules(src), []
    for module, path in known.items():
        here = _part(module) if module != src.name else "__init__"
        assert here in RANK, f"{module}: package {here!r} has no layer; add it to LAYERS and the architecture page"
        for target, line in imports(path, known):
            if not target.startswith(src.name + ".") or _part(target) == here:
                continue
            if RANK[_part(target)] >= RANK[here]:
                bad.append(f"{path.relative_to(src.parent)}:{line}: {module} ({here}) imports {target} ({_part(target)})")
    return bad


def circles(src: Path) -> list[list[str]]:
    """Groups of modules that import each other, directly or through others (strongly connected components)."""
    known = modules(src)
    graph = {m: {t for t, _ in imports(p, known) if t in known and t != m} for m, p in known.items()}
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack, on, found = [], set(), []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = []
            while True:
                w = stack.pop()
                on.discard(w)
                group.append(w)
                if w == v:
                    break
            if len(group) > 1:
                found.append(sorted(group))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_every_import_goes_down_a_layer():
    bad = upward(SRC)
    assert not bad, "imports that run up or across a layer:\n" + "\n".join(bad)


def test_no_two_modules_import_each_other():
    found = circles(SRC)
    assert not found, "import circles (move the type both need one level down):\n" + "\n".join(" <-> ".join(c) for c in found)


def test_the_checks_find_a_planted_circle_and_a_planted_upward_import(tmp_path):
    pkg = tmp_path / "sia"
    for name, text in {"__init__.py": "", "errors.py": "", "task/__init__.py": "",
                       "task/a.py": "from sia.task.b import B\n", "task/b.py": "def f():\n    from sia.task import a\n",
                       "harness/__init__.py": "", "harness/x.py": "import sia.errors\n",
                       "store/__init__.py": "", "store/y.py": "from sia.loop import z\n",
                       "loop/__init__.py": "", "loop/z.py": "from sia.task.a import B\n"}.items():
        (pkg / name).parent.mkdir(parents=True, exist_ok=True)
        (pkg / name).write_text(text)
    assert circles(pkg) == [["sia.task.a", "sia.task.b"]]
    assert [line.split(": ", 1)[1] for line in upward(pkg)] == ["sia.store.y (store) imports sia.loop.z (loop)"]


def test_the_code_map_matches_the_tree():
    page = (ROOT / "docs" / "architecture.md").read_text()
    section = page.split("## Code map", 1)[1].split("\n## ", 1)[0]
    listed = set(re.findall(r"`(sia/[\w/.]+\.py)`", section))
    actual = {str(p.relative_to(SRC.parent)) for p in SRC.rglob("*.py")
              if p.name != "__init__.py" and "plugins" not in p.relative_to(SRC).parts}
    assert listed == actual, f"missing from the code map: {sorted(actual - listed)}; listed but absent: {sorted(listed - actual)}"


def test_the_repository_links_nothing_outside_itself():
    for doc in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]:
        text = doc.read_text()
        for target in re.findall(r"\]\(([^)#]+)", text):
            assert not target.startswith(("http://", "https://", "../")), f"{doc.name} links outside the repository: {target}"
            assert (doc.parent / target).exists(), f"{doc.name} links to {target}, which does not exist"
