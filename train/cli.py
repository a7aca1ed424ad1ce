"""``orpo-train``: ORPO + LoRA on a preference dataset, merged into a servable HF folder.

    orpo-train --config configs/orpo_smollm2_cpu.yaml [--learning-rate 1e-4] [--set lora_r=8] [--resume]
    accelerate launch --config_file configs/accelerate/ddp_cpu.yaml -m orpo_deploy.train.cli --config ...

Precedence: defaults < YAML (--config) < ORPO_TRAIN_<FIELD> environment < --set < --<field> flags.
A bad value exits with status 2 and one line on stderr. With ORPO_DEPLOY_MALLOC=jemalloc it re-executes itself under
jemalloc on start (train/allocator.py).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from typing import Any, NoReturn

from orpo_deploy.core.cli import quiet_known_warnings
from orpo_deploy.core.errors import EXIT_USAGE, OrpoError, report
from orpo_deploy.train.allocator import CHOICES, ENV_VAR, AllocatorError, active_allocator, reexec_under_jemalloc
from orpo_deploy.train.config import DIFFERS_FROM_TRL, ConfigError, TrainConfig, field_help, field_names, parse_value

logger = logging.getLogger(__name__)


class _ArgumentParser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:  # one line, no usage dump
        raise ConfigError(message)


def build_parser() -> argparse.ArgumentParser:
    epilog = "defaults that differ from trl's ORPOConfig:\n" + "\n".join(
        f"  {name}: {ours} (trl: {theirs}) - {why}" for name, ours, theirs, why in DIFFERS_FROM_TRL
    )
    parser = _ArgumentParser(
        prog="orpo-train",
        description="ORPO + LoRA training, merged into a servable HF model folder.",
        epilog=epilog,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        allow_abbrev=False,
    )
    parser.add_argument("--config", help="YAML file of config keys (see the flags below)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override one key (repeat)")
    parser.add_argument("--resume", action="store_true", help="continue from the newest complete checkpoint")
    parser.add_argument("--print-config", action="store_true", help="print the resolved config as YAML and exit")
    fields = parser.add_argument_group("config keys (YAML values: 1e-4, true, [q_proj, v_proj]; '' = empty)")
    defaults = TrainConfig.__dataclass_fields__
    for name, text in field_help().items():
        default = defaults[name].default
        fields.add_argument(
            f"--{name.replace('_', '-')}", dest=f"field_{name}", metavar="V", help=f"{text} [{default}]"
        )
    return parser


def parse_config(argv: list[str] | None) -> tuple[TrainConfig, argparse.Namespace]:
    args = build_parser().parse_args(argv)
    overrides = parse_overrides(args.set)
    for name in field_names():
        value = getattr(args, f"field_{name}")
        if value is not None:
            overrides[name] = parse_value(value)
    return TrainConfig.from_sources(args.config, overrides), args


def parse_overrides(items: list[str]) -> dict[str, Any]:
    """``--set KEY=VALUE`` items as config values (parsed as YAML)."""
    overrides = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep:
            raise ConfigError(f"--set expects KEY=VALUE, got {item!r}")
        overrides[key.strip()] = parse_value(value)
    return overrides


def main(argv: list[str] | None = None) -> int:
    if os.environ.get(ENV_VAR, "glibc") not in CHOICES:
        print(f"orpo-train: error: {ENV_VAR} must be glibc or jemalloc, got {os.environ[ENV_VAR]!r}", file=sys.stderr)
        return EXIT_USAGE
    if argv is None:  # a command, not a call from Python: the allocator can still be chosen
        try:
            reexec_under_jemalloc("orpo_deploy.train.cli", sys.argv[1:])
        except AllocatorError as exc:
            return report("orpo-train", exc)
    rank = int(os.environ.get("RANK", "0"))
    logging.basicConfig(
        level=logging.INFO if rank == 0 else logging.WARNING,
        format=f"%(asctime)s %(levelname)s [rank {rank}] %(name)s: %(message)s",
    )
    try:
        cfg, args = parse_config(argv)
    except ConfigError as exc:
        return report("orpo-train", exc)
    quiet_known_warnings()
    if args.print_config:
        import yaml

        print(yaml.safe_dump(cfg.to_dict(), sort_keys=False), end="")
        return 0

    logger.info("malloc: %s", active_allocator())
    from orpo_deploy.train.pipeline import run_training

    try:
        merged = run_training(cfg, resume=args.resume)
    except OrpoError as exc:  # bad model, data or folder: 2; a run that failed: 1 (core/errors.py)
        return report("orpo-train", exc)
    except KeyboardInterrupt:
        print("orpo-train: interrupted; continue with --resume", file=sys.stderr)
        return 130
    if merged is not None:
        print(merged)
    return 0


if __name__ == "__main__":
    sys.exit(main())
