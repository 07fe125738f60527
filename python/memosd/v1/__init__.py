"""Generated gRPC code of the memosd v1 API (see proto/generate.py)."""
