"""The applications this user runs under ``pymoult run``, and where each listens.

Each runtime with a listener registers itself (:func:`register`) in a per-user directory that
nobody else can enter: ``$XDG_RUNTIME_DIR/pymoult`` when that runtime directory is private,
else ``pymoult-<uid>`` in the temporary directory (created 0700; refused when it exists and
belongs to another user or is open to others). One file per process, ``<pid>.json``: its pid,
listener address, application and start time, written to a temporary name and renamed, and
removed when the runtime ends (a normal exit, Ctrl-C, SIGTERM or SIGHUP). :func:`running`
lists them, dropping the files of processes gone without cleaning up (killed); ``pymoult ps``
shows them, and ``--to PID`` finds an application's address by its pid (:func:`address_of`).
"""

from __future__ import annotations

import contextlib
import json
import os
import stat
import tempfile
import time
from collections.abc import Callable
from typing import Any, Literal, overload

from .errors import PymoultValueError

__all__ = ["register", "running", "address_of", "registry_directory"]


@overload
def registry_directory(create: Literal[True]) -> str: ...
@overload
def registry_directory(create: bool = False) -> str | None: ...


def registry_directory(create: bool = False) -> str | None:
    """The per-user directory (see the module notes); None when it does not exist and
    ``create`` is false. ``PymoultValueError`` when it is not private to this user."""
    base = os.environ.get("XDG_RUNTIME_DIR")
    if base and _private(base):
        path = os.path.join(base, "pymoult")
    else:
        path = os.path.join(tempfile.gettempdir(), f"pymoult-{os.geteuid()}")
    if create:
        with contextlib.suppress(FileExistsError):
            os.mkdir(path, 0o700)
    try:
        info = os.lstat(path)
    except FileNotFoundError:
        if create:  # removed since mkdir: say so rather than return a path that is not there
            raise
        return None
    if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.geteuid() or info.st_mode & 0o077:
        raise PymoultValueError(f"{path} is not a private directory of this user (it must be a "
                                f"directory of uid {os.geteuid()} with mode 0700): remove it")
    return path


def _private(path: str) -> bool:
    try:
        info = os.stat(path)
    except OSError:
        return False
    return stat.S_ISDIR(info.st_mode) and info.st_uid == os.geteuid() \
        and not info.st_mode & 0o077


def register(address: str, application: str) -> Callable[[], None]:
    """Record this process as running ``application`` (text) with its listener at ``address``;
    returns a function that removes the record (call it once the listener has stopped)."""
    directory = registry_directory(create=True)
    pid = os.getpid()
    path = os.path.join(directory, f"{pid}.json")
    record = {"pid": pid, "address": address, "application": application,
              "started": time.time()}
    tmp = os.path.join(directory, f".{pid}.{os.urandom(6).hex()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    with os.fdopen(fd, "w") as out:
        json.dump(record, out)
    os.rename(tmp, path)

    def unregister() -> None:
        with contextlib.suppress(OSError):
            with open(path, encoding="utf-8") as current:
                if json.load(current).get("address") != address:
                    return  # a later process of the same pid registered since
            os.unlink(path)

    return unregister


def running() -> list[dict[str, Any]]:
    """The records of this user's running applications, oldest first: ``{"pid", "address",
    "application", "started"}`` each. Records of processes that no longer exist are removed."""
    directory = registry_directory()
    if directory is None:
        return []
    records: list[dict[str, Any]] = []
    for name in os.listdir(directory):
        if not name.endswith(".json") or not name[:-5].isdigit():
            continue
        path = os.path.join(directory, name)
        try:
            with open(path, encoding="utf-8") as source:
                record = json.load(source)
        except (OSError, ValueError):
            continue
        if not _alive(int(name[:-5])) or not _socket_present(record.get("address")):
            with contextlib.suppress(OSError):
                os.unlink(path)
            continue
        records.append(record)
    return sorted(records, key=lambda r: r.get("started", 0))


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # it exists (another user's process reusing the pid: its file is stale,
        # but only its owner could tell; leave it)
    return True


def _socket_present(address: object) -> bool:
    """False for a Unix socket address whose file is gone (its process ended, or the pid
    was reused since); True otherwise."""
    if not isinstance(address, str):
        return False
    if address.startswith("unix:"):
        return os.path.exists(address[len("unix:"):])
    return True


def address_of(pid: int) -> str:
    """The listener address of this user's ``pymoult run`` process ``pid``;
    ``PymoultValueError`` when there is none."""
    for record in running():
        if record.get("pid") == pid:
            return record["address"]
    raise PymoultValueError(f"no running application with pid {pid} (pymoult ps lists them; "
                            "an application started with --no-listen has no address)")
