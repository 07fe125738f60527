"""The operations over the hosted model: activations and generation, sharing one
model host and page pool. Importing this module does not import torch."""

from __future__ import annotations

from memosd.config import Config
from memosd.ops.activation import Activations
from memosd.ops.generate import Generator
from memosd.ops.host import ModelHost
from memosd.ops.search import Search
from memosd.store import Store


class ModelOps:
    def __init__(self, config: Config, store: Store, search: Search) -> None:
        self.host = ModelHost(config.model, config.data_dir, store)
        self.activations = Activations(store, self.host)
        self.generator = Generator(store, self.host, self.activations, search)
        if config.model.enabled and config.model.preload:
            self.host.runtime()
