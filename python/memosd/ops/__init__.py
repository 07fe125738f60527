"""The operation layer: MemCube domain logic over the store, embedder and search engine.

Knows nothing of gRPC or generated proto code; raises memosd.errors.
"""
