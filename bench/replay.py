"""Search calls through the native load generator (``bench/loadgen``, memosd-loadgen).

The benchmark's Python client threads share the machine's two cores with the daemon
and spend about as much CPU per call as the daemon's own gRPC layer. Replaying the
same requests, encoded here by the generated protobuf classes, from a Rust client on
one thread measures the daemon with a fraction of that load beside it.
"""

from __future__ import annotations

import json
import struct
import subprocess
import tempfile
from functools import cache
from pathlib import Path

from memosd.v1 import memory_service_pb2 as pb
from memosd.v1 import types_pb2

ROOT = Path(__file__).resolve().parent.parent
METHOD = "/memosd.v1.MemoryService/SearchMemories"


def search_request(cube: str, query: str, mode: str) -> pb.SearchMemoriesRequest:
    """The benchmark's search call: top 10 of one cube in ``mode`` (HYBRID, ...)."""
    mode_value = types_pb2.SearchMode.Value(f"SEARCH_MODE_{mode}")
    return pb.SearchMemoriesRequest(cube_ids=[cube], query=query, top_k=10, mode=mode_value)


@cache
def loadgen() -> Path:
    """The release build of memosd-loadgen, built on first use (about a minute)."""
    cargo = ["cargo", "build", "--release", "--quiet", "-p", "memosd-loadgen"]
    subprocess.run(cargo, cwd=ROOT, check=True)
    metadata = ["cargo", "metadata", "--format-version", "1", "--no-deps"]
    out = subprocess.run(metadata, cwd=ROOT, check=True, capture_output=True, text=True).stdout
    return Path(json.loads(out)["target_directory"]) / "release" / "memosd-loadgen"


def write_frames(path: Path, messages: list[bytes]) -> None:
    """Each message behind its little-endian u32 length, as memosd-loadgen reads them."""
    path.write_bytes(b"".join(struct.pack("<I", len(m)) + m for m in messages))


def read_frames(path: Path) -> list[bytes]:
    data, frames, at = path.read_bytes(), [], 0
    while at < len(data):
        (n,) = struct.unpack_from("<I", data, at)
        frames.append(data[at + 4 : at + 4 + n])
        at += 4 + n
    return frames


def search_calls(
    address: str, cube: str, queries: list[str], clients: int, mode: str = "HYBRID"
) -> tuple[list[float], float, float]:
    """Every query once as a SearchMemories call (top_k 10), from ``clients``
    connections in a closed loop: (latencies in seconds, wall seconds, the load
    generator's CPU seconds). Fails unless every call returned hits."""
    requests = [search_request(cube, q, mode).SerializeToString() for q in queries]
    with tempfile.TemporaryDirectory(prefix="memosd-loadgen-") as tmp:
        request_file, response_file = Path(tmp) / "requests", Path(tmp) / "responses"
        write_frames(request_file, requests)
        command = [str(loadgen()), "--address", address, "--method", METHOD]
        command += ["--clients", str(clients), "--requests", str(request_file)]
        command += ["--responses", str(response_file)]
        run = subprocess.run(command, capture_output=True, text=True)
        if run.returncode != 0:
            raise RuntimeError(run.stderr.strip())
        report = json.loads(run.stdout)
        responses = read_frames(response_file)
    if len(responses) != len(queries):
        raise RuntimeError(f"{len(responses)} responses to {len(queries)} queries")
    for query, raw in zip(queries, responses, strict=True):
        if not pb.SearchMemoriesResponse.FromString(raw).hits:
            raise RuntimeError(f"no hits for {query!r}")
    latencies = [ms / 1000 for ms in report["latencies_ms"]]
    return latencies, report["wall_s"], report["cpu_s"]
