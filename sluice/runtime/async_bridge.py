"""Runs ``async def`` user functions on one event loop thread, callable from any thread.

A step whose function is a coroutine function is compiled to a plain function that
submits the coroutine to the bridge's loop and waits for its result. With
``concurrency=N`` up to N records wait at once, so N coroutines run concurrently on
the loop (``asyncio.sleep``, ``aiohttp``... overlap); with ``concurrency=1`` they run
one after the other, in order.

Example:
    >>> import asyncio
    >>> async def double(x):
    ...     await asyncio.sleep(0)
    ...     return 2 * x
    >>> bridge = AsyncBridge()
    >>> bridge.wrap(double)(21)
    42
    >>> bridge.close()
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import threading
from collections.abc import Callable, Coroutine
from typing import Any

__all__ = ["AsyncBridge", "is_async"]


def is_async(fn: Any) -> bool:
    """True for ``async def`` functions (and objects whose ``__call__`` is one)."""
    if inspect.iscoroutinefunction(fn):
        return True
    call = type(fn).__dict__.get("__call__") if callable(fn) else None
    return call is not None and inspect.iscoroutinefunction(call)


class AsyncBridge:
    """One event loop in a daemon thread, started on first use."""

    def __init__(self) -> None:
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def _ensure_loop(self) -> asyncio.AbstractEventLoop:
        with self._lock:
            if self._loop is None:
                loop = asyncio.new_event_loop()
                self._thread = threading.Thread(target=loop.run_forever, name="sluice-asyncio", daemon=True)
                self._thread.start()
                self._loop = loop
            return self._loop

    def run(self, coro: Coroutine[Any, Any, Any]) -> Any:
        """Run ``coro`` on the loop and return its result (raising its exception)."""
        return asyncio.run_coroutine_threadsafe(coro, self._ensure_loop()).result()

    def wrap(self, fn: Callable[..., Coroutine[Any, Any, Any]]) -> Callable[..., Any]:
        """A plain function calling the coroutine function ``fn`` through the loop."""

        @functools.wraps(fn)
        def call(*args: Any) -> Any:
            return self.run(fn(*args))

        return call

    def close(self) -> None:
        with self._lock:
            loop, thread = self._loop, self._thread
            self._loop = self._thread = None
        if loop is not None and thread is not None:
            loop.call_soon_threadsafe(loop.stop)
            thread.join(5)
            loop.close()
