"""``python -m orpo_deploy.pipeline.probe [--model SPEC]``: facts about this host (and the base model) as one JSON line.

Run as a subprocess so the orchestrator never imports torch: whether CUDA is there (GPU defaults), whether the
serving engine can run 4-bit weights (the export stage's own probe, ``export.quality.vllm_serves_4bit``), and
with ``--model`` the base model's local folder (the bundled GGUF is converted on the first call).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys

from orpo_deploy.core.manifest import MANIFEST_NAME
from orpo_deploy.core.models import ModelError, resolve_model


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    parser = argparse.ArgumentParser(prog="orpo_deploy.pipeline.probe")
    parser.add_argument("--model", help="resolve this model spec to a local folder")
    args = parser.parse_args(argv)

    import torch

    from orpo_deploy.export.quality import vllm_serves_4bit

    ok, why = vllm_serves_4bit()
    facts = {"cuda": torch.cuda.is_available(), "serves_4bit": ok, "serves_4bit_why": why}
    if args.model is not None:
        try:
            model_dir = resolve_model(args.model)
        except ModelError as exc:
            print(f"pipeline.probe: error: {exc}", file=sys.stderr)
            return 2
        facts["model_dir"] = str(model_dir)
        facts["model_manifest"] = str(model_dir / MANIFEST_NAME)
    print(json.dumps(facts))
    return 0


if __name__ == "__main__":
    sys.exit(main())
