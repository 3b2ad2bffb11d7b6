"""Source versions of a module, and what changed between two of them, found in linear time.

A module's source is cut into its top-level statements (:class:`Statement`): each knows its
kind (``def``, ``class``, ``import``, ``assign`` to plain names, or ``other``), the names it
binds, its lines and its exact text. Two versions are compared by text, statement by statement,
so an unchanged definition is recognised whatever moved around it.

Parsing a whole module is the slow part (about 0.2 s for 5,000 definitions; compiling it costs
about as much), so a new version is compared with the previous one *incrementally*: the lines
the two share at the start and at the end are skipped, the span in between is widened to whole
statements of the previous version, and only that span of the new version is parsed. This is
sound: the shared prefix ends, and the shared suffix starts, at a statement boundary of the
previous version, and the new span parses on its own as complete statements (else the whole new
source is parsed, which reports a real syntax error at its real line). So a one-line change in a
large module costs a few milliseconds, and matching is linear in the module's size (jurigged
matches definitions pairwise, in quadratic time).

The previous version of a module is the one Pymoult last applied (:func:`remember_version`),
or the source recorded at its import (sources tracked), or its source file, checked against the
running code (:func:`version_of`): a file edited after the module was imported cannot be the
previous version, since it would hide the very changes to apply. Then, and when the file *is*
the new version (edited in place), the new version is compared with the live module itself
(:func:`change_from_live`, :mod:`.live_comparison`). Whatever the previous version, a definition
that did not change between the two versions but whose live code comes from elsewhere (an update
script changed it) is compared with the new version too (:func:`with_live_differences`).
"""

import ast
import bisect
import importlib.util
import re
import threading
import types
import weakref

from ..errors import PymoultTypeError, PymoultValueError
from .live_comparison import (CHANGED, SAME, UNDECIDED, foreign_definitions, judge,
                              removed_names, same_code)
from .relinking import wrapped_layers
from ..source_tracking import tracked_source

__all__ = ["Statement", "SourceVersion", "SourceChange", "parse_version", "compare",
           "change_from_live", "with_live_differences", "version_of", "known_version",
           "file_version", "recorded_version", "remember_version", "forget_version",
           "same_code"]

# module name -> (weak reference to the module, SourceVersion, (name, object) of its definitions)
_versions = {}
_versions_lock = threading.Lock()
_LINE = re.compile(r"[^\r\n]*(?:\r\n|\r|\n)|[^\r\n]+$")
#: What ``str.splitlines`` cuts at besides ``\r`` and ``\n``: none of them ends a line of Python.
_OTHER_BREAKS = ("\v", "\f", "\x1c", "\x1d", "\x1e", "\x85", "\u2028", "\u2029")


def split_lines(text):
    """Lines with their ends, cut where Python's tokenizer cuts them: ``str.splitlines``
    (several times faster than the regular expression) unless the text holds a form feed or
    another character it would also cut at."""
    if not any(character in text for character in _OTHER_BREAKS):  # each a fast C scan
        return text.splitlines(keepends=True)
    return _LINE.findall(text)


_CHUNK = 256  # lines compared at once, as list slices (at C speed), before one by one


def _common_prefix(a, b, limit):
    """How many first items the sequences ``a`` and ``b`` share, at most ``limit``."""
    n = 0
    while n + _CHUNK <= limit and a[n:n + _CHUNK] == b[n:n + _CHUNK]:
        n += _CHUNK
    while n < limit and a[n] == b[n]:
        n += 1
    return n


def _common_suffix(a, b, limit):
    """How many last items the sequences ``a`` and ``b`` share, at most ``limit``."""
    end_a, end_b, n = len(a), len(b), 0
    while n + _CHUNK <= limit and \
            a[end_a - n - _CHUNK:end_a - n] == b[end_b - n - _CHUNK:end_b - n]:
        n += _CHUNK
    while n < limit and a[end_a - 1 - n] == b[end_b - 1 - n]:
        n += 1
    return n


class Statement:
    """One top-level statement of a source version (lines are 1-based, inclusive; a decorated
    definition starts at its first decorator).

    Its syntax tree, ``node``, is kept until the version is recorded as the one a module runs
    (:func:`remember_version` calls :meth:`SourceVersion.release_trees`); then it is parsed
    again from the statement's text whenever it is asked for, since the trees of a large module
    weigh tens of megabytes and an update needs only those of the statements it touches.
    """

    __slots__ = ("kind", "names", "start", "end", "text", "future", "_node", "_column")

    def __init__(self, kind, names, start, end, text, node, column=0, future=False):
        self.kind, self.names, self.start, self.end, self.text = kind, names, start, end, text
        self._node = node
        self._column = column  # where it starts on its first line, in UTF-8 bytes (a = 1; b = 2)
        self.future = future  # a ``from __future__`` import

    @property
    def node(self):
        """Its syntax tree, with the line numbers of its place in the version."""
        if self._node is not None:
            return self._node
        text = self.text
        if self._column:
            text = text.encode("utf-8")[self._column:].decode("utf-8")
        tree = compile(text, "<statement>", "exec", ast.PyCF_ONLY_AST, dont_inherit=True)
        node = tree.body[0]
        ast.increment_lineno(node, self.start - 1)
        return node

    def release_tree(self):
        self._node = None

    def shifted(self, delta):
        """The same statement ``delta`` lines further down (a tree it holds is not renumbered:
        only the position of the statement counts)."""
        return Statement(self.kind, self.names, self.start + delta, self.end + delta, self.text,
                         self._node, self._column, self.future)

    def __repr__(self):
        names = ", ".join(self.names) or "-"
        return f"<Statement {self.kind} {names} L{self.start}-{self.end}>"


def _target_names(target):
    if isinstance(target, ast.Name):
        return (target.id,)
    if isinstance(target, (ast.Tuple, ast.List)):
        names = ()
        for element in target.elts:
            inner = _target_names(element.value if isinstance(element, ast.Starred) else element)
            if inner is None:
                return None
            names += inner
        return names
    return None  # an attribute or a subscript: not a module binding


def _classify(node):
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
        names = ()
        for target in node.targets:
            inner = _target_names(target)
            if inner is None:
                return "other", ()
            names += inner
        return "assign", names
    if isinstance(node, ast.AnnAssign) and node.value is not None and node.simple:
        return "assign", (node.target.id,)
    return "other", ()


def _statements(tree, lines, offset=0):
    statements = []
    for node in tree.body:
        start = min([node.lineno] + [d.lineno for d in getattr(node, "decorator_list", ())])
        end = node.end_lineno
        kind, names = _classify(node)
        text = "".join(lines[start - 1:end])
        column = 0 if start < node.lineno else node.col_offset
        future = isinstance(node, ast.ImportFrom) and node.module == "__future__"
        statements.append(Statement(kind, names, start + offset, end + offset, text, node,
                                    column, future))
    return statements


class SourceVersion:
    """One version of a module's source: its text, lines and top-level statements."""

    def __init__(self, source, filename, statements, lines=None):
        self.source = source
        self.filename = filename
        self.lines = lines if lines is not None else split_lines(source)
        self.statements = statements
        self.has_future = _has_future_import(statements)

    @property
    def future_flags(self):
        """The compiler flags of the version's ``from __future__`` imports."""
        import __future__
        flags = 0
        for statement in self.statements:
            if not statement.future:
                if statement is self.statements[0] and isinstance(statement.node, ast.Expr):
                    continue  # the docstring
                break
            for alias in statement.node.names:
                feature = getattr(__future__, alias.name, None)
                flags |= getattr(feature, "compiler_flag", 0)
        return flags

    def release_trees(self):
        """Let the statements' syntax trees go (see :class:`Statement`), but those of the
        statements that are not definitions, imports or assignments: they are few, and each
        update reads them (the names an ``if`` or a ``try`` may bind)."""
        for statement in self.statements:
            if statement.kind != "other":
                statement.release_tree()

    def __repr__(self):
        return (f"<SourceVersion {self.filename} {len(self.lines)} lines, "
                f"{len(self.statements)} statements>")


def _check_source(source):
    if not isinstance(source, str):
        raise PymoultTypeError(f"source must be a str, got {type(source).__name__}")


def parse_version(source, filename="<source>"):
    """Parse a whole source. ``SyntaxError`` (with its line) if it does not parse."""
    return _parse(source, filename)[0]


def _parse(source, filename):
    """(the :class:`SourceVersion` of a whole source, its syntax tree)."""
    _check_source(source)
    lines = split_lines(source)
    tree = compile(source, filename, "exec", ast.PyCF_ONLY_AST, dont_inherit=True)
    statements = _statements(tree, lines)
    _check_future_imports(statements, first=True, filename=filename)
    return SourceVersion(source, filename, statements, lines), tree


def _check_future_imports(statements, first, filename):
    """The compiler's rule, which the parser does not check: ``from __future__`` imports come
    first (after the docstring). ``first``: ``statements`` start the file."""
    leading = first
    for index, statement in enumerate(statements):
        is_future = statement.future
        is_doc = index == 0 and statement.kind == "other" and _is_docstring(statement.node)
        if is_future and not leading:
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

    def __init__(self, before, after, old, new, delta, shifted_from, notes=(), moves=()):
        self.before, self.after = before, after
        self.old, self.new = old, new
        self.delta, self.shifted_from = delta, shifted_from
        self.notes, self.moves = list(notes), list(moves)

    def __repr__(self):
        return (f"<SourceChange {len(self.old)} statements -> {len(self.new)}, "
                f"lines shifted by {self.delta}>")


def _is_docstring(node):
    return isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant) and \
        isinstance(node.value.value, str)


def _has_future_import(statements):
    return any(s.future for s in statements)


def compare(before, source):
    """Compare ``before`` (a :class:`SourceVersion`) with the new ``source``; returns a
    :class:`SourceChange` whose ``after`` is the new version. ``SyntaxError`` if the new
    source does not parse (nothing else is done)."""
    if not isinstance(before, SourceVersion):
        raise PymoultTypeError(f"expected a SourceVersion, got {before!r}")
    _check_source(source)
    old_lines, new_lines = before.lines, split_lines(source)
    n_old, n_new = len(old_lines), len(new_lines)
    limit = min(n_old, n_new)
    prefix = _common_prefix(old_lines, new_lines, limit)
    suffix = _common_suffix(old_lines, new_lines, limit - prefix)
    delta = n_new - n_old
    if prefix == n_old == n_new:
        after = SourceVersion(source, before.filename, before.statements, new_lines)
        return SourceChange(before, after, [], [], 0, n_old)
    # old lines first..last changed (1-based; last < first for a pure insertion); take every
    # statement touching them or the line on either side (an added decorator, a body grown)
    first, last = prefix + 1, n_old - suffix
    statements = before.statements
    ends = [s.end for s in statements]
    starts = [s.start for s in statements]
    i = bisect.bisect_left(ends, first - 1)
    j = bisect.bisect_right(starts, last + 1)
    region_start = min([first] + ([statements[i].start] if i < j else []))
    region_end = max([last] + ([statements[j - 1].end] if i < j else []))
    while j < len(statements) and statements[j].start <= region_end:
        # it starts on the region's last line (``pair = (1,\n2); third = 3``): it is re-parsed
        region_end = max(region_end, statements[j].end)
        j += 1
    region_start = max(region_start, 1)
    region_end = min(region_end, n_old)
    text = "".join(new_lines[region_start - 1:region_end + delta])
    try:
        tree = compile(text, before.filename, "exec", ast.PyCF_ONLY_AST, dont_inherit=True)
        ast.increment_lineno(tree, region_start - 1)
        new = _statements(tree, new_lines)
        if _has_future_import(new) or before.has_future:
            # the change may put a future import after other code: check the whole order
            _check_future_imports(statements[:i] + new + statements[j:], True, before.filename)
    except SyntaxError:
        # the span alone does not parse: parse everything, to report the real error and line
        after = parse_version(source, before.filename)
        return SourceChange(before, after, list(statements), after.statements, 0, n_old)
    old = statements[i:j]
    tail = statements[j:] if delta == 0 else [s.shifted(delta) for s in statements[j:]]
    after = SourceVersion(source, before.filename, statements[:i] + new + tail, new_lines)
    return SourceChange(before, after, old, new, delta, region_end)


# -- the version a module runs -------------------------------------------------------------------


def _source_file(module):
    spec = getattr(module, "__spec__", None)
    path = getattr(spec, "origin", None) if spec is not None else None
    path = path or getattr(module, "__file__", None)
    if not path or not path.endswith(".py"):
        return None
    return path


def read_source(path):
    """The text of a Python source file, decoded as Python does (its coding cookie)."""
    with open(path, "rb") as stream:
        data = stream.read()
    return importlib.util.decode_source(data)


def version_of(module, source=None):
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


def known_version(module, source=None):
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
        return parse_version(tracked, filename)
    return None


def file_version(module):
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


def _check_matches(module, version, tree):
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


def _refuse_file(module, version, what):
    raise _unknown(
        f"the source file of module {module.__name__!r} ({version.filename}) is not the "
        f"version the module runs: {what}. It was edited after the import; track sources "
        "before the import (pymoult run does; else pymoult.track_sources()), or pass the source "
        "the module runs (old_source=...)", f"its file was edited since: {what}")


def _unknown(message, reason):
    """The error :func:`file_version` raises; ``reason``: why, in a few words."""
    error = PymoultValueError(message)
    error.reason = reason
    return error


# -- a new version compared with the live module ---------------------------------------------------


class _StandIn(Statement):
    """What the live module holds in place of a statement the new version changes or removes
    (its source is unknown): a statement binding the same names, whose tree differs from any
    real one."""

    def __init__(self, kind, names, node=None):
        marker = ast.Expr(ast.Constant(f"<pymoult: the live {kind} {', '.join(names)}>"))
        super().__init__(kind, tuple(names), 0, 0, "", node if node is not None else marker)


def _class_stand_in(statement, attributes):
    """A class statement as the live class stands: the new body, but the attributes whose live
    values differ (``attributes``) assigned something else."""
    node = statement.node
    body = []
    for item in node.body:
        targets = item.targets if isinstance(item, ast.Assign) else \
            [item.target] if isinstance(item, ast.AnnAssign) else []
        if any(isinstance(t, ast.Name) and t.id in attributes for t in targets):
            item = ast.Assign(targets=targets, value=ast.Constant("<pymoult: the live value>"))
        body.append(item)
    body.append(ast.Expr(ast.Constant("<pymoult: the live class>")))  # never a real class's tree
    return _StandIn("class", statement.names, ast.ClassDef(
        name=node.name, bases=node.bases, keywords=node.keywords, body=body,
        decorator_list=node.decorator_list, **({"type_params": []} if hasattr(
            node, "type_params") else {})))


def _stand_in(verdict):
    statement = verdict.statement
    if statement.kind == "class":
        return _class_stand_in(statement, verdict.attributes)
    return _StandIn(statement.kind, statement.names)


def change_from_live(module, source, filename):
    """Compare the new ``source`` of ``module`` with the live module itself, when the source it
    runs is not known (see :mod:`.live_comparison`): a :class:`SourceChange` whose ``new``
    statements are those found changed or new, whose ``old`` ones stand for what the live
    module holds in their place or no longer has in the new version (removed functions and
    classes), with ``notes`` for the statements the live objects could not tell about (kept
    as they are, not run). ``SyntaxError`` if the new source does not parse."""
    after, tree = _parse(source, filename)
    code = compile(tree, filename, "exec", dont_inherit=True)
    old, new, notes, moves = [], [], [], []
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
        kind = "class" if isinstance(module.__dict__[name], type) else "def"
        old.append(_StandIn(kind, (name,)))
    return SourceChange(None, after, old, new, 0, len(after.lines), notes, moves)


def with_live_differences(module, change):
    """``change``, plus the definitions it takes as unchanged whose live code comes from
    elsewhere than the versions compared (an update script changed them since): each is
    compared with the new version like any other, and counts as changed if it differs."""
    files = {change.after.filename, _source_file(module)}
    if change.before is not None:
        files.add(change.before.filename)
    foreign = foreign_definitions(module, files)
    if not foreign:
        return change
    foreign = set(foreign)
    changed = {id(statement) for statement in change.new}
    suspects = [statement for statement in change.after.statements
                if statement.kind in ("def", "class") and statement.names[0] in foreign
                and id(statement) not in changed]
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


def recorded_version(module):
    """The version Pymoult last applied to ``module`` (this very module object), or None, also
    when the record is stale: the module was reloaded, or its definitions rebound since."""
    with _versions_lock:
        known = _versions.get(module.__name__)
    if known is None or known[0]() is not module:
        return None
    namespace = module.__dict__
    if any(namespace.get(name) is not obj for name, obj in known[2]):
        return None
    return known[1]


def remember_version(module, version):
    """Record ``version`` as the source ``module`` runs now; returns the previous record."""
    namespace = module.__dict__
    definitions = tuple((s.names[0], namespace.get(s.names[0])) for s in version.statements
                        if s.kind in ("def", "class"))
    with _versions_lock:
        previous = _versions.get(module.__name__)
        _versions[module.__name__] = (weakref.ref(module), version, definitions)
    version.release_trees()
    return previous


def forget_version(module, previous=None):
    """Undo :func:`remember_version` (put ``previous`` back, or forget the module)."""
    with _versions_lock:
        if previous is None:
            _versions.pop(module.__name__, None)
        else:
            _versions[module.__name__] = previous
