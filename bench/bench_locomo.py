"""LoCoMo evidence retrieval through a real daemon: recall@5 and @10 per category and mode.

    python bench/bench_locomo.py /work/shared/data/locomo [--out bench/out/locomo.json]

One cube per conversation, one memory per turn: the turn's text, plus the
caption of the image shared in it if any; session date, speaker and dia_id in
metadata. For every question of categories 1-4 (multi-hop, temporal,
open-domain, single-hop) the hits' dia_ids are compared with the question's
evidence: recall@k = |evidence in the top k| / |evidence|, averaged.

Modes VECTOR, LEXICAL and HYBRID are the daemon's (gRPC). Beside them, in the
same run: an exact NumPy cosine search over the same embeddings (the
embedder in this process, the same model), and two other fusions of the
daemon's VECTOR and LEXICAL candidate lists (50 each, as the engine fuses):
memosd.search.fusion's ``rrf``, and ``normalized`` with equal weights
("normalized 1:1"; HYBRID weighs the vector scores 0.4).
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
from collections import defaultdict
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from memosd.embedder import Embedder
from memosd.messages import MemoryInput
from memosd.search import fusion
from memosd.search.engine import HYBRID_CANDIDATES
from serving import Daemon

CATEGORIES = {1: "multi-hop", 2: "temporal", 3: "open-domain", 4: "single-hop"}
KS = (5, 10)
BATCH = 500
_SESSION = re.compile(r"session_(\d+)")
_DIA_ID = re.compile(r"D:?(\d+):(\d+)")


def load_conversation(path: Path) -> tuple[list[dict], list[dict]]:
    """(turns, questions): turns with content and metadata; questions of categories 1-4."""
    data = json.loads(path.read_text())
    turns = []
    for key, value in data.items():
        m = _SESSION.fullmatch(key)
        if not m:
            continue
        date = data.get(f"{key}_date_time", "")
        for turn in value:
            content = turn["text"]
            if turn.get("blip_caption"):
                content += f" [image: {turn['blip_caption']}]"
            meta = {"dia_id": turn["dia_id"], "speaker": turn["speaker"], "session_date": date}
            turns.append({"content": content, "metadata": meta})
    known = {t["metadata"]["dia_id"] for t in turns}
    questions = []
    for qa in data["qa"]:
        if qa["category"] not in CATEGORIES:
            continue
        # A few evidence entries are malformed ("D8:6; D9:17", "D:11:26"): normalise;
        # ids that name no turn of the conversation are dropped.
        evidence = {f"D{a}:{b}" for e in qa["evidence"] for a, b in _DIA_ID.findall(e)}
        evidence &= known
        if evidence:
            questions.append(
                {"question": qa["question"], "category": qa["category"], "evidence": evidence}
            )
    return turns, questions


def recall(ranked: list[str], evidence: set[str], k: int) -> float:
    return len(evidence & set(ranked[:k])) / len(evidence)


def table(results: dict[str, dict[str, dict[int, float]]], counts: dict[str, int]) -> str:
    methods = list(results)
    head = f"{'category':<13}{'n':>5}"
    head += "".join(f"{m + ' @' + str(k):>20}" for m in methods for k in KS)
    lines = [head, "-" * len(head)]
    for group in [*CATEGORIES.values(), "overall"]:
        row = f"{group:<13}{counts[group]:>5}"
        row += "".join(f"{results[m][group][k]:>20.3f}" for m in methods for k in KS)
        lines.append(row)
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("data_dir", type=Path)
    parser.add_argument("--out", type=Path, default=Path("bench/out/locomo.json"))
    args = parser.parse_args()

    conversations = sorted(args.data_dir.glob("*.json"))
    if not conversations:
        sys.exit(f"no conversation files in {args.data_dir}")
    embedder = Embedder.default()
    per_method: dict[str, list[tuple[int, dict[int, float]]]] = defaultdict(list)
    timings: dict[str, float] = defaultdict(float)
    n_turns = 0
    with Daemon() as daemon, daemon.client() as client:
        for path in conversations:
            turns, questions = load_conversation(path)
            n_turns += len(turns)
            cube = client.create_cube(path.stem).id
            t = time.perf_counter()
            for i in range(0, len(turns), BATCH):
                batch = turns[i : i + BATCH]
                client.add(cube, [MemoryInput(t["content"], metadata=t["metadata"]) for t in batch])
            timings["ingest_s"] += time.perf_counter() - t

            # Exact cosine over the same model's embeddings, in this process.
            turn_vecs = embedder.encode([t["content"] for t in turns])
            question_vecs = embedder.encode([q["question"] for q in questions])
            dia_ids = [t["metadata"]["dia_id"] for t in turns]
            turn_index = {d: i for i, d in enumerate(dia_ids)}

            for q, qvec in zip(questions, question_vecs, strict=True):
                ranked: dict[str, list[str]] = {}
                scored: dict[str, list[tuple[int, float]]] = {}
                for mode in ("VECTOR", "LEXICAL"):
                    t = time.perf_counter()
                    hits = client.search([cube], q["question"], top_k=HYBRID_CANDIDATES, mode=mode)
                    timings[f"{mode}_s"] += time.perf_counter() - t
                    ranked[mode] = [h.memory.metadata["dia_id"] for h in hits]
                    scores = [h.score for h in hits]
                    scored[mode] = [
                        (turn_index[d], s) for d, s in zip(ranked[mode], scores, strict=True)
                    ]
                t = time.perf_counter()
                hits = client.search([cube], q["question"], top_k=max(KS), mode="HYBRID")
                timings["HYBRID_s"] += time.perf_counter() - t
                ranked["HYBRID"] = [h.memory.metadata["dia_id"] for h in hits]
                exact = np.argsort(-(turn_vecs @ qvec), kind="stable")[: max(KS)]
                ranked["exact cosine"] = [dia_ids[i] for i in exact]
                # Both fusion methods over the daemon's candidate lists, as the engine fuses.
                lists = [fusion.ranking(scored["VECTOR"]), fusion.ranking(scored["LEXICAL"])]
                ranked["rrf"] = [dia_ids[i] for i in fusion.rrf(lists)[0].tolist()]
                equal = fusion.normalized(lists)[0].tolist()
                ranked["normalized 1:1"] = [dia_ids[i] for i in equal]
                for method, ids in ranked.items():
                    per_method[method].append(
                        (q["category"], {k: recall(ids, q["evidence"], k) for k in KS})
                    )

    results: dict[str, dict[str, dict[int, float]]] = {}
    counts: dict[str, int] = {}
    for method, rows in per_method.items():
        results[method] = {}
        for cat, name in [*CATEGORIES.items(), (0, "overall")]:
            sel = [r for c, r in rows if cat in (0, c)]
            counts[name] = len(sel)
            results[method][name] = {k: float(np.mean([r[k] for r in sel])) for k in KS}
    n_questions = counts["overall"]
    print(f"LoCoMo: {len(conversations)} conversations, {n_turns} turns, {n_questions} questions")
    print(table(results, counts))
    print(
        f"ingest {n_turns / timings['ingest_s']:.0f} memories/s over gRPC (with embedding); "
        + ", ".join(
            f"{m} {1000 * timings[m + '_s'] / n_questions:.1f} ms/query"
            for m in ("VECTOR", "LEXICAL", "HYBRID")
        )
    )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(
        json.dumps(
            {
                "conversations": [p.name for p in conversations],
                "turns": n_turns,
                "questions": counts,
                "recall": results,
                "timings_s": timings,
            },
            indent=2,
        )
    )
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
