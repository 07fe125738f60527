"""The one table between memosd.errors and gRPC status codes.

The service layer uses it to answer a raised error with its status; the client
uses it backwards to raise the same error class from a status. An
InvalidArgumentError carries its field in the trailing metadata key ``FIELD_KEY``.
"""

from __future__ import annotations

import grpc

from memosd import errors

FIELD_KEY = "memosd-field"

CODES: dict[type[errors.MemosError], grpc.StatusCode] = {
    errors.InvalidArgumentError: grpc.StatusCode.INVALID_ARGUMENT,
    errors.NotFoundError: grpc.StatusCode.NOT_FOUND,
    errors.AlreadyExistsError: grpc.StatusCode.ALREADY_EXISTS,
    errors.VersionConflictError: grpc.StatusCode.ABORTED,
    errors.FailedPreconditionError: grpc.StatusCode.FAILED_PRECONDITION,
    errors.ResourceExhaustedError: grpc.StatusCode.RESOURCE_EXHAUSTED,
    errors.UnauthenticatedError: grpc.StatusCode.UNAUTHENTICATED,
    errors.PermissionDeniedError: grpc.StatusCode.PERMISSION_DENIED,
    errors.CorruptDataError: grpc.StatusCode.DATA_LOSS,
    errors.UnavailableError: grpc.StatusCode.UNAVAILABLE,
}
ERRORS: dict[grpc.StatusCode, type[errors.MemosError]] = {code: cls for cls, code in CODES.items()}


def code_of(error: BaseException) -> grpc.StatusCode | None:
    """The status of a memosd error (the most specific class listed); None for others."""
    for cls in type(error).__mro__:
        if cls in CODES:
            return CODES[cls]  # type: ignore[index]
    return None


def error_of(code: grpc.StatusCode, details: str, field: str | None) -> errors.MemosError:
    """The memosd error a status stands for; codes outside the table give MemosError."""
    cls = ERRORS.get(code)
    if cls is errors.InvalidArgumentError:
        prefix = f"{field}: "
        message = details[len(prefix) :] if field and details.startswith(prefix) else details
        return errors.InvalidArgumentError(field or "request", message)
    if cls is None:
        return errors.MemosError(f"{code.name}: {details}")
    return cls(details)
