"""The one exception hierarchy of memosd.

Python and Rust (``memosd._native``) raise these alike. Third-party errors are
translated into them at the edge that imports the third-party module; the
service layer maps each class to one gRPC status code in a single table.
"""

from __future__ import annotations


class MemosError(Exception):
    """Base class of every error memosd raises on purpose."""


class InvalidArgumentError(MemosError, ValueError):
    """Bad input. ``field`` names the offending field (request field or parameter)."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


class NotFoundError(MemosError, KeyError):
    """A cube, memory, version, activation or adapter that does not exist."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


class AlreadyExistsError(MemosError):
    """Creating something whose unique name or id is taken."""


class VersionConflictError(MemosError):
    """Optimistic update with an ``expected_version`` that is not the current one."""


class FailedPreconditionError(MemosError):
    """The system is not in a state that allows the operation (frozen memory, model mismatch)."""


class ResourceExhaustedError(MemosError):
    """A configured limit was reached (store full, request too large)."""


class UnauthenticatedError(MemosError):
    """The channel carried no valid credentials."""


class PermissionDeniedError(MemosError):
    """The authenticated principal may not do this."""


class CorruptDataError(MemosError):
    """Stored bytes (index file, KV page, blob) failed validation: truncated, bad checksum,
    unknown version. Never silently used."""


class UnavailableError(MemosError):
    """The daemon cannot be reached or is shutting down; the call may be retried."""
