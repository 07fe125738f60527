"""The Python client's value types and their conversion from and to proto messages.

Times are epoch seconds; states, types, modes and change kinds are plain
upper-case names ("ACTIVE", "PLAINTEXT", "HYBRID", "UPDATE").
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields

from memosd.errors import InvalidArgumentError
from memosd.v1 import memory_service_pb2, types_pb2


@dataclass(frozen=True, slots=True)
class Cube:
    id: str
    name: str
    created_at: float
    memory_count: int


@dataclass(frozen=True, slots=True)
class Memory:
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
    lineage: tuple[tuple[str, int], ...]
    access_count: int
    last_access_at: float | None
    change_kind: str


@dataclass(frozen=True, slots=True)
class MemoryInput:
    content: str
    tags: Sequence[str] = ()
    metadata: Mapping[str, str] = field(default_factory=dict)
    priority: int = 0
    ttl_seconds: float | None = None
    source: str | None = None
    lineage: Sequence[tuple[str, int]] = ()


@dataclass(frozen=True, slots=True)
class MemoryFilter:
    """Empty fields do not restrict; ``states`` empty means ACTIVE only."""

    tags_any: Sequence[str] = ()
    tags_all: Sequence[str] = ()
    states: Sequence[str] = ()
    metadata: Mapping[str, str] = field(default_factory=dict)
    created_after: float | None = None
    created_before: float | None = None
    updated_after: float | None = None
    updated_before: float | None = None


@dataclass(frozen=True, slots=True)
class Hit:
    memory: Memory
    score: float


@dataclass(frozen=True, slots=True)
class Page:
    memories: list[Memory]
    next_page_token: str


def _names(enum: object, prefix: str) -> dict[int, str]:
    """Value -> short name of a proto enum, looked up once (Name() is slow per call)."""
    values = enum.DESCRIPTOR.values  # type: ignore[attr-defined]
    return {v.number: v.name.removeprefix(prefix) for v in values}


_TYPE_NAMES = _names(types_pb2.MemoryType, "MEMORY_TYPE_")
_STATE_NAMES = _names(types_pb2.MemoryState, "MEMORY_STATE_")
_CHANGE_NAMES = _names(types_pb2.ChangeKind, "CHANGE_KIND_")


def _name(names: dict[int, str], value: int) -> str:
    try:
        return names[value]
    except KeyError:
        raise ValueError(f"unknown enum value {value}") from None


def _value(enum: object, prefix: str, name: str, field: str) -> int:
    try:
        return enum.Value(prefix + name.upper())  # type: ignore[attr-defined, no-any-return]
    except ValueError:
        raise InvalidArgumentError(field, f"unknown value {name!r}") from None


def cube_from(message: types_pb2.Cube) -> Cube:
    return Cube(message.id, message.name, message.created_at, message.memory_count)


# Memory's slots, set directly: a frozen dataclass's __init__ sets each field
# through object.__setattr__, a third of the cost of converting a search hit.
_MEMORY_SLOTS = tuple(getattr(Memory, f.name).__set__ for f in fields(Memory))


def memory_from(message: types_pb2.Memory) -> Memory:
    lineage = message.lineage
    values = (
        message.id,
        message.cube_id,
        _name(_TYPE_NAMES, message.type),
        message.content,
        message.version,
        _name(_STATE_NAMES, message.state),
        tuple(message.tags),
        dict(message.metadata),
        message.priority,
        message.created_at,
        message.updated_at,
        message.expires_at if message.HasField("expires_at") else None,
        message.source,
        tuple([(ref.memory_id, ref.version) for ref in lineage]) if lineage else (),
        message.access_count,
        message.last_access_at if message.HasField("last_access_at") else None,
        _name(_CHANGE_NAMES, message.change_kind),
    )
    memory = object.__new__(Memory)
    for set_slot, value in zip(_MEMORY_SLOTS, values, strict=True):
        set_slot(memory, value)
    return memory


def state_value(name: str, field: str = "state") -> int:
    return _value(types_pb2.MemoryState, "MEMORY_STATE_", name, field)


def mode_value(name: str) -> int:
    return _value(types_pb2.SearchMode, "SEARCH_MODE_", name, "mode")


def memory_input(item: MemoryInput | str) -> memory_service_pb2.MemoryInput:
    if isinstance(item, str):
        item = MemoryInput(item)
    message = memory_service_pb2.MemoryInput(
        content=item.content,
        tags=list(item.tags),
        metadata=dict(item.metadata),
        priority=item.priority,
        lineage=[types_pb2.MemoryRef(memory_id=m, version=v) for m, v in item.lineage],
    )
    if item.ttl_seconds is not None:
        message.ttl_seconds = item.ttl_seconds
    if item.source is not None:
        message.source = item.source
    return message


def filter_message(flt: MemoryFilter | None) -> types_pb2.MemoryFilter:
    message = types_pb2.MemoryFilter()
    if flt is None:
        return message
    message.tags_any.extend(flt.tags_any)
    message.tags_all.extend(flt.tags_all)
    message.states.extend(
        types_pb2.MemoryState.ValueType(state_value(s, "filter.states")) for s in flt.states
    )
    message.metadata.update(flt.metadata)
    for name in ("created_after", "created_before", "updated_after", "updated_before"):
        value = getattr(flt, name)
        if value is not None:
            setattr(message, name, value)
    return message
