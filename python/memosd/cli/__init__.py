"""Command-line entry points: ``memosd`` (the daemon) and ``memosctl`` (the client)."""
