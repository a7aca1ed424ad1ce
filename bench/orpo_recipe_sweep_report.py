"""Summarise an ORPO recipe sweep (bench/orpo_recipe_sweep.sh) into JSON and a Markdown table.

python bench/orpo_recipe_sweep_report.py RES_DIR [RES_DIR ...] --output bench/results/orpo_recipe_sweep
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

KEYS = ("prompt_strict", "prompt_loose", "instruction_strict", "instruction_loose")


def last_train_record(path: Path) -> dict:
    """The last logged training step (not an eval or the end-of-run summary)."""
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    train = [r for r in rows if "loss" in r and "eval_loss" not in r]
    return train[-1] if train else {}


def collect(res_dirs: list[Path]) -> list[dict]:
    runs = {}
    for res in res_dirs:
        for result in sorted(res.glob("*/results.json")):
            name = result.parent.name
            data = json.loads(result.read_text())
            row = {"name": name, "wall_s": data["timings_s"]["total"]}
            row["preference_accuracy"] = data["preference"]["preference_accuracy"]
            row["mean_margin"] = data["preference"]["mean_margin"]
            row.update({k: data["instruction_following"][k] for k in KEYS})
            cfg = (data.get("model_manifest") or {}).get("config") or {}
            row.update({k: cfg.get(k) for k in ("beta", "learning_rate", "max_steps")})
            metrics = res / f"{name}.metrics.jsonl"
            if metrics.is_file():
                last = last_train_record(metrics)
                row["final_log_odds_ratio"] = last.get("log_odds_ratio")
                row["final_nll_loss"] = last.get("nll_loss")
            runs[name] = row
    return sorted(runs.values(), key=lambda r: (r["name"] != "base", r.get("max_steps") or 0, r["name"]))


def to_markdown(rows: list[dict], note: str) -> str:
    base = next((r for r in rows if r["name"] == "base"), None)
    metrics = ("preference_accuracy", "mean_margin", *KEYS)
    lines = [
        "# ORPO recipe sweep: beta x learning rate x steps on SmolLM2-135M-Instruct",
        "",
        note,
        "",
        "| run | beta | lr | steps | pref. acc. | margin | IF prompt-strict | IF prompt-loose | IF instr-strict "
        "| IF instr-loose | final log_odds_ratio |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        cells = [f"{r[k]:.3f}" + ("" if base is None or r is base else f" ({r[k] - base[k]:+.3f})") for k in metrics]
        lr = r.get("learning_rate")
        settings = [str(r.get("beta") or "-"), f"{lr:.0e}" if lr else "-", str(r.get("max_steps") or "-")]
        lor = r.get("final_log_odds_ratio")
        lines.append("| " + " | ".join([r["name"], *settings, *cells, "-" if lor is None else f"{lor:.3f}"]) + " |")
    return "\n".join(lines) + "\n"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("res_dirs", nargs="+", type=Path)
    p.add_argument("--output", required=True, help="path without suffix")
    p.add_argument("--note", default="", help="a paragraph on where and how it ran")
    args = p.parse_args()
    rows = collect(args.res_dirs)
    out = Path(args.output)
    out.with_suffix(".json").write_text(json.dumps({"note": args.note, "runs": rows}, indent=2) + "\n")
    out.with_suffix(".md").write_text(to_markdown(rows, args.note))
    print(out.with_suffix(".md").read_text())


if __name__ == "__main__":
    main()
