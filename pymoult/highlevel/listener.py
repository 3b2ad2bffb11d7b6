"""The update listener: it receives update scripts and runs them in the live application.

:class:`Listener` is a daemon thread the application starts. A client (``pymoult.client``, the
``pymoult`` command) connects, sends one request frame (``pymoult.protocol``) and gets one reply.
A ``push`` request carries an update script's *source*; the listener runs it in a thread of its
own (``pymoult-update-N``, compiled as ``<pymoult update N>``) in a fresh namespace (only
``__name__`` and ``__builtins__``: the script reaches the application with
``sys.modules["__main__"]`` and ``fetch_manager(name)``), learns which updates it queued
(``collect_updates``), and replies with the script's exception (and traceback) if it raised and
with the outcome of each update: final when the client asked to wait, as of now otherwise.
``status`` and ``history`` report on the managers.

Running a pushed script is remote code execution by design, so the listener is locked down by
default: a Unix socket (mode 0600, in a private 0700 directory) whose peers must run as this
process's user (or root, which could take over the process anyway); TCP only when asked, on
loopback unless told otherwise, and then only with a token, which each side proves it knows
without sending it (protocol 2: an HMAC over both sides' nonces, see ``pymoult.protocol``). Every
connection has a size limit and read and idle timeouts. Until its request has all arrived (and
its client proved the token) it is read by the listener's own thread, holding no thread and no
slot, within caps per peer (IP, or uid) and in all; only then does it take one of
``max_connections`` slots (a push whose client goes away frees its slot within
``WATCH_INTERVAL``; its updates go on). Every refusal gets an error reply when possible (after a
delay growing with its peer's recent failures) and a WARNING in the ``pymoult`` log naming the
peer (one line per peer and kind every ``log_interval``, the others counted), and nothing a
client sends ends the listener's thread.

:class:`PipeListener` runs scripts sent as frames into a named pipe (no replies: the outcome is
logged). ``log``, ``set_loglevel``, ``set_logpath`` and ``get_app_listener`` are the original
Pymoult's, routed through the ``pymoult`` logger.
"""

import builtins
import collections
import hmac
import ipaddress
import itertools
import linecache
import logging
import os
import select
import selectors
import socket
import stat
import tempfile
import threading
import time
import traceback
import types
import weakref

from .. import protocol
from ..errors import (AuthenticationError, ListenerBusyError, ProtocolError, PymoultTypeError,
                      PymoultValueError, ThreadStateError)
from .managers import Manager, collect_updates, fetch_manager, live_managers
from .updates import UpdateState

__all__ = ["Listener", "PipeListener", "get_app_listener", "log", "set_loglevel", "set_logpath",
           "run_script", "running_scripts", "LOG_LEVELS", "LOG_FILE_FORMAT"]

logger = logging.getLogger("pymoult")

_script_numbers = itertools.count(1)
_running = {}  # script number -> _Running, while its thread runs
_running_lock = threading.Lock()
_connection_numbers = itertools.count(1)
_app_listener = None
_LINGER = 0.5  # seconds a handler waits for the client to close after the reply
#: How often (seconds) a push being served checks that its client is still there.
WATCH_INTERVAL = 0.1


# -- the original's logging functions ------------------------------------------------------------

#: The original's levels (0 application, 1 errors, 2 everything) as ``logging`` levels. A message
#: of level L is shown when L <= the level set; Pymoult's own warnings and errors show at every
#: level.
LOG_LEVELS = {0: logging.WARNING, 1: logging.INFO, 2: logging.DEBUG}
#: The format of the ``pymoult`` log in a file (``set_logpath``, ``pymoult run --log-file``):
#: read afterwards, so each line says when, how serious and in which thread.
LOG_FILE_FORMAT = "%(asctime)s %(levelname)s [%(threadName)s] %(message)s"
_file_handler = None
_log_lock = threading.Lock()


def _logging_level(level):
    if isinstance(level, bool) or not isinstance(level, int):
        raise PymoultTypeError(f"a log level must be 0, 1 or 2, got {level!r}")
    if level not in LOG_LEVELS:
        raise PymoultValueError(f"a log level must be 0 (application), 1 (errors) or 2 "
                                f"(everything), got {level!r}")
    return LOG_LEVELS[level]


def log(level, message):
    """Log ``message`` through the ``pymoult`` logger at the original's ``level`` (0
    application, 1 errors, 2 everything: WARNING, INFO, DEBUG). The record carries that level
    as ``record.original_level`` (``pymoult run`` shows such lines as the application's own)."""
    logger.log(_logging_level(level), "%s", message, extra={"original_level": level})


def set_loglevel(level):
    """Show messages of the original's ``level`` and below: sets the ``pymoult`` logger's
    level (0: WARNING, 1: INFO, 2: DEBUG)."""
    logger.setLevel(_logging_level(level))


def set_logpath(path):
    """Also write the ``pymoult`` log to file ``path`` (replacing the file set before; None
    stops writing to a file). Returns the handler, or None."""
    global _file_handler
    with _log_lock:
        if _file_handler is not None:
            logger.removeHandler(_file_handler)
            _file_handler.close()
            _file_handler = None
        if path is not None:
            handler = logging.FileHandler(os.fspath(path), encoding="utf-8")
            handler.setFormatter(logging.Formatter(LOG_FILE_FORMAT))
            logger.addHandler(handler)
            _file_handler = handler
        return _file_handler


def get_app_listener():
    """The listener the application started last (None if none is running)."""
    return _app_listener


# -- running a script ----------------------------------------------------------------------------

def _code_objects(code):
    """``code`` and every code object compiled with it (functions, classes, lambdas...)."""
    found = [code]
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            found.extend(_code_objects(const))
    return found


def _cache_source_while_alive(filename, source, code):
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

    def collected():
        with lock:
            alive[0] -= 1
            last = not alive[0]
        if last:
            linecache.cache.pop(filename, None)

    linecache.cache[filename] = (len(source), None, source.splitlines(True), filename)
    for each in codes:
        weakref.finalize(each, collected).atexit = False


def _script_error(exc, filename):
    """The JSON form of the exception a script raised, its traceback cut to the script's frames."""
    tb = exc.__traceback__
    while tb is not None and tb.tb_frame.f_code.co_filename != filename:
        tb = tb.tb_next
    return {"type": type(exc).__qualname__, "message": str(exc),
            "traceback": "".join(traceback.format_exception(type(exc), exc, tb))}


def _update_outcome(update, future, unfinished_note=None):
    finished = future.done()  # first: a manager sets the state before the future
    outcome = {"name": update.name, "state": update.state.value, "finished": finished,
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


def _step_lines(update):
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

    def __init__(self, number, thread, timeout, origin):
        self.number, self.thread, self.timeout, self.origin = number, thread, timeout, origin
        self.began = time.monotonic()

    def as_dict(self, now):
        age = now - self.began
        overrun = self.timeout is not None and age > self.timeout
        return {"number": self.number, "thread": self.thread.name, "age": round(age, 3),
                "timeout": self.timeout, "origin": self.origin, "overrun": overrun,
                "note": (f"still running {age - self.timeout:.1f} s after its timeout of "
                         f"{self.timeout} s: Python cannot stop a thread, so it goes on"
                         if overrun else None)}


def running_scripts():
    """The pushed scripts whose thread still runs, oldest first: ``{"number", "thread",
    "age" (s), "timeout", "origin", "overrun", "note"}`` each; ``overrun`` is true for a script
    still running after its timeout (its thread cannot be stopped: it goes on)."""
    now = time.monotonic()
    with _running_lock:
        running = sorted(_running.values(), key=lambda r: r.number)
    return [r.as_dict(now) for r in running]


def _succeeded(future):
    return future.done() and not future.cancelled() and future.exception() is None


def _wait_unless(event, timeout, abandoned):
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


def run_script(source, wait=True, timeout=None, on_applied=None, abandoned=None, *,
               origin=None):
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
    goes into the log lines.
    """
    number = next(_script_numbers)
    filename = f"<pymoult update {number}>"
    deadline = None if timeout is None else time.monotonic() + timeout
    state = {"error": None, "collected": []}
    ran = threading.Event()

    def body():
        try:
            with collect_updates() as collected:
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
    ended = _wait_unless(ran, timeout, abandoned)
    if ended is None:
        return None
    if ended:
        script_error = state["error"]
    else:
        script_error = {"type": "TimeoutError", "message": f"the script was still running after "
                        f"{timeout} s (it goes on in thread {thread.name!r}: Python cannot stop "
                        "a thread)", "traceback": None}
    collected = list(state["collected"])
    recorded, recorded_lock = set(), threading.Lock()

    def record(update, future):  # once per update, by its future's callback or by us below
        if on_applied is not None and _succeeded(future):
            with recorded_lock:
                if id(update) in recorded:
                    return
                recorded.add(id(update))
            on_applied(update.name)

    unfinished = [len(collected)]
    all_done = threading.Event()

    def done(update, future):
        record(update, future)
        with recorded_lock:
            unfinished[0] -= 1
            if not unfinished[0]:
                all_done.set()

    for update, future in collected:
        future.add_done_callback(lambda f, update=update: done(update, f))
    note = None
    if wait and collected:
        left = None if deadline is None else max(0.0, deadline - time.monotonic())
        if _wait_unless(all_done, left, abandoned) is None:
            return None
        note = f"not finished within {timeout} s"
    for update, future in collected:  # callbacks may run after wait() returned
        record(update, future)
    updates = [_update_outcome(update, future, note) for update, future in collected]
    applied = UpdateState.APPLIED.value
    if wait:
        ok = all(u["finished"] and u["state"] == applied and u["error"] is None for u in updates)
    else:  # nothing failed so far
        ok = all(u["error"] is None and (not u["finished"] or u["state"] == applied)
                 for u in updates)
    reply = {"ok": ok and script_error is None, "script_error": script_error, "updates": updates}
    _log_outcome(number if origin is None else f"{number} (pushed by {origin})", reply)
    return reply


def _log_outcome(number, reply):  # number: the script's number, maybe with its origin
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


# -- what both listeners share ------------------------------------------------------------------

def _resolve_token(token, token_file):
    """The listener's token: ``token``, else the file's, else ``$PYMOULT_TOKEN``'s (which is
    then removed from the environment, so that the application's children do not inherit it),
    else None; surrounding whitespace stripped, at least ``protocol.MIN_TOKEN_BYTES`` bytes."""
    if token is not None and token_file is not None:
        raise PymoultValueError("give token or token_file, not both")
    if token is not None:
        if not isinstance(token, str):
            raise PymoultTypeError(f"token must be a string, got {type(token).__name__}")
        if not token:
            raise PymoultValueError("token must not be empty")
        return protocol.check_token(token, "token=")
    if token_file is not None:
        return protocol.read_token_file(token_file)
    value = os.environ.pop("PYMOULT_TOKEN", None)
    if not value:
        return None
    return protocol.check_token(value, "PYMOULT_TOKEN")


def _check_positive(value, what, integer=False, allow_none=False):
    if value is None and allow_none:
        return None
    kinds = (int,) if integer else (int, float)
    if isinstance(value, bool) or not isinstance(value, kinds):
        raise PymoultTypeError(f"{what} must be a positive {'int' if integer else 'number'}, "
                               f"got {value!r}")
    if not value > 0 or value == float("inf"):
        raise PymoultValueError(f"{what} must be positive and finite, got {value!r}")
    return value


class _RecentNames(list):
    """``applied_updates``: a list that keeps the last ``host.history_size`` names appended."""

    def __init__(self, host):
        super().__init__()
        self._host = host

    def append(self, name):
        super().append(name)
        self._host.applied_total += 1
        excess = len(self) - max(0, int(self._host.history_size))
        if excess > 0:
            del self[:excess]


class _ScriptHost:
    """Token, limits and push handling shared by Listener and PipeListener."""

    def _setup(self, token, token_file, max_size, read_timeout, idle_timeout):
        self.read_timeout = float(_check_positive(read_timeout, "read_timeout"))
        self._token = _resolve_token(token, token_file)
        self._token_bytes = None if self._token is None else self._token.encode("utf-8")
        self.max_size = _check_positive(max_size, "max_size", integer=True)
        if self.max_size > 0xFFFFFFFF:
            raise PymoultValueError(f"max_size must be at most {0xFFFFFFFF} bytes (a frame's "
                                    f"length is 4 bytes), got {max_size!r}")
        self.idle_timeout = _check_positive(idle_timeout, "idle_timeout", allow_none=True)
        #: Names of the updates applied through this listener, in the order they were applied:
        #: the last ``history_size`` (``applied_total`` counts them all).
        self.applied_updates = _RecentNames(self)
        self.applied_total = 0

    @property
    def requires_token(self):
        """True when clients must prove they know the listener's token."""
        return self._token is not None

    def _authenticate(self, message):
        """``AuthenticationError`` unless ``message`` carries the token (when there is one): the
        named pipe's protocol 1, which has no way back for a challenge."""
        if self._token_bytes is None:
            return
        given = message.get("token")
        if given is None:
            raise AuthenticationError("authentication failed: this listener needs a token")
        if not isinstance(given, str):
            raise AuthenticationError("authentication failed: the token must be a string")
        if not hmac.compare_digest(given.encode("utf-8", "surrogatepass"), self._token_bytes):
            raise AuthenticationError("authentication failed: wrong token")

    #: How many names ``applied_updates`` keeps (the most recent).
    history_size = 500

    #: The longest a push may hold its connection (and one of ``max_connections``): a push
    #: asking for no timeout, or a longer one, gets this one. Updates still running then are
    #: reported "not finished" and go on; ``status`` tells how they end.
    max_push_wait = 600.0

    def _push(self, request, abandoned=None, origin=None):
        timeout = request["timeout"]
        timeout = self.max_push_wait if timeout is None else min(timeout, self.max_push_wait)
        return run_script(request["script"], request["wait"], timeout,
                          self.applied_updates.append, abandoned, origin=origin)


# -- the socket listener ------------------------------------------------------------------------

def _private_runtime_dir():
    """$XDG_RUNTIME_DIR when it is a directory of ours that nobody else can enter, else None."""
    base = os.environ.get("XDG_RUNTIME_DIR")
    if not base:
        return None
    try:
        info = os.stat(base)
    except OSError:
        return None
    if stat.S_ISDIR(info.st_mode) and info.st_uid == os.geteuid() and not info.st_mode & 0o077:
        return base
    return None


def _check_unix_path(path, bound, advice, what="the path"):
    """``PymoultValueError`` naming ``path`` when ``bound`` (the path given to ``bind``) is too
    long for a Unix socket."""
    problem = protocol.unix_path_error(bound, what)
    if problem is not None:
        raise PymoultValueError(f"cannot listen on unix:{path}: {problem}; {advice}")


def _is_loopback(host):
    try:
        infos = socket.getaddrinfo(host, None, type=socket.SOCK_STREAM)
    except OSError:
        return False
    return all(ipaddress.ip_address(info[4][0].split("%")[0]).is_loopback for info in infos)


class Listener(_ScriptHost, threading.Thread):
    """Receives requests (``push`` a script, ``status``, ``history``) and answers each.

    ``Listener()`` listens on a Unix socket ``listener.sock`` in a new private directory
    (under ``$XDG_RUNTIME_DIR`` when it is private, else the temporary directory);
    ``address="unix:/path"`` puts it at a path of your choice, ``address="tcp:host:port"`` (or
    the original's ``port=``, on 127.0.0.1 unless ``localhost=False``) on TCP, which needs a
    token. The token comes from ``token``, else from ``token_file`` (which must not be readable
    by group or others), else from ``$PYMOULT_TOKEN`` (then removed from the environment); it
    must have at least ``protocol.MIN_TOKEN_BYTES`` bytes. When there is one, every client,
    over Unix sockets too, must prove it knows it, and the listener proves it first: the token
    never crosses the wire (protocol 2, see ``pymoult.protocol``). Port 0 picks a free port:
    ``listener.address`` tells which.

    ``manager`` (a manager or its name; None: every live manager) is what ``status`` and
    ``history`` report on. Limits: ``protocol.AUTH_FRAME_MAX`` bytes per frame and
    ``auth_timeout`` s (at most ``read_timeout``) for the handshake, then ``max_size`` bytes per
    request, the whole request within ``read_timeout`` s and no silence longer than
    ``idle_timeout`` s (None: only ``read_timeout``), ``max_connections`` requests served
    at once (the next ones are told the listener is busy). Connections whose request has not
    all arrived hold no slot: at most ``max_pending_per_peer`` of them per peer (remote IP;
    uid over a Unix socket) and ``max_pending`` in all, the oldest dropped to make room. The
    reply to a refusal waits 0.1 s after one recent failure of its peer, doubling with each, at
    most ``failure_delay`` s (0: none). Refusals are logged once per peer and kind every
    ``log_interval`` s, with a count of the others.

    The socket is bound at construction; ``start()`` starts serving (and returns the listener),
    ``stop()`` closes the socket and removes its file.
    """

    def __init__(self, name="Pymoult Listener", localhost=True, port=None, *, address=None,
                 token=None, token_file=None, manager=None, max_size=protocol.MAX_FRAME,
                 max_connections=8, read_timeout=10.0, idle_timeout=None, auth_timeout=5.0,
                 max_pending=128, max_pending_per_peer=32, failure_delay=2.0,
                 log_interval=10.0):
        threading.Thread.__init__(self, name=name, daemon=True)
        self._setup(token, token_file, max_size, read_timeout, idle_timeout)
        self.auth_timeout = min(float(_check_positive(auth_timeout, "auth_timeout")),
                                self.read_timeout)
        self.max_connections = _check_positive(max_connections, "max_connections", integer=True)
        self.max_pending = _check_positive(max_pending, "max_pending", integer=True)
        self.max_pending_per_peer = min(self.max_pending, _check_positive(
            max_pending_per_peer, "max_pending_per_peer", integer=True))
        if isinstance(failure_delay, bool) or not isinstance(failure_delay, (int, float)) \
                or not 0 <= failure_delay <= 60:
            raise PymoultValueError(f"failure_delay must be a number of seconds from 0 to 60, "
                                    f"got {failure_delay!r}")
        self.failure_delay = float(failure_delay)
        self.log_interval = float(_check_positive(log_interval, "log_interval"))
        self._failures = _PeerFailures(self.failure_delay)
        self._refusals = _RefusalLog(self.name, self.log_interval)
        self._pending = {}  # connections whose request has not all arrived, oldest first
        self._pending_changed = threading.Condition()
        self._selector = None
        if manager is not None and not isinstance(manager, (Manager, str)):
            raise PymoultTypeError(f"manager must be a Manager, a manager's name or None, "
                                   f"got {manager!r}")
        self.manager = manager
        if address is not None and port is not None:
            raise PymoultValueError("give address or port, not both")
        if port is not None:
            if isinstance(port, bool) or not isinstance(port, int) or not 0 <= port <= 65535:
                raise PymoultValueError(f"port must be an int from 0 to 65535, got {port!r}")
            address = protocol.Address("tcp", host="127.0.0.1" if localhost else "0.0.0.0",
                                       port=port)
        elif not localhost:
            raise PymoultValueError("localhost=False only applies to TCP (port= or "
                                    "address='tcp:...'); the default transport is a Unix socket")
        self._connections = 0  # in progress, each holding one of max_connections slots
        self._connections_changed = threading.Condition()
        self._handlers = set()
        self._handlers_lock = threading.Lock()
        self._stopping = threading.Event()
        self._closed = False
        self._close_lock = threading.Lock()
        self._private_dir = None
        self._socket_id = None
        self._wake_r, self._wake_w = socket.socketpair()
        try:
            self._sock, self._address = self._bind(
                None if address is None else protocol.parse_address(address))
        except BaseException:
            self._wake_r.close()
            self._wake_w.close()
            raise
        logger.info("%s: listening on %s%s", self.name, self._address,
                    " (token required)" if self.requires_token else "")

    # -- binding ------------------------------------------------------------------------------

    @property
    def address(self):
        """Where the listener listens: ``"unix:/path"`` or ``"tcp:host:port"`` (the real port)."""
        return str(self._address)

    def _bind(self, address):
        if address is not None and address.family == "pipe":
            raise PymoultValueError(f"a Listener listens on a socket (unix: or tcp:); for "
                                    f"{address} use PipeListener({address.path!r})")
        if address is None or address.family == "unix":
            return self._bind_unix(None if address is None else address.path)
        if not self.requires_token:
            raise PymoultValueError(
                f"a TCP listener ({address}) needs a token: pass token= or token_file=, or set "
                "PYMOULT_TOKEN (or use the default Unix socket)")
        sock = socket.socket(address.socket_family, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind(address.sockaddr)
            sock.listen(max(16, 2 * self.max_connections))
            sock.setblocking(False)
        except OSError as exc:
            sock.close()
            raise PymoultValueError(f"cannot listen on {address}: {exc.strerror or exc}") from None
        host, port = sock.getsockname()[:2]
        bound = protocol.Address("tcp", host=host, port=port)
        if not _is_loopback(address.host):
            logger.warning("%s: listening on %s, beyond this machine: scripts and replies travel "
                           "in clear text (the token does not); prefer loopback and an SSH "
                           "tunnel", self.name, bound)
        return sock, bound

    def _bind_unix(self, path):
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        staging = None
        try:
            if path is None:  # a fresh 0700 directory: nobody else can reach the socket, ever
                self._private_dir = tempfile.mkdtemp(prefix="pymoult-", dir=_private_runtime_dir())
                path = os.path.join(self._private_dir, "listener.sock")
                _check_unix_path(path, path, "set TMPDIR (or XDG_RUNTIME_DIR) to a shorter "
                                 "directory, or pass address='unix:/shorter/path'")
                sock.bind(path)
                os.chmod(path, 0o600)
            else:  # bound in a private staging directory, made 0600, then moved into place
                self._refuse_live_path(path)
                staging = tempfile.mkdtemp(prefix=".p", dir=os.path.dirname(path))
                _check_unix_path(path, os.path.join(staging, "s"),
                                 "choose a path in a directory with a shorter name",
                                 f"the socket is bound first at {os.path.join(staging, 's')}, "
                                 "which")
                sock.bind(os.path.join(staging, "s"))
                os.chmod(os.path.join(staging, "s"), 0o600)
                os.replace(os.path.join(staging, "s"), path)
            info = os.lstat(path)
            self._socket_id = (info.st_dev, info.st_ino)
            sock.listen(max(16, 2 * self.max_connections))
            sock.setblocking(False)
        except BaseException as exc:
            sock.close()
            if self._private_dir is not None:
                _remove_quietly(os.path.join(self._private_dir, "listener.sock"))
                _rmdir_quietly(self._private_dir)
                self._private_dir = None
            if isinstance(exc, OSError):
                raise PymoultValueError(f"cannot listen on unix:{path}: "
                                        f"{exc.strerror or exc}") from None
            raise
        finally:
            if staging is not None:
                _remove_quietly(os.path.join(staging, "s"))
                _rmdir_quietly(staging)
        return sock, protocol.Address("unix", path=path)

    @staticmethod
    def _refuse_live_path(path):
        """A path in use is refused; a stale socket (nobody listening) may be replaced."""
        try:
            info = os.lstat(path)
        except FileNotFoundError:
            return
        if not stat.S_ISSOCK(info.st_mode):
            raise PymoultValueError(f"cannot listen on unix:{path}: the path exists and is not "
                                    "a socket")
        probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            probe.settimeout(1.0)
            probe.connect(path)
        except OSError:
            return  # stale: nothing listens there
        finally:
            probe.close()
        raise PymoultValueError(f"cannot listen on unix:{path}: another listener serves it")

    # -- life --------------------------------------------------------------------------------

    def start(self):
        """Start serving; returns the listener."""
        global _app_listener
        if self._closed:
            raise ThreadStateError(f"{self!r} was stopped: create a new listener")
        threading.Thread.start(self)
        _app_listener = self
        return self

    def __enter__(self):
        return self if self.is_alive() else self.start()

    def __exit__(self, *exc_info):
        self.stop(5.0)

    def stop(self, timeout=None):
        """Stop accepting, close the socket and remove its file (and private directory), then
        wait up to ``timeout`` s for the connections in progress (a pushed script that stops
        its own listener must give a timeout: its connection waits for it). True once every
        thread of the listener has ended."""
        global _app_listener
        deadline = None if timeout is None else time.monotonic() + timeout
        self._stopping.set()
        try:
            self._wake_w.send(b"x")
        except OSError:
            pass
        if self.is_alive() and threading.current_thread() is not self:
            self.join(timeout)
        with self._close_lock:
            if not self._closed:
                self._closed = True
                self._sock.close()
                self._wake_r.close()
                self._wake_w.close()
                self._remove_socket_file()
                logger.info("%s: stopped listening on %s", self.name, self._address)
        if _app_listener is self:
            _app_listener = None
        with self._handlers_lock:
            handlers = list(self._handlers)
        for handler in handlers:
            handler.join(None if deadline is None else max(0.0, deadline - time.monotonic()))
        return not self.is_alive() and not any(h.is_alive() for h in handlers)

    @property
    def connections(self):
        """The number of connections being served now (each holds one of
        ``max_connections``)."""
        with self._connections_changed:
            return self._connections

    def wait_idle(self, timeout=None):
        """Block until no connection is being served; False if some still are after
        ``timeout`` s (None: no limit)."""
        with self._connections_changed:
            return self._connections_changed.wait_for(lambda: self._connections == 0, timeout)

    def wait_connections(self, predicate, timeout=None):
        """Block until ``predicate(number of connections being served)`` is true; False after
        ``timeout`` s."""
        with self._connections_changed:
            return self._connections_changed.wait_for(lambda: predicate(self._connections),
                                                      timeout)

    def _remove_socket_file(self):
        if self._address.family != "unix":
            return
        path = self._address.path
        try:
            info = os.lstat(path)
            if (info.st_dev, info.st_ino) == self._socket_id:  # still ours, not a successor's
                os.unlink(path)
        except OSError:
            pass
        if self._private_dir is not None:
            _rmdir_quietly(self._private_dir)

    def run(self):
        selector = self._selector = selectors.DefaultSelector()
        try:
            selector.register(self._sock, selectors.EVENT_READ)
            selector.register(self._wake_r, selectors.EVENT_READ)
            while not self._stopping.is_set():
                for key, _ in selector.select(self._next_wait()):
                    if key.fileobj is self._wake_r:
                        return
                    if key.fileobj is self._sock:
                        self._accept()
                    elif key.data in self._pending:
                        self._readable(key.data)
                self._expire(time.monotonic())
        except BaseException:  # nothing may escape the listener's thread
            if not self._stopping.is_set():
                logger.exception("%s: the listener failed", self.name)
        finally:
            for pending in list(self._pending):
                self._drop(pending)
            selector.close()

    # -- connections before their request has arrived: read here, holding no thread ---------

    def _accept(self):
        try:
            conn, address = self._sock.accept()
        except (BlockingIOError, InterruptedError):
            return
        except OSError as exc:  # out of file descriptors...: back off, keep serving
            logger.warning("%s: accept failed: %s", self.name, exc)
            self._stopping.wait(0.1)
            return
        now = time.monotonic()
        peer, where, uid = _peer_of(conn, address)
        pending = _Pending(conn, f"connection {next(_connection_numbers)} from {where}", peer,
                           now)
        self._make_room(peer)
        try:
            conn.setblocking(False)
            self._selector.register(conn, selectors.EVENT_READ, pending)
        except (OSError, ValueError) as exc:
            logger.warning("%s: could not watch %s: %s", self.name, pending.who, exc)
            conn.close()
            return
        with self._pending_changed:
            self._pending[pending] = None
            self._pending_changed.notify_all()
        self._expect(pending, "first", now)
        if uid is not None and uid not in (os.geteuid(), 0):
            self._refuse(pending, AuthenticationError(
                f"authentication failed: peer runs as uid {uid}, the listener as uid "
                f"{os.geteuid()}"), now)

    def _make_room(self, peer):
        """Keep the unauthenticated connections within ``max_pending_per_peer`` for ``peer``
        and ``max_pending`` in all, dropping (without a reply) the one to go first: one already
        refused, else the oldest; from the peer holding the most when the total is reached."""
        mine = [p for p in self._pending if p.peer == peer]
        if len(mine) >= self.max_pending_per_peer:
            self._evict(mine, f"over the cap of {self.max_pending_per_peer} unauthenticated "
                              "connections from one peer")
        if len(self._pending) >= self.max_pending:
            counts = {}
            for each in self._pending:
                counts[each.peer] = counts.get(each.peer, 0) + 1
            greediest = max(counts, key=counts.get)
            self._evict([p for p in self._pending if p.peer == greediest],
                        f"over the cap of {self.max_pending} unauthenticated connections")

    def _evict(self, candidates, why):
        refused = [p for p in candidates if p.stage in ("penalty", "closing")]
        victim = (refused or candidates)[0]  # the dict keeps them oldest first
        if victim.stage not in ("penalty", "closing"):
            self._refusals.refused(victim.peer, "dropped", logging.WARNING,
                                   f"{self.name}: dropped {victim.who} (unauthenticated, "
                                   f"the oldest): {why}", time.monotonic())
        self._drop(victim)

    def _drop(self, pending):
        with self._pending_changed:
            if self._pending.pop(pending, 0) is None:
                self._pending_changed.notify_all()
        try:
            self._selector.unregister(pending.conn)
        except (KeyError, ValueError, OSError):
            pass
        pending.conn.close()

    def _expect(self, pending, stage, now):
        """``pending`` now waits for its ``stage`` frame: its size limit and deadline."""
        pending.stage = stage
        token = self._token is not None
        if stage == "first":
            pending.limit = protocol.AUTH_FRAME_MAX if token else self.max_size
            span = self.auth_timeout if token else self.read_timeout
            pending.deadline = now + span
            pending.late = f"the frame was not complete within {span} s"
        elif stage == "proof":
            pending.limit = protocol.AUTH_FRAME_MAX  # the deadline stays the first frame's
            pending.late = f"the authentication was not complete within {self.auth_timeout} s"
        else:  # "request"
            pending.limit = self.max_size
            pending.deadline = now + self.read_timeout
            pending.late = f"the frame was not complete within {self.read_timeout} s"

    def _readable(self, pending):
        now = time.monotonic()
        try:
            chunk = pending.conn.recv(65536)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as exc:
            self._refusals.refused(pending.peer, "lost", logging.INFO,
                                   f"{self.name}: {pending.who} failed: {exc}", now)
            self._failures.record(pending.peer, now)
            self._drop(pending)
            return
        if pending.stage == "closing":  # after a refusal: read and drop until the client closes
            pending.dropped += len(chunk)
            if not chunk or pending.dropped > self.max_size:
                self._drop(pending)
            return
        pending.last_byte = now
        if not chunk:
            self._ended(pending, now)
            return
        pending.buffer += chunk
        try:
            while pending in self._pending and pending.stage in _READING:
                payload = protocol.take_frame(pending.buffer, pending.limit)
                if payload is None:
                    return
                self._frame(pending, payload, now)
        except (AuthenticationError, ProtocolError) as exc:
            self._refuse(pending, exc, now)
        except OSError as exc:
            self._refusals.refused(pending.peer, "lost", logging.INFO,
                                   f"{self.name}: {pending.who} failed: {exc}", now)
            self._drop(pending)

    def _ended(self, pending, now):
        got = len(pending.buffer)
        if got:
            error = ProtocolError(f"the connection ended after {got} bytes, before the frame "
                                  "was complete", "truncated")
        elif pending.stage == "proof":
            error = AuthenticationError("the connection ended after the challenge, before any "
                                        "proof: a wrong token (the client found the "
                                        "listener's proof wrong), or not a pymoult client")
        else:
            error = ProtocolError("the connection ended before any frame", "truncated")
        self._refuse(pending, error, now)

    def _frame(self, pending, payload, now):
        stage, token = pending.stage, self._token
        if stage == "first":
            first = protocol.decode_payload(payload)
            if first.get("op") != "hello":
                if token is None:
                    return self._ready(pending, protocol.validate_request(first))
                if "token" in first:
                    raise AuthenticationError("authentication failed: this listener takes no "
                                              "token in a request, only protocol 2's "
                                              "challenge-response (a client that sends its "
                                              "token is out of date)")
                raise AuthenticationError("authentication failed: this listener needs a token")
            client_nonce = protocol.read_hello(first)
            if token is not None:
                pending.session = protocol.Session(token, client_nonce,
                                                   os.urandom(protocol.NONCE_BYTES))
            data = protocol.encode_frame(protocol.challenge(pending.session))
            if pending.conn.send(data) != len(data):  # small: a socket buffer takes it whole
                raise OSError("could not send the challenge at once")
            return self._expect(pending, "request" if token is None else "proof", now)
        if stage == "proof":
            proof = protocol.decode_payload(payload)
            if not protocol.Session.matches(pending.session.client_proof(), proof.get("proof")):
                raise AuthenticationError("authentication failed: wrong token")
            pending.request_mac = proof.get("request_mac")
            return self._expect(pending, "request", now)
        if pending.session is not None and not protocol.Session.matches(
                pending.session.request_mac(payload), pending.request_mac):
            raise AuthenticationError("authentication failed: the request does not match the "
                                      "MAC sent with the proof (changed on the way?)")
        return self._ready(pending, protocol.validate_request(protocol.decode_payload(payload)))

    def _refuse(self, pending, error, now, failure=True):
        """Refuse ``pending`` with ``error``: logged (at most one line per peer and kind of
        refusal every ``log_interval`` s), then answered, after a delay growing with the
        peer's recent failures when it is one; meanwhile it holds no thread."""
        kind = type(error).__name__ + "/" + str(getattr(error, "reason", ""))
        quiet = isinstance(error, ProtocolError) and error.reason == "truncated" \
            and not pending.buffer and pending.stage == "first"  # a port probe, a health check
        self._refusals.refused(pending.peer, kind, logging.INFO if quiet else logging.WARNING,
                               f"{self.name}: refused {pending.who}: {error}", now)
        pending.reply = protocol.encode_frame(protocol.error_reply(type(error).__name__,
                                                                   str(error)))
        delay = 0.0
        if failure:
            self._failures.record(pending.peer, now)
            delay = self._failures.delay(pending.peer, now)
        try:
            self._selector.unregister(pending.conn)
        except (KeyError, ValueError, OSError):
            pass
        pending.stage, pending.deadline = "penalty", now + delay
        if not delay:
            self._send_refusal(pending, now)

    def _send_refusal(self, pending, now):
        try:
            pending.conn.send(pending.reply)
            pending.conn.shutdown(socket.SHUT_WR)
            self._selector.register(pending.conn, selectors.EVENT_READ, pending)
        except (OSError, ValueError):
            self._drop(pending)
            return
        pending.stage, pending.deadline = "closing", now + min(_LINGER, self.read_timeout)

    def _expire(self, now):
        for pending in list(self._pending):
            if pending.deadline is not None and now >= pending.deadline:
                if pending.stage == "penalty":
                    self._send_refusal(pending, now)
                elif pending.stage == "closing":
                    self._drop(pending)
                else:
                    self._refuse(pending, ProtocolError(pending.late, "timeout"), now)
            elif (self.idle_timeout is not None and pending.stage in _READING
                  and now - pending.last_byte >= self.idle_timeout):
                self._refuse(pending, ProtocolError(
                    f"no data for {self.idle_timeout} s in the middle of a frame", "timeout"),
                    now)
        self._refusals.flush(now)

    def _next_wait(self):
        due = [p.deadline for p in self._pending if p.deadline is not None]
        if self.idle_timeout is not None:
            due += [p.last_byte + self.idle_timeout for p in self._pending
                    if p.stage in _READING]
        flush = self._refusals.next_due()
        if flush is not None:
            due.append(flush)
        return None if not due else max(0.0, min(due) - time.monotonic())

    def _ready(self, pending, request):
        """The request has all arrived (after the proof and the MAC when there is a token): the
        connection leaves the unauthenticated ones and takes a slot to be served."""
        if not self._take_slot():
            return self._refuse(pending, ListenerBusyError(
                f"the listener is busy ({self.max_connections} connections in progress): "
                "retry later"), time.monotonic(), failure=False)
        self._drop_watch(pending)
        conn, who = pending.conn, pending.who
        handler = threading.Thread(target=self._serve,
                                   args=(conn, who, request, pending.session),
                                   name=f"{self.name} {who.split(' from')[0]}", daemon=True)
        with self._handlers_lock:
            self._handlers.add(handler)
        try:
            handler.start()
        except Exception:  # no thread to serve it (out of threads): drop it, keep listening
            logger.exception("%s: could not start a handler for %s; connection dropped",
                             self.name, who)
            with self._handlers_lock:
                self._handlers.discard(handler)
            self._release_slot()
            conn.close()
        return None

    def _drop_watch(self, pending):
        """Stop reading ``pending`` here (it goes to a handler thread), keeping it open."""
        with self._pending_changed:
            self._pending.pop(pending, None)
            self._pending_changed.notify_all()
        self._selector.unregister(pending.conn)
        pending.conn.setblocking(True)

    @property
    def pending(self):
        """The number of connections whose request has not all arrived (unauthenticated: they
        hold no slot of ``max_connections``, nor a thread)."""
        with self._pending_changed:
            return len(self._pending)

    def wait_pending(self, predicate, timeout=None):
        """Block until ``predicate(number of pending connections)`` is true; False after
        ``timeout`` s."""
        with self._pending_changed:
            return self._pending_changed.wait_for(lambda: predicate(len(self._pending)),
                                                  timeout)

    def _take_slot(self):
        with self._connections_changed:
            if self._connections >= self.max_connections:
                return False
            self._connections += 1
            self._connections_changed.notify_all()
            return True

    def _release_slot(self):
        with self._connections_changed:
            self._connections -= 1
            self._connections_changed.notify_all()

    # -- one connection, once its request has arrived ---------------------------------------

    def _serve(self, conn, who, request, session):
        try:
            reply = self._answer(conn, who, request)
            if reply is not None:
                try:
                    data = protocol.encode_frame(reply)
                    if session is not None:  # the reply's MAC: no impostor can forge an outcome
                        data += protocol.encode_frame({"mac": session.reply_mac(data[4:])})
                    conn.settimeout(self.read_timeout)
                    conn.sendall(data)
                    conn.shutdown(socket.SHUT_WR)
                    _drain(conn, min(_LINGER, self.read_timeout), self.max_size)
                except OSError as exc:
                    logger.warning("%s: could not reply to %s: %s", self.name, who, exc)
        except BaseException:  # nothing a client does may escape the handler
            logger.exception("%s: internal error serving %s", self.name, who)
        finally:
            conn.close()
            self._release_slot()
            with self._handlers_lock:
                self._handlers.discard(threading.current_thread())

    def _answer(self, conn, who, request):
        """The reply to the connection's request (None: no reply can be sent)."""
        op = request["op"]
        logger.info("%s: %s asks for %s", self.name, who, op)
        if op == "push":
            watch = _ClientWatch(conn, self._address.family == "tcp", self.max_size)
            reply = self._push(request, watch, who)
            if reply is None:
                logger.warning("%s: %s: the client %s while its push was served: no reply "
                               "sent; its updates go on (ask for status)", self.name, who,
                               watch.why)
            return reply
        if op == "status":
            return {"ok": True, "listener": self._describe(),
                    "managers": [_manager_status(m) for m in self._reported_managers()]}
        return {"ok": True, "managers": [
            {"name": m.name, "kind": type(m).__name__,
             "history": [record.as_dict() for record in m.history()],
             "forgotten": m.forgotten()}
            for m in self._reported_managers()]}

    def _describe(self):
        return {"name": self.name, "address": self.address,
                "applied_updates": list(self.applied_updates),
                "applied_total": self.applied_total, "scripts": running_scripts(),
                "connections": self.connections, "pending": self.pending}

    def _reported_managers(self):
        if self.manager is None:
            return live_managers()
        if isinstance(self.manager, str):
            found = fetch_manager(self.manager)
            return [] if found is None else [found]
        return [self.manager]

    def __repr__(self):
        state = "stopped" if self._closed else "serving" if self.is_alive() else "not started"
        return f"<Listener {self.name!r} {self.address} {state}>"


_READING = ("first", "proof", "request")


class _Pending:
    """A connection whose request has not all arrived, read by the listener's own thread:
    ``stage`` is the frame it waits for (``first``, ``proof``, ``request``), then ``penalty``
    (refused, the reply held back) and ``closing`` (replied, draining until it closes)."""

    __slots__ = ("conn", "who", "peer", "since", "last_byte", "buffer", "stage", "limit",
                 "deadline", "late", "session", "request_mac", "reply", "dropped")

    def __init__(self, conn, who, peer, now):
        self.conn, self.who, self.peer = conn, who, peer
        self.since = self.last_byte = now
        self.buffer = bytearray()
        self.stage, self.limit, self.deadline, self.late = None, 0, None, None
        self.session = self.request_mac = self.reply = None
        self.dropped = 0


def _peer_of(conn, address):
    """``(key, text, uid)`` of the peer of an accepted connection: the key its limits are
    counted by (the remote IP for TCP, the uid for a Unix socket), how the log names it
    (``127.0.0.1:50312``, ``uid 1000 pid 4242``) and its uid (None over TCP)."""
    if isinstance(address, tuple) and address:
        return ("ip", address[0]), f"{address[0]}:{address[1]}", None
    try:
        creds = protocol.peer_credentials(conn)
    except OSError:
        creds = None
    if creds is None:
        return ("unix",), "a Unix socket peer", None
    pid, uid, _ = creds
    return ("uid", uid), f"uid {uid} pid {pid}", uid


class _PeerFailures:
    """Recent failures (refusals) per peer, for the delay before the next refusal's reply:
    0.1 s after one failure in the last ``WINDOW`` s, doubling with each, at most ``limit``
    (0: no delay). Bounded: the last ``KEEP`` failures of at most ``PEERS`` peers."""

    WINDOW, KEEP, PEERS, FIRST = 60.0, 32, 1024, 0.1

    def __init__(self, limit):
        self.limit = limit
        self._times = {}

    def record(self, peer, now):
        times = self._times.pop(peer, None) or collections.deque(maxlen=self.KEEP)
        times.append(now)
        self._times[peer] = times  # most recent last
        while len(self._times) > self.PEERS:
            del self._times[next(iter(self._times))]

    def delay(self, peer, now):
        times = self._times.get(peer)
        if not self.limit or not times:
            return 0.0
        while times and now - times[0] > self.WINDOW:
            times.popleft()
        if not times:
            return 0.0
        return min(self.limit, self.FIRST * 2 ** min(len(times) - 1, 30))


class _RefusalLog:
    """Logs refusals, one line per peer and kind of refusal every ``interval`` s: the ones
    between are counted, and the count logged once the interval is over (``flush``)."""

    MAX_KEYS = 4096

    def __init__(self, name, interval):
        self.name, self.interval = name, interval
        self._seen = {}  # (peer, kind) -> [when logged, level, not logged since]

    def refused(self, peer, kind, level, line, now):
        key = (peer, kind)
        seen = self._seen.get(key)
        if seen is not None and now - seen[0] < self.interval:
            seen[2] += 1
            return
        if seen is not None and seen[2]:
            line += f" (and {seen[2]} more like it from this peer in {self.interval:g} s)"
        logger.log(level, "%s", line)
        self._seen.pop(key, None)
        self._seen[key] = [now, level, 0]
        while len(self._seen) > self.MAX_KEYS:
            del self._seen[next(iter(self._seen))]

    def flush(self, now):
        for (peer, kind), seen in list(self._seen.items()):
            if now - seen[0] < self.interval:
                continue
            if seen[2]:
                logger.log(seen[1], "%s: %d more refusals (%s) from %s in %g s not logged one "
                           "by one", self.name, seen[2], kind, " ".join(map(str, peer)),
                           self.interval)
                seen[0], seen[2] = now, 0
            else:
                del self._seen[(peer, kind)]

    def next_due(self):
        due = [seen[0] + self.interval for seen in self._seen.values() if seen[2]]
        return min(due, default=None)


class _ClientWatch:
    """Called while a push is served (``run_script``'s ``abandoned``): true once its client
    has gone, so that the handler stops waiting and frees its slot; ``why`` then says how.

    A Unix socket reports its peer's close as a hang-up (``POLLHUP``), distinct from a
    client that only shut down its sending side and still waits for the reply. TCP cannot
    tell those two apart without writing, so over TCP the end of the client's sending side
    counts as its departure (``pymoult.client`` keeps it open until the reply). Bytes sent
    after the request are read and dropped; more than ``limit`` of them also ends the wait.
    """

    def __init__(self, conn, tcp, limit):
        self._conn, self._tcp, self._limit = conn, tcp, limit
        self._poll = select.poll()
        self._poll.register(conn, select.POLLIN)
        self._dropped = 0
        self.why = None

    def __call__(self):
        for _, events in self._poll.poll(0):
            if events & (select.POLLHUP | select.POLLERR | select.POLLNVAL):
                self.why = "closed the connection"
                return True
            if not events & select.POLLIN:
                continue
            try:
                chunk = self._conn.recv(65536)
            except (BlockingIOError, InterruptedError, TimeoutError):
                continue
            except OSError as exc:
                self.why = f"lost the connection ({exc.strerror or exc})"
                return True
            if not chunk:
                if self._tcp:
                    self.why = "ended its side of the TCP connection (taken as gone)"
                    return True
                self._poll.modify(self._conn, 0)  # half-closed: only a hang-up matters now
                continue
            self._dropped += len(chunk)
            if self._dropped > self._limit:
                self.why = f"sent over {self._limit} bytes after its request"
                return True
        return False


def _manager_status(manager):
    current = manager.current_update
    return {"name": manager.name, "kind": type(manager).__name__,
            "current": None if current is None else _current_status(current),
            "pending": [{"name": u.name, "state": u.state.value} for u in manager.pending()],
            "statistics": manager.statistics()}


def _current_status(update):
    """What a manager's current update is doing, for ``status`` (read from another thread:
    each field is read once). ``tries``, ``max_tries`` and ``postponements`` count its attempts
    at alterability; while it waits for it, ``waited`` is how long this attempt has waited (s)
    and ``patience`` its budget (``timeout``, else ``max_tries`` x ``sleep_time``);
    ``progress`` is how far the mechanism working through objects got (``{"step", "done",
    "total"}``, the last one reported, or None)."""
    state = update.state
    began = update.times.get("setup")
    waiting = state is UpdateState.WAITING and began is not None
    timeout = update.timeout
    return {"name": update.name, "state": state.value, "tries": update.tries,
            "max_tries": update.max_tries, "postponements": update.postponements,
            "waited": round(time.monotonic() - began, 3) if waiting else None,
            "patience": timeout if timeout is not None else update.max_tries * update.sleep_time,
            "progress": update.journal.progress}


def _drain(conn, seconds, limit):
    """Read and drop what the client still sends, for at most ``seconds`` and ``limit`` bytes
    (so that closing does not reset the connection before the client read the reply)."""
    deadline = time.monotonic() + seconds
    dropped = 0
    try:
        while dropped <= limit:
            left = deadline - time.monotonic()
            if left <= 0:
                conn.setblocking(False)
            else:
                conn.settimeout(left)
            chunk = conn.recv(65536)
            if not chunk:
                return
            dropped += len(chunk)
    except (OSError, ValueError):
        return


def _remove_quietly(path):
    try:
        os.unlink(path)
    except OSError:
        pass


def _rmdir_quietly(path):
    try:
        os.rmdir(path)
    except OSError:
        pass


# -- the named-pipe listener --------------------------------------------------------------------

class PipeListener(_ScriptHost, threading.Thread):
    """Runs the update scripts written into named pipe ``path`` as frames (``pymoult.protocol``,
    ``push`` requests only). A pipe has no way back: each outcome is logged.

    The pipe is created with mode 0600 (an existing one is used only if it is a pipe of this
    user that nobody else can open). Write one frame at a time: frames from concurrent writers
    can interleave. Token and limits are as for :class:`Listener`; a frame that is not complete
    within ``read_timeout`` of the arrival of its first byte is dropped (each frame has its own
    deadline, also one that follows another in the same write: ``protocol.FrameBuffer``).
    """

    def __init__(self, path="fifopipe", *, name="Pymoult Pipe Listener", token=None,
                 token_file=None, max_size=protocol.MAX_FRAME, read_timeout=10.0,
                 idle_timeout=None):
        threading.Thread.__init__(self, name=name, daemon=True)
        self._setup(token, token_file, max_size, read_timeout, idle_timeout)
        self.path = os.path.abspath(os.fspath(path))
        self._created = False
        try:
            os.mkfifo(self.path, 0o600)
            self._created = True
        except FileExistsError:
            pass
        except OSError as exc:
            raise PymoultValueError(f"cannot create pipe {self.path!r}: {exc.strerror}") from None
        try:  # O_RDWR: opening does not wait for a writer, and the pipe never reads EOF
            self._fd = os.open(self.path, os.O_RDWR | os.O_NONBLOCK)
        except OSError as exc:
            raise PymoultValueError(f"cannot open pipe {self.path!r}: {exc.strerror}") from None
        info = os.fstat(self._fd)
        if (not stat.S_ISFIFO(info.st_mode) or info.st_uid != os.geteuid()
                or info.st_mode & 0o077):
            os.close(self._fd)
            raise PymoultValueError(
                f"{self.path!r} must be a named pipe owned by uid {os.geteuid()} with mode 0600 "
                f"(found mode {stat.S_IMODE(info.st_mode):04o}, uid {info.st_uid})")
        self._wake_r, self._wake_w = os.pipe()
        self._stopping = threading.Event()
        self._workers = []
        logger.info("%s: reading update scripts from pipe %s", self.name, self.path)

    @property
    def address(self):
        """The pipe as an address: ``"pipe:/path"`` (what ``pymoult push --to`` takes)."""
        return str(protocol.Address("pipe", path=self.path))

    def start(self):
        """Start reading the pipe; returns the listener (``get_app_listener()`` from now on)."""
        global _app_listener
        threading.Thread.start(self)
        _app_listener = self
        return self

    def stop(self, timeout=None):
        """Stop reading, close the pipe and remove it (if this listener created it), then wait up
        to ``timeout`` s for the scripts in progress. True once every thread has ended."""
        global _app_listener
        deadline = None if timeout is None else time.monotonic() + timeout
        if _app_listener is self:
            _app_listener = None
        self._stopping.set()
        try:
            os.write(self._wake_w, b"x")
        except OSError:
            pass
        if self.is_alive() and threading.current_thread() is not self:
            self.join(timeout)
        if not self.is_alive():
            for fd in (self._fd, self._wake_r, self._wake_w):
                try:
                    os.close(fd)
                except OSError:
                    pass
            self._fd = self._wake_r = self._wake_w = -1
            if self._created:
                _remove_quietly(self.path)
                self._created = False
        workers = list(self._workers)
        for worker in workers:
            worker.join(None if deadline is None else max(0.0, deadline - time.monotonic()))
        return not self.is_alive() and not any(w.is_alive() for w in workers)

    def run(self):
        selector = selectors.DefaultSelector()
        buffer = protocol.FrameBuffer(self.max_size, self.read_timeout)
        try:
            selector.register(self._fd, selectors.EVENT_READ)
            selector.register(self._wake_r, selectors.EVENT_READ)
            while not self._stopping.is_set():
                wait = None
                if buffer.deadline is not None:
                    wait = max(0.0, buffer.deadline - time.monotonic())
                    if self.idle_timeout is not None:
                        wait = min(wait, self.idle_timeout)
                events = selector.select(wait)
                if any(key.fd == self._wake_r for key, _ in events):
                    return
                if not events:
                    logger.warning("%s: dropped an incomplete frame (%d bytes) after a stall",
                                   self.name, len(buffer))
                    buffer.clear()
                    continue
                try:
                    chunk = os.read(self._fd, 65536)
                except (BlockingIOError, InterruptedError):
                    continue
                buffer.feed(chunk, time.monotonic())
                try:
                    for payload in buffer.frames():
                        self._handle_frame(payload)
                except ProtocolError as exc:  # too large: the rest is that frame's, or garbage
                    self._discard_available()
                    logger.warning("%s: %s: dropped it and what followed it", self.name, exc)
        except BaseException:  # nothing may escape the listener's thread
            if not self._stopping.is_set():
                logger.exception("%s: the pipe listener failed", self.name)
        finally:
            selector.close()

    def _discard_available(self):
        try:
            while os.read(self._fd, 65536):
                pass
        except OSError:
            pass

    def _handle_frame(self, payload):
        try:
            message = protocol.decode_payload(payload)
            self._authenticate(message)
            request = protocol.validate_request(message)
            if request["op"] != "push":
                raise ProtocolError(f"a pipe takes push requests only (no reply can be sent), "
                                    f"got {request['op']!r}", "bad_request")
        except (AuthenticationError, ProtocolError) as exc:
            logger.warning("%s: refused a frame: %s", self.name, exc)
            return
        worker = threading.Thread(target=self._push, args=(request,), daemon=True,
                                  name=f"{self.name} push")
        self._workers = [w for w in self._workers if w.is_alive()] + [worker]
        worker.start()

    def __repr__(self):
        return f"<PipeListener {self.name!r} {self.path}>"

