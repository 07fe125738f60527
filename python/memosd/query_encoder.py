"""The query-embedding queue that the daemon's event loop hands search queries to.

The loop submits each query with a tag and goes on serving gRPC; a worker thread
embeds every query waiting in one forward pass (the weights are read once per
batch), and a descriptor turns readable when results wait, so the loop collects
them without ever blocking (``loop.add_reader(queue, ...)``, then ``take()``).

The native ``memosd._native.QueryEncoder`` runs the int8 model without the GIL, so
the event loop stays the daemon's one Python thread on the search path. Models it
cannot run (float32 queries, tokenizers other than BERT's WordPiece) get
``ThreadedQueryEncoder``: the same interface over ``Embedder.encode_queries`` in a
Python thread.
"""

from __future__ import annotations

import logging
import socket
import threading
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any, Protocol

import numpy as np

from memosd.embedder import Embedder
from memosd.errors import ResourceExhaustedError

log = logging.getLogger(__name__)

# Queries embedded together at most; more wait for the next pass.
MAX_BATCH = 32


class QueryQueue(Protocol):
    def submit(self, tag: object, text: str) -> None: ...
    def take(self) -> list[tuple[Any, np.ndarray | Exception]]: ...
    def fileno(self) -> int: ...
    def close(self) -> None: ...


def query_queue(embedder: Embedder, max_batch: int = MAX_BATCH) -> QueryQueue:
    """The native queue when the embedder's query model allows it, else the threaded one."""
    native = embedder.native_query_encoder(max_batch)
    if native is not None:
        return native
    log.info("search queries embed in a Python thread (no native query encoder for this model)")
    return ThreadedQueryEncoder(embedder.encode_queries, max_batch)


class ThreadedQueryEncoder:
    """``QueryQueue`` over ``encode``, run in a thread of its own."""

    def __init__(
        self, encode: Callable[[Sequence[str]], np.ndarray], max_batch: int = MAX_BATCH
    ) -> None:
        self._encode = encode
        self._max_batch = max_batch
        self._ready, self._signal = socket.socketpair()
        self._ready.setblocking(False)
        self._lock = threading.Condition()
        self._waiting: deque[tuple[Any, str]] = deque()
        self._done: list[tuple[Any, np.ndarray | Exception]] = []
        self._signaled = False
        self._closed = False
        self._thread = threading.Thread(target=self._serve, name="memosd-queries", daemon=True)
        self._thread.start()

    def submit(self, tag: object, text: str) -> None:
        with self._lock:
            if self._closed:
                raise ResourceExhaustedError("the worker is closed")
            self._waiting.append((tag, text))
            self._lock.notify()

    def take(self) -> list[tuple[Any, np.ndarray | Exception]]:
        try:  # consume the signal before the results (see memosd_core::batching)
            while self._ready.recv(64):
                pass
        except BlockingIOError:
            pass
        with self._lock:
            self._signaled = False
            done, self._done = self._done, []
        return done

    def fileno(self) -> int:
        return self._ready.fileno()

    def close(self) -> None:
        with self._lock:
            self._closed = True
            self._lock.notify()
        self._thread.join()

    def _serve(self) -> None:
        while True:
            with self._lock:
                while not self._waiting and not self._closed:
                    self._lock.wait()
                if not self._waiting:
                    return
                n = min(self._max_batch, len(self._waiting))
                batch = [self._waiting.popleft() for _ in range(n)]
            results: list[np.ndarray | Exception]
            try:
                vectors = self._encode([text for _, text in batch])
                results = list(vectors)
            except Exception as e:  # every query of the batch fails with it
                log.exception("embedding a batch of %d queries failed", len(batch))
                results = [e] * len(batch)
            with self._lock:
                self._done.extend((tag, r) for (tag, _), r in zip(batch, results, strict=True))
                signal, self._signaled = not self._signaled, True
            if signal:
                self._signal.send(b"\1")
