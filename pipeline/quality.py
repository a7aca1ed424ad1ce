"""The report's quality section: every figure with its 95 % interval, the constant-answer floor beside the models,
paired differences (ORPO minus base, served minus ORPO: same prompts), our split's in- and out-of-template rows,
IFEval, and the export's gate on dev."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from orpo_deploy.evaluation.markdown import fmt_ci
from orpo_deploy.evaluation.paired import paired_diffs
from orpo_deploy.evaluation.stats import IF_FIGURES

FIGURES = (*IF_FIGURES, "mean")
MODELS = ("base", "ORPO", "served")  # the served column is the 4-bit export where the host serves 4-bit weights
COLUMNS = (*MODELS, "constant answer (floor)")
EVALS = {"base": "eval-base", "ORPO": "eval-orpo", "served": "eval-served"}
IFEVALS = {"base": "ifeval-base", "ORPO": "ifeval-orpo", "served": "ifeval-served"}
# paired differences shown: what ORPO bought, and what quantising and serving it cost (same prompts, same order)
DIFFS = {"ORPO - base": ("base", "ORPO"), "served - ORPO": ("ORPO", "served")}


def estimate(value: float | None, ci: list | None = None) -> dict | None:
    """A figure as {value, ci_low, ci_high} (the bounds None where nothing measured them)."""
    if value is None:
        return None
    low, high = ci if ci else (None, None)
    return {"value": value, "ci_low": low, "ci_high": high}


def _ours(result: dict | None, name: str) -> dict | None:
    inf = (result or {}).get("instruction_following")
    return estimate(inf[name], (inf.get("ci") or {}).get(name)) if inf and name in inf else None


def served_label(serve: dict | None) -> str:
    """The served column's heading: which folder the server ran."""
    which = (serve or {}).get("served")
    return {"quantized": "served (4-bit export)", "merged": "served (merged ORPO)"}.get(which, "served")


def export_gate(export: dict | None) -> list[dict[str, Any]]:
    """The export's quality gate, measured on dev (a choice, so never on test): full vs quantised per figure."""
    figures = ((export or {}).get("quality") or {}).get("figures") or {}
    keys = ("full", "quantized", "retention")
    return [{"figure": name, **{k: f.get(k) for k in keys}} for name, f in figures.items()]


def collect_quality(
    run_dir: Path, base: dict | None, orpo: dict | None, export: dict | None, read_json: Callable[[Path], Any]
) -> dict[str, Any]:
    """Everything the quality section shows, JSON-able: from the eval results and export manifest the report has
    read, and the served model's and IFEval results it reads with ``read_json``."""
    results = {"base": base, "ORPO": orpo, "served": read_json(run_dir / EVALS["served"] / "results.json")}
    floor = (base or orpo or {}).get("constant_baseline")
    rows = []
    for name in FIGURES:
        values = {m: _ours(results[m], name) for m in MODELS}
        on_floor = estimate(floor[name], floor["ci"][name]) if floor and name in floor else None
        values["constant answer (floor)"] = on_floor
        rows.append({"figure": f"IF {name.replace('_', '-')}", "values": values})
    templates = {}
    for label, result in results.items():
        for t, figs in ((result or {}).get("instruction_following", {}).get("by_template") or {}).items():
            templates.setdefault(t, {})[label] = {n: figs[n] for n in FIGURES} | {"prompts": figs["prompts"]}
    ifeval = {}
    for label, folder in IFEVALS.items():
        r = read_json(run_dir / folder / "results.json")
        if r and "ifeval" in r:
            ife = r["ifeval"]
            ifeval[label] = {n: ife[n] for n in FIGURES} | {
                "prompts": ife["prompts"],
                "covered": ife["covered"],
                "uncovered": ife["uncovered"],
                "hit_token_limit": r["generation"]["hit_token_limit"],
                "max_new_tokens": r["generation"]["max_new_tokens"],
            }
            ifeval.setdefault("floor", r.get("constant_baseline"))
    prefs = {label: (res or {}).get("preference") for label, res in results.items()}
    lengths = {
        label: {k: res["generation"][k] for k in ("mean_tokens", "hit_token_limit", "answers", "max_new_tokens")}
        for label, res in results.items()
        if res and "generation" in res
    }  # an aligned model ends its answers: the share cut at the token limit sits beside the figures
    return {
        "served_label": served_label(read_json(run_dir / "serve" / "serve.json")),
        "lengths": lengths,
        "rows": rows,
        "diffs": {d: paired_diffs(run_dir / EVALS[a], run_dir / EVALS[b]) for d, (a, b) in DIFFS.items()},
        "by_template": templates,
        "ifeval": ifeval,
        "ifeval_diffs": {d: paired_diffs(run_dir / IFEVALS[a], run_dir / IFEVALS[b]) for d, (a, b) in DIFFS.items()},
        "export_gate": export_gate(export),
        "preference": {k: v for k, v in prefs.items() if v},
        "floor_answer": (floor or {}).get("answer"),
    }


def _diff_cell(d: dict | None) -> str:
    if not d:
        return "-"
    verdict = "differs" if d["excludes_zero"] else "no difference shown"
    return f"{d['value']:+.3f} [{d['ci_low']:+.3f}, {d['ci_high']:+.3f}] ({verdict})"


def quality_markdown(q: dict[str, Any], measured_on: dict[str, str]) -> list[str]:
    """The quality section's lines (the caller adds the chart)."""
    label = {"served": q.get("served_label") or "served"}
    heads = [label.get(c, c) for c in COLUMNS]
    lines = [
        "## Quality",
        "",
        "Our held-out test split (topics never trained on; report-only). 95 % bootstrap intervals, clustered by "
        "topic; an answer off its topic fails every instruction, so the floor is what a constant answer gets. "
        "Differences are paired (same prompts) and called only when their interval excludes 0.",
        "",
        "| figure | " + " | ".join(heads) + " | " + " | ".join(f"{d} (paired)" for d in DIFFS) + " |",
        "|---" * (len(COLUMNS) + len(DIFFS) + 1) + "|",
    ]
    diffs = q.get("diffs") or {}
    for row, name in zip(q["rows"], FIGURES, strict=True):
        cells = [fmt_ci(row["values"][c]) if row["values"][c] else "-" for c in COLUMNS]
        cells += [_diff_cell((diffs.get(d) or {}).get(name)) for d in DIFFS]
        lines.append(f"| {row['figure']} | " + " | ".join(cells) + " |")
    lines += [""] + [f"- {label.get(column, column)}: {how}" for column, how in measured_on.items()]
    for model, g in (q.get("lengths") or {}).items():
        lines.append(
            f"- {label.get(model, model)} answers: {g['mean_tokens']:.0f} tokens on average, {g['hit_token_limit']} "
            f"of {g['answers']} cut at the {g['max_new_tokens']}-token limit"
        )
    if q["floor_answer"]:
        lines.append(f"- constant answer (floor): the best of five fixed answers, {q['floor_answer']!r}")
    if q["by_template"]:
        lines += [
            "",
            "In-template rows use train's instruction wordings, kinds and values (on held-out topics); "
            "out-of-template rows use paraphrased wordings, novel values and kinds never trained on.",
            "",
            "| rows | model | prompts | prompt-strict | instruction-strict | mean |",
            "|---|---|---|---|---|---|",
        ]
        for t, models in q["by_template"].items():
            for model, f in models.items():
                lines.append(
                    f"| {t} | {label.get(model, model)} | {f['prompts']} | {fmt_ci(f['prompt_strict'])} | "
                    f"{fmt_ci(f['instruction_strict'])} | {fmt_ci(f['mean'])} |"
                )
    ife = q.get("ifeval") or {}
    models = [m for m in MODELS if m in ife]
    if models:
        lines += [
            "",
            f"### IFEval (Google's prompts and checkers, report-only): {ife[models[0]]['prompts']} of 541 prompts",
            "",
            "| figure | "
            + " | ".join(label.get(m, m) for m in models)
            + " | constant answer (floor) | "
            + " | ".join(f"{d} (paired)" for d in DIFFS)
            + " |",
            "|---" * (len(models) + len(DIFFS) + 2) + "|",
        ]
        idiffs = q.get("ifeval_diffs") or {}
        floor = ife.get("floor") or {}
        for name in FIGURES:
            cells = [fmt_ci(ife[m][name]) for m in models]
            cells.append(fmt_ci(floor[name]) if name in floor else "-")
            cells += [_diff_cell((idiffs.get(d) or {}).get(name)) for d in DIFFS]
            lines.append(f"| {name.replace('_', '-')} | " + " | ".join(cells) + " |")
        lines.append("")
        for m in models:
            f = ife[m]
            lines.append(
                f"- {label.get(m, m)}: instruction-strict on types our data covers {fmt_ci(f['covered']['strict'])}, "
                f"on types it does not {fmt_ci(f['uncovered']['strict'])}; {f['hit_token_limit']} of "
                f"{f['prompts']} answers hit the {f['max_new_tokens']}-token limit."
            )
    if q.get("export_gate"):
        lines += [
            "",
            "Export gate (orpo-export, on the dev split: a gate is a choice; merged ORPO vs its 4-bit export):",
            "",
            "| figure | merged | 4-bit | retention |",
            "|---|---|---|---|",
        ]
        for g in q["export_gate"]:
            cells = [f"{g[k]:.3f}" if isinstance(g.get(k), float | int) else "-" for k in ("full", "quantized")]
            retention = f"{g['retention']:.2f}" if isinstance(g.get("retention"), float | int) else "-"
            lines.append(f"| {g['figure'].replace('_', ' ')} | " + " | ".join(cells) + f" | {retention} |")
    if q["preference"]:
        lines += [
            "",
            "Preference accuracy per rejection type (the training objective on near-identical pairs, not a "
            "quality figure):",
            "",
            "| rejection | " + " | ".join(q["preference"]) + " |",
            "|---" * (len(q["preference"]) + 1) + "|",
        ]
        kinds = sorted({k for p in q["preference"].values() for k in p.get("per_rejection", {})})
        for kind in kinds:
            cells = [fmt_ci(p.get("per_rejection", {}).get(kind)) for p in q["preference"].values()]
            lines.append(f"| {kind} | " + " | ".join(cells) + " |")
    return lines
