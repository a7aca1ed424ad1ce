"""Greedy chat generation for the instruction-following check: an HF model folder or an OpenAI endpoint.

Both take lists of chat messages and return the assistant's text, so a served or quantised model is scored
exactly like the folder it came from.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, NamedTuple

from tqdm.auto import tqdm

Messages = list[dict[str, str]]


class Generation(NamedTuple):
    """One answer: its text (stripped), why generation stopped (``stop`` or ``length``) and its token count."""

    text: str
    finish_reason: str | None
    tokens: int | None


class EvalError(RuntimeError):
    """A model or endpoint that cannot be evaluated; the message says why."""


def generate_hf(
    model, tokenizer, prompts: Sequence[Messages], max_new_tokens: int = 256, batch_size: int = 8
) -> list[Generation]:
    """Greedy, batched ``model.generate`` with left padding; prompts sorted by length to waste less padding."""
    import torch

    texts = [tokenizer.apply_chat_template(p, tokenize=False, add_generation_prompt=True) for p in prompts]
    order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
    results: list[Generation] = [Generation("", None, None)] * len(texts)
    tokenizer.padding_side = "left"
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    with tqdm(total=len(texts), desc="generate", unit="prompt") as bar:
        for start in range(0, len(order), batch_size):
            idx = order[start : start + batch_size]
            batch = tokenizer([texts[i] for i in idx], return_tensors="pt", padding=True, add_special_tokens=False).to(
                model.device
            )
            with torch.no_grad():
                out = model.generate(**batch, do_sample=False, max_new_tokens=max_new_tokens, pad_token_id=pad_id)
            new_tokens = out[:, batch["input_ids"].shape[1] :]
            texts_out = tokenizer.batch_decode(new_tokens, skip_special_tokens=True)
            for i, row, text in zip(idx, new_tokens.tolist(), texts_out, strict=True):
                n = sum(1 for t in row if t != pad_id)
                stopped = tokenizer.eos_token_id in row or n < max_new_tokens
                results[i] = Generation(text.strip(), "stop" if stopped else "length", n)
            bar.update(len(idx))
    return results


def generate_endpoint(
    base_url: str,
    prompts: Sequence[Messages],
    api_key: str | None = None,
    model: str | None = None,
    max_new_tokens: int = 256,
    concurrency: int = 8,
    timeout_s: float = 600.0,
) -> list[Generation]:
    """Greedy chat completions from any OpenAI-compatible server (``base_url`` ends before ``/v1``)."""
    import httpx

    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    client = httpx.Client(base_url=base_url.rstrip("/"), headers=headers, timeout=timeout_s)
    try:
        model = model or _first_model(client)

        def one(messages: Messages) -> Generation:
            body: dict[str, Any] = {
                "model": model,
                "messages": messages,
                "temperature": 0.0,
                "max_tokens": max_new_tokens,
            }
            response = client.post("/v1/chat/completions", json=body)
            if response.status_code != 200:
                raise EvalError(f"{base_url}: HTTP {response.status_code}: {response.text[:200]}")
            body = response.json()
            choice = body["choices"][0]
            tokens = (body.get("usage") or {}).get("completion_tokens")
            return Generation((choice["message"]["content"] or "").strip(), choice.get("finish_reason"), tokens)

        with ThreadPoolExecutor(concurrency) as pool:
            return list(tqdm(pool.map(one, prompts), total=len(prompts), desc="generate", unit="prompt"))
    except httpx.HTTPError as e:
        raise EvalError(f"{base_url}: {e.__class__.__name__}: {e}") from None
    finally:
        client.close()


def _first_model(client) -> str:
    response = client.get("/v1/models")
    if response.status_code != 200:
        raise EvalError(f"GET /v1/models answered HTTP {response.status_code}: {response.text[:200]}")
    data = response.json().get("data") or []
    if not data:
        raise EvalError("the endpoint serves no model")
    return data[0]["id"]


def context_length(model_dir: str | Path) -> int | None:
    """The model's own context length from its ``config.json`` (None when it does not say)."""
    try:
        config = json.loads((Path(model_dir) / "config.json").read_text())
    except (OSError, ValueError):
        return None
    config = config.get("text_config", config)
    for key in ("max_position_embeddings", "n_positions", "max_seq_len", "seq_length"):
        if isinstance(config.get(key), int) and config[key] > 0:
            return config[key]
    return None


def token_budgets(prompt_lengths: Sequence[int], max_new_tokens: int, model_len: int | None) -> tuple[int, list[int]]:
    """(max_model_len for the engine, max new tokens per prompt): what the prompts need, within the model's length.

    A prompt that leaves no room for one new token is an error naming the prompt.
    """
    need = max(prompt_lengths, default=0) + max_new_tokens
    limit = need if model_len is None else min(need, model_len)
    budgets = []
    for i, n in enumerate(prompt_lengths):
        room = limit - n
        if room < 1:
            raise EvalError(f"prompt {i} has {n} tokens, no room left in the model's context of {model_len} tokens")
        budgets.append(min(max_new_tokens, room))
    return limit, budgets


def generate_vllm(model_dir: str, prompts: Sequence[Messages], max_new_tokens: int = 256) -> list[Generation]:
    """Greedy chat generation with vLLM's offline engine: several times faster than HF generate on CPU.

    The engine's context is what the prompts need (longest prompt + ``max_new_tokens``) within the model's own
    context length; a prompt near that length gets fewer new tokens. vLLM serves fp32 checkpoints in bf16 on CPU,
    so answers can differ slightly from ``generate_hf``'s.
    """
    import os

    for key, value in (
        ("VLLM_CPU_KVCACHE_SPACE", "2"),
        ("VLLM_CPU_OMP_THREADS_BIND", "auto"),
        ("VLLM_CPU_NUM_OF_RESERVED_CPU", "0"),
        ("VLLM_NO_USAGE_STATS", "1"),
        ("HF_HUB_OFFLINE", "1"),
    ):
        os.environ.setdefault(key, value)
    from transformers import AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
        rendered = [tokenizer.apply_chat_template(p, add_generation_prompt=True, tokenize=False) for p in prompts]
        lengths = [len(tokenizer(text, add_special_tokens=False)["input_ids"]) for text in rendered]
    except Exception as e:  # a folder without a usable tokenizer or chat template: one line, not a traceback
        raise EvalError(f"cannot tokenise the prompts for {model_dir}: {_first_line(e)}") from None
    max_model_len, budgets = token_budgets(lengths, max_new_tokens, context_length(model_dir))
    from vllm import LLM, SamplingParams

    try:
        llm = LLM(model=str(model_dir), enforce_eager=True, max_model_len=max_model_len, seed=0)
    except Exception as e:  # vLLM raises pydantic, ValueError and RuntimeError for models it cannot run
        raise EvalError(f"vLLM cannot run {model_dir}: {_first_line(e)}") from None
    try:
        params = [SamplingParams(temperature=0.0, max_tokens=n) for n in budgets]
        outputs = llm.chat(list(prompts), params, use_tqdm=True)
        return [
            Generation(o.outputs[0].text.strip(), o.outputs[0].finish_reason, len(o.outputs[0].token_ids))
            for o in outputs
        ]
    finally:
        del llm


def _first_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return f"{type(e).__name__}: {text[0] if text else ''}"[:300]
