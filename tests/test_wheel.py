"""The package as a user installs it (scripts/check_wheel.sh): a wheel with the configs, splits and migrations in it,
installed into a fresh venv, whose console scripts work from a folder holding its own train.py and data/."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_the_wheel_installs_and_its_commands_run_from_a_foreign_folder():
    venv = Path(sys.executable).parent.parent
    done = subprocess.run(
        ["bash", str(REPO / "scripts" / "check_wheel.sh")],
        cwd=REPO, env={"PATH": "/usr/bin:/bin", "VENV": str(venv), "HOME": str(Path.home())},
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "ok: 9 console scripts" in done.stdout
