"""Running a pushed update script in the live application, and the reply that tells how it went.

:func:`run_script` compiles the script as ``<pymoult update N>`` and runs it in a thread of its
own (``pymoult-update-N``) in a fresh namespace (only ``__name__`` and ``__builtins__``: the
script reaches the application with ``sys.modules["__main__"]`` and ``fetch_manager(name)``),
learns which updates it queued (``collect_updates``), and builds the push reply: the script's
exception (and its traceback, cut to the script's frames) if it raised, and the outcome of each
update, final when the client asked to wait, as of now otherwise. :func:`running_scripts` lists
the scripts whose thread still runs (``pymoult status``), those past their timeout marked as
overrun: Python cannot stop a thread.

Nothing here knows about sockets or pipes: both listeners (``pymoult.delivery.socket_server``,
``pymoult.delivery.pipe_server``) hand their push requests to :func:`run_script`.
"""

from __future__ import annotations

import builtins
import itertools
import linecache
import logging
import threading
import time
import traceback
import types
import weakref
from collections.abc import Callable
from concurrent.futures import Future
from typing import TYPE_CHECKING, Any

from ..highlevel.managers import collect_updates
from ..highlevel.lifecycle import UpdateState

if TYPE_CHECKING:
    from ..highlevel.lifecycle import Update
    from ..highlevel.managers import BeforeQueued, UpdateFuture
    from ..protocol import Message

__all__ = ["run_script", "running_scripts", "update_outcome", "wait_unless", "WATCH_INTERVAL"]

logger = logging.getLogger("pymoult")

_script_numbers = itertools.count(1)
_running: dict[int, _Running] = {}  # script number -> _Running, while its thread runs
_running_lock = threading.Lock()
#: How often (seconds) a push being served checks that its client is still there.
WATCH_INTERVAL = 0.1


# -- running a script ----------------------------------------------------------------------------

def _code_objects(code: types.CodeType) -> list[types.CodeType]:
    """``code`` and every code object compiled with it (functions, classes, lambdas...)."""
    found = [code]
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            found.extend(_code_objects(const))
    return found


def _cache_source_while_alive(filename: str, source: str, code: types.CodeType) -> None:
    """Give ``linecache`` a pushed script's source while code compiled from it is alive.

    Tracebacks show a line of ``<pymoult update N>`` only if ``linecache`` has its source,
    and the reply's traceback is not the only one that needs it: the functions a script
    installs in the application run its code for as long as they live, and their tracebacks
    (and ``inspect.getsource``) should show their lines too. Keeping every script's source
    forever grows without bound; keeping the last N, or dropping it when the script's thread
    ends, loses the lines of code still running. So the entry goes when the last code object
    compiled from the script is collected: the cache then holds the source of live code only,
    about the size of that code, which the application keeps anyway.
    """
    codes = _code_objects(code)
    alive, lock = [len(codes)], threading.Lock()

    def collected() -> None:
        with lock:
            alive[0] -= 1
            last = not alive[0]
        if last:
            linecache.cache.pop(filename, None)

    linecache.cache[filename] = (len(source), None, source.splitlines(True), filename)
    for each in codes:
        weakref.finalize(each, collected).atexit = False


def _script_error(exc: BaseException, filename: str) -> dict[str, str]:
    """The JSON form of the exception a script raised, its traceback cut to the script's frames."""
    tb = exc.__traceback__
    while tb is not None and tb.tb_frame.f_code.co_filename != filename:
        tb = tb.tb_next
    return {"type": type(exc).__qualname__, "message": str(exc),
            "traceback": "".join(traceback.format_exception(type(exc), exc, tb))}


def update_outcome(update: Update, future: Future[Update],
                   unfinished_note: str | None = None) -> Message:
    """The reply's record of ``update`` (its ``future`` says whether it ended, and how):
    ``{"name", "state", "finished", "error"}``, and its ``steps`` and ``warnings`` when it lists
    steps (a ``ModuleUpdate``); ``unfinished_note`` is the error given to one not finished."""
    finished = future.done()  # first: a manager sets the state before the future
    outcome: Message = {"name": update.name, "state": update.state.value, "finished": finished,
               "error": None}
    if future.cancelled():
        outcome["state"] = UpdateState.CANCELLED.value
        outcome["error"] = "cancelled"
    elif finished:
        error = future.exception()
        if error is not None:
            outcome["error"] = f"{type(error).__name__}: {error}"
    elif unfinished_note is not None:
        outcome["error"] = unfinished_note
    steps = _step_lines(update)
    if steps is not None:  # an update that lists its steps (a ModuleUpdate, duck-typed)
        outcome["steps"] = steps
        applied = outcome["state"] == UpdateState.APPLIED.value
        outcome["warnings"] = [str(w) for w in getattr(update, "warnings", ())] if applied \
            else []
    return outcome


def _step_lines(update: Update) -> list[str] | None:
    """The update's ``steps`` as lines of text, or None when it has no list of them."""
    try:
        steps = getattr(update, "steps", None)
        if not isinstance(steps, (list, tuple)):
            return None
        return [str(step) for step in steps]
    except Exception:  # an update's own attribute must not break the reply
        logger.exception("could not list the steps of %r", update)
        return None


class _Running:
    """A pushed script whose thread runs, for ``status``."""

    __slots__ = ("number", "thread", "began", "timeout", "origin")

    def __init__(self, number: int, thread: threading.Thread, timeout: float | None,
                 origin: str | None) -> None:
        self.number, self.thread, self.timeout, self.origin = number, thread, timeout, origin
        self.began = time.monotonic()

    def as_dict(self, now: float) -> dict[str, Any]:
        age = now - self.began
        timeout = self.timeout
        overrun = timeout is not None and age > timeout
        return {"number": self.number, "thread": self.thread.name, "age": round(age, 3),
                "timeout": timeout, "origin": self.origin, "overrun": overrun,
                "note": (f"still running {age - timeout:.1f} s after its timeout of "
                         f"{timeout} s: Python cannot stop a thread, so it goes on"
                         if timeout is not None and overrun else None)}


def running_scripts() -> list[dict[str, Any]]:
    """The pushed scripts whose thread still runs, oldest first: ``{"number", "thread",
    "age" (s), "timeout", "origin", "overrun", "note"}`` each; ``overrun`` is true for a script
    still running after its timeout (its thread cannot be stopped: it goes on)."""
    now = time.monotonic()
    with _running_lock:
        running = sorted(_running.values(), key=lambda r: r.number)
    return [r.as_dict(now) for r in running]


def _succeeded(future: Future[Update]) -> bool:
    return future.done() and not future.cancelled() and future.exception() is None


def wait_unless(event: threading.Event, timeout: float | None,
                abandoned: Callable[[], object] | None) -> bool | None:
    """``event.wait(timeout)``, but asking ``abandoned()`` every ``WATCH_INTERVAL`` s: None as
    soon as it answers true."""
    if abandoned is None:
        return event.wait(timeout)
    deadline = None if timeout is None else time.monotonic() + timeout
    while True:
        step = WATCH_INTERVAL if deadline is None else min(
            WATCH_INTERVAL, max(0.0, deadline - time.monotonic()))
        if event.wait(step):
            return True
        if abandoned():
            return None
        if deadline is not None and time.monotonic() >= deadline:
            return False


def run_script(source: str, wait: bool = True, timeout: float | None = None,
               on_applied: Callable[[str], object] | None = None,
               abandoned: Callable[[], object] | None = None, *, origin: str | None = None,
               on_applied_update: Callable[[Update, UpdateFuture], object] | None = None,
               before_queued: BeforeQueued | None = None) -> Message | None:
    """Run update script ``source`` in a thread of its own and return the push reply.

    The script is compiled as ``<pymoult update N>`` and run in thread ``pymoult-update-N`` in a
    fresh namespace. ``timeout`` (None: no limit) bounds the script's run and, when ``wait``, the
    wait for the updates it queued. ``on_applied(name)`` is called as each of them is applied.
    The reply: ``{"ok", "script_error", "updates": [{"name", "state", "finished", "error"}]}``
    (an update that lists its ``steps``, as a ModuleUpdate does, adds ``"steps"`` and
    ``"warnings"``: see ``pymoult.protocol``);
    ``ok`` is false if the script raised or did not end in time, or if an update ended
    unapplied or with an error (or, when waiting, did not end in time).

    ``abandoned()``, if given, is asked every ``WATCH_INTERVAL`` s while waiting whether
    anybody still waits for the reply: once it answers true the waiting stops and None is
    returned. The script and its updates go on (they were accepted); ``on_applied`` is still
    called and the managers log how the updates end. ``origin`` (text: who sent the script)
    goes into the log lines. ``on_applied_update(update, future)``, if given, is called as
    ``on_applied`` is, with the update and its future (a listener keeps them, to revert them).
    ``before_queued(update, future)`` is called for each update the script adds, before it is
    queued (``collect_updates``): what it raises is the script's exception.
    """
    number = next(_script_numbers)
    filename = f"<pymoult update {number}>"
    deadline = None if timeout is None else time.monotonic() + timeout
    #: the script's error (JSON), and the (update, future) pairs it queued
    state: dict[str, Any] = {"error": None, "collected": []}
    ran = threading.Event()

    def body() -> None:
        try:
            with collect_updates(before_queued) as collected:
                state["collected"] = collected
                code = compile(source, filename, "exec", dont_inherit=True)
                _cache_source_while_alive(filename, source, code)
                namespace = {"__name__": f"pymoult_update_{number}", "__builtins__": builtins}
                exec(code, namespace)
        except BaseException as exc:  # the script's failure is reported, never propagated
            try:
                state["error"] = _script_error(exc, filename)
            except BaseException:  # an exception that cannot even be shown is still a failure
                state["error"] = {"type": type(exc).__qualname__,
                                  "message": "<the exception could not be formatted>",
                                  "traceback": None}
        finally:
            with _running_lock:
                _running.pop(number, None)
            ran.set()

    thread = threading.Thread(target=body, name=f"pymoult-update-{number}", daemon=True)
    with _running_lock:
        _running[number] = _Running(number, thread, timeout, origin)
    logger.info("update script %d%s: running in %s", number,
                "" if origin is None else f" (pushed by {origin})", thread.name)
    thread.start()
    ended = wait_unless(ran, timeout, abandoned)
    if ended is None:
        return None
    if ended:
        script_error = state["error"]
    else:
        script_error = {"type": "TimeoutError", "message": f"the script was still running after "
                        f"{timeout} s (it goes on in thread {thread.name!r}: Python cannot stop "
                        "a thread)", "traceback": None}
    collected: list[tuple[Update, UpdateFuture]] = list(state["collected"])
    recorded: set[int] = set()
    recorded_lock = threading.Lock()

    # once per update, by its future's callback or by us below
    def record(update: Update, future: UpdateFuture) -> None:
        if (on_applied is not None or on_applied_update is not None) and _succeeded(future):
            with recorded_lock:
                if id(update) in recorded:
                    return
                recorded.add(id(update))
            if on_applied_update is not None:
                on_applied_update(update, future)
            if on_applied is not None:
                on_applied(update.name)

    unfinished = [len(collected)]
    all_done = threading.Event()

    def done(update: Update, future: UpdateFuture) -> None:
        record(update, future)
        with recorded_lock:
            unfinished[0] -= 1
            if not unfinished[0]:
                all_done.set()

    def when_done(update: Update, future: UpdateFuture) -> Callable[[object], None]:
        return lambda _: done(update, future)

    for update, future in collected:
        future.add_done_callback(when_done(update, future))
    note = None
    if wait and collected:
        left = None if deadline is None else max(0.0, deadline - time.monotonic())
        if wait_unless(all_done, left, abandoned) is None:
            return None
        note = f"not finished within {timeout} s"
    for update, future in collected:  # callbacks may run after wait() returned
        record(update, future)
    updates = [update_outcome(update, future, note) for update, future in collected]
    applied = UpdateState.APPLIED.value
    if wait:
        ok = all(u["finished"] and u["state"] == applied and u["error"] is None for u in updates)
    else:  # nothing failed so far
        ok = all(u["error"] is None and (not u["finished"] or u["state"] == applied)
                 for u in updates)
    reply = {"ok": ok and script_error is None, "script_error": script_error, "updates": updates}
    _log_outcome(number if origin is None else f"{number} (pushed by {origin})", reply)
    return reply


def _log_outcome(number: int | str, reply: Message) -> None:  # number, maybe with its origin

    updates = ", ".join(f"{u['name']!r}: {u['state']}" + (f" ({u['error']})" if u["error"] else "")
                        for u in reply["updates"]) or "no update queued"
    if reply["script_error"] is not None:
        logger.warning("update script %s raised %s: %s; %s\n%s", number,
                       reply["script_error"]["type"], reply["script_error"]["message"], updates,
                       reply["script_error"]["traceback"] or "")
    elif reply["ok"]:
        logger.info("update script %s ran; %s", number, updates)
    else:
        logger.warning("update script %s ran; %s", number, updates)


