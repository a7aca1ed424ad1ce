"""``orpo-compare``: ORPO against SFT -> DPO and SFT alone on one budget, measured, with a report.

    orpo-compare --config configs/compare_smollm2_cpu.yaml [--set pairs=80] [--print-config]

Writes OUTPUT/report.md, report.json, loss_curves.png, cost.png, quality.png, eval/ and metrics/ (atomically);
runs and merged models stay in the work folder. A bad config exits with status 2 and one line on stderr; a
failed stage with status 1 and one line naming its log.
"""

from __future__ import annotations

import argparse
import logging
import sys

from orpo_deploy.compare.config import CompareConfig
from orpo_deploy.core.cli import ArgumentParser, UsageError
from orpo_deploy.train.cli import parse_overrides
from orpo_deploy.train.config import ConfigError

EXIT_USAGE = 2
EXIT_FAILED = 1


def parse_config(argv: list[str] | None) -> tuple[CompareConfig, argparse.Namespace]:
    parser = ArgumentParser(prog="orpo-compare", description=__doc__.split("\n\n")[0], allow_abbrev=False)
    parser.add_argument("--config", help="YAML file of config keys (see compare/config.py)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override one key (repeat)")
    parser.add_argument("--print-config", action="store_true", help="print the resolved config as YAML and exit")
    args = parser.parse_args(argv)
    return CompareConfig.from_sources(args.config, parse_overrides(args.set)), args


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    from orpo_deploy.compare.runner import CompareError
    from orpo_deploy.core.models import ModelError

    # A bad config or model is the caller's to fix (usage); a failed stage names its log.
    exit_codes = {UsageError: EXIT_USAGE, ConfigError: EXIT_USAGE, ModelError: EXIT_USAGE, CompareError: EXIT_FAILED}
    try:
        cfg, args = parse_config(argv)
        if args.print_config:
            import yaml

            sys.stdout.write(yaml.safe_dump(cfg.to_dict(), sort_keys=False))
            return 0
        from orpo_deploy.compare.runner import run_compare

        out = run_compare(cfg)
    except tuple(exit_codes) as exc:
        print(f"orpo-compare: error: {exc}", file=sys.stderr)
        return next(code for kind, code in exit_codes.items() if isinstance(exc, kind))
    print(out / "report.md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
