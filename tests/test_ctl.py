"""memosctl against a real daemon: human and --json output, errors and exit codes."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest


def ctl(daemon, *args: str, stdin: str | None = None, json_out: bool = True):
    command = [sys.executable, "-m", "memosd.cli.ctl", "--address", daemon.address]
    command += ["--json"] if json_out else []
    done = subprocess.run(
        [*command, *args], input=stdin, capture_output=True, text=True, timeout=60
    )
    return done


def ok(daemon, *args: str, **kwargs):
    done = ctl(daemon, *args, **kwargs)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout) if kwargs.get("json_out", True) else done.stdout


def test_memosctl_round_trip(daemon) -> None:
    cube = ok(daemon, "create-cube", "cli")
    assert cube["name"] == "cli"
    [first, second] = ok(
        daemon, "add", "cli", "tea is green", "coffee is black", "--tag", "drinks"
    )["ids"]
    ok(daemon, "add", "cli", "-", stdin="water is clear\n\n")
    assert ok(daemon, "get", "cli", first)["content"] == "tea is green"
    updated = ok(
        daemon, "update", cube["id"], first, "--content", "tea is oolong", "--expected-version", "1"
    )
    assert updated["version"] == 2
    history = ok(daemon, "history", "cli", first)
    assert [v["content"] for v in history] == ["tea is green", "tea is oolong"]
    assert ok(daemon, "rollback", "cli", first, "1")["content"] == "tea is green"
    hits = ok(daemon, "search", "black coffee", "--cube", "cli", "--mode", "LEXICAL")
    assert hits[0]["memory"]["id"] == second
    listed = ok(daemon, "list", "cli", "--all", "--tag-any", "drinks")
    assert [m["id"] for m in listed] == [first, second]
    assert ok(daemon, "delete", "cli", second)["state"] == "DELETED"
    assert ok(daemon, "delete", "cli", second, "--purge") == {"purged": second}
    assert "cli" in [c["name"] for c in ok(daemon, "list-cubes")]
    assert ok(daemon, "stats")["cubes"] >= 1
    human = ok(daemon, "list", "cli", json_out=False)
    assert "tea is green" in human and "v3" in human
    assert ok(daemon, "delete-cube", "cli") == {"deleted_memories": 2}


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (("get", "cli-missing", "0" * 32), 1, "NOT_FOUND"),
        (("get", "0" * 32, "bad-id"), 1, "INVALID_ARGUMENT: memory_id"),
        (("add", "0" * 32, "x", "--meta", "novalue"), 1, "INVALID_ARGUMENT: --meta"),
        (("frobnicate",), 2, "invalid choice"),
    ],
)
def test_memosctl_errors(daemon, args: tuple[str, ...], code: int, message: str) -> None:
    done = ctl(daemon, *args)
    assert done.returncode == code
    assert message in done.stderr
    assert done.stdout == ""


def test_memosctl_unreachable_daemon() -> None:
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "memosd.cli.ctl",
            "--address",
            "127.0.0.1:1",
            "--timeout",
            "5",
            "list-cubes",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 1
    assert "UNAVAILABLE" in done.stderr and "127.0.0.1:1" in done.stderr
