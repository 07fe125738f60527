"""Activation operations in process (real store, tiny model): the refuse policy for
stale activations, pages that survive a new pool, another model's activation, and
the page pool under a budget smaller than one activation."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from memosd.config import ModelConfig
from memosd.errors import FailedPreconditionError, InvalidArgumentError
from memosd.ops.activation import Activations
from memosd.ops.host import ModelHost
from memosd.runtime.fingerprint import Fingerprint
from memosd.store import MemoryDraft, Store

MEMORIES = ["Alice drinks green tea.", "Bob drives a red car."]


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    with Store(tmp_path / "store", map_size=64 << 20) as s:
        yield s


def host(store: Store, tmp_path: Path, model_dir: Path, **settings: object) -> ModelHost:
    config = ModelConfig(path=str(model_dir), tokens_per_page=16, pool_budget_mib=0, **settings)
    return ModelHost(config, tmp_path, store)  # a zero budget: every page is spilled


def seed(store: Store) -> tuple[str, list[str]]:
    cube = store.create_cube("c", time.time())
    drafts = [MemoryDraft(content=m) for m in MEMORIES]
    return cube.id, [r.id for r in store.add_memories(cube.id, drafts, None, time.time())]


def test_stale_activation_is_refused_when_configured(
    store: Store, tmp_path: Path, tiny_model_dir: Path
) -> None:
    model = host(store, tmp_path, tiny_model_dir, stale="refuse")
    ops = Activations(store, model)
    cube_id, ids = seed(store)
    built = ops.build(cube_id, ids)
    runtime = model.runtime()
    loaded = ops.load(cube_id, built.id, runtime)
    assert torch.equal(loaded.kv.keys, runtime.prefill(runtime.template.context_ids(MEMORIES)).keys)

    store.commit_version(
        cube_id, ids[0], lambda head, _: dataclasses.replace(head, content="x"), time.time()
    )
    assert ops.get(cube_id, built.id).stale
    with pytest.raises(FailedPreconditionError, match=r"stale: memory \w+ is at version 2"):
        ops.load(cube_id, built.id, runtime)


def test_pages_come_back_from_the_store_in_a_fresh_host(
    store: Store, tmp_path: Path, tiny_model_dir: Path
) -> None:
    first = Activations(store, host(store, tmp_path, tiny_model_dir))
    cube_id, ids = seed(store)
    built = first.build(cube_id, ids, int8=True)
    assert built.metadata["kv.encoding"] == "int8"
    model = host(store, tmp_path, tiny_model_dir)  # as after a restart
    again = Activations(store, model)
    runtime = model.runtime()
    loaded = again.load(cube_id, built.id, runtime)
    expected = runtime.prefill(runtime.template.context_ids(MEMORIES))
    assert (loaded.kv.keys - expected.keys).abs().max() <= expected.keys.abs().max() / 127
    assert model.pool.stats()["loads"] == int(built.metadata["kv.page_count"])

    again.drop(cube_id, built.id)
    assert again.in_cube(cube_id) == []


def test_another_models_activation_names_the_difference(
    store: Store, tmp_path: Path, tiny_model_dir: Path
) -> None:
    model = host(store, tmp_path, tiny_model_dir)
    ops = Activations(store, model)
    cube_id, ids = seed(store)
    runtime = model.runtime()
    foreign = dataclasses.replace(runtime.fingerprint, tokenizer_sha256="0" * 64)
    built = ops.build(cube_id, ids)
    metadata = {**built.metadata, **foreign.to_metadata()}
    store.commit_version(
        cube_id, built.id, lambda head, _: dataclasses.replace(head, metadata=metadata), time.time()
    )
    with pytest.raises(FailedPreconditionError, match="tokenizer_sha256: built for 000000000000"):
        ops.load(cube_id, built.id, runtime)
    assert Fingerprint.from_metadata(metadata) == foreign


def test_bad_builds_name_their_field(store: Store, tmp_path: Path, tiny_model_dir: Path) -> None:
    ops = Activations(store, host(store, tmp_path, tiny_model_dir))
    cube_id, ids = seed(store)
    with pytest.raises(InvalidArgumentError) as exc:
        ops.build(cube_id, [ids[0], ids[0]])
    assert exc.value.field == "memory_ids"
    built = ops.build(cube_id, ids[:1])
    with pytest.raises(InvalidArgumentError) as exc:
        ops.build(cube_id, [built.id])
    assert exc.value.field == "memory_ids[0]"
    with pytest.raises(InvalidArgumentError) as exc:
        ModelHost(ModelConfig(stale="sometimes"), tmp_path, store)
    assert exc.value.field == "model.stale"
