"""``ModuleUpdate``: an update computed from a new version of a module's source.

Hot-reload tools compute the change for you but apply it with no safety; Pymoult updates are
safe but written by hand. A ``ModuleUpdate`` does both: it compares the live module with the
new source (:mod:`pymoult.lowlevel.source_diff`: linear, incremental) and becomes one Pymoult
update, applied at a safe point as one journaled, reversible step.

Made in the caller's thread (nothing in the program changes):
  1. the new source is compared with the version the module runs; a syntax error raises
     :class:`~pymoult.errors.ModuleUpdateError`;
  2. the statements that are new or changed and define something (``def``, ``class``,
     ``import``, assignments to plain names), and the statements the old version did not have
     (a call, an ``if``, a ``raise``), are evaluated on trial, in order, as a fresh import
     would, in a copy of the module's globals in which each statement sees what the statements
     above it bound: the module's own functions are copies that read the copy (an unchanged
     helper called at module level sees the new class defined above), ``singledispatch``
     functions are copies (registrations land in them), and, when a new statement runs, the
     module's lists, dicts, sets and bytearrays are shallow copies (``def`` statements that run
     nothing, the usual edit of a function's body, read only ``__name__``, the builtins and the
     names of their defaults and annotations: they are evaluated with just those). An
     exception raises ``ModuleUpdateError`` with the traceback of the new version's code (its
     lines);
  3. the result is a list of :class:`Step` objects (``update.steps``, readable ``str``).

Applied (inside the update's stop-the-world window, journaled):
  the same statements run again, one by one, in the live module's namespace, so that the
  functions they make have the module's globals; after each, every name it rebound is put back
  and the live object updated through Pymoult's mechanisms (so the next statements, a subclass
  or a table of handlers, see the live objects); a ``def`` that runs nothing binds its name in
  a namespace of its own (the module's being its globals), so that the module's dict is never
  changed but through those mechanisms, and keeps its version tag when nothing is rebound:
  functions in place (``relinking``: every reference follows), classes in place when the layout
  allows, else replaced with their instances converted (``transformers``/``builders`` by class
  name), Enums keeping their members, singledispatch functions keeping their registry (new
  registrations added); other names (constants, imports) are rebound. Names the new version no
  longer defines are removed (imports are kept). Functions made before the update by a changed
  function or method (closures from a factory, wrappers from a decorator, lambdas, at any depth:
  matched by qualified name and order) get the new version of their code, their cells kept,
  found in one ``gc.get_referrers`` pass over the heap (3 ms per 200,000 tracked objects),
  done only when such nested code changed; when its free variables changed they keep the old
  code and the plan has a ``note`` saying so. They count for quiescence like the functions
  the update changes. A failure rolls everything back, including what the statements run
  changed by hand in the module and its classes (``watched``: the classes are watched only when
  the update runs code of the program, not for plain ``def`` statements updating functions in
  place, the usual edit, whose every change goes through the journal).

What is kept, not re-run: statements of the module that did not change (its state: counters,
caches, registries, connections) and changed statements that are not definitions (a call, an
``if``, a loop: module code runs once), which are listed as ``note`` steps; an ``if`` or a
``try`` that only chooses definitions (``if PY3: def u(s): ...``, ``try: import x except
ImportError: x = None``) counts as a definition: run again when changed. A statement that is
not a definition is *changed* when it takes the place of one of the old version (paired in
order within the changed span, or binding a name an old statement there bound: a ``def``
moved under an ``if``); else it is *new*, listed as a ``run`` step and run once when applied
(after running on trial), and the names it binds are updated like those of definitions. A
new ``if __name__ == "__main__":`` block is noted, not run: it is the program's entry point.

When it is safe: with ``threads``, at their static update points (a frame already running a
changed function keeps its old code: reboot such threads); without, once no thread runs any
function the update changes (quiescence, checked again inside the apply window). Once applied,
``update.warnings`` names each thread still running code the update replaced (a changed or
removed function or method it is inside, or a changed module-level statement its ``<module>``
code is executing: :mod:`pymoult.highlevel.stale_frames`), and they are logged as warnings.

Limits: decorators, class bodies of changed definitions and new statements run twice (on
trial and when applied), so one that registers the function in an outside table registers both
versions, and a new statement that changes an object other than a module-level list, dict, set
or bytearray (an attribute of an instance, a nested list) changes it on trial too; a rollback
does not undo what a new statement did to objects, only the names it bound. On trial, the
functions held in containers, the methods of unchanged classes and decorated functions read the
running module's globals. Values derived from changed names by unchanged statements are not
recomputed. Unchanged
functions below an insertion or deletion are given their new line numbers (their code is
swapped for the same code, renumbered) so that tracebacks match the new source; those of
nested classes are not.
"""

from __future__ import annotations

import ast
import difflib
import functools
import gc
import itertools
import linecache
import logging
import operator
import sys
import threading
import traceback
import types
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, Optional, Protocol, TypeGuard

from ..errors import (ModuleUpdateError, NotAlterableNow, PymoultTypeError, PymoultValueError,
                      RedefinitionError)
from .._cpython import dict_version, take_statement_annotations, unread_annotations
from .._stacks import class_codes, codes_of, running_code, thread_stacks
from ..lowlevel.alterability import (TornCallGuard, patience, stacks_not_at_points,
                                     wait_quiescence)
from ..lowlevel.class_update import redefineClass, updatable_in_place
from ..lowlevel.journal import (MISSING, Journal, Operation, SetItem, current_journal,
                                delete_attribute, describe, set_attribute)
from ..lowlevel.live_comparison import is_main_guard, names_bound
from ..lowlevel.relinking import update_function, wrapped_layers
from ..lowlevel.source_diff import (SourceVersion, Statement, change_from_live, compare,
                                    file_version, forget_version, known_version, read_source,
                                    recorded_version, remember_version, same_code, split_lines,
                                    with_live_differences)
from ..source_tracking import tracked_source
from .stale_frames import ModuleCode, stale_frames
from .lifecycle import Update, has_setup

__all__ = ["ModuleUpdate", "Step", "module_update_script"]

logger = logging.getLogger("pymoult")

#: A module's namespace (its ``__dict__``), or a copy of it made for a trial.
Namespace = dict[str, Any]
#: ``transformers=``/``builders=``: a class name -> ``transformer(obj)``/``builder(old)``.
ClassFunctions = Mapping[str, Callable[[Any], Any]]
#: ``steps=``: callables run with the update at the end of its ``apply``.
ExtraStep = Callable[["ModuleUpdate"], object]
#: What an ``update class`` step holds per method: ``{(attribute, accessor): code}``, the
#: accessor being ``"fget"``/``"fset"``/``"fdel"`` for a property, else None.
MethodCodes = dict[tuple[str, Optional[str]], types.CodeType]


class _Dispatcher(Protocol):
    """A ``functools.singledispatch`` function, as :func:`_is_dispatcher` knows one: a plain
    function whose ``register`` and ``dispatch`` are closures over its registry and cache."""

    registry: Mapping[Any, Callable[..., Any]]
    register: types.FunctionType
    dispatch: types.FunctionType


class Step:
    """One planned operation of a module update: ``action`` (``"update function"``, ``"add
    class"``, ``"remove"``, ``"note"``...), the module and name, the line in the new source,
    and a detail. ``parts`` are the steps it is made of (the methods an ``update class`` step
    updates, adds and removes: ``update method jobs.Job.run (line 8)``); ``update.steps``
    lists them after it."""

    __slots__ = ("action", "module", "name", "line", "detail", "parts")

    def __init__(self, action: str, module: str, name: str, line: int | None = None,
                 detail: str = "", parts: Iterable[Step] = ()) -> None:
        self.action, self.module, self.name, self.line, self.detail = (
            action, module, name, line, detail)
        self.parts = list(parts)

    def __str__(self) -> str:
        where = f" (line {self.line})" if self.line else ""
        detail = f": {self.detail}" if self.detail else ""
        return f"{self.action} {self.module}.{self.name}{where}{detail}"

    def __repr__(self) -> str:
        return f"<Step {self}>"


def _is_dispatcher(obj: object) -> TypeGuard[_Dispatcher]:
    # a plain function first, and its attributes read from its __dict__ (not hasattr, which
    # raises inside for each of the thousands of functions of a large module)
    if type(obj) is not types.FunctionType:
        return False
    attributes = obj.__dict__
    return bool(attributes) and "dispatch" in attributes and "register" in attributes and \
        isinstance(attributes.get("registry"), types.MappingProxyType)


def _registry_dict(dispatcher: _Dispatcher) -> dict[Any, Callable[..., Any]]:
    """The dict behind a singledispatch function's read-only ``registry``."""
    closure = dispatcher.register.__closure__
    assert closure is not None  # register is a closure over the registry
    cells = dict(zip(dispatcher.register.__code__.co_freevars, closure))
    registry: dict[Any, Callable[..., Any]] = cells["registry"].cell_contents
    return registry


def _dispatch_cache_clear(dispatcher: _Dispatcher) -> None:
    closure = dispatcher.dispatch.__closure__
    assert closure is not None  # dispatch is a closure over the cache
    cells = dict(zip(dispatcher.dispatch.__code__.co_freevars, closure))
    cells["dispatch_cache"].cell_contents.clear()


def _clone_dispatcher(dispatcher: _Dispatcher) -> Callable[..., Any]:
    clone = functools.singledispatch(dispatcher.registry[object])
    for cls, implementation in dispatcher.registry.items():
        if cls is not object:
            clone.register(cls, implementation)
    return clone


class RestoreRegistries(Operation):
    """The registries of singledispatch functions, as they were before an update."""

    def __init__(self, saved: list[tuple[_Dispatcher, dict[Any, Callable[..., Any]]]]) -> None:
        self.saved = saved  # [(dispatcher, dict copy)]
        self.text = f"registrations of {len(saved)} singledispatch functions"

    def undo(self) -> None:
        for dispatcher, registry in self.saved:
            live = _registry_dict(dispatcher)
            live.clear()
            live.update(registry)
            _dispatch_cache_clear(dispatcher)


class RememberVersion(Operation):
    """The source version a module runs (and its lines in ``linecache``) set by an update."""

    def __init__(self, module: types.ModuleType, version: SourceVersion) -> None:
        self.module = module
        self.previous = remember_version(module, version)
        self.filename = version.filename
        self.cached = linecache.cache.get(self.filename)
        # no mtime: ``linecache.checkcache`` keeps it, and tracebacks show the running version
        linecache.cache[self.filename] = (len(version.source), None, version.lines, self.filename)
        self.text = f"record the source version of {module.__name__}"

    def undo(self) -> None:
        forget_version(self.module, self.previous)
        if self.cached is None:
            linecache.cache.pop(self.filename, None)
        else:
            linecache.cache[self.filename] = self.cached


def _is_function(value: object) -> bool:
    """A Python function, or a wrapper (``lru_cache``, ``functools.wraps``) around one."""
    return not isinstance(value, type) and callable(value) and any(
        isinstance(layer, types.FunctionType) for layer in wrapped_layers(value))


def _callable_kind(value: object) -> str | None:
    if isinstance(value, type):
        return "class"
    if _is_function(value):
        return "function"
    return None


class _ModulePlan:
    """The part of a module update that concerns one module."""

    def __init__(self, module: types.ModuleType, source: str, filename: str,
                 old_source: str | None = None, transformers: ClassFunctions | None = None,
                 builders: ClassFunctions | None = None) -> None:
        self.module = module
        self.name = module.__name__
        self.transformers = dict(transformers or {})
        self.builders = dict(builders or {})
        self.recorded = recorded_version(module)
        try:  # the recorded version is the known one (not looked up twice: 5,000 names)
            self.before: SourceVersion | None = self.recorded if self.recorded is not None else \
                known_version(module, old_source)
        except SyntaxError as exc:
            raise ModuleUpdateError(f"the source given as the current version of {self.name!r} "
                                    f"does not compile: {exc}", module=self.name,
                                    lineno=exc.lineno) from exc
        # why the source it runs is unknown: the live module is compared
        unknown: str | None = None
        if self.before is None:
            try:
                self.before = file_version(module)
            except PymoultValueError as exc:
                unknown = getattr(exc, "reason", str(exc))
            else:
                if self.before.source == source:
                    self.before = None
                    unknown = "its file is the new version (edited in place)"
        try:
            if self.before is None:
                self.change = change_from_live(module, source, filename)
            else:
                self.change = with_live_differences(module, compare(self.before, source))
        except SyntaxError as exc:
            raise ModuleUpdateError(f"the new version of {self.name!r} does not compile: "
                                    f"{exc.msg} ({filename}, line {exc.lineno})",
                                    module=self.name, lineno=exc.lineno) from exc
        self.after = self.change.after
        live_notes: list[Step] = []
        if unknown is not None and self.change.notes:
            live_notes.append(Step("undecided", self.name, "<module>", None,
                                   "the source it runs is not known (imported before sources "
                                   f"were tracked; {unknown}): compared with its live objects; "
                                   "what they cannot tell is kept (track sources for exact "
                                   "updates)"))
        for statement, reason in self.change.notes:
            live_notes.append(Step("undecided", self.name, ", ".join(statement.names) or
                                   "<module code>", statement.start, reason))
        old_keys = {_key(statement) for statement in self.change.old}
        new_keys = {_key(statement) for statement in self.change.new}
        added = _added_statements(self.change.old, self.change.new)
        self.run: list[Statement] = []  # the statements to evaluate, in order
        self.steps: list[Step] = []
        for statement in self.change.new:
            if _key(statement) in old_keys:
                continue  # unchanged (maybe moved or reformatted): kept
            if statement.kind == "other" and is_main_guard(statement.node):
                self.steps.append(Step("note", self.name, "<module code>", statement.start,
                                       "`if __name__ == '__main__'` block not run (the "
                                       "program's entry point, not module code)"))
            elif statement.kind == "other" and id(statement) not in added:
                self.steps.append(Step("note", self.name, "<module code>", statement.start,
                                       "changed module-level statement not run again (module "
                                       "code runs once; its state is kept)"))
            else:
                self.run.append(statement)
        self.removed: list[str] = []
        # whether the new version holds a star import (looked up when needed)
        star: bool | None = None
        for statement in self.change.old:
            if _key(statement) in new_keys:
                continue
            for name in statement.names:
                if name in self.removed or any(name in s.names for s in self.change.new) \
                        or self.after.binds(name):
                    continue
                if star is None and statement.kind != "import":
                    star = self.after.has_star_import
                if statement.kind == "import" or star:
                    self.steps.append(Step("note", self.name, name, None,
                                           "no longer defined by the new version; binding kept"))
                elif name in module.__dict__:
                    self.removed.append(name)
        self.steps += live_notes
        self.bound: list[str] = []  # names the run statements bind, in order
        for statement in self.run:
            for name in statement.names:
                if name not in self.bound:
                    self.bound.append(name)
        flags = self.after.future_flags
        self.compiled: list[tuple[Statement, types.CodeType]] = []
        for statement in self.run:
            tree = ast.Module(body=[statement.node], type_ignores=[])
            try:
                code = compile(tree, self.after.filename, "exec", flags, dont_inherit=True)
            except SyntaxError as exc:  # a compile-time error the parser lets through
                raise ModuleUpdateError(f"the new version of {self.name!r} does not compile: "
                                        f"{exc.msg} (line {exc.lineno})", module=self.name,
                                        lineno=exc.lineno) from exc
            self.compiled.append((statement, code))
        self.old_classes: dict[str, ast.stmt] = {
            s.names[0]: s.node for s in self.change.old if s.kind == "class"}
        namespace = self._trial()
        self.codes = self._codes(namespace)
        # read from the text of the parts not parsed now rather than when the version is
        # recorded, in the stop-the-world window (most of a first update's window)
        self.after.definition_names()

    # -- on trial --------------------------------------------------------------------------------

    def _trial(self) -> Namespace:
        """Evaluate the statements to run, in order, in a copy of the module's globals in which
        the module's own functions are copies reading that copy (so that a statement calling an
        unchanged function sees what the statements above it bound, as a fresh import would).
        Made as one of several modules updated together (:meth:`ModuleUpdate.together`), the
        copy is the namespace of a module standing for this new version, and its imports of the
        others get theirs."""
        live = self.module.__dict__
        group = _TrialGroup.current()
        if group is not None and self.name not in group.sources:
            group = None
        into = group.begin(self.name) if group is not None else None
        if into is None and not self.removed and \
                all(_runs_nothing(statement.node) for statement in self.run):
            namespace = _definitions_namespace(live, self.run)
        else:
            namespace = _trial_namespace(
                live, copy_functions=any(_may_call(statement.node) for statement in self.run),
                copy_containers=any(statement.kind == "other" for statement in self.run),
                into=into)
        if group is not None:
            namespace["__builtins__"] = group.builtins(live.get("__builtins__", __builtins__))
        line_of: dict[str, int] = {}
        for statement in self.run:
            for name in statement.names:
                line_of[name] = statement.start
        for statement, code in self.compiled:
            before = dict(namespace) if statement.kind == "other" else None
            try:
                exec(code, namespace)
            except KeyboardInterrupt:
                raise
            except BaseException as exc:  # SystemExit from module code too: reported
                if group is not None and exc is group.failure:
                    raise  # another module of the group, imported by this one, failed: its error
                text = _user_traceback(exc, self.after)
                raise ModuleUpdateError(
                    f"the new version of {self.name!r} raised {exc!r} while being evaluated "
                    f"(line {statement.start}); nothing was changed", module=self.name,
                    lineno=statement.start, traceback=text) from exc
            if before is not None:  # a new statement that is not a definition: what it bound
                bound = [k for k in namespace if namespace[k] is not before.get(k, MISSING)]
                bound += [k for k in before if k not in namespace]
                for name in bound:
                    if not name.startswith("__") and name not in self.bound:
                        self.bound.append(name)
                        line_of[name] = statement.start
                detail = "`if`/`try` that only defines names, run like a definition" \
                    if _defines_only(statement.node) else "new module-level statement, run once"
                self.steps.append(Step("run", self.name, "<module code>", statement.start,
                                       detail))
        steps: list[Step] = []
        for name in self.bound:
            new = namespace.get(name, MISSING)
            old = live.get(name, MISSING)
            if new is MISSING:
                continue
            steps.append(self._describe(name, old, new, line_of.get(name)))
        for name in self.removed:
            steps.append(Step("remove", self.name, name, None,
                              f"no longer defined (was {describe(live[name])})"))
        for name in self.bound:
            unpaired: list[types.CodeType] = []
            pairs = _nested_code_pairs(live.get(name, MISSING), namespace.get(name, MISSING),
                                       unpaired)
            for old_code in unpaired:
                steps.append(Step("note", self.name, _code_name(old_code), line_of.get(name),
                                  "functions it made before the update keep their old code: "
                                  "the new version has no function of that name there"))
            for old_code, new_code in pairs:
                if old_code.co_freevars != new_code.co_freevars:
                    steps.append(Step(
                        "note", self.name, _code_name(old_code), line_of.get(name),
                        "functions it made before the update keep their old code: free "
                        f"variables changed (before: {old_code.co_freevars}; after: "
                        f"{new_code.co_freevars})"))
        self.steps = steps + self.steps
        return namespace

    def _describe(self, name: str, old: object, new: object, line: int | None) -> Step:
        kind = _callable_kind(new)
        if old is MISSING:
            return Step(f"add {kind or 'name'}", self.name, name, line)
        if _is_dispatcher(old):
            return Step("update singledispatch function", self.name, name, line,
                        "implementations updated, registrations kept and added")
        if kind == "function" and _callable_kind(old) == "function":
            return Step("update function", self.name, name, line, "in place")
        if kind == "class" and isinstance(old, type) and isinstance(new, type):
            detail = f"transformer {describe(self.transformers[name])}" \
                if name in self.transformers else ""
            return Step("update class", self.name, name, line, detail,
                        _method_steps(self.name, name, old, new))
        return Step("set", self.name, name, line, f"was {_short(old)}, now {_short(new)}")

    def _codes(self, namespace: Namespace) -> set[types.CodeType]:
        """Code objects that must not be running when the update applies: the functions it
        changes or removes, the methods it changes (all of a class it must replace), and the
        functions they made that will run new code (closures)."""
        codes: set[types.CodeType] = set()
        live = self.module.__dict__
        removed = set(self.removed)
        for name in self.bound + self.removed:
            value = live.get(name, MISSING)
            # a removed name is still in the trial namespace (a copy of the live one)
            new = MISSING if name in removed else namespace.get(name, MISSING)
            codes.update(old for old, new_code in _nested_code_pairs(value, new)
                         if old.co_freevars == new_code.co_freevars
                         and not same_code(old, new_code))  # not for new line numbers only
            if isinstance(value, type):
                if isinstance(new, type) and updatable_in_place(value, new):
                    codes |= _changed_method_codes(value, new)
                else:
                    codes |= class_codes(value)
            elif _is_function(value):
                codes |= codes_of(value)
        return codes

    def kept_class_attributes(self, name: str, live_cls: type) -> set[str]:
        """Attributes of class ``name`` that updating it must keep: those set by class-body
        statements that did not change, and those the old body never set (added at run time)."""
        old = self.old_classes.get(name)
        new = next((s.node for s in self.run if s.kind == "class" and s.names == (name,)), None)
        if old is None or new is None:
            return set()
        assert isinstance(old, ast.ClassDef) and isinstance(new, ast.ClassDef)  # class statements
        old_body = {ast.dump(node): _assigned_names(node) for node in old.body}
        set_by_old: set[str] = set()
        for node in old.body:
            set_by_old |= names_bound(node)[0]
        kept: set[str] = set()
        for node in new.body:
            if ast.dump(node) in old_body:
                kept |= _assigned_names(node)
        runtime = {k for k, v in vars(live_cls).items()
                   if k not in set_by_old and not k.startswith("__") and not callable(v)}
        return kept | runtime

    # -- what the update leaves running (pymoult.highlevel.stale_frames) ------------------------

    def code_labels(self) -> dict[types.CodeType, str]:
        """``{code: "module.name"}`` for each code object of :attr:`codes`, read while the live
        objects still hold them (before the update applies): ``jobs.Job.run``, ``jobs.main``."""
        live = self.module.__dict__
        names: dict[types.CodeType, str] = {}
        for name in self.bound + self.removed:
            value = live.get(name, MISSING)
            if isinstance(value, type):
                for attribute, function in _named_class_functions(value):
                    for code in _function_codes(function):
                        names.setdefault(code, f"{name}.{attribute}")
            elif _is_function(value):
                for code in _function_codes(value):
                    names.setdefault(code, name)
        return {code: f"{self.name}.{names.get(code) or _code_name(code)}" for code in self.codes}

    def live_codes(self) -> set[types.CodeType]:
        """The code objects the module's objects of the names the update binds run now (after
        it applied: what of :attr:`codes` is not among them was replaced)."""
        live = self.module.__dict__
        codes: set[types.CodeType] = set()
        for name in self.bound:
            value = live.get(name, MISSING)
            if isinstance(value, type):
                for _, function in _named_class_functions(value):
                    codes.update(_function_codes(function))
            elif _is_function(value):
                codes.update(_function_codes(value))
        return codes

    def module_code(self) -> ModuleCode | None:
        """A :class:`~pymoult.highlevel.stale_frames.ModuleCode` of the module's module-level
        statements that the update changed or dropped and does not run again (not definitions:
        a loop, a call, an ``if``), or None when there are none."""
        if self.before is None:  # compared with the live module: no old text to tell
            return None
        new_keys = {_key(statement) for statement in self.change.new}
        lines = self.before.lines
        old = [(s.start, lines[s.start - 1:s.end]) for s in self.change.old
               if s.kind == "other" and _key(s) not in new_keys]
        if not old:
            return None
        running: Callable[[], list[str] | None]
        if self.recorded is None:  # the version compared with is the one imported
            def running() -> list[str] | None:
                return lines
        else:  # an earlier update recorded a version: the import's lines, if tracked
            def running() -> list[str] | None:
                source = tracked_source(self.module)
                return None if source is None else split_lines(source)
        return ModuleCode(self.name, self.module.__dict__, old, running)

    # -- applied ---------------------------------------------------------------------------------

    def runs_no_code(self) -> bool:
        """Whether applying the plan now would run none of the program's code: each statement
        it runs is a ``def`` that runs nothing when executed (:func:`_runs_nothing`), each name
        it binds is unbound or a plain function without attributes (updated in place by
        ``update_function``, which then reads only functions), nothing is removed and no line
        number moves (renumbering reads the attributes of classes, which may be descriptors),
        in a module of the plain module type."""
        if type(self.module) is not types.ModuleType or self.removed or self.change.delta or \
                self.change.moves or not all(_runs_nothing(s.node) for s in self.run):
            return False
        live = self.module.__dict__
        for name in self.bound:
            old = live.get(name, MISSING)
            if old is not MISSING and (type(old) is not types.FunctionType or old.__dict__):
                return False
        return True

    def check_current(self) -> None:
        """Raise if another update changed the module since this one was made."""
        if recorded_version(self.module) is not self.recorded:
            raise ModuleUpdateError(f"module {self.name!r} changed since this update was made "
                                    "(another update was applied): make it again",
                                    module=self.name)

    def apply(self, journal: Journal) -> None:
        """Run the changed statements one by one in the live namespace; after each, put back
        what it rebound and update the live objects instead, so that the next statements (a
        subclass, a table of handlers) see the live objects."""
        live = self.module.__dict__
        possible = _namespace_dispatchers(live, dict_version(live), lambda: list(live.values()))
        dispatchers = [d for d in possible if _is_dispatcher(d)]
        saved = [(d, dict(_registry_dict(d))) for d in dispatchers]
        if saved:
            journal.record(RestoreRegistries(saved))  # what registrations change is undone
        counterparts: dict[int, type] = {}
        # old code nested in a changed function -> its new version
        inner_codes: dict[types.CodeType, types.CodeType] = {}
        # the annotations of new statements that bound them apart (3.14), evaluated at the end
        lazy_annotations: list[Callable[[], Namespace]] = []
        for statement, code in self.compiled:
            if _runs_nothing(statement.node):
                # a def that runs nothing binds its name only: into a namespace of its own,
                # the module's dict being its globals (the function it makes reads them), so
                # that the module's dict is not changed at all, not even for a moment (nor
                # copied: thousands of names), and keeps its version tag (source_diff)
                snapshot = {k: live.get(k, MISSING) for k in statement.names}
                made: Namespace = {}
                builtins = live.get("__builtins__", MISSING)
                try:
                    exec(code, live, made)
                finally:
                    if builtins is MISSING:  # exec gives globals without builtins the builtins
                        live.pop("__builtins__", None)
                    changed = [k for k in statement.names
                               if made.get(k, MISSING) is not snapshot[k]]
                    new_values = {k: made.get(k, MISSING) for k in changed}
            else:
                snapshot = dict(live)
                # what the statement stores into the annotations in place (up to 3.13, and
                # under ``from __future__ import annotations``) is put back, then journaled
                annotations = live.get("__annotations__")
                annotated = dict(annotations) if type(annotations) is dict else None
                added: Namespace = {}
                try:
                    exec(code, live)
                finally:
                    if statement.kind in ("def", "class"):
                        changed = [k for k in statement.names
                                   if live.get(k, MISSING) is not snapshot.get(k, MISSING)]
                    else:  # an assignment or import may bind more (a walrus, a submodule)
                        changed = [k for k in live if live[k] is not snapshot.get(k, MISSING)]
                        changed += [k for k in snapshot if k not in live]
                    new_values = {k: live.get(k, MISSING) for k in changed}
                    if annotated is not None and annotations is snapshot.get("__annotations__"):
                        assert type(annotations) is dict
                        added = {k: v for k, v in annotations.items()
                                 if annotated.get(k, MISSING) is not v}
                        if added:
                            annotations.clear()
                            annotations.update(annotated)
                    _restore(live, snapshot)  # from here on every change goes through the journal
                for key, value in added.items():
                    assert type(annotations) is dict
                    journal.record(SetItem(annotations, key, annotated.get(key, MISSING) if
                                           annotated is not None else MISSING, value))
                    annotations[key] = value
                evaluate = take_statement_annotations(new_values)  # 3.14: bound, not added
                if evaluate is not None:
                    changed = [k for k in changed if k in new_values]
                    lazy_annotations.append(evaluate)
            dispatchers += [v for v in new_values.values() if _is_dispatcher(v)]
            registered = {id(f) for d in dispatchers for f in d.registry.values()}
            for name in changed:
                old, new = snapshot.get(name, MISSING), new_values[name]
                if isinstance(old, type) and isinstance(new, type):
                    counterparts[id(new)] = old
                for old_code, new_code in _nested_code_pairs(old, new):
                    if old_code.co_freevars == new_code.co_freevars:
                        inner_codes[old_code] = new_code
                self._apply_binding(name, old, new, counterparts, registered, journal)
        if lazy_annotations:
            self._add_annotations(lazy_annotations, journal)
        for name in self.removed:
            if name in live:
                delete_attribute(self.module, name, journal)
        if inner_codes:
            _update_closures(inner_codes, journal)
        if self.change.delta:
            self._renumber(journal)
        if self.change.moves:
            self._move_lines(journal)
        journal.record(RememberVersion(self.module, self.after))

    def _add_annotations(self, lazy: list[Callable[[], Namespace]], journal: Journal) -> None:
        """Add the annotations of the new statements that bound them apart from the module's
        (3.14: ``_cpython.take_statement_annotations``) to the module's, as a fresh import of the
        new version would leave them: evaluated once all the statements have run."""
        live = self.module.__dict__
        added: Namespace = {}
        for evaluate in lazy:
            try:
                added.update(evaluate())
            except Exception as exc:
                raise ModuleUpdateError(f"the annotations of the new version of {self.name!r} "
                                        f"raised {exc!r} when evaluated; nothing was changed",
                                        module=self.name) from exc
        annotations = live.get("__annotations__", MISSING)
        if type(annotations) is dict:  # read before: the dict later reads return
            for key, value in added.items():
                journal.record(SetItem(annotations, key, annotations.get(key, MISSING), value))
                annotations[key] = value
            return
        merged = unread_annotations(live)  # the module's own ``__annotate__`` stays
        merged.update(added)
        journal.record(SetItem(live, "__annotations__", annotations, merged, owner=self.module))
        live["__annotations__"] = merged

    def _renumber(self, journal: Journal) -> None:
        """Move the line numbers of the unchanged functions below the change by ``delta``, so
        that tracebacks through them show the right lines of the new version."""
        delta, filename = self.change.delta, self.after.filename
        live = self.module.__dict__
        functions: list[types.FunctionType] = []
        for name, start, end in self.after.definitions(below=self.change.shifted_from + delta):
            value = live.get(name)
            candidates = _class_functions(value) if isinstance(value, type) else [value]
            old_range = range(start - delta, end - delta + 1)
            for candidate in candidates:
                for layer in wrapped_layers(candidate) if candidate is not None else ():
                    if isinstance(layer, types.FunctionType) \
                            and layer.__code__.co_filename == filename \
                            and layer.__code__.co_firstlineno in old_range:
                        functions.append(layer)
        if functions:
            journal.record(Renumber(functions, delta))

    def _move_lines(self, journal: Journal) -> None:
        """Give the unchanged functions, found by comparing the live module, the line numbers
        they have in the new version (their file's)."""
        by_delta: dict[int, list[types.FunctionType]] = {}
        for function, line in self.change.moves:
            delta = line - function.__code__.co_firstlineno
            if delta and function.__code__.co_filename == self.after.filename:
                by_delta.setdefault(delta, []).append(function)
        for delta, functions in by_delta.items():
            journal.record(Renumber(functions, delta))

    def _apply_binding(self, name: str, old: Any, new: Any, counterparts: dict[int, type],
                       registered: set[int], journal: Journal) -> None:
        live = self.module.__dict__
        if new is MISSING:  # deleted by the new code itself
            delete_attribute(self.module, name, journal)
            return
        if old is MISSING or id(old) in registered:
            # new, or a name bound to a registered implementation (``_``): rebinding it is all
            journal.record(SetItem(live, name, old, new, owner=self.module))
            live[name] = new
            return
        if _is_dispatcher(old) and _is_dispatcher(new):
            _merge_dispatcher(old, new, journal)
            return
        if _is_function(old) and _is_function(new):
            try:
                update_function(old, new, journal)
                return
            except RedefinitionError as exc:
                logger.warning("%s.%s rebound, not updated in place (%s): references taken "
                               "before keep the old code", self.name, name, exc)
        elif isinstance(old, type) and isinstance(new, type):
            redefineClass(self.module, name, new, transformer=self.transformers.get(name),
                          builder=self.builders.get(name) or _default_builder(new),
                          journal=journal, counterparts=counterparts,
                          keep=self.kept_class_attributes(name, old))
            return
        set_attribute(self.module, name, new, journal)


def _added_statements(old: Sequence[Statement], new: Sequence[Statement]) -> set[int]:
    """Ids of the statements of ``new`` that are not definitions and are to run: those added by
    the new version, rather than changed from one of ``old`` (both: the statements of the
    changed span), and the changed ones that only define names (:func:`_defines_only`: an
    ``if PY3:`` or a ``try: import ... except ImportError:`` choosing definitions is run again
    like the definitions it holds).

    The two lists are aligned (``difflib``); in a span where statements were replaced, the
    non-definition statements of the new version are paired in order with those of the old one
    (``calls.append('a')`` changed to ``calls.append('b')``), and one binding a name an old
    statement of the span bound (a ``def`` moved under an ``if``) is a change too. The others
    are additions."""
    matcher = difflib.SequenceMatcher(None, [_key(s) for s in old], [_key(s) for s in new],
                                      autojunk=False)
    added: set[int] = set()
    for tag, i1, i2, j1, j2 in matcher.get_opcodes():
        if tag == "equal" or tag == "delete":
            continue
        replaced = old[i1:i2]
        unpaired = sum(1 for s in replaced if s.kind == "other")
        names: set[str] = set()
        for statement in replaced:
            names.update(statement.names)
            if statement.kind == "other":
                names |= names_bound(statement.node)[0]
        for statement in new[j1:j2]:
            if statement.kind != "other":
                continue
            if _defines_only(statement.node):
                added.add(id(statement))
                unpaired = max(0, unpaired - 1)
            elif unpaired:
                unpaired -= 1
            elif not (names_bound(statement.node)[0] & names):
                added.add(id(statement))
    return added


#: Statements that bind module names and change nothing else when run again.
_DEFINITIONS = (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef, ast.Import, ast.Pass,
                ast.Raise, ast.Assert)
if sys.version_info >= (3, 11):  # try/except*
    _TRIES: tuple[type[ast.Try | ast.TryStar], ...] = (ast.Try, ast.TryStar)
    _BRANCHING: tuple[type[ast.If | ast.Try | ast.TryStar], ...] = (ast.If, *_TRIES)
else:
    _TRIES = (ast.Try,)
    _BRANCHING = (ast.If, ast.Try)


def _defines_only(node: ast.stmt) -> bool:
    """Whether the compound statement ``node`` (an ``if`` or a ``try``) only chooses
    definitions: every statement in its branches, at any depth, is a ``def``, a ``class``, an
    import (not ``*``), an assignment to plain names, a docstring, ``pass``, ``raise``,
    ``assert`` or such an ``if``/``try``. Run again, it binds names as a definition does; a
    call, an augmented assignment, an assignment to an attribute or item, a loop or a ``with``
    would act on state, and make it module code that runs once."""
    if not isinstance(node, _BRANCHING):
        return False
    branches = [node.body, node.orelse]
    if isinstance(node, _TRIES):
        branches += [handler.body for handler in node.handlers] + [node.finalbody]
    for statement in (s for branch in branches for s in branch):
        if isinstance(statement, _BRANCHING):
            if not _defines_only(statement):
                return False
        elif isinstance(statement, ast.ImportFrom):
            if any(alias.name == "*" for alias in statement.names):
                return False
        elif isinstance(statement, ast.Assign):
            if not all(_plain_target(target) for target in statement.targets):
                return False
        elif isinstance(statement, ast.AnnAssign):
            if not isinstance(statement.target, ast.Name):
                return False
        elif isinstance(statement, ast.Expr):
            if not (isinstance(statement.value, ast.Constant)
                    and isinstance(statement.value.value, str)):
                return False
        elif not isinstance(statement, _DEFINITIONS):
            return False
    return True


def _plain_target(target: ast.expr) -> bool:
    """Whether an assignment target binds plain names only (``a``, ``a, b``, ``[a, *b]``)."""
    if isinstance(target, ast.Starred):
        target = target.value
    if isinstance(target, ast.Name):
        return True
    return isinstance(target, (ast.Tuple, ast.List)) and all(map(_plain_target, target.elts))


def _runs_nothing(node: ast.stmt) -> bool:
    """Whether executing the top-level statement ``node`` runs no code of the program: a
    ``def`` without decorators or type parameters whose defaults and annotations are literals
    or names (a name is read from the module's dict, or the builtins', which runs nothing)."""
    if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) or node.decorator_list \
            or getattr(node, "type_params", None):
        return False
    arguments = node.args
    parts = arguments.defaults + [d for d in arguments.kw_defaults if d is not None] + \
        [a.annotation for a in arguments.posonlyargs + arguments.args + arguments.kwonlyargs +
         [arguments.vararg, arguments.kwarg] if a is not None and a.annotation is not None] + \
        ([node.returns] if node.returns is not None else [])
    return all(isinstance(part, (ast.Constant, ast.Name)) for part in parts)


def _may_call(node: ast.stmt) -> bool:
    """Whether evaluating a top-level statement may call code: anything but a ``def`` whose
    decorators, defaults and annotations call nothing (the usual change: a function's body)."""
    if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
        return True
    arguments = node.args
    parts = list(node.decorator_list) + arguments.defaults + \
        [d for d in arguments.kw_defaults if d is not None] + \
        [a.annotation for a in arguments.posonlyargs + arguments.args + arguments.kwonlyargs +
         [arguments.vararg, arguments.kwarg] if a is not None and a.annotation is not None] + \
        ([node.returns] if node.returns is not None else [])
    return any(isinstance(inner, ast.Call) for part in parts for inner in ast.walk(part))


def _trial_namespace(live: Namespace, copy_functions: bool, copy_containers: bool,
                     into: Namespace | None = None) -> Namespace:
    """A copy of the module namespace ``live`` for evaluating a new version on trial:
    singledispatch functions are copies (registrations land in them); with ``copy_functions``,
    the module's own Python functions are copies whose globals are the copy (so that a
    statement calling one sees what the statements above it bound); with ``copy_containers``,
    the module's lists, dicts, sets and bytearrays are shallow copies (a new statement that
    appends to a module list does it on the copy). The copy is made in ``into`` if given."""
    namespace = {} if into is None else into
    tag = dict_version(live)
    namespace.update(live)  # not ``live`` below: other threads may bind globals
    if dict_version(live) != tag:
        tag = None  # changed meanwhile: the copy's values are scanned, and not kept
    if copy_functions or copy_containers:
        items = list(namespace.items())
    else:
        # only singledispatch functions to copy, few if any among the thousands of names of a
        # large module
        found = {id(value) for value in
                 _namespace_dispatchers(live, tag, lambda: list(namespace.values()))}
        items = [(key, value) for key, value in namespace.items() if id(value) in found] \
            if found else []
    for key, value in items:
        if _is_dispatcher(value):
            namespace[key] = _clone_dispatcher(value)
        elif copy_functions and type(value) is types.FunctionType and value.__globals__ is live:
            namespace[key] = _function_copy(value, namespace)
        elif copy_containers and type(value) in (list, dict, set, bytearray) \
                and key != "__builtins__":  # ``__all__`` and ``__annotations__`` too
            namespace[key] = value.copy()
    return namespace


def _definitions_namespace(live: Namespace, statements: Iterable[Statement]) -> Namespace:
    """The namespace in which ``def`` statements that run nothing (:func:`_runs_nothing`) are
    evaluated on trial, for what :func:`_trial_namespace` would give them: what executing them
    reads of the module's globals (``__name__``, for the functions' ``__module__``, the
    builtins, the names their defaults and annotations read), not a copy of the thousands of
    names of a large module. The functions they make are not called."""
    names = {"__name__", "__builtins__"}
    for statement in statements:
        definition = statement.node  # a tree, parsed again if released: read once
        assert isinstance(definition, (ast.FunctionDef, ast.AsyncFunctionDef))  # runs nothing
        names.update(node.id for node in ast.walk(definition.args)
                     if isinstance(node, ast.Name))
        if definition.returns is not None:
            names.update(node.id for node in ast.walk(definition.returns)
                         if isinstance(node, ast.Name))
    namespace = {name: live.get(name, MISSING) for name in names}
    return {name: value for name, value in namespace.items() if value is not MISSING}


# id of a namespace -> (its dict's version tag, the possible dispatchers then bound in it)
_dispatcher_scans: dict[int, tuple[int, list[types.FunctionType]]] = {}
_DISPATCHER_SCANS_KEPT = 64
_dispatcher_scans_lock = threading.Lock()


def _namespace_dispatchers(live: Namespace, tag: int | None,
                           values: Callable[[], list[object]]) -> list[types.FunctionType]:
    """:func:`_possible_dispatchers` among ``values()``, the values of the module namespace
    ``live`` read after its version tag (``_cpython.dict_version``) read ``tag`` (None: no tag,
    nothing kept). What is found is kept with the tag, and given again while the namespace
    reads the same tag: no name bound, rebound or deleted since, so the same objects are bound,
    and a singledispatch function is made by ``singledispatch()``, then bound. An update of
    function bodies leaves the tag alone (:meth:`_ModulePlan.apply`), so a large module is
    scanned once, not twice at each update (on trial, then in the stop-the-world window). Tags
    are unique in the process: a namespace made later at the same address reads another. Not
    seen: a plain function given a ``registry`` attribute later, without being bound again."""
    if tag is not None:
        known = _dispatcher_scans.get(id(live))
        if known is not None and known[0] == tag:
            return known[1]
    found = _possible_dispatchers(values())
    if tag is not None:
        with _dispatcher_scans_lock:
            _dispatcher_scans.pop(id(live), None)
            if len(_dispatcher_scans) >= _DISPATCHER_SCANS_KEPT:
                del _dispatcher_scans[next(iter(_dispatcher_scans))]  # the oldest
            _dispatcher_scans[id(live)] = (tag, found)
    return found


def _possible_dispatchers(values: list[object]) -> list[types.FunctionType]:
    """The Python functions among ``values`` (a list) with a ``registry`` attribute, as a
    singledispatch function has (see :func:`_is_dispatcher`): few if any of the thousands of
    functions of a large module. The attribute is looked up, not read from the function's
    ``__dict__``: reading that makes it, an empty dict for each function, which every scan would
    then go through (a plain function's type has no ``registry``: the lookup reads the function's
    own attributes only, and none when it has never had any)."""
    function = types.FunctionType
    return [value for value in values
            if type(value) is function and getattr(value, "registry", None) is not None]


class _TrialGroup:
    """Modules updated together, while their plans are made (:meth:`ModuleUpdate.together`).

    Installed over, their new versions are all there at once: a fresh import of one that does
    ``from .b import name`` gets the new ``b``. So, on trial, each new version is evaluated in
    the namespace of a module standing for it (``stand_ins``), and an import, in a new version,
    of another module of the group gets that other's stand-in, planned first if it was not (as a
    fresh import runs the imported module first: the plans are made, and applied, in that
    order; one being planned, in an import cycle, is returned as it is, partly run). The real
    import runs first, as on any trial (a module not loaded yet is loaded)."""

    _local = threading.local()

    def __init__(self, sources: dict[str, str | None],
                 make: Callable[[str, str | None], ModuleUpdate]) -> None:
        self.sources = sources  # module name -> its new source (None: its own file)
        self.make = make  # (name, source) -> the ModuleUpdate of that module
        # module name -> its ModuleUpdate, in the order they were made
        self.updates: dict[str, ModuleUpdate] = {}
        # module name -> the module whose namespace is its new version's
        self.stand_ins: dict[str, types.ModuleType] = {}
        # the error of a module imported on trial by another
        self.failure: ModuleUpdateError | None = None

    @classmethod
    def current(cls) -> _TrialGroup | None:
        """The group whose plans the calling thread is making, or None."""
        return getattr(cls._local, "group", None)

    def plan(self, name: str) -> None:
        """Make the update of module ``name`` unless made or being made."""
        if name in self.updates or name in self.stand_ins:
            return
        outer = getattr(self._local, "group", None)
        self._local.group = self
        try:
            self.updates[name] = self.make(name, self.sources[name])
        except ModuleUpdateError as exc:
            self.failure = exc
            raise
        finally:
            self._local.group = outer

    def begin(self, name: str) -> Namespace:
        """The namespace the trial of module ``name`` runs in: that of its stand-in."""
        stand_in = types.ModuleType(name)
        self.stand_ins[name] = stand_in
        return stand_in.__dict__

    def stand_in(self, name: str) -> types.ModuleType | None:
        """The module standing for the new version of ``name`` (planned now if need be), or
        None if ``name`` is not in the group."""
        if name not in self.sources:
            return None
        self.plan(name)
        return self.stand_ins.get(name)

    def builtins(self, live_builtins: Namespace | types.ModuleType) -> Namespace:
        """The builtins of a trial namespace: those of the module, with an ``__import__`` that
        gives the stand-ins of the group's modules."""
        base = dict(live_builtins if isinstance(live_builtins, dict) else vars(live_builtins))
        real_import = base["__import__"]

        def __import__(name: str, globals: Mapping[str, object] | None = None,
                       locals: Mapping[str, object] | None = None,
                       fromlist: Sequence[str] = (), level: int = 0) -> types.ModuleType:
            module = real_import(name, globals, locals, fromlist, level)
            return self._substitute(module, name, fromlist)

        base["__import__"] = __import__
        return base

    def _substitute(self, module: types.ModuleType, name: str,
                    fromlist: Sequence[str]) -> types.ModuleType:
        if fromlist:  # from x import a, b: ``x`` itself, its submodules a, b in it
            return self._with_children(module, [a for a in fromlist if a != "*"])
        # import a.b.c: ``a``, whose attributes lead to the others (``name`` is absolute)
        parts = name.split(".")
        for depth in range(1, len(parts) + 1):  # planned in the order a fresh import runs them
            self.stand_in(".".join(parts[:depth]))
        result: types.ModuleType | None = None
        for depth in range(len(parts), 0, -1):  # then bound, the deepest first
            live = sys.modules.get(".".join(parts[:depth]))
            if live is None:
                return module
            known = {parts[depth]: result} if depth < len(parts) and result is not \
                sys.modules.get(".".join(parts[:depth + 1])) else {}
            result = self._with_children(live, [], known)
        assert result is not None  # parts is never empty
        return result

    def _with_children(self, module: types.ModuleType, children: Iterable[str],
                       known: Mapping[str, types.ModuleType | None] | None = None
                       ) -> types.ModuleType:
        """``module``'s stand-in, or ``module`` itself, with the stand-ins of its submodules
        ``children`` bound in it (what the import of a submodule does to its package); for a
        module not in the group whose submodules are, a copy of it."""
        result = self.stand_in(module.__name__)  # a package runs before its submodules
        found = dict(known or {})
        for child in children:
            if child not in found:
                stand_in = self.stand_in(f"{module.__name__}.{child}")
                if stand_in is not None:
                    found[child] = stand_in
        if result is None:
            if not found:
                return module
            result = types.ModuleType(module.__name__)
            result.__dict__.update(vars(module))
        result.__dict__.update(found)
        return result


def _function_copy(function: types.FunctionType, namespace: Namespace) -> types.FunctionType:
    """``function`` with ``namespace`` as its globals (the same code, closure and attributes)."""
    copy = types.FunctionType(function.__code__, namespace, function.__name__,
                              function.__defaults__, function.__closure__)
    # what the constructor does not take from the code and the globals (each set only when
    # needed: half the cost of a copy, for the 5,000 functions of a large module)
    if function.__kwdefaults__ is not None:
        copy.__kwdefaults__ = function.__kwdefaults__
    if copy.__qualname__ != function.__qualname__:
        copy.__qualname__ = function.__qualname__
    if function.__dict__:
        copy.__dict__.update(function.__dict__)
    if function.__annotations__:
        copy.__annotations__ = function.__annotations__
    if copy.__doc__ is not function.__doc__:
        copy.__doc__ = function.__doc__
    if copy.__module__ != function.__module__:
        copy.__module__ = function.__module__
    return copy


def _user_traceback(exc: BaseException, version: SourceVersion) -> str:
    """The traceback of an exception raised by the new version's code on trial, without the
    frame that ran it, with the lines of the new version (not those of the file on disk)."""
    tb = exc.__traceback__
    tb = tb.tb_next if tb is not None and tb.tb_next is not None else tb
    filename = version.filename
    cached = linecache.cache.get(filename)
    linecache.cache[filename] = (len(version.source), None, version.lines, filename)
    try:
        return "".join(traceback.format_exception(type(exc), exc, tb))
    finally:
        if cached is None:
            linecache.cache.pop(filename, None)
        else:
            linecache.cache[filename] = cached


def _code_name(code: types.CodeType) -> str:
    return getattr(code, "co_qualname", code.co_name)


def _function_codes(value: object) -> list[types.CodeType]:
    """The code objects of the Python-function layers of a function or wrapper, outermost
    first."""
    return [layer.__code__ for layer in wrapped_layers(value)
            if isinstance(layer, types.FunctionType)]


def _method_codes(cls: type) -> MethodCodes:
    """{(attribute, accessor): code} of the functions a class body defines."""
    codes: MethodCodes = {}
    for name, value in vars(cls).items():
        if isinstance(value, property):
            for accessor in ("fget", "fset", "fdel"):
                code = _innermost_code(getattr(value, accessor))
                if code is not None:
                    codes[name, accessor] = code
        elif not isinstance(value, type):
            code = _innermost_code(value) if value is not None else None
            if code is not None:
                codes[name, None] = code
    return codes


def _nested_code_pairs(old: object, new: object, unpaired: list[types.CodeType] | None = None
                       ) -> list[tuple[types.CodeType, types.CodeType]]:
    """(old code, new code) pairs of the functions nested in the two versions ``old`` and
    ``new`` of a function or a class (inner functions, lambdas, classes, at any depth), matched
    by qualified name and order, for those that differ (in code or in line numbers): the
    closures the old version made before the update run the old of each pair. Named functions
    of the old version that have no counterpart are appended to ``unpaired`` if given."""
    if _is_function(old) and _is_function(new):
        old_codes, new_codes = _function_codes(old), _function_codes(new)
        todo = list(zip(old_codes, new_codes)) if len(old_codes) == len(new_codes) else []
    elif isinstance(old, type) and isinstance(new, type):
        new_methods = _method_codes(new)
        todo = [(code, new_methods[key]) for key, code in _method_codes(old).items()
                if key in new_methods]
    else:
        return []
    pairs: list[tuple[types.CodeType, types.CodeType]] = []
    while todo:
        old_code, new_code = todo.pop()
        if old_code is new_code:
            continue
        by_name: dict[str, list[types.CodeType]] = {}
        for const in new_code.co_consts:
            if isinstance(const, types.CodeType):
                by_name.setdefault(_code_name(const), []).append(const)
        seen: dict[str, int] = {}
        for const in old_code.co_consts:
            if not isinstance(const, types.CodeType):
                continue
            name = _code_name(const)
            index = seen[name] = seen.get(name, -1) + 1
            candidates: Sequence[types.CodeType] = by_name.get(name, ())
            if index >= len(candidates):
                if unpaired is not None and not const.co_name.startswith("<"):
                    unpaired.append(const)
            elif candidates[index] is not const:
                counterpart = candidates[index]
                if const.co_firstlineno != counterpart.co_firstlineno \
                        or not same_code(const, counterpart):
                    pairs.append((const, counterpart))
                todo.append((const, counterpart))
    return pairs


class SwapClosureCodes(Operation):
    """Functions made before the update by a changed function (closures), given the new
    version of their code."""

    def __init__(self, swapped: list[tuple[types.FunctionType, types.CodeType]]) -> None:
        self.swapped = swapped  # [(function, old code)]
        self.text = f"swap code of {len(swapped)} functions made by changed functions"

    def undo(self) -> None:
        for function, code in self.swapped:
            function.__code__ = code


def _update_closures(inner_codes: dict[types.CodeType, types.CodeType],
                     journal: Journal) -> None:
    """Give every function whose code is a key of ``inner_codes`` (old code -> new code, with
    the same free variables) the new code. One pass over the objects the collector tracks
    (``gc.get_referrers``: 15 ns an object, four times faster than filtering
    ``gc.get_objects()`` in Python)."""
    swapped = []
    for referrer in gc.get_referrers(*inner_codes):
        if type(referrer) is types.FunctionType:
            code = referrer.__code__
            new_code = inner_codes.get(code)
            if new_code is not None:
                swapped.append((referrer, code))
    if not swapped:
        return
    operation = SwapClosureCodes(swapped)
    journal.record(operation)
    for function, code in swapped:
        function.__code__ = inner_codes[code]
    logger.info("%d functions made before the update by changed functions run their new code",
                len(swapped))


def _key(statement: Statement) -> str:
    """What identifies a statement's meaning (:attr:`Statement.key`)."""
    return statement.key


def _assigned_names(node: ast.stmt) -> set[str]:
    """Names a class-body statement binds with an assignment (not a ``def``)."""
    if isinstance(node, ast.Assign):
        return {t.id for t in node.targets if isinstance(t, ast.Name)}
    if isinstance(node, (ast.AnnAssign, ast.AugAssign)) and isinstance(node.target, ast.Name):
        return {node.target.id}
    return set()


def _innermost_code(value: object) -> types.CodeType | None:
    if isinstance(value, (staticmethod, classmethod)):
        value = value.__func__
    layers = [layer for layer in wrapped_layers(value) if isinstance(layer, types.FunctionType)] \
        if callable(value) else []
    return layers[-1].__code__ if layers else None


def _changed_method_codes(live_cls: type, new_cls: type) -> set[types.CodeType]:
    """Codes of the methods of ``live_cls`` that ``new_cls`` changes or drops."""
    codes: set[types.CodeType] = set()
    for name, value in vars(live_cls).items():
        accessors = [value]
        new_accessors = [vars(new_cls).get(name)]
        if isinstance(value, property):
            accessors = [value.fget, value.fset, value.fdel]
            other = vars(new_cls).get(name)
            new_accessors = [getattr(other, a, None) for a in ("fget", "fset", "fdel")]
        for old, new in zip(accessors, new_accessors):
            old_code = _innermost_code(old) if old is not None else None
            if old_code is None:
                continue
            new_code = _innermost_code(new) if new is not None else None
            if new_code is None or not same_code(old_code, new_code):
                codes |= codes_of(old)
    return codes


def _class_functions(cls: type) -> list[Callable[..., Any]]:
    """The Python functions defined in a class body (methods, static and class methods,
    property accessors)."""
    functions: list[Callable[..., Any]] = []
    for value in vars(cls).values():
        if isinstance(value, (staticmethod, classmethod)):
            value = value.__func__
        if isinstance(value, property):
            functions.extend(f for f in (value.fget, value.fset, value.fdel) if f is not None)
        elif callable(value) and not isinstance(value, type):
            functions.append(value)
    return functions


def _named_class_functions(cls: type) -> list[tuple[str, Callable[..., Any]]]:
    """``(attribute, function)`` for the Python functions a class body defines (methods,
    static and class methods, property accessors; wrappers as they are)."""
    found: list[tuple[str, Callable[..., Any]]] = []
    for attribute, value in vars(cls).items():
        if isinstance(value, (staticmethod, classmethod)):
            value = value.__func__
        if isinstance(value, property):
            found.extend((attribute, f) for f in (value.fget, value.fset, value.fdel)
                         if f is not None)
        elif _is_function(value):
            found.append((attribute, value))
    return found


def _method_steps(module: str, class_name: str, old_cls: type, new_cls: type) -> list[Step]:
    """The steps of an ``update class``: each method (function, static or class method,
    property) the new version changes, adds or removes, in the new class's order (the
    removed ones last)."""
    old_codes: dict[str, dict[str | None, types.CodeType]] = {}
    new_codes: dict[str, dict[str | None, types.CodeType]] = {}
    for codes, cls in ((old_codes, old_cls), (new_codes, new_cls)):
        for (attribute, accessor), code in _method_codes(cls).items():
            codes.setdefault(attribute, {})[accessor] = code
    steps: list[Step] = []
    for attribute, accessors in new_codes.items():
        line = min(code.co_firstlineno for code in accessors.values())
        name = f"{class_name}.{attribute}"
        before = old_codes.get(attribute)
        if before is None:
            steps.append(Step("add method", module, name, line))
        elif before.keys() != accessors.keys() or not all(
                same_code(before[key], accessors[key]) for key in accessors):
            steps.append(Step("update method", module, name, line))
    for attribute in old_codes:
        if attribute not in new_codes:
            steps.append(Step("remove method", module, f"{class_name}.{attribute}"))
    return steps


def _shifted_code(code: types.CodeType, delta: int) -> types.CodeType:
    consts = tuple(_shifted_code(c, delta) if isinstance(c, types.CodeType) else c
                   for c in code.co_consts)
    return code.replace(co_firstlineno=code.co_firstlineno + delta, co_consts=consts)


class Renumber(Operation):
    """Functions whose code moved by ``delta`` lines (same code, new line numbers)."""

    def __init__(self, functions: list[types.FunctionType], delta: int) -> None:
        self.codes = [(f, f.__code__) for f in functions]
        for function, code in self.codes:
            function.__code__ = _shifted_code(code, delta)
        self.text = f"move the line numbers of {len(functions)} functions by {delta:+d}"

    def undo(self) -> None:
        for function, code in self.codes:
            function.__code__ = code


def _restore(namespace: Namespace, snapshot: Namespace) -> None:
    for key in [k for k in namespace if k not in snapshot] if len(namespace) != len(snapshot) \
            or namespace.keys() != snapshot.keys() else ():
        del namespace[key]
    keys = snapshot.keys()
    # the keys whose value changed, found at C speed (a namespace of thousands of names)
    for key in itertools.compress(keys, map(operator.is_not, map(namespace.get, keys,
                                                                  itertools.repeat(MISSING)),
                                            snapshot.values())):
        namespace[key] = snapshot[key]


def _merge_dispatcher(live: _Dispatcher, new: _Dispatcher, journal: Journal) -> None:
    """Update a singledispatch function from its new version, keeping the live dispatcher
    (and the registrations made by code that did not change)."""
    update_function(live.registry[object], new.registry[object], journal)
    registry = _registry_dict(live)
    for cls, implementation in new.registry.items():
        if cls is object:
            continue
        current = registry.get(cls)
        if current is implementation:
            continue
        if isinstance(current, types.FunctionType) \
                and isinstance(implementation, types.FunctionType):
            try:
                update_function(current, implementation, journal)
                continue
            except RedefinitionError:
                pass
        registry[cls] = implementation
    _dispatch_cache_clear(live)


def _default_builder(new_cls: type) -> Callable[[object], object] | None:
    """For a namedtuple-like class (its ``__new__`` takes the fields): build from the old
    object's fields of the same names."""
    fields = getattr(new_cls, "_fields", None)
    if not (issubclass(new_cls, tuple) and isinstance(fields, tuple)):
        return None

    def build(old: object) -> object:
        return new_cls(**{f: getattr(old, f) for f in fields if hasattr(old, f)})
    return build


def _short(value: object, limit: int = 60) -> str:
    text = describe(value) if callable(value) else repr(value)
    return text if len(text) <= limit else text[:limit - 3] + "..."


def _resolve_module(module: types.ModuleType | str) -> types.ModuleType:
    if isinstance(module, types.ModuleType):
        return module
    if isinstance(module, str):
        found = sys.modules.get(module)
        if found is None:
            raise PymoultValueError(f"no module {module!r} is loaded")
        return found
    raise PymoultTypeError(f"expected a module or its name, got {module!r}")


def _own_file(module: types.ModuleType) -> str:
    spec = getattr(module, "__spec__", None)
    path = getattr(spec, "origin", None) if spec is not None else None
    path = path or getattr(module, "__file__", None)
    if not isinstance(path, str) or not path.endswith(".py"):
        raise ModuleUpdateError(f"module {module.__name__!r} has no Python source file to read "
                                "its new version from: give source= or path=",
                                module=module.__name__)
    return path


class ModuleUpdate(Update):
    """Update ``module`` (a module or its name) to a new version of its source.

    Give the new version as ``source`` (text) or ``path`` (a file); with neither, the new version
    is the module's own file as it is now (edited in place, or installed over). ``filename``
    names where the new version comes from in messages (default: ``path``, else the module's
    file); the new code itself keeps the module's file name, its lines those of the new version.
    ``old_source`` is the source the module runs now, when Pymoult cannot know it (see
    ``source_diff.version_of``: with sources tracked, as under ``pymoult run`` or after
    ``pymoult.track_sources()``, it knows).
    ``transformers`` and ``builders`` map a class name to the transformer run on each instance
    of that class, and to the builder of its new instances when it must be replaced (see
    ``redefineClass``). ``steps`` are callables run with the update at the end of ``apply``
    (hand-written additions; what they change through Pymoult is journaled too).

    Raises :class:`~pymoult.errors.ModuleUpdateError`, with nothing changed, if the new version
    does not compile or raises while being evaluated. ``update.steps`` lists what it will do.
    Several modules changing together: :meth:`together` (or :meth:`combine`).
    """

    #: After it applied: one line per thread still running code it replaced (``thread Runner
    #: still runs the old code of jobs.main (line 12) until it returns``), logged as warnings
    #: unless ``log_warnings`` is false (``pymoult run --watch`` shows them itself). Empty
    #: until then, and for an update that did not apply.
    warnings: Sequence[str] = ()
    log_warnings = True

    def __init__(self, module: types.ModuleType | str, source: str | None = None,
                 path: str | None = None, old_source: str | None = None,
                 transformers: ClassFunctions | None = None,
                 builders: ClassFunctions | None = None, steps: Iterable[ExtraStep] = (),
                 name: str | None = None, threads: Iterable[threading.Thread] | None = None,
                 filename: str | None = None, **patience_args: Any) -> None:
        module = _resolve_module(module)
        if source is not None and path is not None:
            raise PymoultTypeError("give the new version as source= or path=, not both")
        if source is None and path is None:
            path = _own_file(module)
        if path is not None:
            try:
                source = read_source(path)
            except (OSError, SyntaxError, UnicodeDecodeError) as exc:
                raise ModuleUpdateError(f"cannot read the new version of {module.__name__!r} "
                                        f"from {path}: {exc}", module=module.__name__) from exc
        for label, mapping in (("transformers", transformers), ("builders", builders)):
            if mapping is not None and not (isinstance(mapping, dict) and all(
                    isinstance(k, str) and callable(v) for k, v in mapping.items())):
                raise PymoultTypeError(f"{label} must map class names to callables, "
                                       f"got {mapping!r}")
        extra_steps = list(steps)
        if not all(callable(step) for step in extra_steps):
            raise PymoultTypeError(f"steps must be callables, got {extra_steps!r}")
        if filename is not None and not isinstance(filename, str):
            raise PymoultTypeError(f"filename must be a str, got {filename!r}")
        filename = filename or path or getattr(module, "__file__", None) or \
            f"<{module.__name__}>"
        assert source is not None  # given, or read from path
        plan = _ModulePlan(module, source, filename, old_source, transformers, builders)
        super().__init__(name or f"update module {module.__name__}", threads, **patience_args)
        self.plans = [plan]
        self.extra_steps = extra_steps

    @classmethod
    def combine(cls, updates: Iterable[ModuleUpdate], name: str | None = None,
                threads: Iterable[threading.Thread] | None = None,
                **patience_args: Any) -> ModuleUpdate:
        """One update made of several module updates (not yet submitted), applied together."""
        given = list(updates)
        if not given or not all(isinstance(u, ModuleUpdate) for u in given):
            raise PymoultTypeError(f"combine takes ModuleUpdate objects, got {given!r}")
        modules = [p.name for u in given for p in u.plans]
        if len(set(modules)) != len(modules):
            raise PymoultValueError(f"a module appears twice: {modules}")
        combined = Update.__new__(cls)
        Update.__init__(combined, name or "update modules " + ", ".join(modules),
                        threads if threads is not None else [t for u in given for t in u.threads],
                        **patience_args)
        combined.plans = [p for u in given for p in u.plans]
        combined.extra_steps = [s for u in given for s in u.extra_steps]
        return combined

    @classmethod
    def together(cls, modules: Mapping[types.ModuleType | str, str | None]
                 | Iterable[types.ModuleType | str], name: str | None = None,
                 threads: Iterable[threading.Thread] | None = None,
                 filenames: Mapping[str, str] | None = None,
                 **patience_args: Any) -> ModuleUpdate:
        """One update of several modules that changed together (a package installed over,
        files saved at once). ``modules`` maps each module (or its name) to its new source, or
        to None for its own file as it is now; or it lists modules, each to its own file.

        Unlike :meth:`combine` of updates made one by one, the new versions are evaluated on
        trial as a fresh import of them all would run them: a new version that imports another
        module of the group gets the other's new version (a name the other's new version adds
        is there). The modules are planned, and applied, in the order their imports need (an
        imported module first), and an error names the module whose new version failed.
        ``filenames`` maps a module's name to where its new version comes from, for messages
        (see ``filename``)."""
        items = list(modules.items()) if isinstance(modules, dict) else \
            [(module, None) for module in modules]
        sources: dict[str, str | None] = {}
        for module, source in items:
            if source is not None and not isinstance(source, str):
                raise PymoultTypeError(f"a new source must be a str or None, got {source!r}")
            module_name = _resolve_module(module).__name__
            if module_name in sources:
                raise PymoultValueError(f"module {module_name!r} given twice")
            sources[module_name] = source
        if not sources:
            raise PymoultTypeError("together takes at least one module")
        names = filenames or {}
        group = _TrialGroup(sources, lambda module_name, source: cls(
            module_name, source=source, filename=names.get(module_name)))
        for module_name in sources:
            group.plan(module_name)
        return cls.combine(list(group.updates.values()),
                           name or "update modules " + ", ".join(sources), threads,
                           **patience_args)

    @property
    def steps(self) -> list[Step]:
        """What the update will do, as :class:`Step` objects (``str`` each for a listing); the
        parts of a step (the methods of an updated class) follow it."""
        return [each for plan in self.plans for step in plan.steps
                for each in (step, *step.parts)]

    @property
    def codes(self) -> set[types.CodeType]:
        """The code objects that must not be running when it applies (see
        :meth:`_ModulePlan._codes`), of all its modules."""
        codes: set[types.CodeType] = set()
        for plan in self.plans:
            codes |= plan.codes
        return codes

    def describe(self) -> str:
        """The update's name and its steps, one per line."""
        steps = self.steps
        lines = [f"{self.name}: {len(steps)} steps"] + [f"  {step}" for step in steps]
        if not steps:
            lines.append("  (nothing changes)")
        return "\n".join(lines)

    # -- when: update points, or quiescence of every changed function ---------------------------

    # Torn calls: a caller of two functions that change together (``decode(encode(x))``) must
    # not see the old one and then the new one. With ``threads``, a thread parked at one of its
    # update points is safe by its author's choice, and the frames of every other thread (one
    # suspended anywhere, a thread not given) must be safe for the guard; without, no frame may
    # run a changed function, nor be unsafe for the guard.

    @property
    def torn_guard(self) -> TornCallGuard:
        """What keeps a caller of two functions that change together from seeing both
        versions (made once, from :attr:`codes`)."""
        guard: TornCallGuard | None = self.__dict__.get("_torn_guard")
        if guard is None:
            guard = self.__dict__["_torn_guard"] = TornCallGuard(self.codes)
        return guard

    def _unsafe_code(self) -> types.CodeType | None:
        if not self.threads:
            running = running_code(self.codes, thread_stacks(from_points=True))
            if running is not None:
                return running
        return running_code((), stacks_not_at_points(), self.torn_guard)

    def check_alterability(self) -> bool:
        if self.threads and not super().check_alterability():
            return False
        if self._unsafe_code() is None:
            return True
        self.clean_failed_alterability()  # let the threads move on before the next try
        return False

    def wait_alterability(self) -> bool:
        with patience(self.max_tries, self.sleep_time):
            if self.threads:
                return wait_quiescence((), self.suspended_threads(), self.timeout,
                                        anywhere=self.suspension == "anywhere",
                                        unsafe=self._unsafe_code)
            return wait_quiescence(self.codes, [], self.timeout, unsafe=self._unsafe_code)

    def why_not_alterable(self) -> str:
        reasons = [super().why_not_alterable()]
        unsafe = self._unsafe_code()
        if unsafe is not None:
            reasons.append(self.torn_guard.reason(unsafe))
        return "; ".join(reason for reason in reasons if reason)

    # -- applied ---------------------------------------------------------------------------------

    def watched(self) -> list[types.ModuleType | type]:
        """The namespaces whose changes made outside Pymoult's mechanisms are journaled (see
        :meth:`Update.watched`): by default, the modules and the classes they define. An update
        that runs none of the program's code when it applies (:meth:`_ModulePlan.runs_no_code`:
        plain ``def`` statements replacing plain functions in place, the usual edit of a
        function's body), with no setup, ``apply`` or ``steps`` of its own, changes nothing but
        through Pymoult's journaled mechanisms: then only its modules are watched, not each of
        their classes (copying and comparing hundreds of class namespaces, twice, would cost
        more than the update itself)."""
        if self.extra_steps or has_setup(self) or \
                getattr(self.apply, "__func__", None) is not ModuleUpdate.apply or \
                not all(plan.runs_no_code() for plan in self.plans):
            return super().watched()
        return [plan.module for plan in self.plans]

    def apply(self) -> None:
        self.warnings = []
        journal = current_journal() or self.journal
        for plan in self.plans:
            plan.check_current()
        running = self._unsafe_code()
        if running is not None:  # the manager waits for alterability again
            raise NotAlterableNow(f"{self.torn_guard.reason(running)}: it started "
                                  "between the check and the apply; nothing was changed")
        labels: dict[types.CodeType, str] = {}
        for plan in self.plans:  # the live objects still hold the old code
            labels.update(plan.code_labels())
        for plan in self.plans:
            plan.apply(journal)
        for step in self.extra_steps:
            step(self)
        self.warnings = self._stale_frames(labels)

    def _stale_frames(self, labels: Mapping[types.CodeType, str]) -> list[str]:
        """The lines naming the threads still running old code, right after the update (the
        threads are still parked). Never fails the update: a failure here is logged."""
        try:
            live: set[types.CodeType] = set()
            for plan in self.plans:
                live |= plan.live_codes()
            replaced = {code: label for code, label in labels.items() if code not in live}
            modules = [m for m in (plan.module_code() for plan in self.plans) if m is not None]
            if not replaced and not modules:
                return []
            return stale_frames(replaced, modules)
        except Exception:
            logger.exception("%s: could not tell which threads still run old code", self.name)
            return []

    def preresume_setup(self) -> None:
        super().preresume_setup()
        if self.log_warnings:
            for warning in self.warnings:
                logger.warning("%s: %s", self.name, warning)



def module_update_script(sources: Mapping[str, str | None], manager: str = "runtime",
                         filenames: Mapping[str, str] | None = None) -> str:
    """The text of an update script that, run in the application (``pymoult push``), makes one
    :class:`ModuleUpdate` of ``sources`` (module name -> new source, or None for the module's own
    file as it is now, read in the application) and queues it on the manager called
    ``manager``. ``filenames``: module name -> the file its new source was read from (named in
    messages and tracebacks)."""
    if not (isinstance(sources, dict) and sources and all(
            isinstance(k, str) and isinstance(v, (str, type(None))) for k, v in sources.items())):
        raise PymoultTypeError(f"sources must map module names to source texts, got {sources!r}")
    names_of = dict(filenames or {})
    if not all(isinstance(k, str) and isinstance(v, str) for k, v in names_of.items()):
        raise PymoultTypeError(f"filenames must map module names to file names, got "
                               f"{names_of!r}")
    names = ", ".join(sources)
    missing = f"the application has no manager called {manager!r} (run it under `pymoult run`)"
    return (
        "#parsed\n"
        f"# made by `pymoult push --module`: the new version of {names}, as one update\n"
        "from pymoult.errors import ModuleUpdateError, PymoultError\n"
        "from pymoult.highlevel.managers import fetch_manager\n"
        "from pymoult.highlevel.updates import ModuleUpdate\n\n"
        f"SOURCES = {sources!r}\n"
        f"FILENAMES = {names_of!r}\n"
        f"manager = fetch_manager({manager!r})\n"
        "if manager is None:\n"
        f"    raise LookupError({missing!r})\n"
        "try:\n"
        "    update = ModuleUpdate.together(SOURCES, filenames=FILENAMES)\n"
        "except PymoultError as exc:  # one sentence, and the new version's own traceback\n"
        "    user = getattr(exc, 'traceback', None)\n"
        "    raise ModuleUpdateError(str(exc) + (chr(10) + user.rstrip() if user else ''))"
        " from None\n"
        "manager.add_update(update)\n")
