"""ActivationService: KV caches of the hosted model built from plaintext memories."""

from __future__ import annotations

from collections.abc import AsyncIterator
from concurrent.futures import Executor

import grpc

from memosd.ops.activation import Activation
from memosd.ops.runtime import Runtime
from memosd.service import convert
from memosd.service.guard import Servicer, rpc
from memosd.service.streaming import stream_rpc
from memosd.v1 import activation_service_pb2 as pb
from memosd.v1 import activation_service_pb2_grpc as pb_grpc


def info(activation: Activation) -> pb.ActivationInfo:
    return pb.ActivationInfo(
        memory=convert.memory(activation.record),
        tokens=activation.tokens,
        bytes=activation.bytes,
        page_count=len(activation.digests),
        encoding=activation.encoding,
        stale=activation.stale,
        problems=activation.problems,
    )


class ActivationServicer(Servicer, pb_grpc.ActivationServiceServicer):
    @rpc
    async def BuildActivation(
        self, request: pb.BuildActivationRequest, context: object
    ) -> pb.BuildActivationResponse:
        flt = convert.memory_filter(request.filter) if request.HasField("filter") else None
        int8 = request.int8 if request.HasField("int8") else None
        record = await self.run(
            self.runtime.model.activations.build,
            request.cube_id,
            list(request.memory_ids),
            flt,
            request.limit,
            int8,
        )
        return pb.BuildActivationResponse(memory=convert.memory(record))

    @stream_rpc
    async def GetActivation(
        self, request: pb.GetActivationRequest, context: object
    ) -> AsyncIterator[pb.GetActivationResponse]:
        ops = self.runtime.model.activations
        activation = await self.run(ops.get, request.cube_id, request.activation_id)
        yield pb.GetActivationResponse(info=info(activation))
        if request.include_pages:
            for page in await self.run(ops.pages, activation.record):
                yield pb.GetActivationResponse(page=page)

    @rpc
    async def ListActivations(
        self, request: pb.ListActivationsRequest, context: object
    ) -> pb.ListActivationsResponse:
        found = await self.run(self.runtime.model.activations.in_cube, request.cube_id)
        return pb.ListActivationsResponse(activations=[info(a) for a in found])

    @rpc
    async def DropActivation(
        self, request: pb.DropActivationRequest, context: object
    ) -> pb.DropActivationResponse:
        await self.run(self.runtime.model.activations.drop, request.cube_id, request.activation_id)
        return pb.DropActivationResponse()


def register(server: grpc.aio.Server, runtime: Runtime, executor: Executor) -> str:
    pb_grpc.add_ActivationServiceServicer_to_server(ActivationServicer(runtime, executor), server)
    return pb.DESCRIPTOR.services_by_name["ActivationService"].full_name
