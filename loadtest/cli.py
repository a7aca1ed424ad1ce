"""``orpo-loadtest``: a headless Locust run against an OpenAI-compatible server, gated by SLOs.

    orpo-loadtest --host http://127.0.0.1:8000 --users 8 --spawn-rate 8 --run-time 60s \\
        --slo ttft_p95_ms=500 --slo min_output_tokens_per_s=200 --output runs/loadtest/smoke

Writes Locust's CSVs and HTML report, ``summary.json`` and ``loadtest.png`` to --output. Exit codes: 0 all SLOs
met; 1 an SLO failed, Locust failed, the server could not be reached, or /metrics disagreed (--check-metrics);
2 bad arguments. ``--from-results DIR`` re-grades an earlier run's CSVs without sending any load.
Locust runs in its own process: it monkey-patches the standard library with gevent on import.
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import logging
import os
import re
import subprocess
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import urlsplit

import httpx

from orpo_deploy.core.cli import ArgumentParser, UsageError
from orpo_deploy.loadtest import metrics_check
from orpo_deploy.loadtest.profiles import PROFILES
from orpo_deploy.loadtest.slo import SLO_KEYS, SLOError, evaluate, parse_slos
from orpo_deploy.loadtest.summary import CSV_PREFIX, Summary, SummaryError, stats_paths, summarize, write_summary

logger = logging.getLogger(__name__)

LOCUSTFILE = Path(__file__).with_name("locustfile.py")
_DURATION = re.compile(r"^(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s?)?$")


def build_parser() -> argparse.ArgumentParser:
    slo_help = "; ".join(f"{k}: {h}" for k, (_, _, h) in SLO_KEYS.items())
    p = ArgumentParser(prog="orpo-loadtest", description=__doc__.split("\n\n")[0])
    p.add_argument("--host", help="server base URL, e.g. http://127.0.0.1:8000 (loopback unless --allow-remote)")
    p.add_argument("--users", type=int, default=4, help="peak concurrent users (default 4)")
    p.add_argument("--spawn-rate", type=float, default=None, help="users started per second (default: --users)")
    p.add_argument("--run-time", default="60s", help="run time: 90, 90s, 2m, 1h30m (default 60s)")
    p.add_argument("--shape", choices=sorted(PROFILES), default="hold", help="load shape (default hold)")
    p.add_argument("--slo", action="append", default=[], metavar="KEY=VALUE", help=f"repeatable. {slo_help}")
    p.add_argument(
        "--request-rate", type=float, default=None,
        help="open loop: requests per second drawn as a Poisson process (instead of --users' closed loop)",
    )  # fmt: skip
    p.add_argument("--burstiness", type=float, default=1.0, help="gamma shape of the gaps: 1 Poisson, <1 burstier")
    p.add_argument("--max-requests", type=int, default=0, help="open loop: stop after N requests (0: --run-time)")
    p.add_argument("--seed", type=int, default=0, help="seed of the arrival times")
    p.add_argument(
        "--sweep", default=None, metavar="R1,R2,...",
        help="capacity at SLO: open-loop runs at these rates, upwards, until one misses an SLO; the largest that met "
        "them all is the capacity (sweep.json, sweep.md, capacity.png)",
    )  # fmt: skip
    p.add_argument(
        "--request-slo", action="append", default=[], metavar="KEY=MS",
        help="a per-request bound defining goodput: ttft_ms, tpot_ms, e2e_ms (repeatable)",
    )  # fmt: skip
    p.add_argument("--api-key", default=os.environ.get("ORPO_LOADTEST_API_KEY", ""), help="Bearer key")
    p.add_argument("--model", default="", help="model id (default: the first of GET /v1/models)")
    p.add_argument("--max-tokens", type=int, default=64, help="max_tokens per request (default 64)")
    p.add_argument("--ignore-eos", action="store_true", help="ask for exactly max_tokens tokens (vLLM extension)")
    p.add_argument(
        "--prompts", type=Path, default=None,
        help="workload JSONL: `prompt`/`messages` or ShareGPT `conversations` rows, optional `max_tokens` (our test "
        "split by default)",
    )  # fmt: skip
    p.add_argument("--stop-timeout", type=float, default=60.0, help="at the end, seconds in-flight requests may run")
    p.add_argument(
        "--output-dir",
        "--output",
        dest="output",
        type=Path,
        default=None,
        help="results folder (default runs/loadtest/<UTC time>)",
    )
    p.add_argument("--check-metrics", action="store_true", help="check orpo-serve's /metrics counters against Locust")
    p.add_argument("--allow-remote", action="store_true", help="allow a non-loopback --host")
    p.add_argument("--from-results", type=Path, default=None, metavar="DIR", help="grade an earlier run's CSVs")
    return p


def parse_duration(text: str) -> int:
    match = _DURATION.match(text.strip())
    if not text.strip() or not match or not any(match.groups()):
        raise UsageError(f"--run-time {text!r}: use seconds or a form like 90s, 2m, 1h30m")
    h, m, s = (int(g or 0) for g in match.groups())
    seconds = 3600 * h + 60 * m + s
    if seconds <= 0:
        raise UsageError("--run-time must be positive")
    return seconds


def check_host(url: str, allow_remote: bool) -> str:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise UsageError(f"--host {url!r}: expected a URL like http://127.0.0.1:8000")
    if not allow_remote and not _is_loopback(parts.hostname):
        raise UsageError(f"--host {parts.hostname} is not loopback; load tests stay on 127.0.0.1 unless --allow-remote")
    return url.rstrip("/")


def _is_loopback(hostname: str) -> bool:
    if hostname == "localhost":
        return True
    try:
        return ipaddress.ip_address(hostname).is_loopback
    except ValueError:
        return False


def validate(args: argparse.Namespace) -> dict[str, float]:
    """Check the arguments; return the SLOs. Raises UsageError / SLOError with one line for the user."""
    slos = parse_slos(args.slo)
    if args.from_results is not None:
        return slos
    if not args.host:
        raise UsageError("--host is required (or --from-results DIR)")
    args.host = check_host(args.host, args.allow_remote)
    args.run_time_s = parse_duration(args.run_time)
    if args.users < 1:
        raise UsageError("--users must be >= 1")
    args.spawn_rate = float(args.users) if args.spawn_rate is None else args.spawn_rate
    if args.spawn_rate <= 0:
        raise UsageError("--spawn-rate must be > 0")
    if args.max_tokens < 1:
        raise UsageError("--max-tokens must be >= 1")
    if args.stop_timeout < 0:
        raise UsageError("--stop-timeout must be >= 0")
    if args.prompts is not None:
        from orpo_deploy.loadtest.workload import WorkloadError, load

        if not args.prompts.is_file():
            raise UsageError(f"--prompts {args.prompts}: no such file")
        try:
            load(args.prompts)  # a bad row fails here in one line, not inside Locust
        except WorkloadError as exc:
            raise UsageError(str(exc)) from None
    if args.request_rate is not None and not args.request_rate > 0:
        raise UsageError("--request-rate must be > 0")
    if args.sweep is not None:
        try:
            args.sweep_rates = sorted(float(r) for r in args.sweep.split(","))
        except ValueError:
            raise UsageError(f"--sweep {args.sweep!r}: a comma-separated list of rates, e.g. 1,2,4,8") from None
        if not args.sweep_rates or args.sweep_rates[0] <= 0:
            raise UsageError("--sweep rates must be > 0")
    if not args.burstiness > 0 or args.max_requests < 0:
        raise UsageError("--burstiness must be > 0 and --max-requests >= 0")
    return slos


def parse_request_slos(items: list[str]) -> dict[str, float]:
    from orpo_deploy.loadtest.goodput import REQUEST_SLO_KEYS

    slos = {}
    for item in items:
        key, sep, raw = item.partition("=")
        if key.strip() not in REQUEST_SLO_KEYS or not sep:
            raise UsageError(f"--request-slo {item!r}: use KEY=MS with KEY one of {', '.join(REQUEST_SLO_KEYS)}")
        try:
            slos[key.strip()] = float(raw)
        except ValueError:
            raise UsageError(f"--request-slo {item!r}: {raw!r} is not a number") from None
    return slos


def discover_model(host: str, api_key: str) -> str:
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    response = httpx.get(f"{host}/v1/models", headers=headers, timeout=30)
    response.raise_for_status()
    return response.json()["data"][0]["id"]


def locust_command(args: argparse.Namespace, out: Path) -> list[str]:
    open_loop = args.request_rate is not None
    users, spawn = ("1", "1") if open_loop else (str(args.users), str(args.spawn_rate))
    arrivals = []
    if open_loop:
        arrivals = ["--request-rate", f"{args.request_rate:g}", "--burstiness", f"{args.burstiness:g}"]
        arrivals += ["--max-requests", str(args.max_requests), "--arrival-seed", str(args.seed)]
    return [
        sys.executable, "-m", "locust", "-f", str(LOCUSTFILE), "--headless", "--host", args.host, *arrivals,
        "--users", users, "--spawn-rate", spawn, "--run-time", f"{args.run_time_s}s",
        "--stop-timeout", f"{args.stop_timeout:g}", "--csv", str(out / CSV_PREFIX), "--csv-full-history",
        "--html", str(out / "report.html"), "--only-summary", "--exit-code-on-error", "0",
        "--logfile", str(out / "locust.log"), "--loglevel", "INFO",
        "--model", args.model, "--max-tokens", str(args.max_tokens),
        *(["--ignore-eos"] if args.ignore_eos else []),
        *(["--prompts", str(args.prompts)] if args.prompts else []),
        "OpenLoopUser" if open_loop else "ChatUser",
    ]  # fmt: skip


def run_locust(args: argparse.Namespace, out: Path) -> int:
    env = {**os.environ, "LOADTEST_SHAPE": args.shape, "LOADTEST_API_KEY": args.api_key}  # key kept out of argv
    budget = args.run_time_s + args.stop_timeout + 120  # start-up, stop and CSV writing
    with open(out / "locust.stdout", "wb") as log:
        proc = subprocess.Popen(locust_command(args, out), stdout=log, stderr=subprocess.STDOUT, env=env)
        try:
            return proc.wait(timeout=budget)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            logger.error("Locust ran past %.0f s and was killed", budget)
            return -9


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)
    try:
        args = build_parser().parse_args(argv)
        slos = validate(args)
        request_slos = parse_request_slos(args.request_slo)
    except SystemExit as exc:  # --help
        return int(exc.code or 0)
    except (UsageError, SLOError) as exc:
        print(f"orpo-loadtest: error: {exc}", file=sys.stderr)
        return 2

    if args.from_results is not None:
        return grade(args.from_results, slos, {"from_results": str(args.from_results)}, request_slos=request_slos)

    out = args.output or Path("runs") / "loadtest" / datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    out.mkdir(parents=True, exist_ok=True)
    try:
        args.model = args.model or discover_model(args.host, args.api_key)
        before = metrics_check.scrape(args.host, args.api_key) if args.check_metrics else None
    except (httpx.HTTPError, KeyError, IndexError, ValueError, metrics_check.MetricsError) as exc:
        print(f"orpo-loadtest: error: cannot use {args.host}: {exc}", file=sys.stderr)
        return 1

    if args.sweep:
        return run_sweep(args, out, slos, request_slos)
    return run_once(args, out, slos, request_slos, before)


def run_once(args, out: Path, slos: dict, request_slos: dict, before=None) -> int:
    """One Locust run into ``out``, graded; the exit code."""
    logger.info(
        "%s users, %s shape, %ss, model %s at %s", args.users, args.shape, args.run_time_s, args.model, args.host
    )
    started = time.monotonic()
    code = run_locust(args, out)
    wall_s = time.monotonic() - started
    if code != 0 or not stats_paths(out)["stats"].is_file():
        detail = f"see {out / 'locust.stdout'} and locust.log"
        print(f"orpo-loadtest: error: Locust exited with {code}; {detail}", file=sys.stderr)
        return 1
    run_info = {
        "host": args.host, "model": args.model, "shape": args.shape, "users": args.users,
        "request_rate": args.request_rate, "burstiness": args.burstiness, "max_requests": args.max_requests,
        "request_slos": request_slos,
        "spawn_rate": args.spawn_rate, "run_time_s": args.run_time_s, "max_tokens": args.max_tokens,
        "ignore_eos": args.ignore_eos, "locust_wall_s": round(wall_s, 1),
    }  # fmt: skip
    check_counters = None
    if before is not None:

        def check_counters(summary: Summary) -> list[metrics_check.CounterCheck]:
            return metrics_check.check_after_run(
                args.host, before, summary.requests, summary.failures, summary.output_tokens, args.api_key
            )

    return grade(out, slos, run_info, check_counters, request_slos)


def run_sweep(args, out: Path, slos: dict, request_slos: dict) -> int:
    """Capacity at SLO: the rates in order, each an open-loop run of its own; stop at the first that misses an
    SLO (goodput below target, errors such as 429s, latency past its bound). Exit 0 when the lowest rate met them."""
    from orpo_deploy.loadtest.capacity import write_sweep

    steps = []
    for rate in args.sweep_rates:
        args.request_rate = rate
        step_out = out / f"rate-{rate:g}"
        step_out.mkdir(parents=True, exist_ok=True)
        code = run_once(args, step_out, slos, request_slos)
        report = json.loads((step_out / "summary.json").read_text()) if (step_out / "summary.json").is_file() else {}
        steps.append({"rate": rate, "exit_code": code, "passed": code == 0, "report": report})
        if code != 0:
            break
    capacity = write_sweep(out, steps, slos, request_slos)
    print(f"capacity at SLO: {capacity if capacity is not None else 'none (the lowest rate missed)'} req/s; {out}")
    return 0 if capacity is not None else 1


def grade(
    out: Path,
    slos: dict[str, float],
    run_info: dict,
    check_counters: Callable[[Summary], list[metrics_check.CounterCheck]] | None = None,
    request_slos: dict[str, float] | None = None,
) -> int:
    """Summarise the CSVs in ``out``, check SLOs (and counters), write summary.json and the plot; exit code."""
    from orpo_deploy.loadtest.goodput import goodput, read_records

    try:
        summary = summarize(out)
    except SummaryError as exc:
        print(f"orpo-loadtest: error: {exc}", file=sys.stderr)
        return 1
    records = read_records(out)
    if records:  # goodput over the per-request records (no --request-slo: every successful request is good)
        summary.goodput = goodput(records, request_slos or {}, summary.duration_s)
    results = evaluate(summary, slos)
    checks = []
    if check_counters is not None:
        try:
            checks = check_counters(summary)
        except metrics_check.MetricsError as exc:
            checks = [metrics_check.CounterCheck("metrics", None, 0, False, str(exc))]
    passed = all(r.ok for r in results) and all(c.ok for c in checks)
    report = {
        "run": run_info,
        "summary": summary.to_dict(),
        "slos": [r.__dict__ for r in results],
        "metrics_check": [c.__dict__ for c in checks],
        "passed": passed,
    }
    write_summary(out / "summary.json", report)
    history = stats_paths(out)["history"]
    if history.is_file():
        from orpo_deploy.loadtest.plots import plot_history

        plot_history(history, out / "loadtest.png", title=f"{run_info.get('model', '')} {run_info.get('shape', '')}")
    print(_table(summary, results, checks, out))
    if not passed:
        failed = [r.describe() for r in results if not r.ok] + [c.describe() for c in checks if not c.ok]
        print("orpo-loadtest: FAILED: " + "; ".join(failed), file=sys.stderr)
        return 1
    return 0


def _table(summary, results, checks, out: Path) -> str:
    def ms(p) -> str:
        return f"p50 {p.p50 if p.p50 is not None else '-'} / p95 {p.p95 if p.p95 is not None else '-'} ms"

    lines = [
        f"requests {summary.requests} ({summary.failures} failed), {summary.requests_per_s} req/s, "
        f"{summary.output_tokens_per_s} output tok/s over {summary.duration_s} s",
        f"TTFT {ms(summary.ttft_ms)}; ITL {ms(summary.itl_ms)}; e2e {ms(summary.e2e_ms)}",
        *(
            [
                f"goodput {g['good']} of {g['requests']} requests ({g['ratio']:.3f}), {g['goodput_rps']} req/s; "
                f"sent at {g['sent_rate_rps']} req/s (inter-arrival CV {g['interarrival_cv']})"
            ]
            if (g := summary.goodput) and g["requests"]
            else []
        ),  # fmt: skip
        *(f"  SLO {r.describe()}" for r in results),
        *(f"  /metrics {c.describe()}" for c in checks),
        f"results: {out}",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
