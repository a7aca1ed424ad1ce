"""The report's quality section: every figure with its 95 % interval, the constant-answer floor beside the models,
paired differences (ORPO minus base, same prompts), our split's in- and out-of-template rows, and IFEval."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from orpo_deploy.evaluation.markdown import fmt_ci
from orpo_deploy.evaluation.paired import paired_diffs
from orpo_deploy.evaluation.stats import IF_FIGURES

FIGURES = (*IF_FIGURES, "mean")
COLUMNS = ("base", "ORPO", "ORPO (export check)", "quantised", "constant answer (floor)")


def estimate(value: float | None, ci: list | None = None) -> dict | None:
    """A figure as {value, ci_low, ci_high} (the bounds None where nothing measured them)."""
    if value is None:
        return None
    low, high = ci if ci else (None, None)
    return {"value": value, "ci_low": low, "ci_high": high}


def _ours(result: dict | None, name: str) -> dict | None:
    inf = (result or {}).get("instruction_following")
    return estimate(inf[name], (inf.get("ci") or {}).get(name)) if inf and name in inf else None


def _export(export: dict | None, side: str, name: str) -> dict | None:
    figures = ((export or {}).get("quality") or {}).get(side) or {}
    rates = figures.get("instruction_following_rates") or {}
    return estimate(rates.get(name), (figures.get("instruction_following_ci") or {}).get(name))


def collect_quality(
    run_dir: Path, base: dict | None, orpo: dict | None, export: dict | None, read_json: Callable[[Path], Any]
) -> dict[str, Any]:
    """Everything the quality section shows, JSON-able: from the eval results and export manifest the report has
    read, and the IFEval results it reads with ``read_json``."""
    floor = (base or orpo or {}).get("constant_baseline")
    rows = []
    for name in FIGURES:
        values = {
            "base": _ours(base, name),
            "ORPO": _ours(orpo, name),
            "ORPO (export check)": _export(export, "full", name),
            "quantised": _export(export, "quantized", name),
            "constant answer (floor)": estimate(floor[name], floor["ci"][name]) if floor and name in floor else None,
        }
        rows.append({"figure": f"IF {name.replace('_', '-')}", "values": values})
    templates = {}
    for label, result in (("base", base), ("ORPO", orpo)):
        for t, figs in ((result or {}).get("instruction_following", {}).get("by_template") or {}).items():
            templates.setdefault(t, {})[label] = {n: figs[n] for n in FIGURES} | {"prompts": figs["prompts"]}
    ifeval = {}
    for label, folder in (("base", "ifeval-base"), ("ORPO", "ifeval-orpo")):
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
    prefs = {label: (res or {}).get("preference") for label, res in (("base", base), ("ORPO", orpo))}
    lengths = {
        label: {k: res["generation"][k] for k in ("mean_tokens", "hit_token_limit", "answers", "max_new_tokens")}
        for label, res in (("base", base), ("ORPO", orpo))
        if res and "generation" in res
    }  # an aligned model ends its answers: the share cut at the token limit sits beside the figures
    return {
        "lengths": lengths,
        "rows": rows,
        "orpo_minus_base": paired_diffs(run_dir / "eval-base", run_dir / "eval-orpo"),
        "by_template": templates,
        "ifeval": ifeval,
        "ifeval_orpo_minus_base": paired_diffs(run_dir / "ifeval-base", run_dir / "ifeval-orpo"),
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
    lines = [
        "## Quality",
        "",
        "Our held-out test split (topics never trained on). 95 % bootstrap intervals, clustered "
        "by topic; an answer off its topic fails every instruction, so the floor is what a constant answer gets.",
        "",
        "| figure | " + " | ".join(COLUMNS) + " | ORPO - base (paired) |",
        "|---" * (len(COLUMNS) + 2) + "|",
    ]
    diffs = q.get("orpo_minus_base") or {}
    for row, name in zip(q["rows"], FIGURES, strict=True):
        cells = [fmt_ci(row["values"][c]) if row["values"][c] else "-" for c in COLUMNS]
        lines.append(f"| {row['figure']} | " + " | ".join(cells) + f" | {_diff_cell(diffs.get(name))} |")
    lines += [""] + [f"- {column}: {how}" for column, how in measured_on.items()]
    for label, g in (q.get("lengths") or {}).items():
        lines.append(
            f"- {label} answers: {g['mean_tokens']:.0f} tokens on average, {g['hit_token_limit']} of {g['answers']} "
            f"cut at the {g['max_new_tokens']}-token limit"
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
            for label, f in models.items():
                lines.append(
                    f"| {t} | {label} | {f['prompts']} | {fmt_ci(f['prompt_strict'])} | "
                    f"{fmt_ci(f['instruction_strict'])} | {fmt_ci(f['mean'])} |"
                )
    ife = q.get("ifeval") or {}
    if any(k in ife for k in ("base", "ORPO")):
        any_model = ife.get("base") or ife.get("ORPO")
        lines += [
            "",
            f"### IFEval (Google's prompts and checkers, report-only): {any_model['prompts']} of 541 prompts",
            "",
            "| figure | base | ORPO | constant answer (floor) | ORPO - base (paired) |",
            "|---|---|---|---|---|",
        ]
        idiffs = q.get("ifeval_orpo_minus_base") or {}
        floor = ife.get("floor") or {}
        for name in FIGURES:
            cells = [fmt_ci(ife[m][name]) if m in ife else "-" for m in ("base", "ORPO")]
            cells.append(fmt_ci(floor[name]) if name in floor else "-")
            lines.append(f"| {name.replace('_', '-')} | " + " | ".join(cells) + f" | {_diff_cell(idiffs.get(name))} |")
        for m in ("base", "ORPO"):
            if m in ife:
                f = ife[m]
                lines.append(
                    f"\n- {m}: instruction-strict on types our data covers {fmt_ci(f['covered']['strict'])}, "
                    f"on types it does not {fmt_ci(f['uncovered']['strict'])}; {f['hit_token_limit']} of "
                    f"{f['prompts']} answers hit the {f['max_new_tokens']}-token limit."
                )
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
