"""The named-pipe listener: update scripts written into a pipe, one frame each, no reply.

:class:`PipeListener` is the original Pymoult's second way in. A pipe has no way back, so it
takes ``push`` requests only, with protocol 1's token in the frame when it has one
(``pymoult.delivery.authentication``), and each outcome goes to the ``pymoult`` log.
"""

from __future__ import annotations

import contextlib
import logging
import os
import selectors
import stat
import threading
import time

from .. import protocol
from ..errors import AuthenticationError, ProtocolError, PymoultValueError
from .script_host import ScriptHost

__all__ = ["PipeListener"]

logger = logging.getLogger("pymoult")


class PipeListener(ScriptHost, threading.Thread):
    """Runs the update scripts written into named pipe ``path`` as frames (``pymoult.protocol``,
    ``push`` requests only). A pipe has no way back: each outcome is logged.

    The pipe is created with mode 0600 (an existing one is used only if it is a pipe of this
    user that nobody else can open). Write one frame at a time: frames from concurrent writers
    can interleave. Token and limits are as for :class:`Listener`; a frame that is not complete
    within ``read_timeout`` of the arrival of its first byte is dropped (each frame has its own
    deadline, also one that follows another in the same write: ``protocol.FrameBuffer``).
    """

    def __init__(self, path: str | os.PathLike[str] = "fifopipe", *,
                 name: str = "Pymoult Pipe Listener", token: str | None = None,
                 token_file: str | os.PathLike[str] | None = None,
                 max_size: int = protocol.MAX_FRAME, read_timeout: float = 10.0,
                 idle_timeout: float | None = None) -> None:
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
        self._workers: list[threading.Thread] = []
        logger.info("%s: reading update scripts from pipe %s", self.name, self.path)

    @property
    def address(self) -> str:
        """The pipe as an address: ``"pipe:/path"`` (what ``pymoult push --to`` takes)."""
        return str(protocol.Address("pipe", path=self.path))

    def start(self) -> PipeListener:  # type: ignore[override]  # returns self, to chain
        """Start reading the pipe; returns the listener (``get_app_listener()`` from now on)."""
        threading.Thread.start(self)
        self._serving()
        return self

    def stop(self, timeout: float | None = None) -> bool:
        """Stop reading, close the pipe and remove it (if this listener created it), then wait up
        to ``timeout`` s for the scripts in progress. True once every thread has ended."""
        deadline = None if timeout is None else time.monotonic() + timeout
        self._not_serving()
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
                with contextlib.suppress(OSError):
                    os.unlink(self.path)
                self._created = False
        workers = list(self._workers)
        for worker in workers:
            worker.join(None if deadline is None else max(0.0, deadline - time.monotonic()))
        return not self.is_alive() and not any(w.is_alive() for w in workers)

    def run(self) -> None:
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

    def _discard_available(self) -> None:
        try:
            while os.read(self._fd, 65536):
                pass
        except OSError:
            pass

    def _handle_frame(self, payload: bytes) -> None:
        try:
            message = protocol.decode_payload(payload)
            self._authenticate(message)
            request = protocol.validate_request(message)
            if request["op"] != "push":
                raise ProtocolError(f"a pipe takes push requests only (no reply can be sent), "
                                    f"got {request['op']!r}", "bad_request")
            if request["two_phase"]:
                raise ProtocolError("a two-phase push needs a reply (its transaction), and a "
                                    "pipe carries none", "bad_request")
        except (AuthenticationError, ProtocolError) as exc:
            logger.warning("%s: refused a frame: %s", self.name, exc)
            return
        worker = threading.Thread(target=self._push, args=(request,), daemon=True,
                                  name=f"{self.name} push")
        self._workers = [w for w in self._workers if w.is_alive()] + [worker]
        worker.start()

    def __repr__(self) -> str:

        return f"<PipeListener {self.name!r} {self.path}>"
