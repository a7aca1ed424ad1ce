"""Chat-completion stream parsing (loadtest/sse.py) on hand-written SSE bytes."""

from __future__ import annotations

import itertools
import json

import pytest

from orpo_deploy.loadtest.sse import StreamError, read_chat_stream


def sse(*events) -> list[bytes]:
    lines = []
    for event in events:
        payload = event if isinstance(event, str) else json.dumps(event)
        lines += [f"data: {payload}\n".encode(), b"\n"]
    return lines


def delta(content: str | None, finish: str | None = None) -> dict:
    return {"choices": [{"index": 0, "delta": {"content": content}, "finish_reason": finish}]}


USAGE = {"choices": [], "usage": {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5}}


def read(lines: list[bytes]):
    it, clock = iter(lines), itertools.count(1.0)
    return read_chat_stream(lambda: next(it, b""), clock=lambda: next(clock))


def test_times_only_chunks_with_content_and_reads_usage():
    role = {"choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}}]}
    stream = read([b": keep-alive\n", *sse(role, delta("Hi"), delta(" there", "length"), USAGE, "[DONE]")])
    assert stream.chunk_times == [1.0, 2.0]
    assert (stream.completion_tokens, stream.finish_reason) == (2, "length")


@pytest.mark.parametrize(
    ("events", "message"),
    [
        ((delta("Hi", "stop"), USAGE), "without data: \\[DONE\\]"),
        ((delta("Hi", "stop"), "[DONE]"), "no usage chunk"),
        ((delta("", "stop"), USAGE, "[DONE]"), "no content or no finish_reason"),
        ((delta("Hi"), USAGE, "[DONE]"), "no content or no finish_reason"),
        ((delta("Hi"), {"error": {"message": "engine died", "type": "server_error"}}, "[DONE]"), "engine died"),
    ],
)
def test_incomplete_or_failed_streams_raise(events, message):
    with pytest.raises(StreamError, match=message):
        read(sse(*events))


def test_a_data_line_that_is_not_json_raises_value_error():
    with pytest.raises(ValueError):
        read([b"data: {not json\n"])
