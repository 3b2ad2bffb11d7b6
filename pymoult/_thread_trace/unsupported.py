"""Backend ``"unsupported"`` of ``pymoult._thread_trace``: an interpreter that has neither
``sys.monitoring`` (CPython 3.12+) nor CPython 3.10/3.11's ``_PyEval_SetTrace``. Nothing is ever
traced; ``set_trace`` refuses with the reason below."""

#: Why no backend can work here.
UNSUPPORTED = "neither sys.monitoring (CPython 3.12+) nor CPython 3.10/3.11's _PyEval_SetTrace"


def install(thread, trace):  # pragma: no cover - set_trace refuses first
    raise AssertionError("no thread trace on this interpreter")


def uninstall(thread):  # pragma: no cover
    pass


def trace_opcodes(thread, frames):  # pragma: no cover
    return False


def prune():  # pragma: no cover
    pass


def current_trace(thread):  # pragma: no cover
    return None


def traced_idents():  # pragma: no cover
    """Idents of the threads that have a record here (for tests): none."""
    return set()
