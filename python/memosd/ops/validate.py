"""Checks of client input against the configured limits; errors name the field."""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence

from memosd.config import LimitsConfig
from memosd.errors import InvalidArgumentError, ResourceExhaustedError
from memosd.store import LineageRef, MemoryDraft

_ID = re.compile(r"[0-9a-f]{32}")
MAX_CUBE_NAME_BYTES = 128
MAX_SOURCE_BYTES = 256
MUTABLE_STATES = ("ACTIVE", "ARCHIVED", "FROZEN")


def identifier(field: str, value: str) -> str:
    """Cube and memory ids are 32 lowercase hex characters."""
    if not value:
        raise InvalidArgumentError(field, "is required")
    if not _ID.fullmatch(value):
        raise InvalidArgumentError(field, f"{value[:64]!r} is not a valid id")
    return value


def cube_name(name: str) -> str:
    if not name.strip():
        raise InvalidArgumentError("name", "must be non-empty")
    if len(name.encode()) > MAX_CUBE_NAME_BYTES:
        raise InvalidArgumentError("name", f"longer than {MAX_CUBE_NAME_BYTES} bytes")
    if "\x00" in name:
        raise InvalidArgumentError("name", "must not contain NUL")
    return name


def content(field: str, value: str, limits: LimitsConfig) -> str:
    if not value.strip():
        raise InvalidArgumentError(field, "must be non-empty text")
    size = len(value.encode())
    if size > limits.max_content_bytes:
        raise InvalidArgumentError(field, f"{size} bytes; the limit is {limits.max_content_bytes}")
    return value


def tags(field: str, values: Sequence[str], limits: LimitsConfig) -> tuple[str, ...]:
    if len(values) > limits.max_tags:
        raise InvalidArgumentError(field, f"{len(values)} tags; the limit is {limits.max_tags}")
    for tag in values:
        if not tag or len(tag.encode()) > limits.max_tag_bytes:
            raise InvalidArgumentError(
                field, f"tags must be 1..{limits.max_tag_bytes} bytes, got {tag[:64]!r}"
            )
    return tuple(dict.fromkeys(values))


def metadata(field: str, values: Mapping[str, str], limits: LimitsConfig) -> dict[str, str]:
    if len(values) > limits.max_metadata_entries:
        raise InvalidArgumentError(
            field, f"{len(values)} entries; the limit is {limits.max_metadata_entries}"
        )
    size = sum(len(k.encode()) + len(v.encode()) for k, v in values.items())
    if size > limits.max_metadata_bytes:
        raise InvalidArgumentError(field, f"{size} bytes; the limit is {limits.max_metadata_bytes}")
    if any(not k for k in values):
        raise InvalidArgumentError(field, "keys must be non-empty")
    return dict(values)


def ttl_seconds(field: str, value: float | None) -> float | None:
    """None or 0 mean no expiry."""
    if value is None or value == 0:
        return None
    if not math.isfinite(value) or value < 0:
        raise InvalidArgumentError(field, f"must be a positive number of seconds, got {value}")
    return value


def priority(field: str, value: int) -> int:
    if not -(2**31) <= value < 2**31:
        raise InvalidArgumentError(field, "must fit in 32 bits")
    return value


def state(field: str, value: str) -> str:
    if value not in MUTABLE_STATES:
        raise InvalidArgumentError(
            field, f"{value!r} cannot be set directly; expected one of {', '.join(MUTABLE_STATES)}"
        )
    return value


def version(field: str, value: int) -> int:
    if value < 1:
        raise InvalidArgumentError(field, f"versions start at 1, got {value}")
    return value


def batch(field: str, size: int, limits: LimitsConfig) -> None:
    if size == 0:
        raise InvalidArgumentError(field, "at least one memory is required")
    if size > limits.max_batch_size:
        raise ResourceExhaustedError(
            f"{field}: {size} memories in one batch; the limit is {limits.max_batch_size}"
        )


def draft(
    index: int,
    text: str,
    tag_values: Sequence[str],
    meta: Mapping[str, str],
    prio: int,
    ttl: float | None,
    source: str | None,
    lineage: Sequence[tuple[str, int]],
    limits: LimitsConfig,
    now: float,
) -> MemoryDraft:
    """One validated new memory; fields are named ``memories[i].field``."""
    where = f"memories[{index}]"
    life = ttl_seconds(f"{where}.ttl_seconds", ttl)
    src = source if source else "client"
    if len(src.encode()) > MAX_SOURCE_BYTES:
        raise InvalidArgumentError(f"{where}.source", f"longer than {MAX_SOURCE_BYTES} bytes")
    refs = []
    for j, (memory_id, number) in enumerate(lineage):
        identifier(f"{where}.lineage[{j}].memory_id", memory_id)
        version(f"{where}.lineage[{j}].version", number)
        refs.append(LineageRef(memory_id, number))
    return MemoryDraft(
        content=content(f"{where}.content", text, limits),
        tags=tags(f"{where}.tags", tag_values, limits),
        metadata=metadata(f"{where}.metadata", meta, limits),
        priority=priority(f"{where}.priority", prio),
        expires_at=None if life is None else now + life,
        source=src,
        lineage=tuple(refs),
    )
