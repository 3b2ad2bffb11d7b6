"""Griffe extension for the API reference: Pymoult's docstrings use reST markup, the site
Markdown.

- a role (``:func:`name```, ``:class:`~pkg.mod.Name```, ``:meth:``, ``:mod:``, ``:attr:``,
  ``:data:``) becomes a code span of the name (without a ``~`` path: its last part);
- a paragraph ending in ``::`` (a literal block follows) ends in ``:``.

``code`` in double backquotes is already a Markdown code span, and an indented block after a
blank line already a code block.
"""

import re

import griffe

ROLE = re.compile(r":(?:func|class|meth|mod|attr|data|exc|obj):`(~?)([^`]+)`")
LITERAL_BLOCK = re.compile(r"::\n(?=\n)")


def _role(match):
    tilde, target = match.groups()
    name = target.rsplit(".", 1)[-1] if tilde else target
    return f"`{name}`"


def markdown(text):
    """reST docstring ``text`` as the Markdown the site renders."""
    return LITERAL_BLOCK.sub(":\n", ROLE.sub(_role, text))


class RestToMarkdown(griffe.Extension):
    """Rewrite every docstring as it is loaded."""

    def on_object(self, *, obj, **kwargs):
        if obj.docstring is not None:
            obj.docstring.value = markdown(obj.docstring.value)
