"""Open-loop arrivals: when each request is sent, fixed in advance and independent of how fast the server answers.

A closed loop (N users, each sending the next request when the last one finished) hides queueing: the slower the
server, the less load it gets. Here the gaps between requests are gamma-distributed with mean 1/rate; shape
``burstiness`` 1 is a Poisson process (exponential gaps, as ``vllm bench serve`` and guidellm draw them), below 1
burstier (the same mean, a larger variance: CV^2 = 1/burstiness), above 1 more regular.
"""

from __future__ import annotations

import itertools
import random
from collections.abc import Iterator


def send_times(rate: float, burstiness: float = 1.0, seed: int = 0) -> Iterator[float]:
    """Send times in seconds from the start, without end: the first at 0, then gamma gaps of mean 1/``rate``.
    The same seed gives the same times."""
    if not rate > 0 or not burstiness > 0:
        raise ValueError(f"rate and burstiness must be > 0, got {rate} and {burstiness}")
    rng = random.Random(seed)
    scale = 1.0 / (rate * burstiness)
    at = 0.0
    while True:
        yield at
        at += rng.gammavariate(burstiness, scale)


def schedule(rate: float, n: int, burstiness: float = 1.0, seed: int = 0) -> list[float]:
    """The first ``n`` send times."""
    return list(itertools.islice(send_times(rate, burstiness, seed), n))
