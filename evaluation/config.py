"""What orpo-eval evaluates and how (one typed config; ``orpo-eval --help`` lists the same fields)."""

from __future__ import annotations

from dataclasses import dataclass

BENCHMARKS = ("ours", "ifeval")
DEFAULT_MAX_NEW_TOKENS = {"ours": 256, "ifeval": 1024}  # IFEval asks for essays of 300+ words


@dataclass
class EvalConfig:
    """What to evaluate and how; see ``orpo-eval --help``."""

    model: str | None = None  # HF folder, bundled name or hub id (scored for preference and generation)
    endpoint: str | None = None  # OpenAI-compatible base URL (generation only)
    api_key: str | None = None  # never written to results
    served_model: str | None = None  # model id at the endpoint; default: its first /v1/models entry
    benchmark: str = "ours"  # ours (our held-out split) or ifeval (Google's 541 prompts and checkers)
    dataset: str | None = None  # held-out pairs; default: our test split (conversational)
    limit: int | None = None  # evaluate an evenly spaced subset of this many pairs (or IFEval prompts)
    max_new_tokens: int | None = None  # default: 256 on our split, 1024 on IFEval
    batch_size: int = 8
    concurrency: int = 16  # requests in flight against --endpoint
    engine: str = "vllm"  # generation for --model: vllm (offline engine, fast) or hf (transformers generate)
    preference: bool = True
    generation: bool = True
    output: str = "runs/eval"

    def __post_init__(self) -> None:
        if (self.model is None) == (self.endpoint is None):
            raise ValueError("give exactly one of --model or --endpoint")
        if self.limit is not None and self.limit < 1:
            raise ValueError(f"--limit must be >= 1, got {self.limit}")
        if self.engine not in ("vllm", "hf"):
            raise ValueError(f"--engine must be vllm or hf, got {self.engine!r}")
        if self.benchmark not in BENCHMARKS:
            raise ValueError(f"--benchmark must be one of {', '.join(BENCHMARKS)}, got {self.benchmark!r}")
        if self.max_new_tokens is None:
            self.max_new_tokens = DEFAULT_MAX_NEW_TOKENS[self.benchmark]
        if self.max_new_tokens < 1 or self.batch_size < 1 or self.concurrency < 1:
            raise ValueError("--max-new-tokens, --batch-size and --concurrency must be >= 1")
        if self.benchmark == "ifeval":
            if self.dataset is not None:
                raise ValueError("--dataset does not apply to --benchmark ifeval (its prompts are fixed)")
            self.preference = False  # IFEval has prompts, not preference pairs
        if self.endpoint is not None:
            self.preference = False  # log-probs of given text are not part of the chat API
        if not (self.preference or self.generation):
            raise ValueError("nothing to do: both preference and generation are off")
