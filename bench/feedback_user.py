"""A scripted user for the served-traffic loop (issue 21): orpo-serve records every completion (``--record``), this
user asks our train prompts with ``n`` sampled answers each and rates every answer up or down by our verifiers
(all of the prompt's constraints followed, on its topic) through ``POST /v1/feedback`` -- a thumbs-up/down per
answer, as a person would give in a chat UI. ``orpo-data from-feedback`` then turns the store into pairs.

    .venv/bin/python bench/feedback_user.py --model runs/sweep_dev/runs/beta2.0/merged --requests 240 --n 4 \\
        --output-dir /work/runs/feedback_loop/serve

Writes OUTPUT/records.db (the store), OUTPUT/user.json (what was asked, answered and rated, with the git commit and
the command) and OUTPUT/serve.log. Test prompts and IFEval are never asked: the loop is judged on them.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import httpx
from openai import AsyncOpenAI

from orpo_deploy.core.io import write_json
from orpo_deploy.core.models import resolve_model
from orpo_deploy.data.onpolicy import GenerateConfig, judge, load_prompts
from orpo_deploy.pipeline.serving import start_server
from orpo_deploy.pipeline.stages import stage_env

REPO = Path(__file__).resolve().parents[1]


async def ask_and_rate(args, url: str, key: str, rows: list[dict]) -> dict:
    client = AsyncOpenAI(base_url=f"{url}/v1", api_key=key, max_retries=0, timeout=600)
    http = httpx.AsyncClient(base_url=url, headers={"Authorization": f"Bearer {key}"}, timeout=60)
    model = (await client.models.list()).data[0].id
    gate = asyncio.Semaphore(args.concurrency)
    tally: Counter = Counter()
    per_prompt: list[dict] = []

    async def one(i: int, row: dict) -> None:
        async with gate:
            r = await client.chat.completions.create(
                model=model, messages=row["messages"], n=args.n, temperature=args.temperature, top_p=args.top_p,
                max_tokens=args.max_tokens, seed=args.seed + i,
            )  # fmt: skip
            passes = []
            for choice in r.choices:
                verdict = judge(row, choice.message.content or "")
                passes.append(verdict["passes"])
                tally["answers"] += 1
                tally["passed"] += verdict["passes"]
                tally["cut_at_limit"] += choice.finish_reason == "length"
                body = {"completion_id": r.id, "choice": choice.index, "rating": "up" if verdict["passes"] else "down"}
                (await http.post("/v1/feedback", json=body)).raise_for_status()
                tally["feedback"] += 1
            tally["requests"] += 1
            per_prompt.append({"id": row["id"], "passed": sum(passes), "answers": len(passes)})

    await asyncio.gather(*(one(i, row) for i, row in enumerate(rows)))
    await http.aclose()
    await client.close()
    mixed = sum(0 < p["passed"] < p["answers"] for p in per_prompt)
    return {**tally, "served_model": model, "prompts_with_up_and_down": mixed}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", required=True, help="the served model: a folder or bundled name")
    p.add_argument("--requests", type=int, default=240, help="train prompts asked, evenly spaced, one request each")
    p.add_argument("--n", type=int, default=4, help="answers per request")
    p.add_argument("--temperature", type=float, default=0.8)
    p.add_argument("--top-p", type=float, default=0.95)
    p.add_argument("--max-tokens", type=int, default=256)
    p.add_argument("--concurrency", type=int, default=4)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--output-dir", type=Path, required=True)
    args = p.parse_args(argv)
    out = args.output_dir.resolve()
    out.mkdir(parents=True, exist_ok=True)
    (out / "records.db").unlink(missing_ok=True)
    rows = load_prompts(GenerateConfig(model="unused", output=str(out), split="train", limit=args.requests))
    serve_args = ["--record", f"sqlite:///{out / 'records.db'}", "--max-model-len", "1024", "--kv-cache-gib", "2"]
    started = time.perf_counter()
    server = start_server(resolve_model(args.model), serve_args, out / "serve.log", 600, stage_env())
    try:
        tally = asyncio.run(ask_and_rate(args, server.url, server.api_key, rows))
    finally:
        stopped = server.stop(grace_seconds=30)
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=REPO)
    record = {
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "commit": commit.stdout.strip(),
        "model": str(args.model),
        "settings": {k: v for k, v in vars(args).items() if k != "output_dir"},
        **tally,
        "answer_pass_rate": tally["passed"] / max(tally["answers"], 1),
        "wall_s": round(time.perf_counter() - started, 1),
        "server_exit": stopped,
    }
    write_json(out / "user.json", record)
    print(json.dumps({k: v for k, v in record.items() if k != "settings"}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
