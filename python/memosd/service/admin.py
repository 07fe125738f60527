"""AdminService: daemon statistics."""

from __future__ import annotations

import time
from concurrent.futures import Executor

import grpc

import memosd
from memosd.ops.runtime import Runtime
from memosd.service.guard import Servicer, rpc
from memosd.v1 import admin_service_pb2 as pb
from memosd.v1 import admin_service_pb2_grpc as pb_grpc


class AdminServicer(Servicer, pb_grpc.AdminServiceServicer):
    @rpc
    async def GetStats(self, request: pb.GetStatsRequest, context: object) -> pb.GetStatsResponse:
        stats = await self.run(self.runtime.store.stats)
        return pb.GetStatsResponse(
            version=memosd.__version__,
            uptime_seconds=time.time() - self.runtime.started_at,
            cubes=stats.cubes,
            memories=stats.memories,
            versions=stats.versions,
            store_seq=stats.seq,
            store_used_bytes=stats.used_bytes,
            store_map_bytes=stats.map_bytes,
            data_dir=str(self.runtime.config.data_dir),
            indexed_memories=len(self.runtime.engine),
        )


def register(server: grpc.aio.Server, runtime: Runtime, executor: Executor) -> str:
    pb_grpc.add_AdminServiceServicer_to_server(AdminServicer(runtime, executor), server)
    return pb.DESCRIPTOR.services_by_name["AdminService"].full_name
