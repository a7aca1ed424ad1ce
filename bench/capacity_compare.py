"""Capacity at SLO, side by side: orpo-serve and vLLM's own OpenAI server, each on the merged (bf16) model and on its
4-bit GPTQ export, one after the other in one run, each swept with ``orpo-loadtest --sweep`` (open-loop Poisson
arrivals at rising rates until one misses an SLO).

    .venv/bin/python bench/capacity_compare.py --merged runs/smollm2/train/merged --quantized runs/smollm2/export \\
        --rates 0.5,1,1.5,2,3,4 --run-time 30s --output bench/results/capacity_compare/2026-12-03_smollm2

Every arm gets the same engine settings (enforce_eager, max_model_len, 1 GiB KV cache) and the same workload (our
test split's prompts, exactly --max-tokens output tokens each: ignore_eos), the same per-request SLOs (goodput) and
the same run SLOs. Writes OUTPUT/capacity.json, README.md (a table per arm, capacities side by side, git commit and
command) and capacity.png (goodput and TTFT p95 against the offered rate, one line per arm); each arm's Locust
outputs stay in --runs-dir.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import httpx
from loadtest_compare import server_command  # bench/: the two servers' command lines with shared engine settings

from orpo_deploy.core.io import write_atomic, write_json
from orpo_deploy.loadtest.cli import main as loadtest_main
from orpo_deploy.loadtest.servers import free_port, start_server, stop_server

REPO = Path(__file__).resolve().parents[1]


def run_arm(server: str, model_dir: Path, args: argparse.Namespace, out: Path) -> dict:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    out.mkdir(parents=True, exist_ok=True)
    argv = server_command(server, model_dir, args.served_name, port, args.max_model_len)
    probe = "/ready" if server == "orpo-serve" else "/health"
    running = start_server(argv, url, out / "server.log", ready_path=probe, timeout_s=args.start_deadline, cwd=REPO)
    try:
        warm_up(url, args.served_name)
        code = loadtest_main([
            "--host", url, "--sweep", args.rates, "--run-time", args.run_time, "--max-tokens", str(args.max_tokens),
            "--model", args.served_name, "--ignore-eos", "--seed", "0", "--output", str(out / "load"),
            *[a for s in args.request_slo for a in ("--request-slo", s)], *[a for s in args.slo for a in ("--slo", s)],
        ])  # fmt: skip
    finally:
        stop_server(running.proc)
    sweep = json.loads((out / "load" / "sweep.json").read_text())
    return {"server": server, "model_dir": str(model_dir), "startup_s": round(running.startup_s, 1),
            "exit_code": code, "capacity_rps": sweep["capacity_rps"], "rates": sweep["rates"],
            "command": " ".join(argv[1:])}  # fmt: skip


def warm_up(url: str, model: str) -> None:
    """Two short completions before the sweep: a server's first requests pay one-off set-up (measured: 2 of orpo-serve's
    first 37 requests missed a 1 s TTFT at 0.5 req/s without this), which the lowest rate would report as its
    capacity."""
    body = {"model": model, "messages": [{"role": "user", "content": "Hello"}], "max_tokens": 8}
    for stream in (False, True):
        httpx.post(f"{url}/v1/chat/completions", json={**body, "stream": stream}, timeout=300).raise_for_status()


def chart(arms: dict[str, dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4.5))
    for label, arm in arms.items():
        rates = [r["rate"] for r in arm["rates"]]
        left.plot(rates, [r["goodput_rps"] or 0 for r in arm["rates"]], marker="o", label=label)
        right.plot(rates, [r["ttft_p95_ms"] or 0 for r in arm["rates"]], marker="o", label=label)
    top = max((r["rate"] for a in arms.values() for r in a["rates"]), default=1)
    left.plot([0, top], [0, top], color="grey", lw=0.8, ls="--", label="goodput = offered rate")
    left.set(xlabel="offered rate (req/s, Poisson)", ylabel="goodput (req/s meeting every SLO)", title="goodput")
    right.set(xlabel="offered rate (req/s, Poisson)", ylabel="TTFT p95 (ms)", title="time to first token, p95")
    for ax in (left, right):
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def markdown(result: dict) -> str:
    s = result["settings"]
    lines = [
        "# Capacity at SLO: orpo-serve vs vLLM's server, bf16 and GPTQ 4-bit",
        "",
        f"{result['created_at']}, commit {result['commit']}. `{result['command']}`",
        "",
        f"Open-loop Poisson arrivals (seed 0) at {s['rates']} req/s, {s['run_time']} per rate, upwards until a rate "
        f"misses an SLO; prompts from our test split, exactly {s['max_tokens']} output tokens each (ignore_eos), "
        f"streamed. Per-request SLOs (goodput): {', '.join(s['request_slo'])}; run SLOs: {', '.join(s['slo'])}. "
        "Engine settings shared by all arms: enforce_eager, max_model_len "
        f"{s['max_model_len']}, 1 GiB KV cache. One 2-core host runs client and server: the capacities are this "
        "machine's, comparable with each other, not with a GPU.",
        "",
        "| arm | capacity at SLO (req/s) | start-up (s) |",
        "|---|---:|---:|",
    ]
    for label, arm in result["arms"].items():
        cap = arm["capacity_rps"] if arm["capacity_rps"] is not None else "none (the lowest rate missed)"
        lines.append(f"| {label} | {cap} | {arm['startup_s']} |")
    for label, arm in result["arms"].items():
        lines += ["", f"## {label}", "", "| rate | sent | goodput ratio | goodput req/s | tokens/s | TTFT p50 / p95 ms "
                  "| ITL p95 ms | failures | missed |", "|---:|---:|---:|---:|---:|---:|---:|---:|---|"]  # fmt: skip
        for r in arm["rates"]:
            lines.append(
                f"| {r['rate']:g} | {_f(r['sent_rps'])} | {_f(r['goodput_ratio'])} | {_f(r['goodput_rps'])} | "
                f"{_f(r['output_tokens_per_s'])} | {_f(r['ttft_p50_ms'])} / {_f(r['ttft_p95_ms'])} | "
                f"{_f(r['itl_p95_ms'])} | {r['failures']} | {', '.join(r['failed_slos']) or '-'} |"
            )
    lines += ["", "![capacity](capacity.png)", ""]
    return "\n".join(lines)


def _f(x) -> str:
    return "-" if x is None else f"{x:.2f}" if isinstance(x, float) and x < 10 else f"{x:.0f}"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--merged", type=Path, required=True, help="the merged bf16 model folder")
    p.add_argument("--quantized", type=Path, required=True, help="its GPTQ 4-bit export")
    p.add_argument("--rates", default="0.5,1,1.5,2,3,4")
    p.add_argument("--run-time", default="30s")
    p.add_argument("--max-tokens", type=int, default=64)
    p.add_argument("--max-model-len", type=int, default=1024)
    p.add_argument("--request-slo", action="append", default=None, help="default: ttft_ms=1000, tpot_ms=200")
    p.add_argument("--slo", action="append", default=None, help="default: goodput_ratio=0.95, error_rate=0")
    p.add_argument("--servers", default="orpo-serve,vllm")
    p.add_argument("--start-deadline", type=float, default=600.0)
    p.add_argument("--output", type=Path, required=True)
    p.add_argument("--runs-dir", type=Path, default=REPO / "runs" / "capacity-compare")
    args = p.parse_args(argv)
    args.request_slo = args.request_slo or ["ttft_ms=1000", "tpot_ms=200"]
    args.slo = args.slo or ["goodput_ratio=0.95", "error_rate=0"]
    args.served_name = "model"
    arms = {}
    for precision, folder in (("bf16", args.merged), ("GPTQ 4-bit", args.quantized)):
        for server in args.servers.split(","):
            label = f"{server}, {precision}"
            print(f"== {label}", flush=True)
            slug = f"{server}-{'bf16' if precision == 'bf16' else 'gptq'}"
            arms[label] = run_arm(server, folder.resolve(), args, args.runs_dir / slug)
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=REPO)
    result = {
        "created_at": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "commit": commit.stdout.strip(),
        "command": " ".join(["python", *sys.argv]),
        "machine": f"{os.cpu_count()} CPUs",
        "settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "arms": arms,
    }
    args.output.mkdir(parents=True, exist_ok=True)
    write_json(args.output / "capacity.json", result)
    chart(arms, args.output / "capacity.png")
    write_atomic(args.output / "README.md", markdown(result))
    print(markdown(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
