"""The layout's rules, checked on the source: the runtime installs and imports alone (no training, export,
samples or torch), the contract is the bottom layer, no module imports another that imports it back, and
no file is larger than a newcomer can read."""

from __future__ import annotations

import ast
import pkgutil
import subprocess
import sys
from pathlib import Path

import mmad.runtime

REPO = Path(__file__).resolve().parents[2]
PACKAGES = {"training": "mmad.training", "export": "mmad.export", "runtime": "mmad.runtime",
            "samples": "mmad.samples", "plugins": "mmad.plugins"}  # fmt: skip
# The one runtime module allowed to reach above the runtime: `mmad bench` handed a checkpoint.
CHECKPOINT_ADAPTER = "mmad.runtime.bench.checkpoint"
MAX_LINES = 450
ABOVE_THE_RUNTIME = ("mmad.training", "mmad.export", "mmad.samples")


def python_modules() -> dict[str, Path]:
    """Every module of the package: dotted name -> file."""
    found = {}
    for folder, package in PACKAGES.items():
        for path in sorted((REPO / folder).rglob("*.py")):
            if "build" in path.relative_to(REPO).parts:
                continue
            parts = path.relative_to(REPO / folder).with_suffix("").parts
            name = ".".join([package, *parts])
            found[name.removesuffix(".__init__")] = path
    return found


def imported_modules(path: Path, name: str, known: set[str]) -> set[str]:
    """The package modules `path` imports anywhere in its body (lazy imports included)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(
                    package.split(".")[: len(package.split(".")) - node.level + 1] + ([base] if base else [])
                )
            targets = [base] + [f"{base}.{alias.name}" for alias in node.names]
        else:
            continue
        out |= {t for t in targets if t in known}
    return out - {name}


def test_every_runtime_module_imports_with_training_export_and_samples_blocked():
    names = [m.name for m in pkgutil.walk_packages(mmad.runtime.__path__, "mmad.runtime.")]
    names = [n for n in names if n != CHECKPOINT_ADAPTER and not n.startswith("mmad.runtime.gst_")]
    code = (
        "import importlib, sys\n"
        "class Block:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        f"        if name.split('.')[0] == 'torch' or name.startswith({ABOVE_THE_RUNTIME!r}):\n"
        "            raise ImportError(f'blocked: {name}')\n"
        "sys.meta_path.insert(0, Block())\n"
        f"for name in {names!r}:\n"
        "    importlib.import_module(name)\n"
        "print(len(sys.modules))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert len(names) >= 20  # the walk found the runtime's modules, not an empty package


def test_the_runtime_imports_nothing_above_it_but_through_the_checkpoint_adapter():
    modules = python_modules()
    known = set(modules)
    offenders = []
    for name, path in modules.items():
        if not name.startswith("mmad.runtime.") or name == CHECKPOINT_ADAPTER:
            continue
        above = {m for m in imported_modules(path, name, known) if m.startswith(ABOVE_THE_RUNTIME)}
        offenders += [f"{name} -> {m}" for m in sorted(above)]
    assert not offenders, offenders


def test_the_contract_is_the_bottom_layer():
    modules = python_modules()
    imports = imported_modules(modules["mmad.runtime.contract"], "mmad.runtime.contract", set(modules))
    assert imports <= {"mmad.runtime.errors"}, imports


def test_no_import_cycles_among_modules():
    modules = python_modules()
    graph = {name: imported_modules(path, name, set(modules)) for name, path in modules.items()}
    # A package's __init__ that re-exports its own submodules is not a cycle with them.
    graph = {n: {m for m in deps if not n.startswith(m + ".")} for n, deps in graph.items()}
    cycles, state = [], {}

    def visit(node: str, stack: list[str]) -> None:
        state[node] = "open"
        for dep in sorted(graph[node]):
            if state.get(dep) == "open":
                cycles.append(stack[stack.index(dep) :] + [dep])
            elif dep not in state:
                visit(dep, [*stack, dep])
        state[node] = "done"

    for name in sorted(graph):
        if name not in state:
            visit(name, [name])
    assert not cycles, [" -> ".join(c) for c in cycles]


def test_no_python_file_is_over_the_size_a_newcomer_reads():
    sizes = {str(p.relative_to(REPO)): len(p.read_text().splitlines()) for p in python_modules().values()}
    big = {path: n for path, n in sizes.items() if n > MAX_LINES}
    assert not big, big
