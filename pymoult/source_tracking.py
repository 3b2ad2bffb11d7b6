"""Source tracking: the text each module was imported from, so that an update can be computed
after its file was edited in place (or installed over).

A :class:`~pymoult.highlevel.updates.ModuleUpdate` needs the source a module *runs* to know what
a new version changes. The file on disk stops being that source the moment it is edited, which
is exactly when a user asks for the update. :func:`track_sources` hooks the import system
(``SourceFileLoader.get_code``, which every ``.py`` module goes through, from its ``.pyc`` or
not): for each module imported from then on it keeps the source file's bytes as they were at the
import, keyed by file path; a background thread compresses them (zlib, level 1) once imports
have been quiet for ``QUIET`` seconds, so that the imports themselves only read the files.
Measured by ``benchmarks/bench_source_tracking.py`` (importing hypothesis and IPython, 257
modules): compressing at import added 26 % to the import time, recording as done here 5 %
(1.053x, median of 15 alternating pairs, 3.11); the 4.8 MB of source are kept in 1.6 MB once
compressed. :func:`statistics` says what is held. ``pymoult run`` turns it on before the
application starts, so the whole application, site-packages included, is tracked; a library
user calls ``pymoult.track_sources()`` before importing their modules.
A module imported again (``importlib.reload``) is recorded anew.

A file changed between the moment the import read or checked it and the moment it is recorded
here (a race with an editor) is not recorded: the module is then treated as untracked, and its
file is checked against its live code instead (``source_diff.version_of``).
"""

from __future__ import annotations

import importlib.machinery
import importlib.util
import os
import threading
import time
import types
import zlib
from collections.abc import Callable
from typing import Optional, TypedDict

from .errors import PymoultTypeError

__all__ = ["track_sources", "stop_tracking", "is_tracking", "tracked_source", "record_source",
           "statistics"]

#: ``include(name, path)``: whether to record module ``name`` loaded from ``path``.
Include = Callable[[str, str], bool]
#: (module name, bytes (compressed or not), source size, compressed)
_Record = tuple[str, bytes, int, bool]


class _State(TypedDict):
    filter: Optional[Include]
    tracking: bool


_lock = threading.Lock()
_records: dict[str, _Record] = {}  # absolute path -> its record
_to_compress: list[str] = []  # paths whose record holds raw bytes
_compress_wanted = threading.Event()
_compressor: threading.Thread | None = None
_last_record = [0.0]  # time.monotonic() of the newest record
#: Seconds without a new record before the background thread compresses the pending ones: a
#: start-up importing hundreds of modules is not slowed down by compression.
QUIET = 0.5
_state: _State = {"filter": None, "tracking": False}
#: The import system's own get_code, wrapped while tracking.
_BASE_GET_CODE = importlib.machinery.SourceFileLoader.get_code


def _recorded_get_code(self: importlib.machinery.SourceFileLoader,
                       fullname: str) -> types.CodeType | None:
    if not _state["tracking"]:
        return _BASE_GET_CODE(self, fullname)
    try:
        path = os.path.abspath(self.get_filename(fullname))
        wanted = _state["filter"]
        before = os.stat(path) if wanted is None or wanted(fullname, path) else None
    except Exception:  # recording must never break an import
        before = None
    code = _BASE_GET_CODE(self, fullname)
    if before is not None:
        try:
            _record(self, fullname, path, before)
        except Exception:
            pass
    return code


def _record(loader: importlib.machinery.SourceFileLoader, fullname: str, path: str,
            before: os.stat_result) -> None:
    """Keep the file's bytes if it did not change from before the import to after our read."""
    data = loader.get_data(path)
    after = os.stat(path)
    with _lock:
        if (before.st_mtime_ns, before.st_size) != (after.st_mtime_ns, after.st_size) \
                or len(data) != after.st_size:
            _records.pop(path, None)  # changed meanwhile: not trustworthy
            return
        _store_locked(fullname, path, data)


def _store_locked(name: str, path: str, data: bytes) -> None:
    """Keep ``data`` raw for now; the compressor thread compresses it soon (lock held)."""
    global _compressor
    _records[path] = (name, data, len(data), False)
    _to_compress.append(path)
    _last_record[0] = time.monotonic()
    if _compressor is None:
        compressor = threading.Thread(target=_compress_forever, name="pymoult source records",
                                      daemon=True)
        _compressor = compressor
        compressor.start()
    if len(_to_compress) == 1:  # the thread is idle: wake it (once, not per record)
        _compress_wanted.set()


def _compress_forever() -> None:
    while True:
        _compress_wanted.wait()
        _compress_wanted.clear()
        while True:  # imports still coming: let them run first
            quiet_for = time.monotonic() - _last_record[0]
            if quiet_for >= QUIET:
                break
            time.sleep(QUIET - quiet_for)
        with _lock:
            _compress_wanted.clear()
            paths, _to_compress[:] = list(_to_compress), []
        for path in paths:
            with _lock:
                record = _records.get(path)
            if record is None or record[3]:
                continue
            packed = zlib.compress(record[1], 1)  # without the GIL: imports go on meanwhile
            with _lock:
                if _records.get(path) is record:
                    _records[path] = (record[0], packed, record[2], True)


def record_source(name: str, path: str | os.PathLike[str], data: bytes | bytearray) -> None:
    """Record ``data`` (bytes) as the source module ``name`` was loaded from ``path``, if sources
    are tracked (the runtime calls it for the application's script, which is not imported)."""
    if not _state["tracking"]:
        return
    where = os.path.abspath(path)
    wanted = _state["filter"]
    if wanted is not None and not wanted(name, where):
        return
    with _lock:
        _store_locked(name, where, bytes(data))


def track_sources(include: Include | None = None) -> None:
    """Record the source of every module imported from now on (see the module notes).

    ``include(name, path)``, if given, says which modules to record (the others are not).
    Calling it again replaces the filter; modules recorded before stay recorded.
    """
    if include is not None and not callable(include):
        raise PymoultTypeError(f"include must be a callable (name, path) -> bool, got {include!r}")
    with _lock:
        _state["filter"] = include
        _state["tracking"] = True
        # The import system's own method, wrapped: this is how the imports are seen (typeshed
        # declares it on SourceLoader, the base class, hence the narrower ``self`` here).
        loader = importlib.machinery.SourceFileLoader
        loader.get_code = _recorded_get_code  # type: ignore[method-assign,assignment]


def stop_tracking(forget: bool = False) -> None:
    """Record no more modules (and, with ``forget``, drop the records kept so far)."""
    with _lock:
        _state["tracking"] = False
        if importlib.machinery.SourceFileLoader.get_code is _recorded_get_code:
            loader = importlib.machinery.SourceFileLoader
            loader.get_code = _BASE_GET_CODE  # type: ignore[method-assign]  # its own, back
        if forget:
            _records.clear()


def is_tracking() -> bool:
    """True while imports are recorded."""
    return _state["tracking"]


def tracked_source(module: types.ModuleType) -> str | None:
    """The source text ``module`` was imported from, or None when it was not recorded (imported
    before tracking began, not from a ``.py`` file, filtered out, or read in a race)."""
    spec = getattr(module, "__spec__", None)
    path = getattr(spec, "origin", None) or getattr(module, "__file__", None)
    if not isinstance(path, str):
        return None
    with _lock:
        record = _records.get(os.path.abspath(path))
    if record is None or record[0] != getattr(module, "__name__", None):
        return None
    data = zlib.decompress(record[1]) if record[3] else record[1]
    return importlib.util.decode_source(data)


def statistics() -> dict[str, int]:
    """``{"modules", "source_bytes", "stored_bytes"}``: what tracking holds in memory (a record
    not compressed yet counts at its full size)."""
    with _lock:
        records = list(_records.values())
    return {"modules": len(records), "source_bytes": sum(r[2] for r in records),
            "stored_bytes": sum(len(r[1]) for r in records)}
