"""Crash and shutdown on one data directory: kill -9 keeps every acknowledged write and
the index catches up to find it; SIGTERM then lets an in-flight call finish, writes
the index snapshot and closes the store."""

from __future__ import annotations

import threading
import time
from pathlib import Path

from daemon_process import DaemonProcess
from memosd.errors import MemosError
from memosd.search import manifest
from memosd.store import Store

ENV = {
    "MEMOSD_STORE_INITIAL_MAP_MIB": "4",
    "MEMOSD_SEARCH_SNAPSHOT_INTERVAL_SECONDS": "1",
    "MEMOSD_SERVER_GRACE_SECONDS": "120",
}


def write_until_killed(daemon: DaemonProcess, cube: str, edited: str):
    """Two adders and one editor against the daemon; kill -9 it mid-stream.
    Returns the acknowledged {id: content} and [(version, content)] of the edits."""
    acked: dict[str, str] = {}
    edits: list[tuple[int, str]] = []
    failures: list[BaseException] = []
    lock = threading.Lock()
    killing = threading.Event()

    def add_loop(n: int) -> None:
        with daemon.client(timeout=30) as c:
            for i in range(10_000):
                texts = [f"durable note zq{n}x{i}y{j} about topic {j}" for j in range(3)]
                try:
                    ids = c.add(cube, texts)
                except MemosError as exc:
                    if not killing.is_set():
                        failures.append(exc)
                    return
                with lock:
                    acked.update(zip(ids, texts, strict=True))

    def edit_loop() -> None:
        with daemon.client(timeout=30) as c:
            for i in range(1, 10_000):
                try:
                    memory = c.update(cube, edited, content=f"edit {i}")
                except MemosError as exc:
                    if not killing.is_set():
                        failures.append(exc)
                    return
                edits.append((memory.version, memory.content))

    threads = [threading.Thread(target=add_loop, args=(n,)) for n in range(2)]
    threads.append(threading.Thread(target=edit_loop))
    for t in threads:
        t.start()
    time.sleep(3.0)  # long enough for an index snapshot to land mid-stream
    killing.set()
    daemon.kill()
    for t in threads:
        t.join(60)
    assert failures == []
    return acked, edits


def test_kill_9_then_graceful_stop(tmp_path: Path) -> None:
    first = DaemonProcess(tmp_path / "data", ENV).start()
    try:
        with first.client() as c:
            cube = c.create_cube("durable").id
            [edited] = c.add(cube, ["edit 0"])
        acked, edits = write_until_killed(first, cube, edited)
    finally:
        first.kill()
    assert len(acked) >= 30 and edits

    second = DaemonProcess(tmp_path / "data", ENV).start()
    try:
        with second.client() as c:
            for memory_id, text in acked.items():
                assert c.get(cube, memory_id).content == text
            for version, content in edits:
                assert c.get(cube, edited, version).content == content
            assert {m.id for m in c.iter_memories(cube)} >= set(acked)
            # The index caught up from the store: each acknowledged memory is found by
            # its own text, lexically and by vector.
            for memory_id, text in acked.items():
                for mode in ("LEXICAL", "VECTOR"):
                    hits = c.search([cube], text, mode=mode, top_k=3)
                    assert memory_id in [h.memory.id for h in hits], (mode, text)

        # SIGTERM while a large batch is being embedded: the call still succeeds.
        result: dict[str, object] = {}

        def big_add() -> None:
            with second.client(timeout=120) as c:
                try:
                    texts = [f"graceful item {i} of a long batch" for i in range(300)]
                    result["ids"] = c.add(cube, texts)
                except MemosError as exc:
                    result["error"] = exc

        adder = threading.Thread(target=big_add)
        adder.start()
        time.sleep(0.5)
        assert second.stop() == 0
        adder.join(60)
    finally:
        second.kill()
    assert "error" not in result, result.get("error")
    log = second.log()
    assert "memosd stopped" in log and "Traceback" not in log

    # After the graceful stop the store holds the in-flight batch and the index snapshot
    # reflects the store's last sequence number.
    with Store(tmp_path / "data" / "store") as store:
        heads = {r.id for r in store.iter_heads(cube)}
        assert set(result["ids"]) | set(acked) <= heads  # type: ignore[arg-type]
        snapshot = manifest.read(tmp_path / "data" / "index")
        assert snapshot is not None and snapshot.seq == store.seq
