"""orpo-serve vs vLLM's own OpenAI server: same model, same engine settings, same Locust load, one after the other.

    .venv/bin/python bench/loadtest_compare.py --model tiny-smollm2 --users 8 --run-time 60s

Each server is started on a free loopback port, waited for (/ready, /health), loaded with ``orpo-loadtest`` (the
same locustfile, users, run time, max_tokens, ignore_eos so every request generates exactly max_tokens) and
stopped before the next one starts. Writes bench/results/loadtest_compare.json and .md (side by side, ratios
orpo-serve / vLLM); each run's Locust CSVs, HTML and plot go to runs/loadtest-compare/<server>/.
Engine settings shared by both: enforce_eager, max_model_len, 1 GiB CPU KV cache, safetensors, served model name.
Load averages before and after each run are recorded: on a shared machine they say how much to trust a ratio.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from datetime import UTC, datetime
from pathlib import Path

import psutil

from orpo_deploy.core.models import TINY_NAME, resolve_model
from orpo_deploy.loadtest.cli import main as loadtest_main
from orpo_deploy.loadtest.servers import free_port, start_server, stop_server

REPO = Path(__file__).resolve().parents[1]

RESULTS = REPO / "bench" / "results"
FIGURES = [
    ("output tokens/s", "output_tokens_per_s"),
    ("requests/s", "requests_per_s"),
    ("TTFT p50 ms", "ttft_ms.p50"),
    ("TTFT p95 ms", "ttft_ms.p95"),
    ("ITL p50 ms", "itl_ms.p50"),
    ("ITL p95 ms", "itl_ms.p95"),
    ("e2e p50 ms", "e2e_ms.p50"),
    ("e2e p95 ms", "e2e_ms.p95"),
    ("requests", "requests"),
    ("failures", "failures"),
]
RATIOS = ["output_tokens_per_s", "ttft_ms.p50", "ttft_ms.p95"]


def server_command(
    kind: str, model_dir: Path, name: str, port: int, max_model_len: int, extra: tuple[str, ...] = ()
) -> list[str]:
    common = ["--port", str(port), "--max-model-len", str(max_model_len), "--enforce-eager", *extra]
    if kind == "orpo-serve":
        return [sys.executable, "-m", "orpo_deploy.serve", "--model", str(model_dir), "--served-model-name", name,
                "--kv-cache-gib", "1", "--allow-benchmark-params", *common]  # fmt: skip
    return [sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", str(model_dir),
            "--served-model-name", name, "--host", "127.0.0.1", "--load-format", "safetensors", *common]  # fmt: skip


def cpu_seconds(pid: int) -> dict[str, float]:
    """User+system CPU seconds of the server process (the HTTP front end) and of all its children (the engine)."""
    root = psutil.Process(pid)
    children = 0.0
    for child in root.children(recursive=True):
        try:
            t = child.cpu_times()
            children += t.user + t.system
        except psutil.NoSuchProcess:
            pass
    t = root.cpu_times()
    return {"frontend": t.user + t.system, "engine_and_children": children}


def run_one(kind: str, args: argparse.Namespace, model_dir: Path, out: Path, extra: tuple[str, ...] = ()) -> dict:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    out.mkdir(parents=True, exist_ok=True)
    argv = server_command(kind, model_dir, args.served_name, port, args.max_model_len, extra)
    probe = "/ready" if kind == "orpo-serve" else "/health"  # vLLM listens only once its engine is up
    server = start_server(argv, url, out / "server.log", ready_path=probe, timeout_s=args.start_deadline, cwd=REPO)
    proc, startup_s = server.proc, server.startup_s
    try:
        load_before, cpu_before = os.getloadavg(), cpu_seconds(proc.pid)
        code = loadtest_main([
            "--host", url, "--users", str(args.users), "--spawn-rate", str(args.users), "--run-time", args.run_time,
            "--max-tokens", str(args.max_tokens), "--model", args.served_name, "--output", str(out / "load"),
            *(["--ignore-eos"] if args.ignore_eos else []), "--slo", "error_rate=1",
        ])  # fmt: skip
        load_after, cpu_after = os.getloadavg(), cpu_seconds(proc.pid)
    finally:
        stop_server(proc)
    report = json.loads((out / "load" / "summary.json").read_text())
    return {
        "server": kind,
        "command": " ".join(argv[1:]),
        "startup_s": round(startup_s, 1),
        "exit_code": code,
        "loadavg_1m_before_after": [round(load_before[0], 2), round(load_after[0], 2)],
        "server_cpu_s_during_load": {k: round(cpu_after[k] - cpu_before[k], 1) for k in cpu_before},
        "summary": report["summary"],
        "results_dir": str(out / "load"),
    }


def figure(summary: dict, path: str) -> float | None:
    value = summary
    for part in path.split("."):
        value = value.get(part) if isinstance(value, dict) else None
    return value


def write_results(results: dict, stem: Path) -> None:
    stem.parent.mkdir(parents=True, exist_ok=True)
    stem.with_suffix(".json").write_text(json.dumps(results, indent=2) + "\n")
    orpo, vllm = (results["runs"][k]["summary"] for k in ("orpo-serve", "vllm"))
    s = results["settings"]
    lines = [
        "# orpo-serve vs vLLM OpenAI server under the same Locust load",
        "",
        f"{results['created_at']}. Model `{s['model']}`, {s['users']} users (closed loop, no wait), {s['run_time']} "
        f"each, max_tokens {s['max_tokens']}, ignore_eos {s['ignore_eos']}, max_model_len {s['max_model_len']}, "
        "enforce_eager, 1 GiB KV cache. Client: Locust (FastHttpUser) on the same machine. "
        f"Machine: {s['machine']}.",
        "",
        "| figure | orpo-serve | vLLM | orpo-serve / vLLM |",
        "|---|---:|---:|---:|",
    ]
    for label, path in FIGURES:
        a, b = figure(orpo, path), figure(vllm, path)
        ratio = results["ratios"].get(path)
        lines.append(f"| {label} | {_fmt(a)} | {_fmt(b)} | {_fmt(ratio) if ratio is not None else ''} |")
    runs = results["runs"]
    lines += [
        "",
        f"Start-up to ready: orpo-serve {runs['orpo-serve']['startup_s']} s, vLLM {runs['vllm']['startup_s']} s. "
        f"1-min load average before/after the run: orpo-serve {runs['orpo-serve']['loadavg_1m_before_after']}, "
        f"vLLM {runs['vllm']['loadavg_1m_before_after']} (2 cores; above 2 means other work shared the CPU). "
        f"Server CPU seconds during the load (front end / engine): "
        + ", ".join(f"{k} {_cpu(v['server_cpu_s_during_load'])}" for k, v in runs.items())
        + ".",
        "",
        "Ratios above 1 mean orpo-serve is higher: better for tokens/s, worse for latencies. One run each, order "
        f"{' then '.join(s['order'])}; repeat (also with --order reversed) before trusting small differences.",
        "",
    ]
    stem.with_suffix(".md").write_text("\n".join(lines))


def _cpu(cpu: dict[str, float]) -> str:
    return f"{cpu['frontend']} / {cpu['engine_and_children']} s"


def _fmt(value) -> str:
    if value is None:
        return "-"
    return f"{value:.3g}" if isinstance(value, float) and abs(value) < 10 else f"{value:,.1f}".rstrip("0").rstrip(".")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default=TINY_NAME, help="bundled name or model folder (default tiny-smollm2)")
    p.add_argument("--users", type=int, default=8)
    p.add_argument("--run-time", default="60s")
    p.add_argument("--max-tokens", type=int, default=64)
    p.add_argument("--no-ignore-eos", dest="ignore_eos", action="store_false", help="let requests stop at EOS")
    p.add_argument("--max-model-len", type=int, default=1024)
    p.add_argument("--start-deadline", type=float, default=300.0, help="seconds to wait for each server")
    p.add_argument("--output", type=Path, default=RESULTS / "loadtest_compare", help="results stem (.json, .md)")
    p.add_argument("--order", default="orpo-serve,vllm", help="which server runs first (default orpo-serve,vllm)")
    p.add_argument("--runs-dir", type=Path, default=REPO / "runs" / "loadtest-compare")
    args = p.parse_args(argv)
    model_dir = resolve_model(args.model)
    args.served_name = model_dir.name if Path(args.model).exists() else args.model
    order = [kind.strip() for kind in args.order.split(",")]
    if sorted(order) != ["orpo-serve", "vllm"]:
        p.error("--order must name orpo-serve and vllm once each")
    runs = {}
    for kind in order:
        print(f"== {kind}", flush=True)
        runs[kind] = run_one(kind, args, model_dir, args.runs_dir / kind)
    ratios = {}
    for path in RATIOS:
        a, b = figure(runs["orpo-serve"]["summary"], path), figure(runs["vllm"]["summary"], path)
        ratios[path] = round(a / b, 3) if a is not None and b else None
    results = {
        "created_at": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "settings": {
            "model": args.model, "model_dir": str(model_dir), "users": args.users, "run_time": args.run_time,
            "max_tokens": args.max_tokens, "ignore_eos": args.ignore_eos, "max_model_len": args.max_model_len,
            "machine": f"{os.cpu_count()} CPUs, {sys.platform}",
            "order": order,
        },
        "runs": runs,
        "ratios": ratios,
    }  # fmt: skip
    write_results(results, args.output)
    print(args.output.with_suffix(".md").read_text())
    return 0 if all(r["exit_code"] == 0 for r in runs.values()) else 1


if __name__ == "__main__":
    raise SystemExit(main())
