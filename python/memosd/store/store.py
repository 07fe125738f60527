"""The persistent store of memosd: one LMDB environment per data directory.

Sub-databases (keys big-endian, values msgpack unless noted):

- ``meta``: schema version, last sequence number, last memory key (u64 counters);
- ``cubes`` (cube id -> cube), ``cube_names`` (name -> cube id);
- ``ids`` (memory id -> memory key), ``heads`` (memory key -> current version),
  ``members`` ((cube, key) -> b''), ``versions`` ((cube, key, version) -> snapshot);
- ``vectors`` (memory key -> raw little-endian float32 embedding, the source the
  search index is rebuilt from); ``blobs`` (sha256 -> raw bytes);
- ``audit`` ((seq, n) -> entry), append-only; ``expiry`` ((ms, key) -> b'');
- ``access`` (memory key -> [access count, last access]): statistics of the memory
  rather than of a version, so a flush of them rewrites no head; every read of a
  memory (any version) carries them.

Every method that writes is one LMDB transaction. After a commit, subscribers
get the changed heads and the purged keys, in commit order (the write lock is
held while they run); access subscribers get the new statistics of each flush.
Preparers get the vectors of a batch of new memories before it commits, so that
their work on them can run while the store writes and syncs; if the write fails,
the store calls what they returned to undo it.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import os
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import lmdb
import numpy as np

from memosd.errors import (
    AlreadyExistsError,
    CorruptDataError,
    FailedPreconditionError,
    InvalidArgumentError,
    NotFoundError,
    VersionConflictError,
)
from memosd.store import keys
from memosd.store.environment import Environment
from memosd.store.record import (
    CubeRecord,
    MemoryDraft,
    MemoryRecord,
    pack_access,
    unpack,
    unpack_access,
    unpack_cube,
)
from memosd.store.transaction import WriteTxn, load_head, load_memory

log = logging.getLogger(__name__)

# 2: access statistics moved from the heads to the ``access`` table.
SCHEMA_VERSION = 2
# Rows read per read transaction by the scanning iterators, so that no read
# transaction stays open while a caller works on the rows.
SCAN_CHUNK = 1024

T = TypeVar("T")
# Gets the commit's seq, its changed heads and its purged keys.
Listener = Callable[[int, Sequence[MemoryRecord], Sequence[int]], None]
# Gets {memory key: (access count, last access)}, the new totals of one flush.
AccessListener = Callable[[Mapping[int, tuple[int, float | None]]], None]
# Gets the cube, keys and vectors of a batch about to be committed; returns its undo.
Preparer = Callable[[str, range, np.ndarray], Callable[[], None]]
# Makes the next version of a memory from its head; the second argument reads
# an older version inside the same transaction.
Change = Callable[[MemoryRecord, Callable[[int], MemoryRecord]], MemoryRecord]


@dataclass(frozen=True, slots=True)
class StoreStats:
    cubes: int
    memories: int
    versions: int
    seq: int
    used_bytes: int
    map_bytes: int


class Store:
    def __init__(self, path: Path, map_size: int = 1 << 30) -> None:
        self.path = path
        self._env = Environment(path, map_size)
        self._dbs = self._env.dbs
        self._listeners: list[Listener] = []
        self._access_listeners: list[AccessListener] = []
        self._preparers: list[Preparer] = []
        self._check_schema()

    def close(self) -> None:
        self._env.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def subscribe(self, listener: Listener) -> None:
        """Call ``listener(seq, changed_heads, purged_keys)`` after every commit that
        changes memories, in commit order."""
        self._listeners.append(listener)

    def subscribe_access(self, listener: AccessListener) -> None:
        """Call ``listener(new_totals)`` after every committed ``record_access``."""
        self._access_listeners.append(listener)

    def subscribe_prepare(self, preparer: Preparer) -> None:
        """Call ``preparer(cube_id, keys, vectors)`` inside every ``add_memories`` that
        has vectors, once its keys are drawn and before it commits; call what it
        returned if the write then fails. Listeners still get the batch's heads after
        the commit."""
        self._preparers.append(preparer)

    # meta -------------------------------------------------------------------
    @property
    def seq(self) -> int:
        with self._env.read() as txn:
            raw = txn.get(b"seq", db=self._dbs["meta"])
        return keys.read_u64(raw) if raw else 0

    def stats(self) -> StoreStats:
        with self._env.read() as txn:
            count = {n: txn.stat(self._dbs[n])["entries"] for n in ("cubes", "heads", "versions")}
        used, size = self._env.usage()
        return StoreStats(count["cubes"], count["heads"], count["versions"], self.seq, used, size)

    # cubes ------------------------------------------------------------------
    def create_cube(self, name: str, now: float) -> CubeRecord:
        def body(w: WriteTxn) -> CubeRecord:
            if w.txn.get(keys.text(name), db=self._dbs["cube_names"]) is not None:
                raise AlreadyExistsError(f"a cube named {name!r} exists")
            cube = CubeRecord(id=new_id(), name=name, created_at=now)
            w.put_cube(cube)
            w.txn.put(keys.text(name), keys.text(cube.id), db=self._dbs["cube_names"])
            w.audit("CREATE_CUBE", cube.id, None, None, None)
            return cube

        return self._write(body)

    def get_cube(self, cube_id: str) -> CubeRecord:
        with self._env.read() as txn:
            raw = txn.get(keys.text(cube_id), db=self._dbs["cubes"])
        if raw is None:
            raise NotFoundError(f"cube {cube_id} not found")
        return unpack_cube(raw)

    def cube_exists(self, cube_id: str) -> bool:
        return bool(self.existing_cubes([cube_id]))

    def existing_cubes(self, cube_ids: Iterable[str]) -> set[str]:
        """Those of ``cube_ids`` that exist, read in one transaction."""
        with self._env.read() as txn:
            db = self._dbs["cubes"]
            return {c for c in set(cube_ids) if txn.get(keys.text(c), db=db) is not None}

    def list_cubes(self) -> list[CubeRecord]:
        with self._env.read() as txn:
            cubes = [unpack_cube(raw) for _, raw in txn.cursor(db=self._dbs["cubes"])]
        return sorted(cubes, key=lambda c: c.name)

    def delete_cube(self, cube_id: str) -> int:
        """Remove a cube and every memory in it; returns the number of memories removed."""

        def body(w: WriteTxn) -> int:
            cube = w.cube(cube_id)
            prefix = keys.cube_prefix(cube_id)
            member_keys = []
            cursor = w.txn.cursor(db=self._dbs["members"])
            if cursor.set_range(prefix):
                for raw_key in cursor.iternext(values=False):
                    if not raw_key.startswith(prefix):
                        break
                    member_keys.append(keys.member_key(raw_key))
            for key in member_keys:
                w.purge(_present(load_head(w.txn, self._dbs, key), key))
            w.txn.delete(keys.text(cube_id), db=self._dbs["cubes"])
            w.txn.delete(keys.text(cube.name), db=self._dbs["cube_names"])
            w.audit("DELETE_CUBE", cube_id, None, None, None)
            return len(member_keys)

        return self._write(body)

    # memories: writes -------------------------------------------------------
    def add_memories(
        self,
        cube_id: str,
        drafts: Sequence[MemoryDraft],
        vectors: np.ndarray | None,
        now: float,
    ) -> list[MemoryRecord]:
        """Add a batch of new memories atomically, with one embedding row per draft."""
        if vectors is not None and len(vectors) != len(drafts):
            raise InvalidArgumentError("vectors", f"{len(vectors)} rows for {len(drafts)} drafts")

        def body(w: WriteTxn) -> list[MemoryRecord]:
            cube = w.cube(cube_id)
            new_keys = w.next_keys(len(drafts))
            if vectors is not None and drafts:
                self._prepare(w, cube_id, new_keys, vectors)
            records = []
            for i, (key, draft) in enumerate(zip(new_keys, drafts, strict=True)):
                record = MemoryRecord(
                    key=key,
                    id=new_id(),
                    cube_id=cube_id,
                    type=draft.type,
                    content=draft.content,
                    version=1,
                    state="ACTIVE",
                    tags=draft.tags,
                    metadata=dict(draft.metadata),
                    priority=draft.priority,
                    created_at=now,
                    updated_at=now,
                    expires_at=draft.expires_at,
                    source=draft.source,
                    lineage=draft.lineage,
                    access_count=0,
                    last_access_at=None,
                    change_kind="CREATE",
                )
                w.put_memory(None, record, None if vectors is None else vectors[i])
                records.append(record)
            w.put_cube(dataclasses.replace(cube, memory_count=cube.memory_count + len(drafts)))
            return records

        return self._write(body)

    def commit_version(
        self,
        cube_id: str,
        memory_id: str,
        change: Change,
        now: float,
        *,
        expected_version: int | None = None,
        vector: np.ndarray | None = None,
    ) -> MemoryRecord:
        """Make the next version of a memory with ``change(head, read_version)``.

        ``change`` may raise to refuse the change (nothing is written). With
        ``expected_version``, a head at any other version gives VersionConflictError.
        """

        def body(w: WriteTxn) -> MemoryRecord:
            head = w.head(cube_id, memory_id)
            if expected_version is not None and head.version != expected_version:
                raise VersionConflictError(
                    f"memory {memory_id} is at version {head.version}, "
                    f"not the expected {expected_version}"
                )
            proposed = change(head, lambda number: w.version(head, number))
            new = dataclasses.replace(
                proposed,
                key=head.key,
                id=head.id,
                cube_id=head.cube_id,
                created_at=head.created_at,
                version=head.version + 1,
                updated_at=now,
            )
            w.put_memory(head, new, vector)
            return new

        return self._write(body)

    def purge(
        self,
        cube_id: str,
        memory_id: str,
        check: Callable[[MemoryRecord], None] | None = None,
    ) -> MemoryRecord:
        """Remove a memory with its history and vector; returns the removed head.

        ``check(head)`` may raise to refuse, inside the transaction.
        """

        def body(w: WriteTxn) -> MemoryRecord:
            head = w.head(cube_id, memory_id)
            if check is not None:
                check(head)
            w.purge(head)
            cube = w.cube(cube_id)
            w.put_cube(dataclasses.replace(cube, memory_count=cube.memory_count - 1))
            return head

        return self._write(body)

    def expire_due(self, now: float, limit: int) -> list[MemoryRecord]:
        """Mark up to ``limit`` memories whose TTL passed EXPIRED (a new version each)."""

        def body(w: WriteTxn) -> list[MemoryRecord]:
            due: list[int] = []
            bound = keys.u64(int(now * 1000) + 1)
            for raw_key in w.txn.cursor(db=self._dbs["expiry"]).iternext(values=False):
                if raw_key >= bound or len(due) >= limit:
                    break
                due.append(keys.member_key(raw_key))
            expired = []
            for key in due:
                head = _present(load_head(w.txn, self._dbs, key), key)
                new = dataclasses.replace(
                    head,
                    version=head.version + 1,
                    state="EXPIRED",
                    updated_at=now,
                    change_kind="EXPIRE",
                )
                w.put_memory(head, new, None)
                expired.append(new)
            return expired

        return self._write(body)

    def record_access(self, hits: Mapping[int, tuple[int, float]]) -> None:
        """Add access counts and last-access times {key: (count, last_at)} to memories.

        Behavioural metadata: no new version, no head rewritten; access subscribers
        get the new totals so that what they hold stays current.
        """

        def body(w: WriteTxn) -> None:
            heads, access = self._dbs["heads"], self._dbs["access"]
            for key, (count, last_at) in hits.items():
                k = keys.u64(key)
                if w.txn.get(k, db=heads) is None:
                    continue  # purged since the hit
                old_count, old_last = unpack_access(w.txn.get(k, db=access))
                total = (old_count + count, max(old_last or 0.0, last_at))
                w.txn.put(k, pack_access(*total), db=access)
                w.accessed[key] = total

        self._write(body)

    # memories: reads --------------------------------------------------------
    def get(self, cube_id: str, memory_id: str, version: int | None = None) -> MemoryRecord:
        with self._env.read() as txn:
            head = self._head(txn, cube_id, memory_id)
            if version is None or version == head.version:
                return head
            raw = txn.get(keys.version(cube_id, head.key, version), db=self._dbs["versions"])
            if raw is None:
                raise NotFoundError(f"memory {memory_id} has no version {version}")
            return load_memory(txn, self._dbs, head.key, raw)

    def history(self, cube_id: str, memory_id: str) -> list[MemoryRecord]:
        """Every version, oldest first; the last one is the head."""
        with self._env.read() as txn:
            head = self._head(txn, cube_id, memory_id)
            prefix = keys.version_prefix(cube_id, head.key)
            versions = []
            cursor = txn.cursor(db=self._dbs["versions"])
            if cursor.set_range(prefix):
                for raw_key, raw in cursor:
                    if not raw_key.startswith(prefix):
                        break
                    versions.append(load_memory(txn, self._dbs, head.key, raw))
        return versions

    def list_page(
        self,
        cube_id: str,
        after_key: int,
        accept: Callable[[MemoryRecord], bool],
        limit: int,
    ) -> tuple[list[MemoryRecord], int | None]:
        """Up to ``limit`` accepted heads of a cube after ``after_key``, in key order,
        and the key to continue after (None when the cube has no more)."""
        page: list[MemoryRecord] = []
        with self._env.read() as txn:
            if txn.get(keys.text(cube_id), db=self._dbs["cubes"]) is None:
                raise NotFoundError(f"cube {cube_id} not found")
            prefix = keys.cube_prefix(cube_id)
            cursor = txn.cursor(db=self._dbs["members"])
            last = after_key
            if not cursor.set_range(keys.member(cube_id, after_key + 1)):
                return page, None
            for raw_key in cursor.iternext(values=False):
                if not raw_key.startswith(prefix):
                    return page, None
                if len(page) == limit:
                    return page, last
                key = keys.member_key(raw_key)
                record = _present(load_head(txn, self._dbs, key), key)
                last = key
                if accept(record):
                    page.append(record)
        return page, None

    def head_by_key(self, key: int) -> MemoryRecord | None:
        with self._env.read() as txn:
            return load_head(txn, self._dbs, key)

    def vectors(self, memory_keys: Sequence[int]) -> tuple[list[int], np.ndarray]:
        """The keys that have a vector, and their vectors as rows, read in one transaction."""
        found, raws = [], []
        with self._env.read() as txn:
            for key in memory_keys:
                raw = txn.get(keys.u64(key), db=self._dbs["vectors"])
                if raw is not None:
                    found.append(key)
                    raws.append(raw)
        if not raws:
            return [], np.empty((0, 0), dtype=np.float32)
        rows = np.frombuffer(b"".join(raws), dtype="<f4").astype(np.float32)
        return found, rows.reshape(len(raws), -1)

    def iter_heads(self, cube_id: str | None = None) -> Iterator[MemoryRecord]:
        """Every head (of one cube, or of all), in key order."""
        after = 0
        while True:
            if cube_id is None:
                chunk = self._heads_chunk(after)
            else:
                chunk, _ = self.list_page(cube_id, after, lambda _: True, SCAN_CHUNK)
            if not chunk:
                return
            yield from chunk
            after = chunk[-1].key

    def changes_since(self, seq: int) -> Iterator[tuple[int, int]]:
        """``(seq, key)`` of every head change (add, update, state, purge) after ``seq``."""
        start = keys.audit(seq + 1, 0)
        while True:
            with self._env.read() as txn:
                cursor = txn.cursor(db=self._dbs["audit"])
                rows = []
                if cursor.set_range(start):
                    for raw_key, raw in cursor:
                        rows.append((raw_key, unpack(raw)))
                        if len(rows) == SCAN_CHUNK:
                            break
            if not rows:
                return
            for raw_key, entry in rows:
                if entry.get("key") is not None:
                    yield keys.read_u64(raw_key), entry["key"]
            start = rows[-1][0] + b"\x00"

    # blobs ------------------------------------------------------------------
    def put_blob(self, data: bytes) -> str:
        """Store bytes under their sha256 (hex); storing the same bytes twice is a no-op."""
        digest = hashlib.sha256(data).digest()

        def body(w: WriteTxn) -> None:
            w.txn.put(digest, data, db=self._dbs["blobs"], overwrite=False)

        self._write(body)
        return digest.hex()

    def get_blob(self, digest: str) -> bytes:
        with self._env.read() as txn:
            raw = txn.get(_digest_key(digest), db=self._dbs["blobs"])
        if raw is None:
            raise NotFoundError(f"blob {digest} not found")
        return bytes(raw)

    def delete_blob(self, digest: str) -> None:
        def body(w: WriteTxn) -> None:
            if not w.txn.delete(_digest_key(digest), db=self._dbs["blobs"]):
                raise NotFoundError(f"blob {digest} not found")

        self._write(body)

    # internals --------------------------------------------------------------
    def _write(self, body: Callable[[WriteTxn], T]) -> T:
        with self._env.write_lock():
            holder: list[WriteTxn] = []

            def run(txn: lmdb.Transaction[bytes]) -> T:
                if holder:  # a retry (the map grew): the last attempt was rolled back
                    self._undo(holder.pop())
                holder.append(WriteTxn(txn, self._dbs))
                return body(holder[0])

            try:
                result = self._env.write(run)
            except BaseException:
                if holder:
                    self._undo(holder[0])
                raise
            w = holder[0]
            if w.changed or w.removed:
                changed, removed = list(w.changed.values()), list(w.removed)
                for listener in self._listeners:
                    self._notify(w.seq, listener, w.seq, changed, removed)
            if w.accessed:
                for access_listener in self._access_listeners:
                    self._notify(w.seq, access_listener, w.accessed)
            return result

    def _prepare(self, w: WriteTxn, cube_id: str, new_keys: range, vectors: np.ndarray) -> None:
        for preparer in self._preparers:
            try:
                w.undo.append(preparer(cube_id, new_keys, vectors))
            except Exception:
                # Only a head start: the listener takes the batch after the commit anyway.
                log.exception("store preparer failed for keys %d-%d", new_keys[0], new_keys[-1])

    @staticmethod
    def _undo(w: WriteTxn) -> None:
        for undo in w.undo:
            try:
                undo()
            except Exception:
                log.exception("undoing a preparation of a failed write failed")

    @staticmethod
    def _notify(seq: int, listener: Callable[..., None], *args: object) -> None:
        try:
            listener(*args)
        except Exception:
            # The write is durable; the index catches up from the store at start.
            log.exception("store listener failed after commit seq %d", seq)

    def _head(self, txn: lmdb.Transaction[bytes], cube_id: str, memory_id: str) -> MemoryRecord:
        raw_key = txn.get(keys.text(memory_id), db=self._dbs["ids"])
        record = load_head(txn, self._dbs, keys.read_u64(raw_key)) if raw_key else None
        if record is None or record.cube_id != cube_id:
            if txn.get(keys.text(cube_id), db=self._dbs["cubes"]) is None:
                raise NotFoundError(f"cube {cube_id} not found")
            raise NotFoundError(f"memory {memory_id} not found in cube {cube_id}")
        return record

    def _heads_chunk(self, after: int) -> list[MemoryRecord]:
        with self._env.read() as txn:
            cursor = txn.cursor(db=self._dbs["heads"])
            chunk: list[MemoryRecord] = []
            if cursor.set_range(keys.u64(after + 1)):
                for raw_key, raw in cursor:
                    chunk.append(load_memory(txn, self._dbs, keys.read_u64(raw_key), raw))
                    if len(chunk) == SCAN_CHUNK:
                        break
        return chunk

    def _check_schema(self) -> None:
        with self._env.read() as txn:
            raw = txn.get(b"schema_version", db=self._dbs["meta"])
        found = SCHEMA_VERSION if raw is None else keys.read_u64(raw)
        if found == 1:
            self._migrate_access_to_table()
        elif found != SCHEMA_VERSION:
            raise FailedPreconditionError(
                f"store at {self.path} has schema version {found}; this memosd reads "
                f"1 and {SCHEMA_VERSION}"
            )
        if raw is None:
            self._env.write(
                lambda txn: txn.put(
                    b"schema_version", keys.u64(SCHEMA_VERSION), db=self._dbs["meta"]
                )
            )

    def _migrate_access_to_table(self) -> None:
        """Schema 1 -> 2, in one transaction: copy each head's access statistics into
        the access table (the heads' own copies are ignored from then on)."""

        def run(txn: lmdb.Transaction[bytes]) -> int:
            moved = 0
            for raw_key, raw in txn.cursor(db=self._dbs["heads"]):
                fields = unpack(raw)
                if not isinstance(fields, dict):
                    raise CorruptDataError(f"memory key {keys.read_u64(raw_key)}: not a record")
                count, last_at = fields.get("access_count", 0), fields.get("last_access_at")
                if count or last_at is not None:
                    txn.put(raw_key, pack_access(count, last_at), db=self._dbs["access"])
                    moved += 1
            txn.put(b"schema_version", keys.u64(SCHEMA_VERSION), db=self._dbs["meta"])
            return moved

        moved = self._env.write(run)
        log.info(
            "store at %s upgraded to schema %d (%d access records)",
            self.path,
            SCHEMA_VERSION,
            moved,
        )


def _present(head: MemoryRecord | None, key: int) -> MemoryRecord:
    """The head an index entry points at; its absence means the store is inconsistent."""
    if head is None:
        raise CorruptDataError(f"memory key {key} is indexed but has no head")
    return head


def new_id() -> str:
    """A public cube or memory id: 128 random bits as 32 lowercase hex characters."""
    return os.urandom(16).hex()


def _digest_key(digest: str) -> bytes:
    try:
        raw = bytes.fromhex(digest)
    except ValueError:
        raw = b""
    if len(raw) != 32:
        raise InvalidArgumentError("digest", "not a sha256 hex digest")
    return raw
