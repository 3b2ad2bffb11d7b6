"""Source tracking: the text each module was imported from, so that an update can be computed
after its file was edited in place (or installed over).

A :class:`~pymoult.highlevel.updates.ModuleUpdate` needs the source a module *runs* to know what
a new version changes. The file on disk stops being that source the moment it is edited, which
is exactly when a user asks for the update. :func:`track_sources` hooks the import system's
``SourceFileLoader`` (which every ``.py`` module goes through, from its ``.pyc`` or not) for each
module imported from then on, and keeps the source it runs, keyed by file path:

- a module compiled at its import (no valid ``.pyc``) is recorded with the very bytes that were
  compiled (``source_to_code`` sees them), at no cost but keeping them;
- a module loaded from its ``.pyc`` was checked against its file's ``os.stat`` (``path_stats``,
  which the import calls anyway): that stat is kept, and the file is read later, off the import
  path, by a background thread, and kept only if its stat is still the same;
- the background thread also compresses the records (zlib, level 1). It starts once imports have
  been quiet for ``QUIET`` seconds (or ``MAX_DELAY`` after the oldest waiting record, if they never
  are), so that a start-up importing hundreds of modules is not slowed down by it.

Measured by ``benchmarks/bench_source_tracking.py`` (importing hypothesis and IPython, about 250
modules, each side in fresh interpreters, alternating): the import time with tracking on over
off, the CPU time the background thread spends afterwards, and the memory, about 0.3 MB kept per
MB of source. :func:`statistics` says what is held. ``pymoult run`` turns tracking on before the
application starts, so the whole application, site-packages included, is tracked; a library user
calls ``pymoult.track_sources()`` before importing their modules. A module imported again
(``importlib.reload``) is recorded anew.

A ``.py`` file found changed when its bytes are read (an editor, or an install, wrote it between
the import and that moment: at most ``MAX_DELAY`` seconds after the import, or at the first update
of the module if that comes first) is not recorded: the module is then treated as untracked, and
its file is checked against its live code instead (``source_diff.version_of``). The check is the
file's modification time (to the nanosecond) and size: a rewrite within the file system's time
resolution that keeps the size is not seen, as for CPython's own ``.pyc`` check.
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
from typing import Any, NamedTuple, Optional, TypedDict

from .errors import PymoultTypeError

__all__ = ["track_sources", "stop_tracking", "is_tracking", "tracked_source", "record_source",
           "statistics", "flush"]

#: ``include(name, path)``: whether to record module ``name`` loaded from ``path``.
Include = Callable[[str, str], bool]

#: What a record holds: the source bytes, the same compressed, or nothing yet (read later).
RAW, COMPRESSED, UNREAD = "raw", "compressed", "unread"


class _Record(NamedTuple):
    name: str  # the module's
    data: bytes | None  # the source (RAW), compressed (COMPRESSED), or None (UNREAD)
    size: int  # of the source
    state: str
    stamp: tuple[int, int] | None  # UNREAD: (st_mtime_ns, st_size) the import checked


class _State(TypedDict):
    filter: Optional[Include]
    tracking: bool


_lock = threading.Lock()
_records: dict[str, _Record] = {}  # absolute path -> its record
_to_settle: list[str] = []  # paths whose record is to be read or compressed
_settle_wanted = threading.Event()
_settler: threading.Thread | None = None
_last_record = [0.0, 0.0]  # time.monotonic() of the newest record, of the oldest waiting one
#: Seconds without a new record before the background thread reads and compresses the waiting
#: ones: a start-up importing hundreds of modules is not slowed down by it.
QUIET = 0.5
#: ... but a record waits at most this long (the longer it waits, the likelier its file changed).
MAX_DELAY = 2.0
_state: _State = {"filter": None, "tracking": False}
# What the current imports have seen, by source path: the stat their .pyc was checked against
# (``path_stats``), the bytes they compiled (``source_to_code``). Taken by ``get_code``.
_import_stats: dict[str, os.stat_result] = {}
_compiled: dict[str, bytes] = {}
#: The import system's own methods, wrapped while tracking.
_BASE_GET_CODE = importlib.machinery.SourceFileLoader.get_code
_BASE_PATH_STATS = importlib.machinery.SourceFileLoader.path_stats
_BASE_SOURCE_TO_CODE = importlib.machinery.SourceFileLoader.source_to_code


def _recorded_get_code(self: importlib.machinery.SourceFileLoader,
                       fullname: str) -> types.CodeType | None:
    if not _state["tracking"]:
        return _BASE_GET_CODE(self, fullname)
    path = self.path
    try:
        code = _BASE_GET_CODE(self, fullname)
    except BaseException:
        _import_stats.pop(path, None)
        _compiled.pop(path, None)
        raise
    try:
        _note_import(fullname, path)
    except Exception:  # recording must never break an import
        pass
    return code


def _recorded_path_stats(self: importlib.machinery.SourceFileLoader,
                         path: str) -> dict[str, Any]:
    """The import system's own ``path_stats`` (one ``os.stat``), keeping the stat."""
    st = os.stat(path)
    if _state["tracking"]:
        _import_stats[path] = st
    return {"mtime": st.st_mtime, "size": st.st_size}


def _recorded_source_to_code(self: importlib.machinery.SourceFileLoader, data: Any, path: Any,
                             *args: Any, **kwargs: Any) -> types.CodeType:
    if _state["tracking"] and isinstance(data, bytes) and isinstance(path, str):
        _compiled[path] = data
    return _BASE_SOURCE_TO_CODE(self, data, path, *args, **kwargs)


def _note_import(name: str, path: str) -> None:
    """Record module ``name``, just imported from ``path``, from what its import saw."""
    data = _compiled.pop(path, None)
    stat = _import_stats.pop(path, None)
    where = path if os.path.isabs(path) else os.path.abspath(path)
    wanted = _state["filter"]
    if wanted is not None and not wanted(name, where):
        return
    if data is not None:  # compiled at this import: these very bytes run
        record = _Record(name, data, len(data), RAW, None)
    else:  # from its .pyc: read the file later, if it is still what the import checked
        if stat is None:  # a hash-based .pyc: no stat was taken
            stat = os.stat(path)
        record = _Record(name, None, stat.st_size, UNREAD, (stat.st_mtime_ns, stat.st_size))
    with _lock:
        _store_locked(where, record)


def _read_unchanged(path: str, stamp: tuple[int, int]) -> bytes | None:
    """The file's bytes if its stat is still ``stamp``, else None."""
    try:
        with open(path, "rb") as file:
            data = file.read()
            after = os.fstat(file.fileno())
    except OSError:
        return None
    if (after.st_mtime_ns, after.st_size) != stamp or len(data) != stamp[1]:
        return None
    return data


def _store_locked(path: str, record: _Record) -> None:
    """Keep ``record``; the background thread reads or compresses it soon (lock held)."""
    global _settler
    _records[path] = record
    now = time.monotonic()
    _last_record[0] = now
    _to_settle.append(path)
    if _settler is None:
        settler = threading.Thread(target=_settle_forever, name="pymoult source records",
                                   daemon=True)
        _settler = settler
        settler.start()
    if len(_to_settle) == 1:  # the thread is idle: wake it (once, not per record)
        _last_record[1] = now
        _settle_wanted.set()


def _settle_forever() -> None:
    while True:
        _settle_wanted.wait()
        _settle_wanted.clear()
        while True:  # imports still coming: let them run first
            now = time.monotonic()
            wait = min(QUIET - (now - _last_record[0]), MAX_DELAY - (now - _last_record[1]))
            if wait <= 0:
                break
            if _settle_wanted.wait(wait):  # woken early (flush): look again
                _settle_wanted.clear()
        with _lock:
            paths, _to_settle[:] = list(_to_settle), []
        for path in paths:
            _settle(path, compress=True)


def _settle(path: str, compress: bool) -> _Record | None:
    """Read the record of ``path`` if it is UNREAD (dropping it if its file changed), compress it
    if asked; return it as it is then (None if there is none)."""
    with _lock:
        record = _records.get(path)
    if record is None or record.state == COMPRESSED:
        return record
    settled = record
    if record.state == UNREAD:
        assert record.stamp is not None
        data = _read_unchanged(path, record.stamp)  # without the GIL: imports go on meanwhile
        if data is None:  # changed since the import: not trustworthy
            with _lock:
                if _records.get(path) is record:
                    del _records[path]
            return None
        settled = record._replace(data=data, state=RAW, stamp=None)
    if compress:
        assert settled.data is not None
        settled = settled._replace(data=zlib.compress(settled.data, 1), state=COMPRESSED)
    with _lock:
        if _records.get(path) is not record:  # recorded anew meanwhile: that one stands
            return _records.get(path)
        _records[path] = settled
    return settled


def flush() -> None:
    """Read and compress every record still waiting, now, in the calling thread (the background
    thread does it on its own once imports are quiet; this is for a caller that wants it done,
    before measuring memory say)."""
    with _lock:
        paths, _to_settle[:] = list(_to_settle), []
    for path in paths:
        _settle(path, compress=True)
    _settle_wanted.set()  # the background thread looks again (at nothing, or newer records)


def record_source(name: str, path: str | os.PathLike[str], data: bytes | bytearray) -> None:
    """Record ``data`` (bytes) as the source module ``name`` was loaded from ``path``, if sources
    are tracked (the runtime calls it for the application's script, which is not imported)."""
    if not _state["tracking"]:
        return
    where = os.path.abspath(path)
    wanted = _state["filter"]
    if wanted is not None and not wanted(name, where):
        return
    data = bytes(data)
    with _lock:
        _store_locked(where, _Record(name, data, len(data), RAW, None))


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
        loader.path_stats = _recorded_path_stats  # type: ignore[method-assign]
        loader.source_to_code = _recorded_source_to_code  # type: ignore[method-assign,assignment]


def stop_tracking(forget: bool = False) -> None:
    """Record no more modules (and, with ``forget``, drop the records kept so far)."""
    with _lock:
        _state["tracking"] = False
        if importlib.machinery.SourceFileLoader.get_code is _recorded_get_code:
            loader = importlib.machinery.SourceFileLoader
            loader.get_code = _BASE_GET_CODE  # type: ignore[method-assign]  # its own, back
            loader.path_stats = _BASE_PATH_STATS  # type: ignore[method-assign]
            loader.source_to_code = _BASE_SOURCE_TO_CODE  # type: ignore[method-assign]
        _import_stats.clear()
        _compiled.clear()
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
    record = _settle(os.path.abspath(path), compress=False)  # an UNREAD one is read now
    if record is None or record.name != getattr(module, "__name__", None):
        return None
    assert record.data is not None
    data = zlib.decompress(record.data) if record.state == COMPRESSED else record.data
    return importlib.util.decode_source(data)


def statistics() -> dict[str, int]:
    """``{"modules", "source_bytes", "stored_bytes", "unread"}``: what tracking holds in memory
    (a record not compressed yet counts at its full size), and how many modules loaded from
    their ``.pyc`` are still to be read (they hold nothing yet)."""
    with _lock:
        records = list(_records.values())
    return {"modules": len(records), "source_bytes": sum(r.size for r in records),
            "stored_bytes": sum(len(r.data) for r in records if r.data is not None),
            "unread": sum(r.state == UNREAD for r in records)}
