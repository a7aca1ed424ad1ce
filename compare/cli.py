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
from orpo_deploy.core.cli import ArgumentParser
from orpo_deploy.core.errors import OrpoError, report
from orpo_deploy.train.cli import parse_overrides


def parse_config(argv: list[str] | None) -> tuple[CompareConfig, argparse.Namespace]:
    parser = ArgumentParser(prog="orpo-compare", description=__doc__.split("\n\n")[0], allow_abbrev=False)
    parser.add_argument("--config", help="YAML file of config keys (see compare/config.py)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override one key (repeat)")
    parser.add_argument("--print-config", action="store_true", help="print the resolved config as YAML and exit")
    args = parser.parse_args(argv)
    return CompareConfig.from_sources(args.config, parse_overrides(args.set)), args


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    # A bad config or model is the caller's to fix (2); a failed stage names its log (1): core/errors.py.
    try:
        cfg, args = parse_config(argv)
        if args.print_config:
            import yaml

            sys.stdout.write(yaml.safe_dump(cfg.to_dict(), sort_keys=False))
            return 0
        from orpo_deploy.compare.runner import run_compare

        out = run_compare(cfg)
    except OrpoError as exc:
        return report("orpo-compare", exc)
    print(out / "report.md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
