"""The records the store keeps: cubes and versions of memories, and their msgpack form."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import Any

import msgpack

from memosd.errors import CorruptDataError

MEMORY_TYPES = ("PLAINTEXT", "ACTIVATION", "PARAMETRIC")
MEMORY_STATES = ("ACTIVE", "ARCHIVED", "FROZEN", "EXPIRED", "MERGED", "DELETED")
CHANGE_KINDS = ("CREATE", "UPDATE", "STATE", "DELETE", "ROLLBACK", "EXPIRE")


@dataclass(frozen=True, slots=True)
class LineageRef:
    """One parent of a derived memory: its id and the version it was derived from."""

    memory_id: str
    version: int


@dataclass(frozen=True, slots=True)
class CubeRecord:
    id: str
    name: str
    created_at: float
    memory_count: int = 0


@dataclass(frozen=True, slots=True)
class MemoryDraft:
    """What a client supplies for a new memory; the store assigns the rest."""

    content: str
    tags: tuple[str, ...] = ()
    metadata: dict[str, str] = field(default_factory=dict)
    priority: int = 0
    expires_at: float | None = None
    source: str = "client"
    lineage: tuple[LineageRef, ...] = ()
    type: str = "PLAINTEXT"


@dataclass(frozen=True, slots=True)
class MemoryRecord:
    """One version of a memory with its full envelope.

    ``key`` is the store-wide u64 identity (never reused; the HNSW id); ``id`` is
    the public memory id. The head of a memory is its latest version.
    """

    key: int
    id: str
    cube_id: str
    type: str
    content: str
    version: int
    state: str
    tags: tuple[str, ...]
    metadata: dict[str, str]
    priority: int
    created_at: float
    updated_at: float
    expires_at: float | None
    source: str
    lineage: tuple[LineageRef, ...]
    access_count: int
    last_access_at: float | None
    change_kind: str

    def expired(self, now: float) -> bool:
        return self.expires_at is not None and self.expires_at <= now


_MEMORY_FIELDS = tuple(f.name for f in fields(MemoryRecord))
# Access statistics belong to the memory, not to a version: the store keeps them in
# their own table (updated in place by each flush) and fills them in on every read.
_ACCESS_FIELDS = ("access_count", "last_access_at")
_STORED_FIELDS = tuple(name for name in _MEMORY_FIELDS if name not in _ACCESS_FIELDS)


def pack_memory(record: MemoryRecord) -> bytes:
    # Field by field rather than dataclasses.asdict, which deep-copies (ingest hot path).
    data = {name: getattr(record, name) for name in _STORED_FIELDS}
    data["tags"] = list(record.tags)
    data["lineage"] = [[ref.memory_id, ref.version] for ref in record.lineage]
    return msgpack.packb(data, use_bin_type=True)


# MemoryRecord's slots, set directly: its generated __init__ goes through the frozen
# class's object.__setattr__ for each of 18 fields, which was two thirds of the cost
# of decoding a head, and search decodes one per hit.
_SLOT = {name: getattr(MemoryRecord, name) for name in _MEMORY_FIELDS}
_STORED_SLOTS = tuple((name, _SLOT[name].__set__) for name in _STORED_FIELDS)
_COPIED_SLOTS = tuple((_SLOT[name].__get__, _SLOT[name].__set__) for name in _STORED_FIELDS)
_SET_COUNT = _SLOT["access_count"].__set__
_SET_LAST = _SLOT["last_access_at"].__set__


def pack_access(count: int, last_at: float | None) -> bytes:
    return msgpack.packb((count, last_at))


def unpack_access(raw: bytes | None) -> tuple[int, float | None]:
    """A memory's access statistics from their stored form (None: never accessed)."""
    if raw is None:
        return 0, None
    try:
        count, last_at = _unpack(raw)
    except (TypeError, ValueError) as exc:
        raise CorruptDataError(f"access statistics do not decode: {exc}") from exc
    return count, last_at


def unpack_memory(raw: bytes, access: bytes | None = None) -> MemoryRecord:
    """A stored version with the memory's stored access statistics ``access``."""
    return _memory_from_fields(_unpack(raw), *unpack_access(access))


def _memory_from_fields(data: Any, access_count: int, last_access_at: float | None) -> MemoryRecord:
    """The record of decoded stored fields (``data`` is consumed). Records written by
    schema 1 still hold access fields of their own; the access table supersedes them."""
    try:
        data.pop("access_count", None)
        data.pop("last_access_at", None)
        if len(data) != len(_STORED_SLOTS):
            raise ValueError(f"{len(data)} fields, expected {len(_STORED_SLOTS)}")
        data["tags"] = tuple(data["tags"])
        data["lineage"] = tuple(LineageRef(mid, ver) for mid, ver in data["lineage"])
        record = object.__new__(MemoryRecord)
        for name, set_slot in _STORED_SLOTS:
            set_slot(record, data[name])
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise CorruptDataError(f"memory record does not decode: {exc}") from exc
    _SET_COUNT(record, access_count)
    _SET_LAST(record, last_access_at)
    return record


def with_access(record: MemoryRecord, count: int, last_at: float | None) -> MemoryRecord:
    """``record`` with other access statistics, copied slot by slot (an access flush
    hands the search index thousands of these)."""
    copy = object.__new__(MemoryRecord)
    for get_slot, set_slot in _COPIED_SLOTS:
        set_slot(copy, get_slot(record))
    _SET_COUNT(copy, count)
    _SET_LAST(copy, last_at)
    return copy


def pack_cube(record: CubeRecord) -> bytes:
    return msgpack.packb(asdict(record), use_bin_type=True)


def unpack_cube(raw: bytes) -> CubeRecord:
    try:
        return CubeRecord(**_unpack(raw))
    except TypeError as exc:
        raise CorruptDataError(f"cube record does not decode: {exc}") from exc


def pack(value: Any) -> bytes:
    return msgpack.packb(value, use_bin_type=True)


def _unpack(raw: bytes) -> Any:
    try:
        return msgpack.unpackb(raw, raw=False)
    except (msgpack.UnpackException, ValueError) as exc:
        raise CorruptDataError(f"stored value is not valid msgpack: {exc}") from exc


def unpack(raw: bytes) -> Any:
    return _unpack(raw)
