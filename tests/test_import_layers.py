"""Imports run one way, as the "Package layout" table of docs/index.md says, and every
module of the package imports alone in a fresh interpreter."""

import ast
import json
import pathlib
import re
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).parents[1]
PACKAGE = ROOT / "sklearn_fastgrnn"
INDEX = (ROOT / "docs" / "index.md").read_text()
# optional packages that importing a module must not import (only calling a function may)
OPTIONAL = ("matplotlib", "onnx", "onnxruntime", "safetensors", "torch")


def module_name(path):
    """``sklearn_fastgrnn.export.c`` of ``.../sklearn_fastgrnn/export/c.py``."""
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(path): path for path in sorted(PACKAGE.rglob("*.py"))}


def documented_layers():
    """``{file or directory of the table: (layer number, layer name)}`` from docs/index.md."""
    section = INDEX.split("## Package layout", 1)[1]
    rows = re.findall(r"^\| (\d+) ([\w ]+?) \| `([\w./]+)` \|", section, flags=re.M)
    return {entry: (int(number), name) for number, name, entry in rows}


def layer_of(module):
    """The documented layer of a module: its own row, or the row of its directory."""
    table = documented_layers()
    relative = MODULES[module].relative_to(PACKAGE).as_posix()
    for entry in (relative, *(f"{d}/" for d in _parents(relative))):
        if entry in table:
            return table[entry]
    raise AssertionError(
        f"{relative} has no row in the 'Package layout' table of docs/index.md: "
        "add one (layer, module, what it holds)."
    )


def _parents(relative):
    parts = relative.split("/")[:-1]
    return ["/".join(parts[: i + 1]) for i in range(len(parts))][::-1]


def package_imports(module):
    """Modules of the package that ``module`` imports anywhere (functions included)."""
    path = MODULES[module]
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.startswith("sklearn_fastgrnn"))
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - node.level + 1]
                source = ".".join(base + ([node.module] if node.module else []))
            elif node.module and node.module.startswith("sklearn_fastgrnn"):
                source = node.module
            else:
                continue
            for alias in node.names:  # ``from . import _size`` imports a module
                candidate = f"{source}.{alias.name}"
                found.add(candidate if candidate in MODULES else source)
    found.discard(module)
    return found


def test_every_module_has_a_documented_layer():
    for module in MODULES:
        layer_of(module)
    names = [name for _, name in sorted(set(documented_layers().values()))]
    assert names[:3] == ["utilities", "engine", "estimator"]
    assert names[-2:] == ["export", "CLI"]


@pytest.mark.parametrize("module", sorted(MODULES))
def test_imports_go_to_the_same_layer_or_below(module):
    number, name = layer_of(module)
    upward = {
        other: layer_of(other) for other in package_imports(module)
        if layer_of(other)[0] > number
    }
    assert not upward, (f"{module} ({number} {name}) imports from a layer below its own in "
                        f"docs/index.md: {upward}")


def test_the_engine_imports_only_utilities_and_engine():
    engine = [m for m in MODULES if layer_of(m)[1] == "engine"]
    assert {"sklearn_fastgrnn._cell", "sklearn_fastgrnn._sparsity",
            "sklearn_fastgrnn._size"} <= set(engine)
    for module in engine:
        assert all(layer_of(m)[0] <= layer_of(module)[0] for m in package_imports(module))


def test_package_imports_have_no_cycle():
    graph = {module: package_imports(module) for module in MODULES}
    done, path = set(), []

    def visit(module):
        if module in path:
            cycle = path[path.index(module):] + [module]
            raise AssertionError(f"import cycle: {' -> '.join(cycle)}")
        if module in done:
            return
        path.append(module)
        for other in sorted(graph[module]):
            visit(other)
        path.pop()
        done.add(module)

    for module in sorted(graph):
        visit(module)


IMPORT_EACH_ALONE = """
import importlib, json, sys
failures = {}
for name in json.loads(sys.argv[1]):
    for loaded in [m for m in sys.modules if m.split(".")[0] == "sklearn_fastgrnn"]:
        del sys.modules[loaded]
    try:
        importlib.import_module(name)
    except Exception as exc:
        failures[name] = f"{type(exc).__name__}: {exc}"
optional = sorted(m for m in sys.modules if m.split(".")[0] in json.loads(sys.argv[2]))
print(json.dumps({"failures": failures, "optional": optional}))
"""


def test_each_module_imports_alone_in_a_fresh_interpreter():
    names = sorted(MODULES)
    result = subprocess.run(
        [sys.executable, "-c", IMPORT_EACH_ALONE, json.dumps(names), json.dumps(OPTIONAL)],
        cwd=ROOT, capture_output=True, text=True, timeout=300, check=True,
    )
    report = json.loads(result.stdout.splitlines()[-1])
    assert report["failures"] == {}
    assert report["optional"] == [], "importing a module must not import optional packages"
    assert len(names) >= 20
