"""The Python code blocks of the README and the user guide run as written."""

import pathlib
import re

import pytest

ROOT = pathlib.Path(__file__).parents[1]
PAGES = [ROOT / "README.md", ROOT / "docs" / "user_guide.md"]


def _blocks(page):
    return re.findall(r"```python\n(.*?)```", page.read_text(), flags=re.S)


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_code_blocks_run(page):
    blocks = _blocks(page)
    assert blocks, f"{page.name} has no python block"
    for code in blocks:
        exec(compile(code, str(page), "exec"), {})
