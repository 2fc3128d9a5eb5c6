"""Every example in examples/ runs as it is."""

import os
import pathlib
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).parents[1]
EXAMPLES = sorted((ROOT / "examples").glob("*.py"))
# this checkout's package, whatever is installed; figures drawn off-screen
ENV = {**os.environ, "MPLBACKEND": "Agg",
       "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}


def test_there_are_examples():
    assert EXAMPLES
    assert all(p.name.startswith(("plot_", "run_")) for p in EXAMPLES), (
        "the gallery runs plot_/run_")


# The examples run once per CI run: .ci/run builds the documentation, whose
# gallery (sphinx-gallery) executes every example and fails the build on an
# error or a ConvergenceWarning (docs/conf.py), and sets this variable so that
# the test below does not run them a second time. Without it (a developer's
# `python -m pytest`), the test runs each example with the same strictness.
RUN_BY_GALLERY = os.environ.get("SKLEARN_FASTGRNN_EXAMPLES_RUN_BY_GALLERY", "") not in ("", "0")


@pytest.mark.slow
@pytest.mark.skipif(RUN_BY_GALLERY, reason="the documentation build of .ci/run runs the "
                    "examples (SKLEARN_FASTGRNN_EXAMPLES_RUN_BY_GALLERY is set)")
@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_example_runs(path, tmp_path):
    assert path.read_text().lstrip().startswith('"""'), "a docstring title comes first"
    # run as a script; a plot_ example must leave at least one figure
    runner = (
        "import runpy, sys, warnings, matplotlib.pyplot as plt\n"
        "from sklearn.exceptions import ConvergenceWarning\n"
        "warnings.filterwarnings('error', category=ConvergenceWarning)\n"
        f"runpy.run_path({str(path)!r}, run_name='__main__')\n"
        f"sys.exit(0 if plt.get_fignums() or not {path.name.startswith('plot_')} "
        "else 'a plot_ example drew no figure')\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", runner], cwd=tmp_path, capture_output=True, text=True,
        timeout=300, env=ENV,
    )
    assert result.returncode == 0, result.stderr[-3000:]
