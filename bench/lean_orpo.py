"""trl's stock ORPO forward vs our lean forward (orpo_forward: trl | lean), side by side, real training steps.

    .venv/bin/python bench/lean_orpo.py                                   # SmolLM2-135M, 3 x 2 grid (~35 min)
    .venv/bin/python bench/lean_orpo.py --fit-16gb                        # + the largest batch that fits 16 GB
    .venv/bin/python bench/lean_orpo.py --model tiny-smollm2 --steps 2 --warmup 1 --output /tmp/lean_orpo_tiny

Each (path, batch, length) runs ``orpo-train``'s own trainer (train.trainer.build_trainer: LoRA r16 all-linear, fp32
on CPU, no gradient checkpointing) in a fresh child process, so peak RSS (``ru_maxrss``) and CUDA max allocated are
that configuration's alone. Pairs come from our train split with responses lengthened (several answers joined) and
pre-truncated to exactly ``length`` tokens of prompt + response, so the length is controlled. After ``--warmup``
steps, ``--steps`` optimizer steps are timed; tokens/s counts the non-padding tokens of chosen + rejected. Paths are
interleaved (stock-lean, then lean-stock) so that machine noise hits both. Peak memory is close to linear in
batch x length, so ``peak = a + b x tokens`` is fitted per path over the grid; ``--fit-16gb`` predicts the largest
batch under ``--limit-gb`` at each length and checks the prediction at the longest length with one real run per
path. Every child runs under one malloc (``--allocator glibc|jemalloc``, default glibc as orpo-train): glibc's peak RSS
depends on heap fragmentation more than on live tensors for the checkpointed paths (train/allocator.py).
Writes ``OUTPUT.json`` and ``OUTPUT.md`` (default bench/results/lean_orpo).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from orpo_deploy.train.allocator import CHOICES as ALLOCATORS
from orpo_deploy.train.allocator import ENV_VAR, find_jemalloc, jemalloc_env

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "bench" / "results"
# bench name -> (TrainConfig.orpo_forward, gradient_checkpointing, checkpoint_policy); the -ckpt paths recompute the
# decoder layers in backward, lean-sac only their cheap ops (train/checkpointing.py). stock-ckpt is trl's ORPOConfig
# as it ships (gradient_checkpointing=True by default).
PATHS = {
    "stock": ("trl", False, "full"),
    "lean": ("lean", False, "full"),
    "lean-ckpt": ("lean", True, "full"),
    "lean-sac": ("lean", True, "selective"),
    "stock-ckpt": ("trl", True, "full"),
}
GB = 1e9  # decimal, as the figures


def synthetic_pairs(tokenizer, n: int, join: int = 8):
    """``n`` pairs of our train split whose responses are ``join`` consecutive answers: longer than any length."""
    from datasets import Dataset

    from orpo_deploy.train.data_prep import format_pairs
    from orpo_deploy.train.pipeline import load_pairs

    rows = format_pairs(load_pairs(None, "train"), tokenizer).to_list()

    def long_answer(key: str, i: int) -> str:
        return "\n\n".join(rows[(i + k) % len(rows)][key].replace(tokenizer.eos_token, "") for k in range(join))

    pairs = [
        {
            "prompt": rows[i % len(rows)]["prompt"],
            "chosen": long_answer("chosen", i),
            "rejected": long_answer("rejected", i),
        }
        for i in range(n)
    ]
    return Dataset.from_list(pairs)


def child(job: dict) -> dict:
    """One configuration in this (fresh) process: build orpo-train's trainer, run warm-up + timed steps."""
    import torch
    from transformers import AutoTokenizer, TrainerCallback

    from orpo_deploy.core.models import resolve_model
    from orpo_deploy.train.config import TrainConfig
    from orpo_deploy.train.data_prep import truncate_pairs
    from orpo_deploy.train.trainer import build_trainer

    torch.set_num_threads(job["threads"])
    batch, length, total_steps = job["batch"], job["length"], job["warmup"] + job["steps"]
    base_dir = resolve_model(job["model"])
    tokenizer = AutoTokenizer.from_pretrained(base_dir)
    raw = synthetic_pairs(tokenizer, 2 * batch * total_steps)  # spare pairs: truncation may make some identical
    pairs, _ = truncate_pairs(raw, tokenizer, max_length=length, max_prompt_length=length // 2)
    cfg = TrainConfig(
        model=job["model"],
        output_dir=job["workdir"],
        max_length=length,
        max_prompt_length=length // 2,
        batch_size=batch,
        max_steps=total_steps,
        warmup_ratio=0.0,
        logging_steps=10**6,
        save_steps=10**6,
        orpo_forward=PATHS[job["path"]][0],
        gradient_checkpointing=PATHS[job["path"]][1],
        checkpoint_policy=PATHS[job["path"]][2],
        logit_chunk_size=job["chunk_size"],
    )
    trainer, metrics = build_trainer(cfg, base_dir, tokenizer, pairs)
    marks: list[tuple[float, int]] = []

    class StepTimer(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            if torch.cuda.is_available():
                torch.cuda.synchronize()
            marks.append((time.perf_counter(), metrics.counter.tokens))

    trainer.add_callback(StepTimer())
    rss_before_train = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    trainer.train()
    timed = marks[job["warmup"] - 1 :]  # from the end of the last warm-up step
    seconds = timed[-1][0] - timed[0][0]
    tokens = timed[-1][1] - timed[0][1]  # the collator runs one batch ahead: same-sized batches, same count
    steps = len(timed) - 1
    return {
        "s_per_step": seconds / steps,
        "tokens_per_step": tokens / steps,
        "tokens_per_s": tokens / seconds,
        "peak_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
        "peak_rss_before_train_bytes": rss_before_train,
        "cuda_max_allocated_bytes": torch.cuda.max_memory_allocated() if torch.cuda.is_available() else None,
        "lean": bool(getattr(trainer, "lean", False)),
    }


def run_child(path: str, batch: int, length: int, args: argparse.Namespace, steps: int, warmup: int) -> dict:
    row = {"path": path, "batch": batch, "length": length, "tokens": 2 * batch * length}
    with tempfile.TemporaryDirectory(prefix="lean-orpo-bench-") as tmp:
        job = {
            "path": path,
            "batch": batch,
            "length": length,
            "model": args.model,
            "steps": steps,
            "warmup": warmup,
            "threads": args.threads,
            "chunk_size": args.chunk_size,
            "workdir": str(Path(tmp) / "run"),
            "result": str(Path(tmp) / "result.json"),
        }
        env = {**os.environ, "OMP_NUM_THREADS": str(args.threads), "TRL_EXPERIMENTAL_SILENCE": "1"}
        env = allocator_env(env, args.allocator)
        if args.malloc_mmap_threshold:
            # glibc keeps freed heap memory mapped (and raises its mmap threshold as large blocks are freed), so
            # peak RSS also counts the allocator's slack from earlier steps. A fixed threshold puts every tensor
            # above it in its own mapping, returned on free: peak RSS then follows the live tensors, as CUDA max
            # allocated does on a GPU. The same setting for every path.
            env["MALLOC_MMAP_THRESHOLD_"] = str(args.malloc_mmap_threshold)
        log = Path(tmp) / "child.log"
        started = time.perf_counter()
        try:
            with log.open("w") as out:
                proc = subprocess.run(
                    [sys.executable, __file__, "--child", json.dumps(job)],
                    cwd=REPO,
                    env=env,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    timeout=args.timeout,
                )
        except subprocess.TimeoutExpired:
            return {**row, "error": f"timed out after {args.timeout} s"}
        row["wall_s"] = round(time.perf_counter() - started, 1)
        if proc.returncode != 0 or not Path(job["result"]).is_file():
            tail = log.read_text()[-400:].strip().splitlines()
            return {**row, "error": f"exit {proc.returncode}: {tail[-1] if tail else ''}"}
        return {**row, **json.loads(Path(job["result"]).read_text())}


def check_allocator(choice: str) -> None:
    """Exit with one line when the asked-for malloc is not installed (jemalloc: train/allocator.py's library)."""
    if choice == "jemalloc" and find_jemalloc() is None:
        raise SystemExit("lean_orpo: --allocator jemalloc: libjemalloc.so.2 not found (setup_env.sh fetches it)")


def allocator_env(env: dict, allocator: str) -> dict:
    """The children's malloc, the same for every path."""
    env = {k: v for k, v in env.items() if k != "LD_PRELOAD" or "jemalloc" not in v}
    if allocator == "jemalloc":
        return jemalloc_env(env, find_jemalloc())
    return {**env, ENV_VAR: "glibc"}


def memory_of(row: dict) -> float | None:
    """The memory the 16 GB question is about: CUDA max allocated on a GPU, peak RSS on CPU (bytes)."""
    if "error" in row:
        return None
    return row["cuda_max_allocated_bytes"] if row.get("cuda_max_allocated_bytes") else row["peak_rss_bytes"]


def fit_memory(rows: list[dict]) -> dict | None:
    """Least squares ``memory = a + b * tokens`` over one path's grid runs."""
    points = [(r["tokens"], memory_of(r)) for r in rows if memory_of(r) is not None]
    if len({t for t, _ in points}) < 2:
        return None
    n = len(points)
    mean_t = sum(t for t, _ in points) / n
    mean_m = sum(m for _, m in points) / n
    b = sum((t - mean_t) * (m - mean_m) for t, m in points) / sum((t - mean_t) ** 2 for t, _ in points)
    a = mean_m - b * mean_t
    worst = max(abs(a + b * t - m) for t, m in points)
    return {"a_bytes": a, "b_bytes_per_token": b, "max_residual_bytes": worst, "points": n}


def largest_batches(fit: dict, lengths: list[int], limit: float) -> dict[int, int]:
    return {
        length: max(0, int((limit - fit["a_bytes"]) / (fit["b_bytes_per_token"] * 2 * length))) for length in lengths
    }


def fit_and_check(report: dict, paths: list[str], lengths: list[int], args: argparse.Namespace) -> None:
    """Per path: fit memory over the grid, predict the largest batch per length under the limit and, with
    ``--fit-16gb``, run the prediction at the longest length; refit with that run and, when the refit moves the
    prediction by over 10 %, check once more (``--fit-rounds``). One warm-up + one timed step per check."""
    limit, longest = args.limit_gb * GB, max(lengths)
    report["fits"], report["fit_checks"] = {}, []
    for path in paths:
        rows = [r for r in report["grid"] if r["path"] == path]
        fit = fit_memory(rows)
        report["fits"][path] = fit
        if fit is None:
            continue
        fit["largest_batch"] = largest_batches(fit, lengths, limit)
        batch = fit["largest_batch"][longest] if args.fit_16gb else 0
        for round_no in range(1, args.fit_rounds + 1):
            if batch < 1:
                break
            row = {**run_child(path, batch, longest, args, steps=1, warmup=1), "round": round_no}
            print(json.dumps(row), flush=True)
            report["fit_checks"].append(row)
            if "error" in row:
                break
            rows.append(row)
            fit = fit_memory(rows)
            fit["largest_batch"] = largest_batches(fit, lengths, limit)
            fit["with_checks"] = True
            report["fits"][path] = fit
            previous, batch = batch, fit["largest_batch"][longest]
            if abs(batch - previous) <= 0.1 * previous and memory_of(row) <= limit:
                break


def summarise(report: dict) -> None:
    """path/stock ratios per configuration (memory <= 0.5 and throughput >= 1 are the goals).

    Every path is compared with ``stock`` at equal batch and length; lean-ckpt also with stock-ckpt when that ran
    (like with like: both recompute the decoder layers). ``train_rss`` compares what training added on top of the
    loaded process (peak minus the peak before ``train()``): the part that grows with batch x length, without the
    ~1 GB of interpreter, libraries and weights.
    """
    by_key = {(r["path"], r["batch"], r["length"]): r for r in report["grid"]}
    report["ratios"] = []
    pairs = [(key, "stock") for key in by_key if not key[0].startswith("stock")]
    pairs += [(key, "stock-ckpt") for key in by_key if key[0] == "lean-ckpt"]
    for (path, batch, length), reference in pairs:
        lean, stock = by_key[(path, batch, length)], by_key.get((reference, batch, length))
        if stock is None or "error" in lean or "error" in stock:
            continue
        ratio = {"path": path, "vs": reference, "batch": batch, "length": length}
        ratio["peak_rss"] = lean["peak_rss_bytes"] / stock["peak_rss_bytes"]
        ratio["train_rss"] = train_rss(lean) / train_rss(stock)
        ratio["tokens_per_s"] = lean["tokens_per_s"] / stock["tokens_per_s"]
        ratio["s_per_step"] = lean["s_per_step"] / stock["s_per_step"]
        if lean.get("cuda_max_allocated_bytes") and stock.get("cuda_max_allocated_bytes"):
            ratio["cuda_max_allocated"] = lean["cuda_max_allocated_bytes"] / stock["cuda_max_allocated_bytes"]
        report["ratios"].append(ratio)


def train_rss(row: dict) -> int:
    return row["peak_rss_bytes"] - row["peak_rss_before_train_bytes"]


def markdown(report: dict) -> str:
    s = report["settings"]
    setup = (
        f"Model `{s['model']}`, LoRA r16 all-linear, fp32 on {s['device']}, {s['threads']} thread(s), "
        f"{s['warmup']} warm-up + {s['steps']} timed steps, lean chunk {s['chunk_size']} tokens; host {s['host']}; "
        f"malloc {s.get('allocator', 'glibc')}; "
        f"load average {s['loadavg_start']} at start, {s['loadavg_end']} at end. Memory in GB (1e9 bytes)."
        + (
            f" glibc MALLOC_MMAP_THRESHOLD_={s['malloc_mmap_threshold']} in every child (RSS follows live tensors)."
            if s.get("malloc_mmap_threshold")
            else ""
        )
    )
    lines = ["# ORPO step: trl's stock forward vs the lean forward", "", setup, ""]
    lines += [
        "| batch (pairs) | length | path | s/step | tokens/s | peak RSS GB | CUDA max alloc GB | note |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in report["grid"]:
        if "error" in r:
            lines.append(f"| {r['batch']} | {r['length']} | {r['path']} | - | - | - | - | {r['error']} |")
            continue
        cuda = f"{r['cuda_max_allocated_bytes'] / GB:.2f}" if r.get("cuda_max_allocated_bytes") else "-"
        lines.append(
            f"| {r['batch']} | {r['length']} | {r['path']} | {r['s_per_step']:.2f} | {r['tokens_per_s']:.0f} | "
            f"{r['peak_rss_bytes'] / GB:.2f} | {cuda} | |"
        )
    lines += [
        "",
        "Ratios to stock at equal batch and length (train RSS = peak minus the peak before train(): what grows).",
        "",
        "| path | vs | batch | length | peak RSS | train RSS | tokens/s | CUDA max alloc |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in report["ratios"]:
        cuda = f"{r['cuda_max_allocated']:.2f}" if "cuda_max_allocated" in r else "-"
        lines.append(
            f"| {r['path']} | {r.get('vs', 'stock')} | {r['batch']} | {r['length']} | {r['peak_rss']:.2f} | "
            f"{r['train_rss']:.2f} | "
            f"{r['tokens_per_s']:.2f} | {cuda} |"
        )
    for path, fit in report.get("fits", {}).items():
        if fit is None:
            continue
        lines += [
            "",
            f"**{path}**: memory ~ {fit['a_bytes'] / GB:.2f} GB + {fit['b_bytes_per_token'] / 1e6:.2f} MB x tokens "
            f"(tokens = 2 x batch x length; worst residual {fit['max_residual_bytes'] / GB:.2f} GB over "
            f"{fit['points']} runs{', checks included' if fit.get('with_checks') else ''}); predicted largest batch "
            f"under {s['limit_gb']} GB: "
            + ", ".join(f"{b} at length {length}" for length, b in fit["largest_batch"].items()),
        ]
    for r in report.get("fit_checks", []):
        measured = memory_of(r)
        verdict = r.get("error") or (
            f"measured {measured / GB:.2f} GB: {'fits' if measured <= s['limit_gb'] * GB else 'does NOT fit'}"
        )
        lines.append(f"- check {r['round']} {r['path']}: batch {r['batch']} x length {r['length']}: {verdict}")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--child", help=argparse.SUPPRESS)
    p.add_argument("--model", default="smollm2-135m-instruct", help="bundled name or HF folder")
    p.add_argument("--batch-sizes", default="1,2,4", help="pairs per step (comma-separated)")
    p.add_argument("--lengths", default="128,256", help="tokens of prompt + response (comma-separated)")
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--steps", type=int, default=3, help="timed steps")
    p.add_argument("--threads", type=int, default=2, help="torch threads per child (the issue measured 2)")
    p.add_argument("--chunk-size", type=int, default=512, help="logit_chunk_size of the lean path")
    p.add_argument("--paths", default="stock,lean,lean-ckpt", help=f"comma-separated, from {', '.join(PATHS)}")
    p.add_argument("--fit-16gb", action="store_true", help="predict and check the largest batch under --limit-gb")
    p.add_argument("--limit-gb", type=float, default=16.0)
    p.add_argument("--fit-rounds", type=int, default=2, help="at most this many checks per path")
    p.add_argument("--timeout", type=int, default=1800, help="seconds per child")
    p.add_argument(
        "--malloc-mmap-threshold", type=int, default=0, help="bytes; set glibc's MALLOC_MMAP_THRESHOLD_ in each child"
    )
    p.add_argument(
        "--allocator",
        choices=ALLOCATORS,
        default="glibc",
        help="children's malloc, the same for every path (jemalloc as with ORPO_DEPLOY_MALLOC=jemalloc)",
    )
    p.add_argument("--output", default=str(RESULTS / "lean_orpo"), help="path without suffix")
    args = p.parse_args(argv)
    if args.warmup < 1 or args.steps < 1:
        p.error("--warmup and --steps must be >= 1 (timing starts at the end of the last warm-up step)")
    if args.child:
        job = json.loads(args.child)
        Path(job["result"]).write_text(json.dumps(child(job)))
        return 0

    import torch

    check_allocator(args.allocator)
    if args.malloc_mmap_threshold and args.allocator != "glibc":
        p.error("--malloc-mmap-threshold is a glibc setting: add --allocator glibc")
    paths = args.paths.split(",")
    if "stock" not in paths or not set(paths) <= set(PATHS):
        p.error(f"--paths must include stock and name only {', '.join(PATHS)}")
    batches = [int(x) for x in args.batch_sizes.split(",")]
    lengths = [int(x) for x in args.lengths.split(",")]
    report = {
        "settings": {
            "model": args.model,
            "threads": args.threads,
            "warmup": args.warmup,
            "steps": args.steps,
            "chunk_size": args.chunk_size,
            "limit_gb": args.limit_gb,
            "malloc_mmap_threshold": args.malloc_mmap_threshold,
            "allocator": args.allocator,
            "device": "cuda" if torch.cuda.is_available() else "cpu",
            "host": f"{platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}",
            "loadavg_start": round(os.getloadavg()[0], 2),
        },
        "grid": [],
    }
    configs = [(b, length) for length in lengths for b in batches]
    for i, (batch, length) in enumerate(configs):
        for path in paths[i % len(paths) :] + paths[: i % len(paths)]:  # rotate the order: noise hits every path
            row = run_child(path, batch, length, args, args.steps, args.warmup)
            print(json.dumps(row), flush=True)
            report["grid"].append(row)
    summarise(report)
    fit_and_check(report, paths, lengths, args)
    report["settings"]["loadavg_end"] = round(os.getloadavg()[0], 2)
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    Path(args.output + ".json").write_text(json.dumps(report, indent=2) + "\n")
    Path(args.output + ".md").write_text(markdown(report))
    print(markdown(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
