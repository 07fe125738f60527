"""A typed, context-managed Python client of the memosd daemon.

    from memosd.client import Client

    with Client("127.0.0.1:50051") as client:
        cube = client.create_cube("notes")
        [mid] = client.add(cube.id, ["The user prefers green tea."])
        for hit in client.search([cube.id], "what does the user drink?"):
            print(hit.score, hit.memory.content)

Methods return the small dataclasses of memosd.messages (Cube, Memory, Hit,
Page) and raise memosd.errors exceptions, mapped back from the gRPC status by
the same table the daemon uses (memosd.status).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any, TypeVar

import grpc

from memosd import status
from memosd.errors import UnavailableError
from memosd.messages import (
    Cube,
    Hit,
    Memory,
    MemoryFilter,
    MemoryInput,
    Page,
    cube_from,
    filter_message,
    memory_from,
    memory_input,
    mode_value,
    state_value,
)
from memosd.v1 import admin_service_pb2 as admin_pb
from memosd.v1 import admin_service_pb2_grpc as admin_grpc
from memosd.v1 import cube_service_pb2 as cube_pb
from memosd.v1 import cube_service_pb2_grpc as cube_grpc
from memosd.v1 import memory_service_pb2 as memory_pb
from memosd.v1 import memory_service_pb2_grpc as memory_grpc

DEFAULT_ADDRESS = "127.0.0.1:50051"
T = TypeVar("T")


class Client:
    def __init__(
        self,
        address: str = DEFAULT_ADDRESS,
        *,
        timeout: float | None = 60.0,
        max_message_bytes: int = 64 * 1024 * 1024,
    ) -> None:
        self.address = address
        self.timeout = timeout
        self._channel = grpc.insecure_channel(
            address,
            options=[
                ("grpc.max_receive_message_length", max_message_bytes),
                ("grpc.max_send_message_length", max_message_bytes),
            ],
        )
        self._cubes = cube_grpc.CubeServiceStub(self._channel)
        self._memories = memory_grpc.MemoryServiceStub(self._channel)
        self._admin = admin_grpc.AdminServiceStub(self._channel)

    def close(self) -> None:
        self._channel.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def wait_ready(self, timeout: float = 30.0) -> None:
        """Block until the daemon accepts connections (UnavailableError after ``timeout``)."""
        try:
            grpc.channel_ready_future(self._channel).result(timeout=timeout)
        except grpc.FutureTimeoutError:
            raise UnavailableError(f"memosd at {self.address} not ready in {timeout}s") from None

    # cubes ------------------------------------------------------------------
    def create_cube(self, name: str) -> Cube:
        reply = self._call(self._cubes.CreateCube, cube_pb.CreateCubeRequest(name=name))
        return cube_from(reply.cube)

    def get_cube(self, cube_id: str) -> Cube:
        reply = self._call(self._cubes.GetCube, cube_pb.GetCubeRequest(cube_id=cube_id))
        return cube_from(reply.cube)

    def list_cubes(self) -> list[Cube]:
        reply = self._call(self._cubes.ListCubes, cube_pb.ListCubesRequest())
        return [cube_from(c) for c in reply.cubes]

    def delete_cube(self, cube_id: str) -> int:
        """Delete a cube and everything in it; returns the number of memories removed."""
        reply = self._call(self._cubes.DeleteCube, cube_pb.DeleteCubeRequest(cube_id=cube_id))
        return int(reply.deleted_memories)

    # memories ---------------------------------------------------------------
    def add(self, cube_id: str, memories: Sequence[MemoryInput | str]) -> list[str]:
        """Add memories (texts or MemoryInput) atomically; returns their ids in order."""
        request = memory_pb.AddMemoriesRequest(
            cube_id=cube_id, memories=[memory_input(m) for m in memories]
        )
        return list(self._call(self._memories.AddMemories, request).ids)

    def get(self, cube_id: str, memory_id: str, version: int | None = None) -> Memory:
        request = memory_pb.GetMemoryRequest(cube_id=cube_id, memory_id=memory_id)
        if version is not None:
            request.version = version
        return memory_from(self._call(self._memories.GetMemory, request).memory)

    def update(
        self,
        cube_id: str,
        memory_id: str,
        *,
        content: str | None = None,
        tags: Sequence[str] | None = None,
        metadata: Mapping[str, str] | None = None,
        priority: int | None = None,
        ttl_seconds: float | None = None,
        state: str | None = None,
        expected_version: int | None = None,
    ) -> Memory:
        """A new version with the given fields changed (None keeps a field)."""
        request = memory_pb.UpdateMemoryRequest(cube_id=cube_id, memory_id=memory_id)
        if content is not None:
            request.content = content
        if tags is not None:
            request.tags.values.extend(tags)
            request.tags.SetInParent()
        if metadata is not None:
            request.metadata.entries.update(metadata)
            request.metadata.SetInParent()
        if priority is not None:
            request.priority = priority
        if ttl_seconds is not None:
            request.ttl_seconds = ttl_seconds
        if state is not None:
            request.state = state_value(state)  # type: ignore[assignment]
        if expected_version is not None:
            request.expected_version = expected_version
        return memory_from(self._call(self._memories.UpdateMemory, request).memory)

    def delete(self, cube_id: str, memory_id: str, *, purge: bool = False) -> Memory | None:
        """Soft delete (returns the DELETED version) or purge (returns None)."""
        request = memory_pb.DeleteMemoryRequest(cube_id=cube_id, memory_id=memory_id, purge=purge)
        reply = self._call(self._memories.DeleteMemory, request)
        return memory_from(reply.memory) if reply.HasField("memory") else None

    def search(
        self,
        cube_ids: Sequence[str],
        query: str,
        *,
        top_k: int = 10,
        mode: str = "HYBRID",
        filter: MemoryFilter | None = None,
    ) -> list[Hit]:
        request = memory_pb.SearchMemoriesRequest(
            cube_ids=list(cube_ids),
            query=query,
            top_k=top_k,
            mode=mode_value(mode),  # type: ignore[arg-type]
            filter=filter_message(filter),
        )
        reply = self._call(self._memories.SearchMemories, request)
        return [Hit(memory_from(h.memory), h.score) for h in reply.hits]

    def list_memories(
        self,
        cube_id: str,
        *,
        page_size: int = 0,
        page_token: str = "",
        filter: MemoryFilter | None = None,
    ) -> Page:
        """One page in creation order; pass ``next_page_token`` back for the next one."""
        request = memory_pb.ListMemoriesRequest(
            cube_id=cube_id,
            page_size=page_size,
            page_token=page_token,
            filter=filter_message(filter),
        )
        reply = self._call(self._memories.ListMemories, request)
        return Page([memory_from(m) for m in reply.memories], reply.next_page_token)

    def iter_memories(
        self, cube_id: str, *, filter: MemoryFilter | None = None, page_size: int = 500
    ) -> Iterator[Memory]:
        """Every memory of a cube passing ``filter``, page by page."""
        token = ""
        while True:
            page = self.list_memories(cube_id, page_size=page_size, page_token=token, filter=filter)
            yield from page.memories
            if not page.next_page_token:
                return
            token = page.next_page_token

    def history(self, cube_id: str, memory_id: str) -> list[Memory]:
        request = memory_pb.GetHistoryRequest(cube_id=cube_id, memory_id=memory_id)
        return [memory_from(m) for m in self._call(self._memories.GetHistory, request).versions]

    def rollback(
        self, cube_id: str, memory_id: str, version: int, *, expected_version: int | None = None
    ) -> Memory:
        request = memory_pb.RollbackRequest(cube_id=cube_id, memory_id=memory_id, version=version)
        if expected_version is not None:
            request.expected_version = expected_version
        return memory_from(self._call(self._memories.Rollback, request).memory)

    # admin ------------------------------------------------------------------
    def stats(self) -> dict[str, Any]:
        reply = self._call(self._admin.GetStats, admin_pb.GetStatsRequest())
        return {field.name: getattr(reply, field.name) for field in reply.DESCRIPTOR.fields}

    # ------------------------------------------------------------------------
    def _call(self, method: Callable[..., T], request: object) -> T:
        try:
            return method(request, timeout=self.timeout)
        except grpc.RpcError as exc:
            raise _error(exc, self.address) from None


def _error(exc: grpc.RpcError, address: str) -> Exception:
    code = exc.code()  # type: ignore[attr-defined]
    details = exc.details() or ""  # type: ignore[attr-defined]
    if code == grpc.StatusCode.UNAVAILABLE:
        return UnavailableError(f"cannot reach memosd at {address}: {details}")
    trailing = dict(exc.trailing_metadata() or ())  # type: ignore[attr-defined]
    return status.error_of(code, details, trailing.get(status.FIELD_KEY))
