"""MemoryService: plaintext memories (CRUD, history, rollback, list, search)."""

from __future__ import annotations

from concurrent.futures import Executor

import grpc

from memosd.ops.memories import MemoryUpdate, NewMemory
from memosd.ops.runtime import Runtime
from memosd.service import convert
from memosd.service.guard import Servicer, rpc
from memosd.v1 import memory_service_pb2 as pb
from memosd.v1 import memory_service_pb2_grpc as pb_grpc


class MemoryServicer(Servicer, pb_grpc.MemoryServiceServicer):
    @rpc
    async def AddMemories(
        self, request: pb.AddMemoriesRequest, context: object
    ) -> pb.AddMemoriesResponse:
        items = [
            NewMemory(
                content=m.content,
                tags=tuple(m.tags),
                metadata=dict(m.metadata),
                priority=m.priority,
                ttl_seconds=m.ttl_seconds if m.HasField("ttl_seconds") else None,
                source=m.source if m.HasField("source") else None,
                lineage=[(ref.memory_id, ref.version) for ref in m.lineage],
            )
            for m in request.memories
        ]
        records = await self.run(self.runtime.memories.add, request.cube_id, items)
        return pb.AddMemoriesResponse(ids=[r.id for r in records])

    @rpc
    async def GetMemory(
        self, request: pb.GetMemoryRequest, context: object
    ) -> pb.GetMemoryResponse:
        version = request.version if request.HasField("version") else None
        record = await self.run(
            self.runtime.memories.get, request.cube_id, request.memory_id, version
        )
        return pb.GetMemoryResponse(memory=convert.memory(record))

    @rpc
    async def UpdateMemory(
        self, request: pb.UpdateMemoryRequest, context: object
    ) -> pb.UpdateMemoryResponse:
        update = MemoryUpdate(
            content=request.content if request.HasField("content") else None,
            tags=tuple(request.tags.values) if request.HasField("tags") else None,
            metadata=dict(request.metadata.entries) if request.HasField("metadata") else None,
            priority=request.priority if request.HasField("priority") else None,
            ttl_seconds=request.ttl_seconds if request.HasField("ttl_seconds") else None,
            state=convert.state_name(request.state, "state") if request.HasField("state") else None,
        )
        expected = request.expected_version if request.HasField("expected_version") else None
        record = await self.run(
            self.runtime.memories.update, request.cube_id, request.memory_id, update, expected
        )
        return pb.UpdateMemoryResponse(memory=convert.memory(record))

    @rpc
    async def DeleteMemory(
        self, request: pb.DeleteMemoryRequest, context: object
    ) -> pb.DeleteMemoryResponse:
        record = await self.run(
            self.runtime.memories.delete, request.cube_id, request.memory_id, request.purge
        )
        if record is None:
            return pb.DeleteMemoryResponse()
        return pb.DeleteMemoryResponse(memory=convert.memory(record))

    @rpc
    async def SearchMemories(
        self, request: pb.SearchMemoriesRequest, context: object
    ) -> pb.SearchMemoriesResponse:
        flt = convert.memory_filter(request.filter)
        hits = await self.runtime.search.search(
            request.cube_ids,
            request.query,
            request.top_k,
            convert.mode_name(request.mode),
            flt,
        )
        response = pb.SearchMemoriesResponse()
        for record, score in hits:
            convert.memory(record, into=response.hits.add(score=score).memory)
        return response

    @rpc
    async def ListMemories(
        self, request: pb.ListMemoriesRequest, context: object
    ) -> pb.ListMemoriesResponse:
        flt = convert.memory_filter(request.filter)
        records, token = await self.run(
            self.runtime.memories.list, request.cube_id, request.page_size, request.page_token, flt
        )
        return pb.ListMemoriesResponse(
            memories=[convert.memory(r) for r in records], next_page_token=token
        )

    @rpc
    async def GetHistory(
        self, request: pb.GetHistoryRequest, context: object
    ) -> pb.GetHistoryResponse:
        versions = await self.run(self.runtime.memories.history, request.cube_id, request.memory_id)
        return pb.GetHistoryResponse(versions=[convert.memory(r) for r in versions])

    @rpc
    async def Rollback(self, request: pb.RollbackRequest, context: object) -> pb.RollbackResponse:
        expected = request.expected_version if request.HasField("expected_version") else None
        record = await self.run(
            self.runtime.memories.rollback,
            request.cube_id,
            request.memory_id,
            request.version,
            expected,
        )
        return pb.RollbackResponse(memory=convert.memory(record))


def register(server: grpc.aio.Server, runtime: Runtime, executor: Executor) -> str:
    pb_grpc.add_MemoryServiceServicer_to_server(MemoryServicer(runtime, executor), server)
    return pb.DESCRIPTOR.services_by_name["MemoryService"].full_name
