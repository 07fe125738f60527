"""The services the daemon serves. A new service is a module with a ``register``
function and one line here.

``register(server, runtime, executor)`` adds the servicer and returns the
service's full name (for reflection and health).
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import Executor

import grpc

from memosd.ops.runtime import Runtime
from memosd.service import activation, admin, cube, generate, memory

Registration = Callable[[grpc.aio.Server, Runtime, Executor], str]

REGISTRATIONS: list[Registration] = [
    cube.register,
    memory.register,
    admin.register,
    activation.register,
    generate.register,
]
