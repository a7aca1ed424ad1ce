"""Admission control: a bounded number of requests generating, a bounded queue, and draining for shutdown."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator

from serve.errors import Overloaded, ShuttingDown


class AdmissionGate:
    """``max_concurrency`` requests hold a slot; up to ``max_queue`` more wait for one; beyond that, 429.

    After ``begin_drain`` no request is admitted (503), and ``wait_idle`` tells when the admitted and queued
    ones have all finished, which is what a SIGTERM waits for.
    """

    def __init__(self, max_concurrency: int, max_queue: int, retry_after: int = 1) -> None:
        self.max_concurrency = max_concurrency
        self.max_queue = max_queue
        self.retry_after = retry_after
        self.in_flight = 0
        self.waiting = 0
        self.draining = False
        self._slots = asyncio.Semaphore(max_concurrency)
        self._changed = asyncio.Event()

    @contextlib.asynccontextmanager
    async def slot(self) -> AsyncIterator[None]:
        if self.draining:
            raise ShuttingDown("server is shutting down; retry on another replica")
        if self.in_flight >= self.max_concurrency and self.waiting >= self.max_queue:
            raise Overloaded(
                f"server busy: {self.in_flight} requests running and {self.waiting} waiting; retry later",
                retry_after=self.retry_after,
            )
        self.waiting += 1
        try:
            await self._slots.acquire()
        finally:
            self.waiting -= 1
            self._notify()
        self.in_flight += 1
        try:
            yield
        finally:
            self.in_flight -= 1
            self._slots.release()
            self._notify()

    def begin_drain(self) -> None:
        self.draining = True
        self._notify()

    @property
    def idle(self) -> bool:
        return self.in_flight == 0 and self.waiting == 0

    async def wait_idle(self, timeout: float) -> bool:
        """True when nothing is admitted or queued, False if ``timeout`` seconds passed first."""
        deadline = time.monotonic() + timeout
        while not self.idle:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            self._changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), remaining)
        return True

    def _notify(self) -> None:
        self._changed.set()
