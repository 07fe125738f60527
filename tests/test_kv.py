"""KV pages through Python: pack/unpack round trips, int8, corruption, the page pool
and its spilling to a real store's blob table."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from memosd._native import KvPagePool, kv_pack, kv_page_header, kv_unpack, kv_verify_page
from memosd.errors import CorruptDataError, InvalidArgumentError, NotFoundError
from memosd.store import Store

SHAPE = (3, 2, 37, 8)  # layers, kv heads, tokens, head dim ("LHSD")


def kv(dtype: str, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    np_dtype = {"f32": np.float32, "f16": np.float16}.get(dtype)
    if np_dtype is None:  # bf16 travels as uint16 bits; any bits round-trip
        return tuple(rng.integers(0, 1 << 16, SHAPE, dtype=np.uint16) for _ in range(2))
    return tuple(rng.standard_normal(SHAPE).astype(np_dtype) for _ in range(2))


def pack(keys: np.ndarray, values: np.ndarray, dtype: str, **kw: object) -> list[bytes]:
    opts = {"layout": "LHSD", "dtype": dtype, "shape": keys.shape, "tokens_per_page": 10, **kw}
    return kv_pack(keys, values, **opts)


@pytest.mark.parametrize("dtype", ["f32", "f16", "bf16"])
@pytest.mark.parametrize("layout", ["LHSD", "HLSD", "SLHD", "LHDS"])
def test_round_trip_into_any_layout(dtype: str, layout: str) -> None:
    keys, values = kv(dtype)
    pages = pack(keys, values, dtype)
    assert len(pages) == 4
    k2, v2 = kv_unpack(pages, layout)
    order = ["LHSD".index(axis) for axis in layout]
    assert np.array_equal(k2.view(keys.dtype), keys.transpose(order))
    assert np.array_equal(v2.view(keys.dtype), values.transpose(order))
    # Unpacking the other way round gets the original back.
    again = kv_pack(k2, v2, layout=layout, dtype=dtype, shape=k2.shape, tokens_per_page=7)
    k3, _ = kv_unpack(again, "LHSD")
    assert np.array_equal(k3.view(keys.dtype), keys)


def test_headers_describe_each_page() -> None:
    keys, values = kv("f16")
    pages = pack(keys, values, "f16", sequence_id=42)
    h = kv_page_header(pages[3])
    assert (h.layout, h.dtype, h.encoding) == ("LHSD", "f16", "raw")
    assert (h.token_start, h.token_count, h.total_tokens) == (30, 7, 37)
    assert h.shape == [3, 2, 7, 8] and h.sequence_id == 42 and h.page_len == len(pages[3])
    assert kv_verify_page(pages[0]).token_count == 10


def test_int8_halves_f16_and_stays_within_half_a_step() -> None:
    keys, values = kv("f32")
    raw = pack(keys.astype(np.float16), values.astype(np.float16), "f16", tokens_per_page=37)
    q = pack(keys, values, "f32", encoding="int8", tokens_per_page=37)
    assert sum(map(len, q)) / sum(map(len, raw)) < 0.56
    k2, _ = kv_unpack(q)
    assert k2.dtype == np.float32
    step = np.abs(keys).max(axis=2, keepdims=True) / 127  # per (layer, head, dim)
    assert np.all(np.abs(k2 - keys) <= step * 0.5 + 1e-6)


def test_every_flipped_byte_is_detected() -> None:
    keys, values = kv("f16")
    pages = pack(keys, values, "f16", tokens_per_page=37)
    page = pages[0]
    for at in range(0, len(page), 13):
        damaged = bytearray(page)
        damaged[at] ^= 0x10
        with pytest.raises(CorruptDataError):
            kv_unpack([bytes(damaged)])


@pytest.mark.parametrize("length", [0, 10, 63, 64, 200, -1])
def test_truncated_pages_are_corrupt(length: int) -> None:
    keys, values = kv("f32")
    pages = pack(keys, values, "f32")
    pages[1] = pages[1][:length]
    with pytest.raises(CorruptDataError):
        kv_unpack(pages)


def test_missing_or_foreign_pages_are_refused() -> None:
    keys, values = kv("f32")
    pages = pack(keys, values, "f32", sequence_id=1)
    other = pack(keys, values, "f32", sequence_id=2)
    for bad in ([pages[0], pages[2], pages[3]], pages[::-1], [pages[0], other[1], *pages[2:]]):
        with pytest.raises(InvalidArgumentError) as exc:
            kv_unpack(bad)
        assert exc.value.field == "pages"


def test_bad_arguments_name_their_field() -> None:
    keys, values = kv("f32")
    cases = [
        ({"layout": "LHSX"}, "layout"),
        ({"shape": (3, 2, 36, 8)}, "keys"),
        ({"tokens_per_page": 0}, "tokens_per_page"),
        ({"encoding": "int4"}, "encoding"),
    ]
    for override, field in cases:
        with pytest.raises(InvalidArgumentError) as exc:
            pack(keys, values, "f32", **override)
        assert exc.value.field == field
    with pytest.raises(InvalidArgumentError) as exc:
        pack(keys, values, "f64")
    assert exc.value.field == "dtype"
    with pytest.raises(InvalidArgumentError) as exc:
        pack(keys[:, :, ::2], values, "f32", shape=keys[:, :, ::2].shape)
    assert exc.value.field == "keys"
    nan = keys.copy()
    nan[0, 0, 0, 0] = np.nan
    with pytest.raises(InvalidArgumentError) as exc:
        pack(nan, values, "f32", encoding="int8")
    assert exc.value.field == "keys"


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    with Store(tmp_path / "store", map_size=64 << 20) as s:
        yield s


def test_pool_spills_to_the_store_and_loads_back(store: Store) -> None:
    keys, values = kv("f32")
    page_len = len(pack(keys, values, "f32")[0])
    pool = KvPagePool(2 * page_len, store.put_blob, store.get_blob)
    names = pool.pack(
        "act", keys, values, layout="LHSD", dtype="f32", shape=SHAPE, tokens_per_page=10
    )
    assert names == ["act/0", "act/1", "act/2", "act/3"]
    assert pool.resident_bytes <= 2 * page_len and len(pool) == 4
    spilled = [n for n in names if not pool.is_resident(n)]
    assert spilled == ["act/0", "act/1"]
    for n in spilled:  # the store holds exactly the page
        assert store.get_blob(pool.digest(n)) == pool.get(n)
    k2, v2 = pool.unpack(names)
    assert np.array_equal(k2, keys) and np.array_equal(v2, values)
    stats = pool.stats()
    assert stats["spills"] >= 2 and stats["loads"] >= 2 and stats["evictions"] >= 2

    # A fresh pool (as after a restart) finds persisted pages by digest.
    digests = [pool.persist(n) for n in names]
    fresh = KvPagePool(1 << 20, store.put_blob, store.get_blob)
    for n, d in zip(names, digests, strict=True):
        fresh.register(n, d)
    assert fresh.resident_pages == 0
    k3, _ = fresh.unpack(names)
    assert np.array_equal(k3, keys)


def test_pool_refuses_a_corrupt_blob(store: Store) -> None:
    keys, values = kv("f16")
    page = pack(keys, values, "f16", tokens_per_page=37)[0]
    damaged = bytearray(page)
    damaged[len(page) // 2] ^= 1
    pool = KvPagePool(1 << 20, store.put_blob, store.get_blob)
    pool.register("p", store.put_blob(bytes(damaged)))
    with pytest.raises(CorruptDataError):
        pool.get("p")
    with pytest.raises(CorruptDataError):
        pool.insert("q", bytes(damaged))
    assert "q" not in pool
    with pytest.raises(NotFoundError):
        pool.get("missing")
    pool.register("gone", "00" * 32)
    with pytest.raises(NotFoundError):  # raised by the store, passed through
        pool.get("gone")


def test_pool_leaves_nothing_half_done_when_the_store_fails() -> None:
    keys, values = kv("f32")
    pages = pack(keys, values, "f32")

    def put_blob(data: bytes) -> str:
        raise OSError("disk full")

    pool = KvPagePool(len(pages[0]), put_blob, lambda digest: b"")
    pool.insert("a", pages[0])
    with pytest.raises(OSError, match="disk full"):
        pool.insert("b", pages[1])  # needs "a" spilled first
    assert pool.is_resident("a") and "b" not in pool


def test_pool_is_safe_across_threads(store: Store) -> None:
    keys, values = kv("f16")
    page_len = len(pack(keys, values, "f16")[0])
    pool = KvPagePool(3 * page_len, store.put_blob, store.get_blob)
    names = {}
    for i in range(4):
        k, v = kv("f16", seed=i)
        names[i] = pool.pack(
            f"s{i}", k, v, layout="LHSD", dtype="f16", shape=SHAPE, tokens_per_page=10
        )
    errors: list[BaseException] = []

    def work(i: int) -> None:
        try:
            for _ in range(10):
                k, _ = pool.unpack(names[i])
                assert np.array_equal(k, kv("f16", seed=i)[0])
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors and not any(t.is_alive() for t in threads)
