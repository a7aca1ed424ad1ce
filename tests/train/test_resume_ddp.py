"""Subprocess runs of orpo-train: kill after a checkpoint and --resume; two CPU processes under accelerate (gloo)."""

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from orpo_deploy.core.manifest import read_manifest
from orpo_deploy.train.callbacks import read_metrics
from orpo_deploy.train.pipeline import latest_checkpoint

REPO = Path(__file__).resolve().parents[2]
DEADLINE_S = 600


def write_pairs(path: Path, n: int = 64) -> None:
    colours = ["red", "green", "blue", "yellow", "purple", "orange", "black", "white"]
    rows = [
        {"prompt": f"Name the colour {c}.", "chosen": f"{c} {c}.", "rejected": f"{colours[(i + 3) % 8]}."}
        for i, c in enumerate(colours * (n // len(colours)))
    ]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def cli_args(tmp_path: Path, max_steps: int, save_steps: int) -> list[str]:
    data = tmp_path / "pairs.jsonl"
    if not data.exists():
        write_pairs(data)
    return [
        "--model", "tiny-smollm2",
        "--dataset", str(data),
        "--output-dir", str(tmp_path / "out"),
        "--max-length", "64",
        "--max-prompt-length", "32",
        "--lora-r", "4",
        "--batch-size", "4",
        "--max-steps", str(max_steps),
        "--save-steps", str(save_steps),
        "--logging-steps", "1",
    ]  # fmt: skip


def env() -> dict[str, str]:
    return {**os.environ, "TRL_EXPERIMENTAL_SILENCE": "1", "OMP_NUM_THREADS": "1"}


@pytest.mark.slow
def test_kill_after_checkpoint_then_resume(tmp_path):
    args = cli_args(tmp_path, max_steps=400, save_steps=5)
    checkpoints = tmp_path / "out" / "run" / "checkpoints"
    log = (tmp_path / "first.log").open("w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "orpo_deploy.train.cli", *args], cwd=REPO, env=env(), stdout=log, stderr=log
    )
    try:
        deadline = time.monotonic() + DEADLINE_S
        while latest_checkpoint(checkpoints) is None:
            assert proc.poll() is None, (tmp_path / "first.log").read_text()[-3000:]
            assert time.monotonic() < deadline, "no checkpoint before the deadline"
            time.sleep(0.2)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    killed_at = latest_checkpoint(checkpoints)
    step = int(killed_at.name.split("-")[-1])
    assert step < 400
    assert not (tmp_path / "out" / "merged").exists()  # a killed run leaves no complete-looking model

    resumed_max = step + 10  # a short continuation keeps the test quick
    args = cli_args(tmp_path, max_steps=resumed_max, save_steps=5)
    done = subprocess.run(
        [sys.executable, "-m", "orpo_deploy.train.cli", *args, "--resume"],
        cwd=REPO,
        env=env(),
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    manifest = read_manifest(tmp_path / "out" / "merged")
    assert manifest["train"]["resumed_from"] == str(killed_at)
    assert manifest["train"]["global_step"] == resumed_max
    steps = [r["step"] for r in read_metrics(tmp_path / "out" / "run" / "metrics.jsonl") if "loss" in r]
    assert steps == list(range(1, resumed_max + 1))  # continued after the checkpoint, no step logged twice


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_two_cpu_processes_under_accelerate(tmp_path):
    cmd = [
        sys.executable, "-m", "accelerate.commands.launch",
        "--config_file", str(REPO / "configs" / "accelerate" / "ddp_cpu.yaml"),
        "--main_process_port", str(free_port()),
        "-m", "orpo_deploy.train.cli", *cli_args(tmp_path, max_steps=3, save_steps=2),
    ]  # fmt: skip
    done = subprocess.run(cmd, cwd=REPO, env=env(), capture_output=True, text=True, timeout=DEADLINE_S)
    assert done.returncode == 0, done.stderr[-3000:]
    manifest = read_manifest(tmp_path / "out" / "merged")
    assert manifest["world_size"] == 2
    assert manifest["train"]["global_step"] == 3
    assert latest_checkpoint(tmp_path / "out" / "run" / "checkpoints").name == "checkpoint-3"
