"""proto <-> domain conversions of the service layer."""

from __future__ import annotations

from memosd.errors import InvalidArgumentError
from memosd.search import SearchFilter
from memosd.store import CubeRecord, MemoryRecord
from memosd.v1 import types_pb2

MODE_NAMES: dict[int, str] = {
    types_pb2.SEARCH_MODE_UNSPECIFIED: "HYBRID",
    types_pb2.SEARCH_MODE_VECTOR: "VECTOR",
    types_pb2.SEARCH_MODE_LEXICAL: "LEXICAL",
    types_pb2.SEARCH_MODE_HYBRID: "HYBRID",
}


def enum_name(enum: object, prefix: str, value: int, field: str) -> str:
    """``MEMORY_STATE_ACTIVE`` -> ``"ACTIVE"``; unknown or UNSPECIFIED values name the field."""
    try:
        name: str = enum.Name(value)  # type: ignore[attr-defined]
    except ValueError:
        raise InvalidArgumentError(field, f"unknown value {value}") from None
    if name.endswith("_UNSPECIFIED"):
        raise InvalidArgumentError(field, "must be set")
    return name.removeprefix(prefix)


def state_name(value: int, field: str) -> str:
    return enum_name(types_pb2.MemoryState, "MEMORY_STATE_", value, field)


def mode_name(value: int) -> str:
    if value not in MODE_NAMES:
        raise InvalidArgumentError("mode", f"unknown search mode {value}")
    return MODE_NAMES[value]


def _values(enum: object, prefix: str) -> dict[str, int]:
    """Short name -> value of a proto enum, looked up once (Value() is slow per call)."""
    values = enum.DESCRIPTOR.values  # type: ignore[attr-defined]
    return {v.name.removeprefix(prefix): v.number for v in values}


_TYPE_VALUES = _values(types_pb2.MemoryType, "MEMORY_TYPE_")
_STATE_VALUES = _values(types_pb2.MemoryState, "MEMORY_STATE_")
_CHANGE_VALUES = _values(types_pb2.ChangeKind, "CHANGE_KIND_")


def cube(record: CubeRecord) -> types_pb2.Cube:
    return types_pb2.Cube(
        id=record.id,
        name=record.name,
        created_at=record.created_at,
        memory_count=record.memory_count,
    )


def memory(record: MemoryRecord, into: types_pb2.Memory | None = None) -> types_pb2.Memory:
    """``record`` as a Memory message: a new one, or written into ``into`` (a fresh
    sub-message such as ``response.hits.add().memory``, which saves building a
    message and copying it in). Set field by field: about half the time of the
    keyword constructor on the search hot path."""
    message = types_pb2.Memory() if into is None else into
    message.id = record.id
    message.cube_id = record.cube_id
    message.type = _TYPE_VALUES[record.type]  # type: ignore[assignment]
    message.content = record.content
    message.version = record.version
    message.state = _STATE_VALUES[record.state]  # type: ignore[assignment]
    if record.tags:  # (extending by nothing still costs a call into protobuf)
        message.tags.extend(record.tags)
    if record.metadata:
        message.metadata.update(record.metadata)
    message.priority = record.priority
    message.created_at = record.created_at
    message.updated_at = record.updated_at
    message.source = record.source
    for ref in record.lineage:
        message.lineage.add(memory_id=ref.memory_id, version=ref.version)
    message.access_count = record.access_count
    message.change_kind = _CHANGE_VALUES[record.change_kind]  # type: ignore[assignment]
    if record.expires_at is not None:
        message.expires_at = record.expires_at
    if record.last_access_at is not None:
        message.last_access_at = record.last_access_at
    return message


_NO_FILTER = SearchFilter()


def memory_filter(message: types_pb2.MemoryFilter) -> SearchFilter:
    if message.ByteSize() == 0:  # no filter set: the common case, and a shared value
        return _NO_FILTER
    return SearchFilter(
        tags_any=tuple(message.tags_any),
        tags_all=tuple(message.tags_all),
        states=tuple(state_name(s, f"filter.states[{i}]") for i, s in enumerate(message.states)),
        metadata=dict(message.metadata),
        created_after=message.created_after if message.HasField("created_after") else None,
        created_before=message.created_before if message.HasField("created_before") else None,
        updated_after=message.updated_after if message.HasField("updated_after") else None,
        updated_before=message.updated_before if message.HasField("updated_before") else None,
    )
