"""Decode throughput of the full model vs its GPTQ and AWQ exports, same prompts, one run.

    .venv/bin/python bench/export_serving.py --full smollm2-135m-instruct \
        --gptq ~/.cache/orpo-deploy/exports/smollm2-gptq --awq ~/.cache/orpo-deploy/exports/smollm2-awq

Engines: vLLM's offline engine (``LLM.chat``, enforce_eager, greedy, fixed ``max_tokens`` with ``ignore_eos``) and
HF ``generate`` (fp32 on CPU, ``min_new_tokens = max_new_tokens``; 4-bit folders run gptqmodel's torch kernels).
Each (engine, model) runs in its own process, so one engine's memory and threads never slow the next, and a crash
is recorded instead of ending the run. A 4-bit folder is not started in vLLM where vLLM has no kernel for it on
this host (see ``export.quality.vllm_serves_4bit``); the row says so. Timings exclude start-up and one warm-up
request. Writes bench/results/export_serving.json and .md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"


def load_prompts(n: int) -> list[list[dict[str, str]]]:
    from orpo_deploy.data.load import load_preference_dataset
    from orpo_deploy.export.calibration import evenly_spaced

    rows = evenly_spaced(load_preference_dataset(None, split="test").to_list(), n)
    return [r["prompt"] for r in rows]


def run_vllm(model_dir: str, prompts: list, max_tokens: int) -> dict:
    for key, value in (
        ("VLLM_CPU_KVCACHE_SPACE", "1"),
        ("VLLM_CPU_OMP_THREADS_BIND", "auto"),
        ("VLLM_CPU_NUM_OF_RESERVED_CPU", "0"),
        ("VLLM_NO_USAGE_STATS", "1"),
    ):
        os.environ.setdefault(key, value)
    from vllm import LLM, SamplingParams

    start = time.perf_counter()
    llm = LLM(model=model_dir, enforce_eager=True, max_model_len=1024, seed=0)
    startup = time.perf_counter() - start
    params = SamplingParams(temperature=0.0, max_tokens=max_tokens, ignore_eos=True)
    llm.chat(prompts[:1], params, use_tqdm=False)  # warm-up

    def timed(batch: list) -> tuple[int, float]:
        t = time.perf_counter()
        outs = llm.chat(batch, params, use_tqdm=False)
        return sum(len(o.outputs[0].token_ids) for o in outs), time.perf_counter() - t

    return {"startup_s": round(startup, 1), **measure(timed, prompts)}


def run_hf(model_dir: str, prompts: list, max_tokens: int) -> dict:
    import torch

    from orpo_deploy.evaluation.loading import load_model

    start = time.perf_counter()
    _, model, tok = load_model(model_dir)
    startup = time.perf_counter() - start
    tok.padding_side = "left"

    def timed(batch: list) -> tuple[int, float]:
        texts = [tok.apply_chat_template(p, tokenize=False, add_generation_prompt=True) for p in batch]
        enc = tok(texts, return_tensors="pt", padding=True, add_special_tokens=False)
        t = time.perf_counter()
        with torch.no_grad():
            out = model.generate(
                **enc,
                do_sample=False,
                max_new_tokens=max_tokens,
                min_new_tokens=max_tokens,
                pad_token_id=tok.pad_token_id or tok.eos_token_id,
            )
        return (out.shape[1] - enc["input_ids"].shape[1]) * len(batch), time.perf_counter() - t

    timed(prompts[:1])  # warm-up
    return {"startup_s": round(startup, 1), **measure(timed, prompts)}


def measure(timed, prompts: list) -> dict:
    """Output tokens/s for the whole batch at once and for the first 4 prompts one at a time (1 stream)."""
    tokens, seconds = timed(prompts)
    single_tokens, single_s = 0, 0.0
    for p in prompts[:4]:
        n, s = timed([p])
        single_tokens, single_s = single_tokens + n, single_s + s
    return {
        "batch": len(prompts),
        "batch_tokens": tokens,
        "batch_tok_s": round(tokens / seconds, 1),
        "single_stream_tok_s": round(single_tokens / single_s, 1),
    }


def worker(spec: str) -> None:
    job = json.loads(spec)
    run = run_vllm if job["engine"] == "vllm" else run_hf
    result = run(job["model_dir"], job["prompts"], job["max_tokens"])
    Path(job["result"]).write_text(json.dumps(result))


def run_job(engine: str, name: str, model_dir: str, prompts: list, max_tokens: int, timeout_s: int) -> dict:
    from orpo_deploy.export.quality import vllm_serves_4bit

    row = {"engine": engine, "model": name, "model_dir": model_dir, "size_on_disk_bytes": folder_bytes(model_dir)}
    ok, why = vllm_serves_4bit()
    if engine == "vllm" and name != "full" and not ok:
        return {**row, "error": f"not run: {why}"}
    result = RESULTS / f".{engine}-{name}.json"
    job = {
        "engine": engine,
        "model_dir": model_dir,
        "prompts": prompts,
        "max_tokens": max_tokens,
        "result": str(result),
    }
    try:
        proc = subprocess.run([sys.executable, __file__, "--worker", json.dumps(job)], cwd=ROOT, timeout=timeout_s)
    except subprocess.TimeoutExpired:
        return {**row, "error": f"timed out after {timeout_s} s"}
    if proc.returncode != 0 or not result.is_file():
        return {**row, "error": f"worker exited with status {proc.returncode}"}
    data = json.loads(result.read_text())
    result.unlink()
    return {**row, **data}


def folder_bytes(model_dir: str) -> int:
    return sum(p.stat().st_size for p in Path(model_dir).rglob("*") if p.is_file() and p.name != "orpo_manifest.json")


def to_markdown(report: dict) -> str:
    s = report["settings"]
    lines = [
        "# vLLM / HF decode throughput: full vs GPTQ vs AWQ",
        "",
        f"{s['prompts']} prompts from the test split, {s['max_tokens']} new tokens each (ignore_eos / min_new_tokens), "
        f"greedy; host: {s['host']}; load average at start {s['loadavg']}.",
        "",
        "| engine | model | size on disk | batch tok/s | 1-stream tok/s | start-up s | note |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in report["rows"]:
        size = f"{r['size_on_disk_bytes'] / 2**20:.0f} MiB"
        if "error" in r:
            lines.append(f"| {r['engine']} | {r['model']} | {size} | - | - | - | {r['error']} |")
        else:
            lines.append(
                f"| {r['engine']} | {r['model']} | {size} | {r['batch_tok_s']} | "
                f"{r['single_stream_tok_s']} | {r['startup_s']} | |"
            )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--worker", help=argparse.SUPPRESS)
    p.add_argument("--full", default="smollm2-135m-instruct", help="full-precision model (folder or bundled name)")
    p.add_argument("--gptq", default=str(Path.home() / ".cache/orpo-deploy/exports/smollm2-gptq"))
    p.add_argument("--awq", default=str(Path.home() / ".cache/orpo-deploy/exports/smollm2-awq"))
    p.add_argument("--engines", default="vllm,hf", help="comma-separated: vllm, hf")
    p.add_argument("--prompts", type=int, default=8, help="batch size (prompts decoded together)")
    p.add_argument("--max-tokens", type=int, default=64)
    p.add_argument("--timeout", type=int, default=900, help="seconds per (engine, model)")
    p.add_argument("--output", default=str(RESULTS / "export_serving"), help="path without suffix")
    args = p.parse_args(argv)
    if args.worker:
        worker(args.worker)
        return 0
    sys.path.insert(0, str(ROOT))
    from orpo_deploy.core.models import resolve_model

    RESULTS.mkdir(parents=True, exist_ok=True)
    prompts = load_prompts(args.prompts)
    models = {"full": str(resolve_model(args.full)), "gptq": args.gptq, "awq": args.awq}
    report = {
        "settings": {
            "prompts": args.prompts,
            "max_tokens": args.max_tokens,
            "loadavg": os.getloadavg()[0],
            "host": f"{platform.machine()}, {os.cpu_count()} cores, {cpu_flags()}",
        },
        "rows": [],
    }
    for engine in args.engines.split(","):
        for name, model_dir in models.items():
            row = run_job(engine, name, model_dir, prompts, args.max_tokens, args.timeout)
            print(json.dumps(row), flush=True)
            report["rows"].append(row)
    Path(args.output + ".json").write_text(json.dumps(report, indent=2) + "\n")
    Path(args.output + ".md").write_text(to_markdown(report))
    print(to_markdown(report))
    return 0


def cpu_flags() -> str:
    import torch

    return "AVX-512" if torch.cpu._is_avx512_supported() else torch.backends.cpu.get_cpu_capability()


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    sys.exit(main())
