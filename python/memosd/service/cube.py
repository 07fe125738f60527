"""CubeService: MemCube management."""

from __future__ import annotations

from concurrent.futures import Executor

import grpc

from memosd.ops.runtime import Runtime
from memosd.service import convert
from memosd.service.guard import Servicer, rpc
from memosd.v1 import cube_service_pb2 as pb
from memosd.v1 import cube_service_pb2_grpc as pb_grpc


class CubeServicer(Servicer, pb_grpc.CubeServiceServicer):
    @rpc
    async def CreateCube(
        self, request: pb.CreateCubeRequest, context: object
    ) -> pb.CreateCubeResponse:
        cube = await self.run(self.runtime.cubes.create, request.name)
        return pb.CreateCubeResponse(cube=convert.cube(cube))

    @rpc
    async def GetCube(self, request: pb.GetCubeRequest, context: object) -> pb.GetCubeResponse:
        cube = await self.run(self.runtime.cubes.get, request.cube_id)
        return pb.GetCubeResponse(cube=convert.cube(cube))

    @rpc
    async def ListCubes(
        self, request: pb.ListCubesRequest, context: object
    ) -> pb.ListCubesResponse:
        cubes = await self.run(self.runtime.cubes.list)
        return pb.ListCubesResponse(cubes=[convert.cube(c) for c in cubes])

    @rpc
    async def DeleteCube(
        self, request: pb.DeleteCubeRequest, context: object
    ) -> pb.DeleteCubeResponse:
        removed = await self.run(self.runtime.cubes.delete, request.cube_id)
        return pb.DeleteCubeResponse(deleted_memories=removed)


def register(server: grpc.aio.Server, runtime: Runtime, executor: Executor) -> str:
    pb_grpc.add_CubeServiceServicer_to_server(CubeServicer(runtime, executor), server)
    return pb.DESCRIPTOR.services_by_name["CubeService"].full_name
