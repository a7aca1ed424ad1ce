"""User count over time for each load shape, as pure functions (no Locust import, so tests can call them).

Each profile maps (seconds since start, users N, spawn rate R, run time T) to ``(user_count, spawn_rate)``, or None
once the run is over. ``loadtest/shapes.py`` wraps them in Locust ``LoadTestShape`` classes.

- hold:  N users for the whole run (spawned at R/s).
- ramp:  four equal steps, N/4, N/2, 3N/4, N users, each for T/4: shows where latency starts to climb.
- spike: N/4 users (at least 1), N users spawned at once from 40 % to 60 % of T, then N/4 again: shows
  queueing under a burst and whether the server recovers.
- soak:  ramp linearly over the first 10 % of T, then hold N: meant for long runs (e.g. 30m+) that look for
  drift (memory, KV-cache fragmentation, slow leaks) in the history plot and the per-third throughput.
"""

from __future__ import annotations

import math
from collections.abc import Callable

Tick = tuple[int, float] | None
Profile = Callable[[float, int, float, float], Tick]


def hold(t: float, users: int, spawn_rate: float, run_time: float) -> Tick:
    return None if t >= run_time else (users, spawn_rate)


def ramp(t: float, users: int, spawn_rate: float, run_time: float) -> Tick:
    if t >= run_time:
        return None
    step = min(3, int(4 * t / run_time))
    return max(1, math.ceil(users * (step + 1) / 4)), spawn_rate


def spike(t: float, users: int, spawn_rate: float, run_time: float) -> Tick:
    if t >= run_time:
        return None
    if 0.4 * run_time <= t < 0.6 * run_time:
        return users, max(spawn_rate, float(users))  # the burst arrives within about a second
    return max(1, users // 4), max(spawn_rate, float(users))


def soak(t: float, users: int, spawn_rate: float, run_time: float) -> Tick:
    if t >= run_time:
        return None
    warmup = 0.1 * run_time
    if t >= warmup:
        return users, spawn_rate
    return max(1, math.ceil(users * t / warmup)), spawn_rate


PROFILES: dict[str, Profile] = {"hold": hold, "ramp": ramp, "spike": spike, "soak": soak}
