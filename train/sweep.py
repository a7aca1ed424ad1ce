"""``orpo-sweep``: a grid of orpo-train runs (e.g. λ x lr x steps), each in its own process, chosen on dev.

    orpo-sweep --config configs/orpo_smollm2_cpu.yaml --grid beta=0.5,1,2 --grid learning_rate=5e-4 \\
        --set eval_generate=32 --set best_metric=if_mean --output-dir runs/sweep

Every run evaluates on the dev split while it trains and keeps its best checkpoint (``best_metric``); then each kept
model is scored on the *whole* dev split through orpo-eval (vLLM, greedy), beside the base model, and the recipe with
the highest dev IF mean is the choice. Nothing here reads the test split: test and IFEval are report-only.
Writes ``sweep.json``, ``sweep.md`` and ``sweep.png`` (dev curves; full-dev scores with 95 % intervals) into the
output folder. Killed? The same command again skips finished runs and resumes unfinished ones from their checkpoint.
"""

from __future__ import annotations

import argparse
import itertools
import json
import logging
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from orpo_deploy.train.cli import parse_overrides
from orpo_deploy.train.config import ConfigError, TrainConfig, check_keys, parse_value

logger = logging.getLogger(__name__)
BASE = "base"


def parse_grid(items: list[str]) -> dict[str, list[Any]]:
    """``--grid KEY=V1,V2`` items as {key: [values]} (YAML-parsed), keys checked against the config's fields."""
    grid: dict[str, list[Any]] = {}
    for item in items:
        key, sep, values = item.partition("=")
        if not sep or not values.strip():
            raise ConfigError(f"--grid expects KEY=V1,V2,..., got {item!r}")
        key = key.strip()
        check_keys({key: None}, source="--grid")
        if key in ("output_dir", "eval_dataset"):
            raise ConfigError(f"--grid cannot vary {key}")
        grid[key] = [parse_value(v) for v in values.split(",")]
    return grid


def run_name(point: dict[str, Any]) -> str:
    return "_".join(f"{k}{v}" for k, v in point.items()) or "default"


def plan(config: str | None, overrides: dict[str, Any], grid: dict[str, list[Any]], out: Path) -> list[dict]:
    """Every grid point as a validated TrainConfig (so a bad value fails before the first run starts)."""
    runs = []
    for values in itertools.product(*grid.values()):
        point = dict(zip(grid, values, strict=True))
        name = run_name(point)
        cfg = TrainConfig.from_sources(config, {**overrides, **point, "output_dir": str(out / "runs" / name)})
        if cfg.eval_dataset != "dev":
            raise ConfigError(f"a sweep chooses on dev: eval_dataset must be 'dev', got {cfg.eval_dataset!r}")
        runs.append({"name": name, "point": point, "config": cfg})
    return runs


def train_run(run: dict, config: str | None, overrides: dict[str, Any], logs: Path) -> int:
    """One orpo-train process; resumed when its folder holds a checkpoint, skipped when its model is merged."""
    from orpo_deploy.core.manifest import read_manifest

    cfg: TrainConfig = run["config"]
    if read_manifest(cfg.merged_dir) is not None:
        logger.info("%s: already trained, skipped", run["name"])
        return 0
    cmd = [sys.executable, "-m", "orpo_deploy.train.cli", "--output-dir", str(cfg.output_dir)]
    cmd += ["--config", config] if config else []
    for key, value in {**overrides, **run["point"]}.items():
        cmd += ["--set", f"{key}={json.dumps(value) if not isinstance(value, str) else value}"]
    if cfg.run_dir.is_dir() and (cfg.run_dir / "metrics.jsonl").exists():
        cmd.append("--resume")
    logger.info("%s: %s", run["name"], " ".join(cmd))
    with (logs / f"{run['name']}.train.log").open("a") as log:
        return subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT, check=False).returncode


def score_on_dev(name: str, model: str, out: Path, logs: Path, limit: int | None, max_new_tokens: int) -> int:
    """orpo-eval of one model on the whole dev split (skipped when its results exist)."""
    target = out / "dev" / name
    if (target / "results.json").is_file():
        return 0
    cmd = [sys.executable, "-m", "orpo_deploy.evaluation.cli", "--model", model, "--dataset", "dev", "--no-preference"]
    cmd += ["--max-new-tokens", str(max_new_tokens), "--output", str(target)]
    cmd += ["--limit", str(limit)] if limit else []
    with (logs / f"{name}.dev.log").open("a") as log:
        return subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT, check=False).returncode


def collect(runs: list[dict], out: Path) -> dict[str, Any]:
    """Per run: its grid point, steps run, best step and in-training dev curve, and its full-dev score with CI;
    the choice; each run's paired difference against the choice and against the base."""
    from orpo_deploy.core.manifest import read_manifest
    from orpo_deploy.evaluation.paired import paired_diffs
    from orpo_deploy.train.callbacks import read_metrics

    rows = []
    for run in runs:
        cfg: TrainConfig = run["config"]
        manifest = read_manifest(cfg.run_dir / "adapter") or {}
        records = read_metrics(cfg.run_dir / "metrics.jsonl") if (cfg.run_dir / "metrics.jsonl").exists() else []
        curve = [
            {k: r[k] for k in ("step", "eval_if_mean", "eval_loss", "eval_answer_tokens") if k in r}
            for r in records
            if "eval_loss" in r
        ]
        rows.append(
            {
                "name": run["name"],
                "point": run["point"],
                "trained": bool(manifest),
                "steps_run": manifest.get("train", {}).get("global_step"),
                "stopped_early": manifest.get("train", {}).get("stopped_early"),
                "best": manifest.get("train", {}).get("best"),
                "curve": curve,
                "dev": dev_figures(out / "dev" / run["name"]),
            }
        )
    scored = [r for r in rows if r["dev"]]
    choice = max(scored, key=lambda r: r["dev"]["mean"]) if scored else None
    for r in scored:
        r["vs_base"] = paired_diffs(out / "dev" / BASE, out / "dev" / r["name"])
        if choice is not None and r is not choice:
            r["vs_choice"] = paired_diffs(out / "dev" / choice["name"], out / "dev" / r["name"])
    return {
        "base": dev_figures(out / "dev" / BASE),
        "runs": rows,
        "choice": choice["name"] if choice else None,
        "chosen_by": "the highest IF mean on the whole dev split (orpo-eval, greedy); test is not read",
    }


def dev_figures(folder: Path) -> dict[str, Any] | None:
    try:
        result = json.loads((folder / "results.json").read_text())
    except (OSError, json.JSONDecodeError):
        return None
    f = result["instruction_following"]
    return {
        "prompts": f["prompts"],
        "mean": f["mean"],
        "prompt_strict": f["prompt_strict"],
        "instruction_strict": f["instruction_strict"],
        "ci": {k: f["ci"][k] for k in ("mean", "prompt_strict", "instruction_strict")},
        "hit_token_limit": result.get("generation", {}).get("hit_token_limit"),
        "mean_tokens": result.get("generation", {}).get("mean_tokens"),
        "constant_floor": (result.get("constant_baseline") or {}).get("prompt_strict"),
    }


def to_markdown(summary: dict[str, Any], command: str, commit: str | None) -> str:
    from orpo_deploy.evaluation.markdown import fmt_ci

    keys = list(summary["runs"][0]["point"]) if summary["runs"] else []
    lines = [
        "# orpo-sweep",
        "",
        f"Command: `{command}`" + (f" at commit `{commit}`" if commit else ""),
        "",
        f"Choice: **{summary['choice']}**, chosen by {summary['chosen_by']}.",
        "Dev figures: our dev split (its own topics, train's wordings), greedy, 95 % bootstrap intervals clustered by "
        "topic; differences are paired and called only when their interval excludes 0.",
        "",
        "| run | " + " | ".join(keys) + " | steps run | best step (in-training dev IF mean) | dev IF mean | "
        "dev prompt strict | answer tokens | hit limit | vs choice (mean) |",
        "|---|" + "---|" * len(keys) + "---|---|---|---|---|---|---|",
    ]
    base = summary["base"]
    if base:
        lines.append(
            "| base | " + " | ".join("-" for _ in keys) + f" | 0 | - | {fmt_ci(base['mean'], base['ci']['mean'])} | "
            f"{fmt_ci(base['prompt_strict'], base['ci']['prompt_strict'])} | {base['mean_tokens']:.0f} | "
            f"{base['hit_token_limit']} | - |"
        )
    for r in summary["runs"]:
        d, best = r["dev"], r["best"] or {}
        vs = (r.get("vs_choice") or {}).get("mean")
        vs_text = "-" if vs is None else f"{fmt_ci(vs)}{' *' if vs['excludes_zero'] else ''}"
        best_text = f"{best['step']} ({best['value']:.3f})" if best.get("step") is not None else "-"
        dev_text = "not scored" if not d else fmt_ci(d["mean"], d["ci"]["mean"])
        lines.append(
            f"| {r['name']} | "
            + " | ".join(str(r["point"][k]) for k in keys)
            + f" | {r['steps_run']}{' (early stop)' if r['stopped_early'] else ''} | {best_text} | {dev_text} | "
            + (f"{fmt_ci(d['prompt_strict'], d['ci']['prompt_strict'])} | {d['mean_tokens']:.0f} | "
               f"{d['hit_token_limit']} | {vs_text} |" if d else "- | - | - | - |")
        )  # fmt: skip
    if base and base.get("constant_floor") is not None:
        lines += ["", f"Constant-answer floor on dev (prompt strict): {base['constant_floor']:.3f}."]
    lines += ["", "`*`: the paired 95 % interval excludes 0.", ""]
    return "\n".join(lines)


def plot(summary: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (curves, bars) = plt.subplots(1, 2, figsize=(12, 4))
    for r in summary["runs"]:
        points = [(c["step"], c["eval_if_mean"]) for c in r["curve"] if "eval_if_mean" in c]
        if points:
            xs, ys = zip(*points, strict=True)
            curves.plot(xs, ys, "o-", label=r["name"], markersize=3)
    curves.set(title="dev IF mean while training (subset)", xlabel="step", ylabel="IF mean")
    curves.grid(alpha=0.3)
    if curves.get_lines():
        curves.legend(fontsize=7)
    scored = [("base", summary["base"])] if summary["base"] else []
    scored += [(r["name"], r["dev"]) for r in summary["runs"] if r["dev"]]
    for i, (name, d) in enumerate(scored):
        low, high = d["ci"]["mean"]
        bars.bar(i, d["mean"], yerr=[[d["mean"] - low], [high - d["mean"]]], capsize=4,
                 color="tab:green" if name == summary["choice"] else "tab:grey")  # fmt: skip
    bars.set_xticks(range(len(scored)), [n for n, _ in scored], rotation=30, ha="right", fontsize=7)
    bars.set(title="whole dev split: IF mean, 95 % CI", ylabel="IF mean")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def write_outputs(summary: dict[str, Any], out: Path, command: str) -> None:
    """sweep.json / sweep.md / sweep.png, each written to a temp name and renamed."""
    commit = git_commit()
    summary = {**summary, "command": command, "commit": commit}
    from orpo_deploy.core.io import write_atomic, write_json

    write_json(out / "sweep.json", summary)
    write_atomic(out / "sweep.md", to_markdown(summary, command, commit))
    tmp = out / ".sweep.tmp.png"
    plot(summary, tmp)
    tmp.replace(out / "sweep.png")


def git_commit() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=False)
        return out.stdout.strip() or None
    except OSError:
        return None


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="orpo-sweep", description=__doc__.split("\n\n")[0])
    p.add_argument("--config", help="orpo-train YAML every run starts from")
    p.add_argument("--grid", action="append", default=[], metavar="KEY=V1,V2", help="a swept key (repeat)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="a fixed override (repeat)")
    p.add_argument("--output-dir", default="runs/sweep", help="runs/, dev/, logs/ and the sweep.* files")
    p.add_argument("--dev-limit", type=int, help="score an evenly spaced subset of N dev rows (default: all)")
    p.add_argument("--max-new-tokens", type=int, default=256, help="token limit of the dev answers")
    p.add_argument("--no-score", dest="score", action="store_false", help="train only; skip whole-dev scoring")
    return p


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    args = build_parser().parse_args(argv)
    out = Path(args.output_dir)
    try:
        overrides = parse_overrides(args.set)
        check_keys(overrides, source="--set")
        grid = parse_grid(args.grid)
        if not grid:
            raise ConfigError("give at least one --grid KEY=V1,V2")
        runs = plan(args.config, overrides, grid, out)
    except ConfigError as exc:
        print(f"orpo-sweep: error: {exc}", file=sys.stderr)
        return 2
    logs = out / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    command = "orpo-sweep " + " ".join(sys.argv[1:] if argv is None else argv)
    started, failed = time.perf_counter(), []
    if args.score:
        base_model = runs[0]["config"].model or "smollm2-135m-instruct"
        if score_on_dev(BASE, base_model, out, logs, args.dev_limit, args.max_new_tokens):
            failed.append(BASE)
    for run in runs:
        rc = train_run(run, args.config, overrides, logs)
        if rc == 0 and args.score:
            rc = score_on_dev(
                run["name"], str(run["config"].merged_dir), out, logs, args.dev_limit, args.max_new_tokens
            )
        if rc:
            failed.append(run["name"])
            logger.error("%s failed (exit %d): see %s", run["name"], rc, logs)
        logger.info("%s done at %.0f s", run["name"], time.perf_counter() - started)
    summary = collect(runs, out)
    write_outputs(summary, out, command)
    print((out / "sweep.md").read_text())
    if failed:
        print(f"orpo-sweep: error: {len(failed)} run(s) failed: {', '.join(failed)} (logs in {logs})", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
