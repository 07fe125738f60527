"""Generation over a cube's memories.

The sequence is composed as ``memosd.runtime.template`` documents it: the
activation's KV cache is injected as the prefix (its context block), retrieved
plaintext memories go before the user's last message, then the model streams
its answer. One activation at most: an activation over several memories is
built in one prefill, so its positions never overlap another's.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from memosd.errors import InvalidArgumentError, NotFoundError
from memosd.ops import validate
from memosd.ops.activation import Activations, Loaded
from memosd.ops.host import ModelHost
from memosd.ops.search import Search
from memosd.runtime.generation import GenerationOptions
from memosd.runtime.template import Message
from memosd.search import SearchFilter
from memosd.store import LineageRef, MemoryRecord, Store

if TYPE_CHECKING:
    from memosd.runtime.engine import ModelRuntime

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class GenerateCall:
    cube_ids: tuple[str, ...]
    prompt: str = ""
    messages: tuple[Message, ...] = ()
    activation_ids: tuple[str, ...] = ()
    auto_activation: bool = False
    top_k: int = 0
    options: GenerationOptions = field(default_factory=GenerationOptions)


@dataclass
class GenerateSummary:
    ttft_ms: float
    kv_injected: bool
    prefix_tokens: int
    prompt_tokens: int
    completion_tokens: int
    finish_reason: str
    memories_used: list[LineageRef]
    activation_id: str


class Generator:
    def __init__(
        self, store: Store, host: ModelHost, activations: Activations, search: Search
    ) -> None:
        self._store = store
        self._host = host
        self._activations = activations
        self._search = search

    def stream(
        self,
        call: GenerateCall,
        should_stop: Callable[[], str | None],
        started: float | None = None,
    ) -> Iterator[str | GenerateSummary]:
        """Yields text pieces, then one GenerateSummary. ``should_stop`` is polled
        between tokens; ``started`` (``time.perf_counter()``) anchors the TTFT."""
        started = time.perf_counter() if started is None else started
        self._check(call)
        runtime = self._host.runtime()
        loaded = self._activation(call, runtime)
        activated = [s.content for s in loaded.sources] if loaded else []
        retrieved = self._retrieve(call, loaded)
        turn = runtime.template.turn_ids(
            activated, call.prompt, call.messages, [r.content for r in retrieved]
        )
        ids = runtime.template.context_ids([]) + turn if loaded is None else turn
        generation = runtime.generate(
            ids, loaded.kv if loaded else None, call.options, should_stop, started
        )
        yield from generation
        stats = generation.stats
        log.info(
            "generation ended (%s) after %d tokens; ttft %.1f ms, kv injected: %s",
            stats.finish_reason,
            stats.generated_tokens,
            stats.ttft_ms,
            loaded is not None,
        )
        used = [LineageRef(r.id, r.version) for r in retrieved]
        if loaded is not None:
            used = [
                LineageRef(loaded.record.id, loaded.record.version),
                *loaded.record.lineage,
                *used,
            ]
        yield GenerateSummary(
            ttft_ms=stats.ttft_ms,
            kv_injected=loaded is not None,
            prefix_tokens=stats.prefix_tokens,
            prompt_tokens=stats.prompt_tokens,
            completion_tokens=stats.generated_tokens,
            finish_reason=stats.finish_reason,
            memories_used=used,
            activation_id=loaded.record.id if loaded else "",
        )

    def _check(self, call: GenerateCall) -> None:
        if not call.cube_ids and (call.activation_ids or call.auto_activation or call.top_k):
            raise InvalidArgumentError("cube_ids", "memories are used only from named cubes")
        for i, cube_id in enumerate(call.cube_ids):
            validate.identifier(f"cube_ids[{i}]", cube_id)
            if not self._store.cube_exists(cube_id):
                raise NotFoundError(f"cube {cube_id} not found")
        if len(call.activation_ids) > 1:
            raise InvalidArgumentError(
                "activation_ids",
                "at most one activation per generation; build one activation over all the "
                "memories instead (positions of separately built caches would overlap)",
            )
        if call.activation_ids and call.auto_activation:
            raise InvalidArgumentError("auto_activation", "give activation_ids or auto, not both")

    def _activation(self, call: GenerateCall, runtime: ModelRuntime) -> Loaded | None:
        if call.activation_ids:
            activation_id = call.activation_ids[0]
            cube_id = self._cube_of(call.cube_ids, activation_id)
            return self._activations.load(cube_id, activation_id, runtime)
        if call.auto_activation:
            for cube_id in call.cube_ids:
                for candidate in self._activations.in_cube(cube_id):
                    if not candidate.problems and candidate.record.state == "ACTIVE":
                        return self._activations.load(cube_id, candidate.record.id, runtime)
        return None

    def _cube_of(self, cube_ids: Sequence[str], activation_id: str) -> str:
        validate.identifier("activation_ids[0]", activation_id)
        for cube_id in cube_ids:
            try:
                self._activations.record(cube_id, activation_id)
            except NotFoundError:
                continue
            return cube_id
        raise NotFoundError(f"activation {activation_id} not found in cubes {', '.join(cube_ids)}")

    def _retrieve(self, call: GenerateCall, loaded: Loaded | None) -> list[MemoryRecord]:
        if call.top_k == 0:
            return []
        query = call.prompt or next(
            (m.content for m in reversed(call.messages) if m.role == "user"), ""
        )
        hits = self._search.search_blocking(
            call.cube_ids, query, call.top_k, "HYBRID", SearchFilter()
        )
        skip = {r.memory_id for r in loaded.record.lineage} if loaded else set()
        return [r for r, _ in hits if r.type == "PLAINTEXT" and r.id not in skip]
