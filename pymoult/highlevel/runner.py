"""The runtime of ``pymoult run``: the application runs in a Runner thread, the main thread
stays with the runtime.

:class:`Runtime` loads the application (a script path or a module name, as ``python app.py`` and
``python -m module`` would), installs it as ``sys.modules["__main__"]`` for the life of the
process, and runs it in a :class:`Runner` (a ``DSU_Thread``, so it can be parked, rebooted and
switched like any other). The main thread hosts a ``ThreadedManager`` named ``"runtime"``
(update scripts reach it with ``fetch_manager("runtime")``), whose thread is the Runner (an
update naming no threads suspends it while it applies), and, when asked, a ``Listener``.

Semantics, chosen to match a plain ``python app.py`` as closely as a thread allows:

- ``sys.exit(code)`` in the application raises ``SystemExit`` in the Runner, so its ``finally``
  blocks and context managers run; the process exit code is the application's (``None`` is 0,
  a non-integer is printed and gives 1, an uncaught exception prints its traceback and gives 1).
- When the Runner ends, the runtime keeps serving updates while other non-daemon application
  threads live, and ends once they have (daemon threads do not hold it, as in Python).
- Ctrl-C (SIGINT reaches the main thread, which is the runtime's) raises ``KeyboardInterrupt``
  in the Runner, so the application sees it as it would without Pymoult. It lands when the
  Runner next runs Python code (a Runner blocked in a long C call, such as one ``time.sleep``,
  sees it when that call returns). A second Ctrl-C, or a first one once the Runner has ended,
  stops the runtime at once (exit code 130). The application's other threads (the runtime's
  own are daemon threads) are daemon or not as they were created.
- SIGTERM and SIGHUP (``TERMINATING_SIGNALS``) stop the runtime at once as well, after the
  shutdown a normal exit has (the listener's socket file and private directory removed); the
  ``pymoult`` command then ends the process by that same signal.

``get_runner()`` gives the live Runner (update scripts name it in ``threads=[...]``).

The library logs through the ``pymoult`` logger and never prints; :class:`RuntimeLog` is how
``pymoult run`` shows that log (on stderr, or in a file), and
:func:`application_log_handlers` how it tells whether the application configured logging
itself.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import signal
import sys
import threading
import time
import types
from collections.abc import Callable, Iterable
from typing import Any, Literal, Protocol, TextIO

from .. import _cpython
from ..errors import PymoultTypeError, PymoultValueError, ThreadStateError
from ..source_tracking import record_source
from ..threads import DSU_Thread
from ..logs import LOG_FILE_FORMAT, LOG_LEVELS
from .managers import ThreadedManager

__all__ = ["Application", "Runner", "Runtime", "RuntimeLog", "application_log_handlers",
           "get_runner", "load_application", "RUNTIME_MANAGER", "INTERRUPTED"]

logger = logging.getLogger("pymoult")

#: The name of the runtime's manager: ``fetch_manager(RUNTIME_MANAGER)``.
RUNTIME_MANAGER = "runtime"
#: Exit code when the runtime is stopped by Ctrl-C (128 + SIGINT, as shells report it).
INTERRUPTED = 130
#: The signals that stop the runtime as a normal exit would (listener and manager stopped, the
#: socket file and its private directory removed), after which the process ends by the signal.
TERMINATING_SIGNALS = tuple(getattr(signal, name) for name in ("SIGTERM", "SIGHUP")
                            if hasattr(signal, name))
#: How often the runtime looks whether the application's other threads have ended, once the
#: Runner has (seconds; see Runtime._wait for why it cannot join them).
APPLICATION_THREADS_POLL = 0.05

_runner: Runner | None = None


class _Listener(Protocol):
    """What the runtime needs of the listener ``listener_factory`` builds (a ``Listener``)."""

    def start(self) -> object: ...

    def stop(self, timeout: float | None = ...) -> object: ...


class _Terminated(BaseException):
    """Raised in the main thread by the handler of a ``TERMINATING_SIGNALS`` signal."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


def get_runner() -> Runner | None:
    """The Runner thread of the application started by ``pymoult run`` (None outside it)."""
    return _runner


class Application:
    """What to run: the code of the application's ``__main__`` and the module it runs in."""

    def __init__(self, code: types.CodeType, module: types.ModuleType, argv: list[str],
                 path_entry: str) -> None:
        self.code, self.module, self.argv, self.path_entry = code, module, argv, path_entry


def load_application(path: str | os.PathLike[str] | None = None, module: str | None = None,
                     args: Iterable[str] = ()) -> Application:
    """Compile the application without running it: ``path`` (a script) or ``module`` (a module
    name, as with ``python -m``; a package runs its ``__main__``).

    Raises ``FileNotFoundError``, ``SyntaxError``, or ``PymoultValueError`` for a module that
    cannot be found or run, before anything starts.
    """
    if (path is None) == (module is None):
        raise PymoultValueError("give the application as a script path or a module name, "
                                "not both")
    args = list(args)
    if not all(isinstance(arg, str) for arg in args):
        raise PymoultTypeError(f"arguments must be strings, got {args!r}")
    main = types.ModuleType("__main__")
    if path is not None:
        script = os.fspath(path)
        with open(script, "rb") as source_file:
            source = source_file.read()
        absolute = os.path.abspath(script)  # as Python 3.9+ gives __main__.__file__
        code = compile(source, absolute, "exec", dont_inherit=True)
        record_source("__main__", absolute, source)  # if sources are tracked
        main.__file__ = absolute
        main.__cached__ = None  # type: ignore[attr-defined]  # as Python sets it on __main__
        main.__package__ = None
        main.__spec__ = None
        main.__loader__ = None
        return Application(code, main, [script] + args, os.path.dirname(absolute))
    # as python -m: sys.path[0] is the current directory (this replaces the entry of the
    # pymoult command itself: its bin directory, or the current directory already)
    sys.path[0] = os.getcwd()
    assert module is not None  # one of the two was given
    spec = _find_spec(module)
    if spec.submodule_search_locations is not None:  # a package: run its __main__
        spec = _find_spec(f"{module}.__main__")
    loader = spec.loader  # one that can run a module has get_code (an InspectLoader)
    runnable: types.CodeType | None = None
    if loader is not None:
        runnable = loader.get_code(spec.name)  # type: ignore[attr-defined]  # see above
    if runnable is None:
        raise PymoultValueError(f"no code to run for module {spec.name!r}")
    code = runnable
    main.__file__ = spec.origin
    main.__cached__ = getattr(spec, "cached", None)  # type: ignore[attr-defined]  # as above
    main.__package__ = spec.parent
    main.__spec__ = spec
    main.__loader__ = spec.loader
    return Application(code, main, [spec.origin or module] + args, os.getcwd())


def _find_spec(name: str) -> importlib.machinery.ModuleSpec:
    try:
        spec = importlib.util.find_spec(name)
    except (ImportError, ValueError) as exc:  # a parent package that fails to import
        raise PymoultValueError(f"cannot find module {name!r}: {exc}") from exc
    if spec is None:
        raise PymoultValueError(f"no module named {name!r}")
    return spec


class Runner(DSU_Thread):
    """The thread the application's ``__main__`` runs in; ``exit_code`` once it has ended."""

    def __init__(self, application: Application) -> None:
        super().__init__(target=self._run_application, name="Runner")
        self.application = application
        self.exit_code: int | None = None
        self.finished = threading.Event()  # set once the application's main has ended

    def _run_application(self) -> None:
        exec(self.application.code, self.application.module.__dict__)

    def run(self) -> None:
        # around DSU_Thread.run, so that whatever main runs (a new one after a reboot or a
        # switchMain included) ends the same way, and reboots are left to DSU_Thread
        try:
            super().run()
            self.exit_code = 0
        except SystemExit as exc:
            self.exit_code = _exit_code(exc.code)
        except KeyboardInterrupt:
            self._report_uncaught()
            self.exit_code = INTERRUPTED  # as a shell reports a Python killed by Ctrl-C
        except BaseException:
            self._report_uncaught()
            self.exit_code = 1
        finally:
            if self.exit_code is None:  # something escaped even the handlers above
                self.exit_code = 1
            self.finished.set()

    def _report_uncaught(self) -> None:
        """The interpreter's report of an uncaught exception, from the application's frames."""
        kind, exc, tb = sys.exc_info()
        if kind is None or exc is None:  # called outside an exception handler
            return
        app_file = self.application.code.co_filename
        first = tb
        while first is not None and first.tb_frame.f_code.co_filename != app_file:
            first = first.tb_next
        if first is not None and exc is not None:
            # the interpreter's hook prints the exception's own traceback when it has one,
            # whatever it is given: cut the runtime's frames off that one
            exc.__traceback__ = first
        sys.excepthook(kind, exc, first if first is not None else tb)


def _exit_code(code: object) -> int:
    """The process exit code ``sys.exit(code)`` gives in plain Python."""
    if code is None:
        return 0
    if isinstance(code, int) and not isinstance(code, bool):
        return code & 0xFF if code >= 0 else code % 256
    if isinstance(code, bool):
        return int(code)
    sys.stderr.write(f"{code}\n")  # what Python itself does with sys.exit("message")
    return 1


class Runtime:
    """Run ``application`` (from :func:`load_application`) in a Runner under a runtime manager.

    ``listener_factory(manager)`` (optional) builds the listener to start with it (the
    ``pymoult`` command passes one that builds a ``Listener``); ``on_ready(runtime)`` is called
    once the manager and listener run, just before the application starts (the command prints
    the listen address there). :meth:`run` blocks
    until the application has ended and returns its exit code.
    """

    def __init__(self, application: Application,
                 listener_factory: Callable[[ThreadedManager], _Listener] | None = None,
                 on_ready: Callable[[Runtime], object] | None = None) -> None:
        if not isinstance(application, Application):
            raise PymoultTypeError(f"expected an application from load_application(), got "
                                   f"{application!r}")
        self.application = application
        self.listener_factory = listener_factory
        self.on_ready = on_ready
        self.manager: ThreadedManager | None = None
        self.listener: _Listener | None = None
        self.runner: Runner | None = None
        self.forced = False  # stopped by Ctrl-C with application threads perhaps still running
        #: The signal (SIGTERM, SIGHUP) that stopped the runtime, or None.
        self.stopped_by: int | None = None
        self._runtime_threads: set[threading.Thread] = set()
        self._handlers_before: dict[int, Callable[[int, types.FrameType | None], object] | int
                                    | None] = {}
        self._signal_raises = False

    def run(self) -> int:
        """Start the runtime and the application; return the application's exit code.

        After a forced stop (``forced``: a second Ctrl-C, or one once the Runner had ended, or
        SIGTERM or SIGHUP, then named by ``stopped_by``) application threads may still run;
        the ``pymoult`` command then ends the process with ``os._exit`` rather than wait for
        them, as "at once" promises (after a signal, by that signal).
        """
        if threading.current_thread() is not threading.main_thread():
            raise ThreadStateError("the runtime must run in the main thread (it receives "
                                   "Ctrl-C)")
        if _runner is not None:
            raise ThreadStateError("an application already runs under this process's runtime")
        self._catch_terminating_signals()
        try:
            return self._run()
        except _Terminated as stop:  # also one raised while a Ctrl-C was being handled
            self.forced = True
            self.stopped_by = stop.signum
            logger.warning("%s: stopping the runtime", signal.Signals(stop.signum).name)
            return 128 + stop.signum
        finally:
            self._signal_raises = False  # a signal now must not cut the shutdown short
            try:
                self._shutdown()
            finally:
                self._restore_signals()

    def _run(self) -> int:
        global _runner
        app = self.application
        try:
            self.manager = manager = ThreadedManager(RUNTIME_MANAGER).start()
            if self.listener_factory is not None:
                self.listener = listener = self.listener_factory(manager)
                listener.start()
            sys.modules["__main__"] = app.module
            sys.argv[:] = app.argv
            sys.path[0] = app.path_entry  # the command's own entry is no business of the app
            self.runner = _runner = runner = Runner(app)
            # as the original's managers, the runtime's suspends its thread around every update
            # that names no threads of its own
            manager.threads = [runner]
            self._runtime_threads = set(threading.enumerate())  # ours, before the app's
            if self.on_ready is not None:
                self.on_ready(self)
            runner.start()
            return self._wait()
        except KeyboardInterrupt:
            if self.runner is not None and self.runner.ident is not None \
                    and not self.runner.finished.is_set():
                # the Runner runs but _wait was not listening yet: the application's Ctrl-C
                return self._interrupted_early(self.runner)
            self.forced = True  # before the Runner started: stop everything
            logger.warning("interrupted while starting: stopping the runtime")
            return INTERRUPTED

    def _catch_terminating_signals(self) -> None:
        """SIGTERM and SIGHUP raise ``_Terminated`` in the main thread (once): the runtime then
        stops as on a normal exit, so the listener's socket and directory are removed."""
        def terminate(signum: int, frame: types.FrameType | None) -> None:
            if self._signal_raises:
                self._signal_raises = False
                raise _Terminated(signum)

        self._signal_raises = True
        for signum in TERMINATING_SIGNALS:
            self._handlers_before[signum] = signal.signal(signum, terminate)

    def _restore_signals(self) -> None:
        for signum, handler in self._handlers_before.items():
            signal.signal(signum, handler if handler is not None else signal.SIG_DFL)
        self._handlers_before.clear()

    def _interrupted_early(self, runner: Runner) -> int:
        logger.info("interrupted: KeyboardInterrupt raised in the Runner")
        try:
            _cpython.raise_in_thread(runner, KeyboardInterrupt)
        except ThreadStateError:  # it ended meanwhile
            pass
        try:
            return self._wait(interrupted=True)
        except KeyboardInterrupt:  # a second one, before _wait listened again
            self.forced = True
            logger.warning("interrupted: stopping the runtime")
            return INTERRUPTED

    def _wait(self, interrupted: bool = False) -> int:
        """Wait for the Runner, then for the application's other non-daemon threads.

        Never ``Thread.join()`` here: on 3.10/3.11 a Ctrl-C that interrupts a join marks the
        joined thread as stopped while it still runs (CPython's fix for bpo-45274 releases
        the thread's state lock). The Runner signals its end with an Event, and other threads
        are watched through ``threading.enumerate()``, which takes no lock of theirs.
        ``interrupted``: a first Ctrl-C was already passed to the Runner.
        """
        runner = self.runner
        if runner is None:
            raise ThreadStateError("the application's Runner has not started")
        while True:
            try:
                if not runner.finished.is_set():
                    runner.finished.wait()
                    continue
                if not self._application_threads():
                    return 1 if runner.exit_code is None else runner.exit_code
                time.sleep(APPLICATION_THREADS_POLL)
            except KeyboardInterrupt:
                if interrupted or runner.finished.is_set():
                    logger.warning("interrupted: stopping the runtime")
                    self.forced = True
                    return INTERRUPTED
                interrupted = True
                logger.info("interrupted: KeyboardInterrupt raised in the Runner")
                try:
                    _cpython.raise_in_thread(runner, KeyboardInterrupt)
                except ThreadStateError:  # it ended meanwhile
                    pass

    def _application_threads(self) -> list[threading.Thread]:
        """The application's live non-daemon threads other than the Runner."""
        return [t for t in threading.enumerate()
                if t not in self._runtime_threads and t is not self.runner and not t.daemon]

    def _shutdown(self) -> None:
        global _runner
        if self.listener is not None:
            try:
                self.listener.stop(5.0)
            except Exception:  # stopping must go on: the manager still has to stop
                logger.exception("stopping the listener failed")
        if self.manager is not None:
            self.manager.stop(5.0)
        _runner = None


# -- showing the pymoult log -----------------------------------------------------------------

def application_log_handlers() -> list[logging.Handler]:
    """The handlers records of the ``pymoult`` logger reach, other than ``NullHandler``s and
    the runtime's own (:class:`RuntimeLog`): those of the ``pymoult`` logger and, as far as it
    propagates, of its ancestors (the root logger).

    Non-empty means the application (or whatever embeds the runtime) configured logging
    itself: ``logging.basicConfig()``, a handler added to the root or the ``pymoult`` logger,
    ``set_logpath(path)``. A handler on another logger (``getLogger("myapp")``) does not count:
    it never sees Pymoult's records.
    """
    found: list[logging.Handler] = []
    # the object, not getLogger(): that would take logging's module lock
    current: logging.Logger | None = logger
    while current is not None:
        found += [handler for handler in tuple(current.handlers)  # a copy: others may add
                  if not isinstance(handler, logging.NullHandler)
                  and not getattr(handler, "pymoult_runtime", False)]
        if not current.propagate:
            break
        current = current.parent
    return found


class _PersonFormatter(logging.Formatter):
    """``pymoult: MESSAGE`` for the application's own lines (``log(level, message)``), and
    ``pymoult: warning: MESSAGE`` (``info:``, ``error:``...) for Pymoult's."""

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        if getattr(record, "original_level", None) is not None:
            return f"pymoult: {text}"
        return f"pymoult: {record.levelname.lower()}: {text}"


class _StderrHandler(logging.StreamHandler):
    """Writes to ``sys.stderr`` as it is when a record comes (as Python's last-resort handler
    does), and only while :func:`application_log_handlers` finds none: the application's own
    configuration then shows Pymoult's records, once."""

    pymoult_runtime = True

    def __init__(self) -> None:
        logging.Handler.__init__(self)

    @property
    def stream(self) -> TextIO:
        return sys.stderr

    def filter(self, record: logging.LogRecord) -> Any:  # bool; 3.12+: or a LogRecord
        # before the handler's lock: application_log_handlers() takes no lock at all
        if application_log_handlers():
            return False
        return super().filter(record)


class _FileHandler(logging.FileHandler):
    pymoult_runtime = True


class RuntimeLog:
    """How ``pymoult run`` shows the ``pymoult`` log, which the library only writes to.

    ``level`` (the original's 0, 1 or 2: WARNING, INFO, DEBUG) is set on the ``pymoult``
    logger while the log is installed; None leaves the logger's level alone (so WARNING, from
    the root logger: the original's level 0). The application's own ``set_loglevel()`` (or
    ``setLevel``) comes later and so takes precedence.

    ``path`` None: records go to stderr as ``pymoult: v1`` (an application's ``log(0, "v1")``)
    or ``pymoult: warning: ...`` (Pymoult's own), but only while the application has not
    configured logging itself (:func:`application_log_handlers`, asked at each record): once it
    has, its configuration shows them and the runtime writes nothing. A ``path``: records go
    to that file instead, in the format of ``set_logpath`` (time, level, thread, message),
    whatever the application configures (it asked for them explicitly). The file is opened
    (for appending) here, so a path that cannot be written raises ``OSError`` before anything
    runs.

    Use it as a context manager (or :meth:`install`, :meth:`remove`) around the runtime.
    """

    def __init__(self, level: Literal[0, 1, 2] | None = None,
                 path: str | os.PathLike[str] | None = None) -> None:
        if level is not None and (isinstance(level, bool) or level not in LOG_LEVELS):
            raise PymoultValueError(f"a log level must be 0 (application), 1 (errors) or 2 "
                                    f"(everything), got {level!r}")
        self.level = level
        self.path = None if path is None else os.fspath(path)
        self.handler: logging.Handler
        if self.path is None:
            self.handler = _StderrHandler()
            self.handler.setFormatter(_PersonFormatter())
        else:
            self.handler = _FileHandler(self.path, encoding="utf-8")
            self.handler.setFormatter(logging.Formatter(LOG_FILE_FORMAT))
        self._logger = logger
        self._level_before = logging.NOTSET
        self._installed = False

    def install(self) -> RuntimeLog:
        """Add the handler to the ``pymoult`` logger (and set its level); returns self."""
        if not self._installed:
            if self.level is not None:
                self._level_before = self._logger.level
                self._logger.setLevel(LOG_LEVELS[self.level])
            self._logger.addHandler(self.handler)
            self._installed = True
        return self

    def remove(self) -> None:
        """Take the handler away (closing the file) and put the logger's level back, unless
        somebody changed it since. Safe to call more than once."""
        if self._installed:
            self._logger.removeHandler(self.handler)
            if self.level is not None and self._logger.level == LOG_LEVELS[self.level]:
                self._logger.setLevel(self._level_before)
            self._installed = False
        self.handler.close()

    def __enter__(self) -> RuntimeLog:
        return self.install()

    def __exit__(self, *exc_info: object) -> None:
        self.remove()

    def __repr__(self) -> str:

        where = "stderr" if self.path is None else repr(self.path)
        return f"<RuntimeLog level={self.level} to {where}>"
