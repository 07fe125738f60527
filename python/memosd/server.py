"""The memosd daemon: a grpc.aio server over the operation layer.

Serves every registered service plus grpc.health.v1 and server reflection,
runs the periodic jobs (TTL sweep, access-stat flush, index snapshot), and on
SIGTERM/SIGINT stops gracefully: no new calls, in-flight calls finish, access
stats are flushed, the index snapshot is written and the store is closed.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import signal
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from memosd.config import Config
from memosd.errors import FailedPreconditionError
from memosd.ops.runtime import Runtime
from memosd.service.registry import REGISTRATIONS

log = logging.getLogger("memosd")


async def serve(config: Config) -> None:
    """Run the daemon until SIGTERM or SIGINT."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)

    runtime = await asyncio.to_thread(Runtime, config)
    executor = ThreadPoolExecutor(config.server.max_workers, thread_name_prefix="memosd-op")
    try:
        server, health_servicer = await _build_server(config, runtime, executor)
        # Bind before the slow model load, so that a taken port fails at once.
        port = _bind(server, config.listen)
        if config.embedder.preload:
            await loop.run_in_executor(executor, runtime.embedder.load)
        await server.start()
        # What start-up loaded (the heads of every memory, the model) lives as long as
        # the daemon: out of the cyclic collector's reach, a full collection no longer
        # walks it (74 ms at 100k memories, stalling every call in flight).
        gc.freeze()
        host = config.listen.rsplit(":", 1)[0]
        log.info("memosd ready on %s:%d (data dir %s)", host, port, config.data_dir)
        jobs = _start_jobs(runtime, config, executor)
        await stop.wait()
        log.info("memosd stopping: finishing in-flight calls")
        await health_servicer.enter_graceful_shutdown()
        for job in jobs:
            job.cancel()
        await asyncio.gather(*jobs, return_exceptions=True)
        await server.stop(config.server.grace_seconds)
    finally:
        executor.shutdown(wait=True)
        await asyncio.to_thread(runtime.close)
    log.info("memosd stopped")


async def _build_server(
    config: Config, runtime: Runtime, executor: ThreadPoolExecutor
) -> tuple[grpc.aio.Server, health.aio.HealthServicer]:
    limit = config.limits.max_message_bytes
    server = grpc.aio.server(
        options=[
            ("grpc.max_receive_message_length", limit),
            ("grpc.max_send_message_length", limit),
            # A second daemon on the same port must fail, not share the traffic.
            ("grpc.so_reuseport", 0),
        ]
    )
    names = [register(server, runtime, executor) for register in REGISTRATIONS]
    health_servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    for name in ["", *names]:
        await health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
    reflection.enable_server_reflection(
        [
            *names,
            health_pb2.DESCRIPTOR.services_by_name["Health"].full_name,
            reflection.SERVICE_NAME,
        ],
        server,
    )
    return server, health_servicer


def _bind(server: grpc.aio.Server, address: str) -> int:
    try:
        port = server.add_insecure_port(address)
    except RuntimeError as exc:
        raise FailedPreconditionError(f"cannot listen on {address}: {exc}") from exc
    if port == 0:
        raise FailedPreconditionError(f"cannot listen on {address}")
    return port


def _start_jobs(
    runtime: Runtime, config: Config, executor: ThreadPoolExecutor
) -> list[asyncio.Task[None]]:
    lifecycle = config.lifecycle
    jobs = [
        ("TTL sweep", lifecycle.sweep_interval_seconds, runtime.sweeper.sweep),
        ("access flush", lifecycle.access_flush_interval_seconds, runtime.access.flush),
        ("index snapshot", config.search.snapshot_interval_seconds, runtime.snapshot),
    ]
    return [
        asyncio.create_task(_every(name, interval, job, executor))
        for name, interval, job in jobs
        if interval > 0
    ]


async def _every(
    name: str, interval: float, job: Callable[[], object], executor: ThreadPoolExecutor
) -> None:
    loop = asyncio.get_running_loop()
    while True:
        await asyncio.sleep(interval)
        try:
            await loop.run_in_executor(executor, job)
        except Exception:
            log.exception("%s failed; retrying in %.0fs", name, interval)
