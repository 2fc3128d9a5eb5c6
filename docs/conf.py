"""Sphinx configuration: Markdown pages (MyST), numpydoc docstrings, a gallery.

Build (warnings are errors; the gallery's examples run)::

    python -m sphinx -W --keep-going -b html docs docs/_build/html
"""

import os
import pathlib
import sys
import warnings

import matplotlib
from sklearn.exceptions import ConvergenceWarning

# document and run this checkout's package, whatever is installed
ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
matplotlib.use("Agg")
# The gallery runs the examples in this process and shows what they print: a
# ConvergenceWarning there would greet every reader, so it fails the build
# (an example that trains a few epochs on purpose catches it and says so).
warnings.filterwarnings("error", category=ConvergenceWarning)

from sklearn_fastgrnn import __version__  # noqa: E402

project = "sklearn-fastgrnn"
author = "the sklearn-fastgrnn developers"
copyright = "the sklearn-fastgrnn developers"
version = release = __version__
extensions = [
    "myst_parser",
    "numpydoc",
    "sphinx.ext.autodoc",
    "sphinx.ext.mathjax",
    "sphinx_gallery.gen_gallery",
]
source_suffix = {".md": "markdown", ".rst": "restructuredtext"}  # the gallery writes .rst
myst_enable_extensions = ["dollarmath"]
myst_heading_anchors = 3
numpydoc_show_class_members = False
numpydoc_class_members_toctree = False
html_theme = "pydata_sphinx_theme"
html_title = f"sklearn-fastgrnn {release}"
html_theme_options = {"navigation_with_keys": False, "show_toc_level": 2}
sphinx_gallery_conf = {
    "examples_dirs": "../examples",
    "gallery_dirs": "auto_examples",
    "filename_pattern": r"/(plot|run)_",  # execute every example
    "image_scrapers": ("matplotlib",),
    "within_subsection_order": "FileNameSortKey",
    "remove_config_comments": True,
}
exclude_patterns = ["_build", "auto_examples/*.ipynb", "auto_examples/*.py"]
