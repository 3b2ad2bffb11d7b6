"""The documentation's sources: the API reference renders every public module, and the README's
links reach pages that exist (``mkdocs build --strict``, in ``.ci/run``, checks the rest)."""

import pathlib
import re

import pytest

from test_layout import PUBLIC_MODULES

ROOT = pathlib.Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"


def rendered_modules():
    """The modules the API reference pages render (``::: name`` lines)."""
    return {match.group(1) for page in (DOCS / "reference").glob("*.md")
            for match in re.finditer(r"^::: ([\w.]+)\s*$", page.read_text(), re.MULTILINE)}


@pytest.mark.parametrize("name", PUBLIC_MODULES)
def test_the_api_reference_renders_every_public_module(name):
    assert name in rendered_modules()


def test_the_readme_links_to_pages_that_exist():
    links = re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", (ROOT / "README.md").read_text())
    assert links
    for link in links:
        assert link.startswith("docs/") and link.endswith(".md"), link
        assert (ROOT / link).is_file(), link
