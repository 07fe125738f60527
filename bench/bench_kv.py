"""Activation memory benchmark: time to first token with an injected KV cache vs
a full re-prefill of the same memory context, SmolLM2-135M on CPU.

For contexts of about 256, 1k and 2k tokens and a question of about 32 tokens:

- ``prefill``: the whole sequence (context + question) prefilled from scratch;
- ``pool``:    pages resident in the page pool, unpacked and injected;
- ``store``:   pages spilled to the store (LMDB) and loaded back, then injected;
- ``reuse``:   transformers' own in-process reuse, a ``copy.deepcopy`` of the
               DynamicCache left by prefilling the context (the best case).

Also pack/unpack throughput against a plain numpy copy of the same bytes, and
the int8 encoding: size against f16 pages, largest logit difference, and
whether greedy output is unchanged. Prints a table; writes bench/out/kv.json.

    python bench/bench_kv.py [--repeat 5] [--sizes 256 1024 2048] [--threads N]
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from memosd._native import KvPagePool, kv_pack, kv_unpack
from memosd.runtime import kvcache
from memosd.runtime.engine import ModelRuntime
from memosd.runtime.generation import GenerationOptions
from memosd.runtime.kvcache import KvTensors
from memosd.store import Store

OUT = Path(__file__).parent / "out" / "kv.json"
MODEL_CACHE = Path(os.environ.get("MEMOSD_TEST_MODEL_CACHE", Path.home() / ".cache/memosd/models"))
PEOPLE = ["Alice", "Bob", "Chen", "Dana", "Emeka", "Farah", "Goran", "Hana", "Ivo", "Jun"]
THINGS = ["green tea", "a red bicycle", "jazz records", "mountain hikes", "old maps", "chess"]
QUESTION = (
    "Looking only at the memories above, which person likes jazz records, and on which "
    "day of the week did they mention it?"
)
TOKENS_PER_PAGE = 256


def memories_for(rt: ModelRuntime, tokens: int) -> list[str]:
    """Deterministic memories whose context block is about ``tokens`` tokens."""
    out: list[str] = []
    i = 0
    while len(rt.template.context_ids(out)) < tokens:
        who, what = PEOPLE[i % len(PEOPLE)], THINGS[(i * 7) % len(THINGS)]
        out.append(f"On day {i}, {who} said they enjoy {what} and will talk about it again soon.")
        i += 1
    return out


def median_ms(fn: Callable[[], object], repeat: int) -> float:
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        fn()
        times.append((time.perf_counter() - started) * 1000.0)
    return statistics.median(times)


def gbps(nbytes: int, fn: Callable[[], object], repeat: int) -> float:
    return nbytes / (median_ms(fn, repeat) / 1000.0) / 1e9


def ttft(rt: ModelRuntime, store: Store, tokens: int, repeat: int) -> dict[str, float | int]:
    memories = memories_for(rt, tokens)
    context = rt.template.context_ids(memories)
    turn = rt.template.turn_ids(memories, prompt=QUESTION)
    kv = rt.prefill(context)
    pool = KvPagePool(1 << 34, store.put_blob, store.get_blob)
    names = kvcache.pack_into_pool(pool, f"ctx{tokens}", kv, TOKENS_PER_PAGE)
    digests = [pool.persist(n) for n in names]
    _, prefilled = rt.forward(context, None)  # the cache transformers would keep around

    def first_token(ids: list[int], prefix: KvTensors | None) -> int:
        return int(torch.argmax(rt.next_logits(ids, prefix)))

    def from_store() -> int:
        cold = KvPagePool(1 << 34, store.put_blob, store.get_blob)
        for n, d in zip(names, digests, strict=True):
            cold.register(n, d)
        return first_token(turn, kvcache.unpack_from_pool(cold, names, rt.kv_dtype))

    def reuse() -> int:
        logits, _ = rt.forward(turn, copy.deepcopy(prefilled))
        return int(torch.argmax(logits))

    variants: dict[str, Callable[[], int]] = {
        "prefill": lambda: first_token(context + turn, None),
        "pool": lambda: first_token(turn, kvcache.unpack_from_pool(pool, names, rt.kv_dtype)),
        "store": from_store,
        "reuse": reuse,
    }
    answers = {name: fn() for name, fn in variants.items()}  # warm-up, and all must agree
    assert len(set(answers.values())) == 1, answers
    # Interleaved rounds, so that load from other processes hits every variant alike.
    samples: dict[str, list[float]] = {name: [] for name in variants}
    for _ in range(repeat):
        for name, fn in variants.items():
            samples[name].append(median_ms(fn, 1))
    ms = {name: statistics.median(v) for name, v in samples.items()}
    return {
        "context_tokens": len(context),
        "question_tokens": len(turn),
        "kv_bytes": kv.nbytes,
        **{f"{name}_ms": round(v, 2) for name, v in ms.items()},
        "pool_vs_prefill": round(ms["pool"] / ms["prefill"], 4),
        "store_vs_prefill": round(ms["store"] / ms["prefill"], 4),
        "pool_vs_reuse": round(ms["pool"] / ms["reuse"], 3),
        "store_vs_reuse": round(ms["store"] / ms["reuse"], 3),
    }


def throughput(kv: KvTensors, repeat: int) -> dict[str, float]:
    keys, values = (t.contiguous().numpy() for t in (kv.keys, kv.values))
    nbytes = keys.nbytes + values.nbytes
    opts = {
        "layout": "LHSD",
        "dtype": "f32",
        "shape": keys.shape,
        "tokens_per_page": TOKENS_PER_PAGE,
    }
    pages = kv_pack(keys, values, **opts)
    pool = KvPagePool(1 << 34, lambda b: "", lambda d: b"")
    names = pool.pack("t", keys, values, **opts)
    return {
        "bytes": nbytes,
        "memcpy_gbps": round(gbps(nbytes, lambda: (keys.copy(), values.copy()), repeat), 2),
        "pack_bytes_gbps": round(gbps(nbytes, lambda: kv_pack(keys, values, **opts), repeat), 2),
        "pack_pool_gbps": round(
            gbps(nbytes, lambda: pool.pack("t", keys, values, **opts), repeat), 2
        ),
        "unpack_bytes_gbps": round(gbps(nbytes, lambda: kv_unpack(pages), repeat), 2),
        "unpack_pool_gbps": round(gbps(nbytes, lambda: pool.unpack(names), repeat), 2),
    }


def int8(rt: ModelRuntime, tokens: int) -> dict[str, float | bool]:
    memories = memories_for(rt, tokens)
    context = rt.template.context_ids(memories)
    turn = rt.template.turn_ids(memories, prompt=QUESTION)
    kv = rt.prefill(context)
    half = KvTensors(kv.keys.half(), kv.values.half())
    f16_bytes = sum(map(len, kvcache.pack(half, TOKENS_PER_PAGE)))
    pages = kvcache.pack(kv, TOKENS_PER_PAGE, encoding="int8")
    loaded = kvcache.unpack(pages, rt.kv_dtype)
    full = rt.next_logits(context + turn)
    injected = rt.next_logits(turn, loaded)
    options = GenerationOptions(max_new_tokens=24)
    reference = rt.generate(context + turn, None, options)
    quantised = rt.generate(turn, loaded, options)
    ref_text, q_text = "".join(reference), "".join(quantised)
    return {
        "context_tokens": len(context),
        "int8_vs_f16_size": round(sum(map(len, pages)) / f16_bytes, 4),
        "max_logit_diff": round(float((injected - full).abs().max()), 5),
        "logit_range": round(float(full.max() - full.min()), 3),
        "greedy_unchanged": reference.stats.token_ids == quantised.stats.token_ids,
        "greedy_text": ref_text,
        "int8_text": q_text,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[256, 1024, 2048])
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--out", type=Path, default=OUT)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: default)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    rt = ModelRuntime.load(None, MODEL_CACHE)
    with (
        tempfile.TemporaryDirectory() as tmp,
        Store(Path(tmp) / "store", map_size=1 << 30) as store,
    ):
        rows = [ttft(rt, store, n, args.repeat) for n in args.sizes]
    largest = rt.prefill(rt.template.context_ids(memories_for(rt, max(args.sizes))))
    copy_rates = throughput(largest, max(args.repeat, 5))
    quant = [int8(rt, n) for n in args.sizes]

    threads, load = torch.get_num_threads(), os.getloadavg()[0]
    print(f"\nTTFT, SmolLM2-135M f32 on CPU, {threads} threads, load average {load:.1f}")
    head = f"{'context':>8} {'question':>8} {'prefill':>9} {'pool':>8} {'store':>8} {'reuse':>8}"
    print(head + f" {'reduction':>9} {'pool/reuse':>10} {'store/reuse':>11}")
    for r in rows:
        print(
            f"{r['context_tokens']:>8} {r['question_tokens']:>8} {r['prefill_ms']:>7.1f}ms"
            f" {r['pool_ms']:>6.1f}ms {r['store_ms']:>6.1f}ms {r['reuse_ms']:>6.1f}ms"
            f" {1 - float(r['pool_vs_prefill']):>9.1%} {r['pool_vs_reuse']:>9.2f}x"
            f" {r['store_vs_reuse']:>10.2f}x"
        )
    mb = copy_rates["bytes"] / 1e6
    print(f"\nCopy throughput on {mb:.0f} MB of f32 KV (GB/s):")
    for k, v in copy_rates.items():
        if k != "bytes":
            ratio = (
                "" if k == "memcpy_gbps" else f"  ({v / copy_rates['memcpy_gbps']:.0%} of memcpy)"
            )
            print(f"  {k[:-5]:<14} {v:>6.2f}{ratio}")
    print("\nint8 pages:")
    for q in quant:
        print(
            f"  {q['context_tokens']:>5} tokens: {q['int8_vs_f16_size']:.3f} of f16 size, "
            f"max logit diff {q['max_logit_diff']} (range {q['logit_range']}), "
            f"greedy unchanged: {q['greedy_unchanged']}"
        )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    result = {
        "model": rt.fingerprint.model,
        "threads": torch.get_num_threads(),
        "loadavg": os.getloadavg(),
        "tokens_per_page": TOKENS_PER_PAGE,
        "ttft": rows,
        "throughput": copy_rates,
        "int8": quant,
    }
    args.out.write_text(json.dumps(result, indent=2))
    print(f"\nwrote {args.out}")


if __name__ == "__main__":
    np.seterr(all="ignore")
    main()
