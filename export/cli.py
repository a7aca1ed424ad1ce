"""``orpo-export``: quantise a merged model to 4-bit GPTQ or AWQ, check its quality, publish it for vLLM.

    orpo-export --model runs/orpo-smollm2/merged --method gptq --output runs/export/gptq
    orpo-export --model smollm2-135m-instruct --method awq --group-size 64 --eval-limit 128 --output runs/export/awq

Precedence: defaults < YAML (--config FILE, keys as in the flags with underscores) < flags.
Exit status: 0 published; 1 the export ran and failed (quantisation error, or the quality gate refused it: no
output folder is created); 2 a bad argument or input (one line on stderr).
"""

from __future__ import annotations

import argparse
import difflib
import logging
import signal
import sys
from dataclasses import fields
from typing import Any, NoReturn

from orpo_deploy.core.errors import EXIT_FAILED, EXIT_USAGE
from orpo_deploy.core.resources import config_path
from orpo_deploy.export.config import (
    DIFFERS_FROM_GPTQMODEL,
    METHODS,
    QUALITY_ENGINES,
    ConfigError,
    ExportConfig,
    ExportError,
    ExportFailed,
    field_help,
)

logger = logging.getLogger(__name__)


class _ArgumentParser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:  # one line, no usage dump
        raise ConfigError(message)


def build_parser() -> argparse.ArgumentParser:
    helps = field_help()
    epilog = "defaults that differ from gptqmodel's:\n" + "\n".join(
        f"  {name}: {ours} (gptqmodel: {theirs}) - {why}" for name, ours, theirs, why in DIFFERS_FROM_GPTQMODEL
    )
    p = _ArgumentParser(
        prog="orpo-export",
        description=__doc__.split("\n\n")[0],
        epilog=epilog,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        allow_abbrev=False,
        argument_default=argparse.SUPPRESS,  # only flags actually given override the YAML
    )
    p.add_argument("--config", help="YAML file of config keys")
    p.add_argument("--model", help=helps["model"])
    p.add_argument("--method", choices=METHODS, help=helps["method"])
    p.add_argument("--output-dir", "--output", dest="output", help=helps["output"])
    p.add_argument("--bits", type=int, help=helps["bits"])
    p.add_argument("--group-size", type=int, help=helps["group_size"])
    p.add_argument("--calibration-dataset", help=helps["calibration_dataset"])
    p.add_argument("--calibration-size", type=int, help=helps["calibration_size"])
    p.add_argument("--calibration-max-tokens", type=int, help=helps["calibration_max_tokens"])
    p.add_argument("--min-retention", type=float, help=helps["min_retention"])
    p.add_argument("--eval-limit", type=int, help=helps["eval_limit"])
    p.add_argument("--eval-max-new-tokens", type=int, help=helps["eval_max_new_tokens"])
    p.add_argument("--eval-dataset", help=helps["eval_dataset"])
    p.add_argument("--quality-engine", choices=QUALITY_ENGINES, help=helps["quality_engine"])
    p.add_argument("--overwrite", action="store_true", help=helps["overwrite"])
    return p


def parse_config(argv: list[str] | None) -> ExportConfig:
    args = vars(build_parser().parse_args(argv))
    values: dict[str, Any] = load_yaml(args.pop("config")) if "config" in args else {}
    values.update(args)
    return ExportConfig(**values)


def load_yaml(path: str) -> dict[str, Any]:
    import yaml

    try:
        data = yaml.safe_load(open(config_path(path))) or {}
    except (OSError, yaml.YAMLError) as e:
        raise ConfigError(f"--config {path}: {e.__class__.__name__}: {e}".splitlines()[0]) from None
    if not isinstance(data, dict):
        raise ConfigError(f"--config {path}: expected a mapping of config keys")
    known = [f.name for f in fields(ExportConfig)]
    for key in data:
        if key not in known:
            hint = difflib.get_close_matches(str(key), known, n=1)
            raise ConfigError(
                f"--config {path}: unknown key {key!r}" + (f" (did you mean {hint[0]!r}?)" if hint else "")
            )
    return data


def _exit_on_sigterm(signum: int, frame: Any) -> None:
    # SIGTERM's default action skips Python cleanup and would leave atomic_output_dir's temp folder behind
    raise SystemExit(128 + signum)


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    previous = signal.signal(signal.SIGTERM, _exit_on_sigterm)
    try:
        cfg = parse_config(argv)
        from orpo_deploy.export.pipeline import describe, run_export

        manifest = run_export(cfg)
    except (ConfigError, ExportError, FileExistsError) as e:
        print(f"orpo-export: error: {e}", file=sys.stderr)
        return EXIT_USAGE
    except ExportFailed as e:
        print(f"orpo-export: failed: {e}", file=sys.stderr)
        return EXIT_FAILED
    finally:
        signal.signal(signal.SIGTERM, previous)
    print(describe(manifest, cfg.output))
    return 0


if __name__ == "__main__":
    sys.exit(main())
