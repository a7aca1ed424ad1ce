"""The ``orpo-compare`` flow: train ORPO, SFT and SFT -> DPO one stage per process, evaluate, write the report.

Each child's output goes to ``WORK/logs/NAME.log``; the parent times each process from start to exit. Runs and
merged models stay in the work folder; the report folder (report.md, report.json, PNGs, the eval results, the
loss logs, a manifest) is written atomically at the end.
"""

from __future__ import annotations

import json
import logging
import os
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from orpo_deploy.compare.config import CompareConfig
from orpo_deploy.compare.report import build_report, to_markdown
from orpo_deploy.compare.stage import MERGE_DTYPE
from orpo_deploy.core.errors import RunFailed
from orpo_deploy.core.manifest import atomic_output_dir, library_versions, make_manifest, write_manifest

logger = logging.getLogger(__name__)

WORK_MARKER = ".orpo-compare-work"
EVALUATED = ("base", "sft", "sft_dpo", "orpo")


class CompareError(RunFailed):
    """A stage that failed or a folder that cannot be used; the message names the log to read."""


def run_compare(cfg: CompareConfig) -> Path:
    """Run every stage and evaluation; returns the report folder."""
    started = time.perf_counter()
    work = prepare_work_dir(cfg.work_path)
    from orpo_deploy.core.models import resolve_model

    base_dir = resolve_model(cfg.model)
    stages: dict[str, dict[str, Any]] = {}
    stages["orpo"] = train_stage(cfg, work, "orpo", None)
    stages["sft"] = train_stage(cfg, work, "sft", None)
    stages["dpo"] = train_stage(cfg, work, "dpo", stages["sft"]["merged_dir"])
    # orpo-train merges into the base's dtype (bf16 for SmolLM2); SFT and DPO merge in fp32. An fp32 merge of
    # ORPO's adapter, outside its timed stage, lets every arm be evaluated without bf16 rounding of its update.
    orpo_eval_dir = work / "orpo" / f"merged-{MERGE_DTYPE}"
    merge_cmd = [
        "-m",
        "orpo_deploy.train.merge",
        stages["orpo"]["adapter_dir"],
        str(orpo_eval_dir),
        "--dtype",
        MERGE_DTYPE,
    ]
    run_child(merge_cmd, work / "logs" / "orpo-merge-fp32.log")
    models = {
        "base": str(base_dir),
        "sft": stages["sft"]["merged_dir"],
        "sft_dpo": stages["dpo"]["merged_dir"],
        "orpo": str(orpo_eval_dir),
    }
    evals = {name: evaluate(cfg, work, name, models[name]) for name in EVALUATED}
    report = build_report(
        config=cfg.to_dict(),
        stages=stages,
        evals=evals,
        curves={name: read_curve(Path(s["metrics_path"])) for name, s in stages.items()},
        machine=machine_info(),
    )
    report["models"] = models
    report["total_wall_s"] = round(time.perf_counter() - started, 1)
    write_report(cfg, work, report)
    logger.info("report written to %s in %.0f s", cfg.output, report["total_wall_s"])
    return Path(cfg.output)


def prepare_work_dir(work: Path) -> Path:
    """A fresh work folder; an existing one is wiped only if an earlier orpo-compare made it."""
    if work.exists():
        if not (work / WORK_MARKER).is_file():
            raise CompareError(f"work_dir {work} exists and was not made by orpo-compare; remove it or pick another")
        shutil.rmtree(work)
    (work / "logs").mkdir(parents=True)
    (work / WORK_MARKER).write_text("scratch folder of orpo-compare: wiped at the start of each run\n")
    return work


def train_stage(cfg: CompareConfig, work: Path, stage: str, model: str | None) -> dict[str, Any]:
    """Run one training stage in a child process; its figures plus the process wall time."""
    stage_dir = work / stage
    stage_dir.mkdir()
    spec = {
        "stage": stage,
        "train": cfg.arm_config(stage, stage_dir, model=model).to_dict(),
        "dpo_beta": cfg.dpo_beta,
        "result": str(stage_dir / "stage_result.json"),
    }
    spec_path = stage_dir / "stage_spec.json"
    spec_path.write_text(json.dumps(spec, indent=2) + "\n")
    process_s = run_child(["-m", "orpo_deploy.compare.stage", str(spec_path)], work / "logs" / f"{stage}.log")
    result = json.loads(Path(spec["result"]).read_text())
    result["process_s"] = round(process_s, 2)
    logger.info(
        "%s: %.0f s (loop %.0f s), peak RSS %.0f MiB, %.0f tokens/s",
        stage,
        process_s,
        result["train_loop_s"],
        result["peak_rss_mib"],
        result["tokens_per_second"],
    )
    return result


def evaluate(cfg: CompareConfig, work: Path, name: str, model_dir: str) -> dict[str, Any]:
    """orpo-eval on one model in a child process (vLLM's engine wants its own process anyway)."""
    out = work / "eval" / name
    cmd = ["-m", "orpo_deploy.evaluation.cli", "--model", model_dir, "--output", str(out)]
    cmd += ["--max-new-tokens", str(cfg.eval_max_new_tokens), "--batch-size", str(cfg.eval_batch_size)]
    cmd += ["--engine", cfg.eval_engine] + (["--limit", str(cfg.eval_limit)] if cfg.eval_limit else [])
    process_s = run_child(cmd, work / "logs" / f"eval-{name}.log")
    result = json.loads((out / "results.json").read_text())
    logger.info("eval %s: %.0f s", name, process_s)
    return {
        "process_s": round(process_s, 2),
        "preference": result["preference"],
        "instruction_following": {
            k: v for k, v in result["instruction_following"].items() if k not in ("per_kind_strict", "per_kind_ci")
        },
        "constant_baseline": result.get("constant_baseline"),
        "results_dir": str(out),
    }


def run_child(args: list[str], log_path: Path) -> float:
    """``python ARGS``, output to ``log_path``; returns its wall time."""
    env = dict(os.environ)
    env.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")
    env.setdefault("TOKENIZERS_PARALLELISM", "false")
    started = time.perf_counter()
    with log_path.open("w") as log:
        code = subprocess.call([sys.executable, *args], stdout=log, stderr=subprocess.STDOUT, env=env)
    elapsed = time.perf_counter() - started
    if code != 0:
        lines = [line for line in log_path.read_text(errors="replace").splitlines() if line.strip()]
        last = lines[-1].strip() if lines else "(no output)"
        raise CompareError(f"{' '.join(args[:2])} failed (exit {code}): {last[:300]} [log: {log_path}]")
    return elapsed


def read_curve(metrics_path: Path) -> list[dict[str, Any]]:
    """The per-step training records of a metrics.jsonl, reduced to the keys the charts use."""
    from orpo_deploy.train.callbacks import read_metrics

    keys = ("loss", "nll_loss", "rewards/accuracies", "rewards/margins", "learning_rate", "tokens_per_second")
    return [{"step": r["step"], **{k: r[k] for k in keys if k in r}} for r in read_metrics(metrics_path) if "loss" in r]


def machine_info() -> dict[str, Any]:
    import torch

    cuda = torch.cuda.is_available()
    return {
        "device": torch.cuda.get_device_name(0) if cuda else "cpu",
        "memory_measure": "CUDA max allocated" if cuda else "peak RSS (ru_maxrss)",
        "cpu_count": os.cpu_count(),
        "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
        "load_average_at_end": [round(x, 2) for x in os.getloadavg()],
        "platform": platform.platform(),
        "python": platform.python_version(),
    }


def write_report(cfg: CompareConfig, work: Path, report: dict[str, Any]) -> None:
    from orpo_deploy.compare.plots import plot_all

    with atomic_output_dir(Path(cfg.output), overwrite=True) as tmp:
        for name in EVALUATED:
            shutil.copytree(report["eval"][name]["results_dir"], tmp / "eval" / name)
            report["eval"][name]["results_dir"] = f"eval/{name}"
        (tmp / "metrics").mkdir()
        for stage, figures in report["stages"].items():
            shutil.copy(figures["metrics_path"], tmp / "metrics" / f"{stage}.jsonl")
        charts = plot_all(report, tmp)
        report["charts"] = [p.name for p in charts]
        (tmp / "report.json").write_text(json.dumps(report, indent=2) + "\n")
        (tmp / "report.md").write_text(to_markdown(report))
        write_manifest(
            tmp,
            make_manifest(
                "compare",
                config=cfg.to_dict(),
                work_dir=str(work.resolve()),
                models=report["models"],
                versions=library_versions("torch", "transformers", "trl", "peft"),
            ),
        )
