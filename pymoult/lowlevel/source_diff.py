"""Source versions of a module, and what changed between two of them, found in linear time.

A module's source is cut into its top-level statements (:class:`Statement`): each knows its
kind (``def``, ``class``, ``import``, ``assign`` to plain names, or ``other``), the names it
binds, its lines and its exact text. Two versions are compared by text, statement by statement,
so an unchanged definition is recognised whatever moved around it.

Parsing a whole module is the slow part (about 0.2 s for 5,000 definitions; compiling it costs
about as much), so a new version is compared with the previous one *incrementally*: the lines
the two share at the start and at the end are skipped (found by comparing the two texts at C
speed; only the span between is cut into lines, the shared lines are the previous version's),
the span in between is widened to whole statements of the previous version, and only that span
of the new version is parsed. This is sound: the shared prefix ends, and the shared suffix
starts, at a statement boundary of the previous version, and the new span parses on its own as
complete statements (else the whole new source is parsed, which reports a real syntax error at
its real line). So a one-line change in a large module costs a few milliseconds, and matching
is linear in the module's size (jurigged matches definitions pairwise, in quadratic time).

The previous version of a module is the one Pymoult last applied (:func:`remember_version`),
or the source recorded at its import (sources tracked), or its source file, checked against the
running code (:func:`version_of`): a file edited after the module was imported cannot be the
previous version, since it would hide the very changes to apply. Then, and when the file *is*
the new version (edited in place), the new version is compared with the live module itself
(:func:`change_from_live`, :mod:`.live_comparison`). Whatever the previous version, a definition
that did not change between the two versions but whose live code comes from elsewhere (an update
script changed it) is compared with the new version too (:func:`with_live_differences`).

With sources tracked, the first update does not parse the whole source recorded at the import
either (that was most of its time): the version is kept as text, cut where the module's own
top-level functions start (their code was compiled from that very text, so each is a statement
boundary, checked to be a ``def`` or decorator line at column 0), and only the part around the
change is parsed. A part that does not parse on its own is parsed whole, from boundaries that
are certain, so a wrong cut costs time, never a wrong result. What an update needs from the
parts not parsed is read from their text: the names on their ``def``/``class`` lines (to
notice a definition rebound since, and to renumber functions below a change), and whether a
name or a star import may be bound there (then that part is parsed).
"""

from __future__ import annotations

import ast
import bisect
import importlib.util
import operator
import re
import threading
import types
import weakref
from collections.abc import Callable, Iterable, Sequence
from typing import Any, ClassVar, Literal, NoReturn, TypeVar, Union

from .._cpython import dict_version
from ..errors import PymoultTypeError, PymoultValueError
from .live_comparison import (CHANGED, SAME, UNDECIDED, Verdict, foreign_definitions, judge,
                              names_bound, removed_names, same_code)
from .relinking import wrapped_layers
from ..source_tracking import tracked_source

__all__ = ["Statement", "SourceVersion", "SourceChange", "parse_version", "compare",
           "change_from_live", "with_live_differences", "live_files", "version_of",
           "known_version",
           "file_version", "recorded_version", "remember_version", "forget_version",
           "same_code"]

#: What a top-level statement is (see :class:`Statement`).
Kind = Literal["def", "class", "import", "assign", "other"]
#: A piece of a version: a statement, or a part not parsed yet.
_Piece = Union["Statement", "_Chunk"]
_T = TypeVar("_T")

# module name -> _Record
_versions: dict[str, _Record] = {}
_versions_lock = threading.Lock()
_parse_lock = threading.Lock()  # parsing the unparsed parts of a version (one thread at a time)
_LINE = re.compile(r"[^\r\n]*(?:\r\n|\r|\n)|[^\r\n]+$")
#: What ``str.splitlines`` cuts at besides ``\r`` and ``\n``: none of them ends a line of Python.
_OTHER_BREAKS = ("\v", "\f", "\x1c", "\x1d", "\x1e", "\x85", "\u2028", "\u2029")


def split_lines(text: str) -> list[str]:
    """Lines with their ends, cut where Python's tokenizer cuts them: ``str.splitlines``
    (several times faster than the regular expression) unless the text holds a form feed or
    another character it would also cut at."""
    if not any(character in text for character in _OTHER_BREAKS):  # each a fast C scan
        return text.splitlines(keepends=True)
    return _LINE.findall(text)


_CHUNK = 256  # lines compared at once, as list slices (at C speed), before one by one


def _common_prefix(a: Sequence[_T], b: Sequence[_T], limit: int) -> int:
    """How many first items the sequences ``a`` and ``b`` share, at most ``limit``."""
    n = 0
    while n + _CHUNK <= limit and a[n:n + _CHUNK] == b[n:n + _CHUNK]:
        n += _CHUNK
    while n < limit and a[n] == b[n]:
        n += 1
    return n


def _common_suffix(a: Sequence[_T], b: Sequence[_T], limit: int) -> int:
    """How many last items the sequences ``a`` and ``b`` share, at most ``limit``."""
    end_a, end_b, n = len(a), len(b), 0
    while n + _CHUNK <= limit and \
            a[end_a - n - _CHUNK:end_a - n] == b[end_b - n - _CHUNK:end_b - n]:
        n += _CHUNK
    while n < limit and a[end_a - 1 - n] == b[end_b - 1 - n]:
        n += 1
    return n


_BLOCK = 1 << 15  # characters compared at once (copies of slices, compared at C speed)


def _common_prefix_chars(a: str, b: str, limit: int) -> int:
    """How many first characters the strings ``a`` and ``b`` share, at most ``limit``."""
    n = 0
    while n + _BLOCK <= limit and a[n:n + _BLOCK] == b[n:n + _BLOCK]:
        n += _BLOCK
    high = min(n + _BLOCK, limit)  # the answer is in n..high
    while n < high:
        middle = (n + high + 1) // 2
        if a[n:middle] == b[n:middle]:
            n = middle
        else:
            high = middle - 1
    return n


def _common_suffix_chars(a: str, b: str, limit: int) -> int:
    """How many last characters the strings ``a`` and ``b`` share, at most ``limit``."""
    end_a, end_b, n = len(a), len(b), 0
    while n + _BLOCK <= limit and \
            a[end_a - n - _BLOCK:end_a - n] == b[end_b - n - _BLOCK:end_b - n]:
        n += _BLOCK
    high = min(n + _BLOCK, limit)
    while n < high:
        middle = (n + high + 1) // 2
        if a[end_a - middle:end_a - n] == b[end_b - middle:end_b - n]:
            n = middle
        else:
            high = middle - 1
    return n


def _plain(text: str) -> bool:
    """Whether ``text`` has no line break but ``\\n`` (no ``\\r``, no form feed...)."""
    return "\r" not in text and not any(character in text for character in _OTHER_BREAKS)


def _shared_lines(before: SourceVersion, source: str) -> tuple[list[str], int, int] | None:
    """(the lines of ``source``, how many first lines and how many last lines it shares with
    the version ``before``), found from the texts rather than from lines: the two texts are
    compared character by character at C speed, and only the span between what they share is
    cut into lines, the shared lines being ``before``'s own (splitting and comparing the lines
    of a large module, tens of thousands of strings, was most of the time of a small change).
    The shared last lines do not overlap the shared first ones (at most ``min(len(a), len(b)) -
    first``, as :func:`_common_suffix` counts them). None unless both texts end their lines with
    ``\\n`` only: then a shared line is shared text starting right after a ``\\n``, or at the
    start."""
    old, lines = before.source, before.lines
    if not before.plain:
        return None
    if old == source:
        return lines, len(lines), 0
    limit = min(len(old), len(source))
    same_start = _common_prefix_chars(old, source, limit)
    start = old.rfind("\n", 0, same_start) + 1  # the line holding the first difference
    same_end = _common_suffix_chars(old, source, limit - start)
    if not _plain(source[same_start:len(source) - same_end]):  # the rest is ``old``'s text
        return None
    tail = len(old) - same_end  # the shared end starts here in ``old``
    # the \n before the first difference, and from the shared end on: when the two spans do
    # not overlap, only the shorter is counted (a count reads each character), the other is
    # what is left of the text's total, one per line but an unterminated last line
    if tail < same_start:
        first, after_tail = old.count("\n", 0, same_start), old.count("\n", tail)
    else:
        total = len(lines) - (bool(old) and not old.endswith("\n"))
        between = old.count("\n", same_start, tail)
        if same_start <= len(old) - tail:
            first = old.count("\n", 0, same_start)
            after_tail = total - first - between
        else:
            after_tail = old.count("\n", tail)
            first = total - after_tail - between
    # lines starting inside the shared end, after a \n that does not end the text, and at
    # its first character when that starts a line in both texts
    last = after_tail - (1 if same_end and old.endswith("\n") else 0)
    whole = same_end and (tail == 0 or old[tail - 1] == "\n") and \
        (len(source) == same_end or source[len(source) - same_end - 1] == "\n")
    if whole:
        last += 1
    if last <= 0:
        last, tail_length = 0, 0
    else:
        tail_length = len(old) - (tail if whole else old.index("\n", tail) + 1)
    new_lines = lines[:first]  # one list made (each line it holds is referenced once more)
    new_lines += split_lines(source[start:len(source) - tail_length])
    new_lines += lines[len(lines) - last:]
    return new_lines, first, last


class Statement:
    """One top-level statement of a source version (lines are 1-based, inclusive; a decorated
    definition starts at its first decorator).

    Its syntax tree, ``node``, is kept until the version is recorded as the one a module runs
    (:func:`remember_version` calls :meth:`SourceVersion.release_trees`); then it is parsed
    again from the statement's text whenever it is asked for, since the trees of a large module
    weigh tens of megabytes and an update needs only those of the statements it touches.
    """

    __slots__ = ("kind", "names", "start", "end", "text", "future", "_node", "_column", "_key")

    def __init__(self, kind: Kind, names: tuple[str, ...], start: int, end: int, text: str,
                 node: ast.stmt | None, column: int = 0, future: bool = False,
                 key: str | None = None) -> None:
        self.kind, self.names, self.start, self.end, self.text = kind, names, start, end, text
        self._node = node
        self._column = column  # where it starts on its first line, in UTF-8 bytes (a = 1; b = 2)
        self.future = future  # a ``from __future__`` import
        self._key = key

    @property
    def key(self) -> str:
        """What identifies its meaning: its syntax tree dumped without positions (so that line
        endings, a final newline or a neighbour on the same line do not count as a change).
        Computed once (an update compares the statements of a change several times)."""
        if self._key is None:
            self._key = ast.dump(self.node)
        return self._key

    @property
    def node(self) -> ast.stmt:
        """Its syntax tree, with the line numbers of its place in the version."""
        if self._node is not None:
            return self._node
        text = self.text
        if self._column:
            text = text.encode("utf-8")[self._column:].decode("utf-8")
        tree = compile(text, "<statement>", "exec", ast.PyCF_ONLY_AST, dont_inherit=True)
        node = tree.body[0]  # type: ignore[attr-defined]  # PyCF_ONLY_AST makes an ast.Module
        ast.increment_lineno(node, self.start - 1)
        return node

    def release_tree(self) -> None:
        self._node = None

    def shifted(self, delta: int) -> Statement:
        """The same statement ``delta`` lines further down (a tree it holds is not renumbered:
        only the position of the statement counts)."""
        return Statement(self.kind, self.names, self.start + delta, self.end + delta, self.text,
                         self._node, self._column, self.future, self._key)

    def __repr__(self) -> str:
        names = ", ".join(self.names) or "-"
        return f"<Statement {self.kind} {names} L{self.start}-{self.end}>"


def _target_names(target: ast.expr) -> tuple[str, ...] | None:
    if isinstance(target, ast.Name):
        return (target.id,)
    if isinstance(target, (ast.Tuple, ast.List)):
        names: tuple[str, ...] = ()
        for element in target.elts:
            inner = _target_names(element.value if isinstance(element, ast.Starred) else element)
            if inner is None:
                return None
            names += inner
        return names
    return None  # an attribute or a subscript: not a module binding


def _classify(node: ast.stmt) -> tuple[Kind, tuple[str, ...]]:
    """(kind, names bound) of a top-level statement."""
    if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
        return "def", (node.name,)
    if isinstance(node, ast.ClassDef):
        return "class", (node.name,)
    if isinstance(node, ast.Import):
        return "import", tuple(alias.asname or alias.name.partition(".")[0] for alias in node.names)
    if isinstance(node, ast.ImportFrom):
        if any(alias.name == "*" for alias in node.names):
            return "other", ()
        return "import", tuple(alias.asname or alias.name for alias in node.names)
    if isinstance(node, ast.Assign):
        names: tuple[str, ...] = ()
        for target in node.targets:
            inner = _target_names(target)
            if inner is None:
                return "other", ()
            names += inner
        return "assign", names
    if isinstance(node, ast.AnnAssign) and node.value is not None and node.simple:
        return "assign", (node.target.id,)  # type: ignore[union-attr]  # simple: a Name
    return "other", ()


def _statements(tree: ast.Module, lines: list[str], offset: int = 0) -> list[Statement]:
    statements = []
    for node in tree.body:
        start = min([node.lineno] + [d.lineno for d in getattr(node, "decorator_list", ())])
        end: int = node.end_lineno  # type: ignore[assignment]  # set by the parser
        kind, names = _classify(node)
        text = "".join(lines[start - 1:end])
        column = 0 if start < node.lineno else node.col_offset
        future = isinstance(node, ast.ImportFrom) and node.module == "__future__"
        statements.append(Statement(kind, names, start + offset, end + offset, text, node,
                                    column, future))
    return statements


#: A line of a definition at the top of a module: ``def``/``async def``/``class`` and its name,
#: or a decorator.
_DEFINITION_LINE = re.compile(r"(?:async[ \t]+)?def[ \t]+(\w+)|class[ \t]+(\w+)|@")
_DEFINITIONS = re.compile(r"^(?:(?:async[ \t]+)?def|class)[ \t]+(\w+)", re.MULTILINE)
_STAR_IMPORT = re.compile(r"import[\s\\]*\*")


class _Chunk:
    """Lines ``start``..``end`` of a version (1-based, inclusive) holding whole top-level
    statements that were not parsed (yet): it starts and ends at statement boundaries. Only a
    version made from a module's tracked source has chunks (see :func:`version_of`)."""

    __slots__ = ("start", "end", "_definitions")
    kind: ClassVar[Literal["chunk"]] = "chunk"
    names: ClassVar[tuple[str, ...]] = ()
    #: a future import comes first, and the first lines are always parsed
    future: ClassVar[bool] = False

    def __init__(self, start: int, end: int, definitions: list[str] | None = None) -> None:
        self.start, self.end = start, end
        self._definitions = definitions  # names on its def/class lines, once looked up

    def shifted(self, delta: int) -> _Chunk:
        return _Chunk(self.start + delta, self.end + delta, self._definitions)

    def definitions(self, lines: list[str]) -> list[str]:
        """The names on its lines starting with ``def name`` or ``class name``: its top-level
        definitions (a line inside a string that looks like one is taken too)."""
        if self._definitions is None:
            text = "".join(lines[self.start - 1:self.end])
            self._definitions = _DEFINITIONS.findall(text)
        return self._definitions

    def __repr__(self) -> str:
        return f"<unparsed L{self.start}-{self.end}>"


class SourceVersion:
    """One version of a module's source: its text, lines and top-level statements.

    A version made from a module's tracked source (:func:`version_of`) is parsed lazily: only
    the statements around a change, the first lines (docstring, future imports) and what an
    update asks for are parsed; the rest stays text (chunks cut at the lines where the module's
    own top-level functions start, known from their code). ``statements`` parses everything.
    """

    def __init__(self, source: str, filename: str, statements: Sequence[_Piece],
                 lines: list[str] | None = None,
                 module: weakref.ref[types.ModuleType] | None = None) -> None:
        self.source = source
        self.filename = filename
        self.lines = lines if lines is not None else split_lines(source)
        # Statement objects, and _Chunk objects not parsed yet: always a list, kept as given
        # (never changed in place, so a list of statements may stand for a list of pieces)
        self._pieces: list[_Piece] = statements  # type: ignore[assignment]
        self._module = module  # a weak reference to the module whose code marks statements
        self._released = False
        self._fresh = False  # made from the tracked source of the module, which runs it
        self._anchor_lines: list[int] | None = None
        self._plain: bool | None = None  # whether its lines end with \n only, once known
        # (the pieces, the names of their definitions), once asked for
        self._names: tuple[list[_Piece], tuple[str, ...]] | None = None
        self.has_future = _has_future_import(statements)

    @property
    def plain(self) -> bool:
        """Whether its lines all end with ``\\n`` (no ``\\r``, no form feed...)."""
        if self._plain is None:
            self._plain = _plain(self.source)
        return self._plain

    @property
    def statements(self) -> list[Statement]:
        """The top-level statements, in order (all parsed)."""
        pieces = self._pieces
        if any(type(piece) is _Chunk for piece in pieces):
            pieces = self._materialize(1, len(self.lines), whole=True)
        return pieces  # type: ignore[return-value]  # no chunk left

    @property
    def future_flags(self) -> int:
        """The compiler flags of the version's ``from __future__`` imports."""
        import __future__
        flags = 0
        pieces = self._pieces
        for statement in pieces:
            if not statement.future:
                if statement is pieces[0] and statement.kind == "other" and \
                        isinstance(statement.node, ast.Expr):
                    continue  # the docstring
                break
            node = statement.node  # type: ignore[union-attr]  # a chunk's ``future`` is False
            assert isinstance(node, ast.ImportFrom)  # what ``future`` means
            for alias in node.names:
                feature = getattr(__future__, alias.name, None)
                flags |= getattr(feature, "compiler_flag", 0)
        return flags

    def release_trees(self) -> None:
        """Let the statements' syntax trees go (see :class:`Statement`), but those of the
        statements that are not definitions, imports or assignments: they are few, and each
        update reads them (the names an ``if`` or a ``try`` may bind)."""
        self._released = True
        for statement in self._pieces:
            if statement.kind not in ("other", "chunk"):
                statement.release_tree()  # type: ignore[union-attr]  # not a chunk

    def binds(self, name: str) -> bool:
        """Whether a top-level statement binds ``name`` (a definition, an import, an assignment,
        or a statement such as an ``if`` or a ``try`` that may bind it)."""
        if any(name in piece.names for piece in self._pieces):
            return True
        for piece in self._pieces:
            if piece.kind == "other" and name in names_bound(piece.node)[0]:
                return True
        chunks = [piece for piece in self._pieces if type(piece) is _Chunk
                  and self._may_hold(piece, lambda text: name in text)]
        return any(self._parse_chunk(chunk, name) for chunk in chunks)

    @property
    def has_star_import(self) -> bool:
        """Whether a statement holds ``from ... import *`` (at the top or in an ``if``...)."""
        for piece in self._pieces:
            if piece.kind == "other" and names_bound(piece.node)[1]:
                return True
        chunks = [piece for piece in self._pieces if type(piece) is _Chunk
                  and self._may_hold(piece, _STAR_IMPORT.search)]
        return any(self._parse_chunk(chunk, None) for chunk in chunks)

    def _may_hold(self, chunk: _Chunk, found: Callable[[str], object]) -> bool:
        """Whether ``found`` finds something in the text of ``chunk`` (always when the text is not
        ASCII: the parser normalises identifiers)."""
        text = "".join(self.lines[chunk.start - 1:chunk.end])
        return not text.isascii() or bool(found(text))

    def _parse_chunk(self, chunk: _Chunk, name: str | None) -> bool:
        """Parse ``chunk`` (into this version); whether its statements bind ``name`` (or hold a
        star import, for None)."""
        self._materialize(chunk.start, chunk.end, whole=True)
        for piece in self._pieces:
            if chunk.start <= piece.start <= chunk.end and type(piece) is Statement:
                if name is not None and name in piece.names:
                    return True
                if piece.kind == "other":
                    names, star = names_bound(piece.node)
                    if (name in names) if name is not None else star:
                        return True
        return False

    def definitions(self, below: int = 0) -> list[tuple[str, int, int]]:
        """(name, first line, last line) of the ``def`` and ``class`` statements starting below
        line ``below``. In a part not parsed, each line starting with ``def name`` or ``class
        name`` counts, and the lines given are those of the part (they hold it)."""
        found = []
        for piece in self._pieces:
            if piece.end <= below:
                continue
            if type(piece) is _Chunk:
                if piece.start > below:  # a part is all below or all above a change
                    found += [(name, piece.start, piece.end)
                              for name in piece.definitions(self.lines)]
            elif piece.kind in ("def", "class") and piece.start > below:
                found.append((piece.names[0], piece.start, piece.end))
        return found

    def definition_names(self) -> tuple[str, ...]:
        """The names of :meth:`definitions` (all of them), in order, as a tuple: kept until more
        of the version is parsed (:func:`remember_version` reads them inside an update's
        stop-the-world window, the update computes them before, when it is made)."""
        pieces = self._pieces
        if self._names is not None and self._names[0] is pieces:
            return self._names[1]
        found: list[str] = []
        for piece in pieces:
            if type(piece) is _Chunk:
                found += piece.definitions(self.lines)
            elif piece.kind in ("def", "class"):
                found.append(piece.names[0])
        names = tuple(found)
        self._names = (pieces, names)
        return names

    def defining(self, names: set[str]) -> list[Statement]:
        """The ``def`` and ``class`` statements binding one of ``names`` (a set), parsed: in the
        parts not parsed yet, only around the lines that start with ``def name``/``class name``."""
        for piece in list(self._pieces):
            if type(piece) is not _Chunk or not names.intersection(piece.definitions(self.lines)):
                continue
            for number in range(piece.start, piece.end + 1):
                found = _DEFINITIONS.match(self.lines[number - 1])
                if found and found.group(1) in names:
                    self._materialize(number, number)
        return [piece for piece in self._pieces if isinstance(piece, Statement)
                and piece.kind in ("def", "class") and piece.names[0] in names]

    def _materialize(self, low: int, high: int, whole: bool = False) -> list[_Piece]:
        """Parse the chunks holding lines ``low``..``high``: only the statements between the
        nearest function starts around them (the whole chunk with ``whole``). The pieces."""
        with _parse_lock:
            pieces = self._pieces
            if not any(type(piece) is _Chunk and piece.end >= low and piece.start <= high
                       for piece in pieces):
                return pieces
            anchors = None if whole else self._anchors()
            out: list[_Piece] = []
            for piece in pieces:
                if type(piece) is not _Chunk or piece.end < low or piece.start > high:
                    out.append(piece)
                    continue
                first, stop = piece.start, piece.end + 1
                if anchors:
                    k = bisect.bisect_right(anchors, max(low, first)) - 1
                    if k >= 0 and anchors[k] > first:
                        first = anchors[k]
                    k = bisect.bisect_right(anchors, min(high, piece.end))
                    if k < len(anchors) and anchors[k] <= piece.end:
                        stop = anchors[k]
                parsed = self._parse_lines(first, stop - 1)
                if parsed is None and (first, stop) != (piece.start, piece.end + 1):
                    first, stop = piece.start, piece.end + 1  # an anchor was wrong: all of it
                    parsed = self._parse_lines(first, stop - 1)
                if parsed is None:  # cannot happen for a source that was imported
                    full: list[_Piece] = parse_version(  # type: ignore[assignment]  # as above
                        self.source, self.filename).statements
                    self._pieces = full
                    return full
                if first > piece.start:
                    out.append(_Chunk(piece.start, first - 1))
                out += parsed
                if stop <= piece.end:
                    out.append(_Chunk(stop, piece.end))
            self._pieces = out
            return out

    def _parse_lines(self, first: int, last: int) -> list[Statement] | None:
        """The statements of lines ``first``..``last`` (whole statements), or None if they do not
        parse on their own."""
        text = "".join(self.lines[first - 1:last])
        try:
            tree: ast.Module = compile(  # type: ignore[assignment]  # PyCF_ONLY_AST: a Module
                text, self.filename, "exec", ast.PyCF_ONLY_AST, dont_inherit=True)
        except (SyntaxError, ValueError):
            return None
        ast.increment_lineno(tree, first - 1)
        statements = _statements(tree, self.lines)
        if self._released:
            for statement in statements:
                if statement.kind != "other":
                    statement.release_tree()
        return statements

    def _anchors(self) -> list[int]:
        """Sorted lines where a top-level ``def`` (or, from Python 3.13, ``class``) statement of
        the version starts, known from the module's live functions (classes) whose code was
        compiled from this very text: statement boundaries found without parsing. Only while
        the version is the one the module runs (made from its tracked source, or recorded)."""
        module = self._module() if self._module is not None else None
        if module is None:
            return []
        recorded = recorded_version(module)
        if not (recorded is self or (self._fresh and recorded is None)):
            return []
        if self._anchor_lines is None:
            self._anchor_lines = _anchor_lines(module, self.filename, self.lines)
        return self._anchor_lines

    def __repr__(self) -> str:
        return (f"<SourceVersion {self.filename} {len(self.lines)} lines, "
                f"{len(self._pieces)} statements>")


def _anchor_lines(module: types.ModuleType, filename: str, lines: list[str]) -> list[int]:
    """The lines of ``lines`` where the top-level functions of ``module`` (and classes, from
    Python 3.13) start according to their code, each checked to be a ``def``/``class`` of that
    name, or a decorator, at column 0."""
    found = []
    line: int | None  # a bare annotation: no code
    for key, value in list(module.__dict__.items()):
        if type(value) is types.FunctionType:
            code = value.__code__
            if code.co_filename != filename or code.co_name != key or \
                    value.__qualname__ != key:
                continue
            line = code.co_firstlineno
        elif isinstance(value, type):
            line = getattr(value, "__firstlineno__", None)  # Python 3.13
            if line is None or value.__module__ != module.__name__ or \
                    value.__qualname__ != key:
                continue
        else:
            continue
        if not 1 <= line <= len(lines):
            continue
        match = _DEFINITION_LINE.match(lines[line - 1])
        if match is not None and (match.group(1) or match.group(2) or key) == key:
            found.append(line)
    found.sort()
    return found


def _lazy_version(source: str, filename: str, module: types.ModuleType) -> SourceVersion:
    """The version of ``source``, the text ``module`` was compiled from, not parsed yet but for
    its first statements (docstring, future imports)."""
    lines = split_lines(source)
    pieces = [_Chunk(1, len(lines))] if lines else []
    version = SourceVersion(source, filename, pieces, lines, weakref.ref(module))
    version._fresh = True
    version._materialize(1, 1)
    version.has_future = _has_future_import(version._pieces)
    return version


def _check_source(source: object) -> None:
    if not isinstance(source, str):
        raise PymoultTypeError(f"source must be a str, got {type(source).__name__}")


def parse_version(source: str, filename: str = "<source>") -> SourceVersion:
    """Parse a whole source. ``SyntaxError`` (with its line) if it does not parse."""
    return _parse(source, filename)[0]


def _parse(source: str, filename: str) -> tuple[SourceVersion, ast.Module]:
    """(the :class:`SourceVersion` of a whole source, its syntax tree)."""
    _check_source(source)
    lines = split_lines(source)
    tree: ast.Module = compile(  # type: ignore[assignment]  # PyCF_ONLY_AST: a Module
        source, filename, "exec", ast.PyCF_ONLY_AST, dont_inherit=True)
    statements = _statements(tree, lines)
    _check_future_imports(statements, first=True, filename=filename)
    return SourceVersion(source, filename, statements, lines), tree


def _check_future_imports(statements: Iterable[_Piece], first: bool, filename: str) -> None:
    """The compiler's rule, which the parser does not check: ``from __future__`` imports come
    first (after the docstring). ``first``: ``statements`` start the file."""
    leading = first
    for index, statement in enumerate(statements):
        is_future = statement.future
        is_doc = index == 0 and statement.kind == "other" and _is_docstring(statement.node)
        if is_future and not leading:
            assert isinstance(statement, Statement)  # a chunk holds no future import
            raise SyntaxError("from __future__ imports must occur at the beginning of the file",
                              (filename, statement.start, 1, statement.text.splitlines()[0]))
        if not (is_future or (is_doc and first)):
            leading = False


class SourceChange:
    """What differs between two versions: ``old`` statements replaced by ``new`` ones (both in
    source order, whole statements), and ``delta``, the line shift of the statements after them
    (those starting after line ``shifted_from`` of the old version).

    Made by :func:`change_from_live` (``before`` is then None: the old version is the live
    module), it also has ``notes``, (statement, reason) for what the live objects could not
    tell, and ``moves``, (live function, its first line in the new version) for the unchanged
    functions."""

    def __init__(self, before: SourceVersion | None, after: SourceVersion,
                 old: list[Statement], new: list[Statement], delta: int, shifted_from: int,
                 notes: Iterable[tuple[Statement, str]] = (),
                 moves: Iterable[tuple[types.FunctionType, int]] = ()) -> None:
        self.before, self.after = before, after
        self.old, self.new = old, new
        self.delta, self.shifted_from = delta, shifted_from
        self.notes, self.moves = list(notes), list(moves)

    def __repr__(self) -> str:
        return (f"<SourceChange {len(self.old)} statements -> {len(self.new)}, "
                f"lines shifted by {self.delta}>")


def _is_docstring(node: ast.stmt) -> bool:
    return isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant) and \
        isinstance(node.value.value, str)


_FUTURE = operator.attrgetter("future")


def _has_future_import(statements: Iterable[_Piece]) -> bool:
    return any(map(_FUTURE, statements))


def compare(before: SourceVersion, source: str) -> SourceChange:
    """Compare ``before`` (a :class:`SourceVersion`) with the new ``source``; returns a
    :class:`SourceChange` whose ``after`` is the new version. ``SyntaxError`` if the new
    source does not parse (nothing else is done)."""
    if not isinstance(before, SourceVersion):
        raise PymoultTypeError(f"expected a SourceVersion, got {before!r}")
    _check_source(source)
    old_lines = before.lines
    shared = _shared_lines(before, source)
    if shared is None:
        new_lines = split_lines(source)
        limit = min(len(old_lines), len(new_lines))
        prefix = _common_prefix(old_lines, new_lines, limit)
        suffix = _common_suffix(old_lines, new_lines, limit - prefix)
    else:
        new_lines, prefix, suffix = shared
    n_old, n_new = len(old_lines), len(new_lines)
    delta = n_new - n_old
    if prefix == n_old == n_new:
        after = SourceVersion(source, before.filename, before._pieces, new_lines, before._module)
        after._released = before._released
        after._plain = before._plain if shared is None else True
        return SourceChange(before, after, [], [], 0, n_old)
    # old lines first..last changed (1-based; last < first for a pure insertion); take every
    # statement touching them or the line on either side (an added decorator, a body grown)
    first, last = prefix + 1, n_old - suffix
    low, high = first - 1, last + 1
    while True:
        statements = before._materialize(low, high)  # the parts of a lazy version around them
        ends = [s.end for s in statements]
        starts = [s.start for s in statements]
        i = bisect.bisect_left(ends, first - 1)
        j = bisect.bisect_right(starts, last + 1)
        region_start = min([first] + ([statements[i].start] if i < j else []))
        region_end = max([last] + ([statements[j - 1].end] if i < j else []))
        while j < len(statements) and statements[j].start <= region_end:
            # it starts on the region's last line (``pair = (1,\n2); third = 3``): re-parsed
            region_end = max(region_end, statements[j].end)
            j += 1
        if not any(type(s) is _Chunk for s in statements[i:j]):
            break
        low, high = min(low, region_start), max(high, region_end)  # not reached: boundaries
    region_start = max(region_start, 1)
    region_end = min(region_end, n_old)
    text = "".join(new_lines[region_start - 1:region_end + delta])
    try:
        tree: ast.Module = compile(  # type: ignore[assignment]  # PyCF_ONLY_AST: a Module
            text, before.filename, "exec", ast.PyCF_ONLY_AST, dont_inherit=True)
        ast.increment_lineno(tree, region_start - 1)
        new = _statements(tree, new_lines)
        if _has_future_import(new) or before.has_future:
            # the change may put a future import after other code: check the whole order
            _check_future_imports(statements[:i] + new + statements[j:], True, before.filename)
    except SyntaxError:
        # the span alone does not parse: parse everything, to report the real error and line
        after = parse_version(source, before.filename)
        return SourceChange(before, after, list(before.statements), after.statements, 0, n_old)
    old: list[Statement] = statements[i:j]  # type: ignore[assignment]  # no chunk (checked)
    tail = statements[j:] if delta == 0 else [s.shifted(delta) for s in statements[j:]]
    after = SourceVersion(source, before.filename, statements[:i] + new + tail, new_lines,
                          before._module)
    if shared is not None:
        after._plain = True
    return SourceChange(before, after, old, new, delta, region_end)


# -- the version a module runs -------------------------------------------------------------------


def _source_file(module: types.ModuleType) -> str | None:
    spec = getattr(module, "__spec__", None)
    path = getattr(spec, "origin", None) if spec is not None else None
    path = path or getattr(module, "__file__", None)
    if not path or not path.endswith(".py"):
        return None
    return path


def read_source(path: str) -> str:
    """The text of a Python source file, decoded as Python does (its coding cookie)."""
    with open(path, "rb") as stream:
        data = stream.read()
    return importlib.util.decode_source(data)


def version_of(module: types.ModuleType, source: str | None = None) -> SourceVersion:
    """The source version ``module`` runs now.

    The version Pymoult last applied to it, if any; else ``source`` if given (the caller knows
    it); else the source it was imported from, if sources are tracked
    (``pymoult.source_tracking``: ``pymoult run`` tracks every module); else the
    module's source file, checked against the running code (:func:`file_version`).
    ``PymoultValueError`` when the file cannot be read or does not match (it was edited after the
    import, or a function was changed by an earlier update script: track sources, or pass the
    source the module runs).
    """
    known = known_version(module, source)
    return known if known is not None else file_version(module)


def known_version(module: types.ModuleType,
                  source: str | None = None) -> SourceVersion | None:
    """The source version ``module`` runs now when it is known for sure: the version Pymoult
    last applied, else ``source`` if given, else the source recorded at its import (sources
    tracked). None otherwise."""
    if not isinstance(module, types.ModuleType):
        raise PymoultTypeError(f"expected a module, got {module!r}")
    known = recorded_version(module)
    if known is not None:
        return known
    filename = _source_file(module) or f"<{module.__name__}>"
    if source is not None:
        return parse_version(source, filename)
    tracked = tracked_source(module)
    if tracked is not None:
        return _lazy_version(tracked, filename, module)
    return None


def file_version(module: types.ModuleType) -> SourceVersion:
    """The version in ``module``'s source file, checked against the running code: every function
    defined at the top of the file must have the code the live function has, and come from that
    file. ``PymoultValueError`` when the file cannot be read or does not match."""
    path = _source_file(module)
    if path is None:
        raise _unknown(f"module {module.__name__!r} has no Python source file: pass the source "
                       "it runs now (old_source=...)", "it has no Python source file")
    try:
        text = read_source(path)
        version, tree = _parse(text, path)
    except (OSError, SyntaxError, UnicodeDecodeError) as exc:
        raise _unknown(f"cannot read the source of module {module.__name__!r} from {path}: "
                       f"{exc}", f"its file cannot be read: {exc}") from exc
    _check_matches(module, version, tree)
    return version


def _check_matches(module: types.ModuleType, version: SourceVersion, tree: ast.Module) -> None:
    """Refuse a source file that is not what ``module`` runs (compared function by function).
    ``tree``: the version's syntax tree, compiled rather than the source (not parsed twice)."""
    code = compile(tree, version.filename, "exec", dont_inherit=True)
    compiled = {c.co_name: c for c in code.co_consts if isinstance(c, types.CodeType)}
    for statement in version.statements:
        if statement.kind != "def":
            continue
        name = statement.names[0]
        layers = [f for f in wrapped_layers(module.__dict__.get(name))
                  if isinstance(f, types.FunctionType)]
        live = layers[-1] if layers else None
        new = compiled.get(name)
        if not isinstance(live, types.FunctionType) or new is None:
            continue  # not a function any more: nothing to compare
        if live.__code__.co_filename != version.filename:
            reason = (f"function {name!r} runs code from {live.__code__.co_filename}, not from "
                      "its file (an earlier update changed it)")
            raise _unknown(
                f"function {name!r} of module {module.__name__!r} runs code from "
                f"{live.__code__.co_filename}, not from its file {version.filename} (an earlier "
                "update changed it), so the file cannot tell what the module runs: track sources "
                "before the import (pymoult run does; else pymoult.track_sources()), or pass the "
                "source the module runs (old_source=...)", reason)
        if live.__code__.co_name != name:
            continue  # bound to another function of the file
        if not same_code(live.__code__, new):
            _refuse_file(module, version, f"function {name!r} differs")
    classes = [statement for statement in version.statements if statement.kind == "class"]
    for verdict in judge(module, classes, tree, code, values=False):
        if verdict.status == CHANGED:
            _refuse_file(module, version, f"class {verdict.statement.names[0]!r} differs "
                                          f"({verdict.reason})")


def _refuse_file(module: types.ModuleType, version: SourceVersion, what: str) -> NoReturn:
    raise _unknown(
        f"the source file of module {module.__name__!r} ({version.filename}) is not the "
        f"version the module runs: {what}. It was edited after the import; track sources "
        "before the import (pymoult run does; else pymoult.track_sources()), or pass the source "
        "the module runs (old_source=...)", f"its file was edited since: {what}")


def _unknown(message: str, reason: str) -> PymoultValueError:
    """The error :func:`file_version` raises; ``reason``: why, in a few words."""
    error = PymoultValueError(message)
    error.reason = reason  # type: ignore[attr-defined]  # read back with getattr
    return error


# -- a new version compared with the live module ---------------------------------------------------


class _StandIn(Statement):
    """What the live module holds in place of a statement the new version changes or removes
    (its source is unknown): a statement binding the same names, whose tree differs from any
    real one."""

    def __init__(self, kind: Kind, names: Iterable[str], node: ast.stmt | None = None) -> None:
        marker = ast.Expr(ast.Constant(f"<pymoult: the live {kind} {', '.join(names)}>"))
        super().__init__(kind, tuple(names), 0, 0, "", node if node is not None else marker)


def _class_stand_in(statement: Statement, attributes: set[str]) -> _StandIn:
    """A class statement as the live class stands: the new body, but the attributes whose live
    values differ (``attributes``) assigned something else."""
    node = statement.node
    assert isinstance(node, ast.ClassDef)  # a class statement
    body: list[ast.stmt] = []
    for item in node.body:
        targets: list[ast.expr] = item.targets if isinstance(item, ast.Assign) else \
            [item.target] if isinstance(item, ast.AnnAssign) else []
        if any(isinstance(t, ast.Name) and t.id in attributes for t in targets):
            item = ast.Assign(targets=targets, value=ast.Constant("<pymoult: the live value>"))
        body.append(item)
    body.append(ast.Expr(ast.Constant("<pymoult: the live class>")))  # never a real class's tree
    extra: dict[str, Any] = {"type_params": []} if hasattr(node, "type_params") else {}
    return _StandIn("class", statement.names, ast.ClassDef(
        name=node.name, bases=node.bases, keywords=node.keywords, body=body,
        decorator_list=node.decorator_list, **extra))


def _stand_in(verdict: Verdict[Statement]) -> _StandIn:
    statement = verdict.statement
    if statement.kind == "class":
        return _class_stand_in(statement, verdict.attributes)
    return _StandIn(statement.kind, statement.names)


def change_from_live(module: types.ModuleType, source: str, filename: str) -> SourceChange:
    """Compare the new ``source`` of ``module`` with the live module itself, when the source it
    runs is not known (see :mod:`.live_comparison`): a :class:`SourceChange` whose ``new``
    statements are those found changed or new, whose ``old`` ones stand for what the live
    module holds in their place or no longer has in the new version (removed functions and
    classes), with ``notes`` for the statements the live objects could not tell about (kept
    as they are, not run). ``SyntaxError`` if the new source does not parse."""
    after, tree = _parse(source, filename)
    code = compile(tree, filename, "exec", dont_inherit=True)
    old: list[Statement] = []
    new: list[Statement] = []
    notes: list[tuple[Statement, str]] = []
    moves: list[tuple[types.FunctionType, int]] = []
    for verdict in judge(module, after.statements, tree, code):
        if verdict.status in (SAME, UNDECIDED):
            moves += verdict.moves
            if verdict.status == UNDECIDED:
                notes.append((verdict.statement, verdict.reason))
            continue
        new.append(verdict.statement)
        if verdict.status == CHANGED:
            old.append(_stand_in(verdict))
    for name in removed_names(module, after.statements):
        kind: Kind = "class" if isinstance(module.__dict__[name], type) else "def"
        old.append(_StandIn(kind, (name,)))
    return SourceChange(None, after, old, new, 0, len(after.lines), notes, moves)


def live_files(module: types.ModuleType, *versions: SourceVersion | None) -> set[str | None]:
    """The files whose code ``module`` runs as its own, compared between ``versions`` (None for
    the live module): their files and the module's source file."""
    return {_source_file(module)} | {v.filename for v in versions if v is not None}


def with_live_differences(module: types.ModuleType, change: SourceChange) -> SourceChange:
    """``change``, plus the definitions it takes as unchanged whose live code comes from
    elsewhere than the versions compared (an update script changed them since): each is
    compared with the new version like any other, and counts as changed if it differs."""
    foreign = foreign_definitions(module, live_files(module, change.before, change.after))
    if not foreign:
        return change
    changed = {id(statement) for statement in change.new}
    suspects = [statement for statement in change.after.defining(set(foreign))
                if id(statement) not in changed]
    if not suspects:
        return change
    tree = ast.Module(body=[statement.node for statement in suspects], type_ignores=[])
    code = compile(tree, change.after.filename, "exec", change.after.future_flags,
                   dont_inherit=True)
    verdicts = [v for v in judge(module, suspects, tree, code) if v.status == CHANGED]
    if not verdicts:
        return change
    new = sorted(change.new + [v.statement for v in verdicts], key=lambda s: s.start)
    old = change.old + [_stand_in(v) for v in verdicts]
    return SourceChange(change.before, change.after, old, new, change.delta,
                        change.shifted_from, change.notes, change.moves)


class _Record:
    """What :func:`remember_version` records of a module: the version it runs, the names of
    its definitions and the objects they were bound to then, and ``checked``, the version tag
    of the module's dict (``_cpython.dict_version``) when they were last found bound to those
    objects: while the dict keeps that tag, nothing in it was rebound, and the record holds
    without comparing its thousands of names."""

    __slots__ = ("module", "version", "names", "objects", "checked")

    def __init__(self, module: types.ModuleType, version: SourceVersion, names: tuple[str, ...],
                 objects: tuple[object, ...], checked: int | None) -> None:
        self.module = weakref.ref(module)
        self.version, self.names, self.objects, self.checked = version, names, objects, checked

    def holds(self, namespace: dict[str, object]) -> bool:
        """Whether each name is bound in ``namespace`` (the module's dict) to its object."""
        # the tag is read before the names are compared: if the dict changes in between, the
        # tag kept is one it no longer has, and the next check compares them again
        tag = dict_version(namespace)
        if tag is not None and tag == self.checked:
            return True  # the dict is as it was when they were last found bound to them
        if not all(map(operator.is_, map(namespace.get, self.names), self.objects)):
            return False  # a definition was rebound since (compared at C speed)
        self.checked = tag
        return True


def recorded_version(module: types.ModuleType) -> SourceVersion | None:
    """The version Pymoult last applied to ``module`` (this very module object), or None, also
    when the record is stale: the module was reloaded, or its definitions rebound since."""
    with _versions_lock:
        known = _versions.get(module.__name__)
    if known is None or known.module() is not module or not known.holds(module.__dict__):
        return None
    return known.version


def remember_version(module: types.ModuleType, version: SourceVersion) -> _Record | None:
    """Record ``version`` as the source ``module`` runs now; returns the previous record. When
    the previous record held for the dict as it is now and the definitions have the same names
    (the usual edit, of bodies), their objects are the previous record's."""
    names = version.definition_names()
    namespace = module.__dict__
    with _versions_lock:
        tag = dict_version(namespace)  # read before the objects, as in _Record.holds
        previous = _versions.get(module.__name__)
        if tag is not None and previous is not None and previous.checked == tag and \
                previous.module() is module and previous.names == names:
            objects = previous.objects
        else:
            objects = tuple(map(namespace.get, names))
        _versions[module.__name__] = _Record(module, version, names, objects, tag)
    version.release_trees()
    return previous


def forget_version(module: types.ModuleType, previous: _Record | None = None) -> None:
    """Undo :func:`remember_version` (put ``previous`` back, or forget the module)."""
    with _versions_lock:
        if previous is None:
            _versions.pop(module.__name__, None)
        else:
            _versions[module.__name__] = previous
