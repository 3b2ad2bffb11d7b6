"""Development mode: every saved change to a module's file is applied to the running program.

:class:`FileWatcher` (what ``pymoult run --watch`` starts) watches directories with watchfiles,
which reports a burst of saves as one set of changes once it has settled (``debounce``) and
sees editors' atomic rename-saves and ``sed -i``. For each set, the ``.py`` files that belong to
loaded modules (the application's script included, as ``__main__``) become one
:class:`~pymoult.highlevel.module_update.ModuleUpdate` of their files as they are now, queued on
the manager and waited for before the next set is looked at: several files saved together
change together, or not at all. What each update changed, or why it could not apply (a syntax
error, an exception in the new version, a rollback), goes to ``report`` as one line (then one
line per thread still running code the update replaced), and the watcher waits for the next
save. Files of modules not loaded (not imported yet, tests, data) are left alone.

The comparison needs the source each module runs: sources must be tracked
(``pymoult.track_sources()``; ``pymoult run`` does it) before the modules are imported.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
import types
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING

from ..errors import PymoultError, PymoultTypeError, PymoultValueError

if TYPE_CHECKING:
    from .managers import Manager

__all__ = ["FileWatcher", "modules_of"]

logger = logging.getLogger("pymoult")

#: Seconds a burst of saves must be quiet before it is applied, and the watch's polling step.
DEBOUNCE_MS = 200
STEP_MS = 50


def modules_of(paths: Iterable[str]) -> dict[str, types.ModuleType]:
    """``{path: module}`` for the paths (absolute) that are the source files of loaded modules."""
    wanted = {os.path.abspath(path) for path in paths}
    found: dict[str, types.ModuleType] = {}
    for module in list(sys.modules.values()):
        spec = getattr(module, "__spec__", None)
        origin = getattr(spec, "origin", None) or getattr(module, "__file__", None)
        if isinstance(origin, str) and os.path.abspath(origin) in wanted:
            found.setdefault(os.path.abspath(origin), module)
    return found


class FileWatcher(threading.Thread):
    """Apply saved changes under ``paths`` to the running program (see the module notes).

    ``manager`` applies the updates; ``report(line)`` receives one line per change set (the
    runtime prints them); ``timeout`` bounds the wait for each update.
    """

    def __init__(self, paths: Iterable[str | os.PathLike[str]], manager: Manager,
                 report: Callable[[str], object], timeout: float = 60.0,
                 debounce_ms: int = DEBOUNCE_MS) -> None:
        super().__init__(name="pymoult watch", daemon=True)
        absolute = [os.path.abspath(os.fspath(path)) for path in paths]
        missing = [path for path in absolute if not os.path.exists(path)]
        if missing:
            raise PymoultValueError(f"cannot watch {', '.join(missing)}: no such file or directory")
        if not callable(report):
            raise PymoultTypeError(f"report must be callable, got {report!r}")
        try:
            import watchfiles
        except ImportError as exc:  # pragma: no cover - a declared dependency
            raise PymoultValueError("watching files needs the watchfiles package "
                                    "(pip install watchfiles)") from exc
        self._watchfiles = watchfiles
        self.paths, self.manager, self.report = absolute, manager, report
        self.timeout, self.debounce_ms = timeout, debounce_ms
        self._stopping = threading.Event()
        self.ready = threading.Event()  # set once the watch has started
        self.applied = 0  # change sets applied

    def stop(self, timeout: float | None = None) -> bool:
        self._stopping.set()
        self.join(timeout)
        return not self.is_alive()

    def run(self) -> None:
        watchfiles = self._watchfiles
        try:
            for changes in watchfiles.watch(*self.paths, watch_filter=watchfiles.PythonFilter(),
                                            debounce=self.debounce_ms, step=STEP_MS,
                                            stop_event=self._stopping, yield_on_timeout=True,
                                            rust_timeout=STEP_MS * 4):
                self.ready.set()
                if changes:
                    self._apply({path for change, path in changes
                                 if change != watchfiles.Change.deleted})
        except Exception:  # the watcher must never take the program down
            logger.exception("the file watcher stopped")
            self.report("watch: stopped after an internal error (see the log)")

    def _apply(self, paths: set[str]) -> None:
        from .module_update import ModuleUpdate

        modules = modules_of(paths)
        if not modules:
            logger.debug("watch: %s changed, no loaded module comes from it", sorted(paths))
            return
        files = ", ".join(os.path.basename(path) for path in sorted(modules))
        try:
            modules_changed = list(modules.values())
            update = ModuleUpdate(modules_changed[0]) if len(modules_changed) == 1 else \
                ModuleUpdate.together(modules_changed)
        except PymoultError as exc:
            self.report(f"watch: {files} not applied: {_first_line(exc)}; waiting for the next "
                        "save")
            return
        if not update.steps:
            self.report(f"watch: {files}: nothing to change")
            return
        update.log_warnings = False  # reported below, after the line saying what changed
        try:
            self.manager.apply_update(update, timeout=self.timeout)
        except TimeoutError as exc:
            if not update.state.finished:  # not the update's own timeout: it is still queued
                self.report(f"watch: {files} not applied within {self.timeout:g} s; the update "
                            f"stays queued ({update.state.value})")
                return
            self.report(f"watch: {files} not applied ({update.state.value}): {_first_line(exc)}")
            return
        except BaseException as exc:  # the update's outcome, whatever it is
            self.report(f"watch: {files} not applied ({update.state.value}): "
                        f"{type(exc).__name__}: {_first_line(exc)}")
            return
        self.applied += 1
        self.report(f"watch: applied {files}: " + "; ".join(str(step) for step in update.steps))
        for warning in update.warnings:
            self.report(f"watch: warning: {warning}")


def _first_line(exc: BaseException) -> str:

    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
