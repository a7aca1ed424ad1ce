"""``orpo-data``: the data stage's commands.

    orpo-data generate --model smollm2-135m-instruct --output data/onpolicy/smollm2 [--k 8] [--limit N]
    orpo-data generate --endpoint http://127.0.0.1:8000 --output runs/pairs   # key from $OPENAI_API_KEY
    orpo-data from-feedback sqlite:///records.db --output runs/feedback-pairs   # pairs from orpo-serve --record
    orpo-data build [--check]                                                  # our committed splits

Bad input exits 2 with one line naming the row or the setting; a killed ``generate`` resumes with the same command.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys

from orpo_deploy.core.errors import OrpoError, report
from orpo_deploy.data.onpolicy import GenerateConfig


def generate_parser(sub) -> None:
    p = sub.add_parser("generate", help="on-policy pairs: k answers per prompt, judged by the verifiers")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--model", help="model folder, 'smollm2-135m-instruct' (bundled) or 'tiny-smollm2'")
    src.add_argument("--endpoint", help="OpenAI-compatible base URL (orpo-serve, vLLM), e.g. http://127.0.0.1:8000")
    p.add_argument("--api-key-env", default="OPENAI_API_KEY", help="environment variable holding the endpoint's key")
    p.add_argument("--served-model", help="model id at the endpoint (default: the first it lists)")
    p.add_argument("--engine", choices=["vllm", "hf"], default="vllm", help="for --model; hf is for tiny models")
    p.add_argument("--prompts", help="JSONL of {prompt, constraints[, relevance, topic, id]}; default: our split")
    p.add_argument("--split", default="train", help="our split when no --prompts: train or dev (never test)")
    p.add_argument("--limit", type=int, help="an evenly spaced subset of N prompts")
    p.add_argument("--k", type=int, default=8, help="answers sampled per prompt")
    p.add_argument("--temperature", type=float, default=0.8)
    p.add_argument("--top-p", type=float, default=0.95)
    p.add_argument("--max-new-tokens", type=int, default=256)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--chunk-size", type=int, default=64, help="prompts per resumable chunk")
    p.add_argument(
        "--output-dir",
        "--output",
        dest="output",
        default="runs/onpolicy",
        help="folder: pairs.jsonl, samples.jsonl, stats.*, manifest",
    )


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    parser = argparse.ArgumentParser(prog="orpo-data", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    generate_parser(sub)
    fb = sub.add_parser("from-feedback", help="preference pairs from orpo-serve's record store (--record URL)")
    fb.add_argument("url", help="the store: sqlite:///records.db or postgresql+psycopg://user@host/db")
    fb.add_argument(
        "--output-dir",
        "--output",
        dest="output",
        default="runs/feedback-pairs",
        help="folder: train.jsonl, dev.jsonl, stats, manifest",
    )
    fb.add_argument("--model-sha", help="only completions of this served model (its manifest's sha256)")
    fb.add_argument("--since", help="only completions from this ISO date/time on")
    fb.add_argument("--until", help="only completions before this ISO date/time")
    fb.add_argument("--dev-percent", type=int, default=10, help="prompts held out as dev, by prompt hash (10)")
    build = sub.add_parser("build", help="rebuild our committed splits (python -m orpo_deploy.data.build)")
    build.add_argument("--check", action="store_true", help="exit 1 if the committed files differ")
    args = parser.parse_args(argv)
    if args.command == "build":
        from orpo_deploy.data.build import main as build_main

        return build_main(["--check"] if args.check else [])
    if args.command == "from-feedback":
        from orpo_deploy.data.feedback import run

        try:
            out = run(args.url, args.output, args.model_sha, args.since, args.until, args.dev_percent)
        except OrpoError as exc:
            return report("orpo-data", exc)
        print((out / "stats.json").read_text())
        print(f"pairs written to {out}/")
        return 0
    values = {k: v for k, v in vars(args).items() if k not in ("command", "api_key_env")}

    try:
        cfg = GenerateConfig(**values, api_key=os.environ.get(args.api_key_env) if args.endpoint else None)
        from orpo_deploy.data.onpolicy import run

        out = run(cfg)
    except OrpoError as exc:
        return report("orpo-data", exc)
    print((out / "stats.md").read_text())
    print(f"pairs written to {out}/")
    return 0


if __name__ == "__main__":
    sys.exit(main())
