"""MkDocs hooks: the README is the site's home page.

The README links to the pages as ``docs/PAGE.md`` (relative to the repository's root, so that
the links work on a forge); on the site, the home page sits next to them.
"""

import pathlib
import re

from mkdocs.structure.files import File

README = pathlib.Path(__file__).resolve().parent.parent / "README.md"
PAGE_LINK = re.compile(r"\]\(docs/")


def on_files(files, config):
    text = PAGE_LINK.sub("](", README.read_text(encoding="utf-8"))
    files.append(File.generated(config, "index.md", content=text))
    return files


def on_serve(server, config, builder):
    server.watch(str(README))
    return server
