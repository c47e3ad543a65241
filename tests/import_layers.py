"""The import-layers contract of ``bench/`` and ``methods/``: which package may import which.

Each module belongs to the layer of its longest listed prefix (:data:`LAYERS`, lowest
first). An import (at module level or inside a function: both count) may go

* to a lower layer;
* within the same layer, only inside the same package (``bench.runner.suites`` may import
  ``bench.runner.bases``; the study and the report share a layer and must not import each
  other);

and never to the importing module's own package ``__init__`` (a registry package imports
its members, so a member importing it closes a cycle; ``__main__`` modules excepted).
Import cycles are rejected too.

``python tests/import_layers.py`` prints every violation (exit 1 when there is one); the
test suite (``tests/test_layers.py``) and ``nox -s lint`` run it.
"""

from __future__ import annotations

import ast
import sys
from collections.abc import Iterable
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
ROOTS = ("bench", "methods")

#: Layers, lowest first; each lists package (or module) prefixes.
LAYERS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("package root", ("bench",)),  # bench/__init__.py: the version, nothing else
    ("core", ("bench.core",)),
    ("metrics", ("bench.metrics",)),
    ("formats", ("bench.formats",)),
    # per-query values of runs and the paired bootstrap (numpy and the formats' formulas)
    ("stats", ("bench.stats",)),
    # spec vocabulary that bench.config validates against (plain Python, no imports)
    ("spn vocabulary", ("bench.spn.compositions", "bench.spn.positives.templates")),
    ("config", ("bench.config",)),
    ("data services", ("bench.synthetic", "bench.images", "bench.tracking")),
    ("backbones", ("bench.backbones",)),
    ("methods", ("methods",)),
    # released checkpoint layouts -> a method's own state dict
    ("checkpoint formats", ("bench.checkpoints",)),
    ("evaluation", ("bench.evaluation",)),
    ("spn", ("bench.spn",)),
    ("train", ("bench.train",)),
    (
        "runner plan",
        (
            "bench.runner.paths",
            "bench.runner.profiles",
            "bench.runner.bases",
            "bench.runner.recipes",
            "bench.runner.suites",
            "bench.runner.storage",
        ),
    ),
    # the report reads what suites are and where studies live, never how they run
    (
        "runner execution, report",
        (
            "bench.runner.parents",
            "bench.runner.grid",
            "bench.runner.study",
            "bench.runner.calibration",
            "bench.report",
        ),
    ),
    ("ablate", ("bench.runner.ablate", "bench.runner")),
    ("cli", ("bench.cli",)),
)


def module_files(repo: Path = REPO) -> dict[str, Path]:
    """Module name -> file of every module under the roots."""
    out: dict[str, Path] = {}
    for root in ROOTS:
        for path in sorted((repo / root).rglob("*.py")):
            parts = list(path.relative_to(repo).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            out[".".join(parts)] = path
    return out


def _resolve(name: str, modules: dict[str, Path]) -> str | None:
    while name and name not in modules:
        name = name.rpartition(".")[0]
    return name or None


def imports_of(module: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """Every module of the roots that ``module`` imports (function-level imports included)."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*parts, base] if base else parts)
            names = [
                f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base for a in node.names
            ]
        for name in names:
            target = _resolve(name, modules)
            if target is not None and target != module:
                found.add(target)
    return found


def import_graph(repo: Path = REPO) -> dict[str, set[str]]:
    modules = module_files(repo)
    return {m: imports_of(m, p, modules) for m, p in modules.items()}


def layer_of(module: str) -> tuple[int, str] | None:
    """(layer index, the prefix it matched) of a module; None when no layer lists it."""
    best: tuple[int, str] | None = None
    for index, (_, prefixes) in enumerate(LAYERS):
        for prefix in prefixes:
            exact_root = prefix == "bench" and module != "bench"
            if exact_root:
                continue
            if (module == prefix or module.startswith(prefix + ".")) and (
                best is None or len(prefix) > len(best[1])
            ):
                best = (index, prefix)
    return best


def package_of(module: str) -> str:
    """``bench.<package>`` (or ``methods``) of a module."""
    parts = module.split(".")
    return ".".join(parts[:2]) if parts[0] == "bench" else parts[0]


def edge_violation(source: str, target: str) -> str | None:
    """Why the import ``source -> target`` breaks the contract, or None."""
    a, b = layer_of(source), layer_of(target)
    if a is None or b is None:
        return f"{source if a is None else target}: in no layer of tests/import_layers.py"
    if b[0] > a[0]:
        return (
            f"{source} -> {target}: layer '{LAYERS[a[0]][0]}' imports the higher layer "
            f"'{LAYERS[b[0]][0]}'"
        )
    if b[0] == a[0] and package_of(source) != package_of(target):
        return f"{source} -> {target}: {a[1]} and {b[1]} share layer '{LAYERS[a[0]][0]}'"
    own_init = source.startswith(target + ".") and target != "bench"
    if own_init and not source.endswith(".__main__"):
        return f"{source} -> {target}: a member imports its own package's __init__"
    return None


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []
    counter = [0]

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                out.append(sorted(component))

    sys.setrecursionlimit(max(10_000, sys.getrecursionlimit()))
    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def violations(graph: dict[str, set[str]]) -> list[str]:
    """Every broken rule of the contract (see the module docstring)."""
    found = [layer_of(m) is None and f"{m}: in no layer of tests/import_layers.py" for m in graph]
    out = [f for f in found if f]
    for source in sorted(graph):
        for target in sorted(graph[source]):
            problem = edge_violation(source, target)
            if problem is not None:
                out.append(problem)
    out += [f"import cycle: {' <-> '.join(c)}" for c in cycles(graph)]
    return list(dict.fromkeys(out))


def main(argv: Iterable[str] = ()) -> int:
    problems = violations(import_graph())
    for problem in problems:
        print(problem)
    n = len(import_graph())
    print(f"import layers: {len(problems)} violations among {n} modules", file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
