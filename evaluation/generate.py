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

from orpo_deploy.core.errors import UsageError

Messages = list[dict[str, str]]


class Generation(NamedTuple):
    """One answer: its text (stripped), why generation stopped (``stop`` or ``length``) and its token count."""

    text: str
    finish_reason: str | None
    tokens: int | None


class Sampling(NamedTuple):
    """How answers are drawn: greedy (the default, for evaluation) or ``n`` samples per prompt (on-policy pairs).

    ``seeds`` (one per prompt) make sampling repeatable whatever the batch a prompt lands in, so a resumed run
    draws the same answers; None = unseeded.
    """

    n: int = 1
    temperature: float = 0.0
    top_p: float = 1.0
    seeds: Sequence[int] | None = None

    def seed(self, i: int) -> int | None:
        return None if self.seeds is None else int(self.seeds[i])


GREEDY = Sampling()


class EvalError(UsageError):
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


def sample_hf(
    model, tokenizer, prompts: Sequence[Messages], max_new_tokens: int, sampling: Sampling
) -> list[list[Generation]]:
    """``sampling.n`` sampled answers per prompt with HF ``generate`` (one prompt at a time, seeded per prompt).

    Slow: meant for tiny models and tests; vLLM (``sample_vllm``) is the engine for real runs.
    """
    import torch

    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    results = []
    for i, messages in enumerate(tqdm(prompts, desc="sample", unit="prompt")):
        text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        batch = tokenizer([text], return_tensors="pt", add_special_tokens=False).to(model.device)
        if sampling.seed(i) is not None:
            torch.manual_seed(sampling.seed(i))
        with torch.no_grad():
            out = model.generate(
                **batch, do_sample=True, temperature=sampling.temperature, top_p=sampling.top_p,
                num_return_sequences=sampling.n, max_new_tokens=max_new_tokens, pad_token_id=pad_id,
            )  # fmt: skip
        new_tokens = out[:, batch["input_ids"].shape[1] :]
        answers = []
        decoded = tokenizer.batch_decode(new_tokens, skip_special_tokens=True)
        for row, answer in zip(new_tokens.tolist(), decoded, strict=True):
            n = sum(1 for t in row if t != pad_id)
            stopped = tokenizer.eos_token_id in row or n < max_new_tokens
            answers.append(Generation(answer.strip(), "stop" if stopped else "length", n))
        results.append(answers)
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
    out = sample_endpoint(base_url, prompts, GREEDY, api_key, model, max_new_tokens, concurrency, timeout_s)
    return [answers[0] for answers in out]


def sample_endpoint(
    base_url: str,
    prompts: Sequence[Messages],
    sampling: Sampling,
    api_key: str | None = None,
    model: str | None = None,
    max_new_tokens: int = 256,
    concurrency: int = 8,
    timeout_s: float = 600.0,
) -> list[list[Generation]]:
    """``sampling.n`` chat completions per prompt (the request's ``n`` and ``seed``) from an OpenAI-compatible server,
    through the official ``openai`` client: its retries back off on 429/5xx and honour the server's Retry-After.

    With n > 1 the usage block counts all choices together, so per-answer token counts are None.
    """
    import openai

    client = openai.OpenAI(
        base_url=f"{base_url.rstrip('/')}/v1", api_key=api_key or "none", timeout=timeout_s, max_retries=3
    )
    try:
        model = model or _first_model(client)

        def one(i: int) -> list[Generation]:
            extra: dict[str, Any] = {}
            if sampling.n > 1:
                extra["n"] = sampling.n
            if sampling.temperature > 0:
                extra["top_p"] = sampling.top_p
            if sampling.seed(i) is not None:
                extra["seed"] = sampling.seed(i)
            out = client.chat.completions.create(
                model=model, messages=list(prompts[i]), temperature=sampling.temperature, max_tokens=max_new_tokens,
                **extra,
            )  # fmt: skip
            tokens = out.usage.completion_tokens if (out.usage and sampling.n == 1) else None
            return [
                Generation((c.message.content or "").strip(), c.finish_reason, tokens)
                for c in sorted(out.choices, key=lambda c: c.index)
            ]

        with ThreadPoolExecutor(concurrency) as pool:
            return list(tqdm(pool.map(one, range(len(prompts))), total=len(prompts), desc="generate", unit="prompt"))
    except openai.APIStatusError as e:
        raise EvalError(f"{base_url}: HTTP {e.status_code}: {str(e.message)[:200]}") from None
    except openai.APIError as e:
        raise EvalError(f"{base_url}: {e.__class__.__name__}: {e}") from None
    finally:
        client.close()


def _first_model(client) -> str:
    data = list(client.models.list())
    if not data:
        raise EvalError("the endpoint serves no model")
    return data[0].id


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
    """Greedy chat generation with vLLM's offline engine: several times faster than HF generate on CPU."""
    return [answers[0] for answers in sample_vllm(model_dir, prompts, max_new_tokens, GREEDY)]


def sample_vllm(
    model_dir: str, prompts: Sequence[Messages], max_new_tokens: int = 256, sampling: Sampling = GREEDY
) -> list[list[Generation]]:
    """``sampling.n`` answers per prompt from vLLM's offline engine (greedy by default), seeded per prompt."""
    sampler = VLLMSampler(model_dir, prompts, max_new_tokens)
    try:
        return sampler(prompts, sampling)
    finally:
        sampler.close()


class VLLMSampler:
    """One vLLM offline engine, started once, answering batch after batch (resumable on-policy sampling).

    The engine's context is what ``sized_for`` needs (longest prompt + ``max_new_tokens``) within the model's own
    context length; a prompt near that length gets fewer new tokens. vLLM serves fp32 checkpoints in bf16 on CPU,
    so answers can differ slightly from ``generate_hf``'s.
    """

    def __init__(self, model_dir: str, sized_for: Sequence[Messages], max_new_tokens: int = 256) -> None:
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

        self.model_dir, self.max_new_tokens = str(model_dir), max_new_tokens
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(self.model_dir)
        except Exception as e:  # a folder without a usable tokenizer: one line, not a traceback
            raise EvalError(f"cannot load the tokenizer of {model_dir}: {_first_line(e)}") from None
        self.model_len = context_length(model_dir)
        self.max_model_len, _ = token_budgets(self.lengths(sized_for), max_new_tokens, self.model_len)
        from vllm import LLM

        try:
            # No chunked prefill: on CPU, vLLM 0.32 crashes its engine when a request with its own seed has its
            # prefill split across steps ("CPU Generator does not use offset", gpu_model_runner._bookkeeping_sync),
            # and seeded sampling is what makes on-policy pairs reproducible. Offline batches lose nothing by it.
            self.llm = LLM(
                model=self.model_dir, enforce_eager=True, max_model_len=self.max_model_len, seed=0,
                enable_chunked_prefill=False,
            )  # fmt: skip
        except Exception as e:  # vLLM raises pydantic, ValueError and RuntimeError for models it cannot run
            raise EvalError(f"vLLM cannot run {model_dir}: {_first_line(e)}") from None

    def lengths(self, prompts: Sequence[Messages]) -> list[int]:
        try:
            rendered = [
                self.tokenizer.apply_chat_template(p, add_generation_prompt=True, tokenize=False) for p in prompts
            ]
            return [len(self.tokenizer(text, add_special_tokens=False)["input_ids"]) for text in rendered]
        except Exception as e:  # no usable chat template
            raise EvalError(f"cannot tokenise the prompts for {self.model_dir}: {_first_line(e)}") from None

    def __call__(self, prompts: Sequence[Messages], sampling: Sampling = GREEDY) -> list[list[Generation]]:
        from vllm import SamplingParams

        _, budgets = token_budgets(self.lengths(prompts), self.max_new_tokens, self.max_model_len)
        params = [
            SamplingParams(
                n=sampling.n, temperature=sampling.temperature, top_p=sampling.top_p if sampling.temperature else 1.0,
                seed=sampling.seed(i), max_tokens=n,
            )
            for i, n in enumerate(budgets)
        ]  # fmt: skip
        outputs = self.llm.chat(list(prompts), params, use_tqdm=True)
        return [
            [
                Generation(c.text.strip(), c.finish_reason, len(c.token_ids))
                for c in sorted(o.outputs, key=lambda c: c.index)
            ]
            for o in outputs
        ]

    def close(self) -> None:
        del self.llm


def _first_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return f"{type(e).__name__}: {text[0] if text else ''}"[:300]
