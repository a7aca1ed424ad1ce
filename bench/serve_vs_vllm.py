"""orpo-serve vs vLLM's own OpenAI server on the same model and engine settings, one after the other.

    .venv/bin/python bench/serve_vs_vllm.py --model tiny-smollm2 --levels 1,8,32 --requests-per-level 64

For each server and each concurrency level: streamed chat completions of exactly ``--max-tokens`` new tokens
(ignore_eos), sent by a light httpx async client (the openai client costs too much CPU on 2 cores), after a
short warm-up. Reports output tokens/s (all tokens / wall time of the level) and time to first token
(request sent -> first chunk with content; vLLM sends an empty role chunk earlier, which is not counted).
Writes bench/results/serve_vs_vllm.json and .md. The client shares the machine's cores with the server.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import httpx
import psutil

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from orpo_deploy.core.models import resolve_model  # noqa: E402
from orpo_deploy.loadtest.servers import free_port, start_server, stop_server  # noqa: E402

RESULTS = REPO / "bench" / "results"
MESSAGES = [{"role": "user", "content": "Write a short story about a lighthouse keeper."}]


def server_command(kind: str, model_dir: Path, name: str, port: int, args: argparse.Namespace) -> list[str]:
    common = ["--port", str(port), "--max-model-len", str(args.max_model_len)]
    if args.enforce_eager:
        common.append("--enforce-eager")
    if kind == "orpo-serve":
        return [
            sys.executable,
            "-m",
            "orpo_deploy.serve",
            "--model",
            str(model_dir),
            "--served-model-name",
            name,
            "--allow-benchmark-params",  # the requests use ignore_eos
            *common,
            "--kv-cache-gib",
            str(args.kv_cache_gib),
            "--max-concurrency",
            "256",
            "--max-queue",
            "1024",
            "--log-level",
            "warning",
        ]
    return [
        sys.executable,
        "-m",
        "vllm.entrypoints.openai.api_server",
        "--model",
        str(model_dir),
        "--served-model-name",
        name,
        "--host",
        "127.0.0.1",
        *common,
        "--load-format",
        "safetensors",
        "--disable-uvicorn-access-log",
    ]


async def one_request(client: httpx.AsyncClient, name: str, max_tokens: int) -> tuple[float | None, int]:
    body = {
        "model": name,
        "messages": MESSAGES,
        "max_tokens": max_tokens,
        "temperature": 0.0,
        "stream": True,
        "ignore_eos": True,
        "stream_options": {"include_usage": True},
    }
    sent = time.perf_counter()
    ttft, tokens, chunks = None, None, 0
    async with client.stream("POST", "/v1/chat/completions", json=body) as response:
        response.raise_for_status()
        async for line in response.aiter_lines():
            if not line.startswith("data: {"):
                continue
            event = json.loads(line[6:])
            if event.get("usage"):
                tokens = event["usage"]["completion_tokens"]
            for choice in event.get("choices") or []:
                if choice["delta"].get("content"):
                    chunks += 1
                    if ttft is None:
                        ttft = time.perf_counter() - sent
    return ttft, tokens if tokens is not None else chunks


def tree_cpu_seconds(pid: int) -> tuple[float, float]:
    """User + system CPU seconds so far of a server's own process (the HTTP front end, where orpo-serve's code
    runs) and of all its children (vLLM's EngineCore and workers, the same code for both servers)."""
    root = psutil.Process(pid)
    front, engine = 0.0, 0.0
    for proc in [root, *root.children(recursive=True)]:
        try:
            times = proc.cpu_times()
        except psutil.NoSuchProcess:
            continue
        if proc.pid == pid:
            front += times.user + times.system
        else:
            engine += times.user + times.system
    return front, engine


async def run_level(
    url: str, name: str, concurrency: int, requests: int, max_tokens: int, pid: int, seconds: float = 0.0
) -> dict:
    """``requests`` streamed requests over ``concurrency`` connections; with ``seconds`` > 0, also keep every
    connection busy until that many seconds have passed (a fast server on a small model otherwise finishes a level
    in a few seconds, too short to measure)."""
    limits = httpx.Limits(max_connections=concurrency + 4, max_keepalive_connections=concurrency + 4)
    async with httpx.AsyncClient(base_url=url, timeout=600, limits=limits) as client:
        await asyncio.gather(*(one_request(client, name, 8) for _ in range(min(concurrency, 4))))  # warm-up
        queue: asyncio.Queue[int] = asyncio.Queue()
        for i in range(requests):
            queue.put_nowait(i)
        results: list[tuple[float | None, int]] = []
        errors = 0

        async def worker() -> None:
            nonlocal errors
            while not queue.empty() or time.perf_counter() < started + seconds:
                if not queue.empty():
                    queue.get_nowait()
                try:
                    results.append(await one_request(client, name, max_tokens))
                except httpx.HTTPError:
                    errors += 1

        cpu_before, started = tree_cpu_seconds(pid), time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        wall, cpu_after = time.perf_counter() - started, tree_cpu_seconds(pid)
    front_cpu, engine_cpu = (after - before for after, before in zip(cpu_after, cpu_before, strict=True))
    ttfts = sorted(t for t, _ in results if t is not None)
    tokens = sum(n for _, n in results)
    return {
        "concurrency": concurrency,
        "requests": len(results),
        "errors": errors,
        "output_tokens": tokens,
        "wall_s": round(wall, 3),
        "output_tok_s": round(tokens / wall, 1),
        # CPU the server spent per output token: less sensitive than tok/s to other jobs on a shared machine.
        "server_cpu_ms_per_token": round(1000 * (front_cpu + engine_cpu) / tokens, 3) if tokens else None,
        "frontend_cpu_ms_per_token": round(1000 * front_cpu / tokens, 3) if tokens else None,
        "ttft_p50_s": round(statistics.median(ttfts), 4) if ttfts else None,
        "ttft_p95_s": round(ttfts[min(len(ttfts) - 1, int(0.95 * len(ttfts)))], 4) if ttfts else None,
    }


def bench_server(kind: str, model_dir: Path, name: str, args: argparse.Namespace, logs: Path) -> dict:
    port = free_port()
    cmd = server_command(kind, model_dir, name, port, args)
    if args.server_nice:
        # The client is the instrument: on a 2-core host a server's busy engine otherwise starves it, and the run
        # measures the client's CPU share (measured: TTFT p50 0.6-1 s while the server saw 5 ms). Both servers
        # get the same niceness, so neither is favoured.
        cmd = ["nice", "-n", str(args.server_nice), *cmd]
    ready_path = "/ready" if kind == "orpo-serve" else "/health"
    url = f"http://127.0.0.1:{port}"
    log = logs / f"{kind}.log"
    server = start_server(cmd, url, log, ready_path=ready_path, timeout_s=args.startup_timeout, cwd=REPO)
    proc, startup_s = server.proc, server.startup_s
    load_before = os.getloadavg()[0]
    try:
        levels = [
            asyncio.run(
                run_level(url, name, c, max(args.requests_per_level, c), args.max_tokens, proc.pid, args.seconds)
            )
            for c in args.levels
        ]
    finally:
        stop_server(proc)
    print(
        f"{kind}: startup {startup_s:.1f} s, "
        + ", ".join(
            f"{lv['concurrency']}: {lv['output_tok_s']} tok/s {lv['server_cpu_ms_per_token']} cpu-ms/tok"
            for lv in levels
        ),
        flush=True,
    )
    return {
        "startup_s": round(startup_s, 1),
        "loadavg_1m_before": round(load_before, 2),
        "levels": levels,
        "command": " ".join(cmd[1:]),
    }


def median_of_rounds(runs: list[dict]) -> dict:
    """Per level, the median over rounds of each figure; the rounds themselves are kept under ``rounds``."""
    levels = []
    for per_round in zip(*(run["levels"] for run in runs), strict=True):
        level = dict(per_round[0])
        keys = ("output_tok_s", "server_cpu_ms_per_token", "frontend_cpu_ms_per_token", "ttft_p50_s", "ttft_p95_s")
        for key in (*keys, "wall_s"):
            values = [lv[key] for lv in per_round if lv[key] is not None]
            level[key] = round(statistics.median(values), 4) if values else None
        level["errors"] = sum(lv["errors"] for lv in per_round)
        levels.append(level)
    return {
        "startup_s": statistics.median(run["startup_s"] for run in runs),
        "loadavg_1m_before": [run["loadavg_1m_before"] for run in runs],
        "levels": levels,
        "rounds": runs,
        "command": runs[0]["command"],
    }


def round_ratios(report: dict) -> dict[str, list[float]]:
    """Per level, orpo-serve / vLLM output tok/s of each round (round i of one with round i of the other)."""
    ratios: dict[str, list[float]] = {}
    rounds = zip(report["servers"]["orpo-serve"]["rounds"], report["servers"]["vllm"]["rounds"], strict=True)
    for orpo, vllm in rounds:
        for o, v in zip(orpo["levels"], vllm["levels"], strict=True):
            if v["output_tok_s"]:
                ratios.setdefault(str(o["concurrency"]), []).append(round(o["output_tok_s"] / v["output_tok_s"], 3))
    return ratios


def markdown(report: dict) -> str:
    nice = report.get("server_nice")
    lines = [
        f"# orpo-serve vs vLLM OpenAI server: {report['model']}",
        "",
        f"{report['max_tokens']} new tokens per request (ignore_eos), streamed chat completions, httpx async client on "
        f"the same {report['machine']['cpus']} CPUs; at least {report['requests_per_level']} requests and "
        f"{report.get('seconds_per_level', 0)} s per level; "
        f"enforce_eager={report['enforce_eager']}, max_model_len={report['max_model_len']}; median of "
        f"{report['rounds']} round(s), servers started alternately (ABBA)"
        + (f"; both servers at nice {nice}, the client at 0." if nice else "."),
        "",
        "| streams | orpo-serve tok/s | vLLM tok/s | ratio (of medians) | ratio per round | orpo TTFT p50 / p95 (s) "
        "| vLLM TTFT p50 / p95 (s) | front-end CPU ms/token orpo / vLLM | server CPU ms/token orpo / vLLM |",
        "|---:|---:|---:|---:|---|---:|---:|---:|---:|",
    ]
    per_round = round_ratios(report)
    for o, v in zip(report["servers"]["orpo-serve"]["levels"], report["servers"]["vllm"]["levels"], strict=True):
        ratio = o["output_tok_s"] / v["output_tok_s"] if v["output_tok_s"] else float("nan")
        rounds = " ".join(f"{r:.2f}" for r in per_round.get(str(o["concurrency"]), []))
        lines.append(
            f"| {o['concurrency']} | {o['output_tok_s']} | {v['output_tok_s']} | {ratio:.2f} | {rounds} | "
            f"{o['ttft_p50_s']} / {o['ttft_p95_s']} | {v['ttft_p50_s']} / {v['ttft_p95_s']} | "
            f"{o.get('frontend_cpu_ms_per_token')} / {v.get('frontend_cpu_ms_per_token')} | "
            f"{o.get('server_cpu_ms_per_token')} / {v.get('server_cpu_ms_per_token')} |"
        )
    lines += [
        "",
        "Front end: the server's own process (HTTP, tokenizing, AsyncLLM's output handling; the only place the two "
        "differ); server: it plus vLLM's EngineCore and worker processes.",
        "",
        f"Start-up to ready: orpo-serve {report['servers']['orpo-serve']['startup_s']} s, "
        f"vLLM {report['servers']['vllm']['startup_s']} s. 1-min load average before each run: "
        f"{report['servers']['orpo-serve']['loadavg_1m_before']} / {report['servers']['vllm']['loadavg_1m_before']}"
        " (other jobs on the machine skew absolute numbers).",
        "",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="tiny-smollm2", help="bundled name or model folder (default tiny-smollm2)")
    p.add_argument("--levels", default="1,8,32", help="comma-separated concurrent streams (default 1,8,32)")
    p.add_argument("--requests-per-level", type=int, default=64, help="requests per level (at least the level)")
    p.add_argument("--seconds-per-level", dest="seconds", type=float, default=0.0, help="keep sending until then")
    p.add_argument("--max-tokens", type=int, default=64)
    p.add_argument("--max-model-len", type=int, default=512)
    p.add_argument("--kv-cache-gib", type=int, default=1)
    p.add_argument("--enforce-eager", action=argparse.BooleanOptionalAction, default=True)
    p.add_argument("--rounds", type=int, default=1, help="start each server this many times, alternating")
    p.add_argument("--startup-timeout", type=float, default=600)
    p.add_argument("--server-nice", type=int, default=10, help="niceness of both servers, so the client is not starved")
    p.add_argument("--output", type=Path, default=RESULTS / "serve_vs_vllm")
    args = p.parse_args(argv)
    try:
        args.levels = [int(x) for x in args.levels.split(",") if x.strip()]
        model_dir = resolve_model(args.model)
    except ValueError as exc:
        print(f"serve_vs_vllm: error: {exc}", file=sys.stderr)
        return 2
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", str(args.kv_cache_gib))
    name = Path(args.model).name if Path(args.model).exists() else args.model
    report = {
        "model": name,
        "max_tokens": args.max_tokens,
        "requests_per_level": args.requests_per_level,
        "seconds_per_level": args.seconds,
        "enforce_eager": args.enforce_eager,
        "max_model_len": args.max_model_len,
        "rounds": args.rounds,
        "server_nice": args.server_nice,
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
        "started_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "client": "httpx.AsyncClient, streaming, same machine",
    }
    runs: dict[str, list[dict]] = {"orpo-serve": [], "vllm": []}
    with tempfile.TemporaryDirectory(prefix="serve-bench-") as tmp:
        for round_ in range(args.rounds):
            # ABBA order, so a load change on the shared machine does not always favour the same server.
            for kind in ("orpo-serve", "vllm") if round_ % 2 == 0 else ("vllm", "orpo-serve"):
                try:
                    runs[kind].append(bench_server(kind, model_dir, name, args, Path(tmp)))
                except RuntimeError as exc:
                    log = (Path(tmp) / f"{kind}.log").read_text(errors="replace")[-3000:]
                    print(f"serve_vs_vllm: {exc}\n{log}", file=sys.stderr)
                    return 1
    report["servers"] = {kind: median_of_rounds(kind_runs) for kind, kind_runs in runs.items()}
    report["ratio_output_tok_s_per_round"] = round_ratios(report)
    report["ratio_output_tok_s"] = {
        str(o["concurrency"]): round(o["output_tok_s"] / v["output_tok_s"], 3)
        for o, v in zip(report["servers"]["orpo-serve"]["levels"], report["servers"]["vllm"]["levels"], strict=True)
    }
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.with_suffix(".json").write_text(json.dumps(report, indent=2) + "\n")
    args.output.with_suffix(".md").write_text(markdown(report))
    print(markdown(report))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
