"""Embedder benchmark: the NumPy all-MiniLM-L6-v2 encoder in float32 and in int8
(``quantize=True``, memosd._native.Int8Linear) against sentence-transformers
(torch) on the same texts, in the same run.

Texts are LoCoMo questions (the daemon's search queries) and turns (its ingest).
Measured: one query per call and eight queries per call (what the embedder's
coalescing forms under 8 concurrent searches), median milliseconds per call, and
a 64-turn ingest batch; and cosine(float32, int8) over every question and 640
random turns.
NumPy's BLAS and torch run on one thread, as in the daemon (``num_threads=1``);
int8 products large enough to split (ingest batches) use rayon on all cores.

    python bench/bench_embedder.py [--locomo DIR] [--rounds N]

Prints a table with ratios against float32 and sentence-transformers and writes
JSON to bench/out/embedder.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
from threadpoolctl import threadpool_limits

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_locomo import load_conversation
from memosd._native import Int8Linear
from memosd.bert import BertEncoder
from memosd.embedder import default_model_dir

ROOT = Path(__file__).resolve().parents[1]


def load_texts(locomo: Path) -> tuple[list[str], list[str]]:
    questions: list[str] = []
    turns: list[str] = []
    for path in sorted(locomo.glob("*.json")):
        t, q = load_conversation(path)
        turns += [x["content"] for x in t]
        questions += [x["question"] for x in q]
    if not questions:
        sys.exit(f"no LoCoMo conversations in {locomo}")
    return questions, turns


def median_ms(encode: Callable[[list[str]], object], batches: list[list[str]]) -> float:
    encode(batches[0])  # warm-up
    times = []
    for batch in batches:
        t = time.perf_counter()
        encode(batch)
        times.append((time.perf_counter() - t) * 1e3)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--locomo", type=Path, default=ROOT.parent / "shared/data/locomo")
    parser.add_argument("--rounds", type=int, default=200, help="calls per measurement")
    parser.add_argument("--out", type=Path, default=ROOT / "bench/out/embedder.json")
    args = parser.parse_args()

    threadpool_limits(limits=1, user_api="blas")
    import torch
    from sentence_transformers import SentenceTransformer

    torch.set_num_threads(1)
    questions, turns = load_texts(args.locomo)
    model_dir = default_model_dir()
    f32 = BertEncoder(model_dir)
    int8 = BertEncoder(model_dir, quantize=True)
    st = SentenceTransformer(str(model_dir), device="cpu")

    def st_encode(texts: list[str]) -> np.ndarray:
        with torch.inference_mode():
            return st.encode(texts, batch_size=64, normalize_embeddings=True)

    rng = np.random.default_rng(0)
    picks = rng.choice(len(questions), size=(args.rounds, 8))
    workloads = {
        "1 query": [[questions[i]] for i in picks[:, 0]],
        "8 queries": [[questions[i] for i in row] for row in picks],
        "64 turns": [
            turns[i : i + 64] for i in rng.integers(0, len(turns) - 64, max(args.rounds // 20, 3))
        ],
    }
    engines = {"st (torch)": st_encode, "f32 numpy": f32.encode, "int8": int8.encode}
    results: dict[str, dict[str, float]] = {w: {} for w in workloads}
    for name, batches in workloads.items():
        for engine, encode in engines.items():
            results[name][engine] = median_ms(encode, batches)

    sample = [turns[i] for i in rng.choice(len(turns), min(len(turns), 640), replace=False)]
    exact = np.concatenate([f32.encode(sample[i : i + 64]) for i in range(0, len(sample), 64)])
    approx = np.concatenate([int8.encode(sample[i : i + 64]) for i in range(0, len(sample), 64)])
    cos_turns = (exact * approx).sum(axis=1)
    cos_questions = (f32.encode(questions) * int8.encode(questions)).sum(axis=1)
    cosine = {
        group: {
            "n": len(c),
            "min": float(c.min()),
            "p1": float(np.percentile(c, 1)),
            "mean": float(c.mean()),
        }
        for group, c in (("turns", cos_turns), ("questions", cos_questions))
    }

    kernel = Int8Linear(np.ones((1, 4), dtype=np.float32)).kernel
    head = f"{'workload':<11}" + "".join(f"{e + ' ms':>16}" for e in engines)
    head += f"{'int8/f32':>10}{'int8/st':>10}"
    lines = [
        f"int8 kernel: {kernel}; BLAS and torch threads: 1; cores: {os.cpu_count()}",
        head,
        "-" * len(head),
    ]
    for name, row in results.items():
        line = f"{name:<11}" + "".join(f"{row[e]:>16.2f}" for e in engines)
        line += f"{row['int8'] / row['f32 numpy']:>10.2f}{row['int8'] / row['st (torch)']:>10.2f}"
        lines.append(line)
    for group, c in cosine.items():
        lines.append(
            f"cosine(f32, int8) over {c['n']} {group}: "
            f"min {c['min']:.4f}, 1st percentile {c['p1']:.4f}, mean {c['mean']:.4f}"
        )
    print("\n".join(lines))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(
        json.dumps(
            {
                "kernel": kernel,
                "cpu_count": os.cpu_count(),
                "machine": platform.processor() or platform.machine(),
                "rounds": args.rounds,
                "median_ms": results,
                "cosine_f32_int8": cosine,
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
