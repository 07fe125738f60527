"""The hosted model and its KV page pool, as the operation layer sees them.

The model is loaded on first use (or at start with ``model.preload``), so a
daemon that never serves an activation or generation call never imports torch.
The page pool keeps recently used KV pages in RAM within ``model.pool_budget_mib``
and spills to, and reloads from, the store's blob table.
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path
from typing import TYPE_CHECKING

from memosd._native import KvPagePool
from memosd.config import ModelConfig
from memosd.errors import FailedPreconditionError, InvalidArgumentError
from memosd.store import Store

if TYPE_CHECKING:
    from memosd.runtime.engine import ModelRuntime

log = logging.getLogger(__name__)

STALE_POLICIES = ("rebuild", "refuse")


class ModelHost:
    def __init__(self, config: ModelConfig, data_dir: Path, store: Store) -> None:
        if config.stale not in STALE_POLICIES:
            raise InvalidArgumentError(
                "model.stale", f"expected one of {', '.join(STALE_POLICIES)}"
            )
        if config.tokens_per_page < 1:
            raise InvalidArgumentError("model.tokens_per_page", "must be positive")
        self.config = config
        self._data_dir = data_dir
        self._lock = threading.Lock()
        self._runtime: ModelRuntime | None = None
        self.pool = KvPagePool(config.pool_budget_mib << 20, store.put_blob, store.get_blob)

    @property
    def loaded(self) -> ModelRuntime | None:
        """The runtime if it is loaded already (never loads it)."""
        return self._runtime

    def runtime(self) -> ModelRuntime:
        """The model runtime, loaded on the first call."""
        if not self.config.enabled:
            raise FailedPreconditionError("no model is hosted (model.enabled is false)")
        with self._lock:
            if self._runtime is None:
                self._runtime = self._load()
            return self._runtime

    def _load(self) -> ModelRuntime:
        import torch

        from memosd.runtime.engine import ModelRuntime

        if self.config.threads > 0:
            torch.set_num_threads(self.config.threads)
        path = Path(self.config.path).expanduser() if self.config.path else None
        runtime = ModelRuntime.load(path, self._data_dir / "models", self.config.dtype)
        log.info(
            "model %s loaded (%s, weights %s)",
            runtime.fingerprint.model,
            runtime.fingerprint.dtype,
            runtime.fingerprint.weights_sha256[:12],
        )
        return runtime
