"""Int8 product benchmark: memosd._native.Int8Linear on each kernel the CPU has
against NumPy's float32 ``x @ w + b``, for the four products of a MiniLM layer
(384 -> 1152 fused QKV, 384 -> 384, 384 -> 1536, 1536 -> 384) at 12 rows (a query),
160 rows (8 queries) and 2048 rows (an ingest batch). One thread throughout: BLAS
limited by threadpoolctl, rayon by RAYON_NUM_THREADS=1 (set before the import).

Each cell is the median of ``--rounds`` calls, the kernels and NumPy interleaved
call by call so that a noisy machine slows them alike.

    python bench/bench_gemm.py [--rounds N] [--out bench/out/gemm.json]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import time
from pathlib import Path

os.environ["RAYON_NUM_THREADS"] = "1"

import numpy as np
from memosd._native import Int8Linear
from memosd.errors import InvalidArgumentError
from threadpoolctl import threadpool_limits

ROOT = Path(__file__).resolve().parents[1]
SHAPES = [(384, 1152), (384, 384), (384, 1536), (1536, 384)]
ROWS = [12, 160, 2048]
KERNELS = ["amx", "avx512vnni", "avx2"]


def layers(w: np.ndarray, b: np.ndarray) -> dict[str, Int8Linear]:
    """One Int8Linear per kernel this CPU can run."""
    out = {}
    for kernel in KERNELS:
        with contextlib.suppress(InvalidArgumentError):
            out[kernel] = Int8Linear(w, b, kernel=kernel)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=50)
    parser.add_argument("--out", type=Path, default=ROOT / "bench/out/gemm.json")
    args = parser.parse_args()
    threadpool_limits(1)
    rng = np.random.default_rng(0)
    results = []
    for k, n in SHAPES:
        w = rng.standard_normal((n, k), dtype=np.float32) * np.float32(0.05)
        b = rng.standard_normal(n, dtype=np.float32)
        w_t = np.ascontiguousarray(w.T)  # NumPy's product takes (in, out)
        int8 = layers(w, b)
        for m in ROWS:
            x = rng.standard_normal((m, k), dtype=np.float32)
            calls = {"numpy f32": lambda x=x, w_t=w_t, b=b: x @ w_t + b}
            calls.update({name: (lambda x=x, lin=lin: lin(x)) for name, lin in int8.items()})
            times: dict[str, list[float]] = {name: [] for name in calls}
            rounds = max(5, args.rounds // (m // 160 + 1))
            for _ in range(rounds + 1):  # the first round warms up
                for name, call in calls.items():
                    t = time.perf_counter()
                    call()
                    times[name].append(time.perf_counter() - t)
            ms = {name: statistics.median(t[1:]) * 1e3 for name, t in times.items()}
            results.append({"k": k, "n": n, "m": m, "median_ms": ms})

    engines = ["numpy f32", *[name for name in KERNELS if name in results[0]["median_ms"]]]
    head = f"{'k -> n':<12}{'m':>6}" + "".join(f"{e + ' ms':>16}" for e in engines)
    head += "".join(f"{e + ' GOPS':>16}" for e in engines[1:])
    lines = ["one thread; median ms per call; GOPS = 2 m k n / time", head, "-" * len(head)]
    for r in results:
        ms = r["median_ms"]
        ops = 2 * r["m"] * r["k"] * r["n"]
        line = f"{str(r['k']) + ' -> ' + str(r['n']):<12}{r['m']:>6}"
        line += "".join(f"{ms[e]:>16.3f}" for e in engines)
        line += "".join(f"{ops / ms[e] / 1e6:>16.0f}" for e in engines[1:])
        lines.append(line)
    print("\n".join(lines))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"rounds": args.rounds, "results": results}, indent=2))


if __name__ == "__main__":
    main()
