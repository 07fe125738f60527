"""ActivationService and GenerateService over a real daemon hosting a tiny random Llama:
build, inspect and drop activations; generate with injected KV (same text as a full
prefill in process); staleness; parallel calls; cancellation; another model's
activation refused."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import numpy as np
import pytest
from conftest import build_tiny_model
from daemon_process import DaemonProcess
from memosd._native import kv_unpack
from memosd.runtime.engine import ModelRuntime
from memosd.runtime.generation import GenerationOptions
from memosd.v1 import activation_service_pb2 as apb
from memosd.v1 import activation_service_pb2_grpc as agrpc
from memosd.v1 import generate_service_pb2 as gpb
from memosd.v1 import generate_service_pb2_grpc as ggrpc

MEMORIES = ["Alice drinks green tea.", "Bob drives a red car.", "Meetings are on Thursday."]
PROMPT = "What does Alice drink?"


class Api:
    def __init__(self, daemon: DaemonProcess) -> None:
        self.channel = grpc.insecure_channel(daemon.address)
        self.activations = agrpc.ActivationServiceStub(self.channel)
        self.generate = ggrpc.GenerateServiceStub(self.channel)
        self.client = daemon.client()

    def close(self) -> None:
        self.client.close()
        self.channel.close()

    def run(self, **fields: object) -> tuple[str, gpb.GenerateResponse]:
        replies = list(self.generate.Generate(gpb.GenerateRequest(**fields), timeout=120))
        assert replies[-1].done and all(not r.done for r in replies[:-1])
        return "".join(r.text for r in replies), replies[-1]


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_model(tmp_path_factory.mktemp("service-model"))


@pytest.fixture(scope="module")
def daemon(tmp_path_factory: pytest.TempPathFactory, model_dir: Path) -> Iterator[DaemonProcess]:
    env = {
        "MEMOSD_MODEL_PATH": str(model_dir),
        "MEMOSD_MODEL_TOKENS_PER_PAGE": "32",
        "MEMOSD_MODEL_POOL_BUDGET_MIB": "1",
        "MEMOSD_STORE_INITIAL_MAP_MIB": "64",
        "MEMOSD_EMBEDDER_PRELOAD": "false",
    }
    process = DaemonProcess(tmp_path_factory.mktemp("memosd-model") / "data", env).start()
    try:
        yield process
    finally:
        process.shutdown()


@pytest.fixture(scope="module")
def api(daemon: DaemonProcess) -> Iterator[Api]:
    a = Api(daemon)
    yield a
    a.close()


@pytest.fixture(scope="module")
def reference(model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> ModelRuntime:
    return ModelRuntime.load(model_dir, tmp_path_factory.mktemp("cache"))


@pytest.fixture(scope="module")
def cube(api: Api) -> tuple[str, list[str]]:
    cube_id = api.client.create_cube("activations").id
    return cube_id, api.client.add(cube_id, MEMORIES)


def build(api: Api, cube_id: str, memory_ids: list[str]) -> apb.BuildActivationResponse:
    request = apb.BuildActivationRequest(cube_id=cube_id, memory_ids=memory_ids)
    return api.activations.BuildActivation(request, timeout=120)


def test_build_get_and_generate_with_injected_kv(
    api: Api, cube: tuple[str, list[str]], reference: ModelRuntime
) -> None:
    cube_id, ids = cube
    memory = build(api, cube_id, ids).memory
    assert memory.type == 2  # MEMORY_TYPE_ACTIVATION
    assert [(r.memory_id, r.version) for r in memory.lineage] == [(i, 1) for i in ids]
    assert memory.metadata["fingerprint.weights_sha256"] == reference.fingerprint.weights_sha256

    stream = api.activations.GetActivation(
        apb.GetActivationRequest(cube_id=cube_id, activation_id=memory.id, include_pages=True)
    )
    first, *pages = list(stream)
    info = first.info
    context = reference.template.context_ids(MEMORIES)
    assert info.tokens == len(context) and not info.stale and list(info.problems) == []
    assert len(pages) == info.page_count == -(-len(context) // 32)
    keys, _ = kv_unpack([p.page for p in pages])
    assert np.allclose(keys, reference.prefill(context).keys.numpy(), atol=1e-5)

    text, last = api.run(
        cube_ids=[cube_id], prompt=PROMPT, activation_ids=[memory.id], max_new_tokens=16
    )
    assert last.kv_injected and last.activation_id == memory.id
    assert last.prefix_tokens == len(context) and last.completion_tokens == 16
    assert last.finish_reason == "length" and last.ttft_ms > 0
    used = [(r.memory_id, r.version) for r in last.memories_used]
    assert used == [(memory.id, 1), *[(i, 1) for i in ids]]
    turn = reference.template.turn_ids(MEMORIES, prompt=PROMPT)
    expected = reference.generate(context + turn, None, GenerationOptions(max_new_tokens=16))
    assert text == "".join(expected)

    listed = api.activations.ListActivations(apb.ListActivationsRequest(cube_id=cube_id))
    assert memory.id in [a.memory.id for a in listed.activations]


def test_generate_without_activation_and_auto(api: Api, cube: tuple[str, list[str]]) -> None:
    cube_id, ids = cube
    _, plain = api.run(cube_ids=[cube_id], prompt=PROMPT, max_new_tokens=4)
    assert not plain.kv_injected and plain.prefix_tokens == 0
    _, auto = api.run(cube_ids=[cube_id], prompt=PROMPT, auto_activation=True, max_new_tokens=4)
    assert auto.kv_injected
    _, retrieved = api.run(cube_ids=[cube_id], prompt="green tea", top_k=2, max_new_tokens=4)
    assert {r.memory_id for r in retrieved.memories_used} <= set(ids)
    assert len(retrieved.memories_used) == 2


def test_a_stale_activation_is_rebuilt(api: Api, cube: tuple[str, list[str]]) -> None:
    cube_id, _ = cube
    ids = api.client.add(cube_id, ["Carol plays the cello.", "Dan bakes bread."])
    old = build(api, cube_id, ids).memory
    api.client.update(cube_id, ids[1], content="Dan bakes sourdough bread.")
    [info] = list(
        api.activations.GetActivation(
            apb.GetActivationRequest(cube_id=cube_id, activation_id=old.id)
        )
    )
    assert info.info.stale and "version 2, built from 1" in info.info.problems[0]
    _, last = api.run(
        cube_ids=[cube_id], prompt="Who bakes?", activation_ids=[old.id], max_new_tokens=2
    )
    assert last.kv_injected and last.activation_id != old.id
    used = {(r.memory_id, r.version) for r in last.memories_used}
    assert (ids[1], 2) in used and (ids[1], 1) not in used


def test_bad_requests_name_the_field(api: Api, cube: tuple[str, list[str]]) -> None:
    cube_id, ids = cube
    cases = [
        (dict(cube_ids=[cube_id], prompt=PROMPT, activation_ids=["a", "b"]), "activation_ids"),
        (dict(cube_ids=[cube_id], prompt=""), "prompt"),
        (dict(cube_ids=[cube_id], prompt=PROMPT, temperature=-1.0), "temperature"),
    ]
    for fields, field in cases:
        with pytest.raises(grpc.RpcError) as exc:
            api.run(**fields)
        assert exc.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert dict(exc.value.trailing_metadata())["memosd-field"] == field
    with pytest.raises(grpc.RpcError) as exc:
        api.run(cube_ids=[cube_id], prompt=PROMPT, activation_ids=[ids[0]])
    assert exc.value.code() == grpc.StatusCode.NOT_FOUND
    with pytest.raises(grpc.RpcError) as exc:
        build(api, cube_id, [ids[0], ids[0]])
    assert exc.value.code() == grpc.StatusCode.INVALID_ARGUMENT


def test_parallel_generations_agree_with_sequential_ones(
    api: Api, cube: tuple[str, list[str]]
) -> None:
    cube_id, _ = cube
    prompts = [f"Tell me fact number {i}." for i in range(3)]
    expected = [api.run(cube_ids=[cube_id], prompt=p, max_new_tokens=12)[0] for p in prompts]
    results: dict[int, str] = {}
    threads = [
        threading.Thread(
            target=lambda i=i: results.__setitem__(
                i, api.run(cube_ids=[cube_id], prompt=prompts[i], max_new_tokens=12)[0]
            )
        )
        for i in range(len(prompts))
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert [results.get(i) for i in range(len(prompts))] == expected


def test_cancelled_generation_stops_in_the_daemon(api: Api, daemon: DaemonProcess) -> None:
    call = api.generate.Generate(gpb.GenerateRequest(prompt="Count forever.", max_new_tokens=4000))
    next(call)
    call.cancel()
    deadline = time.monotonic() + 30
    while "generation ended (cancelled)" not in daemon.log() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert "generation ended (cancelled)" in daemon.log()
    # The daemon serves on.
    assert api.run(prompt="Again.", max_new_tokens=2)[1].completion_tokens <= 2


def test_generation_stops_when_the_deadline_passes(api: Api, daemon: DaemonProcess) -> None:
    def ended() -> int:
        log = daemon.log()
        return log.count("generation ended (deadline)") + log.count("generation ended (cancelled)")

    request = gpb.GenerateRequest(prompt="Count forever.", max_new_tokens=4000)
    # The tiny model is fast: give the call a quarter of what the whole (greedy, so
    # repeatable) generation takes once warm. The first long generation is not timed:
    # it pays one-time costs (allocations, caches) that made it several times slower.
    full = api.run(prompt=request.prompt, max_new_tokens=request.max_new_tokens)[1]
    started = time.monotonic()
    api.run(prompt=request.prompt, max_new_tokens=request.max_new_tokens)
    timeout = (time.monotonic() - started) / 4
    assert full.completion_tokens > 100

    # A slow moment of the machine while timing can make the quarter long enough for a
    # whole generation; then the call ends normally, and a shorter deadline is tried.
    for _ in range(4):
        before = ended()
        # The client sees DEADLINE_EXCEEDED, or, when the daemon notices the deadline a
        # moment first, a stream that ends early with finish reason "deadline".
        try:
            replies = list(api.generate.Generate(request, timeout=timeout))
        except grpc.RpcError as exc:
            assert exc.code() == grpc.StatusCode.DEADLINE_EXCEEDED
            break
        if replies[-1].finish_reason == "deadline":
            assert replies[-1].completion_tokens < full.completion_tokens
            break
        assert replies[-1].finish_reason == full.finish_reason
        assert replies[-1].completion_tokens == full.completion_tokens
        timeout /= 2
    else:
        pytest.fail("no generation was cut short by its deadline")
    deadline = time.monotonic() + 30
    while ended() == before and time.monotonic() < deadline:
        time.sleep(0.1)
    assert ended() == before + 1
    assert api.run(prompt="Again.", max_new_tokens=2)[1].completion_tokens <= 2


def test_another_models_activation_is_refused(
    api: Api, daemon: DaemonProcess, cube: tuple[str, list[str]], tmp_path: Path
) -> None:
    cube_id, ids = cube
    built = build(api, cube_id, ids[:1]).memory
    api.close()
    daemon.stop()
    daemon.extra_env["MEMOSD_MODEL_PATH"] = str(build_tiny_model(tmp_path / "other", seed=1))
    daemon.start()
    other = Api(daemon)
    try:
        with pytest.raises(grpc.RpcError) as exc:
            other.run(cube_ids=[cube_id], prompt=PROMPT, activation_ids=[built.id])
        assert exc.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert "weights_sha256" in (exc.value.details() or "")
    finally:
        other.close()
