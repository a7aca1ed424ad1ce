"""The figures of a comparison and the verdicts on the three claims (pure: no model, no I/O).

The claims (ORPO's authors and the lab this project follows): ORPO takes 50-60% of SFT + DPO's time, needs 1x
against 2x the memory, and reaches a better win rate. Verdicts are 'confirmed', 'refuted' or 'inconclusive',
each with the numbers it rests on. We have no judge model, so "win rate" is stood in for by the evaluator's
instruction-following rate (prompt-level strict) of ORPO against SFT -> DPO on the same held-out prompts.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from orpo_deploy.evaluation.markdown import fmt_ci

# Arm -> the training stages it runs, in order. Totals: times add up, peak memory is the max over stages.
ARMS = {"sft": ("sft",), "sft_dpo": ("sft", "dpo"), "orpo": ("orpo",)}
ARM_LABELS = {"base": "base (untrained)", "sft": "SFT alone", "sft_dpo": "SFT -> DPO", "orpo": "ORPO"}
TIME_CLAIM = (0.50, 0.60)  # ORPO time / SFT+DPO time
MEMORY_CLAIM = 0.50  # ORPO peak / SFT+DPO peak ("1x against 2x")
MEMORY_TOLERANCE = 0.05  # +- around MEMORY_CLAIM still counts as confirmed
QUALITY_KEY = "prompt_strict"  # instruction following, prompt-level strict: the stand-in for a win rate


def arm_totals(stages: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Per arm: summed times, max peak memory, and tokens/s weighted by each stage's training-loop time."""
    totals = {}
    for arm, names in ARMS.items():
        parts = [stages[n] for n in names]
        loop = sum(p["train_loop_s"] for p in parts)
        tokens = sum(p["tokens_per_second"] * p["train_loop_s"] for p in parts)
        cuda = [p.get("cuda_max_allocated_mib") for p in parts]
        totals[arm] = {
            "stages": list(names),
            "process_s": round(sum(p["process_s"] for p in parts), 2),
            "train_loop_s": round(loop, 2),
            "steps": sum(p["global_step"] for p in parts),
            "tokens_per_second": round(tokens / loop, 1) if loop > 0 else 0.0,
            "peak_rss_mib": max(p["peak_rss_mib"] for p in parts),
            "cuda_max_allocated_mib": max(cuda) if all(c is not None for c in cuda) else None,
        }
    return totals


def peak_memory(totals: dict[str, Any]) -> float:
    """The memory figure the claim is judged on: CUDA max allocated on a GPU, else peak RSS."""
    cuda = totals.get("cuda_max_allocated_mib")
    return cuda if cuda is not None else totals["peak_rss_mib"]


def time_claim(orpo: dict[str, Any], sft_dpo: dict[str, Any]) -> dict[str, Any]:
    ratio = orpo["process_s"] / sft_dpo["process_s"]
    loop_ratio = orpo["train_loop_s"] / sft_dpo["train_loop_s"]
    low, high = TIME_CLAIM
    detail = (
        f"ORPO {orpo['process_s']:.0f} s vs SFT -> DPO {sft_dpo['process_s']:.0f} s wall = {ratio:.0%} "
        f"(training loops only: {loop_ratio:.0%}); claimed {low:.0%}-{high:.0%}"
    )
    if ratio < low:
        verdict, detail = "refuted", detail + ": ORPO was cheaper than claimed"
    elif ratio > high:
        verdict, detail = "refuted", detail + ": ORPO was dearer than claimed"
    else:
        verdict = "confirmed"
    return {
        "claim": "ORPO takes 50-60% of SFT + DPO's time",
        "ratio": ratio,
        "loop_ratio": loop_ratio,
        "verdict": verdict,
        "detail": detail,
    }


def memory_claim(orpo: dict[str, Any], sft_dpo: dict[str, Any], measure: str) -> dict[str, Any]:
    ratio = peak_memory(orpo) / peak_memory(sft_dpo)
    detail = (
        f"{measure}: ORPO {peak_memory(orpo):.0f} MiB vs SFT -> DPO {peak_memory(sft_dpo):.0f} MiB = "
        f"{ratio:.2f}x; claimed {MEMORY_CLAIM:.2f}x (+-{MEMORY_TOLERANCE:.2f})"
    )
    if abs(ratio - MEMORY_CLAIM) <= MEMORY_TOLERANCE:
        verdict = "confirmed"
    else:
        verdict = "refuted"
        detail += (
            ". With LoRA, DPO's reference is the adapter-disabled policy, so no second copy of the weights is held"
            if ratio > MEMORY_CLAIM
            else ". ORPO used even less than claimed"
        )
    return {
        "claim": "ORPO needs 1x memory against SFT + DPO's 2x",
        "ratio": ratio,
        "verdict": verdict,
        "detail": detail,
    }


def quality_claim(orpo: dict[str, Any], sft_dpo: dict[str, Any]) -> dict[str, Any]:
    """ORPO vs SFT -> DPO on the stand-in for a win rate, decided only when the paired 95 % interval of the
    difference (bootstrap over the same prompts, clustered by topic) lies wholly on one side of zero."""
    from orpo_deploy.evaluation.paired import paired_diffs

    p1, p2 = orpo["instruction_following"][QUALITY_KEY], sft_dpo["instruction_following"][QUALITY_KEY]
    n = orpo["instruction_following"]["prompts"]
    d = (paired_diffs(Path(sft_dpo["results_dir"]), Path(orpo["results_dir"])) or {}).get(QUALITY_KEY)
    if d is None:
        raise ValueError("the quality claim needs both arms' responses.jsonl (same prompts) for a paired interval")
    pa1, pa2 = orpo["preference"]["preference_accuracy"], sft_dpo["preference"]["preference_accuracy"]
    detail = (
        f"instruction following ({QUALITY_KEY.replace('_', '-')}): ORPO {p1:.3f} vs SFT -> DPO {p2:.3f} on {n} "
        f"prompts, paired difference {d['value']:+.3f} (95 % CI {d['ci_low']:+.3f} to {d['ci_high']:+.3f}); "
        f"preference accuracy {pa1:.3f} vs {pa2:.3f}"
    )
    if d["ci_low"] > 0:
        verdict = "confirmed"
    elif d["ci_high"] < 0:
        verdict = "refuted"
    else:
        verdict = "inconclusive"
        detail += ": the interval includes zero, too close to call at this sample size"
    return {
        "claim": "ORPO reaches a better win rate than SFT + DPO",
        "difference": d["value"],
        "ci": [d["ci_low"], d["ci_high"]],
        "verdict": verdict,
        "detail": detail,
    }


def build_report(
    config: dict[str, Any],
    stages: dict[str, dict[str, Any]],
    evals: dict[str, dict[str, Any]],
    curves: dict[str, list[dict[str, Any]]],
    machine: dict[str, Any],
) -> dict[str, Any]:
    """Every figure of the comparison, with the claims judged; JSON-serialisable."""
    totals = arm_totals(stages)
    measure = machine.get("memory_measure", "peak RSS")
    claims = [
        time_claim(totals["orpo"], totals["sft_dpo"]),
        memory_claim(totals["orpo"], totals["sft_dpo"], measure),
        quality_claim(evals["orpo"], evals["sft_dpo"]),
    ]
    return {
        "config": config,
        "machine": machine,
        "stages": stages,
        "arms": totals,
        "eval": evals,
        "claims": claims,
        "curves": curves,
    }


def to_markdown(report: dict[str, Any]) -> str:
    cfg, machine, arms, evals = report["config"], report["machine"], report["arms"], report["eval"]
    lines = [
        "# orpo-compare: ORPO against SFT -> DPO and SFT alone",
        "",
        f"Model `{cfg['model']}`, {report['stages']['orpo']['pairs']} pairs x {cfg['epochs']} pass(es) per stage, "
        f"batch {cfg['batch_size']} x accumulation {cfg['grad_accum']}, LoRA r{cfg['lora_r']}/alpha "
        f"{cfg['lora_alpha']} on {cfg['lora_target_modules']}, max_length {cfg['max_length']}, precision "
        f"{cfg['precision']}. Learning rates: ORPO {cfg['orpo_learning_rate']:g} (lambda {cfg['orpo_beta']:g}), "
        f"SFT {cfg['sft_learning_rate']:g}, DPO {cfg['dpo_learning_rate']:g} (beta {cfg['dpo_beta']:g}).",
        f"Device: {machine['device']}, {machine['cpu_count']} CPUs, OMP_NUM_THREADS={machine['omp_num_threads']}, "
        f"load average at the end {machine['load_average_at_end']}. Memory: {machine['memory_measure']}.",
        f"Evaluation: {evals['orpo']['instruction_following']['prompts']} held-out prompts, "
        f"{evals['orpo']['preference']['pairs']} pairs (eval_limit {cfg['eval_limit']}), engine {cfg['eval_engine']}.",
        "",
        "| arm | wall time (s) | training loops (s) | steps | peak memory (MiB) | tokens/s | preference acc. "
        "| IF prompt strict | IF prompt loose | IF instr. strict |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name in ("base", "sft", "sft_dpo", "orpo"):
        ev = evals[name]
        inf = ev["instruction_following"]
        ci = inf.get("ci", {})
        quality = f"{ev['preference']['preference_accuracy']:.3f} | " + " | ".join(
            fmt_ci(inf[k], ci.get(k)) for k in ("prompt_strict", "prompt_loose", "instruction_strict")
        )
        if name in arms:
            a = arms[name]
            cost = (
                f"{a['process_s']:.0f} | {a['train_loop_s']:.0f} | {a['steps']} | {peak_memory(a):.0f} "
                f"| {a['tokens_per_second']:.0f}"
            )
        else:
            cost = "- | - | - | - | -"
        lines.append(f"| {ARM_LABELS[name]} | {cost} | {quality} |")
    floor = evals["base"].get("constant_baseline")
    if floor:
        cells = " | ".join(
            fmt_ci(floor[k], floor["ci"][k]) for k in ("prompt_strict", "prompt_loose", "instruction_strict")
        )
        lines.append(f"| constant answer (floor) | - | - | - | - | - | - | {cells} |")
    lines += ["", "IF figures: 95 % bootstrap intervals over prompts, clustered by topic, in brackets."]
    lines += ["", "Per stage (each in its own process):", ""]
    lines += [
        "| stage | wall time (s) | in-process (s) | training loop (s) | steps | peak RSS (MiB) | CUDA max alloc. (MiB) "
        "| tokens/s |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, s in report["stages"].items():
        cuda = "-" if s.get("cuda_max_allocated_mib") is None else f"{s['cuda_max_allocated_mib']:.0f}"
        lines.append(
            f"| {name} | {s['process_s']:.0f} | {s['wall_s']:.0f} | {s['train_loop_s']:.0f} | {s['global_step']} "
            f"| {s['peak_rss_mib']:.0f} | {cuda} | {s['tokens_per_second']:.0f} |"
        )
    lines += ["", "## The claims", ""]
    for c in report["claims"]:
        lines.append(f"- **{c['claim']}: {c['verdict']}.** {c['detail']}.")
    lines += [
        "",
        "## How to read this",
        "",
        "- Wall time is each stage's process from start to exit: imports, loading, training, saving the adapter and "
        "the merge (SFT -> DPO needs the SFT merge as DPO's starting point). SFT -> DPO = SFT + DPO; its peak "
        "memory is the larger of the two.",
        "- Equal budget: every stage makes the same passes over the same pairs with the same batch, so SFT -> DPO "
        "runs twice the optimizer steps of ORPO. tokens/s counts the non-padding tokens the trainer fed forward "
        "(ORPO and DPO: prompt + chosen and prompt + rejected; SFT: prompt + chosen); DPO's reference pass over "
        "the same tokens is not counted again.",
        "- DPOTrainer (trl 1.16) scores the policy and the reference through a tiled LM head that never "
        "materialises the [batch, length, vocab] logits; the ORPO arm runs orpo-train's default lean forward "
        "(train/lean_logps.py), which does not hold them either.",
        "- DPO trains a new LoRA on the merged SFT model; its reference is that model with the adapter disabled, "
        "so no second copy of the weights is loaded. The '2x memory' claim assumes a full-weight reference copy.",
        "- 'Win rate' in the claim is a judge's pairwise preference; we have no judge, so the instruction-following "
        "rate (prompt-level strict, IFEval style) on held-out prompts stands in for it, and preference accuracy "
        "(chosen's length-averaged log-prob above rejected's) is shown beside it.",
        "- Every arm is evaluated from an fp32 merge of its adapter(s), with the same prompts and settings.",
        "",
        f"Charts: {', '.join(report.get('charts', []))}. All figures: report.json. "
        f"Total run time {report.get('total_wall_s', 0):.0f} s.",
    ]
    return "\n".join(lines) + "\n"
