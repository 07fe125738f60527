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


def pack_memory(record: MemoryRecord) -> bytes:
    # Field by field rather than dataclasses.asdict, which deep-copies (ingest hot path).
    data = {name: getattr(record, name) for name in _MEMORY_FIELDS}
    data["tags"] = list(record.tags)
    data["lineage"] = [[ref.memory_id, ref.version] for ref in record.lineage]
    return msgpack.packb(data, use_bin_type=True)


# MemoryRecord's slots, set directly: its generated __init__ goes through the frozen
# class's object.__setattr__ for each of 18 fields, which was two thirds of the cost
# of decoding a head, and search decodes one per hit.
_MEMORY_SLOTS = tuple((name, getattr(MemoryRecord, name).__set__) for name in _MEMORY_FIELDS)


def unpack_memory(raw: bytes) -> MemoryRecord:
    return memory_from_fields(_unpack(raw))


def with_access(raw: bytes, count: int, last_at: float) -> tuple[bytes, MemoryRecord]:
    """The stored head ``raw`` with ``count`` more accesses, the last at ``last_at`` or
    later: its new bytes and record. Works on the decoded fields, without building
    the record twice (an access flush rewrites thousands of heads)."""
    data = _unpack(raw)
    try:
        data["access_count"] += count
        data["last_access_at"] = max(data["last_access_at"] or 0.0, last_at)
    except (KeyError, TypeError) as exc:
        raise CorruptDataError(f"memory record does not decode: {exc}") from exc
    packed = msgpack.packb(data, use_bin_type=True)
    return packed, memory_from_fields(data)


def memory_from_fields(data: Any) -> MemoryRecord:
    """The record of decoded stored fields (``data`` is consumed)."""
    try:
        if len(data) != len(_MEMORY_SLOTS):
            raise ValueError(f"{len(data)} fields, expected {len(_MEMORY_SLOTS)}")
        data["tags"] = tuple(data["tags"])
        data["lineage"] = tuple(LineageRef(mid, ver) for mid, ver in data["lineage"])
        record = object.__new__(MemoryRecord)
        for name, set_slot in _MEMORY_SLOTS:
            set_slot(record, data[name])
        return record
    except (KeyError, TypeError, ValueError) as exc:
        raise CorruptDataError(f"memory record does not decode: {exc}") from exc


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
