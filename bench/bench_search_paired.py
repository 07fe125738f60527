"""Search latency of this checkout against another one, in alternating runs on one data
directory: the way to compare two builds on a VM whose speed drifts from minute to
minute (one run of bench_daemon.py per build can differ by 30% on the same code).

    python bench/bench_search_paired.py --baseline ../other-checkout [--rounds 8]
        [--size 100000] [--data DIR] [--queries 1200] [--clients native|threads]
        [--out bench/out/search_paired.json]

The baseline is another checkout of memosd with its native module built into its
``python/memosd`` (e.g. ``git worktree add ../base <commit>``, then ``maturin build
--release`` there and unzip the wheel's ``memosd/_native*.so`` into it); its daemon runs
with that ``python/`` first on ``PYTHONPATH``. The data directory is filled once, as
bench_daemon.py fills it (LoCoMo turns, one cube, real query embeddings), or reused with
``--data``; each build runs on its own copy of it, made for the run (a build may
upgrade the store's schema, which the other could then not read). Each round starts
the baseline's daemon, then this checkout's, and times ``--queries`` HYBRID searches
(top_k 10) from 8 clients against each: the 8 connections of the native load generator
(``--clients native``, the default: bench_daemon.py judges the target on it) or 8
client threads of this process (``--clients threads``). Prints every round and
the medians, with this checkout's ratios to the baseline.
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import statistics
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_daemon import base_vectors, corpus, fill_in_process, latency, latency_native, perturbed
from memosd.embedder import Embedder
from serving import Daemon

ROOT = Path(__file__).resolve().parents[1]
CLIENTS = 8
FIELDS = ("p50", "p95", "p99", "qps", "server_cpu_ms", "client_cpu_ms")
# One timed run: (daemon, cube, queries, clients) -> its percentiles, rate and CPU.
Measure = Callable[[Daemon, str, list[str], int], dict[str, float]]
CLIENT_KINDS: dict[str, Measure] = {"native": latency_native, "threads": latency}


def filled(data: Path, size: int, locomo: Path, cache: Path) -> str:
    """The cube id of ``data``, filling the directory first if it holds no store."""
    marker = data / "cube.txt"
    if marker.exists():
        return marker.read_text()
    if data.exists() and any(data.iterdir()):
        raise SystemExit(f"{data} holds something other than a finished fill; remove it first")
    turns, _ = corpus(locomo)
    embedder = Embedder.default()
    base = base_vectors(embedder, [t["content"] for t in turns], cache)
    vectors = perturbed(base, size, np.random.default_rng(7))
    cube, _ = fill_in_process(data, embedder, turns, vectors)
    marker.write_text(cube)
    return cube


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--baseline", type=Path, required=True, help="the other checkout")
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument("--size", type=int, default=100_000)
    parser.add_argument("--queries", type=int, default=1200, help="timed queries per run")
    parser.add_argument("--data", type=Path, help="data directory to fill once and reuse")
    parser.add_argument("--clients", choices=sorted(CLIENT_KINDS), default="native")
    parser.add_argument("--locomo", type=Path, default=Path("/work/shared/data/locomo"))
    parser.add_argument("--out", type=Path, default=ROOT / "bench/out/search_paired.json")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    baseline = args.baseline.resolve() / "python"
    if not any((baseline / "memosd").glob("_native*.so")):
        parser.error(f"{baseline}/memosd has no built native module (_native*.so)")

    data = args.data or ROOT / f"bench/out/data-{args.size}"
    cube = filled(data, args.size, args.locomo, args.out.parent)
    _, questions = corpus(args.locomo)
    queries = (questions * (args.queries // len(questions) + 1))[: args.queries]
    builds = {
        "baseline": {"PYTHONPATH": str(baseline)},
        "this": {"PYTHONPATH": str(ROOT / "python")},
    }
    runs: dict[str, list[dict[str, float]]] = {name: [] for name in builds}
    copies = {name: data.with_name(f"{data.name}.{name}") for name in builds}
    print(f"{args.size:,} memories in one cube")
    try:
        for copy in copies.values():
            shutil.rmtree(copy, ignore_errors=True)
            shutil.copytree(data, copy)
        measure = CLIENT_KINDS[args.clients]
        compare(builds, copies, cube, questions, queries, args.rounds, measure, runs)
    finally:
        for copy in copies.values():
            shutil.rmtree(copy, ignore_errors=True)
    medians = {
        name: {f: statistics.median(r[f] for r in rs) for f in FIELDS} for name, rs in runs.items()
    }
    print("median")
    for name, m in medians.items():
        print(f"{'':>5} {name:>9} " + " ".join(f"{m[f]:>13.2f}" for f in FIELDS))
    ratios = {f: medians["this"][f] / medians["baseline"][f] for f in FIELDS}
    print(f"{'':>5} {'ratio':>9} " + " ".join(f"{ratios[f]:>13.2f}" for f in FIELDS))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"runs": runs, "medians": medians, "ratios": ratios}, indent=2))
    print(f"wrote {args.out}")


def compare(
    builds: dict[str, dict[str, str]],
    copies: dict[str, Path],
    cube: str,
    questions: list[str],
    queries: list[str],
    rounds: int,
    measure: Measure,
    runs: dict[str, list[dict[str, float]]],
) -> None:
    """Alternating runs of the builds, each on its own data directory, into ``runs``."""
    print(f"{len(queries)} HYBRID queries per run, {CLIENTS} clients")
    print(f"{'round':>5} {'build':>9} " + " ".join(f"{f:>13}" for f in FIELDS))
    for round_ in range(1, rounds + 1):
        for name, env in builds.items():
            with Daemon(copies[name], env=env) as daemon:
                measure(daemon, cube, questions[:200], CLIENTS)  # warm up
                r = measure(daemon, cube, queries, CLIENTS)
            runs[name].append(r)
            print(f"{round_:>5} {name:>9} " + " ".join(f"{r[f]:>13.2f}" for f in FIELDS))


if __name__ == "__main__":
    main()
