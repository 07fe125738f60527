"""Activation memory operations: build, describe, load, list and drop activations.

An activation is an ACTIVATION memory whose KV cache (of the context block that
renders its source memories, see ``memosd.runtime.template``) lives in the
store's blob table as checksummed pages. Its metadata holds the model
fingerprint (``fingerprint.*``) and the pages (``kv.*``); its lineage holds the
source memories and the versions it was built from. It is *stale* as soon as a
source memory has another version or is no longer active; a stale activation is
never used as it is: it is rebuilt or refused (``model.stale``).
"""

from __future__ import annotations

import contextlib
import secrets
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from memosd.errors import FailedPreconditionError, InvalidArgumentError, NotFoundError
from memosd.ops import filtering, validate
from memosd.ops.host import ModelHost
from memosd.runtime.fingerprint import Fingerprint
from memosd.search import SearchFilter
from memosd.store import LineageRef, MemoryDraft, MemoryRecord, Store

if TYPE_CHECKING:
    from memosd.runtime.engine import ModelRuntime
    from memosd.runtime.kvcache import KvTensors

DEFAULT_LIMIT = 64
MAX_LIMIT = 1024


@dataclass(frozen=True)
class Activation:
    """An activation memory as clients see it."""

    record: MemoryRecord
    tokens: int
    bytes: int
    digests: tuple[str, ...]
    encoding: str
    stale: bool
    problems: tuple[str, ...]
    """Why it is stale, or how it differs from the loaded model; empty when usable."""


@dataclass(frozen=True)
class Loaded:
    """An activation ready to inject: its record, KV tensors and source memories."""

    record: MemoryRecord
    kv: KvTensors
    sources: list[MemoryRecord]


def _page_keys(record: MemoryRecord) -> list[str]:
    sequence = record.metadata["kv.sequence_id"]
    return [f"{sequence}/{i}" for i in range(int(record.metadata["kv.page_count"]))]


class Activations:
    def __init__(self, store: Store, host: ModelHost, clock: Callable[[], float] = time.time):
        self._store = store
        self._host = host
        self._clock = clock

    # building -----------------------------------------------------------------
    def build(
        self,
        cube_id: str,
        memory_ids: Sequence[str],
        flt: SearchFilter | None = None,
        limit: int = 0,
        int8: bool | None = None,
    ) -> MemoryRecord:
        """Builds an activation of the given memories (in order), or of the plaintext
        memories matching ``flt`` (oldest first, at most ``limit``)."""
        validate.identifier("cube_id", cube_id)
        if not self._store.cube_exists(cube_id):
            raise NotFoundError(f"cube {cube_id} not found")
        if memory_ids:
            sources = self._named(cube_id, memory_ids)
        else:
            sources = self._matching(cube_id, flt or SearchFilter(), limit)
        return self._build(cube_id, sources, int8)

    def _named(self, cube_id: str, memory_ids: Sequence[str]) -> list[MemoryRecord]:
        if len(memory_ids) > MAX_LIMIT:
            raise InvalidArgumentError("memory_ids", f"at most {MAX_LIMIT} memories")
        if len(set(memory_ids)) != len(memory_ids):
            raise InvalidArgumentError("memory_ids", "a memory is listed twice")
        now = self._clock()
        out = []
        for i, memory_id in enumerate(memory_ids):
            validate.identifier(f"memory_ids[{i}]", memory_id)
            record = self._store.get(cube_id, memory_id)
            if record.type != "PLAINTEXT":
                raise InvalidArgumentError(
                    f"memory_ids[{i}]", f"is {record.type}; only plaintext memories are activated"
                )
            state = filtering.effective_state(record, now)
            if state != "ACTIVE":
                raise FailedPreconditionError(f"memory {memory_id} is {state}, not ACTIVE")
            out.append(record)
        return out

    def _matching(self, cube_id: str, flt: SearchFilter, limit: int) -> list[MemoryRecord]:
        if not 0 <= limit <= MAX_LIMIT:
            raise InvalidArgumentError("limit", f"must be between 0 and {MAX_LIMIT}")
        now = self._clock()
        found = [
            r
            for r in self._store.iter_heads(cube_id)
            if r.type == "PLAINTEXT" and filtering.matches(r, flt, now)
        ]
        found.sort(key=lambda r: (r.created_at, r.id))
        if not found:
            raise FailedPreconditionError(f"no plaintext memory of cube {cube_id} matches")
        return found[: limit or DEFAULT_LIMIT]

    def _build(
        self, cube_id: str, sources: Sequence[MemoryRecord], int8: bool | None
    ) -> MemoryRecord:
        from memosd.runtime import kvcache

        runtime = self._host.runtime()
        config = self._host.config
        context = runtime.template.context_ids([s.content for s in sources])
        kv = runtime.prefill(context)
        encoding = "int8" if (config.int8 if int8 is None else int8) else "raw"
        sequence_id = secrets.randbits(63)
        pool = self._host.pool
        names = kvcache.pack_into_pool(
            pool, f"{sequence_id:016x}", kv, config.tokens_per_page, encoding, sequence_id
        )
        # Written through at once: the activation's record may only point at stored pages.
        digests = [pool.persist(n) for n in names]
        metadata = {
            **runtime.fingerprint.to_metadata(),
            "kv.sequence_id": f"{sequence_id:016x}",
            "kv.page_count": str(len(names)),
            "kv.pages": ",".join(digests),
            "kv.tokens": str(kv.tokens),
            "kv.bytes": str(sum(len(pool.get(n)) for n in names)),
            "kv.encoding": encoding,
            "kv.layout": kvcache.LAYOUT,
            "kv.tokens_per_page": str(config.tokens_per_page),
        }
        draft = MemoryDraft(
            content=(
                f"KV cache of {len(sources)} memories ({kv.tokens} tokens) "
                f"for {runtime.fingerprint.model}"
            ),
            metadata=metadata,
            source="activation",
            lineage=tuple(LineageRef(s.id, s.version) for s in sources),
            type="ACTIVATION",
        )
        try:
            [record] = self._store.add_memories(cube_id, [draft], None, self._clock())
        except BaseException:
            self._discard_pages(names, digests)
            raise
        return record

    # reading ------------------------------------------------------------------
    def record(self, cube_id: str, activation_id: str) -> MemoryRecord:
        validate.identifier("cube_id", cube_id)
        validate.identifier("activation_id", activation_id)
        record = self._store.get(cube_id, activation_id)
        if record.type != "ACTIVATION":
            raise NotFoundError(
                f"activation {activation_id} not found (it is a {record.type} memory)"
            )
        return record

    def describe(self, record: MemoryRecord) -> Activation:
        problems = self.staleness(record)
        stale = bool(problems)
        runtime = self._host.loaded
        if runtime is not None:
            problems += Fingerprint.from_metadata(record.metadata).differences(runtime.fingerprint)
        m = record.metadata
        return Activation(
            record=record,
            tokens=int(m.get("kv.tokens", 0)),
            bytes=int(m.get("kv.bytes", 0)),
            digests=tuple(d for d in m.get("kv.pages", "").split(",") if d),
            encoding=m.get("kv.encoding", ""),
            stale=stale,
            problems=tuple(problems),
        )

    def get(self, cube_id: str, activation_id: str) -> Activation:
        return self.describe(self.record(cube_id, activation_id))

    def in_cube(self, cube_id: str) -> list[Activation]:
        """The cube's activations (not deleted), newest first."""
        validate.identifier("cube_id", cube_id)
        if not self._store.cube_exists(cube_id):
            raise NotFoundError(f"cube {cube_id} not found")
        found = [
            r
            for r in self._store.iter_heads(cube_id)
            if r.type == "ACTIVATION" and r.state != "DELETED"
        ]
        found.sort(key=lambda r: (-r.created_at, r.id))
        return [self.describe(r) for r in found]

    def pages(self, record: MemoryRecord) -> list[bytes]:
        """The packed pages, in order (through the pool; verified)."""
        self._register(record)
        return [self._host.pool.get(name) for name in _page_keys(record)]

    def staleness(self, record: MemoryRecord) -> list[str]:
        """Why ``record`` no longer matches its sources; empty when it does."""
        now = self._clock()
        problems = []
        for ref in record.lineage:
            try:
                head = self._store.get(record.cube_id, ref.memory_id)
            except NotFoundError:
                problems.append(f"memory {ref.memory_id} was purged")
                continue
            state = filtering.effective_state(head, now)
            if head.version != ref.version:
                problems.append(
                    f"memory {ref.memory_id} is at version {head.version}, built from {ref.version}"
                )
            elif state != "ACTIVE":
                problems.append(f"memory {ref.memory_id} is {state}")
        return problems

    # using --------------------------------------------------------------------
    def load(self, cube_id: str, activation_id: str, runtime: ModelRuntime) -> Loaded:
        """The activation's KV, checked against ``runtime``; a stale activation is rebuilt
        from its sources' current versions or refused, as configured."""
        from memosd.runtime import kvcache

        record = self.record(cube_id, activation_id)
        if record.state != "ACTIVE":
            raise FailedPreconditionError(f"activation {activation_id} is {record.state}")
        diff = Fingerprint.from_metadata(record.metadata).differences(runtime.fingerprint)
        if diff:
            raise FailedPreconditionError(
                f"activation {activation_id} was built for another model: {'; '.join(diff)}"
            )
        stale = self.staleness(record)
        if stale:
            if self._host.config.stale == "refuse":
                raise FailedPreconditionError(
                    f"activation {activation_id} is stale: {'; '.join(stale)}"
                )
            record = self._rebuild(record, stale)
        self._register(record)
        kv = kvcache.unpack_from_pool(self._host.pool, _page_keys(record), runtime.kv_dtype)
        sources = [self._store.get(cube_id, r.memory_id, r.version) for r in record.lineage]
        expected = len(runtime.template.context_ids([s.content for s in sources]))
        if kv.tokens != expected:
            raise FailedPreconditionError(
                f"activation {record.id} holds {kv.tokens} tokens, its context block has {expected}"
            )
        return Loaded(record, kv, sources)

    def _rebuild(self, record: MemoryRecord, problems: list[str]) -> MemoryRecord:
        now = self._clock()
        sources = []
        for ref in record.lineage:
            try:
                head = self._store.get(record.cube_id, ref.memory_id)
            except NotFoundError:
                head = None
            if head is None or filtering.effective_state(head, now) != "ACTIVE":
                raise FailedPreconditionError(
                    f"activation {record.id} is stale and cannot be rebuilt: {'; '.join(problems)}"
                )
            sources.append(head)
        encoding = record.metadata.get("kv.encoding", "raw")
        return self._build(record.cube_id, sources, encoding == "int8")

    def _register(self, record: MemoryRecord) -> None:
        digests = [d for d in record.metadata.get("kv.pages", "").split(",") if d]
        names = _page_keys(record)
        if len(digests) != len(names):
            raise FailedPreconditionError(f"activation {record.id} lists {len(digests)} pages")
        for name, digest in zip(names, digests, strict=True):
            if name not in self._host.pool:
                self._host.pool.register(name, digest)

    # dropping -----------------------------------------------------------------
    def drop(self, cube_id: str, activation_id: str) -> None:
        """Purges the activation and deletes its pages."""
        record = self.record(cube_id, activation_id)
        self._store.purge(cube_id, activation_id)
        digests = [d for d in record.metadata.get("kv.pages", "").split(",") if d]
        self._discard_pages(_page_keys(record), digests)

    def _discard_pages(self, names: Sequence[str], digests: Sequence[str]) -> None:
        for name in names:
            self._host.pool.remove(name)
        for digest in digests:
            with contextlib.suppress(NotFoundError):
                self._store.delete_blob(digest)
