"""GenerateService: streaming generation with activation and plaintext memories.

Generation runs in the operation thread pool one token at a time; it stops at
the next token when the client cancels or the deadline passes.
"""

from __future__ import annotations

import threading
import time
from collections.abc import AsyncIterator
from concurrent.futures import Executor

import grpc

from memosd.ops.generate import GenerateCall, GenerateSummary
from memosd.ops.runtime import Runtime
from memosd.runtime.generation import GenerationOptions
from memosd.runtime.template import Message
from memosd.service.guard import Servicer
from memosd.service.streaming import pumped, stream_rpc
from memosd.v1 import generate_service_pb2 as pb
from memosd.v1 import generate_service_pb2_grpc as pb_grpc
from memosd.v1 import types_pb2

DEFAULT_MAX_NEW_TOKENS = 128


def call_of(request: pb.GenerateRequest) -> GenerateCall:
    options = GenerationOptions(
        max_new_tokens=request.max_new_tokens or DEFAULT_MAX_NEW_TOKENS,
        temperature=request.temperature,
        stop=tuple(request.stop),
        seed=request.seed if request.HasField("seed") else None,
    )
    return GenerateCall(
        cube_ids=tuple(request.cube_ids),
        prompt=request.prompt,
        messages=tuple(Message(m.role, m.content) for m in request.messages),
        activation_ids=tuple(request.activation_ids),
        auto_activation=request.auto_activation,
        top_k=request.top_k,
        options=options,
    )


def last_message(summary: GenerateSummary) -> pb.GenerateResponse:
    return pb.GenerateResponse(
        done=True,
        ttft_ms=summary.ttft_ms,
        kv_injected=summary.kv_injected,
        prefix_tokens=summary.prefix_tokens,
        prompt_tokens=summary.prompt_tokens,
        completion_tokens=summary.completion_tokens,
        finish_reason=summary.finish_reason,
        memories_used=[
            types_pb2.MemoryRef(memory_id=r.memory_id, version=r.version)
            for r in summary.memories_used
        ],
        activation_id=summary.activation_id,
    )


class GenerateServicer(Servicer, pb_grpc.GenerateServiceServicer):
    @stream_rpc
    async def Generate(
        self, request: pb.GenerateRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[pb.GenerateResponse]:
        started = time.perf_counter()
        call = call_of(request)
        cancelled = threading.Event()
        remaining = context.time_remaining()
        deadline = None if remaining is None else time.monotonic() + remaining

        def should_stop() -> str | None:
            if cancelled.is_set():
                return "cancelled"
            if deadline is not None and time.monotonic() >= deadline:
                return "deadline"
            return None

        stream = self.runtime.model.generator.stream(call, should_stop, started)
        try:
            async for item in pumped(self, stream):
                if isinstance(item, GenerateSummary):
                    yield last_message(item)
                else:
                    yield pb.GenerateResponse(text=item)
        finally:
            # A cancelled call's generation stops at its next token.
            cancelled.set()


def register(server: grpc.aio.Server, runtime: Runtime, executor: Executor) -> str:
    pb_grpc.add_GenerateServiceServicer_to_server(GenerateServicer(runtime, executor), server)
    return pb.DESCRIPTOR.services_by_name["GenerateService"].full_name
