"""Files shipped inside the package (the default configs), found the same way from a checkout and from a wheel."""

from __future__ import annotations

from importlib import resources
from pathlib import Path


def package_path(relative: str) -> Path:
    """``relative`` (e.g. ``configs/orpo_smollm2_cpu.yaml``) inside the installed ``orpo_deploy`` package."""
    return Path(str(resources.files("orpo_deploy").joinpath(relative)))


def config_path(path: str | Path) -> Path:
    """A config file as given when it exists (relative to the working directory), else the packaged file of that
    name (``configs/...``), so ``--config configs/orpo_smollm2_cpu.yaml`` works from any folder once installed."""
    given = Path(path).expanduser()
    if given.is_file() or given.is_absolute():
        return given
    packaged = package_path(str(given))
    return packaged if packaged.is_file() else given
