"""The exceptions Pymoult raises.

Every error derives from :class:`PymoultError` and also from the builtin exception it really is, so
callers can catch either: ``except TimeoutError`` catches :class:`UpdateTimeoutError` too.

:class:`~pymoult.threads.RebootException` is not here: it is control flow, not an error, and derives
from ``BaseException`` so that application code's ``except Exception:`` does not swallow a reboot.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

__all__ = [
    "PymoultError",
    "PymoultTypeError",
    "PymoultValueError",
    "ThreadStateError",
    "ContinuationError",
    "ActiveUpdateError",
    "RebootError",
    "UpdateTimeoutError",
    "DeadlockDetectedError",
    "LifecycleError",
    "StopTheWorldError",
    "UnsupportedError",
    "RedefinitionError",
    "TargetNotFoundError",
    "RollbackError",
    "PartialRollbackError",
    "RevertError",
    "TwoPhaseError",
    "ConversionError",
    "TransformerError",
    "WrongStrategy",
    "UpdateDefinitionError",
    "UpdateAbortedError",
    "UpdateStepError",
    "ModuleUpdateError",
    "NotAlterableNow",
    "ProtocolError",
    "AuthenticationError",
    "ListenerError",
    "ListenerBusyError",
    "ListenerTimeoutError",
]


class PymoultError(Exception):
    """Base class of every error Pymoult raises; catch it to handle any Pymoult failure."""


class PymoultTypeError(PymoultError, TypeError):
    """An argument has the wrong type: a plain ``Thread`` where a ``DSU_Thread`` is required, a
    non-callable where a function is required. The message names the object."""


class PymoultValueError(PymoultError, ValueError):
    """An argument has the right type but a value that cannot be used (a negative timeout, an
    unknown thread name)."""


class ThreadStateError(PymoultError, RuntimeError):
    """An operation does not fit the thread's current state: ``switch()`` called from another
    thread, a second ``start()``, rebooting a thread that has finished, suspending a thread that
    is not alive. The message shows the thread and its state."""


class ContinuationError(PymoultError, RuntimeError):
    """The thread's ``sleeping_continuation_function`` raised. Raised by ``DSU_Thread.switch()``
    in the thread that switched, with the original exception as ``__cause__``; the continuation
    stays usable and the thread keeps running."""


class ActiveUpdateError(PymoultError, RuntimeError):
    """An active update function raised when the thread ran it at an update point. It is stored on
    the future returned by ``set_active_update_function`` (original as ``__cause__``) and logged;
    the thread keeps running."""


class RebootError(PymoultError, RuntimeError):
    """A reboot was asked for that cannot be carried out: the function is neither the thread's
    main nor a declared reboot boundary, or the thread cannot be rebooted in its state."""


class UpdateTimeoutError(PymoultError, TimeoutError):
    """A wait for alterability (update points, quiescence) did not end within its patience."""


class DeadlockDetectedError(PymoultError, RuntimeError):
    """A blocking call could never complete (for instance a thread waiting for itself to park at
    an update point) and was refused instead of hanging."""


class StopTheWorldError(PymoultError, RuntimeError):
    """The stop-the-world window was misused: entered while already held by another thread in a
    way that cannot be honoured, or left by a thread that does not hold it."""


class UnsupportedError(PymoultError, NotImplementedError):
    """The running CPython does not offer what the operation needs; the message says what is
    missing and on which versions it works."""


class RedefinitionError(PymoultError, ValueError):
    """A function cannot be updated in place, typically because the new version's free
    variables differ from the old one's (the message names both sets). ``.function`` is the live
    function, ``.new_function`` the new version. Pass ``fallback="rebind"`` to rebind names
    instead (existing references then keep the old code)."""

    def __init__(self, message: str, function: object = None,
                 new_function: object = None) -> None:
        super().__init__(message)
        self.function = function
        self.new_function = new_function


class TargetNotFoundError(PymoultError, LookupError):
    """What an update targets is not there (any more): a module attribute or class member that
    vanished, a frame that exited. ``.target`` names what was looked for."""

    def __init__(self, message: str, target: object = None) -> None:
        super().__init__(message)
        self.target = target


class RollbackError(PymoultError, RuntimeError):
    """Some operations of a journal could not be undone; the others were. ``.failures`` lists
    ``(operation, exception)`` pairs."""

    def __init__(self, message: str,
                 failures: Iterable[tuple[Any, BaseException]] = ()) -> None:
        super().__init__(message)
        self.failures = list(failures)


class PartialRollbackError(RollbackError):
    """An update's apply failed and its rollback left something changed. ``.residue`` lists what
    stayed, as texts; the exception apply raised is ``__cause__``."""

    def __init__(self, message: str, residue: Iterable[str] = ()) -> None:
        super().__init__(message)
        self.residue = list(residue)


class RevertError(PymoultError, RuntimeError):
    """An applied update could not be reverted (``RevertUpdate``): it is no longer applied, or
    updates applied after it may build on it, or some of its operations could not be undone."""


class TwoPhaseError(PymoultError, RuntimeError):
    """A two-phase push could not be prepared as asked (two updates on one manager), or a
    commit or abort named no prepared transaction of the listener."""


class ConversionError(PymoultError, TypeError):
    """An object cannot be converted to the new class (incompatible layout and no way to build
    the new object). ``.obj`` is the object, ``.new_cls`` the class it was to become."""

    def __init__(self, message: str, obj: Any = None, new_cls: type | None = None) -> None:
        super().__init__(message)
        self.obj = obj
        self.new_cls = new_cls


class TransformerError(PymoultError, RuntimeError):
    """A transformer raised while converting objects. ``.obj`` is the object it failed on,
    ``.index`` its position and ``.count`` how many objects were to be converted; the original
    exception is ``__cause__``. The objects converted before it were restored."""

    def __init__(self, message: str, obj: Any = None, index: int | None = None,
                 count: int | None = None) -> None:
        super().__init__(message)
        self.obj = obj
        self.index = index
        self.count = count


class WrongStrategy(PymoultError, ValueError):
    """``DataAccessor`` was given a strategy it does not know (the original Pymoult name)."""


class UpdateDefinitionError(PymoultError, TypeError):
    """An update cannot run as defined (no ``apply``, a bad patience, not an Update, submitted
    twice). Raised by ``add_update``, before the update is queued."""


class UpdateAbortedError(PymoultError, RuntimeError):
    """The update was abandoned before it changed anything: its requirements answered "never",
    or it was aborted or cancelled. ``.update`` is the update."""

    def __init__(self, message: str, update: Any = None) -> None:
        super().__init__(message)
        self.update = update


class UpdateStepError(PymoultError, RuntimeError):
    """A step *after* apply failed (``preresume_setup``, ``cleanup``...): the update is applied
    and stays so, but the step's failure is reported. ``.update`` and ``.step`` say which."""

    def __init__(self, message: str, update: Any = None, step: str | None = None) -> None:
        super().__init__(message)
        self.update = update
        self.step = step


class ModuleUpdateError(UpdateDefinitionError):
    """A module update could not be built from the new source: it does not compile
    (``.lineno`` is the line), it raised while being evaluated (``.traceback`` is the
    formatted traceback), or the version the module runs is unknown. Raised when the
    ``ModuleUpdate`` is made, with nothing changed; ``.module`` names the module."""

    def __init__(self, message: str, module: str | None = None, lineno: int | None = None,
                 traceback: str | None = None) -> None:
        super().__init__(message)
        self.module = module
        self.lineno = lineno
        self.traceback = traceback


class LifecycleError(PymoultError, RuntimeError):
    """An update was moved between two states its lifecycle does not connect (for instance
    from "applied" back to "waiting for alterability"): a bug in a manager or in code that sets
    ``update.state`` itself. The message shows both states; the state is left unchanged."""


class NotAlterableNow(PymoultError, RuntimeError):
    """Raised by an update's ``apply`` *before it changes anything*, when the check it repeats
    inside the stop-the-world window fails (a changed function started running after the
    alterability check). The manager does not fail the update: it waits for alterability again
    (at most ``max_postponements`` times, then the update fails with this error)."""


class ProtocolError(PymoultError, ValueError):
    """A frame or request broke the listener's wire format (``pymoult.protocol``): a length
    prefix over the size limit, a frame cut short or not finished within the read timeout, a
    payload that is not a UTF-8 JSON object, a request with an unknown ``op`` or a field of the
    wrong type. ``.reason`` is one of ``"too_large"``, ``"truncated"``, ``"timeout"``,
    ``"malformed"``, ``"bad_request"``."""

    def __init__(self, message: str, reason: str = "malformed") -> None:
        super().__init__(message)
        self.reason = reason


class AuthenticationError(PymoultError, PermissionError):
    """The listener refused a request before looking at it: missing or wrong token, or a Unix
    socket peer running as another user. Raised by the client functions when the reply says
    so, when the socket file's permissions refuse the connection, or when the client refuses
    the listener: it did not prove it knows the token, did not answer the handshake, or runs as
    another user (it may be an impostor; nothing but the hello was sent to it). ``.address``
    names the listener when known."""

    def __init__(self, message: str, address: str | None = None) -> None:
        super().__init__(message)
        self.address = address


class ListenerError(PymoultError, ConnectionError):
    """A client could not talk to the listener at ``.address``: no socket there, connection
    refused or reset, the listener closed the connection without a valid reply, or it refused
    the request for a reason other than authentication; for a named pipe (``pipe:``), no pipe
    there, or nothing reading it. ``.may_have_run`` is False when the listener surely did not
    act on the request (no connection was made, or it refused the request), True when it may
    have (the connection broke, or no reply came in time)."""

    def __init__(self, message: str, address: str | None = None,
                 may_have_run: bool = True) -> None:
        super().__init__(message)
        self.address = address
        self.may_have_run = may_have_run


class ListenerBusyError(ListenerError):
    """The listener already serves its maximum number of connections and refused this one;
    retry later."""


class ListenerTimeoutError(ListenerError, TimeoutError):
    """The listener at ``.address`` did not accept the connection or did not reply within the
    client's timeout (the update may still be running: ask ``status``)."""
