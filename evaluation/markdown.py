"""``results.md``: every figure with its 95 % interval, beside the constant-answer floor."""

from __future__ import annotations

from typing import Any

FIGURE_NAMES = ("prompt_strict", "prompt_loose", "instruction_strict", "instruction_loose", "mean")


def fmt_ci(figure: dict | float | None, ci: list | None = None) -> str:
    """'0.289 [0.251, 0.327]' from an Estimate dict, or from a value and its [low, high]; '-' for None."""
    if figure is None:
        return "-"
    if isinstance(figure, dict):
        if figure.get("ci_low") is None or figure.get("ci_high") is None:
            return f"{figure['value']:.3f}"
        return f"{figure['value']:.3f} [{figure['ci_low']:.3f}, {figure['ci_high']:.3f}]"
    return f"{figure:.3f}" + (f" [{ci[0]:.3f}, {ci[1]:.3f}]" if ci else "")


def figure(result_part: dict, name: str) -> str:
    """One figure of an ``ifeval`` block (Estimate dicts) or an ``instruction_following`` block (floats + ci)."""
    value = result_part[name]
    return fmt_ci(value) if isinstance(value, dict) else fmt_ci(value, result_part.get("ci", {}).get(name))


def _ifeval_lines(ife: dict, base: dict | None) -> list[str]:
    lines = [f"IFEval: {ife['prompts']} prompts, {ife['instructions']} instructions, Google's checkers.", ""]
    lines += ["| figure | model | constant answer (floor) |", "|---|---|---|"]
    for name in FIGURE_NAMES:
        lines.append(f"| {name.replace('_', '-')} | {figure(ife, name)} | {figure(base, name) if base else '-'} |")
    lines += ["", "| instruction types | prompts | strict | loose |", "|---|---|---|---|"]
    for group in ("covered", "uncovered"):
        g = ife[group]
        lines.append(
            f"| {group} by our training data | {g['strict']['n']} | {fmt_ci(g['strict'])} | {fmt_ci(g['loose'])} |"
        )
    lines += ["", "| type | covered | strict | loose |", "|---|---|---|---|"]
    for t, v in ife["per_type"].items():
        lines.append(f"| {t} | {'yes' if v['covered'] else 'no'} | {fmt_ci(v['strict'])} | {fmt_ci(v['loose'])} |")
    return lines


def _ours_lines(inf: dict, base: dict | None) -> list[str]:
    lines = [
        f"Our held-out split: {inf['prompts']} prompts, {inf['instructions']} instructions, intervals clustered by "
        f"{inf['clustered_by']}. An answer off its topic fails every instruction (on topic: "
        f"{inf['relevance_rate']:.3f}).",
        "",
    ]
    templates = list(inf.get("by_template", {}))
    head = ["model", *(f"{t}-of-template rows" if t == "out" else f"{t}-template rows" for t in templates)]
    head.append("constant answer (floor)")
    lines += ["| figure | " + " | ".join(head) + " |", "|---" * (len(head) + 1) + "|"]
    for name in FIGURE_NAMES:
        cells = [figure(inf, name), *(figure(inf["by_template"][t], name) for t in templates)]
        cells.append(figure(base, name) if base else "-")
        lines.append(f"| {name.replace('_', '-')} | " + " | ".join(cells) + " |")
    if templates:
        counts = ", ".join(f"{t}: {inf['by_template'][t]['prompts']}" for t in templates)
        lines += ["", f"Rows per template ({counts}): 'in' uses train's wordings, kinds and values on held-out "
                  "topics; 'out' uses paraphrased wordings, novel values and test-only kinds."]  # fmt: skip
    return lines


def to_markdown(result: dict[str, Any]) -> str:
    cfg = result["config"]
    gen = result.get("generation", {})
    lines = [f"# orpo-eval ({cfg['benchmark']}): {cfg['model'] or cfg['endpoint']}", ""]
    if gen:
        lines += [
            f"Greedy, the model's chat template, at most {gen['max_new_tokens']} new tokens: {gen['hit_token_limit']} "
            f"of {gen['answers']} answers hit that limit (mean {gen['mean_tokens']:.0f} tokens). "
            "95 % bootstrap intervals in brackets.",
            "",
        ]
    base = result.get("constant_baseline")
    if "ifeval" in result:
        lines += _ifeval_lines(result["ifeval"], base)
    if "instruction_following" in result:
        lines += _ours_lines(result["instruction_following"], base)
    if base:
        lines += ["", f"Floor: the best of {len(base['candidates'])} constant answers, {base['answer']!r}."]
    if "preference" in result:
        pref = result["preference"]
        lines += [
            "",
            f"Preference accuracy, {pref['pairs']} pairs (on near-identical pairs this is the training objective, "
            "not a quality measure), per rejection type:",
            "",
            "| rejection | pairs | accuracy |",
            "|---|---|---|",
        ]
        for kind, e in pref.get("per_rejection", {}).items():
            lines.append(f"| {kind} | {e['n']} | {fmt_ci(e)} |")
        lines.append(f"| all | {pref['pairs']} | {pref['preference_accuracy']:.3f} |")
    lines += ["", f"Wall time {result['timings_s']['total']:.0f} s."]
    return "\n".join(lines) + "\n"
