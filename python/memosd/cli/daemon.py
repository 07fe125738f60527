"""``memosd serve``: run the daemon.

memosd serve [--data-dir DIR] [--listen HOST:PORT] [--config FILE] [--log-level LEVEL]
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from pathlib import Path

from memosd import config as configuration
from memosd.errors import MemosError


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="memosd", description="the memosd memory daemon")
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser("serve", help="run the daemon in the foreground")
    serve.add_argument("--data-dir", type=Path, help="where the store and index live")
    serve.add_argument("--listen", help="HOST:PORT to serve gRPC on (port 0 picks a free one)")
    serve.add_argument("--config", type=Path, help="TOML config file (see docs/config.md)")
    serve.add_argument("--log-level", help="DEBUG, INFO, WARNING or ERROR")
    args = parser.parse_args(argv)

    try:
        config = configuration.load(
            args.config,
            overrides={
                "data_dir": args.data_dir,
                "listen": args.listen,
                "log_level": args.log_level,
            },
        )
    except MemosError as exc:
        print(f"memosd: {exc}", file=sys.stderr)
        return 2
    logging.basicConfig(
        level=config.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    from memosd.server import serve as run  # grpc and the runtime load only to serve

    try:
        asyncio.run(run(config))
    except MemosError as exc:
        logging.getLogger("memosd").error("cannot start: %s", exc)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
