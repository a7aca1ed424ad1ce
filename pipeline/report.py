"""``python -m orpo_deploy.pipeline.report --run-dir RUN --output RUN/report``: one report of a pipeline run.

Reads what the stages left (manifests, eval results, the load-test summary, the pipeline's state records) and
writes ``report.md``, ``report.json`` and PNG charts into the output folder, atomically. It reports only what
the stages measured; a figure that is missing shows as "-".
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path
from typing import Any

from orpo_deploy.core.manifest import MANIFEST_NAME, atomic_output_dir
from orpo_deploy.pipeline.charts import bar_chart, quality_chart
from orpo_deploy.pipeline.quality import COLUMNS, collect_quality, quality_markdown
from orpo_deploy.pipeline.stages import STAGES as STAGE_ORDER


def read_json(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None


def folder_mib(folder: Path | None) -> float | None:
    if folder is None or not folder.is_dir():
        return None
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file()) / 2**20


def measured_on(results: dict[str, dict | None]) -> dict[str, str]:
    """How each column was measured (prompts, engine, token limit): columns on other subsets are not comparable."""
    out = {}
    for column, result in results.items():
        if result:
            cfg = result.get("config", {})
            prompts = (result.get("instruction_following") or {}).get("prompts")
            engine = "the server's API" if cfg.get("endpoint") else f"{cfg.get('engine')} offline"
            tokens = cfg.get("max_new_tokens")
            out[column] = f"orpo-eval, {prompts} prompts, greedy through {engine}, {tokens} new tokens"
    return out


def collect(run_dir: Path) -> dict[str, Any]:
    """Everything the report shows, as one JSON-able dict."""
    state = run_dir / "state"
    base = read_json(run_dir / "eval-base" / "results.json")
    orpo = read_json(run_dir / "eval-orpo" / "results.json")
    export = read_json(run_dir / "export" / MANIFEST_NAME)
    merged = read_json(run_dir / "train" / "merged" / MANIFEST_NAME) or {}
    loadtest = read_json(run_dir / "loadtest" / "summary.json") or {}
    run = read_json(state / "run.json") or {}
    this_run = {s["name"]: s for s in run.get("stages", [])}
    stages = []
    names = [s["name"] for s in run.get("stages", [])] or list(STAGE_ORDER[:-1])  # this run's, rounds included
    for name in names:
        record = read_json(state / f"{name}.json") or {}
        if name == "pairs" and not record:
            continue  # committed pairs: no pairs stage
        stages.append(
            {
                "stage": name,
                "wall_s": record.get("wall_s"),
                "finished_at": record.get("finished_at"),
                "this_run": this_run.get(name, {}).get("status"),
            }
        )
    serve = run_dir / "serve"
    base_dir = Path(base["model_dir"]) if base and base.get("model_dir") else None
    return {
        "run_dir": str(run_dir),
        "pairs": read_json(run_dir / "pairs" / "stats.json"),
        "rounds": collect_rounds(run_dir),
        "train": {**(merged.get("train") or {}), "metrics": merged.get("metrics", {}).get("train")},
        "quality": collect_quality(run_dir, base, orpo, export, read_json),
        "quality_measured_on": measured_on(
            {"base": base, "ORPO": orpo, "served": read_json(run_dir / "eval-served" / "results.json")}
        ),
        "export": {
            k: (export or {}).get(k) for k in ("method", "bits", "group_size", "wall_time_s", "size_on_disk_bytes")
        },
        "export_gate": {
            "min_retention": (export or {}).get("quality", {}).get("min_retention"),
            "figures": (export or {}).get("quality", {}).get("figures"),
        },
        "sizes_mib": {
            "base": folder_mib(base_dir),
            "merged (ORPO)": folder_mib(run_dir / "train" / "merged"),
            "quantised": folder_mib(run_dir / "export"),
        },
        "serve": {**(read_json(serve / "serve.json") or {}), **(read_json(serve / "stop.json") or {})},
        "loadtest": {"run": loadtest.get("run"), "summary": loadtest.get("summary"), "slos": loadtest.get("slos"),
                     "passed": loadtest.get("passed"), "sweep": read_json(run_dir / "loadtest" / "sweep.json")},
        "stages": stages,
        "elapsed_s": run.get("elapsed_s"),
    }  # fmt: skip


def collect_rounds(run_dir: Path) -> list[dict[str, Any]]:
    """Per on-policy round (pairs, pairs-2, ...): its pairs' stats and its model's whole-dev figures."""
    rounds = []
    for r in range(1, 100):
        suffix = "" if r == 1 else f"-{r}"
        pairs = read_json(run_dir / f"pairs{suffix}" / "stats.json")
        if pairs is None:
            break
        dev = read_json(run_dir / f"dev{suffix}" / "results.json") or {}
        f = dev.get("instruction_following") or {}
        rounds.append(
            {
                "round": r,
                "pairs": pairs.get("pairs"),
                "answer_pass_rate": pairs.get("answer_pass_rate"),
                "answers_cut_at_limit": pairs.get("answers_cut_at_limit"),
                "dev_mean": f.get("mean"),
                "dev_mean_ci": (f.get("ci") or {}).get("mean"),
                "dev_prompt_strict": f.get("prompt_strict"),
                "dev_hit_limit": (dev.get("generation") or {}).get("hit_token_limit"),
                "dev_prompts": f.get("prompts"),
            }
        )
    return rounds


def fmt(value: Any, digits: int = 3) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def to_markdown(report: dict[str, Any], charts: dict[str, str]) -> str:
    lines = [f"# orpo-pipeline report: {report['run_dir']}", ""]
    pairs = report.get("pairs")
    if pairs:
        lines += [
            "## Training pairs (on-policy)",
            "",
            f"{fmt(pairs['prompts'])} train prompts x {fmt(pairs['answers_per_prompt'], 0)} sampled answers from the "
            f"base model, judged by our verifiers: {fmt(pairs['answer_pass_rate'])} of answers passed every "
            f"constraint, {fmt(pairs['answers_cut_at_limit'])} were cut at the token limit; {fmt(pairs['pairs'])} "
            f"pairs kept (dropped: {', '.join(f'{k} {v}' for k, v in pairs['dropped'].items()) or 'none'}); chosen "
            f"{fmt(pairs['chosen_mean_words'], 0)} words on average, rejected {fmt(pairs['rejected_mean_words'], 0)}.",
            "",
        ]
    if len(report.get("rounds") or []) > 1:
        lines += [
            "## On-policy rounds",
            "",
            "Round r samples pairs from round r-1's model and trains on from it; each round's model on the whole dev "
            "split (greedy; 95 % interval clustered by topic).",
            "",
            "| round | pairs | answers passing | cut at limit | dev IF mean | dev prompt strict | dev hit limit |",
            "|---|---|---|---|---|---|---|",
        ]
        for r in report["rounds"]:
            ci = r["dev_mean_ci"]
            mean = fmt(r["dev_mean"]) + (f" [{ci[0]:.3f}, {ci[1]:.3f}]" if ci else "")
            lines.append(
                f"| {r['round']} | {fmt(r['pairs'])} | {fmt(r['answer_pass_rate'])} | {fmt(r['answers_cut_at_limit'])} "
                f"| {mean} | {fmt(r['dev_prompt_strict'])} | {fmt(r['dev_hit_limit'])} of {fmt(r['dev_prompts'])} |"
            )
        lines.append("")
    train = report["train"]
    lines += [
        "## Training",
        "",
        f"{fmt(train.get('global_step'))} steps in {fmt(train.get('wall_time_s'), 0)} s, "
        f"{fmt(train.get('tokens_per_second'), 1)} tokens/s, peak RSS {fmt(train.get('peak_rss_mib'), 0)} MiB.",
        "",
    ]
    if "training" in charts:
        lines += [f"![training curves]({charts['training']})", ""]
    lines += quality_markdown(report["quality"], report["quality_measured_on"])
    gate = report["export_gate"]
    lines += ["", f"The gate's min retention: {fmt(gate.get('min_retention'), 2)} (passed: the export exists).", ""]
    if "quality" in charts:
        lines += [f"![quality]({charts['quality']})", ""]
    lines += ["## Sizes on disk", "", "| model | MiB |", "|---|---|"]
    lines += [f"| {name} | {fmt(mib, 1)} |" for name, mib in report["sizes_mib"].items()]
    if "sizes" in charts:
        lines += ["", f"![sizes]({charts['sizes']})"]
    serve, lt = report["serve"], report["loadtest"]
    lines += [
        "",
        "## Serving",
        "",
        f"Served: **{fmt(serve.get('served'))}** ({fmt(serve.get('model_dir'))}): {fmt(serve.get('reason'))}. "
        f"Ready in {fmt(serve.get('ready_s'), 1)} s, one warm-up request {fmt(serve.get('warm_up_s'), 1)} s; "
        f"stopped (SIGTERM, drain) in {fmt(serve.get('stop_s'), 1)} s, "
        f"exit {fmt(serve.get('exit_code'))}.",
    ]
    if lt.get("sweep"):
        lines += capacity_lines(lt["sweep"])
        if "capacity" in charts:
            lines += [f"![capacity at SLO]({charts['capacity']})", ""]
    else:
        lines += closed_loop_lines(lt, charts)
    lines += [
        "## Stages",
        "",
        "Wall time of the run that produced each output; the last column: ran, or skipped (up to date), in the "
        "run that wrote this report.",
        "",
        "| stage | wall time (s) | finished | in this run |",
        "|---|---|---|---|",
    ]
    for st in report["stages"]:
        lines.append(f"| {st['stage']} | {fmt(st['wall_s'], 1)} | {fmt(st['finished_at'])} | {fmt(st['this_run'])} |")
    if "stages" in charts:
        lines += ["", f"![stage times]({charts['stages']})"]
    return "\n".join(lines) + "\n"


def closed_loop_lines(lt: dict[str, Any], charts: dict[str, str]) -> list[str]:
    """The load test as closed-loop users: throughput, latency percentiles, the SLO verdicts."""
    s = lt.get("summary") or {}
    run = lt.get("run") or {}
    lines = [
        "",
        f"Load test: {fmt(run.get('users'))} users for {fmt(run.get('run_time_s'))} s, max_tokens "
        f"{fmt(run.get('max_tokens'))}, Locust on the same host.",
        "",
        "| figure | value |",
        "|---|---|",
        f"| requests (failed) | {fmt(s.get('requests'))} ({fmt(s.get('failures'))}) |",
        f"| requests/s | {fmt(s.get('requests_per_s'), 2)} |",
        f"| output tokens/s | {fmt(s.get('output_tokens_per_s'), 1)} |",
    ]
    for key, label in (("ttft_ms", "TTFT"), ("itl_ms", "inter-token latency"), ("e2e_ms", "request latency")):
        p = s.get(key) or {}
        lines.append(f"| {label} p50 / p95 (ms) | {fmt(p.get('p50'), 1)} / {fmt(p.get('p95'), 1)} |")
    slos = ", ".join(f"{r['key']} {'ok' if r['ok'] else 'FAILED'}" for r in lt.get("slos") or [])
    lines += ["", f"SLOs: {slos or '-'}; passed: {fmt(lt.get('passed'))}.", ""]
    if "loadtest" in charts:
        lines += [f"![load test]({charts['loadtest']})", ""]
    return lines


def capacity_lines(sweep: dict[str, Any]) -> list[str]:
    """The load test as capacity at SLO (loadtest.sweep): the largest open-loop rate that met every SLO."""
    cap = sweep.get("capacity_rps")
    capacity = f"{cap:g} req/s" if cap is not None else "none (the lowest rate missed)"
    lines = [
        "",
        f"Load test: capacity at SLO **{capacity}** "
        f"(open-loop Poisson arrivals, rates upwards until one missed; SLOs {sweep.get('slos')}, per request "
        f"{sweep.get('request_slos') or 'none'}), Locust on the same host.",
        "",
        "| rate (req/s) | sent | goodput ratio | goodput req/s | output tok/s | TTFT p50 / p95 ms | met |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in sweep.get("rates") or []:
        met = "yes" if r["passed"] else "no: " + ", ".join(r.get("failed_slos") or ["error"])
        lines.append(
            f"| {r['rate']:g} | {fmt(r.get('sent_rps'), 2)} | {fmt(r.get('goodput_ratio'), 2)} | "
            f"{fmt(r.get('goodput_rps'), 2)} | {fmt(r.get('output_tokens_per_s'), 1)} | "
            f"{fmt(r.get('ttft_p50_ms'), 0)} / {fmt(r.get('ttft_p95_ms'), 0)} | {met} |"
        )
    return lines + [""]


def draw(report: dict[str, Any], run_dir: Path, out: Path) -> dict[str, str]:
    """The PNGs, by name: copied from the stages (training curves, load test) or drawn here."""
    charts: dict[str, str] = {}
    for name, source in (
        ("training", run_dir / "train" / "run" / "plots" / "metrics.png"),
        ("loadtest", run_dir / "loadtest" / "loadtest.png"),
        ("capacity", run_dir / "loadtest" / "capacity.png"),
    ):
        if source.is_file():
            shutil.copyfile(source, out / f"{name}.png")
            charts[name] = f"{name}.png"
    if quality_chart(report["quality"]["rows"], list(COLUMNS), out / "quality.png"):
        charts["quality"] = "quality.png"
    sizes = {k: v for k, v in report["sizes_mib"].items() if v is not None}
    if bar_chart(list(sizes), list(sizes.values()), out / "sizes.png", "size on disk", "MiB"):
        charts["sizes"] = "sizes.png"
    timed = [st for st in report["stages"] if st["wall_s"] is not None]
    notes = ["(reused: skipped in the last run)" if st["this_run"] == "skipped" else "" for st in timed]
    labels, values = [st["stage"] for st in timed], [st["wall_s"] for st in timed]
    if bar_chart(labels, values, out / "stages.png", "stage wall time", "seconds", notes):
        charts["stages"] = "stages.png"
    return charts


def write_report(run_dir: Path, output: Path) -> dict[str, Any]:
    report = collect(run_dir)
    with atomic_output_dir(output, overwrite=True) as tmp:
        charts = draw(report, run_dir, tmp)
        report["charts"] = charts
        (tmp / "report.md").write_text(to_markdown(report, charts))
        (tmp / "report.json").write_text(json.dumps(report, indent=2, default=str) + "\n")
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="orpo_deploy.pipeline.report", description=__doc__.split("\n\n")[0])
    parser.add_argument("--run-dir", required=True, type=Path)
    parser.add_argument("--output", required=True, type=Path)
    args = parser.parse_args(argv)
    if not args.run_dir.is_dir():
        print(f"pipeline.report: error: {args.run_dir} is not a folder", file=sys.stderr)
        return 2
    write_report(args.run_dir, args.output)
    print(f"report written to {args.output / 'report.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
