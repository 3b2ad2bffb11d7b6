"""Relinking: make every reference to a function run its new version.

Pymoult rebound the module attribute, so every reference held elsewhere (a callback, a
``from m import f``, a bound method, a decorator's wrapper) kept running the old code. Here the
live function object is updated *in place*, as jurigged does: its ``__code__``, defaults,
keyword defaults, annotations, docstring and ``__dict__`` take the new version's, so every
existing reference runs the new code from its next call, and the function keeps its identity.

What in place means, precisely:

- the new code runs against the *live module's* globals (``__globals__`` is read-only); global
  names the new code uses that the module lacks are copied from the new version's globals
  (its new imports and helpers), and recorded; a name the module binds to an object of another
  type (an update script's ``main = sys.modules["__main__"]`` where the module has a ``main()``
  function) is read from the new version under an alias, as the original's rebinding did;
- the new code runs with the *live closure cells* (``__closure__`` is read-only), so the free
  variables must match by name and order; otherwise :class:`~pymoult.errors.RedefinitionError`
  names both sets, unless the caller asked for ``fallback="rebind"`` (then the name is rebound to
  a new function built on the live globals, and references taken earlier keep the old code);
- zero-argument ``super()`` uses the ``__class__`` cell: the live cell keeps pointing at the live
  class, so a method taken from a new version of the class works unchanged;
- decorated functions (``functools.wraps`` chains, ``lru_cache``) are updated layer by layer
  along ``__wrapped__``; caches found on the way are cleared (and cleared again by a rollback);
- a new version with fewer decorators than the live function (typically a plain function given
  for a decorated one) updates the function the live decorators wrap: the decorators stay
  (routes, caches) and an INFO log names them. A new version with decorators the live one lacks
  is refused, both lists named (``fallback="rebind"`` rebinds instead);
- a forced-quiescence gate (:func:`pymoult.lowlevel.alterability.setupForceQuiescence`) bound in
  the function's place is seen through: the function it guards is updated and the gate stays
  bound, so the callers it holds run the new code once released;
- frames already running, and suspended generators, keep the code they started with.

As in Pymoult, :func:`redefineFunction` takes any namespace object as the container: a module, a
class (then it works as :func:`redefineMethod`, so static and class methods and properties keep
their kind) or an instance (the function in its ``__dict__``).

Every change is recorded in the current journal (:mod:`pymoult.lowlevel.journal`), so an update
can be rolled back exactly.
"""

from __future__ import annotations

import dis
import logging
import types
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any, Literal, Optional, Protocol, Union

from ..errors import PymoultTypeError, RedefinitionError, TargetNotFoundError
from .journal import (MISSING, Journal, Operation, SetItem, current_journal, describe,
                      set_attribute)

if TYPE_CHECKING:
    from .alterability import ForceQuiescenceWatcher

#: What a namespace binds as a function: a function (or any callable: a decorator's wrapper, a
#: bound method, a forced-quiescence gate), a static or class method, a property.
Member = Union[Callable[..., Any], staticmethod, classmethod, property]
#: ``fallback=``: None (refuse what cannot be updated in place) or "rebind".
Fallback = Optional[Literal["rebind"]]

__all__ = ["redefineFunction", "redefineMethod", "update_function", "SwapFunction",
           "wrapped_layers"]

logger = logging.getLogger("pymoult")

_FALLBACKS = (None, "rebind")


class _Cache(Protocol):
    """A cache wrapping a function (``functools.lru_cache``)."""

    def cache_clear(self) -> None: ...


class SwapFunction(Operation):
    """The state of a function (code, defaults, annotations, doc, dict) replaced in place.

    ``caches`` are the caches (``lru_cache``) wrapping the function: undo clears them after
    restoring the old state, since what they hold by then was computed by the code undone.
    """

    FIELDS = ("__code__", "__defaults__", "__kwdefaults__", "__annotations__", "__doc__")

    def __init__(self, function: types.FunctionType, before: dict[str, Any],
                 after: dict[str, Any], caches: Iterable[_Cache] = ()) -> None:
        self.function, self.before, self.after = function, before, after
        self.caches = tuple(caches)
        self.text = f"swap code of {describe(function)}"

    @classmethod
    def capture(cls, function: types.FunctionType) -> dict[str, Any]:
        state = {field: getattr(function, field) for field in cls.FIELDS}
        state["__annotations__"] = dict(state["__annotations__"])
        state["__dict__"] = dict(function.__dict__)
        return state

    @staticmethod
    def restore(function: types.FunctionType, state: Mapping[str, Any]) -> None:
        for field in SwapFunction.FIELDS:
            setattr(function, field, state[field])
        function.__dict__.clear()
        function.__dict__.update(state["__dict__"])

    def undo(self) -> None:
        self.restore(self.function, self.before)
        for cache in self.caches:
            cache.cache_clear()


class ClearCache(Operation):
    """A cache of a decorated function was cleared (nothing to undo: it refills itself; the
    :class:`SwapFunction` undone with it clears it again)."""

    def __init__(self, wrapper: object) -> None:
        self.text = f"clear cache of {describe(wrapper)}"

    def undo(self) -> None:
        pass


_MAX_LAYERS = 100  # as inspect.unwrap: a proxy may invent a new __wrapped__ at every access


def wrapped_layers(function: object) -> list[Any]:
    """``function`` and everything it wraps (``__wrapped__`` chain), outermost first."""
    layers: list[Any] = []  # the objects themselves: a proxy's invented ones would reuse ids
    seen: list[Any] = []  # the objects themselves: a proxy's invented ones would reuse ids
    while function is not None and not any(function is s for s in seen) \
            and len(layers) < _MAX_LAYERS:
        seen.append(function)
        layers.append(function)
        try:
            function = getattr(function, "__wrapped__", None)
        except Exception:  # a proxy that fails on unknown attributes
            function = None
    return layers


_layers = wrapped_layers


def _layer_name(layer: object) -> str:
    """How a layer is named in messages: a Python function by its code's qualified name (a
    ``functools.wraps`` wrapper copies the wrapped function's ``__qualname__``, its code keeps its
    own), anything else by its type."""
    if isinstance(layer, types.FunctionType):
        code = layer.__code__
        return getattr(code, "co_qualname", code.co_name)  # co_qualname: 3.11+
    return type(layer).__name__


def _gate_watcher(obj: object) -> ForceQuiescenceWatcher | None:
    """The forced-quiescence watcher whose gate ``obj`` is, or None.

    A gate (:func:`pymoult.lowlevel.alterability.setupForceQuiescence`) carries its watcher as
    ``__pymoult_gate__`` and wraps the watcher's ``original``; a decorator put around a gate copies
    the attribute but wraps the gate, not the original, so it is not taken for one.
    """
    if not isinstance(obj, types.FunctionType):
        return None
    watcher = obj.__dict__.get("__pymoult_gate__")
    original = getattr(watcher, "original", MISSING)
    if original is MISSING or obj.__dict__.get("__wrapped__") is not original:
        return None
    return watcher


def _behind_gates(obj: Any) -> Any:
    """``obj``, or the function its forced-quiescence gate (gates) holds callers of."""
    for _ in range(_MAX_LAYERS):
        watcher = _gate_watcher(obj)
        if watcher is None:
            break
        obj = watcher.original
    return obj


def _referent(obj: object) -> object:
    """The function behind a method, a static or class method, or a gate (else ``obj``)."""
    if isinstance(obj, types.MethodType):
        obj = obj.__func__
    if isinstance(obj, (staticmethod, classmethod)):
        obj = obj.__func__
    return _behind_gates(obj)


def _same_function(a: object, b: object) -> bool:
    return _referent(a) is _referent(b)


def _as_function(obj: object, what: str) -> Callable[..., Any]:
    if isinstance(obj, types.MethodType):
        obj = obj.__func__
    if isinstance(obj, (staticmethod, classmethod)):
        obj = obj.__func__
    if not callable(obj) or not any(isinstance(layer, types.FunctionType)
                                    for layer in _layers(obj)):
        raise PymoultTypeError(f"{what} must be a Python function, got {obj!r}")
    return obj


_GLOBAL_OPS = {"LOAD_GLOBAL", "STORE_GLOBAL", "DELETE_GLOBAL"}


def _global_names(code: types.CodeType) -> set[str]:
    """Names the code (and the code nested in it) reads or writes as globals.

    Taken from the instructions, not ``co_names``, which also holds attribute names.
    """
    names = {ins.argval for ins in dis.get_instructions(code) if ins.opname in _GLOBAL_OPS}
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            names |= _global_names(const)
    return names


def _written_global_names(code: types.CodeType) -> set[str]:
    names = {ins.argval for ins in dis.get_instructions(code)
             if ins.opname in ("STORE_GLOBAL", "DELETE_GLOBAL")}
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            names |= _written_global_names(const)
    return names


def copy_missing_globals(live: types.FunctionType, new: types.FunctionType,
                         journal: Journal | None) -> types.CodeType:
    """Give the live module the globals the new code needs, and return the code the live
    function is to run (``new.__code__``, or a copy reading some globals under aliases).

    Names the module lacks are copied from the new version's globals (a global of the new
    version that shadows a builtin counts: the new code means it). A name both bind is the
    module's (its live state: a counter, a setting, a function the update may redefine too),
    unless the two objects are of different types: then the name means something else in the
    new version, and the new code gets the new version's object, as when the original Pymoult
    rebound the function (an update script's ``main = sys.modules["__main__"]`` must not become
    the module's own ``main()`` function). The new code reads those under an alias (``"main
    (from pymoult_update_3)"``) bound in the module to the new version's object as it is now.
    Names the new code assigns as globals, and dunder names, stay the module's.
    """
    live_globals, new_globals = live.__globals__, new.__globals__
    code = new.__code__
    if live_globals is new_globals:
        return code
    read = _global_names(code)
    for name in sorted(read):
        if name in new_globals and name not in live_globals:
            _bind_global(live_globals, name, new_globals[name], journal)
    conflicts = {name for name in read - _written_global_names(code)
                 if name in new_globals and name in live_globals
                 and type(live_globals[name]) is not type(new_globals[name])
                 and not (name.startswith("__") and name.endswith("__"))}
    if not conflicts:
        return code
    source = new_globals.get("__name__", "the new version")
    aliases = {name: f"{name} (from {source})" for name in conflicts}
    code, kept = _read_under_aliases(code, aliases)
    for name in sorted(conflicts - kept):
        _bind_global(live_globals, aliases[name], new_globals[name], journal)
    logger.info("%s: the new code reads %s from %s, not the module's objects of the same name",
                describe(live), ", ".join(sorted(conflicts - kept)), source)
    if kept:
        logger.warning("%s: the new code reads %s as globals and as attribute names in one "
                       "function: they stay the module's", describe(live), ", ".join(sorted(kept)))
    return code


def _bind_global(module_globals: dict[str, Any], name: str, value: object,
                 journal: Journal | None) -> None:
    old = module_globals.get(name, MISSING)
    module_globals[name] = value
    if journal is not None:
        journal.record(SetItem(module_globals, name, old, value,
                               owner=_ModuleName(module_globals)))


def _read_under_aliases(code: types.CodeType,
                        aliases: Mapping[str, str]) -> tuple[types.CodeType, set[str]]:
    """``code`` (and the code nested in it) with the global reads of ``aliases``' names made
    under their aliases; returns (code, names it could not alias: also used as attribute or
    other names in a code object, whose ``co_names`` entry they share)."""
    uses: dict[str, set[str]] = {}
    for ins in dis.get_instructions(code):
        if ins.opcode in dis.hasname:
            uses.setdefault(ins.argval, set()).add(ins.opname)
    kept = {name for name in aliases if name in uses and uses[name] != {"LOAD_GLOBAL"}}
    names = tuple(aliases[name] if name in aliases and name not in kept else name
                  for name in code.co_names)
    consts: list[object] = []
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            const, inner_kept = _read_under_aliases(const, aliases)
            kept |= inner_kept
        consts.append(const)
    return code.replace(co_names=names, co_consts=tuple(consts)), kept


class _ModuleName:
    """Names a module's globals in operation texts."""

    def __init__(self, module_globals: Mapping[str, Any]) -> None:
        self.__name__ = f"globals of {module_globals.get('__name__', '?')}"


def _check_free_variables(live: types.FunctionType, new: types.FunctionType) -> None:
    before, after = live.__code__.co_freevars, new.__code__.co_freevars
    if before != after:
        raise RedefinitionError(
            f"cannot redefine {describe(live)!r} in place: free variables changed "
            f"(before: {before}; after: {after})", function=live, new_function=new)


def update_function(function: Member, new_function: Member,
                    journal: Journal | None = None,
                    keep_decorators: bool = False) -> Callable[..., Any]:
    """Make ``function`` run ``new_function`` in place; returns ``function`` (same object; for a
    forced-quiescence gate, the function behind it).

    Both may be decorated: their ``__wrapped__`` chains must have the same shape, and each
    Python-function layer is updated from its counterpart. With ``keep_decorators``, the new
    version may have fewer layers than the live function (typically none: a plain function for a
    decorated one): the live outer layers are kept (routes, caches...) and the layers they wrap
    are updated from the new version's (logged at INFO). A forced-quiescence gate is seen through:
    the function it guards is updated and the gate stays. Raises ``RedefinitionError`` (nothing
    changed) when a layer cannot be updated in place.
    """
    live: Callable[..., Any] = _behind_gates(_as_function(function, "the function to redefine"))
    new_function = _as_function(new_function, "the new version")
    journal = current_journal(journal)
    old_layers, new_layers = _layers(live), _layers(new_function)
    kept = old_layers[:max(0, len(old_layers) - len(new_layers))] if keep_decorators else []
    updated = old_layers[len(kept):]
    if [type(layer) for layer in updated] != [type(layer) for layer in new_layers]:
        raise RedefinitionError(
            f"cannot redefine {describe(live)!r} in place: its decorators changed "
            f"(before: {[_layer_name(layer) for layer in old_layers]}; "
            f"after: {[_layer_name(layer) for layer in new_layers]})",
            function=live, new_function=new_function)
    pairs = [(old, new) for old, new in zip(updated, new_layers)
             if isinstance(old, types.FunctionType)]
    _follow_closures(pairs)
    for old, new in pairs:  # check everything before changing anything
        _check_free_variables(old, new)
    caches = [layer for layer in old_layers if callable(getattr(layer, "cache_clear", None))]
    for old, new in pairs:
        code = copy_missing_globals(old, new, journal)
        before = SwapFunction.capture(old)
        after = SwapFunction.capture(new)
        after["__code__"] = code
        after["__dict__"].pop("__wrapped__", None)
        if "__wrapped__" in before["__dict__"]:
            after["__dict__"]["__wrapped__"] = before["__dict__"]["__wrapped__"]
        SwapFunction.restore(old, after)
        if journal is not None:
            journal.record(SwapFunction(old, before, after, caches))
    for cache in caches:
        cache.cache_clear()
        if journal is not None:
            journal.record(ClearCache(cache))
    if kept:
        logger.info("%s: the new version has fewer decorators; the live ones %s were kept and "
                    "the function they wrap was updated", describe(live),
                    [_layer_name(layer) for layer in kept])
    return live


def _follow_closures(pairs: list[tuple[types.FunctionType, types.FunctionType]]) -> None:
    """Add the functions a wrapper holds in its closure cells (a decorator without
    ``functools.wraps``), paired by free-variable name when both hold functions of the same
    name: updating only the wrapper would leave it calling the old inner function."""
    seen = {id(old) for old, _ in pairs}
    index = 0
    while index < len(pairs):
        old, new = pairs[index]
        index += 1
        if not (old.__closure__ and new.__closure__):
            continue
        names = dict(zip(new.__code__.co_freevars, new.__closure__))
        for name, cell in zip(old.__code__.co_freevars, old.__closure__):
            if name not in names:
                continue
            try:
                inner_old, inner_new = cell.cell_contents, names[name].cell_contents
            except ValueError:  # an empty cell
                continue
            if (isinstance(inner_old, types.FunctionType)
                    and isinstance(inner_new, types.FunctionType)
                    and inner_old is not inner_new and id(inner_old) not in seen
                    and inner_old.__name__ == inner_new.__name__):
                seen.add(id(inner_old))
                pairs.append((inner_old, inner_new))


def rebuild(new_function: types.FunctionType, live_globals: dict[str, Any],
            live_class: type | None = None) -> types.FunctionType:
    """A copy of ``new_function`` that runs against ``live_globals`` (and whose ``__class__``
    cell, if any, holds ``live_class``)."""
    code = new_function.__code__
    closure = new_function.__closure__
    if closure is not None and live_class is not None and "__class__" in code.co_freevars:
        closure = tuple(types.CellType(live_class) if name == "__class__" else cell
                        for name, cell in zip(code.co_freevars, closure))
    rebuilt = types.FunctionType(code, live_globals, new_function.__name__,
                                 new_function.__defaults__, closure)
    rebuilt.__kwdefaults__ = new_function.__kwdefaults__
    rebuilt.__annotations__ = dict(new_function.__annotations__)
    rebuilt.__doc__ = new_function.__doc__
    rebuilt.__qualname__ = new_function.__qualname__
    rebuilt.__dict__.update(new_function.__dict__)
    return rebuilt


def _rebuild_live(new_function: types.FunctionType, live_globals: dict[str, Any],
                  live_class: type | None, journal: Journal | None) -> types.FunctionType:
    """:func:`rebuild`, given the globals the new code needs that the live module lacks."""
    rebuilt = rebuild(new_function, live_globals, live_class)  # runs against the live globals
    rebuilt.__code__ = copy_missing_globals(rebuilt, new_function, journal)
    return rebuilt


def _check_fallback(fallback: object) -> None:
    if fallback not in _FALLBACKS:
        raise PymoultTypeError(f"fallback must be one of {_FALLBACKS}, got {fallback!r}")


def redefineFunction(module: object, function: Member | str, new_function: Member,
                     fallback: Fallback = None, journal: Journal | None = None) -> Member:
    """Make ``module.<function>`` and every reference to it run ``new_function``.

    ``module`` is any namespace object, as in Pymoult: a module, a class or an instance (any
    object with a ``__dict__``). ``function`` is the live function or its name there. The live
    function is updated in place and keeps its identity (see the module notes):

    - in a module or an instance, the attribute in its ``__dict__`` is updated;
    - in a class, the member is redefined as :func:`redefineMethod` does, so a ``staticmethod``,
      ``classmethod`` or ``property`` stays one (a plain new function is taken as the new version
      of the function behind a static or class method);
    - a forced-quiescence gate bound there (``setupForceQuiescence``) is seen through, whether
      ``function`` is the gate, the function it guards or the name: the guarded function is
      updated in place and the gate stays bound, so the callers it holds run the new code once
      released;
    - a new version with fewer decorators than the live function (a plain function for a decorated
      one) updates the function the live decorators wrap, and the decorators are kept (logged).

    When the function cannot be updated in place (free variables changed, or the new version has
    decorators the live one lacks), ``RedefinitionError`` is raised with nothing changed, unless
    ``fallback="rebind"``: then the attribute is bound to a copy of ``new_function`` that runs
    against the live globals, and references taken earlier keep the old code (logged).
    ``PymoultTypeError`` for a container without attributes; ``TargetNotFoundError`` when the name
    is not there, or no longer binds ``function``. Returns what the container binds now (the gate,
    while one is bound).
    """
    _check_fallback(fallback)
    container = module
    if isinstance(container, type):
        return _redefine_in_class(container, function, new_function, fallback, journal)
    namespace = getattr(container, "__dict__", None)
    if not isinstance(namespace, dict):
        raise PymoultTypeError(f"expected a module, a class or an object with a __dict__, "
                               f"got {container!r}")
    module_name = container.__name__ if isinstance(container, types.ModuleType) else None
    name = _name_in(namespace, function)
    label = module_name or f"<{type(container).__qualname__} object>"
    target = f"{label}.{name}"
    live = namespace.get(name, MISSING)
    if live is MISSING:
        if module_name is not None:
            message = f"module {module_name!r} has no function {name!r} (any more)"
        else:
            owner = next((base for base in type(container).__mro__ if name in base.__dict__), None)
            message = f"{type(container).__qualname__} object has no function {name!r} of its own"
            if owner is not None:
                message += f"; it is a method of class {owner.__qualname__}: redefine it there"
        raise TargetNotFoundError(message, target=target)
    if not isinstance(function, str) and not _same_function(live, function):
        raise TargetNotFoundError(f"{target} is no longer {function!r}", target=target)
    journal = current_journal(journal)
    try:
        update_function(live, new_function, journal, keep_decorators=True)
        if _gate_watcher(live) is not None:
            logger.info("%s is behind a forced-quiescence gate: the function it guards was "
                        "updated in place; the gate stays until released", target)
        return live
    except RedefinitionError:
        if fallback != "rebind":
            raise
    new = _as_function(new_function, "the new version")
    rebuilt: Callable[..., Any]
    if isinstance(new, types.FunctionType) and len(_layers(new)) == 1:
        if module_name is not None:
            live_globals = namespace
        else:
            live_globals = [layer for layer in _layers(_referent(live))
                            if isinstance(layer, types.FunctionType)][-1].__globals__
        rebuilt = _rebuild_live(new, live_globals, None, journal)
    else:
        rebuilt = new  # decorated: its wrappers hold the new function itself
    if isinstance(live, types.MethodType):  # an instance holding a bound method keeps one
        rebuilt = types.MethodType(rebuilt, live.__self__)
    set_attribute(container, name, rebuilt, journal)
    logger.warning("%s rebound, not updated in place: references taken before keep the old "
                   "code", target)
    return rebuilt


def _name_in(namespace: Mapping[str, Any], function: object) -> str:
    """The name under which ``namespace`` binds ``function`` (a function, method, descriptor or
    gate, or already a name): its ``__name__``, or else the one key that binds it (a function
    bound under another name, a property before Python 3.13)."""
    if isinstance(function, str):
        return function
    if not (callable(function) or isinstance(function, (staticmethod, classmethod, property))):
        raise PymoultTypeError(f"expected a function or its name, got {function!r}")
    try:
        name = getattr(function, "__name__", None)
    except Exception:  # a proxy that fails on unknown attributes
        name = None
    if isinstance(name, str) and name in namespace:
        return name
    found = [key for key, value in list(namespace.items())
             if isinstance(key, str) and _same_function(value, function)]
    if len(found) == 1:
        return found[0]
    if isinstance(name, str):
        return name
    raise PymoultTypeError(f"expected a function or its name, got {function!r}")


def _redefine_in_class(cls: type, function: Member | str, new_function: Member,
                       fallback: Fallback, journal: Journal | None) -> Member:
    """``redefineFunction`` with a class as the container: :func:`redefineMethod`, after
    checking that the name still binds ``function``."""
    name = _name_in(cls.__dict__, function)
    live = cls.__dict__.get(name, MISSING)
    if live is not MISSING and not isinstance(function, str) and not _same_function(live, function):
        raise TargetNotFoundError(f"{cls.__qualname__}.{name} is no longer {function!r}",
                                  target=f"{cls.__qualname__}.{name}")
    new = new_function.__func__ if isinstance(new_function, types.MethodType) else new_function
    kinds = (staticmethod, classmethod)
    if isinstance(live, kinds) and not isinstance(new, kinds + (property,)):
        new = type(live)(new)  # the new version of the function behind it
    return redefineMethod(cls, name, new, fallback=fallback, journal=journal)


def redefineMethod(cls: type, name: str, new_method: Member, fallback: Fallback = None,
                   journal: Journal | None = None) -> Member:
    """Make method ``name`` of ``cls`` run ``new_method`` everywhere (bound methods included).

    Handles plain methods, ``staticmethod``, ``classmethod`` and ``property`` (each accessor
    updated in place; a property that gains or loses an accessor gets a new property object).
    ``new_method`` may be a function or the descriptor taken from a new version of the class
    (``NewClass.__dict__[name]``). A method that uses zero-argument ``super()`` keeps using the
    live class. A new version with fewer decorators than the live method updates the function the
    live decorators wrap (they stay, logged); one with more is refused, both lists named. The
    method must be defined in ``cls`` itself, not inherited.
    """
    _check_fallback(fallback)
    if not isinstance(cls, type):
        raise PymoultTypeError(f"expected a class, got {cls!r}")
    live = cls.__dict__.get(name, MISSING)
    if live is MISSING:
        owner = next((base for base in cls.__mro__[1:] if name in base.__dict__), None)
        where = f"; it is inherited from {owner.__qualname__}: redefine it there" if owner else ""
        raise TargetNotFoundError(f"class {cls.__qualname__} defines no {name!r}{where}",
                                  target=f"{cls.__qualname__}.{name}")
    journal = current_journal(journal)
    if isinstance(live, property):
        return _redefine_property(cls, name, live, new_method, journal, fallback)
    kinds = (staticmethod, classmethod)
    live_kind = type(live) if isinstance(live, kinds) else types.FunctionType
    new_kind = type(new_method) if isinstance(new_method, kinds) else types.FunctionType
    if live_kind is not new_kind:
        message = (f"cannot redefine {cls.__qualname__}.{name} in place: it was a "
                   f"{live_kind.__name__} and the new version is a {new_kind.__name__}")
        if fallback != "rebind":
            raise RedefinitionError(message, function=live, new_function=new_method)
        set_attribute(cls, name, new_method, journal)
        return new_method
    live_function = live.__func__ if isinstance(live, kinds) else live
    new_function = new_method.__func__ if isinstance(new_method, kinds) else new_method
    try:
        update_function(live_function, new_function, journal, keep_decorators=True)
        return live
    except RedefinitionError:
        if fallback != "rebind":
            raise
    new = _as_function(new_function, "the new version")
    rebuilt: Callable[..., Any]
    if isinstance(new, types.FunctionType) and len(_layers(new)) == 1:
        module_globals = _layers(live_function)[-1].__globals__
        rebuilt = _rebuild_live(new, module_globals, cls, journal)
    else:
        rebuilt = new  # decorated: its wrappers hold the new function itself
    descriptor = live_kind(rebuilt) if live_kind in kinds else rebuilt
    set_attribute(cls, name, descriptor, journal)
    logger.warning("%s.%s rebound, not updated in place: bound methods taken before keep the old "
                   "code", cls.__qualname__, name)
    return descriptor


def _redefine_property(cls: type, name: str, live: property, new_property: object,
                       journal: Journal | None, fallback: Fallback = None) -> property:
    if not isinstance(new_property, property):
        raise RedefinitionError(f"{cls.__qualname__}.{name} is a property; the new version "
                                f"{new_property!r} is not", function=live,
                                new_function=new_property)
    accessors = ("fget", "fset", "fdel")
    pairs = [(getattr(live, a), getattr(new_property, a)) for a in accessors]
    try:
        for old, new in pairs:
            if old is not None and new is not None:
                _check_free_variables(_layers(old)[-1], _layers(new)[-1])
    except RedefinitionError:
        if fallback != "rebind":
            raise
        replacement = property_for(cls, new_property)
        set_attribute(cls, name, replacement, journal)
        return replacement
    for old, new in pairs:
        if old is not None and new is not None:
            update_function(old, new, journal, keep_decorators=True)
    if all((old is None) == (new is None) for old, new in pairs) \
            and live.__doc__ == new_property.__doc__:
        return live
    module_globals = next(_layers(f)[-1].__globals__ for f in (live.fget, live.fset, live.fdel)
                          if f is not None)
    merged = [old if old is not None else
              (None if new is None else _rebuild_live(new, module_globals, cls, journal))
              for old, new in pairs]
    fget, fset, fdel = merged
    replacement = property(fget, fset, fdel, doc=new_property.__doc__)
    set_attribute(cls, name, replacement, journal)
    return replacement


def property_for(cls: type, new_property: property) -> property:
    """``new_property`` with accessors whose zero-argument ``super()`` names ``cls``."""
    def fix(function: Callable[..., Any] | None) -> Callable[..., Any] | None:
        if isinstance(function, types.FunctionType) \
                and "__class__" in function.__code__.co_freevars:
            return rebuild(function, function.__globals__, cls)
        return function

    return property(fix(new_property.fget), fix(new_property.fset), fix(new_property.fdel),
                    new_property.__doc__)
