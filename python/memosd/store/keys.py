"""Byte keys of the store's sub-databases.

Integers are big-endian so that LMDB's byte order is numeric order; string
components end with a NUL byte so that one cube's keys form a contiguous prefix
(ids never contain NUL).
"""

from __future__ import annotations

import struct

_U64 = struct.Struct(">Q")
_U32 = struct.Struct(">I")


def u64(value: int) -> bytes:
    return _U64.pack(value)


def read_u64(raw: bytes, offset: int = 0) -> int:
    return int(_U64.unpack_from(raw, offset)[0])


def text(value: str) -> bytes:
    return value.encode()


def cube_prefix(cube_id: str) -> bytes:
    return cube_id.encode() + b"\x00"


def member(cube_id: str, key: int) -> bytes:
    """members: (cube, memory key) -> b''; a cube's memories in creation order."""
    return cube_prefix(cube_id) + u64(key)


def version(cube_id: str, key: int, number: int) -> bytes:
    """versions: (cube, memory key, version) -> snapshot."""
    return cube_prefix(cube_id) + u64(key) + u64(number)


def version_prefix(cube_id: str, key: int) -> bytes:
    return cube_prefix(cube_id) + u64(key)


def audit(seq: int, index: int) -> bytes:
    """audit: (seq, index within the transaction) -> entry."""
    return u64(seq) + _U32.pack(index)


def expiry(expires_at: float, key: int) -> bytes:
    """expiry: (expiry time in ms, memory key) -> b''; due memories sort first."""
    return u64(max(0, int(expires_at * 1000))) + u64(key)


def member_key(raw: bytes) -> int:
    """The memory key at the end of a members or expiry key."""
    return read_u64(raw, len(raw) - 8)
