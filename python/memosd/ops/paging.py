"""Opaque page tokens of ListMemories: the cube and the last memory key seen."""

from __future__ import annotations

import base64
import binascii

import msgpack

from memosd.errors import InvalidArgumentError


def encode(cube_id: str, after_key: int) -> str:
    raw = msgpack.packb([1, cube_id, after_key])
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode(token: str, cube_id: str) -> int:
    """The key to continue after; 0 for the first page."""
    if not token:
        return 0
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        form, token_cube, after_key = msgpack.unpackb(raw)
    except (binascii.Error, ValueError, TypeError, msgpack.UnpackException):
        raise InvalidArgumentError("page_token", "not a token this server issued") from None
    if form != 1 or not isinstance(after_key, int) or after_key < 0:
        raise InvalidArgumentError("page_token", "not a token this server issued")
    if token_cube != cube_id:
        raise InvalidArgumentError("page_token", "belongs to another cube")
    return after_key
