"""The report of bench/quality_v2.sh: IFEval and our v2 test split, base vs ORPO vs the served GPTQ export.

    python bench/quality_v2_report.py runs/quality_v2 --output bench/results/quality_v2

Reads the orpo-eval folders the script wrote and writes README.md + summary.json (with the git commit), copying
each folder's results.json/results.md (not the responses, which stay in the run folder).
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
from pathlib import Path

from evaluation.ifeval import COVERED
from evaluation.markdown import FIGURE_NAMES, fmt_ci
from evaluation.paired import paired_diffs, read_responses
from evaluation.stats import excludes_zero, instruction_parts, paired_diff_ci

PUBLISHED_IFEVAL_MEAN = 0.299  # SmolLM2-135M-Instruct model card, official bf16 weights
IFEVAL = {"base": "ifeval-base", "ORPO (140 steps)": "ifeval-orpo", "GPTQ, served": "ifeval-served"}
OURS = {"base": "test-base", "ORPO (140 steps)": "test-orpo"}


def read(folder: Path) -> dict | None:
    path = folder / "results.json"
    return json.loads(path.read_text()) if path.is_file() else None


def diff_cell(d: dict | None) -> str:
    if not d:
        return "-"
    return f"{d['value']:+.3f} [{d['ci_low']:+.3f}, {d['ci_high']:+.3f}]{' *' if d['excludes_zero'] else ''}"


def group_diff(a_dir: Path, b_dir: Path, covered: bool) -> dict | None:
    """Paired B - A of strict instruction-level accuracy over the IFEval types our data covers (or does not)."""
    a, b = read_responses(a_dir), read_responses(b_dir)
    if not a or not b or [r["key"] for r in a] != [r["key"] for r in b]:
        return None

    def parts(records: list[dict]) -> list:
        num, den, _ = instruction_parts(records, lambda t: (t in COVERED) == covered)
        return [(num, den)]

    e = paired_diff_ci(parts(a), parts(b))
    return {**e.to_dict(), "excludes_zero": excludes_zero(e)}


def ifeval_section(run: Path) -> list[str]:
    results = {label: read(run / folder) for label, folder in IFEVAL.items()}
    results = {k: v for k, v in results.items() if v}
    if not results:
        return []
    first = next(iter(results.values()))
    floor = first["constant_baseline"]
    labels = list(results)
    lines = [
        "## IFEval (Google's 541 prompts and checkers)",
        "",
        "| figure | " + " | ".join(labels) + " | constant answer | ORPO - base | GPTQ served - ORPO |",
        "|---" * (len(labels) + 4) + "|",
    ]
    d1 = paired_diffs(run / IFEVAL["base"], run / IFEVAL["ORPO (140 steps)"]) or {}
    d2 = paired_diffs(run / IFEVAL["ORPO (140 steps)"], run / IFEVAL["GPTQ, served"]) or {}
    for name in FIGURE_NAMES:
        cells = [fmt_ci(r["ifeval"][name]) for r in results.values()]
        lines.append(
            f"| {name.replace('_', '-')} | "
            + " | ".join(cells)
            + f" | {fmt_ci(floor[name])} | {diff_cell(d1.get(name))} | {diff_cell(d2.get(name))} |"
        )
    for group in ("covered", "uncovered"):
        cells = [fmt_ci(r["ifeval"][group]["strict"]) for r in results.values()]
        g1 = group_diff(run / IFEVAL["base"], run / IFEVAL["ORPO (140 steps)"], group == "covered")
        g2 = group_diff(run / IFEVAL["ORPO (140 steps)"], run / IFEVAL["GPTQ, served"], group == "covered")
        lines.append(
            f"| instruction-strict, types our data {'covers' if group == 'covered' else 'does not cover'} | "
            + " | ".join(cells)
            + f" | | {diff_cell(g1)} | {diff_cell(g2)} |"
        )
    hits = [f"{r['generation']['hit_token_limit']} / {r['generation']['answers']}" for r in results.values()]
    lines.append("| answers at the token limit | " + " | ".join(hits) + " | | | |")
    secs = [f"{r['timings_s'].get('generation', 0):.0f}" for r in results.values()]
    lines.append("| generation wall time (s) | " + " | ".join(secs) + " | | | |")
    lines += [
        "",
        "`*`: the paired 95 % interval excludes zero (the only case called a difference). Published "
        f"SmolLM2-135M-Instruct mean: {PUBLISHED_IFEVAL_MEAN:.3f} (official bf16 weights; ours is the Q4_1 GGUF "
        "dequantised to bf16).",
        "",
        "Per instruction type, strict instruction-level accuracy:",
        "",
        "| type | covered | n | " + " | ".join(labels) + " |",
        "|---" * (len(labels) + 3) + "|",
    ]
    for t, v in first["ifeval"]["per_type"].items():
        cells = [fmt_ci(r["ifeval"]["per_type"][t]["strict"]) for r in results.values()]
        lines.append(f"| {t} | {'yes' if v['covered'] else 'no'} | {v['strict']['n']} | " + " | ".join(cells) + " |")
    return lines


def ours_section(run: Path) -> list[str]:
    results = {label: read(run / folder) for label, folder in OURS.items()}
    results = {k: v for k, v in results.items() if v}
    if not results:
        return []
    first = next(iter(results.values()))
    floor = first["constant_baseline"]
    lines = [
        "",
        "## Our v2 test split (640 rows, 32 held-out topics)",
        "",
        "| rows | figure | " + " | ".join(results) + " | constant answer | ORPO - base |",
        "|---" * (len(results) + 4) + "|",
    ]
    for template in (None, "in", "out"):
        keep = None if template is None else (lambda r, t=template: r.get("template") == t)
        diffs = paired_diffs(run / OURS["base"], run / OURS["ORPO (140 steps)"], keep) or {}
        label = {None: "all", "in": "in-template", "out": "out-of-template"}[template]
        for name in ("prompt_strict", "instruction_strict", "mean"):
            cells = []
            for r in results.values():
                inf = r["instruction_following"]
                cells.append(
                    fmt_ci(inf[name], inf["ci"][name])
                    if template is None
                    else fmt_ci(inf["by_template"][template][name])
                )
            fl = fmt_ci(floor[name], floor["ci"][name]) if template is None else "-"
            lines.append(
                f"| {label} | {name.replace('_', '-')} | "
                + " | ".join(cells)
                + f" | {fl} | {diff_cell(diffs.get(name))} |"
            )
    lines += [
        "",
        "Intervals clustered by topic (32 clusters). Preference accuracy per rejection type:",
        "",
        "| rejection | " + " | ".join(results) + " |",
        "|---" * (len(results) + 1) + "|",
    ]
    for kind in first.get("preference", {}).get("per_rejection", {}):
        lines.append(
            f"| {kind} | "
            + " | ".join(fmt_ci(r.get("preference", {}).get("per_rejection", {}).get(kind)) for r in results.values())
            + " |"
        )
    return lines


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("run", type=Path)
    p.add_argument("--output", type=Path, required=True)
    p.add_argument("--note", default="", help="a line on how the run went (e.g. what else ran beside it)")
    args = p.parse_args(argv)
    commit = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()
    commands = (args.run / "commands.txt").read_text() if (args.run / "commands.txt").is_file() else ""
    lines = [
        f"# Quality v2: IFEval and our test split (commit {commit[:10]})",
        "",
        "Greedy, each model's chat template, 95 % bootstrap intervals (IFEval: over prompts; ours: over topics). "
        "Made by `bench/quality_v2.sh` then `bench/quality_v2_report.py`; the commands and their times:",
        "",
        "```",
        commands.strip(),
        "```",
        "",
    ]
    lines += [args.note, ""] if args.note else []
    lines += ifeval_section(args.run) + ours_section(args.run)
    args.output.mkdir(parents=True, exist_ok=True)
    for folder in (*IFEVAL.values(), *OURS.values()):
        if (args.run / folder / "results.json").is_file():
            (args.output / folder).mkdir(exist_ok=True)
            for name in ("results.json", "results.md"):
                shutil.copyfile(args.run / folder / name, args.output / folder / name)
    (args.output / "README.md").write_text("\n".join(lines) + "\n")
    print(f"written {args.output / 'README.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
