"""The LMDB store: records, versions, purge, cubes, audit, blobs, map growth, locking."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
from memosd.errors import (
    AlreadyExistsError,
    FailedPreconditionError,
    InvalidArgumentError,
    NotFoundError,
    VersionConflictError,
)
from memosd.store import MemoryDraft, MemoryRecord, Store


@pytest.fixture
def store(tmp_path: Path) -> Store:
    with Store(tmp_path / "store", map_size=1 << 20) as s:
        yield s


def edit(content: str):
    def change(head: MemoryRecord, _read) -> MemoryRecord:
        return dataclasses.replace(head, content=content, change_kind="UPDATE")

    return change


def test_add_get_and_versions(store: Store) -> None:
    cube = store.create_cube("notes", now=1.0)
    vectors = np.eye(2, 4, dtype=np.float32)
    a, b = store.add_memories(
        cube.id, [MemoryDraft("alpha", tags=("x",)), MemoryDraft("beta")], vectors, now=2.0
    )
    assert (a.version, a.state, a.change_kind, a.created_at) == (1, "ACTIVE", "CREATE", 2.0)
    assert b.key == a.key + 1 and a.id != b.id
    assert store.get(cube.id, a.id) == a
    found, rows = store.vectors([b.key, b.key + 100, a.key])
    assert found == [b.key, a.key]
    np.testing.assert_array_equal(rows, vectors[[1, 0]])
    assert store.vectors([b.key + 100])[0] == []
    v2 = store.commit_version(cube.id, a.id, edit("alpha 2"), now=3.0)
    assert (v2.version, v2.content, v2.updated_at, v2.created_at) == (2, "alpha 2", 3.0, 2.0)
    assert store.get(cube.id, a.id, 1).content == "alpha"
    assert [r.content for r in store.history(cube.id, a.id)] == ["alpha", "alpha 2"]
    assert store.get_cube(cube.id).memory_count == 2
    with pytest.raises(NotFoundError):
        store.get(cube.id, a.id, 3)


def test_expected_version_and_refused_changes_write_nothing(store: Store) -> None:
    cube = store.create_cube("c", now=0.0)
    [m] = store.add_memories(cube.id, [MemoryDraft("x")], None, now=0.0)
    seq = store.seq
    with pytest.raises(VersionConflictError):
        store.commit_version(cube.id, m.id, edit("y"), now=1.0, expected_version=2)

    def refuse(head: MemoryRecord, _read) -> MemoryRecord:
        raise FailedPreconditionError("no")

    with pytest.raises(FailedPreconditionError):
        store.commit_version(cube.id, m.id, refuse, now=1.0)
    assert store.seq == seq
    assert store.get(cube.id, m.id) == m


def test_memory_of_another_cube_is_not_found(store: Store) -> None:
    one = store.create_cube("one", now=0.0)
    two = store.create_cube("two", now=0.0)
    [m] = store.add_memories(one.id, [MemoryDraft("x")], None, now=0.0)
    with pytest.raises(NotFoundError, match="not found in cube"):
        store.get(two.id, m.id)
    with pytest.raises(NotFoundError, match="cube"):
        store.get("f" * 32, m.id)


def test_batch_is_atomic(store: Store) -> None:
    cube = store.create_cube("c", now=0.0)
    with pytest.raises(InvalidArgumentError, match="vectors"):
        store.add_memories(cube.id, [MemoryDraft("a"), MemoryDraft("b")], np.zeros((1, 4)), now=0)
    with pytest.raises(NotFoundError):
        store.add_memories("0" * 32, [MemoryDraft("a")], None, now=0.0)
    assert list(store.iter_heads()) == []
    assert store.get_cube(cube.id).memory_count == 0


def test_purge_removes_everything_and_changes_report_it(store: Store) -> None:
    cube = store.create_cube("c", now=0.0)
    [m] = store.add_memories(cube.id, [MemoryDraft("x")], np.ones((1, 3), np.float32), now=0.0)
    store.commit_version(cube.id, m.id, edit("y"), now=1.0)
    before = store.seq
    store.purge(cube.id, m.id)
    assert store.head_by_key(m.key) is None and store.vectors([m.key])[0] == []
    with pytest.raises(NotFoundError):
        store.history(cube.id, m.id)
    assert list(store.changes_since(before)) == [(before + 1, m.key)]
    assert store.stats().versions == 0


def test_changes_since_lists_each_head_change(store: Store) -> None:
    cube = store.create_cube("c", now=0.0)
    start = store.seq
    a, b = store.add_memories(cube.id, [MemoryDraft("a"), MemoryDraft("b")], None, now=0.0)
    store.commit_version(cube.id, b.id, edit("b2"), now=1.0)
    changes = list(store.changes_since(start))
    assert changes == [(start + 1, a.key), (start + 1, b.key), (start + 2, b.key)]
    assert list(store.changes_since(start + 1)) == [(start + 2, b.key)]


def test_subscribers_get_commits_in_order(store: Store) -> None:
    seen: list[tuple[int, list[int], list[int]]] = []
    store.subscribe(
        lambda seq, heads, removed: seen.append((seq, [h.version for h in heads], list(removed)))
    )
    cube = store.create_cube("c", now=0.0)
    [m] = store.add_memories(cube.id, [MemoryDraft("a")], None, now=0.0)
    added = store.seq
    store.commit_version(cube.id, m.id, edit("b"), now=1.0)
    store.purge(cube.id, m.id)
    assert seen == [(added, [1], []), (added + 1, [2], []), (added + 2, [], [m.key])]
    assert store.seq == added + 2


def test_delete_cube_removes_its_memories_only(store: Store) -> None:
    keep = store.create_cube("keep", now=0.0)
    drop = store.create_cube("drop", now=0.0)
    [kept] = store.add_memories(keep.id, [MemoryDraft("k")], None, now=0.0)
    gone = store.add_memories(drop.id, [MemoryDraft(str(i)) for i in range(5)], None, now=0.0)
    assert store.delete_cube(drop.id) == 5
    assert not store.cube_exists(drop.id)
    assert store.existing_cubes([drop.id, keep.id, keep.id, "nope"]) == {keep.id}
    assert [r.id for r in store.iter_heads()] == [kept.id]
    assert all(store.head_by_key(r.key) is None for r in gone)
    assert store.create_cube("drop", now=1.0).name == "drop"  # the name is free again
    with pytest.raises(AlreadyExistsError):
        store.create_cube("keep", now=1.0)


def test_list_page_walks_a_cube_in_order(store: Store) -> None:
    cube = store.create_cube("c", now=0.0)
    made = store.add_memories(cube.id, [MemoryDraft(str(i)) for i in range(25)], None, now=0.0)
    seen, after = [], 0
    while True:
        page, nxt = store.list_page(cube.id, after, lambda r: int(r.content) % 2 == 0, 4)
        seen += [r.content for r in page]
        if nxt is None:
            break
        after = nxt
    assert seen == [r.content for r in made if int(r.content) % 2 == 0]


def test_expire_due_and_access_stats(store: Store) -> None:
    cube = store.create_cube("c", now=0.0)
    soon, _later, never = store.add_memories(
        cube.id,
        [
            MemoryDraft("soon", expires_at=10.0),
            MemoryDraft("later", expires_at=20.0),
            MemoryDraft("never"),
        ],
        None,
        now=0.0,
    )
    assert [r.id for r in store.expire_due(now=15.0, limit=100)] == [soon.id]
    assert store.get(cube.id, soon.id).state == "EXPIRED"
    assert store.get(cube.id, soon.id).change_kind == "EXPIRE"
    assert store.expire_due(now=15.0, limit=100) == []  # once only
    heads_seen: list[MemoryRecord] = []
    totals_seen: list[dict[int, tuple[int, float | None]]] = []
    store.subscribe(lambda _seq, heads, removed: heads_seen.extend(heads))
    store.subscribe_access(lambda totals: totals_seen.append(dict(totals)))
    store.record_access({never.key: (3, 7.0), soon.key: (1, 8.0)})
    # No head is rewritten: access subscribers get the new totals.
    assert heads_seen == []
    assert totals_seen == [{never.key: (3, 7.0), soon.key: (1, 8.0)}]
    head = store.get(cube.id, never.id)
    assert (head.access_count, head.last_access_at, head.version) == (3, 7.0, 1)
    # The statistics belong to the memory: every version of it reads them.
    assert [v.access_count for v in store.history(cube.id, soon.id)] == [1, 1]
    assert store.get(cube.id, soon.id, version=1).last_access_at == 8.0
    # Counts add up and the last access only moves forward.
    store.record_access({never.key: (2, 5.0)})
    head = store.get(cube.id, never.id)
    assert (head.access_count, head.last_access_at, head.version) == (5, 7.0, 1)
    assert totals_seen[-1] == {never.key: (5, 7.0)}
    # A new version keeps them; a purged memory takes them along.
    updated = store.commit_version(
        cube.id, never.id, lambda h, _read: dataclasses.replace(h, content="always"), now=1.0
    )
    assert (updated.access_count, updated.last_access_at) == (5, 7.0)
    store.purge(cube.id, soon.id)
    flushes = len(totals_seen)
    store.record_access({soon.key: (1, 9.0)})  # hit before the purge, flushed after
    assert len(totals_seen) == flushes  # nothing to tell


def test_blobs_are_content_addressed(store: Store) -> None:
    digest = store.put_blob(b"kv page")
    assert store.put_blob(b"kv page") == digest
    assert store.get_blob(digest) == b"kv page"
    store.delete_blob(digest)
    with pytest.raises(NotFoundError):
        store.get_blob(digest)
    with pytest.raises(InvalidArgumentError):
        store.get_blob("xyz")


def test_map_grows_when_full(tmp_path: Path) -> None:
    with Store(tmp_path / "s", map_size=64 * 1024) as store:
        cube = store.create_cube("c", now=0.0)
        for i in range(40):
            store.add_memories(cube.id, [MemoryDraft(f"{i} " + "x" * 4000)] * 10, None, now=0.0)
        used, size = store.stats().used_bytes, store.stats().map_bytes
        assert size > 64 * 1024 and used <= size
        assert store.get_cube(cube.id).memory_count == 400


def test_data_dir_is_locked_and_reopens(tmp_path: Path) -> None:
    path = tmp_path / "s"
    store = Store(path, map_size=1 << 20)
    cube = store.create_cube("c", now=0.0)
    with pytest.raises(FailedPreconditionError, match="in use"):
        Store(path)
    store.close()
    with Store(path) as again:
        assert again.get_cube(cube.id) == cube


def test_schema_1_store_is_upgraded_with_its_access_statistics(tmp_path: Path) -> None:
    import lmdb
    from memosd.store import SCHEMA_VERSION
    from memosd.store.record import pack, unpack

    path = tmp_path / "store"
    with Store(path, map_size=1 << 20) as s:
        cube = s.create_cube("old", now=1.0)
        used, fresh = s.add_memories(
            cube.id, [MemoryDraft("used"), MemoryDraft("fresh")], None, 2.0
        )
        s.commit_version(cube.id, used.id, edit("used, edited"), now=3.0)
    # Rewrite it as schema 1 wrote it: access statistics inside every stored version.
    env = lmdb.open(str(path), max_dbs=16, subdir=True)
    with env.begin(write=True) as txn:
        for name in ("heads", "versions"):
            db = env.open_db(name.encode(), txn=txn)
            for raw_key, raw in list(txn.cursor(db=db)):
                fields = unpack(raw)
                hits = (4, 40.0) if fields["id"] == used.id else (0, None)
                fields["access_count"], fields["last_access_at"] = hits
                txn.put(raw_key, pack(fields), db=db)
        txn.put(b"schema_version", (1).to_bytes(8, "big"), db=env.open_db(b"meta", txn=txn))
    env.close()
    with Store(path, map_size=1 << 20) as s:
        assert [v.access_count for v in s.history(cube.id, used.id)] == [4, 4]
        assert s.get(cube.id, fresh.id).access_count == 0
        s.record_access({used.key: (1, 50.0), fresh.key: (2, 45.0)})
        assert (s.get(cube.id, used.id).access_count, s.get(cube.id, used.id).last_access_at) == (
            5,
            50.0,
        )
        assert s.get(cube.id, fresh.id).access_count == 2
    with Store(path, map_size=1 << 20) as s:  # upgraded once: the counts stay
        assert s.get(cube.id, used.id).access_count == 5
    env = lmdb.open(str(path), max_dbs=16, subdir=True)
    with env.begin() as txn:
        raw = txn.get(b"schema_version", db=env.open_db(b"meta", txn=txn))
    env.close()
    assert int.from_bytes(raw, "big") == SCHEMA_VERSION


def test_unknown_schema_is_refused(tmp_path: Path) -> None:
    import lmdb

    path = tmp_path / "store"
    Store(path, map_size=1 << 20).close()
    env = lmdb.open(str(path), max_dbs=16, subdir=True)
    with env.begin(write=True) as txn:
        txn.put(b"schema_version", (99).to_bytes(8, "big"), db=env.open_db(b"meta", txn=txn))
    env.close()
    with pytest.raises(FailedPreconditionError, match="schema version 99"):
        Store(path, map_size=1 << 20)
