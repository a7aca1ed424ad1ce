"""Assemble OpenAI response bodies and stream chunks from engine outputs (pure functions, no I/O)."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from contextlib import aclosing

from orpo_deploy.serve.engine import ChoiceDelta, EngineOutput, TokenLogprob
from orpo_deploy.serve.protocol import (
    AssistantMessage,
    ChatChoice,
    ChatChunkChoice,
    ChatCompletionChunk,
    ChatCompletionRequest,
    ChatCompletionResponse,
    ChoiceLogprobs,
    CompletionChoice,
    CompletionLogprobs,
    CompletionResponse,
    DeltaMessage,
    TokenLogprobEntry,
    TopLogprob,
    Usage,
)


def _usage(prompt_tokens: int, completion_tokens: int) -> Usage:
    return Usage(
        prompt_tokens=prompt_tokens,
        completion_tokens=completion_tokens,
        total_tokens=prompt_tokens + completion_tokens,
    )


def _chat_logprobs(items: list[TokenLogprob] | None) -> ChoiceLogprobs | None:
    if items is None:
        return None
    return ChoiceLogprobs(
        content=[
            TokenLogprobEntry(
                token=lp.token,
                logprob=lp.logprob,
                bytes=list(lp.token.encode()),
                top_logprobs=[TopLogprob(token=t, logprob=v, bytes=list(t.encode())) for t, v in lp.top],
            )
            for lp in items
        ]
    )


class _Accumulator:
    """Per-choice text, logprobs and finish reason gathered from delta outputs."""

    def __init__(self) -> None:
        self.text: dict[int, list[str]] = {}
        self.logprobs: dict[int, list[TokenLogprob] | None] = {}
        self.finish: dict[int, str | None] = {}
        self.completion_tokens = 0

    @classmethod
    def of(cls, outputs: list[EngineOutput]) -> _Accumulator:
        acc = cls()
        for out in outputs:
            for choice in out.choices:
                acc.add(choice)
        return acc

    def add(self, choice: ChoiceDelta) -> None:
        self.text.setdefault(choice.index, []).append(choice.text)
        if choice.logprobs is not None:
            self.logprobs.setdefault(choice.index, []).extend(choice.logprobs)  # type: ignore[union-attr]
        else:
            self.logprobs.setdefault(choice.index, None)
        if choice.finish_reason:
            self.finish[choice.index] = choice.finish_reason
        self.completion_tokens += choice.num_tokens

    def indexes(self) -> list[int]:
        return sorted(self.text)


def chat_response(
    req: ChatCompletionRequest, model: str, request_id: str, prompt_tokens: int, outputs: list[EngineOutput]
) -> ChatCompletionResponse:
    acc = _Accumulator.of(outputs)
    choices = [
        ChatChoice(
            index=i,
            message=AssistantMessage(content="".join(acc.text[i])),
            logprobs=_chat_logprobs(acc.logprobs.get(i)) if req.logprobs else None,
            finish_reason=acc.finish.get(i),
        )
        for i in acc.indexes()
    ]
    return ChatCompletionResponse(
        id=f"chatcmpl-{request_id}",
        created=int(time.time()),
        model=model,
        choices=choices,
        usage=_usage(prompt_tokens, acc.completion_tokens),
    )


async def chat_chunks(
    model: str,
    request_id: str,
    prompt_tokens: int,
    first: EngineOutput,
    rest: AsyncIterator[EngineOutput],
    include_usage: bool,
    logprobs: int | None,
) -> AsyncIterator[ChatCompletionChunk]:
    """The role chunk of each choice when it first appears, then its content deltas; usage last if asked."""
    created, chunk_id = int(time.time()), f"chatcmpl-{request_id}"
    count = _TokenCount()
    started: set[int] = set()
    # aclosing: however the consumer stops (end, error, client gone), the engine stream is closed -> aborted.
    async with aclosing(rest):
        async for out, live in _live_deltas(first, rest, count):
            new = sorted({c.index for c in out.choices} - started)
            if new:
                started.update(new)
                roles = [ChatChunkChoice(index=i, delta=DeltaMessage(role="assistant", content="")) for i in new]
                yield ChatCompletionChunk(id=chunk_id, created=created, model=model, choices=roles)
            choices = [
                ChatChunkChoice(
                    index=c.index,
                    delta=DeltaMessage(content=c.text),
                    logprobs=_chat_logprobs(c.logprobs) if logprobs is not None else None,
                    finish_reason=c.finish_reason,
                )
                for c in live
            ]
            if choices:
                yield ChatCompletionChunk(id=chunk_id, created=created, model=model, choices=choices)
    if include_usage:
        usage = _usage(prompt_tokens, count.completion_tokens)
        yield ChatCompletionChunk(id=chunk_id, created=created, model=model, choices=[], usage=usage)


def _completion_logprobs(items: list[TokenLogprob] | None, offset: int) -> tuple[CompletionLogprobs | None, int]:
    if items is None:
        return None, offset
    result = CompletionLogprobs()
    for lp in items:
        result.tokens.append(lp.token)
        result.token_logprobs.append(lp.logprob)
        result.top_logprobs.append(dict(lp.top))
        result.text_offset.append(offset)
        offset += len(lp.token)
    return result, offset


def completion_response(
    model: str, request_id: str, prompt_tokens: int, outputs: list[EngineOutput]
) -> CompletionResponse:
    acc = _Accumulator.of(outputs)
    choices = [
        CompletionChoice(
            index=i,
            text="".join(acc.text[i]),
            logprobs=_completion_logprobs(acc.logprobs.get(i), 0)[0],
            finish_reason=acc.finish.get(i),
        )
        for i in acc.indexes()
    ]
    return CompletionResponse(
        id=f"cmpl-{request_id}",
        created=int(time.time()),
        model=model,
        choices=choices,
        usage=_usage(prompt_tokens, acc.completion_tokens),
    )


async def completion_chunks(
    model: str,
    request_id: str,
    prompt_tokens: int,
    first: EngineOutput,
    rest: AsyncIterator[EngineOutput],
    include_usage: bool,
) -> AsyncIterator[CompletionResponse]:
    created, chunk_id = int(time.time()), f"cmpl-{request_id}"
    count = _TokenCount()
    offsets: dict[int, int] = {}
    async with aclosing(rest):
        async for _, live in _live_deltas(first, rest, count):
            choices = []
            for c in live:
                logprobs, offsets[c.index] = _completion_logprobs(c.logprobs, offsets.get(c.index, 0))
                choice = CompletionChoice(index=c.index, text=c.text, logprobs=logprobs, finish_reason=c.finish_reason)
                choices.append(choice)
            if choices:
                yield CompletionResponse(id=chunk_id, created=created, model=model, choices=choices)
    if include_usage:
        usage = _usage(prompt_tokens, count.completion_tokens)
        yield CompletionResponse(id=chunk_id, created=created, model=model, choices=[], usage=usage)


class _TokenCount:
    completion_tokens = 0


async def _live_deltas(
    first: EngineOutput, rest: AsyncIterator[EngineOutput], count: _TokenCount
) -> AsyncIterator[tuple[EngineOutput, list[ChoiceDelta]]]:
    """Each engine output with its choices worth sending (text, tokens or a finish reason), counting tokens."""
    async for out in _chain(first, rest):
        count.completion_tokens += sum(c.num_tokens for c in out.choices)
        yield out, [c for c in out.choices if c.text or c.finish_reason or c.num_tokens]


async def _chain(first: EngineOutput, rest: AsyncIterator[EngineOutput]) -> AsyncIterator[EngineOutput]:
    yield first
    async for out in rest:
        yield out
