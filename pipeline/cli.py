"""``orpo-pipeline``: the main job in one command, from preference data to a served, load-tested model.

    orpo-pipeline                       # configs/pipeline_smollm2_cpu.yaml (or _gpu.yaml where CUDA is there)
    orpo-pipeline --quick               # the config's `quick:` budget, in its own run folder
    orpo-pipeline --config FILE [--set train.max_steps=20 --set eval.limit=16] [--rerun export] [--verbose]

Stages, each in its own process, outputs under RUNS_DIR/NAME/: [pairs (with pairs.source: onpolicy) ->]
train (ORPO + LoRA, merge) -> eval-base ->
eval-orpo -> ifeval-base -> ifeval-orpo -> export (GPTQ + quality gate) -> serve (orpo-serve on a free port) ->
eval-served -> ifeval-served (the served model through its API) -> loadtest (Locust, SLOs) ->
stop the server -> report (report.md, report.json, PNG charts). A stage whose output is up to date is skipped
(pipeline/runner.py says what "up to date" means). Exit status: 0 done; 1 a stage failed (one line names it and
its log; finished stages stay usable) or the load test missed an SLO (the report is still written); 2 bad input.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, NoReturn

import yaml

from orpo_deploy.core.errors import EXIT_FAILED, EXIT_USAGE
from orpo_deploy.core.io import write_json
from orpo_deploy.pipeline.config import CPU_CONFIG, GPU_CONFIG, ConfigError, PipelineConfig, load_config, parse_set
from orpo_deploy.pipeline.runner import StageFailed, StagePlan, StageRunner, claim_run_dir
from orpo_deploy.pipeline.serving import ServeFailed, Server, start_server
from orpo_deploy.pipeline.stages import (
    EVAL_BASE,
    EVAL_ORPO,
    EVAL_SERVED,
    IFEVAL_BASE,
    IFEVAL_ORPO,
    IFEVAL_SERVED,
    LOADTEST,
    PAIRS,
    SERVE,
    SERVED_EVALS,
    Endpoint,
    choose_served_model,
    merged_dir,
    plan_dev,
    plan_eval,
    plan_export,
    plan_ifeval,
    plan_loadtest,
    plan_pairs,
    plan_report,
    plan_serve,
    plan_train,
    serve_args,
    stage_env,
    stages,
)

logger = logging.getLogger(__name__)
# What the stages import; a fresh clone without them gets one line saying how to set up.
REQUIRED_MODULES = {"trl": "train", "peft": "train", "gptqmodel": "export", "vllm": "cpu/gpu", "locust": "loadtest"}


class _ArgumentParser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:  # one line, no usage dump
        raise ConfigError(message)


def build_parser() -> argparse.ArgumentParser:
    p = _ArgumentParser(prog="orpo-pipeline", description=__doc__.split("\n\n")[0], allow_abbrev=False)
    p.add_argument("--config", help=f"pipeline YAML (default: {CPU_CONFIG.name}, or {GPU_CONFIG.name} with CUDA)")
    p.add_argument("--quick", action="store_true", help="apply the config's `quick:` budget (a first look)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a key, e.g. eval.limit=8")
    p.add_argument("--rerun", action="append", default=[], metavar="STAGE", help="run this stage even if up to date")
    p.add_argument("--verbose", action="store_true", help="also print every stage's output (always in its log)")
    p.add_argument("--print-config", action="store_true", help="print the resolved config as YAML and exit")
    return p


def probe(model: str | None) -> dict[str, Any]:
    """Host facts (CUDA, 4-bit serving) and the base model folder, from a subprocess (no torch here)."""
    argv = [sys.executable, "-m", "orpo_deploy.pipeline.probe", *(["--model", model] if model else [])]
    done = subprocess.run(argv, capture_output=True, text=True, env={**os.environ, **stage_env()})
    if done.returncode != 0:
        lines = [ln for ln in done.stderr.splitlines() if ln.strip()] or ["no output"]
        raise ConfigError(f"probing the host/model failed: {lines[-1]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def check_environment() -> None:
    missing = [f"{m} ({extra})" for m, extra in REQUIRED_MODULES.items() if importlib.util.find_spec(m) is None]
    if missing:
        raise ConfigError(f"missing packages: {', '.join(missing)}; run `make env` (or `make demo`) first")


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        args = build_parser().parse_args(argv)
        config_path = args.config
        if config_path is None:
            config_path = GPU_CONFIG if probe(None)["cuda"] else CPU_CONFIG
        cfg = load_config(config_path, quick=args.quick, overrides=parse_set(args.set))
        if args.print_config:
            print(f"# {config_path}" + (" (quick)" if args.quick else ""))
            print(yaml.safe_dump(cfg.to_dict(), sort_keys=False), end="")
            return 0
        check_environment()
        unknown = sorted(set(args.rerun) - set(stages(cfg)))
        if unknown:
            raise ConfigError(f"--rerun {unknown[0]}: not a stage of this run ({', '.join(stages(cfg))})")
        facts = probe(cfg.model)
    except ConfigError as exc:
        print(f"orpo-pipeline: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    return run_pipeline(cfg, facts, config_path, set(args.rerun), args.verbose)


def run_pipeline(cfg: PipelineConfig, facts: dict[str, Any], config_path: Any, rerun: set[str], echo: bool) -> int:
    run_dir = cfg.run_dir
    try:
        claim_run_dir(run_dir)
    except StageFailed as exc:
        print(f"orpo-pipeline: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    # SIGTERM (a supervisor, a CI timeout) takes the Ctrl-C path: the running stage and the server are stopped.
    signal.signal(signal.SIGTERM, _terminated)
    (run_dir / "pipeline_config.yaml").write_text(yaml.safe_dump(cfg.to_dict(), sort_keys=False))
    print(f"orpo-pipeline: {config_path} -> {run_dir}/ (base model {facts['model_dir']})", flush=True)
    runner = StageRunner(run_dir / "state", run_dir / "logs", total=len(stages(cfg)), echo=echo)
    base_dir = Path(facts["model_dir"])
    started = time.perf_counter()
    server: Server | None = None

    def run(plan: StagePlan, force: str | None = None):
        return runner.run(plan, force=force or ("--rerun" if plan.name in rerun else None))

    try:
        rounds = cfg.pairs.rounds if PAIRS in stages(cfg) else 1
        for r in range(1, rounds + 1):  # on-policy: pairs from the current model -> ORPO -> dev; else one train
            if PAIRS in stages(cfg):
                run(plan_pairs(cfg, base_dir, r))
            run(plan_train(cfg, base_dir, r))
            if rounds > 1:
                run(plan_dev(cfg, r))
        run(plan_eval(cfg, EVAL_BASE, base_dir))
        run(plan_eval(cfg, EVAL_ORPO, merged_dir(cfg)))
        run(plan_ifeval(cfg, IFEVAL_BASE, base_dir))
        run(plan_ifeval(cfg, IFEVAL_ORPO, merged_dir(cfg)))
        run(plan_export(cfg))

        which, model_dir, reason = choose_served_model(cfg, facts["serves_4bit"], facts["serves_4bit_why"])
        serve_plan = plan_serve(cfg, which, model_dir, reason)

        def after_serve(url: str | None, api_key: str | None) -> list[StagePlan]:
            """What needs the live server: the served model's evaluations, then the load test."""
            endpoint = Endpoint(url, api_key, model_dir, serve_args(cfg))
            evals = [plan_eval(cfg, EVAL_SERVED, endpoint), plan_ifeval(cfg, IFEVAL_SERVED, endpoint)]
            return [*(evals if cfg.serve.evaluate else []), plan_loadtest(cfg, url, api_key)]

        # The server is only worth starting when a stage that needs it has to run (or the serve record is stale).
        need = "--rerun" if {SERVE, *SERVED_EVALS, LOADTEST} & rerun else None
        need = need or runner.stale_reason(serve_plan)
        for plan in after_serve(None, None):
            if need is None and (stale := runner.stale_reason(plan)):
                need = f"{plan.name} needs it: {stale}"
        if need is None:
            run(serve_plan)
            for plan in after_serve(None, None):
                run(plan)
        else:
            holder: list[Server] = []
            serve_plan.execute = lambda log: holder.append(serve(cfg, serve_plan, which, model_dir, reason, log))
            run(serve_plan, force=need)
            server = holder[0]
            try:
                for plan in after_serve(server.url, server.api_key):
                    run(plan)
            finally:
                record = server.stop(cfg.serve.grace_seconds)
                write_json(serve_plan.output / "stop.json", record)
                print(f"      stop       server drained and stopped in {record['stop_s']:.1f} s", flush=True)
        write_json(run_dir / "state" / "run.json", run_record(runner, started))
        run(plan_report(cfg))
    except StageFailed as exc:
        print(f"orpo-pipeline: error: {exc}", file=sys.stderr)
        return EXIT_FAILED
    except KeyboardInterrupt:
        print("orpo-pipeline: interrupted; run the same command again to continue", file=sys.stderr)
        return 130
    finally:
        if server is not None:
            server.stop(cfg.serve.grace_seconds)
    total = time.perf_counter() - started
    print(f"orpo-pipeline: done in {total:.0f} s; report: {run_dir / 'report' / 'report.md'}")
    if cfg.loadtest.sweep:  # capacity at SLO: failed only when even the lowest rate missed
        sweep = json.loads((run_dir / LOADTEST / "sweep.json").read_text())
        if sweep.get("capacity_rps") is None:
            print("orpo-pipeline: error: the lowest load-test rate missed its SLOs; see the report", file=sys.stderr)
            return EXIT_FAILED
        return 0
    summary = json.loads((run_dir / LOADTEST / "summary.json").read_text())
    if not summary.get("passed", False):
        failed = [s["key"] for s in summary.get("slos", []) if not s.get("ok")]
        print(
            f"orpo-pipeline: error: the load test missed its SLOs ({', '.join(failed)}); see the report",
            file=sys.stderr,
        )
        return EXIT_FAILED
    return 0


def _terminated(signum, frame) -> NoReturn:
    raise KeyboardInterrupt


def serve(cfg: PipelineConfig, plan: StagePlan, which: str, model_dir: Path, reason: str, log: Path) -> Server:
    """Start orpo-serve and record what it serves and why (the serve stage's output)."""
    try:
        server = start_server(model_dir, serve_args(cfg), log, cfg.serve.start_timeout_s, stage_env())
    except ServeFailed as exc:
        raise StageFailed(f"stage serve failed: {exc}") from None
    write_json(
        plan.output / "serve.json",
        {
            "served": which,
            "model_dir": str(model_dir),
            "reason": reason,
            "url": server.url,
            "ready_s": server.ready_s,
            "warm_up_s": server.warm_up_s,
            "args": serve_args(cfg),
            "started_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        },
    )
    return server


def run_record(runner: StageRunner, started: float) -> dict[str, Any]:
    """This run's stages (ran or skipped, time, why), for the report."""
    return {
        "stages": [
            {"name": r.name, "status": r.status, "wall_s": round(r.wall_s, 2), "reason": r.reason}
            for r in runner.results
        ],
        "elapsed_s": round(time.perf_counter() - started, 2),
    }


if __name__ == "__main__":
    sys.exit(main())
