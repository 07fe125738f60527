"""The LMDB environment: transactions, automatic map growth, and lmdb error translation.

LMDB needs every transaction of this process closed while the map is resized,
so reads enter a shared gate that a resize takes exclusively. Writes are
serialised by one lock; a write that hits MapFullError grows the map and runs
again (it was rolled back, so nothing is half-written).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import logging
import os
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar

import lmdb

from memosd.errors import (
    CorruptDataError,
    FailedPreconditionError,
    MemosError,
    ResourceExhaustedError,
)

log = logging.getLogger(__name__)

T = TypeVar("T")

SUB_DATABASES = (
    "meta",
    "cubes",
    "cube_names",
    "ids",
    "heads",
    "members",
    "versions",
    "vectors",
    "blobs",
    "audit",
    "expiry",
    "access",
)
# Grow when the map is this full, before a write can fail.
GROW_AT = 0.8


class _Gate:
    """Many readers or one resizer."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._readers = 0
        self._resizing = False

    @contextlib.contextmanager
    def shared(self) -> Iterator[None]:
        with self._cond:
            self._cond.wait_for(lambda: not self._resizing)
            self._readers += 1
        try:
            yield
        finally:
            with self._cond:
                self._readers -= 1
                self._cond.notify_all()

    @contextlib.contextmanager
    def exclusive(self) -> Iterator[None]:
        with self._cond:
            self._cond.wait_for(lambda: not self._resizing)
            self._resizing = True
            self._cond.wait_for(lambda: self._readers == 0)
        try:
            yield
        finally:
            with self._cond:
                self._resizing = False
                self._cond.notify_all()


def translate(exc: lmdb.Error) -> MemosError:
    """The memosd error for an lmdb error."""
    if isinstance(exc, lmdb.MapFullError | lmdb.ReadersFullError | lmdb.TxnFullError):
        return ResourceExhaustedError(f"store: {exc}")
    if isinstance(exc, lmdb.DiskError) or getattr(exc, "errno", None) == errno.ENOSPC:
        return ResourceExhaustedError(f"store: disk: {exc}")
    if isinstance(
        exc,
        lmdb.CorruptedError
        | lmdb.PageNotFoundError
        | lmdb.InvalidError
        | lmdb.VersionMismatchError,
    ):
        return CorruptDataError(f"store: {exc}")
    return MemosError(f"store: {exc}")


class Environment:
    """One LMDB environment in a directory, locked against other processes."""

    def __init__(self, path: Path, map_size: int) -> None:
        path.mkdir(parents=True, exist_ok=True)
        self._lock_file = _lock_directory(path)
        try:
            self._env = lmdb.open(
                str(path),
                map_size=map_size,
                max_dbs=len(SUB_DATABASES),
                max_readers=512,
                readahead=False,
            )
            self.dbs = {name: self._env.open_db(name.encode()) for name in SUB_DATABASES}
        except lmdb.Error as exc:
            os.close(self._lock_file)
            raise translate(exc) from exc
        self._gate = _Gate()
        self._write_lock = threading.RLock()
        self.path = path

    @contextlib.contextmanager
    def read(self) -> Iterator[lmdb.Transaction[bytes]]:
        with self._gate.shared():
            try:
                with self._env.begin(buffers=False) as txn:
                    yield txn
            except lmdb.Error as exc:
                raise translate(exc) from exc

    @contextlib.contextmanager
    def write_lock(self) -> Iterator[None]:
        """Serialises writers; held around a commit and whatever must follow it in order."""
        with self._write_lock:
            yield

    def write(self, body: Callable[[lmdb.Transaction[bytes]], T]) -> T:
        """Run ``body`` in one write transaction and commit it; all or nothing."""
        with self._write_lock:
            self._grow_if_nearly_full()
            while True:
                try:
                    with self._gate.shared(), self._env.begin(write=True) as txn:
                        return body(txn)
                except lmdb.MapFullError:
                    self._grow()
                except lmdb.Error as exc:
                    raise translate(exc) from exc

    def usage(self) -> tuple[int, int]:
        """(bytes in use, map size)."""
        info = self._env.info()
        page = self._env.stat()["psize"]
        return (info["last_pgno"] + 1) * page, info["map_size"]

    def close(self) -> None:
        with self._write_lock, self._gate.exclusive():
            self._env.close()
            os.close(self._lock_file)

    def _grow_if_nearly_full(self) -> None:
        used, size = self.usage()
        if used >= size * GROW_AT:
            self._grow()

    def _grow(self) -> None:
        _, size = self.usage()
        with self._gate.exclusive():
            try:
                self._env.set_mapsize(size * 2)
            except lmdb.Error as exc:
                raise translate(exc) from exc
        log.info("store map grown from %d to %d MiB", size >> 20, (size * 2) >> 20)


def _lock_directory(path: Path) -> int:
    """Hold an exclusive lock on the data directory for the life of the process."""
    fd = os.open(path / "memosd.lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise FailedPreconditionError(
            f"data directory {path} is in use by another memosd process"
        ) from None
    return fd
