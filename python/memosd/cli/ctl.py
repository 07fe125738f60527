"""``memosctl``: the command-line client of memosd.

Human-readable output by default, ``--json`` for scripts. Cubes may be named by
id or by name. Errors go to stderr with a non-zero exit status (1 for an error
from the daemon or the connection, 2 for bad usage).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import re
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

from memosd import status
from memosd.client import DEFAULT_ADDRESS, Client
from memosd.errors import InvalidArgumentError, MemosError, NotFoundError
from memosd.messages import Cube, Hit, Memory, MemoryFilter, MemoryInput

_ID = re.compile(r"[0-9a-f]{32}")


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        with Client(args.address, timeout=args.timeout) as client:
            result = args.run(client, args)
    except MemosError as exc:
        code = status.code_of(exc)
        label = code.name if code is not None else "ERROR"
        print(f"memosctl: {label}: {exc}", file=sys.stderr)
        return 1
    try:
        _print(result, args.json)
    except BrokenPipeError:
        # The reader (``| head``) went away; say nothing more, and let the exit flush fail quietly.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    return 0


# commands -------------------------------------------------------------------
def _create_cube(client: Client, args: argparse.Namespace) -> Any:
    return client.create_cube(args.name)


def _list_cubes(client: Client, args: argparse.Namespace) -> Any:
    return client.list_cubes()


def _delete_cube(client: Client, args: argparse.Namespace) -> Any:
    return {"deleted_memories": client.delete_cube(_cube(client, args.cube))}


def _add(client: Client, args: argparse.Namespace) -> Any:
    texts = (
        [line for line in sys.stdin.read().splitlines() if line.strip()]
        if args.text == ["-"]
        else args.text
    )
    inputs = [
        MemoryInput(
            content=text,
            tags=args.tag,
            metadata=_pairs(args.meta),
            priority=args.priority,
            ttl_seconds=args.ttl,
            source=args.source,
        )
        for text in texts
    ]
    return {"ids": client.add(_cube(client, args.cube), inputs)}


def _get(client: Client, args: argparse.Namespace) -> Any:
    return client.get(_cube(client, args.cube), args.memory, args.version)


def _update(client: Client, args: argparse.Namespace) -> Any:
    return client.update(
        _cube(client, args.cube),
        args.memory,
        content=args.content,
        tags=args.tag,
        metadata=_pairs(args.meta) if args.meta is not None else None,
        priority=args.priority,
        ttl_seconds=args.ttl,
        state=args.state,
        expected_version=args.expected_version,
    )


def _delete(client: Client, args: argparse.Namespace) -> Any:
    memory = client.delete(_cube(client, args.cube), args.memory, purge=args.purge)
    return memory if memory is not None else {"purged": args.memory}


def _search(client: Client, args: argparse.Namespace) -> Any:
    cubes = [_cube(client, c) for c in args.cube]
    return client.search(cubes, args.query, top_k=args.top_k, mode=args.mode, filter=_filter(args))


def _list(client: Client, args: argparse.Namespace) -> Any:
    cube = _cube(client, args.cube)
    if args.all:
        return list(client.iter_memories(cube, filter=_filter(args)))
    page = client.list_memories(
        cube, page_size=args.page_size, page_token=args.page_token, filter=_filter(args)
    )
    if not args.json and page.next_page_token:
        print(f"# next page: --page-token {page.next_page_token}", file=sys.stderr)
    return page if args.json else page.memories


def _history(client: Client, args: argparse.Namespace) -> Any:
    return client.history(_cube(client, args.cube), args.memory)


def _rollback(client: Client, args: argparse.Namespace) -> Any:
    return client.rollback(
        _cube(client, args.cube), args.memory, args.version, expected_version=args.expected_version
    )


def _stats(client: Client, args: argparse.Namespace) -> Any:
    return client.stats()


# helpers --------------------------------------------------------------------
def _cube(client: Client, ref: str) -> str:
    """A cube id, given its id or its name."""
    if _ID.fullmatch(ref):
        return ref
    for cube in client.list_cubes():
        if cube.name == ref:
            return cube.id
    raise NotFoundError(f"no cube with id or name {ref!r}")


def _pairs(values: Sequence[str] | None) -> dict[str, str]:
    pairs = {}
    for item in values or ():
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise InvalidArgumentError("--meta", f"expected KEY=VALUE, got {item!r}")
        pairs[key] = value
    return pairs


def _filter(args: argparse.Namespace) -> MemoryFilter:
    return MemoryFilter(
        tags_any=args.tag_any,
        tags_all=args.tag_all,
        states=args.state,
        metadata=_pairs(args.meta),
    )


def _print(result: Any, as_json: bool) -> None:
    if as_json:
        print(json.dumps(_plain(result), indent=2, ensure_ascii=False))
        return
    items = result if isinstance(result, list) else [result]
    for item in items:
        print(_human(item))


def _plain(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return value


def _human(item: Any) -> str:
    if isinstance(item, Cube):
        return f"{item.id}  {item.name}  ({item.memory_count} memories)"
    if isinstance(item, Hit):
        return f"{item.score:8.4f}  {_human(item.memory)}"
    if isinstance(item, Memory):
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(item.updated_at))
        tags = f"  [{', '.join(item.tags)}]" if item.tags else ""
        return f"{item.id}  v{item.version}  {item.state:<8}  {when}  {item.content}{tags}"
    if isinstance(item, dict):
        return "\n".join(
            f"{k}: {' '.join(v) if isinstance(v, list) else v}" for k, v in item.items()
        )
    return str(item)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="memosctl", description="command-line client of memosd")
    parser.add_argument(
        "--address",
        default=os.environ.get("MEMOSD_ADDRESS", DEFAULT_ADDRESS),
        help="daemon address HOST:PORT (default $MEMOSD_ADDRESS or %(default)s)",
    )
    parser.add_argument("--json", action="store_true", help="print JSON for scripts")
    parser.add_argument("--timeout", type=float, default=60.0, help="seconds per call")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name: str, run: Callable[[Client, argparse.Namespace], Any], text: str) -> Any:
        sub = commands.add_parser(name, help=text, description=text)
        sub.set_defaults(run=run)
        return sub

    def memory_ref(sub: argparse.ArgumentParser) -> None:
        sub.add_argument("cube", help="cube id or name")
        sub.add_argument("memory", help="memory id")

    def filters(sub: argparse.ArgumentParser) -> None:
        sub.add_argument("--tag-any", action="append", default=[], help="has one of these tags")
        sub.add_argument("--tag-all", action="append", default=[], help="has every such tag")
        sub.add_argument("--state", action="append", default=[], help="state (default ACTIVE)")
        sub.add_argument("--meta", action="append", default=[], help="metadata KEY=VALUE")

    command("create-cube", _create_cube, "create a cube").add_argument("name")
    command("list-cubes", _list_cubes, "list cubes")
    command("delete-cube", _delete_cube, "delete a cube and all its memories").add_argument(
        "cube", help="cube id or name"
    )

    sub = command("add", _add, "add memories (one per TEXT; '-' reads lines from stdin)")
    sub.add_argument("cube", help="cube id or name")
    sub.add_argument("text", nargs="+")
    sub.add_argument("--tag", action="append", default=[])
    sub.add_argument("--meta", action="append", default=[], help="KEY=VALUE")
    sub.add_argument("--priority", type=int, default=0)
    sub.add_argument("--ttl", type=float, help="seconds to live")
    sub.add_argument("--source", help="who or what produced the memories")

    sub = command("get", _get, "show a memory (its head or --version N)")
    memory_ref(sub)
    sub.add_argument("--version", type=int)

    sub = command("update", _update, "change a memory (a new version)")
    memory_ref(sub)
    sub.add_argument("--content")
    sub.add_argument("--tag", action="append", help="replace the tags (repeat)")
    sub.add_argument("--meta", action="append", help="replace the metadata, KEY=VALUE (repeat)")
    sub.add_argument("--priority", type=int)
    sub.add_argument("--ttl", type=float, help="seconds to live from now; 0 removes the expiry")
    sub.add_argument("--state", help="ACTIVE, ARCHIVED or FROZEN")
    sub.add_argument("--expected-version", type=int)

    sub = command("delete", _delete, "soft-delete a memory, or --purge it for good")
    memory_ref(sub)
    sub.add_argument("--purge", action="store_true")

    sub = command("search", _search, "search memories of one or more cubes")
    sub.add_argument("query")
    sub.add_argument("--cube", action="append", required=True, help="cube id or name (repeat)")
    sub.add_argument("--top-k", type=int, default=10)
    sub.add_argument("--mode", default="HYBRID", choices=["HYBRID", "VECTOR", "LEXICAL"])
    filters(sub)

    sub = command("list", _list, "list the memories of a cube in creation order")
    sub.add_argument("cube", help="cube id or name")
    sub.add_argument("--page-size", type=int, default=0)
    sub.add_argument("--page-token", default="")
    sub.add_argument("--all", action="store_true", help="every page")
    filters(sub)

    sub = command("history", _history, "every version of a memory, oldest first")
    memory_ref(sub)

    sub = command("rollback", _rollback, "make a new version with the content of VERSION")
    memory_ref(sub)
    sub.add_argument("version", type=int)
    sub.add_argument("--expected-version", type=int)

    command("stats", _stats, "daemon statistics")
    return parser


if __name__ == "__main__":
    sys.exit(main())
