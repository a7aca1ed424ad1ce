"""GPTQ and AWQ 4-bit quantisation with GPTQModel, on CPU or CUDA: the only module of the stage importing gptqmodel.

Fix-ups needed on CPU-only hosts with gptqmodel 7.6.0 (each measured on a 2-core machine, see the comments):
the thread-pool size, the quantisation backend, fp32 calibration, the offload folder, AWQ's zero points, and the
generation config that ``save`` rewrites.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
from pathlib import Path
from typing import Any

from orpo_deploy.export.config import ExportFailed

logger = logging.getLogger(__name__)


def _set_cpu_workers() -> None:
    """gptqmodel's thread pool gives its 'cpu' pool (cores + 1) // 2 workers but its 'model_loader:cpu' sub-pool
    always asks for 2, so on a host with <= 2 cores ``quantize`` raises "Virtual pool 'model_loader:cpu' requests
    2 workers but parent 'cpu' only has 1". GPTQMODEL_CPU_WORKERS (read when the pool is first built) fixes it."""
    if ((os.cpu_count() or 1) + 1) // 2 < 2:
        os.environ.setdefault("GPTQMODEL_CPU_WORKERS", "2")


def quantize_config_kwargs(method: str, bits: int, group_size: int) -> dict[str, Any]:
    """Arguments of gptqmodel's ``QuantizeConfig`` for a checkpoint vLLM can serve."""
    kwargs: dict[str, Any] = {
        "method": method,
        "bits": bits,
        "group_size": group_size,
        "desc_act": False,  # no activation reordering: vLLM's CPU kernel has no g_idx permutation
        # Upstream offloads finished layers to a temp folder and records that folder's path in the published
        # config; the models exported here (<= ~1B parameters) fit in RAM.
        "offload_to_disk": False,
    }
    if method == "awq":
        # gptqmodel's AWQ default sym=True saves zero_point=False; vLLM's AWQ path reads uint4 weights with zero
        # points (the layout AutoAWQ always wrote), so keep them.
        kwargs["sym"] = False
    elif group_size == -1:
        kwargs["act_group_aware"] = False  # gptqmodel refuses its default act_group_aware with per-channel groups
    return kwargs


def quantize_model(
    model_dir: Path, output_dir: Path, method: str, bits: int, group_size: int, samples: list[dict[str, list[int]]]
) -> dict[str, Any]:
    """Quantise ``model_dir`` with ``samples`` into ``output_dir`` (which must exist), in a child process.

    gptqmodel's worker threads end the whole interpreter with ``os._exit(1)`` on any error (``_abort_process`` in
    its utils/threadx.py): in-process, a failed quantisation would skip the caller's cleanup (the temp output
    folder) and kill a test runner. In a child it becomes an exit status, and gptqmodel's threads and memory go
    away with the child. Returns what the manifest records: backend, saved quantisation config, timings.
    """
    import multiprocessing

    result_path = output_dir / ".quantize_result.json"
    args = (str(model_dir), str(output_dir), method, bits, group_size, samples, str(result_path))
    child = multiprocessing.get_context("spawn").Process(target=_child_main, args=args, name="orpo-export-quantize")
    child.start()
    try:
        child.join()
    except BaseException:
        child.terminate()
        child.join()
        raise
    if child.exitcode != 0 or not result_path.is_file():
        raise ExportFailed(
            f"{method} quantisation failed: its process exited with status {child.exitcode} (the error is logged above)"
        )
    info = json.loads(result_path.read_text())
    result_path.unlink()
    return info


def _child_main(*args: Any) -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    *quantize_args, result_path = args
    info = _quantize(*quantize_args)
    Path(result_path).write_text(json.dumps(info, default=str))


def _quantize(model_dir: str, output_dir: str, method: str, bits: int, group_size: int, samples: list) -> dict:
    _set_cpu_workers()
    import torch
    from gptqmodel import BACKEND, GPTQModel, QuantizeConfig

    cuda = torch.cuda.is_available()
    # BACKEND.AUTO picks AWQ's CUDA GEMM kernel when packing and raises "AWQ: CUDA is not available" on a CPU-only
    # host; the torch kernels pack both formats on CPU.
    backend = BACKEND.AUTO if cuda else BACKEND.TORCH
    qconfig = QuantizeConfig(**quantize_config_kwargs(method, bits, group_size))
    # On CPU gptqmodel loads bf16, and its calibration forwards (the bulk of the work) crawl where the CPU has no
    # native bf16: on an AVX2 EPYC a 512x576 @ 576x1536 matmul took 2.5 s in bf16 vs 0.10 s in fp32, and SmolLM2's
    # GPTQ was heading for 76 min. GPTQ therefore calibrates in fp32 (also the more accurate) and the unquantised
    # tensors are cast back to the input's dtype afterwards. AWQ cannot: gptqmodel's CPU AWQ kernel packs only
    # fp16/bf16 weights ("AwqTorchLinear only supports [float16, bfloat16]"; the fused and int8 ones cannot write
    # the GEMM format), so AWQ keeps gptqmodel's bf16.
    dtype = "auto" if cuda or method == "awq" else torch.float32
    start = time.perf_counter()
    model = GPTQModel.load(model_dir, qconfig, device="cuda" if cuda else "cpu", dtype=dtype)
    loaded = time.perf_counter()
    model.quantize(samples, batch_size=1, backend=backend)
    quantized = time.perf_counter()
    model.save(output_dir)
    saved = time.perf_counter()
    del model
    _restore_generation_config(Path(model_dir), Path(output_dir))
    if dtype == torch.float32:
        _cast_unquantised_tensors(Path(model_dir), Path(output_dir))
    return {
        "backend": str(getattr(backend, "value", backend)),
        "device": "cuda" if cuda else "cpu",
        "calibration_dtype": str(dtype).replace("torch.", ""),
        "quantize_config": json.loads((Path(output_dir) / "quantize_config.json").read_text()),
        "timings_s": {
            "load": round(loaded - start, 2),
            "quantize": round(quantized - loaded, 2),
            "save": round(saved - quantized, 2),
        },
    }


def _restore_generation_config(model_dir: Path, output_dir: Path) -> None:
    """gptqmodel's ``save`` writes a generation_config.json with ``do_sample: true`` added, which turns greedy
    defaults into sampling for HF ``generate``; the exported model must decode like the model it came from."""
    source = model_dir / "generation_config.json"
    if source.is_file():
        shutil.copyfile(source, output_dir / "generation_config.json")


def _cast_unquantised_tensors(model_dir: Path, output_dir: Path) -> None:
    """Give the tensors left in full precision (embeddings, norms, head) the input's dtype again, after an fp32
    calibration: a bf16 model must not come out with fp32 embeddings (SmolLM2's would double to 113 MB)."""
    import torch
    from safetensors import safe_open
    from safetensors.torch import load_file, save_file

    config_path = output_dir / "config.json"
    source = json.loads((model_dir / "config.json").read_text())
    name = source.get("dtype") or source.get("torch_dtype") or "float32"
    dtype = getattr(torch, str(name), None)
    if not isinstance(dtype, torch.dtype) or dtype == torch.float32:
        return
    for path in sorted(output_dir.glob("*.safetensors")):
        with safe_open(path, "pt") as f:
            metadata = f.metadata() or {"format": "pt"}
        tensors = load_file(path)
        cast = {k: v.to(dtype) if v.dtype == torch.float32 else v for k, v in tensors.items()}
        save_file(cast, path, metadata=metadata)
    config = json.loads(config_path.read_text())
    config["dtype"] = str(name)
    config_path.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
