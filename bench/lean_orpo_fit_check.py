"""Does a batch fit? One bench/lean_orpo.py child per PATH@BATCH (1 warm-up + 1 timed step), peak RSS against a limit.

    .venv/bin/python bench/lean_orpo_fit_check.py stock@8 lean@17 lean-sac@31 lean-ckpt@32 \\
        --output bench/results/lean_orpo_jemalloc_fit16

For checking the 16 GB predictions of bench/lean_orpo.py's linear fits without re-running its grid. Same model,
threads, chunk size and malloc choice as there; writes OUTPUT.json and OUTPUT.md.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import lean_orpo  # noqa: E402


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("checks", nargs="+", metavar="PATH@BATCH")
    p.add_argument("--model", default="smollm2-135m-instruct")
    p.add_argument("--length", type=int, default=256)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--chunk-size", type=int, default=512)
    p.add_argument("--allocator", choices=lean_orpo.ALLOCATORS, default="glibc")
    p.add_argument("--limit-gb", type=float, default=16.0)
    p.add_argument("--timeout", type=int, default=3600)
    p.add_argument("--output", required=True, help="path without suffix")
    args = p.parse_args()
    args.malloc_mmap_threshold = 0
    lean_orpo.check_allocator(args.allocator)
    checks = [check.partition("@") for check in args.checks]
    for check, (path, _, batch) in zip(args.checks, checks, strict=True):  # all before the first (minutes-long) run
        if path not in lean_orpo.PATHS or not batch.isdigit():
            p.error(f"expected PATH@BATCH with PATH in {', '.join(lean_orpo.PATHS)}, got {check!r}")
    rows = []
    for path, _, batch in checks:
        row = lean_orpo.run_child(path, int(batch), args.length, args, steps=1, warmup=1)
        print(json.dumps(row), flush=True)
        rows.append(row)
    write_report(rows, args)
    return 0


def write_report(rows: list[dict], args: argparse.Namespace) -> None:
    lines = [
        f"# Fit checks: peak RSS against {args.limit_gb} GB",
        "",
        f"Model `{args.model}`, length {args.length}, {args.threads} threads, malloc {args.allocator}, "
        "1 warm-up + 1 timed step per run.",
        "",
        "| path | batch (pairs) | peak RSS GB | fits | s/step |",
        "|---|---|---|---|---|",
    ]
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['path']} | {r['batch']} | - | {r['error']} | - |")
            continue
        gb = r["peak_rss_bytes"] / lean_orpo.GB
        lines.append(
            f"| {r['path']} | {r['batch']} | {gb:.2f} | {'yes' if gb <= args.limit_gb else 'no'} | "
            f"{r['s_per_step']:.1f} |"
        )
    Path(args.output + ".json").write_text(json.dumps({"settings": vars(args), "runs": rows}, indent=2) + "\n")
    Path(args.output + ".md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    sys.exit(main())
