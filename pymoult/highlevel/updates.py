"""The ready-made updates, as the original Pymoult meant them: safe redefinitions of a function
or a method, forced quiescence, conversions of objects (eager and lazy), thread reboots and heap
traversals; and ``ModuleUpdate``, an update computed from a module's new source (imported on
first use from ``pymoult.highlevel.module_update``).

An update and its lifecycle (:class:`Update`, the states, ``isApplied``) are
``pymoult.highlevel.lifecycle``'s; they are importable from here too, as in the original.
"""

from __future__ import annotations

import sys
import threading
import types
from collections.abc import Callable, Iterable
from concurrent.futures import Future
from typing import TYPE_CHECKING, Any

from ..errors import LifecycleError, NotAlterableNow, PymoultTypeError, UpdateDefinitionError
from ..lowlevel import alterability
from ..lowlevel.data_access import startEagerUpdate, startLazyUpdate, traverseHeap
from ..lowlevel.class_update import redefineClass
from ..lowlevel.relinking import Member, redefineFunction, redefineMethod, update_function
from ..lowlevel.stack import resetThread, switchMain
from .lifecycle import (TRANSITIONS, Update, UpdateState, UpdateStatus, applied_update_names,
                        isApplied)

if TYPE_CHECKING:
    from typing_extensions import Unpack

    from ..lowlevel.alterability import ForceQuiescenceWatcher
    from ..lowlevel.data_access import HeapWalker
    from ..lowlevel.lazy_conversion import LazyConversion
    from ..threads import DSU_Thread
    from .lifecycle import Patience
    from .module_update import ModuleUpdate

__all__ = [
    "Update",
    "UpdateState",
    "UpdateStatus",
    "SafeRedefineUpdate",
    "SafeRedefineMethodUpdate",
    "QuiescentRedefineUpdate",
    "EagerConversionUpdate",
    "LazyConversionUpdate",
    "ThreadRebootUpdate",
    "HeapTraversalUpdate",
    "ModuleUpdate",  # noqa: F822 (imported on first use: see __getattr__ below)
    "isApplied",
    "applied_update_names",
    "TRANSITIONS",
    "UpdateDefinitionError",
]


class _QuiescentUpdate(Update):
    """An update alterable when its threads are suspended and ``self.live()`` (the function it
    replaces) runs in no thread; the check is repeated inside the apply window."""

    def live(self) -> Callable[..., Any]:
        raise NotImplementedError

    def check_alterability(self) -> bool:
        threads = self.suspended_threads()
        return alterability.checkQuiescenceOfFunction(
            self.live(), threads, anywhere=self.suspension == "anywhere")

    def wait_alterability(self) -> bool:
        with alterability.patience(self.max_tries, self.sleep_time):
            return alterability.waitQuiescenceOfFunction(
                self.live(), self.suspended_threads(), timeout=self.timeout,
                anywhere=self.suspension == "anywhere")

    def check_quiescent_now(self) -> None:
        """Inside the apply window: ``NotAlterableNow`` if the function is running (a thread
        not suspended entered it after the check)."""
        running = alterability.runningFunctions([self.live()])
        if running:
            thread, function = running[0]
            raise NotAlterableNow(f"{function} started running in thread {thread!r} after the "
                                  "quiescence check")

    def why_not_alterable(self) -> str:
        reasons = [super().why_not_alterable()]
        running = alterability.runningFunctions([self.live()])
        reasons.extend(f"{function} still running in thread {thread!r}"
                       for thread, function in running)
        return "; ".join(reason for reason in reasons if reason)


class SafeRedefineUpdate(_QuiescentUpdate):
    """Redefine ``module.function`` as ``new_function`` (in place: every reference follows)
    once the function is quiescent (running in no thread), checked while the update's threads
    are suspended, as in the original Pymoult. ``module`` may be any namespace (see
    ``redefineFunction``); ``function`` the live function or its name."""

    def __init__(self, module: object, function: Callable[..., Any] | str,
                 new_function: Callable[..., Any], name: str | None = None,
                 threads: Iterable[threading.Thread] | None = None,
                 **patience: Unpack[Patience]) -> None:
        super().__init__(name or f"redefine {getattr(function, '__name__', function)}",
                         threads, **patience)
        self.module, self.function, self.new_function = module, function, new_function

    def live(self) -> Callable[..., Any]:
        if isinstance(self.function, str):
            live: Callable[..., Any] = getattr(self.module, self.function)
            return live
        return self.function

    def apply(self) -> None:
        self.check_quiescent_now()
        redefineFunction(self.module, self.function, self.new_function)


class SafeRedefineMethodUpdate(_QuiescentUpdate):
    """Redefine method ``method`` (a name or the function) of ``cls`` in place once it is
    quiescent (as :class:`SafeRedefineUpdate`): bound methods, static and class methods and
    properties follow."""

    def __init__(self, cls: type, method: str | Callable[..., Any], new_method: Member,
                 name: str | None = None, threads: Iterable[threading.Thread] | None = None,
                 **patience: Unpack[Patience]) -> None:
        method_name = method if isinstance(method, str) else getattr(method, "__name__", None)
        if not isinstance(method_name, str):
            raise PymoultTypeError(f"method must be a name or a function, got {method!r}")
        self.method_name: str = method_name
        super().__init__(name or f"redefine {getattr(cls, '__qualname__', cls)}.{self.method_name}",
                         threads, **patience)
        self.cls, self.new_method = cls, new_method

    def live(self) -> Callable[..., Any]:
        live: Callable[..., Any] = vars(self.cls).get(self.method_name) or \
            getattr(self.cls, self.method_name)
        return live

    def apply(self) -> None:
        self.check_quiescent_now()
        redefineMethod(self.cls, self.method_name, self.new_method)


class QuiescentRedefineUpdate(Update):
    """Redefine ``module.function`` once it is quiescent, forcing it: new calls are held at its
    entry (forced quiescence) until the running ones have left, then released into the new
    version. Needs no update points."""

    def __init__(self, module: types.ModuleType, function: Callable[..., Any] | str,
                 new_function: Callable[..., Any], name: str | None = None,
                 **patience: Unpack[Patience]) -> None:
        super().__init__(name or f"redefine {getattr(function, '__name__', function)} "
                                 "(forced quiescence)", None, **patience)
        self.module, self.function, self.new_function = module, function, new_function
        #: (quiescent, can_continue, watcher), from ``setupForceQuiescence`` in the setup
        self._events: tuple[threading.Event, threading.Event, ForceQuiescenceWatcher] | None = \
            None

    def _set_up(self) -> tuple[threading.Event, threading.Event, ForceQuiescenceWatcher]:
        if self._events is None:
            raise LifecycleError(f"{self.name!r}: preupdate_setup has not run")
        return self._events

    def preupdate_setup(self) -> None:
        self._events = alterability.setupForceQuiescence(self.module, self.function)

    def check_alterability(self) -> bool:
        return alterability.checkForceQuiescence(self._set_up()[0])

    def wait_alterability(self) -> bool:
        with alterability.patience(self.max_tries, self.sleep_time):
            return alterability.waitForceQuiescence(self._set_up()[0], timeout=self.timeout)

    def clean_failed_alterability(self) -> None:
        quiescent, can_continue, watcher = self._set_up()
        alterability.cleanFailedForceQuiescence(can_continue, watcher, self.module, watcher.name)

    def apply(self) -> None:
        update_function(self._set_up()[2].original, self.new_function,  # the gate stays bound
                        keep_decorators=True)

    def resume(self) -> None:
        if self._events is not None:
            alterability.cleanForceQuiescence(self._events[1])  # held callers run the new code


def _module_of(cls: type, module: types.ModuleType | None) -> types.ModuleType:
    return module if module is not None else sys.modules[cls.__module__]


class EagerConversionUpdate(Update):
    """Update class ``cls`` to ``new_cls`` (in place when the layout allows, else replaced, its
    instances rebuilt and references redirected) and run ``transformer`` on every instance now."""

    def __init__(self, cls: type, new_cls: type, transformer: Callable[[Any], object],
                 module: types.ModuleType | None = None, name: str | None = None,
                 threads: Iterable[threading.Thread] | None = None,
                 **patience: Unpack[Patience]) -> None:
        super().__init__(name or f"convert {getattr(cls, '__qualname__', cls)}", threads,
                         **patience)
        self.cls, self.new_cls, self.transformer, self.module = cls, new_cls, transformer, module

    def apply(self) -> None:
        redefineClass(_module_of(self.cls, self.module), self.cls, self.new_cls, self.transformer)


class LazyConversionUpdate(EagerConversionUpdate):
    """Like :class:`EagerConversionUpdate`, but each instance is transformed on its first access
    (see ``pymoult.lowlevel.lazy_conversion``). When the class cannot be updated in place its
    instances are rebuilt at once, so they are transformed eagerly."""

    #: the lazy conversion started by ``apply`` (None when the instances were rebuilt eagerly)
    conversion: LazyConversion | None

    def apply(self) -> None:
        module = _module_of(self.cls, self.module)
        live = redefineClass(module, self.cls, self.new_cls)
        if live is self.cls:
            self.conversion = startLazyUpdate(live, self.transformer)
        else:
            self.conversion = None
            startEagerUpdate(live, self.transformer)


class ThreadRebootUpdate(Update):
    """Reboot ``thread`` into ``new_main(*new_args)`` at its next update point (a reboot is
    served at a static update point, so this update waits for one: ``suspension = "points"``)."""

    suspension = "points"

    def __init__(self, thread: DSU_Thread, new_main: Callable[..., object],
                 new_args: Iterable[object] = (), name: str | None = None,
                 **patience: Unpack[Patience]) -> None:
        super().__init__(name or f"reboot {getattr(thread, 'name', thread)}", [thread],
                         **patience)
        self.thread, self.new_main, self.new_args = thread, new_main, tuple(new_args)
        #: resolved with the thread's reboot count once it restarted (set by ``apply``)
        self.reboot: Future[int] | None = None

    def apply(self) -> None:
        switchMain(self.thread, self.new_main, self.new_args)
        self.reboot = resetThread(self.thread)  # served when the thread is resumed

    def check_over(self) -> bool:
        return self.reboot is None or self.reboot.done()

    def wait_over(self) -> bool:
        if self.reboot is not None:
            self.reboot.result(self.timeout)
        return True


class HeapTraversalUpdate(Update):
    """Walk the data reachable from ``modules`` with ``walker`` (a ``HeapWalker``)."""

    def __init__(self, walker: HeapWalker, modules: Iterable[str] = ("__main__",),
                 name: str | None = None, threads: Iterable[threading.Thread] | None = None,
                 **patience: Unpack[Patience]) -> None:
        super().__init__(name or f"heap traversal by {type(walker).__name__}", threads, **patience)
        self.walker, self.modules = walker, list(modules)

    def apply(self) -> None:
        traverseHeap(self.walker, self.modules)


def __getattr__(name: str) -> type[ModuleUpdate]:

    # ModuleUpdate lives in its own module, which builds on Update: imported on first use
    if name == "ModuleUpdate":
        from .module_update import ModuleUpdate
        return ModuleUpdate
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
