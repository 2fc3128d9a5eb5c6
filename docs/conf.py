"""Sphinx configuration: Markdown pages (MyST), numpydoc docstrings, a gallery."""

project = "sklearn-fastgrnn"
extensions = [
    "myst_parser",
    "numpydoc",
    "sphinx.ext.autodoc",
    "sphinx_gallery.gen_gallery",
]
source_suffix = {".md": "markdown", ".rst": "restructuredtext"}  # the gallery writes .rst
myst_enable_extensions = ["dollarmath"]
numpydoc_show_class_members = False
sphinx_gallery_conf = {
    "examples_dirs": "../examples",
    "gallery_dirs": "auto_examples",
    "filename_pattern": r"/(plot|run)_",
}
exclude_patterns = ["_build"]
