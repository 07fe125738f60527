"""Every RPC of a real ``memosd serve`` over gRPC: happy and unhappy paths."""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Iterator

import grpc
import pytest
from daemon_process import DaemonProcess
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from memosd.client import Client
from memosd.errors import (
    AlreadyExistsError,
    FailedPreconditionError,
    InvalidArgumentError,
    NotFoundError,
    ResourceExhaustedError,
    VersionConflictError,
)
from memosd.messages import MemoryFilter, MemoryInput

MISSING = "0" * 32


@pytest.fixture(scope="module")
def client(daemon) -> Iterator[Client]:
    with daemon.client() as c:
        yield c


@pytest.fixture
def cube(client: Client, request: pytest.FixtureRequest) -> str:
    return client.create_cube(request.node.name[:100]).id


def wait_for(predicate, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.05)


# ---- infrastructure -----------------------------------------------------------
def test_health_and_reflection(daemon) -> None:
    with grpc.insecure_channel(daemon.address) as channel:
        reply = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest())
        assert reply.status == health_pb2.HealthCheckResponse.SERVING
        stub = reflection_pb2_grpc.ServerReflectionStub(channel)
        [answer] = stub.ServerReflectionInfo(
            iter([reflection_pb2.ServerReflectionRequest(list_services="")])
        )
        names = {s.name for s in answer.list_services_response.service}
    assert {"memosd.v1.CubeService", "memosd.v1.MemoryService", "memosd.v1.AdminService"} <= names


def test_a_second_daemon_cannot_share_the_data_dir(daemon) -> None:
    with pytest.raises(RuntimeError, match="is in use by another memosd process"):
        DaemonProcess(daemon.data_dir).start()


def test_a_second_daemon_cannot_share_the_port(daemon, tmp_path) -> None:
    with pytest.raises(RuntimeError, match="cannot listen on"):
        DaemonProcess(tmp_path / "data", listen=daemon.address).start()


def test_stats(client: Client, cube: str) -> None:
    client.add(cube, ["one", "two"])
    stats = client.stats()
    assert stats["memories"] >= 2 and stats["cubes"] >= 1 and stats["store_seq"] > 0
    assert stats["indexed_memories"] == stats["memories"]


# ---- cubes ----------------------------------------------------------------------
def test_cube_lifecycle(client: Client) -> None:
    made = client.create_cube("projects")
    assert client.get_cube(made.id) == made
    assert made.id in {c.id for c in client.list_cubes()}
    with pytest.raises(AlreadyExistsError):
        client.create_cube("projects")
    client.add(made.id, ["a", "b", "c"])
    assert client.get_cube(made.id).memory_count == 3
    assert client.delete_cube(made.id) == 3
    with pytest.raises(NotFoundError):
        client.get_cube(made.id)
    with pytest.raises(NotFoundError):
        client.delete_cube(made.id)


@pytest.mark.parametrize("name", ["", "   ", "x" * 200])
def test_create_cube_bad_name(client: Client, name: str) -> None:
    with pytest.raises(InvalidArgumentError) as info:
        client.create_cube(name)
    assert info.value.field == "name"


def test_bad_and_missing_cube_ids(client: Client) -> None:
    for bad in ("", "not-an-id", "A" * 32):
        with pytest.raises(InvalidArgumentError) as info:
            client.get_cube(bad)
        assert info.value.field == "cube_id"
    with pytest.raises(NotFoundError):
        client.get_cube(MISSING)
    with pytest.raises(NotFoundError):
        client.add(MISSING, ["x"])
    with pytest.raises(NotFoundError):
        client.search([MISSING], "x")


def test_deleted_cube_leaves_search(client: Client) -> None:
    doomed = client.create_cube("doomed").id
    client.add(doomed, ["the lighthouse keeper's logbook"])
    assert client.search([doomed], "lighthouse logbook")
    client.delete_cube(doomed)
    with pytest.raises(NotFoundError):
        client.search([doomed], "lighthouse logbook")


# ---- add / get ------------------------------------------------------------------
def test_add_returns_ids_in_order_with_envelope(client: Client, cube: str) -> None:
    ids = client.add(
        cube,
        [
            MemoryInput("first", tags=["a"], metadata={"k": "v"}, priority=3, source="chat"),
            "second",
            MemoryInput("third", ttl_seconds=3600, lineage=[(MISSING, 1)]),
        ],
    )
    got = [client.get(cube, i) for i in ids]
    assert [m.content for m in got] == ["first", "second", "third"]
    first, second, third = got
    assert (first.tags, first.metadata, first.priority, first.source) == (
        ("a",),
        {"k": "v"},
        3,
        "chat",
    )
    assert (first.version, first.state, first.type, first.change_kind) == (
        1,
        "ACTIVE",
        "PLAINTEXT",
        "CREATE",
    )
    assert second.expires_at is None and second.source == "client"
    assert third.expires_at == pytest.approx(time.time() + 3600, abs=60)
    assert third.lineage == ((MISSING, 1),)


def test_add_batch_is_all_or_nothing(client: Client, cube: str) -> None:
    with pytest.raises(InvalidArgumentError) as info:
        client.add(cube, ["fine", "  ", "also fine"])
    assert info.value.field == "memories[1].content"
    with pytest.raises(InvalidArgumentError) as info:
        client.add(cube, ["fine", "x" * (64 * 1024 + 1)])
    assert info.value.field == "memories[1].content"
    with pytest.raises(InvalidArgumentError) as info:
        client.add(cube, [MemoryInput("x", ttl_seconds=-5)])
    assert info.value.field == "memories[0].ttl_seconds"
    with pytest.raises(InvalidArgumentError) as info:
        client.add(cube, [])
    assert info.value.field == "memories"
    with pytest.raises(ResourceExhaustedError):
        client.add(cube, ["x"] * 1001)
    assert client.list_memories(cube).memories == []


def test_get_unhappy(client: Client, cube: str) -> None:
    [mid] = client.add(cube, ["x"])
    other = client.create_cube("other for get").id
    with pytest.raises(NotFoundError):
        client.get(other, mid)
    with pytest.raises(NotFoundError):
        client.get(cube, MISSING)
    with pytest.raises(NotFoundError):
        client.get(cube, mid, version=2)
    with pytest.raises(InvalidArgumentError) as info:
        client.get(cube, mid, version=0)
    assert info.value.field == "version"
    with pytest.raises(InvalidArgumentError) as info:
        client.get(cube, "../etc/passwd")
    assert info.value.field == "memory_id"


# ---- update / history / rollback -------------------------------------------------
def test_update_history_rollback(client: Client, cube: str) -> None:
    [mid] = client.add(cube, [MemoryInput("v1 text", tags=["t1"])])
    v2 = client.update(cube, mid, content="v2 text", expected_version=1)
    assert (v2.version, v2.content, v2.tags, v2.change_kind) == (2, "v2 text", ("t1",), "UPDATE")
    v3 = client.update(cube, mid, tags=["t2"], metadata={"a": "b"}, priority=5)
    assert (v3.content, v3.tags, v3.metadata, v3.priority) == ("v2 text", ("t2",), {"a": "b"}, 5)
    v4 = client.update(cube, mid, state="ARCHIVED")
    assert (v4.state, v4.change_kind) == ("ARCHIVED", "STATE")
    back = client.rollback(cube, mid, 1)
    assert (back.version, back.content, back.tags, back.change_kind) == (
        5,
        "v1 text",
        ("t1",),
        "ROLLBACK",
    )
    history = client.history(cube, mid)
    assert [m.version for m in history] == [1, 2, 3, 4, 5]
    assert [m.change_kind for m in history] == ["CREATE", "UPDATE", "UPDATE", "STATE", "ROLLBACK"]
    assert client.get(cube, mid, version=2).content == "v2 text"
    assert all(a.updated_at <= b.updated_at for a, b in itertools.pairwise(history))


def test_update_unhappy(client: Client, cube: str) -> None:
    [mid] = client.add(cube, ["x"])
    with pytest.raises(VersionConflictError):
        client.update(cube, mid, content="y", expected_version=7)
    with pytest.raises(InvalidArgumentError) as info:
        client.update(cube, mid)
    assert info.value.field == "update"
    with pytest.raises(InvalidArgumentError) as info:
        client.update(cube, mid, content="")
    assert info.value.field == "content"
    with pytest.raises(InvalidArgumentError) as info:
        client.update(cube, mid, state="DELETED")
    assert info.value.field == "state"
    with pytest.raises(NotFoundError):
        client.update(cube, MISSING, content="y")
    assert client.get(cube, mid).version == 1


def test_frozen_memory_refuses_changes_until_unfrozen(client: Client, cube: str) -> None:
    [mid] = client.add(cube, ["pinned fact"])
    client.update(cube, mid, content="pinned fact, edited")
    client.update(cube, mid, state="FROZEN")
    for attempt in (
        lambda: client.update(cube, mid, content="no"),
        lambda: client.update(cube, mid, state="FROZEN", priority=1),
        lambda: client.delete(cube, mid),
        lambda: client.delete(cube, mid, purge=True),
        lambda: client.rollback(cube, mid, 1),
    ):
        with pytest.raises(FailedPreconditionError):
            attempt()
    assert client.get(cube, mid).version == 3
    assert client.update(cube, mid, state="ACTIVE").state == "ACTIVE"
    assert client.update(cube, mid, content="free again").version == 5


def test_rollback_unhappy(client: Client, cube: str) -> None:
    [mid] = client.add(cube, ["x"])
    with pytest.raises(NotFoundError):
        client.rollback(cube, mid, 9)
    with pytest.raises(InvalidArgumentError) as info:
        client.rollback(cube, mid, 0)
    assert info.value.field == "version"
    with pytest.raises(VersionConflictError):
        client.rollback(cube, mid, 1, expected_version=3)
    with pytest.raises(NotFoundError):
        client.history(cube, MISSING)


# ---- delete ----------------------------------------------------------------------
def test_soft_delete_keeps_history_and_leaves_search(client: Client, cube: str) -> None:
    [mid] = client.add(cube, ["the submarine is painted yellow"])
    assert [h.memory.id for h in client.search([cube], "yellow submarine")] == [mid]
    deleted = client.delete(cube, mid)
    assert deleted is not None and (deleted.state, deleted.version) == ("DELETED", 2)
    assert client.search([cube], "yellow submarine") == []
    assert [m.state for m in client.history(cube, mid)] == ["ACTIVE", "DELETED"]
    found = client.search([cube], "yellow submarine", filter=MemoryFilter(states=["DELETED"]))
    assert [h.memory.id for h in found] == [mid]
    restored = client.rollback(cube, mid, 1)
    assert restored.state == "ACTIVE"
    assert [h.memory.id for h in client.search([cube], "yellow submarine")] == [mid]


def test_purge_removes_for_good(client: Client, cube: str) -> None:
    [mid, keep] = client.add(cube, ["purple elephant parade", "grey mouse"])
    assert client.delete(cube, mid, purge=True) is None
    for call in (lambda: client.get(cube, mid), lambda: client.history(cube, mid)):
        with pytest.raises(NotFoundError):
            call()
    states = MemoryFilter(states=["ACTIVE", "DELETED", "ARCHIVED"])
    for mode in ("VECTOR", "LEXICAL", "HYBRID"):
        hits = client.search([cube], "purple elephant parade", mode=mode, filter=states)
        assert mid not in {h.memory.id for h in hits}
    assert [m.id for m in client.list_memories(cube).memories] == [keep]
    with pytest.raises(NotFoundError):
        client.delete(cube, mid)


# ---- search ----------------------------------------------------------------------
def test_search_modes_filters_and_cubes(client: Client, cube: str) -> None:
    other = client.create_cube("second search cube").id
    ids = client.add(
        cube,
        [
            MemoryInput("Alice adopted a golden retriever named Biscuit", tags=["pets"]),
            MemoryInput(
                "The quarterly budget review is on Friday", tags=["work"], metadata={"team": "fin"}
            ),
            MemoryInput("Bob is allergic to peanuts", tags=["health", "pets"]),
        ],
    )
    [far] = client.add(other, ["Carol's dog loves the beach"])
    for mode in ("VECTOR", "LEXICAL", "HYBRID"):
        top = client.search([cube], "golden retriever Biscuit", mode=mode, top_k=1)
        assert [h.memory.id for h in top] == [ids[0]], mode
    hits = client.search([cube], "dog", filter=MemoryFilter(tags_all=["health"]))
    assert [h.memory.id for h in hits] == [ids[2]]
    hits = client.search([cube], "review", filter=MemoryFilter(metadata={"team": "fin"}))
    assert [h.memory.id for h in hits] == [ids[1]]
    both = client.search([cube, other], "dog beach", top_k=10)
    assert far in {h.memory.id for h in both}
    scores = [h.score for h in both]
    assert scores == sorted(scores, reverse=True)
    with pytest.raises(InvalidArgumentError) as info:
        client.search([cube], "   ")
    assert info.value.field == "query"
    with pytest.raises(InvalidArgumentError) as info:
        client.search([cube], "x", top_k=5000)
    assert info.value.field == "top_k"
    with pytest.raises(InvalidArgumentError) as info:
        client.search([], "x")
    assert info.value.field == "cube_ids"


def test_search_never_returns_stale_content(client: Client, cube: str) -> None:
    [mid] = client.add(cube, ["the meeting is in room 101"])
    client.update(cube, mid, content="the meeting moved to the rooftop garden")
    for mode in ("VECTOR", "LEXICAL", "HYBRID"):
        hits = client.search([cube], "meeting room 101", mode=mode)
        assert all(h.memory.content != "the meeting is in room 101" for h in hits)
        assert [h.memory.version for h in hits if h.memory.id == mid] in ([], [2])
    assert client.search([cube], "rooftop garden", mode="LEXICAL")[0].memory.version == 2


def test_expired_memories_are_never_returned_and_get_swept(client: Client, cube: str) -> None:
    [mid] = client.add(cube, [MemoryInput("ephemeral marmalade recipe", ttl_seconds=1.0)])
    assert [h.memory.id for h in client.search([cube], "marmalade recipe")] == [mid]
    time.sleep(1.1)
    assert client.search([cube], "marmalade recipe") == []
    wait_for(lambda: client.get(cube, mid).state == "EXPIRED")
    assert client.history(cube, mid)[-1].change_kind == "EXPIRE"


def test_access_stats_are_flushed(client: Client, cube: str) -> None:
    [mid] = client.add(cube, ["the access counter memory"])
    for _ in range(3):
        client.search([cube], "access counter")
    wait_for(lambda: client.get(cube, mid).access_count == 3)
    memory = client.get(cube, mid)
    assert memory.version == 1 and memory.last_access_at is not None


# ---- list ------------------------------------------------------------------------
def test_list_pages_in_order_with_filters(client: Client, cube: str) -> None:
    ids = client.add(
        cube, [MemoryInput(f"note {i}", tags=["even" if i % 2 == 0 else "odd"]) for i in range(23)]
    )
    seen, token, pages = [], "", 0
    while True:
        page = client.list_memories(cube, page_size=5, page_token=token)
        seen += [m.id for m in page.memories]
        pages += 1
        if not page.next_page_token:
            break
        token = page.next_page_token
    assert seen == ids and pages == 5
    evens = list(client.iter_memories(cube, filter=MemoryFilter(tags_any=["even"]), page_size=4))
    assert [m.id for m in evens] == ids[::2]
    client.update(cube, ids[0], state="ARCHIVED")
    assert ids[0] not in {m.id for m in client.iter_memories(cube)}
    archived = client.list_memories(cube, filter=MemoryFilter(states=["ARCHIVED"])).memories
    assert [m.id for m in archived] == [ids[0]]


def test_list_unhappy(client: Client, cube: str) -> None:
    other = client.create_cube("list other").id
    client.add(cube, ["a", "b", "c"])
    token = client.list_memories(cube, page_size=1).next_page_token
    assert token
    for bad in ("garbage!", "AAAA", token[:-3]):
        with pytest.raises(InvalidArgumentError) as info:
            client.list_memories(cube, page_token=bad)
        assert info.value.field == "page_token"
    with pytest.raises(InvalidArgumentError) as info:
        client.list_memories(other, page_token=token)
    assert info.value.field == "page_token"
    with pytest.raises(InvalidArgumentError) as info:
        client.list_memories(cube, page_size=100_000)
    assert info.value.field == "page_size"
    with pytest.raises(InvalidArgumentError) as info:
        client.list_memories(cube, filter=MemoryFilter(states=["BOGUS"]))
    assert info.value.field == "filter.states"
    with pytest.raises(NotFoundError):
        client.list_memories(MISSING)


# ---- concurrency -----------------------------------------------------------------
def test_parallel_clients_lose_nothing(daemon, cube: str) -> None:
    writers, batches, per_batch = 8, 5, 4
    added: list[str] = []
    errors: list[BaseException] = []
    lock = threading.Lock()
    [counter] = daemon.client().add(cube, ["counter 0"])

    def work(n: int) -> None:
        try:
            with daemon.client() as c:
                for b in range(batches):
                    ids = c.add(cube, [f"writer {n} batch {b} item {i}" for i in range(per_batch)])
                    with lock:
                        added.extend(ids)
                    while True:  # optimistic increments of one shared memory
                        head = c.get(cube, counter)
                        value = int(head.content.split()[1]) + 1
                        try:
                            c.update(
                                cube,
                                counter,
                                content=f"counter {value}",
                                expected_version=head.version,
                            )
                            break
                        except VersionConflictError:
                            continue
                    c.search([cube], f"writer {n}")
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(n,)) for n in range(writers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    with daemon.client() as c:
        listed = {m.id for m in c.iter_memories(cube)}
        assert set(added) <= listed and len(added) == writers * batches * per_batch
        final = c.get(cube, counter)
        assert final.content == f"counter {writers * batches}"
        assert final.version == writers * batches + 1
