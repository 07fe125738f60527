"""Model test: the store's version history against a plain in-memory model.

Random sequences of adds, edits (with right or wrong expected versions),
state changes, rollbacks, purges and reopenings; after every step each memory's
history, every old version and the head must equal the model's.
"""

from __future__ import annotations

import dataclasses
import shutil
import tempfile
from pathlib import Path

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    consumes,
    invariant,
    multiple,
    precondition,
    rule,
)
from memosd.errors import NotFoundError, VersionConflictError
from memosd.store import MemoryDraft, MemoryRecord, Store

TEXT = st.text(min_size=1, max_size=12)
STATES = st.sampled_from(["ACTIVE", "ARCHIVED", "FROZEN", "DELETED"])


class VersionHistory(RuleBasedStateMachine):
    memories = Bundle("memories")

    def __init__(self) -> None:
        super().__init__()
        self.dir = Path(tempfile.mkdtemp())
        self.store = Store(self.dir / "s", map_size=1 << 20)
        self.cube = self.store.create_cube("cube", now=0.0).id
        self.clock = 0.0
        # memory id -> [(content, state, change_kind), ...] one entry per version
        self.model: dict[str, list[tuple[str, str, str]]] = {}
        self.purged: set[str] = set()

    def teardown(self) -> None:
        self.store.close()
        shutil.rmtree(self.dir)

    def tick(self) -> float:
        self.clock += 1.0
        return self.clock

    @rule(target=memories, contents=st.lists(TEXT, min_size=1, max_size=3))
    def add(self, contents: list[str]):
        records = self.store.add_memories(
            self.cube, [MemoryDraft(c) for c in contents], None, now=self.tick()
        )
        for record, content in zip(records, contents, strict=True):
            self.model[record.id] = [(content, "ACTIVE", "CREATE")]
        return multiple(*(r.id for r in records))

    @rule(memory=memories, content=TEXT, stale=st.booleans())
    def edit(self, memory: str, content: str, stale: bool) -> None:
        if memory in self.purged:
            return
        current = len(self.model[memory])
        expected = current - 1 if stale else current

        def change(head: MemoryRecord, _read) -> MemoryRecord:
            return dataclasses.replace(head, content=content, change_kind="UPDATE")

        try:
            self.store.commit_version(
                self.cube, memory, change, now=self.tick(), expected_version=expected
            )
        except VersionConflictError:
            assert stale
            return
        assert not stale
        state = self.model[memory][-1][1]
        self.model[memory].append((content, state, "UPDATE"))

    @rule(memory=memories, state=STATES)
    def set_state(self, memory: str, state: str) -> None:
        if memory in self.purged:
            return

        def change(head: MemoryRecord, _read) -> MemoryRecord:
            return dataclasses.replace(head, state=state, change_kind="STATE")

        self.store.commit_version(self.cube, memory, change, now=self.tick())
        self.model[memory].append((self.model[memory][-1][0], state, "STATE"))

    @rule(memory=memories, data=st.data())
    def rollback(self, memory: str, data: st.DataObject) -> None:
        if memory in self.purged:
            return
        target = data.draw(st.integers(1, len(self.model[memory])))

        def change(head: MemoryRecord, read) -> MemoryRecord:
            return dataclasses.replace(head, content=read(target).content, change_kind="ROLLBACK")

        self.store.commit_version(self.cube, memory, change, now=self.tick())
        content = self.model[memory][target - 1][0]
        self.model[memory].append((content, self.model[memory][-1][1], "ROLLBACK"))

    @rule(memory=consumes(memories))
    def purge(self, memory: str) -> None:
        if memory in self.purged:
            return
        self.store.purge(self.cube, memory)
        self.purged.add(memory)

    @precondition(lambda self: self.model)
    @rule()
    def reopen(self) -> None:
        self.store.close()
        self.store = Store(self.dir / "s")

    @invariant()
    def histories_match(self) -> None:
        for memory, versions in self.model.items():
            if memory in self.purged:
                for read in (self.store.get, self.store.history):
                    try:
                        read(self.cube, memory)
                    except NotFoundError:
                        continue
                    raise AssertionError(f"purged memory {memory} still readable")
                continue
            history = self.store.history(self.cube, memory)
            got = [(r.content, r.state, r.change_kind) for r in history]
            assert got == versions
            assert [r.version for r in history] == list(range(1, len(versions) + 1))
            assert self.store.get(self.cube, memory) == history[-1]
            for record in history[:-1]:
                assert self.store.get(self.cube, memory, record.version) == record
        live = len(self.model) - len(self.purged)
        assert self.store.get_cube(self.cube).memory_count == live
        assert sum(1 for _ in self.store.iter_heads(self.cube)) == live


VersionHistory.TestCase.settings = settings(max_examples=40, stateful_step_count=25, deadline=None)
test_version_history = VersionHistory.TestCase
