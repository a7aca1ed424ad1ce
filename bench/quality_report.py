"""The report of a quality bench (bench/quality_v2.sh, bench/onpolicy.sh): IFEval and our v2 test split for several
models ("arms"), with floors and paired differences.

    python bench/quality_report.py runs/quality_v2 --output bench/results/quality_v2        (the v2 arms, default)
    python bench/quality_report.py RUN --arm base=base --arm "ORPO, collage=collage" --arm "ORPO, on-policy=onpolicy" \
        --diff base,"ORPO, collage" --diff base,"ORPO, on-policy" --diff "ORPO, collage","ORPO, on-policy" --output DIR

An arm ``LABEL=SUFFIX`` reads RUN/ifeval-SUFFIX and RUN/test-SUFFIX (orpo-eval folders; either may be missing). A
diff ``A,B`` adds a column B - A (paired bootstrap: over prompts on IFEval, clustered by topic on ours); default:
every arm against the first. Writes README.md and copies each folder's results.json/results.md (not the responses,
which stay in the run folder).
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
from pathlib import Path

from orpo_deploy.evaluation.ifeval import COVERED
from orpo_deploy.evaluation.markdown import FIGURE_NAMES, fmt_ci
from orpo_deploy.evaluation.paired import paired_diffs, read_responses
from orpo_deploy.evaluation.stats import excludes_zero, instruction_parts, paired_diff_ci

PUBLISHED_IFEVAL_MEAN = 0.299  # SmolLM2-135M-Instruct model card, official bf16 weights
V2_ARMS = ["base=base", "ORPO (140 steps)=orpo", "GPTQ, served=served"]
V2_DIFFS = ["base,ORPO (140 steps)", "ORPO (140 steps),GPTQ, served"]


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


class Report:
    def __init__(self, run: Path, arms: dict[str, str], diffs: list[tuple[str, str]]) -> None:
        self.run, self.arms, self.diffs = run, arms, diffs

    def folder(self, kind: str, label: str) -> Path:
        return self.run / f"{kind}-{self.arms[label]}"

    def results(self, kind: str) -> dict[str, dict]:
        out = {label: read(self.folder(kind, label)) for label in self.arms}
        return {k: v for k, v in out.items() if v}

    def diff_heads(self, present: dict) -> list[tuple[str, str]]:
        return [(a, b) for a, b in self.diffs if a in present and b in present]

    def section(self, kind: str, lead: list[str]) -> tuple[dict, dict, list, list[str]]:
        """(results, the first arm's result, the difference columns, the table's header lines) of one benchmark."""
        results = self.results(kind)
        if not results:
            return {}, {}, [], []
        heads = self.diff_heads(results)
        header = [
            "| " + " | ".join(lead) + " | " + " | ".join(results) + " | constant answer | "
            + " | ".join(f"{b} - {a}" for a, b in heads) + " |",
            "|---" * (len(lead) + len(results) + len(heads) + 1) + "|",
        ]  # fmt: skip
        return results, next(iter(results.values())), heads, header

    def ifeval(self) -> list[str]:
        results, first, heads, header = self.section("ifeval", ["figure"])
        if not results:
            return []
        floor = first["constant_baseline"]
        lines = ["## IFEval (Google's 541 prompts and checkers)", "", *header]
        diffs = [paired_diffs(self.folder("ifeval", a), self.folder("ifeval", b)) or {} for a, b in heads]
        for name in FIGURE_NAMES:
            cells = [fmt_ci(r["ifeval"][name]) for r in results.values()]
            dcells = [diff_cell(d.get(name)) for d in diffs]
            lines.append(
                f"| {name.replace('_', '-')} | " + " | ".join(cells) + f" | {fmt_ci(floor[name])} | "
                + " | ".join(dcells) + " |"
            )  # fmt: skip
        for group in ("covered", "uncovered"):
            cells = [fmt_ci(r["ifeval"][group]["strict"]) for r in results.values()]
            dcells = [
                diff_cell(group_diff(self.folder("ifeval", a), self.folder("ifeval", b), group == "covered"))
                for a, b in heads
            ]
            lines.append(
                f"| instruction-strict, types our data {'covers' if group == 'covered' else 'does not cover'} | "
                + " | ".join(cells) + " | | " + " | ".join(dcells) + " |"
            )  # fmt: skip
        pad = " |" * (len(heads) + 1)
        hits = [f"{r['generation']['hit_token_limit']} / {r['generation']['answers']}" for r in results.values()]
        lines.append("| answers at the token limit | " + " | ".join(hits) + pad)
        secs = [f"{r['timings_s'].get('generation', 0):.0f}" for r in results.values()]
        lines.append("| generation wall time (s) | " + " | ".join(secs) + pad)
        lines += [
            "",
            "`*`: the paired 95 % interval excludes zero (the only case called a difference). Published "
            f"SmolLM2-135M-Instruct mean: {PUBLISHED_IFEVAL_MEAN:.3f} (official bf16 weights; ours is the Q4_1 GGUF "
            "dequantised to bf16).",
            "",
            "Per instruction type, strict instruction-level accuracy:",
            "",
            "| type | covered | n | " + " | ".join(results) + " |",
            "|---" * (len(results) + 3) + "|",
        ]
        for t, v in first["ifeval"]["per_type"].items():
            cells = [fmt_ci(r["ifeval"]["per_type"][t]["strict"]) for r in results.values()]
            lines.append(
                f"| {t} | {'yes' if v['covered'] else 'no'} | {v['strict']['n']} | " + " | ".join(cells) + " |"
            )
        return lines

    def dev(self) -> list[str]:
        """Our dev split (where choices are made), when the run has dev-SUFFIX folders."""
        results, first, heads, header = self.section("dev", ["figure"])
        if not results:
            return []
        floor = first["constant_baseline"]
        lines = ["", "## Our dev split (where choices are made)", "", *header]
        diffs = [paired_diffs(self.folder("dev", a), self.folder("dev", b)) or {} for a, b in heads]
        for name in ("prompt_strict", "instruction_strict", "mean"):
            cells = [fmt_ci(r["instruction_following"][name], r["instruction_following"]["ci"][name])
                     for r in results.values()]  # fmt: skip
            lines.append(
                f"| {name.replace('_', '-')} | " + " | ".join(cells) + f" | {fmt_ci(floor[name], floor['ci'][name])} | "
                + " | ".join(diff_cell(d.get(name)) for d in diffs) + " |"
            )  # fmt: skip
        hits = [f"{r['generation']['hit_token_limit']} / {r['generation']['answers']}" for r in results.values()]
        lines.append("| answers at the token limit | " + " | ".join(hits) + " |" * (len(heads) + 1))
        return lines

    def ours(self) -> list[str]:
        results, first, heads, header = self.section("test", ["rows", "figure"])
        if not results:
            return []
        floor = first["constant_baseline"]
        lines = ["", "## Our v2 test split (640 rows, 32 held-out topics)", "", *header]
        for template in (None, "in", "out"):
            keep = None if template is None else (lambda r, t=template: r.get("template") == t)
            diffs = [paired_diffs(self.folder("test", a), self.folder("test", b), keep) or {} for a, b in heads]
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
                    f"| {label} | {name.replace('_', '-')} | " + " | ".join(cells) + f" | {fl} | "
                    + " | ".join(diff_cell(d.get(name)) for d in diffs) + " |"
                )  # fmt: skip
        lines += [
            "",
            "Intervals clustered by topic (32 clusters). Preference accuracy per rejection type:",
            "",
            "| rejection | " + " | ".join(results) + " |",
            "|---" * (len(results) + 1) + "|",
        ]
        for kind in first.get("preference", {}).get("per_rejection", {}):
            cells = [fmt_ci(r.get("preference", {}).get("per_rejection", {}).get(kind)) for r in results.values()]
            lines.append(f"| {kind} | " + " | ".join(cells) + " |")
        return lines


def parse_arms(items: list[str]) -> dict[str, str]:
    arms = {}
    for item in items:
        label, sep, suffix = item.rpartition("=")
        if not sep or not label or not suffix:
            raise SystemExit(f"--arm expects LABEL=SUFFIX, got {item!r}")
        arms[label] = suffix
    return arms


def parse_diffs(items: list[str], arms: dict[str, str]) -> list[tuple[str, str]]:
    out = []
    for item in items:
        # labels may hold commas ("GPTQ, served"): split where both sides name an arm
        cuts = [i for i, c in enumerate(item) if c == "," and item[:i] in arms and item[i + 1 :] in arms]
        if len(cuts) != 1:
            raise SystemExit(f"--diff expects A,B with two arm labels, got {item!r} (arms: {', '.join(arms)})")
        out.append((item[: cuts[0]], item[cuts[0] + 1 :]))
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("run", type=Path)
    p.add_argument("--output", type=Path, required=True)
    p.add_argument("--title", default="Quality v2: IFEval and our test split")
    p.add_argument("--arm", action="append", default=[], metavar="LABEL=SUFFIX", help="a model (repeat, in order)")
    p.add_argument("--diff", action="append", default=[], metavar="A,B", help="a B - A column (repeat)")
    p.add_argument("--made-by", default="`bench/quality_v2.sh`", help="the script that made the run")
    p.add_argument("--note", default="", help="a paragraph on the run (what it is, what else ran beside it)")
    args = p.parse_args(argv)
    arms = parse_arms(args.arm or V2_ARMS)
    diffs = parse_diffs(
        args.diff or (V2_DIFFS if not args.arm else [f"{next(iter(arms))},{b}" for b in arms][1:]), arms
    )
    commit = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()
    commands = (args.run / "commands.txt").read_text() if (args.run / "commands.txt").is_file() else ""
    lines = [
        f"# {args.title} (commit {commit[:10]})",
        "",
        "Greedy, each model's chat template, 95 % bootstrap intervals (IFEval: over prompts; ours: over topics). "
        f"Made by {args.made_by} then `bench/quality_report.py`; the commands and their times:",
        "",
        "```",
        commands.strip(),
        "```",
        "",
    ]
    lines += [args.note, ""] if args.note else []
    report = Report(args.run, arms, diffs)
    lines += report.ifeval() + report.ours() + report.dev()
    args.output.mkdir(parents=True, exist_ok=True)
    for label in arms:
        for kind in ("ifeval", "test", "dev"):
            src = report.folder(kind, label)
            if (src / "results.json").is_file():
                (args.output / src.name).mkdir(exist_ok=True)
                for name in ("results.json", "results.md"):
                    shutil.copyfile(src / name, args.output / src.name / name)
    (args.output / "README.md").write_text("\n".join(lines) + "\n")
    print(f"written {args.output / 'README.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
