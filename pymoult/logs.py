"""The original Pymoult's logging functions, routed through the ``pymoult`` logger.

The original wrote its messages with ``log(level, message)`` at three levels (0 the
application's, 1 errors, 2 everything), chose which to show with ``set_loglevel`` and sent them
to a file with ``set_logpath``. Here they are ``logging`` calls on the ``pymoult`` logger, so a
deployment configures them as any other log; ``pymoult run`` shows them (``--log-level``,
``--log-file``). They were the original's ``pymoult.highlevel.listener`` functions, and are
still importable from there.
"""

from __future__ import annotations

import logging
import os
import threading

from .errors import PymoultTypeError, PymoultValueError

__all__ = ["log", "set_loglevel", "set_logpath", "LOG_LEVELS", "LOG_FILE_FORMAT"]

logger = logging.getLogger("pymoult")

#: The original's levels (0 application, 1 errors, 2 everything) as ``logging`` levels. A message
#: of level L is shown when L <= the level set; Pymoult's own warnings and errors show at every
#: level.
LOG_LEVELS = {0: logging.WARNING, 1: logging.INFO, 2: logging.DEBUG}
#: The format of the ``pymoult`` log in a file (``set_logpath``, ``pymoult run --log-file``):
#: read afterwards, so each line says when, how serious and in which thread.
LOG_FILE_FORMAT = "%(asctime)s %(levelname)s [%(threadName)s] %(message)s"
_file_handler: logging.FileHandler | None = None
_log_lock = threading.Lock()


def _logging_level(level: int) -> int:
    if isinstance(level, bool) or not isinstance(level, int):
        raise PymoultTypeError(f"a log level must be 0, 1 or 2, got {level!r}")
    if level not in LOG_LEVELS:
        raise PymoultValueError(f"a log level must be 0 (application), 1 (errors) or 2 "
                                f"(everything), got {level!r}")
    return LOG_LEVELS[level]


def log(level: int, message: object) -> None:
    """Log ``message`` through the ``pymoult`` logger at the original's ``level`` (0
    application, 1 errors, 2 everything: WARNING, INFO, DEBUG). The record carries that level
    as ``record.original_level`` (``pymoult run`` shows such lines as the application's own)."""
    logger.log(_logging_level(level), "%s", message, extra={"original_level": level})


def set_loglevel(level: int) -> None:
    """Show messages of the original's ``level`` and below: sets the ``pymoult`` logger's
    level (0: WARNING, 1: INFO, 2: DEBUG)."""
    logger.setLevel(_logging_level(level))


def set_logpath(path: str | os.PathLike[str] | None) -> logging.FileHandler | None:
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
