"""A new version of a module judged against the live module itself, statement by statement.

When Pymoult does not know the source a module runs (it was imported before sources were
tracked, no update was applied to it since, and its file was edited in place or installed over),
the live objects are what is left to compare a new version with: the code objects of its
functions and methods, its classes' layouts, its values. :func:`judge` gives each top-level
statement of the new version a :class:`Verdict`:

- ``same``: what it defines is what runs (a function's code, a literal value, a class's methods,
  fields, ``__slots__`` and bases; an import binding the object it would bind);
- ``changed``: it defines something else (a function whose code differs, a constant whose
  value differs);
- ``new``: it binds names the module does not have;
- ``undecided``: the live objects cannot tell. A value computed at import (``LOG =
  make_log()``), a constant the program rebinds (declared ``global`` in one of its functions: a
  counter is state, not an edit), a container (it may have been filled since), a statement that
  binds nothing (a call): these are kept as they are, and the verdict's ``reason`` says so.

What cannot be told from live objects at all: a changed decorator, a default value that is not a
literal, annotations. Tracking sources (``pymoult.track_sources()``) makes all of it exact.
"""

from __future__ import annotations

import ast
import gc
import operator
import sys
import threading
import time
import types
import weakref
from collections.abc import Callable, Iterable, Mapping, Sequence
from collections.abc import Set as AbstractSet
from itertools import compress, repeat
from typing import Any, Generic, Protocol, TypeVar, Union

from .._cpython import dict_version

from .journal import MISSING
from .relinking import wrapped_layers

__all__ = ["Verdict", "judge", "removed_names", "foreign_definitions", "names_bound",
           "is_main_guard", "same_code", "SAME", "CHANGED", "NEW", "UNDECIDED"]

SAME, CHANGED, NEW, UNDECIDED = "same", "changed", "new", "undecided"
#: (live function, its first line in the new version): an unchanged function to renumber.
Move = tuple[types.FunctionType, int]
#: The files a module's own code comes from (None for a module without a source file).
Files = AbstractSet[Union[str, None]]


class StatementLike(Protocol):
    """What judging reads of a top-level statement of the new version
    (``source_diff.Statement``, which this module cannot import: source_diff imports it)."""

    @property
    def kind(self) -> str: ...

    @property
    def names(self) -> tuple[str, ...]: ...

    @property
    def start(self) -> int: ...

    @property
    def node(self) -> ast.stmt: ...


_S = TypeVar("_S", bound=StatementLike)
_IMMUTABLE = (int, float, complex, str, bytes, bool, type(None))
_CODE_FIELDS = ("co_argcount", "co_posonlyargcount", "co_kwonlyargcount", "co_flags", "co_code",
                "co_names", "co_varnames", "co_freevars", "co_cellvars", "co_name")


def same_code(a: types.CodeType, b: types.CodeType) -> bool:
    """True when two code objects do the same thing (their line numbers may differ)."""
    if a is b:
        return True
    for field in _CODE_FIELDS:
        if getattr(a, field) != getattr(b, field):
            return False
    if getattr(a, "co_exceptiontable", None) != getattr(b, "co_exceptiontable", None):
        return False
    if len(a.co_consts) != len(b.co_consts):
        return False
    for x, y in zip(a.co_consts, b.co_consts):
        if isinstance(x, types.CodeType) and isinstance(y, types.CodeType):
            if not same_code(x, y):
                return False
        elif type(x) is not type(y) or x != y:
            return False
    return True


def names_bound(node: ast.AST) -> tuple[set[str], bool]:
    """Module-level names a top-level statement may bind (the bodies of ``if``, ``try``,
    ``with``, ``for`` included, not those of functions and classes), and whether it holds a star
    import."""
    names: set[str] = set()
    star = False
    todo = [node]
    while todo:
        current = todo.pop()
        if isinstance(current, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(current.name)
            continue  # their bodies bind their own locals
        if isinstance(current, ast.Lambda):
            continue
        if isinstance(current, ast.Name) and isinstance(current.ctx, ast.Store):
            names.add(current.id)
        elif isinstance(current, ast.Import):
            names.update(a.asname or a.name.partition(".")[0] for a in current.names)
        elif isinstance(current, ast.ImportFrom):
            star = star or any(a.name == "*" for a in current.names)
            names.update(a.asname or a.name for a in current.names if a.name != "*")
        elif isinstance(current, ast.ExceptHandler) and current.name:
            names.add(current.name)
        todo.extend(ast.iter_child_nodes(current))
    return names, star


class Verdict(Generic[_S]):
    """How a statement of the new version compares with the live module. ``moves``: (live
    function, its first line in the new version) for the functions found the same, so that
    their line numbers can follow the new file; ``attributes``: for a class, the names of the
    class attributes whose live values differ from the new version's."""

    __slots__ = ("statement", "status", "reason", "moves", "attributes")

    def __init__(self, statement: _S, status: str, reason: str = "", moves: Sequence[Move] = (),
                 attributes: Iterable[str] = ()) -> None:
        self.statement, self.status, self.reason, self.moves = statement, status, reason, moves
        self.attributes = set(attributes)

    def __repr__(self) -> str:
        reason = f": {self.reason}" if self.reason else ""
        return f"<Verdict {self.status} {self.statement!r}{reason}>"


def judge(module: types.ModuleType, statements: Iterable[_S], tree: ast.AST,
          code: types.CodeType, values: bool = True) -> list[Verdict[_S]]:
    """A :class:`Verdict` for each of ``statements``, the top-level statements of a new version
    of ``module`` (``tree`` and ``code``: that version parsed, and compiled as a whole).
    ``values=False``: classes are judged on their methods, bases, ``__slots__`` and fields only,
    not on their attributes' values."""
    judge_ = _Judge(module, tree, code, values)
    return [judge_.statement(statement, index) for index, statement in enumerate(statements)]


def removed_names(module: types.ModuleType, statements: Iterable[StatementLike]) -> list[str]:
    """Names of the functions and classes ``module`` defined itself (their qualified name is
    their name in it) that none of the new version's ``statements`` binds: the new version
    removes them."""
    bound: set[str] = set()
    for statement in statements:
        bound.update(statement.names)
        if statement.kind == "other":
            names, star = names_bound(statement.node)
            if star:
                return []
            bound |= names
    removed = []
    for name, value in list(module.__dict__.items()):
        if name in bound or name.startswith("__"):
            continue
        if isinstance(value, type) or isinstance(value, types.FunctionType):
            if getattr(value, "__module__", None) == module.__name__ and \
                    getattr(value, "__qualname__", None) == name:
                removed.append(name)
    return removed


def foreign_definitions(module: types.ModuleType, files: Files) -> list[str]:
    """Names of ``module``'s functions, and of the classes it defined, that run code compiled
    from another file than ``files`` (an update script changed them, or they were imported from
    elsewhere), in the module's order.

    The first call for a module (and for a set of ``files``) goes through its namespace and its
    classes' attributes, at about 0.25 us per name, and keeps what it went through (a
    :class:`_Scan`). The next calls look again only at what may have changed since: the
    module's dict if its version tag moved, the values of its classes' dicts, the code object
    of each function, compared at C speed with what was kept; and the few values that may run
    code from elsewhere whatever their code (a function already running such code, a wrapper, a
    property) are looked into every time. They go through it all again only when something
    that may hold code was rebound, or a function's code replaced by code from elsewhere (the
    code an update of a body puts in place is taken as it comes).

    The code objects are read in one of two ways, whichever the first scan timed faster: one
    ``__code__`` read per function, or all at once from what the functions refer to
    (``gc.get_referents``; then a function's defaults set or unset also makes a new scan). Each
    ``__code__`` read raises an audit event, which runs every audit hook installed in the
    process: with none, the reads are faster (they touch fewer objects); with one (jurigged's
    ``codefind`` installs one), a read costs about 0.4 us more and the referents win."""
    with _scans_lock:
        scan = _scans.get(module)
        if scan is None or not scan.holds(module, files):
            scan = _Scan(module, files)
            if scan.kept:
                _scans[module] = scan
            else:
                _scans.pop(module, None)
        return scan.found()


_FUNCTION = types.FunctionType
_CODE = types.CodeType
_code_of = operator.attrgetter("__code__")


def _faster_by_referents(by_referents: float, by_reads: float) -> bool:
    """Whether reading the functions' codes from their referents (``by_referents`` seconds)
    was faster than one ``__code__`` read each (``by_reads``), as timed by a scan."""
    return by_referents < by_reads
_module_of = operator.attrgetter("__module__")
_scans: "weakref.WeakKeyDictionary[types.ModuleType, _Scan]" = weakref.WeakKeyDictionary()
_scans_lock = threading.Lock()


class _Scan:
    """One scan of a module's namespace for :func:`foreign_definitions`, and what it went
    through: the module's names and values (and its dict's version tag then), the dicts of the
    classes it defined (their sizes, their values in one list), the other classes (a
    ``__module__`` set to the module's name later makes one of its classes), the Python
    functions in both places and what they referred to then (``gc.get_referents``: the code
    object of each, its globals, name, defaults...), and ``suspects``, the values looked
    into again at each call (a function whose own code comes from elsewhere, a class attribute
    that may hold code without being a plain function). ``kept``: whether it can be checked
    later (each class's dict was found behind its ``__dict__``)."""

    __slots__ = ("files", "tag", "names", "values", "dicts", "sizes", "attributes", "others",
                 "functions", "by_referents", "referents", "code_at", "codes", "suspects",
                 "kept")
    files: frozenset[str | None]
    tag: int | None
    names: list[str]
    values: list[Any]  # told apart by type() (at C speed), not narrowed
    dicts: list[dict[str, Any]]
    sizes: list[int]
    attributes: list[Any]
    others: list[type]
    functions: list[types.FunctionType]
    by_referents: bool
    referents: int
    code_at: Callable[[list[Any]], tuple[Any, ...]]
    codes: tuple[Any, ...]
    suspects: list[tuple[str, object]]
    kept: bool

    def __init__(self, module: types.ModuleType, files: Files) -> None:
        self.files = frozenset(files)
        namespace = module.__dict__
        self.tag = dict_version(namespace)  # read first: a change from here on moves it
        namespace = namespace.copy()  # other threads may bind globals meanwhile
        self.names, self.values = list(namespace), list(namespace.values())
        module_name = module.__name__
        self.dicts, self.attributes, self.others = [], [], []
        self.sizes, self.functions, self.suspects = [], [], []
        codes = []  # the code of each function, as looked at below
        self.kept = True
        attributes: Sequence[Any]  # a bare annotation: no code
        for name, value in zip(self.names, self.values):
            if type(value) is _FUNCTION:
                self.functions.append(value)
                codes.append(value.__code__)  # the very code looked at
                if codes[-1].co_filename not in files:
                    self.suspects.append((name, value))
            elif isinstance(value, type):
                if value.__module__ != module_name:
                    self.others.append(value)
                    continue
                kept = _attributes_kept(value.__dict__)
                if kept is None:  # not a class's usual mapping proxy: never kept
                    self.kept, attributes = False, tuple(value.__dict__.values())
                else:
                    self.dicts.append(kept[0])
                    attributes = kept[1]
                    self.sizes.append(len(attributes))
                    self.attributes += attributes  # the very values looked at below
                for attribute in attributes:
                    kind = type(attribute)
                    if kind is _FUNCTION:
                        self.functions.append(attribute)
                        codes.append(attribute.__code__)
                        if codes[-1].co_filename in files:
                            continue
                    elif kind in _PLAIN:
                        continue
                    self.suspects.append((name, attribute))
        self._find_codes(codes)

    def _find_codes(self, codes: list[types.CodeType]) -> None:
        """Learn where each function's code object is among what the functions refer to
        (``gc.get_referents``), and whether :meth:`holds` reads the codes faster from there or
        by a ``__code__`` read per function (see :func:`foreign_definitions`: with no audit hook
        in the process, the reads; with one, the referents). The scan is not kept unless the
        code objects found are ``codes``, those looked at: none was replaced meanwhile (by
        another thread), and no function refers to another code object."""
        start = time.perf_counter()
        referents = gc.get_referents(*self.functions)
        by_referents = time.perf_counter() - start
        self.referents = len(referents)
        positions = list(compress(range(len(referents)),
                                  map(operator.is_, map(type, referents), repeat(_CODE))))
        self.code_at = _items_at(positions)
        self.codes = self.code_at(referents)
        if not _equal_lists(self.codes, tuple(codes)):
            self.kept = False
        start = time.perf_counter()
        tuple(map(_code_of, self.functions))
        self.by_referents = _faster_by_referents(by_referents, time.perf_counter() - start)

    def holds(self, module: types.ModuleType, files: Files) -> bool:
        """Whether what this scan went through still holds for ``module`` and ``files``: the
        same functions and classes bound in the module's dict and the classes' dicts (values
        that hold no code may have been rebound), and each function whose code was replaced
        since (an update of its body) running code from ``files``, as before (then its new
        code is kept). A code object equal to the one it replaced (the same instructions,
        constants, names and lines) counts as the same: comparing it with a new version finds
        what comparing the one it replaced finds."""
        if self.files != files:
            return False
        namespace = module.__dict__
        tag = dict_version(namespace)  # read first, as in __init__
        if tag is None or tag != self.tag:
            namespace = namespace.copy()
            if list(namespace) != self.names or not _only_inert_rebound(
                    list(namespace.values()), self.values, _no_definition):
                return False
            self.tag = tag
        if list(map(len, self.dicts)) != self.sizes:
            return False
        attributes = gc.get_referents(*self.dicts)
        if not _equal_lists(attributes, self.attributes) and \
                not _only_inert_rebound(attributes, self.attributes, _holds_no_code):
            return False
        if any(map(operator.eq, map(_module_of, self.others), repeat(module.__name__))):
            return False
        if self.by_referents:
            referents = gc.get_referents(*self.functions)  # one audit event, not one each
            if len(referents) != self.referents:
                return False  # a function's defaults, say, set or unset: see it all again
            codes = self.code_at(referents)
        else:
            codes = tuple(map(_code_of, self.functions))
        if not _equal_lists(codes, self.codes):
            for index in _differences(codes, self.codes):
                if type(codes[index]) is not _CODE:
                    return False  # what the functions refer to moved about: see it all again
                if codes[index].co_filename not in files or \
                        self.codes[index].co_filename not in files:
                    return False  # code from elsewhere, or no longer
            self.codes = codes
        return True

    def found(self) -> list[str]:
        """The names whose suspects run code from elsewhere, in the module's order."""
        found: list[str] = []
        for name, value in self.suspects:
            if (not found or found[-1] != name) and _runs_foreign_code(value, self.files):
                found.append(name)
        return found


def _items_at(positions: list[int]) -> Callable[[list[Any]], tuple[Any, ...]]:
    """``items(values)``: the tuple of ``values[i]`` for each ``i`` of ``positions``, at C
    speed (``operator.itemgetter``, which gives a lone item, not a tuple, for one position)."""
    if len(positions) > 1:
        return operator.itemgetter(*positions)
    if positions:
        only = positions[0]
        return lambda values: (values[only],)
    return lambda values: ()


def _attributes_kept(proxy: Mapping[str, object]) -> tuple[dict[str, Any], list[Any]] | None:
    """(the dict behind a class's ``__dict__``, its values) when what the garbage collector
    finds it refers to are its values (in order: a dict whose keys are all strings, as a
    class's are), so that they can be read again at once for all classes
    (``gc.get_referents``), else None."""
    behind = gc.get_referents(proxy)
    if len(behind) != 1 or type(behind[0]) is not dict:
        return None
    values = gc.get_referents(behind[0])
    if len(values) != len(behind[0]):  # its keys are among them
        return None
    return behind[0], values


def _equal_lists(a: Sequence[Any], b: Sequence[Any]) -> bool:
    """``a == b`` for two lists compared item by item at C speed (each pair by identity first,
    then by ``==``), False when an item's ``==`` fails."""
    try:
        return a == b
    except Exception:  # a user's __eq__
        return False


def _differences(a: Sequence[Any], b: Sequence[Any]) -> list[int]:
    """The indices at which two lists of the same length differ (:func:`_equal_lists`), found
    by halving the span they differ in: a few comparisons of slices, at C speed, where only a
    few items differ (a loop over the items would cost as much as reading them)."""
    found, spans = [], [(0, len(a))]
    while spans:
        start, stop = spans.pop()
        if stop - start == 1:
            found.append(start)
            continue
        middle = (start + stop) // 2
        for low, high in ((middle, stop), (start, middle)):
            if not _equal_lists(a[low:high], b[low:high]):
                spans.append((low, high))
    return found


def _only_inert_rebound(values: list[object], kept: list[object],
                        inert: Callable[[object], bool]) -> bool:
    """Whether each of ``values`` is the object at the same place in ``kept``, or both are
    ``inert`` (then ``kept`` takes it)."""
    if len(values) != len(kept):
        return False
    changed = list(compress(zip(values, kept), map(operator.is_not, values, kept)))
    if not all(inert(value) and inert(before) for value, before in changed):
        return False
    if changed:
        kept[:] = values
    return True


def _no_definition(value: object) -> bool:
    """A module value :func:`foreign_definitions` does not look at."""
    return type(value) is not _FUNCTION and not isinstance(value, type)


def _holds_no_code(value: object) -> bool:
    """A class attribute :func:`foreign_definitions` does not look at."""
    return type(value) in _PLAIN


def _runs_foreign_code(value: object, files: Files) -> bool:
    """Whether a Python function behind ``value`` (a module or class attribute) was compiled
    from another file than ``files``."""
    return any(f.__code__.co_filename not in files for f in _functions_of(value))


#: Types of class attributes that hold no code (skipped at C speed).
_PLAIN = frozenset({str, type(None), dict, tuple, int, types.GetSetDescriptorType,
                    types.MemberDescriptorType})


def _is_immutable(value: object) -> bool:
    if isinstance(value, (tuple, frozenset)):
        return all(_is_immutable(item) for item in value)
    return type(value) in _IMMUTABLE


def _literal(node: ast.expr | None) -> tuple[bool, Any]:
    """(True, value) when ``node`` is a literal (``ast.literal_eval``), else (False, None)."""
    try:  # None is no literal: ValueError
        return True, ast.literal_eval(node)  # type: ignore[arg-type]
    except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
        return False, None


def _equal(a: object, b: object) -> bool:
    try:
        return type(a) is type(b) and bool(a == b)
    except Exception:  # a user's __eq__
        return False


def _functions_of(value: object) -> list[types.FunctionType]:
    """The Python functions behind a module or class attribute: the innermost layer of a
    decorated function, the function of a static or class method, those of a property."""
    if isinstance(value, property):
        return [f for f in (value.fget, value.fset, value.fdel)
                if isinstance(f, types.FunctionType)]
    if isinstance(value, (staticmethod, classmethod)):
        value = value.__func__
    if not callable(value) or isinstance(value, type):
        return []
    layers = [layer for layer in wrapped_layers(value) if isinstance(layer, types.FunctionType)]
    return layers[-1:]


def _codes_named(code: types.CodeType, name: str) -> list[types.CodeType]:
    return [c for c in code.co_consts if isinstance(c, types.CodeType) and c.co_name == name]


def _matches(functions: Sequence[types.FunctionType],
             codes: Sequence[types.CodeType]) -> list[Move] | None:
    """The moves if the live ``functions`` run exactly the new ``codes`` (in any order), else
    None."""
    if not codes or len(functions) != len(codes):
        return None
    moves, left = [], list(codes)
    for function in functions:
        match = next((c for c in left if same_code(function.__code__, c)), None)
        if match is None:
            return None
        left.remove(match)
        moves.append((function, match.co_firstlineno))
    return moves


def _same_defaults(arguments: ast.arguments, function: types.FunctionType) -> bool:
    """False when the new version's literal default values differ from the live function's (a
    default that is not a literal cannot be compared: taken as the same)."""
    live_defaults = function.__defaults__ or ()
    if len(arguments.defaults) != len(live_defaults):
        return False
    pairs = list(zip(arguments.defaults, live_defaults))
    kwdefaults = function.__kwdefaults__ or {}
    for argument, default in zip(arguments.kwonlyargs, arguments.kw_defaults):
        if (default is None) != (argument.arg not in kwdefaults):
            return False
        if default is not None:
            pairs.append((default, kwdefaults[argument.arg]))
    for node, live in pairs:
        literal, value = _literal(node)
        if literal and not _equal(value, live):
            return False
    return True


def _same_slots(value: object, current: object) -> bool:
    def as_tuple(v: Any) -> tuple[Any, ...]:
        return (v,) if isinstance(v, str) else tuple(v)

    try:
        return current is not MISSING and as_tuple(value) == as_tuple(current)
    except TypeError:
        return False


def _resolve(expression: ast.expr, namespace: Mapping[str, Any]) -> Any:
    """The object a base-class expression names (``Base``, ``pkg.Base``), or MISSING."""
    if isinstance(expression, ast.Name):
        if expression.id in namespace:
            return namespace[expression.id]
        builtins = namespace.get("__builtins__")
        builtins = builtins if isinstance(builtins, dict) else vars(builtins or object)
        return builtins.get(expression.id, MISSING)
    if isinstance(expression, ast.Attribute):
        owner = _resolve(expression.value, namespace)
        return MISSING if owner is MISSING else getattr(owner, expression.attr, MISSING)
    return MISSING


def _imported(node: ast.Import | ast.ImportFrom, alias: ast.alias,
              module: types.ModuleType) -> object:
    """What an import would bind, when the module it names is loaded already, else MISSING."""
    if isinstance(node, ast.Import):
        name = alias.name if alias.asname else alias.name.partition(".")[0]
        return sys.modules.get(name, MISSING)
    base = node.module or ""
    if node.level:
        package = (module.__package__ or "").split(".")
        if node.level - 1 >= len(package) or not package[0]:
            return MISSING
        base = ".".join(package[:len(package) - (node.level - 1)] +
                        ([node.module] if node.module else []))
    source = sys.modules.get(base)
    if source is None:
        return MISSING
    value = getattr(source, alias.name, MISSING)
    return sys.modules.get(f"{base}.{alias.name}", MISSING) if value is MISSING else value


def is_main_guard(node: ast.stmt) -> bool:
    """``if __name__ == "__main__":`` (either way round)."""
    test = node.test if isinstance(node, ast.If) else None
    if not (isinstance(test, ast.Compare) and len(test.ops) == 1
            and isinstance(test.ops[0], ast.Eq)):
        return False
    sides = [test.left, test.comparators[0]]
    return any(isinstance(side, ast.Name) and side.id == "__name__" for side in sides) and any(
        isinstance(side, ast.Constant) and side.value == "__main__" for side in sides)


class _Judge:
    def __init__(self, module: types.ModuleType, tree: ast.AST, code: types.CodeType,
                 values: bool) -> None:
        self.module = module
        self.namespace = module.__dict__
        self.code = code
        self.values = values
        self.rebound = set()  # names declared global in a function: the program rebinds them
        self.attributes_set = set()  # names of attributes the program sets (``Cls.count += 1``)
        for node in ast.walk(tree):
            if isinstance(node, ast.Global):
                self.rebound.update(node.names)
            elif isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Store):
                self.attributes_set.add(node.attr)
        # (id of a code, name) -> how many code objects of that name were used
        self.taken: dict[tuple[int, str], int] = {}

    def _next_code(self, code: types.CodeType, name: str) -> types.CodeType | None:
        """The next code object called ``name`` among ``code``'s constants (in source order,
        as the compiler puts them)."""
        index = self.taken.get((id(code), name), 0)
        self.taken[(id(code), name)] = index + 1
        codes = _codes_named(code, name)
        return codes[index] if index < len(codes) else None

    def statement(self, statement: _S, index: int) -> Verdict[_S]:
        # the kind says what the node is (source_diff's classification): not checked again
        node = statement.node
        kind = statement.kind
        if kind == "def":
            return self.function(statement, node)  # type: ignore[arg-type]
        if kind == "class":
            return self.cls(statement, node)  # type: ignore[arg-type]
        if kind == "assign":
            return self.assignment(statement, node)  # type: ignore[arg-type]
        if kind == "import":
            return self.import_(statement, node)  # type: ignore[arg-type]
        return self.other(statement, node, index)

    def function(self, statement: _S,
                 node: ast.FunctionDef | ast.AsyncFunctionDef) -> Verdict[_S]:
        new_code = self._next_code(self.code, node.name)
        live = self.namespace.get(node.name, MISSING)
        if live is MISSING:
            return Verdict(statement, NEW)
        functions = _functions_of(live)
        if not functions or new_code is None:
            return Verdict(statement, CHANGED, "not a function now")
        moves = _matches(functions, [new_code])
        if moves is None:
            return Verdict(statement, CHANGED, "its code differs")
        if not _same_defaults(node.args, functions[0]):
            return Verdict(statement, CHANGED, "its default values differ")
        return Verdict(statement, SAME, moves=moves)

    def cls(self, statement: _S, node: ast.ClassDef) -> Verdict[_S]:
        body = self._next_code(self.code, node.name)
        live = self.namespace.get(node.name, MISSING)
        if live is MISSING:
            return Verdict(statement, NEW)
        if not isinstance(live, type) or body is None:
            return Verdict(statement, CHANGED, "not a class now")
        differences, undecided, moves, attributes = self._class_body(live, node, body)
        differences += self._bases(live, node)
        if differences:
            return Verdict(statement, CHANGED, "; ".join(differences), attributes=attributes)
        if undecided:
            return Verdict(statement, UNDECIDED, "; ".join(undecided), moves)
        return Verdict(statement, SAME, moves=moves)

    def _class_body(self, live: type, node: ast.ClassDef, body: types.CodeType
                    ) -> tuple[list[str], list[str], list[Move], set[str]]:
        own = vars(live)
        annotations = own.get("__annotations__", {})
        differences, undecided, moves, attributes = [], [], [], set()
        defined, annotated, methods = set(), [], []
        for item in node.body:
            if isinstance(item, (ast.FunctionDef, ast.AsyncFunctionDef)):
                if item.name not in methods:
                    methods.append(item.name)
            elif isinstance(item, ast.ClassDef):
                defined.add(item.name)
                nested, codes = own.get(item.name), _codes_named(body, item.name)
                if not isinstance(nested, type) or len(codes) != 1:
                    differences.append(f"class {item.name} " + (
                        "is new" if nested is None else "differs"))
                    continue
                inner = self._class_body(nested, item, codes[0])
                differences += [f"{item.name}: {text}" for text in inner[0]]
                undecided += [f"{item.name}: {text}" for text in inner[1]]
                moves += inner[2]
            elif isinstance(item, (ast.Assign, ast.AnnAssign)):
                targets = item.targets if isinstance(item, ast.Assign) else [item.target]
                names = [t.id for t in targets if isinstance(t, ast.Name)]
                if isinstance(item, ast.AnnAssign) and names:
                    annotated.append(names[0])
                if len(names) != len(targets):
                    undecided.append(f"the statement at line {item.lineno} not compared")
                if item.value is not None:
                    defined.update(names)
                    if self.values or "__slots__" in names:
                        attributes |= self._class_value(own, annotations, item, names,
                                                        differences, undecided)
            elif isinstance(item, ast.Expr) and isinstance(item.value, ast.Constant):
                continue  # the docstring
            else:
                undecided.append(f"the statement at line {item.lineno} not compared")
        for method in methods:
            defined.add(method)
            matched = _matches(_functions_of(own.get(method)), _codes_named(body, method))
            if matched is None:
                differences.append(f"method {method} " + ("differs" if method in own else "is new"))
            else:
                moves += matched
        for attr, value in own.items():
            if attr in defined or attr.startswith("__"):
                continue
            functions = _functions_of(value)
            if functions and functions[0].__qualname__ == f"{live.__qualname__}.{attr}":
                differences.append(f"method {attr} is removed")
        if annotated != list(annotations):
            differences.append("its annotated fields differ")
        return differences, undecided, moves, attributes

    def _class_value(self, own: Mapping[str, Any], annotations: Mapping[str, Any],
                     item: ast.Assign | ast.AnnAssign, names: list[str], differences: list[str],
                     undecided: list[str]) -> set[str]:
        """Judge a class-body assignment; returns the names whose live values differ."""
        literal, value = _literal(item.value)
        differing = set()
        for target in names:
            current = own.get(target, MISSING)
            if target == "__slots__":
                if not literal or not _same_slots(value, current):
                    differences.append("its __slots__ differ")
                    differing.add(target)
            elif literal and _is_immutable(value) and (current is MISSING or
                                                       target not in self.attributes_set):
                if not _equal(value, current):
                    differences.append(f"{target} " + ("is new" if current is MISSING
                                                       else "differs"))
                    differing.add(target)
            elif literal and _equal(value, current):
                continue
            elif current is MISSING and target not in annotations:
                differences.append(f"{target} is new")
                differing.add(target)
            elif literal and _is_immutable(value):
                undecided.append(f"{target} (line {item.lineno}) is set by the program: kept "
                                 "as it is")
            else:  # a computed or mutable value, or a dataclass field's field(...)
                undecided.append(f"{target} (line {item.lineno}) is computed or mutable: "
                                 "kept as it is")
        return differing

    def _bases(self, live: type, node: ast.ClassDef) -> list[str]:
        if node.keywords:
            return []  # a metaclass or its arguments: not judged on its bases
        bases = []
        for expression in node.bases:
            value = _resolve(expression, self.namespace)
            if value is MISSING:
                return []
            bases.append(value)
        return [] if tuple(bases or (object,)) == live.__bases__ else ["its bases differ"]

    def assignment(self, statement: _S, node: ast.Assign | ast.AnnAssign) -> Verdict[_S]:
        names = statement.names
        missing = [name for name in names if name not in self.namespace]
        if missing:
            return Verdict(statement, NEW if len(missing) == len(names) else CHANGED,
                           "" if len(missing) == len(names) else
                           f"{', '.join(missing)} not defined now")
        literal, value = _literal(node.value)
        if len(names) == 1 and not literal and isinstance(node.value, (ast.Name, ast.Attribute)):
            named = _resolve(node.value, self.namespace)  # an alias: ``LOG = logging.info``
            if named is not MISSING:
                return Verdict(statement, SAME) if named is self.namespace[names[0]] else \
                    Verdict(statement, CHANGED, "it names another object")
        if len(names) != 1 or not literal:
            return Verdict(statement, UNDECIDED, "its value is computed at import: the live "
                           "value is kept")
        if _equal(value, self.namespace[names[0]]):
            return Verdict(statement, SAME)
        if not _is_immutable(value):
            return Verdict(statement, UNDECIDED, "it holds a container the program may have "
                           "filled since: the live value is kept")
        if names[0] in self.rebound:
            return Verdict(statement, UNDECIDED, "the program rebinds it (global in one of its "
                           "functions): the live value is kept")
        return Verdict(statement, CHANGED, "its value differs")

    def import_(self, statement: _S, node: ast.Import | ast.ImportFrom) -> Verdict[_S]:
        for alias in node.names:
            if isinstance(node, ast.ImportFrom):
                bound = alias.asname or alias.name
            else:
                bound = alias.asname or alias.name.partition(".")[0]
            live = self.namespace.get(bound, MISSING)
            if live is MISSING:
                return Verdict(statement, NEW)
            if live is not _imported(node, alias, self.module):
                return Verdict(statement, CHANGED, f"{bound} is bound to something else now")
        return Verdict(statement, SAME)

    def other(self, statement: _S, node: ast.stmt, index: int) -> Verdict[_S]:
        if index == 0 and isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant):
            return Verdict(statement, SAME)  # the module's docstring
        if is_main_guard(node):
            return Verdict(statement, SAME)  # the program's entry point: never run again
        names, star = names_bound(node)
        if names and not star and not any(name in self.namespace for name in names):
            return Verdict(statement, NEW)
        return Verdict(statement, UNDECIDED, "not run: whether it is new or ran at the import "
                       "cannot be told from the live module")
