"""The Python code blocks of the README and the user guide run as written; the
API page lists what the package exports."""

import importlib
import importlib.util
import pathlib
import re
import warnings

import pytest
from sklearn.exceptions import ConvergenceWarning

import sklearn_fastgrnn

ROOT = pathlib.Path(__file__).parents[1]
PAGES = [ROOT / "README.md", ROOT / "docs" / "user_guide.md", ROOT / "docs" / "design.md",
         ROOT / "docs" / "regression.md"]
API = (ROOT / "docs" / "api.md").read_text()


def _blocks(page):
    return re.findall(r"```python\n(.*?)```", page.read_text(), flags=re.S)


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_code_blocks_run(page):
    blocks = _blocks(page)
    assert blocks, f"{page.name} has no python block"
    for code in blocks:
        if "sklearn.callback" in code and importlib.util.find_spec("sklearn.callback") is None:
            continue  # scikit-learn 1.9's callbacks; the minimum-versions run has 1.6
        with warnings.catch_warnings():  # a reader would see it: the block must not warn
            warnings.simplefilter("error", ConvergenceWarning)
            exec(compile(code, str(page), "exec"), {})


def _resolve(dotted):
    module, _, name = ("sklearn_fastgrnn." + dotted).rpartition(".")
    return getattr(importlib.import_module(module), name)


def test_api_table_names_exist_and_cover_the_package():
    rows = re.findall(r"^\| `([\w.]+)`( \(root\))? \| (.+) \|$", API, flags=re.M)
    assert len(rows) >= 20
    for dotted, root, line in rows:
        obj = _resolve(dotted)
        assert line.strip(), dotted
        if root:
            assert getattr(sklearn_fastgrnn, dotted.rpartition(".")[2]) is obj, dotted
    listed = {dotted.rpartition(".")[2] for dotted, _, _ in rows}
    exported = set(sklearn_fastgrnn.__all__) - {"__version__"}
    assert exported <= listed, f"missing from docs/api.md: {sorted(exported - listed)}"
    assert {d.rpartition(".")[2] for d, root, _ in rows if root} == exported


def test_api_table_names_have_reference_entries():
    documented = set(re.findall(
        r"\.\. auto(?:class|function|data):: sklearn_fastgrnn\.([\w.]+)", API))
    rows = re.findall(r"^\| `([\w.]+)`", API, flags=re.M)
    for dotted in rows:
        name = dotted.rpartition(".")[2]
        assert any(d == dotted or d.rpartition(".")[2] == name for d in documented), dotted


def public_modules():
    """Every module of the package whose dotted name has no part starting with "_"."""
    import pkgutil

    for info in pkgutil.walk_packages(sklearn_fastgrnn.__path__, "sklearn_fastgrnn."):
        if not any(part.startswith("_") for part in info.name.split(".")[1:]):
            yield importlib.import_module(info.name)


def _public_names(module):
    """``__all__``, or without one the classes and functions the module defines."""
    import inspect

    names = getattr(module, "__all__", None)
    if names is None:
        names = [name for name, obj in vars(module).items()
                 if not name.startswith("_") and (inspect.isclass(obj) or inspect.isfunction(obj))
                 and obj.__module__ == module.__name__]
    return names


def test_every_public_module_lists_its_names_in_the_api_table():
    rows = re.findall(r"^\| `([\w.]+)`", API, flags=re.M)
    listed = {dotted.rpartition(".")[2] for dotted in rows}
    modules = list(public_modules())
    assert {"sklearn_fastgrnn.export.compiled", "sklearn_fastgrnn.plotting"} <= {
        m.__name__ for m in modules}
    for module in modules:
        names = _public_names(module)
        assert names, module.__name__
        for name in names:
            assert hasattr(module, name), f"{module.__name__}.__all__ names {name}, undefined"
        missing = sorted(set(names) - listed - {"__version__"})
        assert not missing, f"{module.__name__}: missing from docs/api.md: {missing}"
