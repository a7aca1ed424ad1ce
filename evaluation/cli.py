"""``orpo-eval``: preference accuracy and instruction-following rate of a model folder or an endpoint.

    orpo-eval --model smollm2-135m-instruct --output runs/eval-base
    orpo-eval --endpoint http://127.0.0.1:8000 --api-key KEY --output runs/eval-served

Writes ``results.json``, ``results.md`` and ``responses.jsonl`` into the output folder (atomically).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path
from typing import Any

from orpo_deploy.core.errors import OrpoError, UsageError, report
from orpo_deploy.core.manifest import atomic_output_dir
from orpo_deploy.evaluation.config import BENCHMARKS, EvalConfig
from orpo_deploy.evaluation.markdown import to_markdown
from orpo_deploy.evaluation.runner import evaluate

logger = logging.getLogger(__name__)


def parse_args(argv: list[str] | None) -> EvalConfig:
    p = argparse.ArgumentParser(prog="orpo-eval", description=__doc__.split("\n\n")[0])
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--model", help="HF model folder, 'smollm2-135m-instruct' (bundled) or 'tiny-smollm2'")
    src.add_argument("--endpoint", help="OpenAI-compatible base URL, e.g. http://127.0.0.1:8000")
    p.add_argument(
        "--api-key",
        default=os.environ.get("OPENAI_API_KEY"),
        help="the endpoint's key; default $OPENAI_API_KEY (prefer it: a command line is visible to others in ps)",
    )
    p.add_argument("--served-model", help="model id at the endpoint (default: the first it lists)")
    p.add_argument("--dataset", help="pairs (JSONL/Parquet/folder), or 'dev' / 'test'; default: our test split")
    p.add_argument("--benchmark", choices=BENCHMARKS, default="ours", help="ours: our test split; ifeval: IFEval")
    p.add_argument("--limit", type=int, help="evaluate an evenly spaced subset of N pairs (or IFEval prompts)")
    p.add_argument("--max-new-tokens", type=int, help="default: 256 on our split, 1024 on IFEval")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--concurrency", type=int, default=16, help="requests in flight against --endpoint")
    p.add_argument("--engine", choices=["vllm", "hf"], default="vllm", help="generation engine for --model")
    p.add_argument("--no-preference", dest="preference", action="store_false", help="skip preference accuracy")
    p.add_argument("--no-generation", dest="generation", action="store_false", help="skip instruction following")
    p.add_argument(
        "--output-dir", "--output", dest="output", default="runs/eval", help="output folder (replaced if it exists)"
    )
    return EvalConfig(**vars(p.parse_args(argv)))


def write_results(result: dict[str, Any], output: str) -> None:
    responses = result.pop("responses", [])
    with atomic_output_dir(Path(output), overwrite=True) as tmp:
        (tmp / "results.json").write_text(json.dumps(result, indent=2, default=str) + "\n")
        (tmp / "results.md").write_text(to_markdown(result))
        with (tmp / "responses.jsonl").open("w") as f:
            for r in responses:
                f.write(json.dumps(r, ensure_ascii=False) + "\n")


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        cfg = parse_args(argv)
        result = evaluate(cfg)
        write_results(result, cfg.output)
    except OrpoError as e:  # core/errors.py: the exit code comes with the error
        return report("orpo-eval", e)
    except (ValueError, FileNotFoundError) as e:  # bad arguments or files that no orpo module classified
        return report("orpo-eval", UsageError(str(e)))
    print(to_markdown(result))
    print(f"results written to {cfg.output}/")
    return 0


if __name__ == "__main__":
    sys.exit(main())
