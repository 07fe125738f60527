"""The model runtime: injected KV (packed, paged through a real store, unpacked)
against a full prefill, on a tiny random Llama and on SmolLM2; int8 pages;
fingerprints; parallel generation; cancellation and stop strings."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from conftest import MODEL_CACHE, build_tiny_model
from memosd._native import KvPagePool
from memosd.errors import CorruptDataError, InvalidArgumentError
from memosd.runtime import kvcache, locate
from memosd.runtime.engine import ModelRuntime
from memosd.runtime.fingerprint import Fingerprint
from memosd.runtime.generation import GenerationOptions
from memosd.runtime.kvcache import KvTensors
from memosd.runtime.template import Message
from memosd.store import Store

MEMORIES = [
    "Alice's favourite drink is green tea.",
    "Bob drives a red 1967 Mustang.",
    "The team meeting moved to Thursday at 10am.",
]
QUESTION = "What does Alice like to drink?"


@pytest.fixture(scope="session")
def tiny(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> ModelRuntime:
    return ModelRuntime.load(tiny_model_dir, tmp_path_factory.mktemp("model-cache"))


@pytest.fixture(scope="session")
def smollm2() -> ModelRuntime:
    return ModelRuntime.load(None, MODEL_CACHE)


@pytest.fixture(params=["tiny", "smollm2"])
def rt(request: pytest.FixtureRequest) -> ModelRuntime:
    runtime: ModelRuntime = request.getfixturevalue(request.param)
    return runtime


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    with Store(tmp_path / "store", map_size=256 << 20) as s:
        yield s


def through_pages(kv: KvTensors, store: Store, dtype: torch.dtype, encoding: str) -> KvTensors:
    """Packs into a pool whose budget holds half the pages, so that some are spilled
    to the store and loaded back, then unpacks."""
    pages = kvcache.pack(kv, tokens_per_page=16, encoding=encoding)
    budget = sum(map(len, pages)) // 2
    pool = KvPagePool(budget, store.put_blob, store.get_blob)
    names = kvcache.pack_into_pool(pool, "act", kv, tokens_per_page=16, encoding=encoding)
    assert pool.stats()["spills"] > 0
    loaded = kvcache.unpack_from_pool(pool, names, dtype)
    assert pool.stats()["loads"] > 0
    return loaded


def prompt_ids(rt: ModelRuntime) -> tuple[list[int], list[int]]:
    return rt.template.context_ids(MEMORIES), rt.template.turn_ids(MEMORIES, prompt=QUESTION)


def test_injected_kv_gives_the_logits_and_output_of_a_full_prefill(
    rt: ModelRuntime, store: Store
) -> None:
    context, turn = prompt_ids(rt)
    kv = rt.prefill(context)
    assert kv.tokens == len(context)
    loaded = through_pages(kv, store, rt.kv_dtype, "raw")
    assert torch.equal(loaded.keys, kv.keys) and torch.equal(loaded.values, kv.values)

    full = rt.next_logits(context + turn)
    injected = rt.next_logits(turn, loaded)
    assert (injected - full).abs().max().item() < 1e-4

    options = GenerationOptions(max_new_tokens=12)
    reference = rt.generate(context + turn, None, options)
    with_kv = rt.generate(turn, loaded, options)
    assert "".join(with_kv) == "".join(reference)
    assert with_kv.stats.token_ids == reference.stats.token_ids
    assert with_kv.stats.prefix_tokens == len(context) and with_kv.stats.prompt_tokens == len(turn)
    assert with_kv.stats.ttft_ms > 0


def test_int8_pages_halve_the_size_and_keep_greedy_output(rt: ModelRuntime, store: Store) -> None:
    context, turn = prompt_ids(rt)
    kv = rt.prefill(context)
    half = KvTensors(kv.keys.half(), kv.values.half())
    f16_bytes = sum(map(len, kvcache.pack(half, tokens_per_page=64)))
    int8_bytes = sum(map(len, kvcache.pack(kv, tokens_per_page=64, encoding="int8")))
    assert int8_bytes / f16_bytes < 0.56

    loaded = through_pages(kv, store, rt.kv_dtype, "int8")
    full = rt.next_logits(context + turn)
    injected = rt.next_logits(turn, loaded)
    assert torch.argmax(injected) == torch.argmax(full)
    assert (injected - full).abs().max().item() < 0.05 * full.abs().max().item()
    options = GenerationOptions(max_new_tokens=8)
    reference = rt.generate(context + turn, None, options)
    with_kv = rt.generate(turn, loaded, options)
    assert "".join(with_kv) == "".join(reference)


def test_a_different_model_or_adapter_is_named_in_the_difference(
    tiny: ModelRuntime, tmp_path: Path
) -> None:
    other = ModelRuntime.load(build_tiny_model(tmp_path / "other", seed=1), tmp_path / "cache")
    diff = tiny.fingerprint.differences(other.fingerprint)
    assert len(diff) == 1 and diff[0].startswith("weights_sha256: built for ")
    assert tiny.fingerprint.differences(tiny.fingerprint) == []
    adapted = tiny.fingerprint.with_adapter("adapter-1")
    assert tiny.fingerprint.differences(adapted) == ["adapter: built for (none), loaded adapter-1"]
    meta = adapted.to_metadata()
    assert Fingerprint.from_metadata(meta) == adapted
    del meta["fingerprint.tokenizer_sha256"]
    with pytest.raises(CorruptDataError):
        Fingerprint.from_metadata(meta)


def test_parallel_generations_match_sequential_ones(tiny: ModelRuntime) -> None:
    prompts = [f"Question number {i}: what is {i} plus {i}?" for i in range(4)]
    options = GenerationOptions(max_new_tokens=16)

    def run(prompt: str) -> list[int]:
        g = tiny.generate(
            tiny.template.context_ids(MEMORIES) + tiny.template.turn_ids(MEMORIES, prompt),
            None,
            options,
        )
        list(g)
        return g.stats.token_ids

    expected = [run(p) for p in prompts]
    results: dict[int, list[int]] = {}
    threads = [
        threading.Thread(target=lambda i=i: results.__setitem__(i, run(prompts[i])))
        for i in range(len(prompts))
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert [results.get(i) for i in range(len(prompts))] == expected


def test_cancellation_stops_between_tokens(tiny: ModelRuntime) -> None:
    context, turn = prompt_ids(tiny)
    steps = 0

    def should_stop() -> str | None:
        nonlocal steps
        steps += 1
        return "cancelled" if steps > 3 else None

    g = tiny.generate(context + turn, None, GenerationOptions(max_new_tokens=50), should_stop)
    list(g)
    assert g.stats.finish_reason == "cancelled" and g.stats.generated_tokens == 3


def test_stop_strings_end_the_text_without_it(smollm2: ModelRuntime) -> None:
    context, turn = prompt_ids(smollm2)
    full = "".join(smollm2.generate(context + turn, None, GenerationOptions(max_new_tokens=20)))
    words = full.split()
    assert len(words) >= 4, full
    stop = words[3]
    g = smollm2.generate(context + turn, None, GenerationOptions(max_new_tokens=20, stop=(stop,)))
    text = "".join(g)
    assert text == full[: full.index(stop)] and g.stats.finish_reason == "stop"


def test_seeded_sampling_is_reproducible(tiny: ModelRuntime) -> None:
    context, turn = prompt_ids(tiny)
    options = GenerationOptions(max_new_tokens=10, temperature=0.9, seed=7)
    runs = []
    for _ in range(2):
        g = tiny.generate(context + turn, None, options)
        list(g)
        runs.append(g.stats.token_ids)
    assert runs[0] == runs[1]


def test_context_block_is_a_prefix_of_the_rendered_conversation(smollm2: ModelRuntime) -> None:
    tok = smollm2.tokenizer
    context, turn = prompt_ids(smollm2)
    text = tok.decode(context + turn)
    assert text.startswith("<|im_start|>system\nYou are a helpful assistant. Use these memories")
    assert "[2] Bob drives a red 1967 Mustang." in text
    assert text.endswith(f"<|im_start|>user\n{QUESTION}<|im_end|>\n<|im_start|>assistant\n")
    retrieved = smollm2.template.turn_ids([], messages=[Message("user", "Hi")], retrieved=["x"])
    assert "Relevant memories:\n[1] x\n\nHi" in tok.decode(retrieved)


def test_bad_options_and_conversations_name_their_field(tiny: ModelRuntime) -> None:
    for kwargs, field in [
        ({"max_new_tokens": 0}, "max_new_tokens"),
        ({"temperature": -1.0}, "temperature"),
        ({"stop": ("",)}, "stop"),
    ]:
        with pytest.raises(InvalidArgumentError) as exc:
            GenerationOptions(**kwargs)  # type: ignore[arg-type]
        assert exc.value.field == field
    with pytest.raises(InvalidArgumentError) as exc:
        tiny.template.turn_ids([], prompt="a", messages=[Message("user", "b")])
    assert exc.value.field == "prompt"
    with pytest.raises(InvalidArgumentError) as exc:
        tiny.template.turn_ids([], messages=[Message("system", "b")])
    assert exc.value.field == "messages[0].role"


def test_the_converted_gguf_is_reused(smollm2: ModelRuntime) -> None:
    started = time.perf_counter()
    source = locate.resolve(None, MODEL_CACHE)
    assert time.perf_counter() - started < 10  # hashing the GGUF, no conversion
    assert (source.folder / locate.MARKER).is_file()
    assert source.weights_sha256 == smollm2.fingerprint.weights_sha256
