"""The concrete stages: each a ``StagePlan`` (command, settings, input fingerprints) built from the config once
the stages before it have finished, so its key sees their fresh outputs.

Every command is ``sys.executable -m orpo_deploy.<stage>.cli ...``: each stage has its own process (its own memory,
its own failure). The package is imported by its namespaced name, so a user's own ``train.py`` or ``data/`` in the
working directory cannot stand in for ours; stages run in the caller's working directory, so relative paths in a
config mean what they mean on the command line.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from orpo_deploy.core.manifest import MANIFEST_NAME, sha256_json, weights_sha256
from orpo_deploy.data.splits import split_path
from orpo_deploy.pipeline.config import PipelineConfig
from orpo_deploy.pipeline.runner import StagePlan, fingerprint

PAIRS, TRAIN, EVAL_BASE, EVAL_ORPO, IFEVAL_BASE, IFEVAL_ORPO, EXPORT, SERVE = (
    "pairs",
    "train",
    "eval-base",
    "eval-orpo",
    "ifeval-base",
    "ifeval-orpo",
    "export",
    "serve",
)
EVAL_SERVED, IFEVAL_SERVED, LOADTEST, REPORT = "eval-served", "ifeval-served", "loadtest", "report"
STAGES = (
    PAIRS,
    TRAIN,
    EVAL_BASE,
    EVAL_ORPO,
    IFEVAL_BASE,
    IFEVAL_ORPO,
    EXPORT,
    SERVE,
    EVAL_SERVED,
    IFEVAL_SERVED,
    LOADTEST,
    REPORT,
)
SERVED_EVALS = (EVAL_SERVED, IFEVAL_SERVED)  # the served model through its API (with serve.evaluate)
# The file whose sha256 fingerprints each stage's output (the manifest the stage writes last).
MANIFESTS = {
    "dev": "results.json",  # per-round dev scores (DEV, below)
    PAIRS: MANIFEST_NAME,
    TRAIN: f"merged/{MANIFEST_NAME}",
    EVAL_BASE: "results.json",
    EVAL_ORPO: "results.json",
    IFEVAL_BASE: "results.json",
    IFEVAL_ORPO: "results.json",
    EVAL_SERVED: "results.json",
    IFEVAL_SERVED: "results.json",
    EXPORT: MANIFEST_NAME,
    SERVE: "serve.json",
    LOADTEST: "summary.json",
    REPORT: "report.json",
}


def stage_env() -> dict[str, str]:
    return {
        "TRL_EXPERIMENTAL_SILENCE": os.environ.get("TRL_EXPERIMENTAL_SILENCE", "1"),
        "TOKENIZERS_PARALLELISM": os.environ.get("TOKENIZERS_PARALLELISM", "false"),
        "PYTHONUNBUFFERED": "1",  # the logs stream as the stage runs
    }


def output_dir(cfg: PipelineConfig, stage: str) -> Path:
    return (cfg.run_dir / stage).resolve()


def output_fingerprint(cfg: PipelineConfig, stage: str) -> str:
    return fingerprint(output_dir(cfg, stage) / manifest_of(stage, cfg))


def model_fingerprint(model_dir: Path) -> str:
    """The model folder's manifest sha256; a folder made by another tool has none, so its weights' sha256."""
    manifest = model_dir / MANIFEST_NAME
    if manifest.is_file():
        return fingerprint(manifest)
    if not model_dir.is_dir():
        return f"missing:{model_dir}"  # an earlier round's model not built yet: the key is computed again later
    return sha256_json(weights_sha256(model_dir))


def data_fingerprint(spec: str | None, default_split: str) -> str:
    """sha256 of a dataset file (or of a folder's files), or of our committed split when ``spec`` is empty."""
    path = split_path(default_split) if spec is None else Path(spec).expanduser()
    if path.is_file():
        return fingerprint(path)
    if path.is_dir():
        files = {str(p.relative_to(path)): fingerprint(p) for p in sorted(path.rglob("*")) if p.is_file()}
        return sha256_json(files)
    return f"spec:{spec}"  # a hub id: its name is all we can key on offline


DEV = "dev"  # per-round dev scores (only with pairs.rounds > 1)


def round_stage(stage: str, r: int) -> str:
    """The name of ``stage`` (pairs, train, dev) in round ``r``: round 1 keeps the plain name."""
    return stage if r == 1 else f"{stage}-{r}"


def stages(cfg: PipelineConfig) -> tuple[str, ...]:
    """The stages this config runs, in order: pairs/train (and a dev score) per on-policy round, then the rest."""
    rest = tuple(s for s in STAGES[2:] if cfg.serve.evaluate or s not in SERVED_EVALS)
    if cfg.pairs.source != "onpolicy":
        return (TRAIN, *rest)
    rounds: list[str] = []
    for r in range(1, cfg.pairs.rounds + 1):
        rounds += [round_stage(PAIRS, r), round_stage(TRAIN, r)]
        rounds += [round_stage(DEV, r)] if cfg.pairs.rounds > 1 else []
    return (*rounds, *rest)


def manifest_of(stage: str, cfg: PipelineConfig | None = None) -> str:
    """The file that fingerprints a stage's output (round stages share their stage's; a load test that sweeps rates
    writes sweep.json)."""
    if stage == LOADTEST and cfg is not None and cfg.loadtest.sweep:
        return "sweep.json"
    return MANIFESTS.get(stage) or MANIFESTS[stage.rsplit("-", 1)[0]]


def last_train(cfg: PipelineConfig) -> str:
    return round_stage(TRAIN, cfg.pairs.rounds if cfg.pairs.source == "onpolicy" else 1)


def plan_pairs(cfg: PipelineConfig, base_dir: Path, r: int = 1) -> StagePlan:
    """On-policy pairs on our train prompts from round r's starting model (``orpo-data generate``; resumable)."""
    p = cfg.pairs
    name = round_stage(PAIRS, r)
    model = base_dir if r == 1 else merged_dir(cfg, r - 1)
    settings = {k: v for k, v in vars(p).items() if k not in ("source", "rounds")}
    argv = ["generate", "--model", str(model), "--output", str(output_dir(cfg, name)), "--split", "train"]
    argv += ["--k", str(p.k), "--temperature", str(p.temperature), "--top-p", str(p.top_p)]
    argv += ["--max-new-tokens", str(p.max_new_tokens), "--seed", str(p.seed)]
    argv += ["--limit", str(p.limit)] if p.limit is not None else []
    inputs = {"model": model_fingerprint(model), "prompts": data_fingerprint(None, "train")}
    return command_plan(cfg, name, "orpo_deploy.data.cli", argv, settings, inputs)


def training_data(cfg: PipelineConfig, r: int | None = None) -> tuple[str | None, str]:
    """(dataset for orpo-train, its fingerprint): round r's pairs (the last round's by default), ``dataset``,
    or our train split."""
    if cfg.pairs.source == "onpolicy":
        name = round_stage(PAIRS, cfg.pairs.rounds if r is None else r)
        return str(output_dir(cfg, name) / "pairs.jsonl"), output_fingerprint(cfg, name)
    return cfg.dataset, data_fingerprint(cfg.dataset, "train")


def plan_train(cfg: PipelineConfig, base_dir: Path, r: int = 1) -> StagePlan:
    """ORPO on round r's pairs, starting from round r-1's merged model (the base model in round 1)."""
    name = round_stage(TRAIN, r)
    out = output_dir(cfg, name)
    model_dir = base_dir if r == 1 else merged_dir(cfg, r - 1)
    config_path = cfg.train_config_path()
    model = cfg.model if r == 1 else str(model_dir)
    overrides: dict[str, Any] = {**cfg.train.overrides, "output_dir": str(out), "model": model}
    if cfg.train.max_steps is not None:
        overrides["max_steps"] = cfg.train.max_steps
    dataset, dataset_key = training_data(cfg, r)
    if dataset is not None:
        overrides["dataset"] = dataset
    sets = [arg for k, v in overrides.items() for arg in ("--set", f"{k}={_yaml_scalar(v)}")]
    return StagePlan(
        name=name,
        output=out,
        manifest=MANIFESTS[TRAIN],
        settings={"config": yaml.safe_load(config_path.read_text()), "overrides": overrides},
        inputs={"base_model": model_fingerprint(model_dir), "dataset": dataset_key},
        command=[sys.executable, "-m", "orpo_deploy.train.cli", "--config", str(config_path), *sets],
        env=stage_env(),
        resume_args=["--resume"],
        check_weights=True,
    )


def merged_dir(cfg: PipelineConfig, r: int | None = None) -> Path:
    """Round r's merged model (the last round's by default: what is evaluated, exported and served)."""
    return output_dir(cfg, last_train(cfg) if r is None else round_stage(TRAIN, r)) / "merged"


def plan_dev(cfg: PipelineConfig, r: int) -> StagePlan:
    """Round r's model on the whole dev split: the figure a round is judged by (test stays report-only)."""
    e = cfg.eval
    name = round_stage(DEV, r)
    argv = ["--model", str(merged_dir(cfg, r)), "--output", str(output_dir(cfg, name)), "--dataset", "dev"]
    argv += ["--max-new-tokens", str(e.max_new_tokens), "--engine", e.engine, "--no-preference"]
    inputs = {"model": output_fingerprint(cfg, round_stage(TRAIN, r)), "eval_data": data_fingerprint(None, "dev")}
    return command_plan(cfg, name, "orpo_deploy.evaluation.cli", argv, {"max_new_tokens": e.max_new_tokens}, inputs)


@dataclass
class Endpoint:
    """The served model for the served-eval stages: where it listens (None while only checking staleness) and
    what identifies it across server restarts (its folder's manifest and the server's arguments, not its port)."""

    url: str | None
    api_key: str | None
    model_dir: Path
    args: list[str]


def model_source(cfg: PipelineConfig, model: Path | Endpoint) -> tuple[list[str], dict[str, Any], dict[str, str]]:
    """orpo-eval's model arguments, settings and input fingerprints: a folder (offline engine) or the server."""
    if isinstance(model, Endpoint):
        argv = ["--endpoint", model.url or "http://127.0.0.1:1", "--concurrency", str(cfg.serve.eval_concurrency)]
        inputs = {"model": model_fingerprint(model.model_dir), "server_args": sha256_json(model.args)}
        return argv, {"concurrency": cfg.serve.eval_concurrency}, inputs
    argv = ["--model", str(model), "--engine", cfg.eval.engine, "--batch-size", str(cfg.eval.batch_size)]
    return argv, {"engine": cfg.eval.engine, "batch_size": cfg.eval.batch_size}, {"model": model_fingerprint(model)}


def plan_eval(cfg: PipelineConfig, stage: str, model: Path | Endpoint) -> StagePlan:
    """Our held-out split (report-only) for a model folder or the served model."""
    e = cfg.eval
    source, how, inputs = model_source(cfg, model)
    settings = {"limit": e.limit, "max_new_tokens": e.max_new_tokens, "preference": e.preference, **how}
    argv = [*source, "--output", str(output_dir(cfg, stage)), "--max-new-tokens", str(e.max_new_tokens)]
    argv += ["--limit", str(e.limit)] if e.limit is not None else []
    argv += ["--dataset", cfg.eval_dataset] if cfg.eval_dataset is not None else []
    argv += [] if e.preference and not isinstance(model, Endpoint) else ["--no-preference"]
    inputs = {**inputs, "eval_data": data_fingerprint(cfg.eval_dataset, "test")}
    return command_plan(cfg, stage, "orpo_deploy.evaluation.cli", argv, settings, inputs, **_key_env(model))


def plan_ifeval(cfg: PipelineConfig, stage: str, model: Path | Endpoint) -> StagePlan:
    """Google's IFEval on a subset (report-only): the external figure beside our own split's."""
    f = cfg.ifeval
    source, how, inputs = model_source(cfg, model)
    settings = {"limit": f.limit, "max_new_tokens": f.max_new_tokens, **how}
    argv = [*source, "--benchmark", "ifeval", "--output", str(output_dir(cfg, stage))]
    argv += ["--max-new-tokens", str(f.max_new_tokens)]
    argv += ["--limit", str(f.limit)] if f.limit is not None else []
    return command_plan(cfg, stage, "orpo_deploy.evaluation.cli", argv, settings, inputs, **_key_env(model))


def _key_env(model: Path | Endpoint) -> dict[str, Any]:
    """The server's key reaches orpo-eval through its environment, never its command line (visible in ps)."""
    if isinstance(model, Endpoint):
        return {"env": {**stage_env(), "OPENAI_API_KEY": model.api_key or ""}}
    return {}


def plan_export(cfg: PipelineConfig) -> StagePlan:
    x = cfg.export
    settings = dict(vars(x))
    argv = ["--model", str(merged_dir(cfg)), "--output", str(output_dir(cfg, EXPORT))]
    argv += ["--method", x.method, "--min-retention", str(x.min_retention), "--eval-limit", str(x.eval_limit)]
    argv += ["--eval-max-new-tokens", str(x.eval_max_new_tokens), "--calibration-size", str(x.calibration_size)]
    argv += ["--calibration-max-tokens", str(x.calibration_max_tokens), "--quality-engine", x.quality_engine]
    argv += ["--group-size", str(x.group_size)] if x.group_size is not None else []
    # the gate is a choice: orpo-export measures it on our dev split, never on the report's test split
    calibration = training_data(cfg)[0]
    argv += ["--calibration-dataset", calibration] if calibration is not None else []
    inputs = {
        "model": output_fingerprint(cfg, last_train(cfg)),
        "eval_data": data_fingerprint(None, "dev"),
        "calibration_data": training_data(cfg)[1],
    }
    return command_plan(cfg, EXPORT, "orpo_deploy.export.cli", argv, settings, inputs, check_weights=True)


def choose_served_model(cfg: PipelineConfig, serves_4bit: bool, why: str) -> tuple[str, Path, str]:
    """(which, folder, reason): the quantised folder where the engine runs 4-bit weights, else the merged one."""
    choice = cfg.serve.serve
    if choice == "merged":
        return "merged", merged_dir(cfg), "serve.serve: merged (configured)"
    if choice == "quantized" or serves_4bit:
        reason = "serve.serve: quantized (configured)" if choice == "quantized" else f"the engine runs 4-bit: {why}"
        return "quantized", output_dir(cfg, EXPORT), reason
    return "merged", merged_dir(cfg), f"the quantised folder cannot be served here ({why})"


def serve_args(cfg: PipelineConfig) -> list[str]:
    s = cfg.serve
    args = ["--max-model-len", str(s.max_model_len), "--kv-cache-gib", str(s.kv_cache_gib)]
    args += ["--grace-seconds", str(s.grace_seconds)]
    return args + (["--enforce-eager"] if s.enforce_eager else [])


def plan_serve(cfg: PipelineConfig, which: str, model_dir: Path, reason: str) -> StagePlan:
    """The serve stage's plan; ``execute`` is attached by the caller that owns the server's lifetime."""
    manifest = model_dir / MANIFEST_NAME
    return StagePlan(
        name=SERVE,
        output=output_dir(cfg, SERVE),
        manifest=MANIFESTS[SERVE],
        # what is served and how; not start_timeout_s, which changes nothing about the measurement
        settings={"served": which, "reason": reason, "args": serve_args(cfg)},
        inputs={"model": fingerprint(manifest)},
    )


def plan_loadtest(cfg: PipelineConfig, url: str | None, api_key: str | None) -> StagePlan:
    lt = cfg.loadtest
    out = output_dir(cfg, LOADTEST)
    staging = out.with_name(f".{out.name}.partial")
    argv = [
        sys.executable,
        "-m",
        "orpo_deploy.loadtest.cli",
        "--host",
        url or "http://127.0.0.1:1",
        "--output",
        str(staging),
    ]
    if lt.sweep:  # capacity at SLO: open-loop rates upwards
        argv += ["--sweep", ",".join(f"{r:g}" for r in lt.sweep), "--seed", "0"]
    else:
        argv += ["--users", str(lt.users), "--spawn-rate", str(lt.users)]
    argv += ["--run-time", lt.run_time, "--max-tokens", str(lt.max_tokens), "--stop-timeout", "30"]
    argv += [arg for k, v in lt.slos.items() for arg in ("--slo", f"{k}={v}")]
    argv += [arg for k, v in lt.request_slos.items() for arg in ("--request-slo", f"{k}={v:g}")]
    settings = {"users": lt.users, "run_time": lt.run_time, "max_tokens": lt.max_tokens, "slos": lt.slos}
    if lt.sweep:
        settings |= {"sweep": lt.sweep, "request_slos": lt.request_slos}
    return StagePlan(
        name=LOADTEST,
        output=out,
        manifest=manifest_of(LOADTEST, cfg),
        settings=settings,
        inputs={"server": output_fingerprint(cfg, SERVE)},
        command=argv,
        env={**stage_env(), "ORPO_LOADTEST_API_KEY": api_key or ""},
        staging=staging,
        soft_fail_codes=(1,),  # an SLO miss still leaves a graded summary.json: the report shows it
    )


def plan_report(cfg: PipelineConfig) -> StagePlan:
    out = output_dir(cfg, REPORT)
    inputs = {stage: output_fingerprint(cfg, stage) for stage in stages(cfg) if stage != REPORT}
    argv = ["--run-dir", str(cfg.run_dir.resolve()), "--output", str(out)]
    return command_plan(cfg, REPORT, "orpo_deploy.pipeline.report", argv, {"report_version": 1}, inputs)


def command_plan(
    cfg: PipelineConfig,
    stage: str,
    module: str,
    argv: list[str],
    settings: dict[str, Any],
    inputs: dict[str, str],
    **extra: Any,
) -> StagePlan:
    """A stage that is one ``python -m MODULE ARGV`` writing ``output_dir(cfg, stage)``."""
    extra.setdefault("env", stage_env())
    return StagePlan(
        name=stage,
        output=output_dir(cfg, stage),
        manifest=manifest_of(stage),
        settings=settings,
        inputs=inputs,
        command=[sys.executable, "-m", module, *argv],
        **extra,
    )


def _yaml_scalar(value: Any) -> str:
    """A value as orpo-train's --set reads it (YAML), on one line."""
    if value is None:
        return ""
    return yaml.safe_dump(value, default_flow_style=True).strip().removesuffix("...").strip()
