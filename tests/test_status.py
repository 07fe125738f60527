"""The one error table: every memosd error has its own status and maps back to its class;
a servicer turns memosd errors into their status and anything else into INTERNAL."""

from __future__ import annotations

import asyncio
import logging
from concurrent.futures import ThreadPoolExecutor
from types import SimpleNamespace

import grpc
import pytest
from memosd import errors, status
from memosd.client import Client
from memosd.service import cube


def error_classes() -> list[type[errors.MemosError]]:
    return [
        cls
        for cls in vars(errors).values()
        if isinstance(cls, type)
        and issubclass(cls, errors.MemosError)
        and cls is not errors.MemosError
    ]


@pytest.mark.parametrize("cls", error_classes(), ids=lambda c: c.__name__)
def test_each_error_has_a_status_that_maps_back(cls: type[errors.MemosError]) -> None:
    code = status.CODES[cls]
    assert code not in (grpc.StatusCode.OK, grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN)
    field = "memories[0].content" if cls is errors.InvalidArgumentError else None
    back = status.error_of(code, "memories[0].content: too long", field)
    assert type(back) is cls
    assert status.code_of(back) == code


def test_codes_are_distinct_and_unknown_codes_stay_generic() -> None:
    assert len(set(status.CODES.values())) == len(status.CODES)
    generic = status.error_of(grpc.StatusCode.INTERNAL, "boom", None)
    assert type(generic) is errors.MemosError and "INTERNAL" in str(generic)


def test_invalid_argument_keeps_its_field() -> None:
    err = status.error_of(grpc.StatusCode.INVALID_ARGUMENT, "page_token: not ours", "page_token")
    assert isinstance(err, errors.InvalidArgumentError)
    assert (err.field, err.message) == ("page_token", "not ours")


class _Cubes:
    """Operations that fail: one with a memosd error, one with a bug."""

    def get(self, cube_id: str) -> None:
        raise errors.NotFoundError(f"cube {cube_id} not found")

    def list(self) -> None:
        raise RuntimeError("a bug")

    def create(self, name: str) -> None:
        raise errors.InvalidArgumentError("name", "must be non-empty")


def test_servicer_maps_errors_over_real_grpc(caplog: pytest.LogCaptureFixture) -> None:
    async def scenario() -> list[BaseException]:
        server = grpc.aio.server()
        runtime = SimpleNamespace(cubes=_Cubes())
        with ThreadPoolExecutor(2) as pool:
            cube.register(server, runtime, pool)  # type: ignore[arg-type]
            port = server.add_insecure_port("127.0.0.1:0")
            await server.start()
            try:
                with Client(f"127.0.0.1:{port}", timeout=10) as client:
                    raised = []
                    for call in (
                        lambda: client.get_cube("a" * 32),
                        client.list_cubes,
                        lambda: client.create_cube(""),
                    ):
                        try:
                            await asyncio.to_thread(call)
                        except errors.MemosError as exc:
                            raised.append(exc)
                    return raised
            finally:
                await server.stop(None)

    with caplog.at_level(logging.ERROR, logger="memosd.service.guard"):
        not_found, internal, invalid = asyncio.run(scenario())
    assert type(not_found) is errors.NotFoundError and "not found" in str(not_found)
    assert type(internal) is errors.MemosError and "INTERNAL" in str(internal)
    assert "a bug" not in str(internal)  # details stay in the daemon log
    assert isinstance(invalid, errors.InvalidArgumentError) and invalid.field == "name"
    [record] = [r for r in caplog.records if r.exc_info]
    assert "RuntimeError: a bug" in caplog.text and record.levelno == logging.ERROR
