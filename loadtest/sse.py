"""Parse an OpenAI chat-completion event stream (SSE), timing each content chunk as it arrives.

No Locust import: the locustfile hands in its connection's ``readline``, tests hand in a list of lines.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field


class StreamError(Exception):
    """The stream is not a complete, successful chat completion; the message says what was wrong."""


@dataclass
class Stream:
    chunk_times: list[float] = field(default_factory=list)  # clock() when each chunk with content arrived
    completion_tokens: int = 0  # from the usage chunk
    finish_reason: str | None = None


def read_chat_stream(readline: Callable[[], bytes], clock: Callable[[], float] = time.perf_counter) -> Stream:
    """Read ``data:`` events until ``[DONE]``; ``readline`` returns one line, or b"" at the end of the body.

    Requires ``[DONE]``, a usage chunk (``stream_options.include_usage``), some content and a finish_reason;
    an ``error`` event (how OpenAI-style servers report errors after the 200 status) raises ``StreamError``.
    """
    stream, done, usage = Stream(), False, None
    while line := readline():
        line = line.strip()
        if not line.startswith(b"data:"):
            continue
        payload = line[5:].strip()
        if payload == b"[DONE]":
            done = True
            break
        event = json.loads(payload)
        if "error" in event:
            raise StreamError(f"error event: {str(event['error'])[:200]}")
        for choice in event.get("choices") or []:
            if (choice.get("delta") or {}).get("content"):
                stream.chunk_times.append(clock())
            stream.finish_reason = choice.get("finish_reason") or stream.finish_reason
        usage = event.get("usage") or usage
    if not done:
        raise StreamError("ended without data: [DONE]")
    if usage is None:
        raise StreamError("no usage chunk (is stream_options.include_usage supported?)")
    if not stream.chunk_times or stream.finish_reason is None:
        raise StreamError(f"no content or no finish_reason ({len(stream.chunk_times)} content chunks)")
    stream.completion_tokens = int(usage["completion_tokens"])
    return stream
