"""The client's value types built from proto messages."""

from __future__ import annotations

from memosd.messages import Memory, memory_from
from memosd.v1 import types_pb2


def test_memory_from_sets_every_field() -> None:
    message = types_pb2.Memory(
        id="m1",
        cube_id="c1",
        type=types_pb2.MEMORY_TYPE_PLAINTEXT,
        content="The user prefers green tea.",
        version=3,
        state=types_pb2.MEMORY_STATE_FROZEN,
        tags=["drink", "pref"],
        metadata={"speaker": "Ann"},
        priority=2,
        created_at=1.5,
        updated_at=2.5,
        expires_at=9.0,
        source="import",
        lineage=[types_pb2.MemoryRef(memory_id="m0", version=1)],
        access_count=4,
        last_access_at=3.5,
        change_kind=types_pb2.CHANGE_KIND_STATE,
    )
    assert memory_from(message) == Memory(
        id="m1",
        cube_id="c1",
        type="PLAINTEXT",
        content="The user prefers green tea.",
        version=3,
        state="FROZEN",
        tags=("drink", "pref"),
        metadata={"speaker": "Ann"},
        priority=2,
        created_at=1.5,
        updated_at=2.5,
        expires_at=9.0,
        source="import",
        lineage=(("m0", 1),),
        access_count=4,
        last_access_at=3.5,
        change_kind="STATE",
    )
    bare = memory_from(types_pb2.Memory(id="m2"))
    assert (bare.expires_at, bare.last_access_at, bare.lineage, bare.tags) == (None, None, (), ())
