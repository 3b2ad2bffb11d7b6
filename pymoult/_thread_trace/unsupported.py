"""Backend ``"unsupported"`` of ``pymoult._thread_trace``: an interpreter that has neither
``sys.monitoring`` (CPython 3.12+) nor CPython 3.10/3.11's ``_PyEval_SetTrace``. Nothing is ever
traced; ``set_trace`` refuses with the reason below."""

from __future__ import annotations

from typing import TYPE_CHECKING, NoReturn

if TYPE_CHECKING:
    import threading
    from types import FrameType

    from .common import TraceFunction

#: Why no backend can work here.
UNSUPPORTED = (
    "neither sys.monitoring (CPython 3.12+) nor CPython 3.10/3.11's _PyEval_SetTrace"
)


def install(  # pragma: no cover - set_trace refuses first
    thread: threading.Thread, ident: int, trace: TraceFunction
) -> NoReturn:
    raise AssertionError("no thread trace on this interpreter")


def uninstall(thread: threading.Thread, ident: int) -> None:  # pragma: no cover
    pass


def trace_opcodes(  # pragma: no cover
    thread: threading.Thread, ident: int, frames: list[FrameType]
) -> bool:
    return False


def prune() -> None:  # pragma: no cover
    pass


def current_trace(thread: threading.Thread, ident: int) -> TraceFunction | None:  # pragma: no cover
    return None


def traced_idents() -> set[int]:  # pragma: no cover
    """Idents of the threads that have a record here (for tests): none."""
    return set()
