"""Admission control: a bounded number of requests generating, a bounded queue, and draining for shutdown."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator

from orpo_deploy.serve.errors import Overloaded, ShuttingDown


class AdmissionGate:
    """Sequences, not requests, are what the engine runs: a request with ``n`` choices weighs ``n``. At most
    ``max_concurrency`` sequences generate at once; up to ``max_queue`` requests wait for room; beyond that, 429.

    After ``begin_drain`` no request is admitted (503), and ``wait_idle`` tells when the admitted and queued
    ones have all finished, which is what a SIGTERM waits for.
    """

    def __init__(self, max_concurrency: int, max_queue: int, retry_after: int = 1) -> None:
        self.max_concurrency = max_concurrency
        self.max_queue = max_queue
        self.retry_after = retry_after
        self.in_flight = 0  # requests holding a slot
        self.sequences = 0  # their sequences (sum of weights)
        self.waiting = 0
        self.draining = False
        self._room = asyncio.Condition()
        self._changed = asyncio.Event()

    @contextlib.asynccontextmanager
    async def slot(self, weight: int = 1) -> AsyncIterator[None]:
        """Hold room for ``weight`` sequences (capped at ``max_concurrency``, so a wide request can still run)."""
        weight = max(1, min(weight, self.max_concurrency))
        if self.draining:
            raise ShuttingDown("server is shutting down; retry on another replica")
        full = self.sequences + weight > self.max_concurrency
        if full and self.waiting >= self.max_queue:
            raise Overloaded(
                f"server busy: {self.sequences} sequences running and {self.waiting} requests waiting; retry later",
                retry_after=self.retry_after,
            )
        async with self._room:
            self.waiting += 1
            self._notify()
            try:
                await self._room.wait_for(lambda: self.sequences + weight <= self.max_concurrency)
            finally:
                self.waiting -= 1
                self._notify()
            self.in_flight += 1
            self.sequences += weight
        try:
            yield
        finally:
            async with self._room:
                self.in_flight -= 1
                self.sequences -= weight
                self._room.notify_all()
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
