"""Checks on the input model that fail in a second instead of after minutes of quantisation.

The layer widths come from the model built on the ``meta`` device (no weights read), so the check works for any
architecture transformers knows, not only Llama.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

from orpo_deploy.export.config import AUTO_GROUP_SIZES, ExportError

logger = logging.getLogger(__name__)


def read_model_config(model_dir: Path) -> dict:
    """The folder's config.json; an already-quantised model is refused (quantising it again is meaningless)."""
    try:
        config = json.loads((model_dir / "config.json").read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise ExportError(f"{model_dir}/config.json: unreadable ({e.__class__.__name__}: {e})") from None
    quant = config.get("quantization_config")
    if quant is not None:
        method = quant.get("quant_method", "unknown") if isinstance(quant, dict) else "unknown"
        raise ExportError(
            f"{model_dir} is already quantised ({method}: config.json has quantization_config); "
            "export the merged full-precision model instead"
        )
    if not any(model_dir.glob("*.safetensors")) and not any(model_dir.glob("*.bin")):
        raise ExportError(f"{model_dir} has config.json but no weights (*.safetensors or *.bin)")
    return config


def quantised_layer_widths(model_dir: Path) -> dict[str, int]:
    """``in_features`` of every linear layer the quantiser will touch (all but the output head), by module name."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    config = AutoConfig.from_pretrained(model_dir)
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config)
    head = model.get_output_embeddings()
    return {
        name: module.in_features
        for name, module in model.named_modules()
        if isinstance(module, torch.nn.Linear) and module is not head
    }


def resolve_group_size(requested: int | None, widths: dict[str, int]) -> int:
    """``requested`` if it divides every width (or is -1), else an error naming a layer; None = auto."""
    if not widths:
        raise ExportError("the model has no linear layers to quantise")
    if requested == -1:
        return requested
    if requested is not None:
        bad = {name: width for name, width in widths.items() if width % requested}
        if bad:
            name, width = next(iter(bad.items()))
            distinct = sorted(set(widths.values()))
            raise ExportError(
                f"--group-size {requested} does not divide the input width {width} of {name} "
                f"({len(bad)} layers affected; layer widths: {distinct})"
            )
        return requested
    for size in AUTO_GROUP_SIZES:
        if all(width % size == 0 for width in widths.values()):
            logger.info("group size %d (the largest of %s dividing every layer width)", size, AUTO_GROUP_SIZES)
            return size
    raise ExportError(
        f"none of the group sizes {AUTO_GROUP_SIZES} divides every layer width {sorted(set(widths.values()))}; "
        "pass --group-size -1 (per channel) or a divisor"
    )
