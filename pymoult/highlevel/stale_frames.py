"""Which threads still run code that an update replaced.

An update applied while threads are parked (at static update points, or suspended anywhere, as
the runtime's manager does for the Runner) can leave frames that began before it: a function
updated in place keeps running its old code in the frames already executing it, until they
return (its next call runs the new code); a removed function's frames run to their end; and a
module's ``<module>`` code (the main script's loop) is never run again, so a module-level
statement it is executing keeps its old version for good. :func:`stale_frames`, called right
after an update is applied (while the threads are still parked), names each such thread and
function in one line, for the push reply, ``pymoult run --watch`` and the log.
"""

from __future__ import annotations

import types
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from ..lowlevel.alterability import thread_frames

__all__ = ["ModuleCode", "stale_frames"]


class ModuleCode:
    """A module's ``<module>`` code, as an update leaves it.

    ``name`` is the module's name and ``namespace`` its ``__dict__`` (a ``<module>`` frame
    whose globals are this dict runs it); ``statements`` lists, as ``(first line, lines)``, the
    module-level statements the update changed or dropped without running them again (lines of
    the version the update compared with); ``running_lines`` is a callable giving the lines of
    the source the ``<module>`` code was compiled from, or None when they are not known: a
    frame then counts wherever it is.
    """

    __slots__ = ("name", "namespace", "statements", "running_lines")

    def __init__(self, name: str, namespace: dict[str, Any],
                 statements: Iterable[tuple[int, Sequence[str]]],
                 running_lines: Callable[[], Sequence[str] | None] | None = None) -> None:
        self.name, self.namespace = name, namespace
        self.statements, self.running_lines = list(statements), running_lines

    def runs_old_statement(self, line: int | None, running: Iterable[str] | None) -> bool:
        """Whether line ``line`` of the running source (``running``: its lines, or None) lies
        in one of the old statements. The statement is looked for by its text around the line
        (an earlier update may have moved the module's lines since it was imported)."""
        if running is None or line is None:
            return True
        stripped = [text.rstrip("\r\n") for text in running]
        for _, lines in self.statements:
            texts = [text.rstrip("\r\n") for text in lines]
            for offset in range(len(texts)):
                begin = line - 1 - offset
                if begin >= 0 and stripped[begin:begin + len(texts)] == texts:
                    return True
        return False

    def __repr__(self) -> str:
        return f"<ModuleCode {self.name} {len(self.statements)} old statements>"


def _where(frame: types.FrameType) -> str:
    line = frame.f_lineno
    return f" (line {line})" if line is not None else ""


def stale_frames(replaced: Mapping[types.CodeType, str], modules: Iterable[ModuleCode] = (),
                 frames: Iterable[tuple[str, types.FrameType]] | None = None) -> list[str]:
    """One line per thread and piece of old code it still runs.

    ``replaced`` maps the code objects an update replaced (old code of functions updated in
    place, of changed or removed methods and functions) to the name to show (``jobs.Job.run``);
    ``modules`` are :class:`ModuleCode` objects; ``frames`` are ``(thread name, frame)`` pairs,
    each thread's innermost first (default: every thread's stack now). A thread is named once
    per piece of code, with the line its outermost frame running it is at (in the version it
    runs), outermost first: ``thread Runner still runs the old code of jobs.main (line 12)
    until it returns``.
    """
    if frames is None:
        frames = thread_frames()
    by_namespace = {id(m.namespace): m for m in modules if m.statements}
    running: dict[int, Sequence[str] | None] = {}  # id(ModuleCode) -> its lines, read once
    per_thread: dict[str, dict[tuple[str, int], str]] = {}  # thread name -> {key: line},
    order: list[str] = []  # ^ outermost frame last
    for thread, frame in frames:
        code = frame.f_code
        text: str | None = None
        label = replaced.get(code)
        if label is not None:
            key = ("code", id(code))
            text = f"thread {thread} still runs the old code of {label}{_where(frame)} until " \
                   "it returns"
        elif code.co_name == "<module>" and id(frame.f_globals) in by_namespace:
            module = by_namespace[id(frame.f_globals)]
            if module.namespace is frame.f_globals:
                if id(module) not in running:
                    running[id(module)] = None if module.running_lines is None \
                        else module.running_lines()
                if module.runs_old_statement(frame.f_lineno, running[id(module)]):
                    key = ("module", id(module))
                    text = (f"thread {thread} still runs the old module-level code of "
                            f"{module.name}{_where(frame)}: module code is not run again")
        if text is None:
            continue
        if thread not in per_thread:
            per_thread[thread] = {}
            order.append(thread)
        per_thread[thread][key] = text  # an outer frame replaces an inner one of the same code
    lines: list[str] = []

    for thread in order:
        lines.extend(reversed(list(per_thread[thread].values())))
    return lines
