"""Updates: what to change, and when it is safe, as a lifecycle that managers drive.

An :class:`Update` goes through explicit states, shown in its ``repr``::

    pending -> waiting for alterability -> applying -> applied
                      |                        \\-> rolled back (apply raised: journal undone)
                      \\-> failed (patience exhausted) / aborted (requirements "never")

Each step is a method a subclass may override (the names are the original Pymoult's):
``check_requirements`` ("yes" / "no": postpone / "never": abort), ``preupdate_setup``,
``wait_alterability`` (blocking managers) or ``check_alterability`` (polling managers),
``clean_failed_alterability``, ``apply``, ``preresume_setup``, ``wait_over`` / ``check_over``,
``cleanup``, and the ``pause_hook`` / ``resume_hook`` around the pause. By default an update
with ``threads`` waits for them to park at their static update points and resumes them after;
without threads it is alterable at once.

Everything ``apply`` changes through Pymoult's mechanisms is recorded in ``update.journal``, so
a failing ``apply`` is rolled back exactly (the managers do it).
"""

import enum
import sys
import time

from ..errors import PymoultTypeError, UpdateDefinitionError
from ..lowlevel import alterability
from ..lowlevel.data_access import startEagerUpdate, startLazyUpdate, traverseHeap
from ..lowlevel.data_update import redefineClass
from ..lowlevel.journal import Journal
from ..lowlevel.relinking import redefineFunction, redefineMethod, update_function
from ..lowlevel.stack import resetThread, switchMain

__all__ = [
    "Update",
    "UpdateState",
    "SafeRedefineUpdate",
    "SafeRedefineMethodUpdate",
    "QuiescentRedefineUpdate",
    "EagerConversionUpdate",
    "LazyConversionUpdate",
    "ThreadRebootUpdate",
    "HeapTraversalUpdate",
    "ModuleUpdate",  # noqa: F822 (imported on first use: see __getattr__ below)
    "isApplied",
    "UpdateDefinitionError",
]


class UpdateState(enum.Enum):
    """Where an update is in its lifecycle."""

    PENDING = "pending"
    WAITING = "waiting for alterability"
    APPLYING = "applying"
    APPLIED = "applied"
    ROLLED_BACK = "rolled back"
    FAILED = "failed"
    ABORTED = "aborted"
    CANCELLED = "cancelled"

    @property
    def finished(self):
        return self not in (UpdateState.PENDING, UpdateState.WAITING, UpdateState.APPLYING)


class Update:
    """One update. Subclass it and define :meth:`apply` (or use a ready-made update).

    ``threads`` are the threads that must be parked at static update points while the update is
    applied. ``max_tries`` and ``sleep_time`` are its patience for alterability (also given to
    the lowlevel waits it calls); ``timeout``, if set, bounds the whole wait in seconds.
    """

    max_tries = 10
    sleep_time = 0.1
    timeout = None
    #: When alterability is not reached within the patience: "fail" (the future gets
    #: UpdateTimeoutError) or "postpone" (try again later, with back-off, at most
    #: ``max_postponements`` times before failing).
    on_timeout = "fail"
    max_postponements = 10

    def __init__(self, name=None, threads=None, max_tries=None, sleep_time=None, timeout=None):
        self.name = name or type(self).__name__
        self.threads = list(threads or [])
        if max_tries is not None:
            self.max_tries = max_tries
        if sleep_time is not None:
            self.sleep_time = sleep_time
        if timeout is not None:
            self.timeout = timeout
        self.state = UpdateState.PENDING
        self.journal = Journal(self.name)
        self.error = None  # the exception that ended it, if any
        self.tries = 0  # alterability checks made
        self.postponements = 0
        self.requires = ()  # set by add_update(requires=...)
        self.times = {}  # step name -> time.monotonic() when it ended
        self.pause = None  # seconds the threads were held

    # -- the lifecycle: override what you need ---------------------------------------------------

    def check_requirements(self):
        """"yes" to go on, "no" to be postponed (retried later), "never" to be aborted."""
        return "yes"

    def preupdate_setup(self):
        """Runs once, before waiting for alterability."""

    def check_alterability(self):
        """One non-blocking try (polling managers): True when the update may be applied now."""
        if not self.threads:
            return True
        alterability.setupWaitStaticPoints(
            [t for t in self.threads if not alterability.checkStaticPointsReached([t])])
        return alterability.checkStaticPointsReached(self.threads)

    def wait_alterability(self):
        """Block until the update may be applied (blocking managers); False when given up."""
        if not self.threads:
            return True
        with alterability.patience(self.max_tries, self.sleep_time):
            return alterability.waitStaticPoints(self.threads, timeout=self.timeout)

    def clean_failed_alterability(self):
        """Undo what waiting for alterability set up (release the threads)."""
        if self.threads:
            alterability.cleanFailedStaticPoints(self.threads)

    def apply(self):
        """Change the program. Every subclass must define it."""
        raise UpdateDefinitionError(f"{type(self).__name__} does not define apply()")

    def preresume_setup(self):
        """Runs after apply, before the threads are resumed."""

    def resume(self):
        """Release the threads held for the update."""
        if self.threads:
            alterability.resumeSuspendedThreads(self.threads)

    def check_over(self):
        """One non-blocking try: True when the update's effects are complete."""
        return True

    def wait_over(self):
        """Block until the update's effects are complete."""
        return True

    def cleanup(self):
        """Runs last, once the update is over."""

    def pause_hook(self):
        """Called when the threads have just been paused for the update."""

    def resume_hook(self):
        """Called when the threads have just been resumed."""

    # -- bookkeeping -------------------------------------------------------------------------------

    def mark(self, step):
        self.times[step] = time.monotonic()

    def __repr__(self):
        extra = f" tries={self.tries}" if self.tries else ""
        if self.error is not None:
            extra += f" error={self.error!r}"
        return f"<{type(self).__name__} {self.name!r} state={self.state.value}{extra}>"


def check_definition(update):
    """Raise ``UpdateDefinitionError`` now if ``update`` cannot run (at ``add_update`` time)."""
    if not isinstance(update, Update):
        raise UpdateDefinitionError(f"expected an Update, got {update!r}")
    if type(update).apply is Update.apply:
        raise UpdateDefinitionError(f"{type(update).__name__} does not define apply()")
    if not isinstance(update.max_tries, int) or isinstance(update.max_tries, bool) or update.max_tries < 1:
        raise UpdateDefinitionError(f"{update!r}: max_tries must be a positive int, "
                                    f"got {update.max_tries!r}")
    if update.state is not UpdateState.PENDING:
        raise UpdateDefinitionError(f"{update!r} was already submitted")
    if update.on_timeout not in ("fail", "postpone"):
        raise UpdateDefinitionError(f"{update!r}: on_timeout must be 'fail' or 'postpone', "
                                    f"got {update.on_timeout!r}")


class SafeRedefineUpdate(Update):
    """Redefine ``module.function`` as ``new_function`` (in place: every reference follows), at a
    moment when its threads are parked at update points."""

    def __init__(self, module, function, new_function, name=None, threads=None, **patience):
        super().__init__(name or f"redefine {getattr(function, '__name__', function)}",
                         threads, **patience)
        self.module, self.function, self.new_function = module, function, new_function

    def apply(self):
        redefineFunction(self.module, self.function, self.new_function)


class SafeRedefineMethodUpdate(Update):
    """Redefine method ``method`` (a name or the function) of ``cls`` in place: bound methods,
    static and class methods and properties follow."""

    def __init__(self, cls, method, new_method, name=None, threads=None, **patience):
        self.method_name = method if isinstance(method, str) else getattr(method, "__name__", None)
        if not isinstance(self.method_name, str):
            raise PymoultTypeError(f"method must be a name or a function, got {method!r}")
        super().__init__(name or f"redefine {getattr(cls, '__qualname__', cls)}.{self.method_name}",
                         threads, **patience)
        self.cls, self.new_method = cls, new_method

    def apply(self):
        redefineMethod(self.cls, self.method_name, self.new_method)


class QuiescentRedefineUpdate(Update):
    """Redefine ``module.function`` once it is quiescent, forcing it: new calls are held at its
    entry (forced quiescence) until the running ones have left, then released into the new
    version. Needs no update points."""

    def __init__(self, module, function, new_function, name=None, **patience):
        super().__init__(name or f"redefine {getattr(function, '__name__', function)} "
                                 "(forced quiescence)", None, **patience)
        self.module, self.function, self.new_function = module, function, new_function
        self._events = None

    def preupdate_setup(self):
        self._events = alterability.setupForceQuiescence(self.module, self.function)

    def check_alterability(self):
        return alterability.checkForceQuiescence(self._events[0])

    def wait_alterability(self):
        with alterability.patience(self.max_tries, self.sleep_time):
            return alterability.waitForceQuiescence(self._events[0], timeout=self.timeout)

    def clean_failed_alterability(self):
        quiescent, can_continue, watcher = self._events
        alterability.cleanFailedForceQuiescence(can_continue, watcher, self.module, watcher.name)

    def apply(self):
        update_function(self._events[2].original, self.new_function)  # the gate stays bound

    def resume(self):
        if self._events is not None:
            alterability.cleanForceQuiescence(self._events[1])  # held callers run the new code


def _module_of(cls, module):
    return module if module is not None else sys.modules[cls.__module__]


class EagerConversionUpdate(Update):
    """Update class ``cls`` to ``new_cls`` (in place when the layout allows, else replaced, its
    instances rebuilt and references redirected) and run ``transformer`` on every instance now."""

    def __init__(self, cls, new_cls, transformer, module=None, name=None, threads=None,
                 **patience):
        super().__init__(name or f"convert {getattr(cls, '__qualname__', cls)}", threads,
                         **patience)
        self.cls, self.new_cls, self.transformer, self.module = cls, new_cls, transformer, module

    def apply(self):
        redefineClass(_module_of(self.cls, self.module), self.cls, self.new_cls, self.transformer)


class LazyConversionUpdate(EagerConversionUpdate):
    """Like :class:`EagerConversionUpdate`, but each instance is transformed on its first access
    (see ``pymoult.lowlevel.lazy_conversion``). When the class cannot be updated in place its
    instances are rebuilt at once, so they are transformed eagerly."""

    def apply(self):
        module = _module_of(self.cls, self.module)
        live = redefineClass(module, self.cls, self.new_cls)
        if live is self.cls:
            self.conversion = startLazyUpdate(live, self.transformer)
        else:
            self.conversion = None
            startEagerUpdate(live, self.transformer)


class ThreadRebootUpdate(Update):
    """Reboot ``thread`` into ``new_main(*new_args)`` at its next update point."""

    def __init__(self, thread, new_main, new_args=(), name=None, **patience):
        super().__init__(name or f"reboot {getattr(thread, 'name', thread)}", [thread],
                         **patience)
        self.thread, self.new_main, self.new_args = thread, new_main, tuple(new_args)
        self.reboot = None

    def apply(self):
        switchMain(self.thread, self.new_main, self.new_args)
        self.reboot = resetThread(self.thread)  # served when the thread is resumed

    def check_over(self):
        return self.reboot is None or self.reboot.done()

    def wait_over(self):
        if self.reboot is not None:
            self.reboot.result(self.timeout)
        return True


class HeapTraversalUpdate(Update):
    """Walk the data reachable from ``modules`` with ``walker`` (a ``HeapWalker``)."""

    def __init__(self, walker, modules=("__main__",), name=None, threads=None, **patience):
        super().__init__(name or f"heap traversal by {type(walker).__name__}", threads, **patience)
        self.walker, self.modules = walker, list(modules)

    def apply(self):
        traverseHeap(self.walker, self.modules)


def isApplied(update):
    """True once ``update`` has been applied (and not rolled back)."""
    return update.state is UpdateState.APPLIED


def __getattr__(name):
    # ModuleUpdate lives in its own module, which builds on Update: imported on first use
    if name == "ModuleUpdate":
        from .module_update import ModuleUpdate
        return ModuleUpdate
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
